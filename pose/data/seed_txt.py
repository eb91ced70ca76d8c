"""Reader (and writer) for the Caffe seed's per-sample txt layout (real files: tests/fixtures/caffe_toy).

Layout under a root folder, one file ``<index>.txt`` per sample in each field folder::

    bbx_all_new/           x1 y1 x2 y2            box of the crop in the raw image (integers)
    center_x/, center_y/   112.0                  centre of the crop
    scale/                 224.0                  crop side S (px)
    gt_joint_2d_raw_new/   32 lines "x y"         2D on the S×S crop
    gt_joint_3d_mono_raw/  32 lines "X Y Z "      camera frame, mm
    camera_all/            R: T: f: c: k: p: blocks, rows of numbers
    image_path_file/       absolute path of the crop image (of the machine that wrote it)
    info_all/              7 "key value" lines (video_name, action_id, action_name, subaction_id,
                           camera_id, frame_id, video_name)
    images/                the S×S crops
    index_range/S{s}_{Action}_range.txt   "start end" (inclusive global indices)
    index_range/train_index.txt, index_range/Protocol2/{Action}_range.txt, .../all_id.txt

**Crop → raw mapping (decision).** The crop is the box ``bbx_all_new`` resampled to S×S under
the project's pixel-centre convention (``pose.camera.crop_affine``: box edge → −0.5, box centre →
(S − 1)/2), so ``img_to_raw`` is ``raw = x1 + (u + 0.5) · (x2 − x1) / S`` (same for v with y1,
y2), :func:`crop_to_raw_affine`. This is the seed's ``GenAug3D`` formula ``raw = n · (x2 − x1) +
x1`` with the Caffe normalised coordinate ``n = (u + 0.5) / S`` (Caffe samples pixel k at
(k + 0.5)/W), and it is exactly the inverse of the map ``pose synth`` renders with; the plain
reading ``raw = u / S · (x2 − x1) + x1`` differs by half a crop pixel (≈ 1 raw px). For the real
H36M files the mapping equals the raw GT only if ``bbx_all_new`` is the box the crop was cut
from, which the toy files, all of different samples, cannot confirm; and the real 2D GT includes
lens distortion while our 3D → 2D check is pinhole.

**Numbers are fixed-width.** The seed writes every number right-aligned in a 12-character
``%12.6f`` field with no separator of its own (``' -602.280594  -340.855113  4709.494331 '``), so
a value that needs all 12 characters touches its left neighbour: Human3.6M camera 2's
translation is ``' 1761.278564-5078.006836 1606.265015'``, a joint 1.04 m above the camera axis
``'  -22.241638-1041.121555 5311.463849'``. :func:`split_fields` reads a row by whitespace when
that gives the expected count of numbers and by 12-character columns otherwise (joint files,
camera blocks, bbox).

The stored-image ``bbox`` of a seed sample is the whole crop in pixel-centre convention,
``[-0.5, -0.5, S − 0.5, S − 0.5]``; ``img_to_raw`` maps it exactly onto ``bbx_all_new``.

Image paths: ``image_path_file`` holds absolute paths of the original machine (even Windows
paths); when that path does not exist the image is looked up by its base name in ``images/``,
then as ``images/<index>.png``.

Splits: subjects S1, S5, S6, S7, S8 train; S9, S11 test. In the real range files the S8/S9
boundary is **1559751 / 1559752** (not the README's 1559571), see :func:`split_bounds`.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pose import skeleton
from pose.data.records import BadSample, RawSample

FIELDS: tuple[str, ...] = (
    "bbx_all_new", "center_x", "center_y", "scale", "gt_joint_2d_raw_new", "gt_joint_3d_mono_raw",
    "camera_all", "image_path_file", "info_all",
)
TRAIN_SUBJECTS: tuple[int, ...] = (1, 5, 6, 7, 8)
TEST_SUBJECTS: tuple[int, ...] = (9, 11)
CAMERA_BLOCKS: dict[str, int] = {"R": 9, "T": 3, "f": 2, "c": 2, "k": 3, "p": 2}
_RANGE_RE = re.compile(r"^S(\d+)_(.+)_range\.txt$")
_SUBJECT_RE = re.compile(r"(?:^|[\\/])S(\d+)[\\/]")
#: The seed writes every number right-aligned in a ``%12.6f`` field (``' -602.280594  -340.855113'``).
FIELD_WIDTH = 12


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def split_fields(line: str, count: int | None = None, width: int = FIELD_WIDTH) -> list[str]:
    """The number strings of one row of the seed's files.

    Whitespace tokens when they are ``count`` numbers (any number of them when ``count`` is None).
    Otherwise the row is read as right-aligned ``width``-character columns: a value that needs all
    12 characters touches its left neighbour (``' 1761.278564-5078.006836 1606.265015'``, the
    translation of Human3.6M camera 2; ``'  -22.241638-1041.121555 5311.463849'``, a joint below
    -1000 mm), which only the columns separate without guessing. When neither reading gives numbers
    the whitespace tokens are returned for the caller to report.
    """
    tokens = line.split()
    if (count is None or len(tokens) == count) and all(map(_is_number, tokens)):
        return tokens
    text = line.rstrip()
    n = -(-len(text) // width)
    padded = text.rjust(n * width)
    cols = [padded[i * width:(i + 1) * width].strip() for i in range(n)]
    if n and (count is None or n == count) and all(c and " " not in c and _is_number(c) for c in cols):
        return cols
    return tokens


# ----------------------------------------------------------------------------- field parsers
def _read_text(path: Path, index: int) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise BadSample(index, path, "file missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadSample(index, path, f"cannot read: {exc}") from None


def _floats(tokens: list[str], path: Path, index: int, what: str) -> np.ndarray:
    try:
        values = np.array(tokens, dtype=np.float64)
    except ValueError:
        raise BadSample(index, path, f"{what}: not a number in {' '.join(tokens)[:60]!r}") from None
    if not np.all(np.isfinite(values)):
        raise BadSample(index, path, f"{what}: NaN or inf")
    return values


def parse_scalar(path: Path, index: int = -1) -> float:
    """One float (``center_x``, ``center_y``, ``scale``)."""
    tokens = _read_text(path, index).split()
    if len(tokens) != 1:
        raise BadSample(index, path, f"expected 1 number, got {len(tokens)}")
    return float(_floats(tokens, path, index, "value")[0])


def parse_bbox(path: Path, index: int = -1) -> np.ndarray:
    """``bbx_all_new``: (4,) x1 y1 x2 y2 in raw px (whitespace or 12-character columns, see
    :func:`split_fields`); requires x2 > x1 and y2 > y1."""
    tokens = split_fields(_read_text(path, index), 4)
    if len(tokens) != 4:
        raise BadSample(index, path, f"expected 4 numbers x1 y1 x2 y2, got {len(tokens)}")
    box = _floats(tokens, path, index, "bbox")
    if not (box[2] > box[0] and box[3] > box[1]):
        raise BadSample(index, path, f"degenerate box {box.tolist()}")
    return box


def parse_joints(path: Path, dims: int, index: int = -1, num_joints: int = 32) -> np.ndarray:
    """``gt_joint_2d_raw_new`` (dims=2) / ``gt_joint_3d_mono_raw`` (dims=3) → (num_joints, dims).

    Each line is read by :func:`split_fields` (whitespace, else 12-character columns)."""
    lines = [ln for ln in _read_text(path, index).splitlines() if ln.strip()]
    if len(lines) != num_joints:
        raise BadSample(index, path, f"expected {num_joints} joint lines, got {len(lines)}")
    tokens: list[str] = []
    for i, line in enumerate(lines):
        parts = line.split()
        if len(parts) != dims:  # values that touch: read the 12-character columns
            parts = split_fields(line, dims)
        if len(parts) != dims:
            raise BadSample(index, path, f"joint line {i + 1}: expected {dims} numbers, got {len(parts)} "
                            f"(neither space-separated nor in {FIELD_WIDTH}-character columns): {line.strip()[:50]!r}")
        tokens += parts
    try:
        values = np.array(tokens, dtype=np.float64).reshape(num_joints, dims)
    except ValueError:
        return np.stack([_floats(split_fields(ln, dims), path, index, f"joint line {i + 1}")
                         for i, ln in enumerate(lines)])
    if not np.isfinite(values).all():
        bad = int(np.nonzero(~np.isfinite(values).all(1))[0][0])
        raise BadSample(index, path, f"joint line {bad + 1}: NaN or inf")
    return values


def parse_camera(path: Path, index: int = -1) -> dict[str, np.ndarray]:
    """``camera_all``: dict R (3,3), T (3,), f (2,), c (2,), k (3,), p (2,) (H36M p order).

    Rows are ``%12.6f`` per value without separator, so a value that needs all 12 characters
    touches its left neighbour; :func:`split_fields` reads such a row by its columns."""
    blocks: dict[str, list[str]] = {}
    current: str | None = None
    for line in _read_text(path, index).splitlines():
        s = line.strip()
        if not s:
            continue
        if s.endswith(":") and s[:-1] in CAMERA_BLOCKS:
            current = s[:-1]
            if current in blocks:
                raise BadSample(index, path, f"camera block '{current}:' appears twice")
            blocks[current] = []
        elif current is None:
            raise BadSample(index, path, f"camera: text before the first block: {s[:40]!r}")
        else:
            blocks[current].extend(split_fields(line))
    out: dict[str, np.ndarray] = {}
    for name, n in CAMERA_BLOCKS.items():
        if name not in blocks:
            raise BadSample(index, path, f"camera block '{name}:' missing")
        if len(blocks[name]) != n:
            raise BadSample(index, path, f"camera block '{name}:' has {len(blocks[name])} numbers, expected {n}")
        out[name] = _floats(blocks[name], path, index, f"camera {name}")
    out["R"] = out["R"].reshape(3, 3)
    if not (out["f"] > 0).all():
        raise BadSample(index, path, f"camera focal length not positive: {out['f'].tolist()}")
    return out


def parse_info(path: Path, index: int = -1) -> dict[str, str]:
    """``info_all``: ``key value`` lines → dict (first occurrence of a key wins)."""
    info: dict[str, str] = {}
    for line in _read_text(path, index).splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and parts[0] not in info:
            info[parts[0]] = parts[1].strip()
    for key in ("subaction_id", "camera_id", "frame_id"):
        if key not in info:
            raise BadSample(index, path, f"info: key '{key}' missing")
        try:
            int(info[key])
        except ValueError:
            raise BadSample(index, path, f"info: {key} is not an integer: {info[key]!r}") from None
    return info


def parse_range_file(path: Path) -> tuple[int, int]:
    """``S{s}_{Action}_range.txt`` → (start, end), inclusive."""
    tokens = path.read_text().split()
    if len(tokens) != 2:
        raise ValueError(f"{path}: expected 'start end', got {len(tokens)} numbers")
    start, end = int(tokens[0]), int(tokens[1])
    if end < start:
        raise ValueError(f"{path}: end {end} < start {start}")
    return start, end


def parse_index_list(path: Path) -> np.ndarray:
    """One integer per line (``train_index.txt``, ``Protocol2/*.txt``) → int64 array."""
    return np.loadtxt(path, dtype=np.int64, ndmin=1)


# ----------------------------------------------------------------------------- geometry
def crop_to_raw_affine(bbox_raw, crop_size: float = 224.0) -> np.ndarray:
    """(2, 3) affine crop px → raw px: ``raw = x1 + (u + 0.5) · (x2 − x1) / S`` (y likewise).

    The inverse of ``pose.camera.crop_affine(box centre, box side, 0, S)`` for a square box.
    """
    x1, y1, x2, y2 = (float(v) for v in bbox_raw)
    sx, sy = (x2 - x1) / crop_size, (y2 - y1) / crop_size
    return np.array([[sx, 0.0, x1 + 0.5 * sx], [0.0, sy, y1 + 0.5 * sy]])


def raw_to_crop(points_raw, bbox_raw, crop_size: float = 224.0) -> np.ndarray:
    """(..., 2) raw px → crop px, the inverse of :func:`crop_to_raw_affine`."""
    x1, y1, x2, y2 = (float(v) for v in bbox_raw)
    p = np.asarray(points_raw, dtype=np.float64)
    return np.stack([(p[..., 0] - x1) * crop_size / (x2 - x1) - 0.5,
                     (p[..., 1] - y1) * crop_size / (y2 - y1) - 0.5], -1)


def intrinsics(f, c) -> np.ndarray:
    """K (3, 3) from f (fx, fy) and c (cx, cy)."""
    return np.array([[f[0], 0.0, c[0]], [0.0, f[1], c[1]], [0.0, 0.0, 1.0]])


# 17 → 32 expansion for writers: every 32-joint slot copies its nearest 17-joint equivalent.
_FROM17: dict[int, int] = {i32: i17 for i17, i32 in enumerate(skeleton.H36M_17_FROM_32)}
_FROM17.update({4: 3, 5: 3, 9: 6, 10: 6, 16: 8, 20: 13, 21: 13, 22: 13, 23: 13,
                24: 8, 28: 16, 29: 16, 30: 16, 31: 16})


def joints17_to32(joints17) -> np.ndarray:
    """(..., 17, C) → (..., 32, C): the 17 joints in their H36M slots; Spine (11) = mean of pelvis
    and Spine1, toes/hand ends copy the foot/wrist, clavicles copy the neck. ``to17`` inverts it."""
    j = np.asarray(joints17, dtype=np.float64)
    out = j[..., [_FROM17.get(i, 0) for i in range(32)], :].copy()
    out[..., 11, :] = 0.5 * (j[..., 0, :] + j[..., 7, :])
    return out


# ----------------------------------------------------------------------------- index ranges
@dataclass(frozen=True)
class RangeEntry:
    subject: int
    action_name: str
    start: int
    end: int  # inclusive


def read_index_ranges(root: str | os.PathLike) -> list[RangeEntry]:
    """All ``index_range/S{s}_{Action}_range.txt`` of a dataset, sorted by start index."""
    folder = Path(root) / "index_range"
    entries = []
    if folder.is_dir():
        for path in folder.iterdir():
            m = _RANGE_RE.match(path.name)
            if m:
                start, end = parse_range_file(path)
                entries.append(RangeEntry(int(m.group(1)), m.group(2), start, end))
    entries.sort(key=lambda e: e.start)
    for a, b in zip(entries, entries[1:], strict=False):
        if b.start <= a.end:
            raise ValueError(f"{folder}: ranges overlap: S{a.subject} {a.action_name} and S{b.subject} {b.action_name}")
    return entries


def split_bounds(entries: Iterable[RangeEntry]) -> tuple[int, int]:
    """(last train index, first test index) of the subject split, from the range files."""
    entries = list(entries)
    last_train = max(e.end for e in entries if e.subject in TRAIN_SUBJECTS)
    first_test = min(e.start for e in entries if e.subject in TEST_SUBJECTS)
    return last_train, first_test


def protocol2_indices(root: str | os.PathLike) -> dict[str, np.ndarray]:
    """``index_range/Protocol2/{Action}_range.txt`` → {action: indices} (every 64th test frame)."""
    folder = Path(root) / "index_range" / "Protocol2"
    return {p.name[: -len("_range.txt")]: parse_index_list(p) for p in sorted(folder.glob("*_range.txt"))}


def action_names_for(names: Iterable[str]) -> tuple[str, ...]:
    """``skeleton.ACTIONS_H36M`` when every name is an H36M action, else the sorted names."""
    names = set(names)
    if names <= set(skeleton.ACTIONS_H36M):
        return skeleton.ACTIONS_H36M
    return tuple(sorted(names))


# ----------------------------------------------------------------------------- reader
def split_of_subject(subject: int) -> str:
    return "train" if subject in TRAIN_SUBJECTS else "test" if subject in TEST_SUBJECTS else "other"


class SeedTxtReader:
    """Reads samples of the seed txt layout under ``root``; ``read(index)`` → :class:`RawSample`.

    The sample list comes from ``index_range/`` (subject and action per range); without range
    files it falls back to the indices present in ``info_all/`` with the subject parsed from the
    ``video_name`` path (``...\\S7\\Smoking...``) and the action from ``action_name``.
    """

    layout = "seed"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"seed layout root {self.root} is not a directory")
        self.ranges = read_index_ranges(self.root)
        self._starts = [e.start for e in self.ranges]
        self._entries: list[tuple[int, int, str]] | None = None  # (index, subject, action_name)
        self._lookup: dict[int, tuple[int, str]] | None = None  # without ranges only
        self._action_names: tuple[str, ...] | None = None
        self._image_dir = self.root / "images"

    @staticmethod
    def detect(root: str | os.PathLike) -> bool:
        root = Path(root)
        return (root / "gt_joint_3d_mono_raw").is_dir() or (root / "info_all").is_dir()

    # -- sample list
    def entries(self) -> list[tuple[int, int, str]]:
        """[(index, subject, action_name)] of every sample of the dataset, in index order."""
        if self._entries is None:
            if self.ranges:
                out = [(i, e.subject, e.action_name) for e in self.ranges for i in range(e.start, e.end + 1)]
            else:
                out = []
                for path in sorted((self.root / "info_all").glob("*.txt"), key=lambda p: int(p.stem)):
                    info = parse_info(path, int(path.stem))
                    m = _SUBJECT_RE.search(info.get("video_name", ""))
                    subject = int(m.group(1)) if m else int(info.get("actor_id", 0))
                    out.append((int(path.stem), subject, info.get("action_name", "unknown")))
            self._entries = out
        return self._entries

    @property
    def action_names(self) -> tuple[str, ...]:
        if self._action_names is None:
            names = {e.action_name for e in self.ranges} or {e[2] for e in self.entries()}
            self._action_names = action_names_for(names)
        return self._action_names

    def indices(self, split: str = "all") -> list[int]:
        """Global indices of ``split`` ("train": S1,5,6,7,8; "test": S9,S11; "all")."""
        if split not in ("train", "test", "all"):
            raise ValueError(f"split: expected train|test|all, got {split!r}")
        if self.ranges:  # straight from the ranges: no per-sample tuples for Human3.6M's 2.1 M frames
            return [i for e in self.ranges if split in ("all", split_of_subject(e.subject))
                    for i in range(e.start, e.end + 1)]
        return [i for i, s, _ in self.entries() if split == "all" or split_of_subject(s) == split]

    def locate(self, index: int) -> tuple[int, str] | None:
        """(subject, action_name) of sample ``index``, None when no range holds it (a bisection of
        the ranges: no per-sample table in each worker process)."""
        if self.ranges:
            k = bisect.bisect_right(self._starts, index) - 1
            if k >= 0 and index <= self.ranges[k].end:
                return self.ranges[k].subject, self.ranges[k].action_name
            return None
        if self._lookup is None:
            self._lookup = {i: (s, a) for i, s, a in self.entries()}
        return self._lookup.get(index)

    # -- one sample
    def field_path(self, field: str, index: int) -> Path:
        return self.root / field / f"{index}.txt"

    def resolve_image(self, index: int) -> Path:
        path_file = self.field_path("image_path_file", index)
        text = _read_text(path_file, index).strip()
        if not text:
            raise BadSample(index, path_file, "empty image path")
        base = re.split(r"[\\/]", text)[-1]
        candidates = [Path(text), self.root / text, self._image_dir / base, self._image_dir / f"{index}.png"]
        for c in candidates:
            if c.is_file():
                return c
        raise BadSample(index, path_file, f"image {text!r} not found (also looked in {self._image_dir})")

    def read(self, index: int, subject: int | None = None, action_name: str | None = None) -> RawSample:
        """Parse and check every field file of sample ``index``; raises :class:`BadSample`."""
        if subject is None or action_name is None:
            where = self.locate(index)
            if where is None:
                raise BadSample(index, self.root / "index_range", "index not in any range")
            subject, action_name = where
        f = self.field_path
        bbox_raw = parse_bbox(f("bbx_all_new", index), index)
        parse_scalar(f("center_x", index), index)
        parse_scalar(f("center_y", index), index)
        size = parse_scalar(f("scale", index), index)
        if size <= 0:
            raise BadSample(index, f("scale", index), f"crop size not positive: {size}")
        j2 = parse_joints(f("gt_joint_2d_raw_new", index), 2, index)
        j3 = parse_joints(f("gt_joint_3d_mono_raw", index), 3, index)
        if not np.all(j3[:, 2] > 0):
            raise BadSample(index, f("gt_joint_3d_mono_raw", index),
                            f"joint depth not positive (min Z = {j3[:, 2].min():.3f} mm)")
        cam = parse_camera(f("camera_all", index), index)
        info = parse_info(f("info_all", index), index)
        if "action_name" in info and info["action_name"] != action_name:
            raise BadSample(index, f("info_all", index),
                            f"action_name {info['action_name']!r} but index_range says {action_name!r}")
        image = self.resolve_image(index)
        names = self.action_names
        s = int(round(size))
        return RawSample(
            index=index,
            image_path=str(image),
            image_size=(s, s),
            joints_2d=skeleton.to17(j2),
            joints_3d=skeleton.to17(j3),
            K=intrinsics(cam["f"], cam["c"]),
            R=cam["R"],
            T=cam["T"],
            dist=np.concatenate([cam["k"], cam["p"]]),
            bbox=np.array([-0.5, -0.5, size - 0.5, size - 0.5]),
            img_to_raw=crop_to_raw_affine(bbox_raw, size),
            subject=int(subject),
            action=names.index(action_name) if action_name in names else -1,
            action_name=action_name,
            subaction=int(info["subaction_id"]),
            camera=int(info["camera_id"]),
            frame=int(info["frame_id"]),
            has_depth=True,
        )


# ----------------------------------------------------------------------------- writer
def format_camera(R, T, f, c, k, p) -> str:
    """The ``camera_all`` text of one camera (same format as the seed's files)."""
    R = np.asarray(R, dtype=np.float64).reshape(3, 3)

    def row(values) -> str:
        return "".join(f" {v:11.6f}" for v in np.ravel(values))  # = the seed's %12.6f, never fused

    return ("R:\n" + "\n".join(row(r) for r in R) + f"\nT:\n{row(T)}\nf:\n{row(f)}\nc:\n{row(c)}\n"
            f"k:\n{row(k)}\np:\n{row(p)}\n")


def write_seed_sample(root: str | os.PathLike, index: int, *, bbox_raw, joints_2d_crop, joints_3d_cam,
                      R, T, f, c, k=(0.0, 0.0, 0.0), p=(0.0, 0.0), image: bytes | np.ndarray,
                      subject: int, action_name: str, action_id: int, subaction: int = 1,
                      camera: int = 1, frame: int = 0, crop_size: int = 224, image_ext: str = ".png") -> None:
    """Write every field file of one sample in the seed layout (folders created as needed).

    bbox_raw: (4,) x1 y1 x2 y2 raw px (written as integers, so pass integer boxes if the
    coordinates must round-trip exactly). joints_2d_crop (17|32, 2) crop px, joints_3d_cam
    (17|32, 3) camera mm (17 joints are expanded with :func:`joints17_to32`). image: encoded
    bytes, or a (S, S, 3) BGR uint8 array that is encoded as ``image_ext``.
    """
    root = Path(root)
    j2 = np.asarray(joints_2d_crop, dtype=np.float64)
    j3 = np.asarray(joints_3d_cam, dtype=np.float64)
    j2 = joints17_to32(j2) if j2.shape[0] == 17 else j2
    j3 = joints17_to32(j3) if j3.shape[0] == 17 else j3
    for folder in (*FIELDS, "images"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    if isinstance(image, np.ndarray):
        ok, buf = cv2.imencode(image_ext, image)
        if not ok:
            raise ValueError(f"image: cannot encode as {image_ext}")
        image = buf.tobytes()
    image_path = (root / "images" / f"{index}{image_ext}").resolve()
    image_path.write_bytes(image)

    def put(field: str, text: str) -> None:
        (root / field / f"{index}.txt").write_text(text)

    x1, y1, x2, y2 = (int(round(v)) for v in bbox_raw)
    put("bbx_all_new", f"{x1} {y1} {x2} {y2}\n")
    put("center_x", f"{crop_size / 2:.1f}\n")
    put("center_y", f"{crop_size / 2:.1f}\n")
    put("scale", f"{float(crop_size):.1f}\n")
    put("gt_joint_2d_raw_new", "".join(f"{x:12.6f} {y:12.6f}\n" for x, y in j2))
    put("gt_joint_3d_mono_raw", "".join(f"{x:12.6f} {y:12.6f} {z:12.6f} \n" for x, y, z in j3))
    put("camera_all", format_camera(R, T, f, c, k, p))
    put("image_path_file", f"{image_path}\n")
    video = f"S{subject}/{action_name}.{camera}.mp4"
    info = [("video_name", video), ("action_id", action_id), ("action_name", action_name),
            ("subaction_id", subaction), ("camera_id", camera), ("frame_id", frame), ("video_name", video)]
    put("info_all", "".join(f"{key:>15} {str(v):>60}\n" for key, v in info))


def write_index_ranges(root: str | os.PathLike, entries: Iterable[RangeEntry]) -> None:
    """Write ``index_range/S{s}_{Action}_range.txt`` files (right-aligned like the seed's)."""
    folder = Path(root) / "index_range"
    folder.mkdir(parents=True, exist_ok=True)
    for e in entries:
        (folder / f"S{e.subject}_{e.action_name}_range.txt").write_text(f"{e.start:12d} {e.end:12d}\n")


def write_layout_from_poses(root: str | os.PathLike, joints_3d, K, subjects, action_names, *,
                            crop_size: int = 224, margin: float = 1.3, R=None, T=None,
                            cameras=None, frames=None, image_ext: str = ".png", seed: int = 0,
                            start_index: int = 0) -> list[RangeEntry]:
    """Write a small seed-layout dataset from camera-frame 3D poses (tests, benchmarks, demos).

    Each pose is projected with its K (pinhole); the crop box is the square (integer) box of side
    ``margin`` × the larger side of the 2D tight box; the crop image is a smooth noise background with the
    2D skeleton drawn on it. Samples are grouped by (subject, action) in order of first
    appearance so every ``index_range`` file is one contiguous range.

    Args:
        joints_3d: (N, 17, 3) camera mm. K: (N, 3, 3) or (3, 3). subjects: (N,) int.
        action_names: (N,) str. R, T: optional (N,3,3)/(N,3) extrinsics (identity/zero).
        cameras, frames: optional (N,) int.
    Returns:
        the written :class:`RangeEntry` list.
    """
    j3 = np.asarray(joints_3d, dtype=np.float64)
    n = len(j3)
    if j3.shape != (n, 17, 3):
        raise ValueError(f"joints_3d: expected (N, 17, 3), got {j3.shape}")
    Ks = np.broadcast_to(np.asarray(K, dtype=np.float64), (n, 3, 3))
    Rs = np.broadcast_to(np.eye(3) if R is None else np.asarray(R, dtype=np.float64), (n, 3, 3))
    Ts = np.broadcast_to(np.zeros(3) if T is None else np.asarray(T, dtype=np.float64), (n, 3))
    cams = np.ones(n, dtype=int) if cameras is None else np.asarray(cameras)
    frms = np.arange(n) if frames is None else np.asarray(frames)
    groups: dict[tuple[int, str], list[int]] = {}
    for i in range(n):
        groups.setdefault((int(subjects[i]), str(action_names[i])), []).append(i)
    names = action_names_for(a for _, a in groups)
    rng = np.random.default_rng(seed)
    entries = []
    index = start_index
    for (subject, action), members in groups.items():
        first = index
        for i in members:
            uvw = j3[i] @ Ks[i].T
            raw2d = uvw[:, :2] / uvw[:, 2:3]
            lo, hi = raw2d.min(0), raw2d.max(0)
            side = int(np.ceil(max(hi - lo) * margin))
            cx, cy = np.round((lo + hi) / 2).astype(int)
            box = (cx - side // 2, cy - side // 2, cx - side // 2 + side, cy - side // 2 + side)
            crop2d = raw_to_crop(raw2d, box, crop_size)
            small = rng.integers(40, 110, size=(crop_size // 8, crop_size // 8, 3), dtype=np.uint8)
            img = cv2.resize(small, (crop_size, crop_size), interpolation=cv2.INTER_LINEAR)
            for child, parent in enumerate(skeleton.PARENTS_17):
                if parent >= 0:
                    a, b = (np.round(crop2d[[parent, child]] * 4).astype(int)).tolist()
                    colour = (60, 200, 255) if child in skeleton.LEFT_17 else (255, 160, 60)
                    cv2.line(img, tuple(a), tuple(b), colour, 3, cv2.LINE_AA, shift=2)
            f, c = (Ks[i][0, 0], Ks[i][1, 1]), (Ks[i][0, 2], Ks[i][1, 2])
            write_seed_sample(root, index, bbox_raw=box, joints_2d_crop=crop2d, joints_3d_cam=j3[i],
                              R=Rs[i], T=Ts[i], f=f, c=c, image=img, subject=subject, action_name=action,
                              action_id=names.index(action) + 2, camera=int(cams[i]), frame=int(frms[i]),
                              crop_size=crop_size, image_ext=image_ext)
            index += 1
        entries.append(RangeEntry(subject, action, first, index - 1))
    write_index_ranges(root, entries)
    return entries
