"""``PackedDataset``: a torch Dataset over a packed split (crop, augmentation, sample dict).

Crop: the square box of side ``max(w, h) · bbox_enlarge · aug.scale`` centred on the sample's
bbox, rotated by ``aug.rot``, warped to ``input_size`` (bilinear, grey 128 border); with a flip the
crop is mirrored and joints are swapped with ``skeleton.FLIP_PERM_17``.

Default ``bbox_enlarge`` comes from the split's meta.json: 1.28 for the seed layout (its 224 crop
is shown at 200 px inside a 256 canvas, like the Caffe seed's 1/1.12 shrink), 1.25 for the JSON
layout (mks0601 ``process_bbox`` on the ×1.2 GT box).

3D consistency under augmentation (our choice; the seeds leave 3D unaugmented): ``crop_to_raw``
maps crop px back to raw camera px through the inverse of the whole augmentation (rotation,
scale, mirror), so ``project(joints_3d, K) == apply_affine(joints_2d, crop_to_raw)`` for every
sample. Rotation and scale leave ``joints_3d`` unchanged; a flip permutes it with the left/right
swap (the person seen in a mirror: the labels swap, the points stay). ``z_rel`` (mm) is never
rescaled (C2F: the depth axis is metric).

Returned sample dict (tensors): ``image`` (3,S,S) f32 RGB pixel/255 − 0.5; ``joints_2d`` (17,2)
crop px; ``z_rel`` (17,) mm; ``joints_3d`` (17,3) camera mm; ``visible`` (17,) bool (annotated,
finite and inside the crop); ``has_depth`` () bool; ``K`` (3,3); ``crop_to_raw`` (2,3);
``root_depth`` () mm; ``action``, ``subject``, ``camera``, ``frame`` () long; ``index`` () long =
row in the packed split; ``source_index`` () long = the dataset's own sample index.
For 2D-only samples (``has_depth`` False) ``z_rel``, ``joints_3d`` and ``root_depth`` are 0.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from pose.camera import apply_affine, crop_affine, invert_affine
from pose.data.augment import (
    IDENTITY,
    AugConfig,
    AugParams,
    apply_color,
    compose_affine,
    flip_affine,
    flip_joints,
    sample_aug,
)
from pose.data.packed import DEFAULT_ENLARGE, ImageStore, load_arrays, read_meta

BORDER_VALUE = (128, 128, 128)


def decode_image(data: bytes, where: str = "image") -> np.ndarray:
    """Encoded bytes → (H, W, 3) uint8 BGR (as cv2 reads)."""
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{where}: image does not decode")
    return img


def warp_crop(image: np.ndarray, M: np.ndarray, out_res: int) -> np.ndarray:
    """``cv2.warpAffine(image, M, (out_res, out_res))`` (bilinear, grey border) without aliasing.

    When the crop shrinks the image by more than 2× (a 224 px seed crop to a 64 px input, or a
    1000 px frame's box), bilinear sampling alone skips pixels and thin limbs flicker. The part
    of ``image`` the crop sees is then first reduced with ``cv2.INTER_AREA`` to about twice the
    output resolution and ``M`` is re-based onto it, so each output pixel averages its footprint.
    Geometry is unchanged: a point maps to the same crop position either way.
    """
    M = np.asarray(M, dtype=np.float64)
    S = int(out_res)
    det = np.linalg.det(M[:, :2]) if M.shape == (2, 3) and np.isfinite(M).all() else 0.0
    if det == 0.0:
        raise ValueError(f"M: expected a finite, invertible (2, 3) affine, got {M.tolist()}")
    scale = math.sqrt(abs(det))  # output px per image px
    h, w = image.shape[:2]
    if scale < 0.5:
        # bounding box of the crop's footprint in the image, 2 px margin for the bilinear kernel
        Minv = invert_affine(M)
        corners = apply_affine(np.array([[-0.5, -0.5], [S - 0.5, -0.5], [-0.5, S - 0.5], [S - 0.5, S - 0.5]]), Minv)
        x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 2, 0)
        x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 3, [w, h])
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            r = 2.0 * scale
            nw, nh = max(int(round((x1 - x0) * r)), 1), max(int(round((y1 - y0) * r)), 1)
            roi = cv2.resize(image[y0:y1, x0:x1], (nw, nh), interpolation=cv2.INTER_AREA)
            rx, ry = nw / (x1 - x0), nh / (y1 - y0)
            # image px -> roi px (cv2.resize pixel-centre convention): x' = (x - x0 + 0.5)·rx − 0.5
            to_roi = np.array([[rx, 0.0, (0.5 - x0) * rx - 0.5], [0.0, ry, (0.5 - y0) * ry - 0.5]])
            M = compose_affine(M, invert_affine(to_roi))
            image = roi
    return cv2.warpAffine(image, M, (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=BORDER_VALUE)


def make_sample(image_bgr: np.ndarray, *, joints_2d, joints_3d, bbox, img_to_raw, K, has_depth: bool,
                visible=None, input_size: int = 256, enlarge: float = 1.25,
                params: AugParams = IDENTITY) -> dict[str, np.ndarray]:
    """Crop + augment one sample (numpy in, numpy out; see the module docstring for the keys).

    image_bgr: (H, W, 3) uint8 stored image. joints_2d (17,2) stored px; joints_3d (17,3) mm;
    bbox (4,) x1 y1 x2 y2 stored px; img_to_raw (2,3); K (3,3).
    """
    S = int(input_size)
    x1, y1, x2, y2 = (float(v) for v in bbox)
    center = np.array([(x1 + x2) / 2.0, (y1 + y2) / 2.0])
    size = max(x2 - x1, y2 - y1) * float(enlarge) * float(params.scale)
    M = crop_affine(center, size, float(params.rot), S)
    if params.flip:
        M = compose_affine(flip_affine(S), M)
    crop = warp_crop(image_bgr, M, S)
    crop = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
    crop = apply_color(crop, params.color)
    j2 = apply_affine(np.asarray(joints_2d, dtype=np.float64), M)
    j3 = np.asarray(joints_3d, dtype=np.float64)
    vis = np.ones(17, dtype=bool) if visible is None else np.asarray(visible, dtype=bool)
    if params.flip:
        j2, j3, vis = flip_joints(j2), flip_joints(j3), flip_joints(vis[:, None])[:, 0]
    crop_to_raw = compose_affine(img_to_raw, invert_affine(M))
    inside = np.isfinite(j2).all(1) & (j2 >= -0.5).all(1) & (j2 <= S - 0.5).all(1)
    if has_depth:
        z_rel = j3[:, 2] - j3[0, 2]
        root_depth = j3[0, 2]
    else:
        j3 = np.zeros((17, 3))
        z_rel = np.zeros(17)
        root_depth = 0.0
    return {
        "image": crop,  # (S, S, 3) uint8 RGB
        "joints_2d": j2.astype(np.float32),
        "z_rel": z_rel.astype(np.float32),
        "joints_3d": j3.astype(np.float32),
        "visible": vis & inside,
        "has_depth": np.bool_(has_depth),
        "K": np.array(K, dtype=np.float32),
        "crop_to_raw": crop_to_raw.astype(np.float32),
        "root_depth": np.float32(root_depth),
    }


def to_tensors(sample: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """numpy sample (uint8 HWC image) → tensors (image (3,S,S) f32 = pixel/255 − 0.5)."""
    out = {k: torch.from_numpy(np.asarray(v)) for k, v in sample.items() if k != "image"}
    img = torch.from_numpy(np.ascontiguousarray(sample["image"].transpose(2, 0, 1)))
    out["image"] = img.float().div_(255.0).sub_(0.5)
    return out


class PackedDataset(Dataset):
    """Samples of one packed split (``DIR/train`` or ``DIR/test`` written by ``pose prepare``).

    Args:
        root_split_dir: the split directory.
        input_size: crop side S (px).
        train: draw augmentation from ``aug`` (otherwise none).
        aug: :class:`AugConfig`.
        indices: optional subset (rows of the packed split).
        bbox_enlarge: box side factor; None → per layout default (meta.json ``bbox_enlarge``).
        seed: base seed of the augmentation draws. ``ds[i]`` draws in call order (inside DataLoader
            workers mixed with the worker's seed, new every epoch, reproducible under
            ``torch.manual_seed``; None → ``torch.initial_seed()``); ``ds[(i, epoch)]`` (the keys of
            :class:`pose.data.sampler.ShardedBatchSampler`) draws from ``(seed, epoch, row)`` alone,
            so a resumed run sees the same augmentation whatever came before.
        cache_mb: keep up to this many MiB of decoded images in memory (per process; the first
            samples read are kept, 0 = off), so later epochs skip image decoding (sample loading
            2.3–2.6× faster for 224-px PNGs, benchmarks/README.md).
    """

    def __init__(self, root_split_dir: str | os.PathLike, input_size: int = 256, train: bool = False,
                 aug: AugConfig = AugConfig(), indices: Sequence[int] | None = None,
                 bbox_enlarge: float | None = None, seed: int | None = None, cache_mb: float = 0.0):
        self.root = str(root_split_dir)
        self.meta = read_meta(self.root)
        if int(input_size) < 8:
            raise ValueError(f"input_size must be >= 8, got {input_size}")
        self.input_size = int(input_size)
        self.train = bool(train)
        self.aug = aug
        self.arrays = load_arrays(self.root, mmap=True)
        n = int(self.meta["count"])
        self.indices = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= n):
            raise ValueError(f"indices must lie in [0, {n}), got range [{self.indices.min()}, {self.indices.max()}]")
        enlarge = bbox_enlarge if bbox_enlarge is not None else self.meta.get(
            "bbox_enlarge", DEFAULT_ENLARGE.get(self.meta.get("layout"), 1.25))
        if not enlarge > 0:
            raise ValueError(f"bbox_enlarge must be > 0, got {enlarge}")
        self.bbox_enlarge = float(enlarge)
        self.images = ImageStore(self.root, np.asarray(self.arrays["image_index"]))
        if not cache_mb >= 0:
            raise ValueError(f"cache_mb must be >= 0, got {cache_mb}")
        self._cache: dict[int, np.ndarray] = {}
        self._cache_left = int(cache_mb * 2**20)
        self.seed = seed
        self._gen: np.random.Generator | None = None
        self._gen_pid = -1

    @property
    def action_names(self) -> list[str]:
        return list(self.meta.get("action_names", []))

    def __len__(self) -> int:
        return len(self.indices)

    def _rng(self) -> np.random.Generator:
        """One generator per process (re-created after a fork, mixed with the worker id)."""
        if self._gen is None or self._gen_pid != os.getpid():
            info = torch.utils.data.get_worker_info()
            if info is None:
                entropy = [torch.initial_seed() if self.seed is None else self.seed]
            else:  # info.seed = the loader's per-epoch base seed + worker id
                entropy = [0 if self.seed is None else self.seed, info.seed]
            self._gen = np.random.default_rng([int(e) % (2**63) for e in entropy])
            self._gen_pid = os.getpid()
        return self._gen

    def draw_aug(self, row: int, epoch: int | None = None) -> AugParams:
        """Augmentation of ``row``: the next draw of this process, or (``epoch`` given) the draw of
        ``(seed, epoch, row)``."""
        if not self.train:
            return IDENTITY
        if epoch is None:
            return sample_aug(self.aug, self._rng())
        return sample_aug(self.aug, np.random.default_rng([int(self.seed or 0) % 2**63, int(epoch), int(row)]))

    def raw(self, i: int, params: AugParams | None = None) -> dict[str, np.ndarray]:
        """Sample ``i`` as numpy (uint8 HWC RGB image) with explicit augmentation ``params``."""
        row = int(self.indices[i])
        a = self.arrays
        params = self.draw_aug(row) if params is None else params
        img = self._cache.get(row)
        if img is None:
            img = decode_image(self.images[row], f"{self.root} sample {row}")
            if img.nbytes <= self._cache_left:
                img.setflags(write=False)  # shared by every later read of this row
                self._cache[row] = img
                self._cache_left -= img.nbytes
        out = make_sample(img, joints_2d=a["joints_2d"][row], joints_3d=a["joints_3d"][row], bbox=a["bbox"][row],
                          img_to_raw=a["img_to_raw"][row], K=a["K"][row], has_depth=bool(a["has_depth"][row]),
                          visible=a["visible"][row], input_size=self.input_size, enlarge=self.bbox_enlarge,
                          params=params)
        for key in ("action", "subject", "camera", "frame"):
            out[key] = np.int64(a[key][row])
        out["index"] = np.int64(row)
        out["source_index"] = np.int64(a["index"][row])
        return out

    def get(self, i: int, params: AugParams | None = None) -> dict[str, torch.Tensor]:
        """Like ``ds[i]`` but with explicit augmentation ``params`` (None → drawn as usual)."""
        return to_tensors(self.raw(i, params))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        """``ds[i]``, or ``ds[(i, epoch)]`` with the augmentation of ``(seed, epoch, row)``."""
        i, epoch = key if isinstance(key, tuple) else (key, None)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i = i % len(self)
        params = None if epoch is None else self.draw_aug(int(self.indices[i]), epoch)
        return self.get(i, params)
