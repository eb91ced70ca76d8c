"""Python inference API: a trained C2F checkpoint on any image, and the shared decode step.

Quick start::

    from pose import Predictor
    pred = Predictor.from_checkpoint("outputs/stages/d2_64/model.pt", device="cpu")
    res = pred.predict("person.jpg", bbox=(x1, y1, x2, y2), K=K)   # K optional (3, 3) of this image
    res.joints_2d        # (17, 2) px in the original image
    res.joints_3d        # (17, 3) root-relative mm (camera axes: X right, Y down, Z forward)
    res.joints_3d_camera # (17, 3) camera-frame mm, or None when K was not given
    res.to_json()        # plain dict, schema in pose/tools/predict.py

One place for "model output → decoded joints": ``pose.decode.decode_outputs`` is what
:class:`Predictor`, :func:`predict_loader` (evaluation, training validation) and ``pose show``
call, so a prediction made here equals the evaluation's for the same crop (the softmax scale of the
soft-argmax is the checkpoint's ``softmax_scale``, the one the stage trained with).

Preprocessing is the evaluation's: :func:`preprocess` calls ``pose.data.dataset.make_sample``
(``PackedDataset``'s crop: square box of side ``max(w, h) · bbox_enlarge`` centred on the bbox,
``pose.camera.crop_affine``, bilinear ``cv2.warpAffine`` to the checkpoint's ``input_size``, grey
border) and ``to_tensors`` (RGB, ``pixel/255 − 0.5``). ``bbox_enlarge`` is the checkpoint's, the
factor its training data was cropped with (1.28 for the seed layout, 1.25 for the JSON layout).
Without a bbox the whole image is the box (as the seed layout's stored crops are).

Without intrinsics an image gets an *assumed* pinhole camera (focal = ``ASSUMED_FOCAL_FACTOR`` ×
the larger image side, principal point at the image centre): the root-relative 3D then depends on
it only through perspective foreshortening (the bone-length fit absorbs the scale), and
``joints_3d_camera`` is ``None``.

Per-joint confidence = the peak value of the joint's final 3D heatmap (the training targets are
gaussians with peak 1, so ≈1 means a sharp confident peak, ≈0 nothing found).

Note on ``norm="bn_batchstats"`` checkpoints: they normalise with the statistics of the *batch*,
so a prediction depends on the other images of the batch (as in the Caffe seed); ``predict``
on one image then differs from a batched evaluation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from pose.camera import crop_affine, invert_affine
from pose.data.dataset import make_sample, to_tensors
from pose.decode import DECODINGS, decode_2d_stage, decode_batch, decode_outputs
from pose.loss_config import DEFAULT_SOFTMAX_SCALE
from pose.model import C2FPoseNet, forward_flip_test, load_checkpoint, stage_key
from pose.skeleton import JOINT_NAMES_17
from pose.targets import DepthRange

__all__ = [
    "ASSUMED_FOCAL_FACTOR",
    "PosePrediction",
    "Predictor",
    "assumed_intrinsics",
    "check_bbox",
    "full_image_bbox",
    "intrinsics_for_image",
    "intrinsics_matrix",
    "load_image",
    "predict_loader",
    "preprocess",
]

#: focal length of the assumed camera, in units of the larger image side (H36M: ≈1147 px / 1000 px).
ASSUMED_FOCAL_FACTOR = 1.15


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------
def load_image(image: str | os.PathLike | np.ndarray) -> np.ndarray:
    """An image path or array → uint8 RGB (H, W, 3). Arrays are taken as RGB (gray is expanded)."""
    if isinstance(image, str | os.PathLike):
        path = os.fspath(image)
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"image {path!r}: cannot be read (missing, not an image, or corrupt)")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"image: expected an (H, W, 3) RGB array or a file path, got shape {arr.shape}")
    arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def check_bbox(bbox: Any, image_hw: tuple[int, int]) -> np.ndarray:
    """Validate ``x1 y1 x2 y2`` (box edges, image px): finite, positive size, overlapping the image."""
    try:
        box = np.asarray(bbox, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bbox: expected 4 numbers x1,y1,x2,y2, got {bbox!r}") from exc
    if box.shape != (4,) or not np.isfinite(box).all():
        raise ValueError(f"bbox: expected 4 finite numbers x1,y1,x2,y2, got {bbox!r}")
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"bbox: needs x2 > x1 and y2 > y1, got {box.tolist()}")
    h, w = image_hw
    # image area in edge coordinates: [-0.5, w - 0.5] x [-0.5, h - 0.5]
    if x2 <= -0.5 or y2 <= -0.5 or x1 >= w - 0.5 or y1 >= h - 0.5:
        raise ValueError(
            f"bbox: {box.tolist()} lies outside the image ({w}x{h} px, x in [-0.5, {w - 0.5}], "
            f"y in [-0.5, {h - 0.5}])"
        )
    return box


def full_image_bbox(image_hw: tuple[int, int]) -> np.ndarray:
    """The whole image as a box (edges): ``[-0.5, -0.5, W - 0.5, H - 0.5]``."""
    h, w = image_hw
    return np.array([-0.5, -0.5, w - 0.5, h - 0.5])


def intrinsics_matrix(K: Any) -> np.ndarray:
    """(3, 3) matrix from a 3x3 array or ``(fx, fy, cx, cy)``; ValueError naming ``K`` otherwise."""
    try:
        arr = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"K: expected a 3x3 matrix or fx,fy,cx,cy, got {K!r}") from exc
    if arr.shape == (4,):
        fx, fy, cx, cy = arr
        arr = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    if arr.shape != (3, 3) or not np.isfinite(arr).all():
        raise ValueError(f"K: expected a finite 3x3 matrix or fx,fy,cx,cy, got shape {arr.shape}")
    if arr[0, 0] <= 0 or arr[1, 1] <= 0:
        raise ValueError(f"K: focal lengths must be > 0, got fx={arr[0, 0]}, fy={arr[1, 1]}")
    return arr


def assumed_intrinsics(image_hw: tuple[int, int]) -> np.ndarray:
    """Assumed pinhole camera for an image without intrinsics (see module docstring)."""
    h, w = image_hw
    f = ASSUMED_FOCAL_FACTOR * max(h, w)
    return np.array([[f, 0.0, (w - 1) / 2.0], [0.0, f, (h - 1) / 2.0], [0.0, 0.0, 1.0]])


# ----------------------------------------------------------------------------------------------
# preprocessing (shared with pose.data.PackedDataset)
# ----------------------------------------------------------------------------------------------
def preprocess(
    image: np.ndarray, bbox: Sequence[float], input_size: int, bbox_enlarge: float
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Crop one RGB image for the network exactly as evaluation does.

    Calls ``pose.data.dataset.make_sample`` (the crop of ``PackedDataset`` without augmentation:
    square box of side ``max(w, h)·bbox_enlarge`` centred on ``bbox``, bilinear warp, grey 128
    border) and ``to_tensors`` (``pixel/255 − 0.5``).

    Returns ``(x (3, S, S) float32, crop_to_img (2, 3) crop px → image px, crop (S, S, 3) uint8 RGB)``.
    """
    zeros = np.zeros((17, 3))
    s = make_sample(
        cv2.cvtColor(image, cv2.COLOR_RGB2BGR), joints_2d=zeros[:, :2], joints_3d=zeros,
        bbox=np.asarray(bbox, dtype=np.float64), img_to_raw=np.array([[1.0, 0, 0], [0, 1.0, 0]]),
        K=np.eye(3), has_depth=False, input_size=int(input_size), enlarge=float(bbox_enlarge),
    )
    x = to_tensors({"image": s["image"]})["image"]
    # crop_to_raw with an identity img_to_raw = inverse crop affine; recomputed in float64
    center = np.array([(bbox[0] + bbox[2]) / 2.0, (bbox[1] + bbox[3]) / 2.0], dtype=np.float64)
    size = max(bbox[2] - bbox[0], bbox[3] - bbox[1]) * float(bbox_enlarge)
    A = np.asarray(invert_affine(crop_affine(center, size, 0.0, int(input_size))), np.float64)
    return x.contiguous(), A, s["image"]


