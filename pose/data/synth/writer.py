"""Writer for the Caffe seed's per-sample txt layout, number formats copied from the real files of
the seed (``tests/fixtures/caffe_toy``: one file of every field and its ``index_range/``):

- ``bbx_all_new/<i>.txt``: ``x1 y1 x2 y2`` integers separated by one space;
- ``center_x``/``center_y``: ``112.0``; ``scale``: ``224.0``;
- ``gt_joint_2d_raw_new``: 32 lines ``%12.6f %12.6f`` (crop px);
- ``gt_joint_3d_mono_raw``: 32 lines ``%12.6f %12.6f %12.6f `` (camera mm, trailing space);
- ``camera_all``: ``R:`` 3 rows, ``T:``, ``f:``, ``c:``, ``k:``, ``p:``, each row `` %11.6f`` per value
  (= the seed's ``%12.6f`` whenever that leaves a space between numbers);
- ``info_all``: 7 lines ``%15s %70s`` (key, value);
- ``image_path_file``: one line (we write the relative ``images/<i>.png`` so the tree is
  relocatable and byte-identical wherever it is generated; the seed's are absolute Windows paths);
- ``index_range/S{s}_{Action}_range.txt``: ``%12d %12d`` (inclusive); ``Protocol2/*.txt`` and
  ``all_id.txt``: ``%12d`` per line; ``train_index.txt`` / ``train_index_shuffle.txt``: ``%d``.
Every file ends with a newline.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np

FIELDS: tuple[str, ...] = (
    "bbx_all_new", "center_x", "center_y", "scale", "gt_joint_2d_raw_new", "gt_joint_3d_mono_raw",
    "camera_all", "image_path_file", "info_all", "images",
)
#: H36M camera serials for camera_id 1..4 (used in ``video_name``)
CAMERA_SERIALS: tuple[str, ...] = ("54138969", "55011271", "58860488", "60457274")


def format_bbox(bbox: Sequence[int]) -> str:
    if len(bbox) != 4:
        raise ValueError(f"bbox: expected 4 integers, got {bbox}")
    return " ".join(str(int(v)) for v in bbox) + "\n"


def format_joints_2d(uv: np.ndarray) -> str:
    """(32, 2) → 32 lines ``%12.6f %12.6f``."""
    uv = np.asarray(uv, dtype=np.float64)
    if uv.shape != (32, 2):
        raise ValueError(f"uv: expected shape (32, 2), got {uv.shape}")
    return "".join(f"{x:12.6f} {y:12.6f}\n" for x, y in uv)


def format_joints_3d(X: np.ndarray) -> str:
    """(32, 3) → 32 lines ``%12.6f %12.6f %12.6f `` (with the seed's trailing space)."""
    X = np.asarray(X, dtype=np.float64)
    if X.shape != (32, 3):
        raise ValueError(f"X: expected shape (32, 3), got {X.shape}")
    return "".join(f"{x:12.6f} {y:12.6f} {z:12.6f} \n" for x, y, z in X)


def _row(vals: Iterable[float]) -> str:
    """Values as ``%12.6f`` each, except that a value needing all 12 characters still gets a
    separating space (``" %11.6f"``), so e.g. T = −1948.9, −4418.3 never fuses into one token."""
    return "".join(f" {float(v):11.6f}" for v in vals) + "\n"


def format_camera(R: np.ndarray, T: np.ndarray, f: np.ndarray, c: np.ndarray,
                  k: np.ndarray = (0.0, 0.0, 0.0), p: np.ndarray = (0.0, 0.0)) -> str:
    """Camera block: R (3,3) world→camera, T (3,) camera centre world mm, f (2,), c (2,) px,
    k (3,) radial, p (2,) tangential (H36M order)."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3):
        raise ValueError(f"R: expected shape (3, 3), got {R.shape}")
    out = ["R:\n"] + [_row(r) for r in R]
    for key, v, n in (("T", T, 3), ("f", f, 2), ("c", c, 2), ("k", k, 3), ("p", p, 2)):
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        if v.shape != (n,):
            raise ValueError(f"{key}: expected {n} values, got {v.shape}")
        out += [f"{key}:\n", _row(v)]
    return "".join(out)


def video_name(subject: int, action: str, camera_id: int) -> str:
    """``synth\\S1\\Walk.54138969.mp4`` (the seed's ``...\\S7\\Smoking.55011271.mp4`` pattern)."""
    return f"synth\\S{subject}\\{action}.{CAMERA_SERIALS[camera_id - 1]}.mp4"


def format_info(subject: int, action_id: int, action: str, subaction: int, camera_id: int, frame: int) -> str:
    """The 7 ``%15s %70s`` lines of ``info_all`` (first and last key ``video_name`` as in the seed)."""
    vn = video_name(subject, action, camera_id)
    rows = (("video_name", vn), ("action_id", action_id), ("action_name", action),
            ("subaction_id", subaction), ("camera_id", camera_id), ("frame_id", frame), ("video_name", vn))
    return "".join(f"{k:>15s} {str(v):>70s}\n" for k, v in rows)


def format_range(start: int, end: int) -> str:
    return f"{int(start):12d} {int(end):12d}\n"


def format_index_list(indices: Iterable[int], width: int = 12) -> str:
    return "".join(f"{int(i):{width}d}\n" for i in indices)


def make_dirs(root: str) -> None:
    for field in FIELDS:
        os.makedirs(os.path.join(root, field), exist_ok=True)
    os.makedirs(os.path.join(root, "index_range", "Protocol2"), exist_ok=True)


def _put(path: str, text: str | bytes) -> None:
    """Write a whole file with one syscall (ASCII text, ``\n`` line ends)."""
    data = text.encode("ascii") if isinstance(text, str) else text
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def write_sample(root: str, index: int, png: bytes, bbox: np.ndarray, uv32: np.ndarray, X32: np.ndarray,
                 R: np.ndarray, T: np.ndarray, f: np.ndarray, c: np.ndarray, info: str) -> None:
    """Write every per-sample field of sample ``index`` under ``root`` (folders from ``make_dirs``).

    png: encoded 224×224 image; bbox (4,) int raw px; uv32 (32,2) crop px; X32 (32,3) camera mm;
    R, T, f, c: camera (zero distortion); info: ``format_info`` text.
    """
    name = f"{index}.txt"
    j = os.path.join
    _put(j(root, "bbx_all_new", name), format_bbox(bbox))
    _put(j(root, "center_x", name), "112.0\n")
    _put(j(root, "center_y", name), "112.0\n")
    _put(j(root, "scale", name), "224.0\n")
    _put(j(root, "gt_joint_2d_raw_new", name), format_joints_2d(uv32))
    _put(j(root, "gt_joint_3d_mono_raw", name), format_joints_3d(X32))
    _put(j(root, "camera_all", name), format_camera(R, T, f, c))
    _put(j(root, "image_path_file", name), f"images/{index}.png\n")
    _put(j(root, "info_all", name), info)
    _put(j(root, "images", f"{index}.png"), png)


def write_index_range(root: str, ranges: dict[tuple[int, str], tuple[int, int]], train_indices: Sequence[int],
                      shuffle_perm: np.ndarray, protocol2: dict[str, list[int]]) -> None:
    """``index_range/``: ``S{s}_{Action}_range.txt`` for every (subject, action) key of ``ranges``,
    ``train_index.txt`` + ``train_index_shuffle.txt`` (``train_indices`` permuted by ``shuffle_perm``),
    ``Protocol2/{Action}_range.txt`` per action and ``Protocol2/all_id.txt`` (their concatenation in
    the order of ``protocol2``)."""
    base = os.path.join(root, "index_range")
    os.makedirs(os.path.join(base, "Protocol2"), exist_ok=True)
    for (subject, action), (a, b) in ranges.items():
        _put(os.path.join(base, f"S{subject}_{action}_range.txt"), format_range(a, b))
    train = np.asarray(train_indices, dtype=np.int64)
    _put(os.path.join(base, "train_index.txt"), format_index_list(train, width=0))
    _put(os.path.join(base, "train_index_shuffle.txt"), format_index_list(train[shuffle_perm], width=0))
    all_ids: list[int] = []
    for action, ids in protocol2.items():
        _put(os.path.join(base, "Protocol2", f"{action}_range.txt"), format_index_list(ids))
        all_ids += list(ids)
    _put(os.path.join(base, "Protocol2", "all_id.txt"), format_index_list(sorted(all_ids)))