def intrinsics_for_image(K_raw: Any, img_to_raw: Any) -> np.ndarray:
    """Intrinsics of a stored image whose pixels map to the raw camera image by ``img_to_raw``.

    ``K_img = [img_to_raw; 0 0 1]⁻¹ · K_raw`` (exact for any affine), e.g. for the seed layout's
    224 crops: ``project(X, K_img) == apply_affine⁻¹(project(X, K_raw))``.
    """
    A = np.vstack([np.asarray(img_to_raw, dtype=np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])
    return np.linalg.solve(A, intrinsics_matrix(K_raw))


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------
def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


@dataclass
class PosePrediction:
    """One image's prediction (numpy float64; px in the original image, mm in camera axes).

    joints_2d (17, 2) px; joints_3d (17, 3) root-relative mm; joints_3d_camera (17, 3) mm or None
    (None unless ``K`` was given); z_rel (17,) mm; confidence (17,); root_depth mm (given or
    bone-fit, in the frame of ``K``); the primary fields come from ``method``; ``decodings`` holds
    every decoding of ``pose.decode.DECODINGS`` as dicts with the same keys; ``joints_2d_stage1`` (17, 2) px is the stage-1 2D
    heatmaps' argmax (the 2D detector's output, input of a lifter). Optional (``return_heatmaps``):
    ``crop`` (S, S, 3) uint8, ``hm2d`` (J, H, W), ``volume`` (J, d2, H, W), ``crop_to_image`` (2, 3).
    """

    joint_names: tuple[str, ...]
    image_size: tuple[int, int]  # (W, H)
    bbox: np.ndarray
    bbox_given: bool
    K: np.ndarray
    K_given: bool
    method: str
    joints_2d: np.ndarray
    joints_3d: np.ndarray
    joints_3d_camera: np.ndarray | None
    z_rel: np.ndarray
    confidence: np.ndarray
    root_depth: float
    root_depth_source: str
    decodings: dict[str, dict[str, Any]]
    joints_2d_stage1: np.ndarray
    crop_to_image: np.ndarray
    crop: np.ndarray | None = None
    hm2d: np.ndarray | None = None
    volume: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain-python dict (the per-image JSON of ``pose predict``, see its module docstring)."""

        def lst(a):
            return None if a is None else np.round(np.asarray(a, np.float64), 4).tolist()

        joints = {}
        for j, name in enumerate(self.joint_names):
            joints[name] = {
                "index": j,
                "uv": lst(self.joints_2d[j]),
                "xyz_mm": lst(self.joints_3d[j]),
                "xyz_camera_mm": None if self.joints_3d_camera is None else lst(self.joints_3d_camera[j]),
                "confidence": round(float(self.confidence[j]), 6),
            }
        return {
            "joint_names": list(self.joint_names),
            "image_size": [int(self.image_size[0]), int(self.image_size[1])],
            "bbox": lst(self.bbox),
            "bbox_source": "given" if self.bbox_given else "full_image",
            "camera": {"K": lst(self.K), "source": "given" if self.K_given else "assumed"},
            "root_depth_mm": round(float(self.root_depth), 4),
            "root_depth_source": self.root_depth_source,
            "method": self.method,
            "joints": joints,
            "joints_2d": lst(self.joints_2d),
            "joints_3d_mm": lst(self.joints_3d),
            "joints_3d_camera_mm": lst(self.joints_3d_camera),
            "z_rel_mm": lst(self.z_rel),
            "confidence": lst(self.confidence),
            "joints_2d_stage1": lst(self.joints_2d_stage1),
            "decodings": {
                m: {
                    "joints_2d": lst(d["joints_2d"]),
                    "joints_3d_mm": lst(d["joints_3d"]),
                    "joints_3d_camera_mm": lst(d["joints_3d_camera"]),
                    "z_rel_mm": lst(d["z_rel"]),
                    "root_depth_mm": round(float(d["root_depth"]), 4),
                }
                for m, d in self.decodings.items()
            },
            **self.extra,
        }


# ----------------------------------------------------------------------------------------------
# predictor
# ----------------------------------------------------------------------------------------------
class Predictor:
    """A loaded checkpoint plus its decoding parameters; see the module docstring."""

    def __init__(
        self,
        model: C2FPoseNet,
        ckpt: dict[str, Any] | None = None,
        *,
        device: str | torch.device = "cpu",
        method: str = "argmax",
        softmax_scale: float | None = None,
        batch_size: int = 16,
        bbox_enlarge: float | None = None,
        flip_test: bool = False,
    ) -> None:
        if not isinstance(model, C2FPoseNet):
            raise ValueError(f"model: expected a C2FPoseNet, got {type(model).__name__}")
        if method not in DECODINGS:
            raise ValueError(f"method: expected one of {DECODINGS}, got {method!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size!r}")
        ckpt = dict(ckpt or {})
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.cfg = model.cfg
        self.ckpt_meta = {k: v for k, v in ckpt.items() if k != "model"}
        self.input_size = int(self.cfg.input_size)
        self.d2 = int(ckpt.get("d2", self.cfg.d2))
        if self.d2 != self.cfg.d2:
            raise ValueError(f"checkpoint: d2 = {self.d2} but its model_config has d2 = {self.cfg.d2}")
        self.stride = int(ckpt.get("stride", model.stride))
        self.depth_range = DepthRange.coerce(ckpt.get("depth_range"))
        scale = softmax_scale if softmax_scale is not None else ckpt.get("softmax_scale")
        if not isinstance(scale, int | float) or not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"softmax_scale: expected a positive number (the checkpoint's), got {scale!r}")
        self.softmax_scale = float(scale)
        self.method = method
        self.batch_size = int(batch_size)
        enlarge = bbox_enlarge if bbox_enlarge is not None else ckpt.get("bbox_enlarge")
        if not isinstance(enlarge, int | float) or not math.isfinite(enlarge) or enlarge <= 0:
            raise ValueError(f"bbox_enlarge: expected a positive number (the checkpoint's), got {enlarge!r}")
        self.bbox_enlarge = float(enlarge)
        self.stage = str(ckpt.get("stage", stage_key(self.d2)))
        self.flip_test = bool(flip_test)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str | torch.device = "cpu", **kwargs: Any
    ) -> Predictor:
        """Load a ``save_checkpoint`` file; ``kwargs`` go to the constructor
        (``method``, ``softmax_scale``, ``batch_size``, ``bbox_enlarge``, ``flip_test``)."""
        model, ckpt = load_checkpoint(path, map_location="cpu")
        pred = cls(model, ckpt, device=device, **kwargs)
        pred.checkpoint_path = str(Path(path))
        return pred

    # -- the network -------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) → (hm2d (B, J, H, W), vol (B, J, d2, H, W)) float32 on ``self.device``
        (averaged with the mirrored image's outputs when ``flip_test``, as evaluation does)."""
        x = x.to(self.device, torch.float32)
        hm, vol = forward_flip_test(self.model, x) if self.flip_test else self.model(x)
        return hm.float(), vol.float()

    # -- prediction ---------------------------------------------------------------------------
    def predict(
        self,
        image: str | os.PathLike | np.ndarray,
        bbox: Sequence[float] | None = None,
        K: Any = None,
        root_depth: float | None = None,
        return_heatmaps: bool = False,
    ) -> PosePrediction:
        """Predict one image (path or RGB uint8 array). See :meth:`predict_batch` for the arguments."""
        return self.predict_batch(
            [image], None if bbox is None else [bbox], None if K is None else [K],
            None if root_depth is None else [root_depth], return_heatmaps=return_heatmaps,
        )[0]

    def predict_batch(
        self,
        images: Sequence[str | os.PathLike | np.ndarray],
        bboxes: Sequence[Sequence[float] | None] | None = None,
        Ks: Sequence[Any] | None = None,
        root_depths: Sequence[float | None] | None = None,
        return_heatmaps: bool = False,
    ) -> list[PosePrediction]:
        """Predict many images, ``batch_size`` at a time.

        Args:
            images: paths or uint8 RGB (H, W, 3) arrays.
            bboxes: per image ``x1 y1 x2 y2`` (box edges, px) or None = the whole image.
            Ks: per image (3, 3) intrinsics *of that image* or ``(fx, fy, cx, cy)``, or None.
            root_depths: per image root depth Z (mm, in the frame of K) or None = bone-length fit.
            return_heatmaps: also return the crop, 2D heatmaps and volume.
        Raises:
            ValueError naming the bad argument (unreadable image, bbox outside the image, ...).
        """
        n = len(images)
        if n == 0:
            return []
        for name, seq in (("bboxes", bboxes), ("Ks", Ks), ("root_depths", root_depths)):
            if seq is not None and len(seq) != n:
                raise ValueError(f"{name}: expected {n} entries (one per image), got {len(seq)}")
        results: list[PosePrediction] = []
        for start in range(0, n, self.batch_size):
            idx = range(start, min(n, start + self.batch_size))
            results.extend(self._predict_chunk(
                [images[i] for i in idx],
                [None if bboxes is None else bboxes[i] for i in idx],
                [None if Ks is None else Ks[i] for i in idx],
                [None if root_depths is None else root_depths[i] for i in idx],
                return_heatmaps,
            ))
        return results

    def _predict_chunk(self, images, bboxes, Ks, rds, return_heatmaps) -> list[PosePrediction]:
        imgs, boxes, mats, k_given, xs, affs = [], [], [], [], [], []
        for img_in, box, K in zip(images, bboxes, Ks, strict=True):
            img = load_image(img_in)
            hw = img.shape[:2]
            b = full_image_bbox(hw) if box is None else check_bbox(box, hw)
            Km = assumed_intrinsics(hw) if K is None else intrinsics_matrix(K)
            x, A, _ = preprocess(img, b, self.input_size, self.bbox_enlarge)
            imgs.append(img)
            boxes.append(b)
            mats.append(Km)
            k_given.append(K is not None)
            xs.append(x)
            affs.append(A)
        rd_list = [None if r is None else float(r) for r in rds]
        for r in rd_list:
            if r is not None and (not math.isfinite(r) or r <= 0):
                raise ValueError(f"root_depth: expected a positive depth in mm, got {r!r}")
        hm2d, vol = self.forward(torch.stack(xs))
        A = torch.as_tensor(np.stack(affs))
        K = torch.as_tensor(np.stack(mats))
        fitted = decode_outputs(vol, A, K, d2=self.d2, stride=self.stride, depth_range=self.depth_range,
                                softmax_scale=self.softmax_scale)
        given = None
        if any(r is not None for r in rd_list):
            rd = torch.as_tensor([r if r is not None else 1.0 for r in rd_list], dtype=torch.float64)
            given = decode_outputs(vol, A, K, d2=self.d2, stride=self.stride, depth_range=self.depth_range,
                                   softmax_scale=self.softmax_scale, root_depth=rd)
        uv_stage1 = _np(decode_2d_stage(hm2d if hm2d.ndim == 4 else hm2d.amax(dim=2), A, stride=self.stride))
        conf = _np(vol.flatten(2).amax(dim=2))
        out = []
        for i, img in enumerate(imgs):
            src = given if rd_list[i] is not None else fitted
            decs = {}
            for m, d in src.items():
                decs[m] = {
                    "joints_2d": _np(d.uv_img[i]),
                    "joints_crop": _np(d.uv_crop[i]),
                    "joints_3d": _np(d.root_relative[i]),
                    "joints_3d_camera": _np(d.camera[i]) if k_given[i] else None,
                    "z_rel": _np(d.z_rel[i]),
                    "root_depth": float(d.root_depth[i]),
                }
            p = decs[self.method]
            res = PosePrediction(
                joint_names=tuple(JOINT_NAMES_17[: vol.shape[1]]) if vol.shape[1] == 17
                else tuple(f"joint_{j}" for j in range(vol.shape[1])),
                image_size=(img.shape[1], img.shape[0]),
                bbox=boxes[i],
                bbox_given=bboxes[i] is not None,
                K=mats[i],
                K_given=k_given[i],
                method=self.method,
                joints_2d=p["joints_2d"],
                joints_3d=p["joints_3d"],
                joints_3d_camera=p["joints_3d_camera"],
                z_rel=p["z_rel"],
                confidence=conf[i],
                root_depth=p["root_depth"],
                root_depth_source="given" if rd_list[i] is not None else "bone_fit",
                decodings=decs,
                joints_2d_stage1=uv_stage1[i],
                crop_to_image=affs[i],
            )
            if return_heatmaps:
                res.crop = np.clip((xs[i].permute(1, 2, 0).numpy() + 0.5) * 255.0 + 0.5, 0, 255).astype(np.uint8)
                res.hm2d = hm2d[i].cpu().numpy()
                res.volume = vol[i].cpu().numpy()
            out.append(res)
        return out

    def depth_bin_centers(self) -> np.ndarray:
        """(d2,) root-relative depth (mm) of each depth bin's centre."""
        lb, ub = self.depth_range.lb, self.depth_range.ub
        return lb + (np.arange(self.d2) + 0.5) / self.d2 * (ub - lb)


# ----------------------------------------------------------------------------------------------
# a packed split's loader
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def predict_loader(
    model: torch.nn.Module,
    loader,
    *,
    depth_range: DepthRange,
    device: str | torch.device,
    decodings: dict[str, tuple[str, str]],
    softmax_scale: float = DEFAULT_SOFTMAX_SCALE,
    flip_test: bool = False,
    stride: int = 4,
) -> dict[str, np.ndarray]:
    """Camera-frame predictions over the batches of a ``PackedDataset`` loader: the evaluation's and
    the training validation's one way to predict a split.

    Args:
        decodings: ``{name: (method, root)}``, method in ``pose.decode.DECODINGS``, root ``"gt"``
            (the ground-truth root depth) or ``"fit"`` (bone-length fit).
        flip_test: average each image's outputs with its mirror image's before decoding (C2F's
            evaluation; ``pose.model.forward_flip_test``).
    Returns:
        ``{name: (N, J, 3) mm}`` float64 per decoding, plus ``"gt"`` (N, J, 3) and ``"action"`` (N,).
        The model is put in eval mode and back in its mode before.
    """
    was_training = model.training
    model.eval()
    out: dict[str, list[np.ndarray]] = {"gt": [], "action": [], **{k: [] for k in decodings}}
    try:
        for batch in loader:
            batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
            _, vol = forward_flip_test(model, batch["image"]) if flip_test else model(batch["image"])
            for name, (method, root) in decodings.items():
                pred = decode_batch(vol.float(), batch, depth_range=depth_range, method=method, root=root,
                                    stride=stride, softmax_scale=softmax_scale)
                out[name].append(pred.cpu().numpy())
            out["gt"].append(batch["joints_3d"].double().cpu().numpy())
            out["action"].append(batch["action"].cpu().numpy())
    finally:
        model.train(was_training)
    return {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in out.items()}
