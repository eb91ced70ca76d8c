"""The packed dataset format: memory-mappable arrays + a few large image shard files.

One split directory (``DIR/train`` or ``DIR/test``) holds::

    meta.json            count, action_names, joint_names, image_size, layout, source, version, ...
    joints_2d.npy (N,17,2) f32   stored-image px          joints_3d.npy (N,17,3) f32  camera mm
    K.npy (N,3,3) f32            R.npy (N,3,3) f32        T.npy (N,3) f32             dist.npy (N,5) f32
    bbox.npy (N,4) f32           img_to_raw.npy (N,2,3) f32
    subject, action, subaction, camera, frame, index .npy (N,) int32     has_depth.npy (N,) bool
    visible.npy (N,17) bool      image_size.npy (N,2) int32 (w, h)
    images_000.bin, images_001.bin, ...   encoded image bytes as stored (png/jpg), concatenated
    image_index.npy (N,3) int64  [shard, offset, length]
    report.json          samples skipped by ``pose prepare`` (file, index, reason)

Reading one image is one ``os.pread`` on a file descriptor kept open per process (opened
lazily, reopened after a fork, so it works inside DataLoader workers).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from pose import skeleton
from pose.data.records import ARRAY_FIELDS, RawSample

PACK_VERSION = 1
INT_ARRAYS: tuple[str, ...] = ("subject", "action", "subaction", "camera", "frame", "index")
DEFAULT_SHARD_BYTES = 1 << 30
#: crop box side factor per layout (see :mod:`pose.data.dataset`).
DEFAULT_ENLARGE: dict[str, float] = {"seed": 1.28, "json": 1.25}


class PackWriter:
    """Appends samples to a split directory; call :meth:`finish` to write arrays and meta.json.

    Args:
        out_dir: the split directory (created; should be inside a temporary folder until renamed).
        shard_bytes: start a new ``images_XXX.bin`` once the current one reaches this size.
    """

    def __init__(self, out_dir: str | os.PathLike, shard_bytes: int = DEFAULT_SHARD_BYTES):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.shard_bytes = int(shard_bytes)
        self._cols: dict[str, list] = {k: [] for k in (*ARRAY_FIELDS, *INT_ARRAYS, "has_depth", "image_size")}
        self._index: list[tuple[int, int, int]] = []
        self._shard = -1
        self._fh = None
        self._offset = 0
        self.action_names_seen: dict[int, str] = {}
        self.image_exts: dict[str, int] = {}

    def _next_shard(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._shard += 1
        self._fh = open(self.out_dir / f"images_{self._shard:03d}.bin", "wb")
        self._offset = 0

    def add(self, sample: RawSample, image_bytes: bytes) -> None:
        if self._fh is None or (self._offset > 0 and self._offset + len(image_bytes) > self.shard_bytes):
            self._next_shard()
        self._fh.write(image_bytes)
        self._index.append((self._shard, self._offset, len(image_bytes)))
        self._offset += len(image_bytes)
        for name in ARRAY_FIELDS:
            self._cols[name].append(np.asarray(getattr(sample, name)))
        for name in INT_ARRAYS:
            self._cols[name].append(int(getattr(sample, name)))
        self._cols["has_depth"].append(bool(sample.has_depth))
        self._cols["image_size"].append(tuple(sample.image_size))
        self.action_names_seen[int(sample.action)] = sample.action_name
        ext = Path(sample.image_path).suffix.lower()
        self.image_exts[ext] = self.image_exts.get(ext, 0) + 1

    def __len__(self) -> int:
        return len(self._index)

    def finish(self, meta: dict) -> dict:
        """Write every array, ``image_index.npy`` and (last) ``meta.json``; returns the meta."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        n = len(self._index)
        for name, (shape, dtype) in ARRAY_FIELDS.items():
            col = self._cols[name]
            arr = np.stack(col).astype(dtype) if col else np.zeros((0, *shape), dtype)
            np.save(self.out_dir / f"{name}.npy", arr)
        for name in INT_ARRAYS:
            np.save(self.out_dir / f"{name}.npy", np.asarray(self._cols[name], dtype=np.int32).reshape(n))
        np.save(self.out_dir / "has_depth.npy", np.asarray(self._cols["has_depth"], dtype=bool).reshape(n))
        np.save(self.out_dir / "image_size.npy", np.asarray(self._cols["image_size"], dtype=np.int32).reshape(n, 2))
        np.save(self.out_dir / "image_index.npy", np.asarray(self._index, dtype=np.int64).reshape(n, 3))
        sizes = {tuple(s) for s in self._cols["image_size"]}
        full = {
            "version": PACK_VERSION,
            "count": n,
            "joint_names": list(skeleton.JOINT_NAMES_17),
            "image_size": list(next(iter(sizes))) if len(sizes) == 1 else None,
            "image_formats": self.image_exts,
            "num_shards": self._shard + 1,
            **meta,
        }
        with open(self.out_dir / "meta.json", "w") as fh:
            json.dump(full, fh, indent=1)
        return full


def read_meta(split_dir: str | os.PathLike) -> dict:
    path = Path(split_dir) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{split_dir}: not a packed split (no meta.json); run `pose prepare`")
    with open(path) as fh:
        meta = json.load(fh)
    if meta.get("version") != PACK_VERSION:
        raise ValueError(f"{path}: packed format version {meta.get('version')}, expected {PACK_VERSION}")
    return meta


def load_arrays(split_dir: str | os.PathLike, mmap: bool = True) -> dict[str, np.ndarray]:
    """Every ``.npy`` of a split (memory-mapped unless ``mmap=False``), keyed by name."""
    split_dir = Path(split_dir)
    read_meta(split_dir)
    mode = "r" if mmap else None
    return {p.stem: np.load(p, mmap_mode=mode) for p in sorted(split_dir.glob("*.npy"))}


class ImageStore:
    """Encoded image bytes of a packed split: ``store[i]`` → bytes, one ``pread`` per image."""

    def __init__(self, split_dir: str | os.PathLike, image_index: np.ndarray | None = None):
        self.split_dir = Path(split_dir)
        self.image_index = np.load(self.split_dir / "image_index.npy") if image_index is None else image_index
        self._fds: dict[int, int] = {}
        self._pid = -1

    def _fd(self, shard: int) -> int:
        if self._pid != os.getpid():  # first use, or inherited across a fork: reopen
            self._fds = {}
            self._pid = os.getpid()
        fd = self._fds.get(shard)
        if fd is None:
            fd = os.open(self.split_dir / f"images_{shard:03d}.bin", os.O_RDONLY)
            self._fds[shard] = fd
        return fd

    def __len__(self) -> int:
        return len(self.image_index)

    def __getitem__(self, i: int) -> bytes:
        shard, offset, length = (int(v) for v in self.image_index[i])
        data = os.pread(self._fd(shard), length, offset)
        if len(data) != length:
            raise OSError(f"{self.split_dir}/images_{shard:03d}.bin: short read for sample {i}")
        return data

    def close(self) -> None:
        if self._pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
        self._fds = {}

    def __getstate__(self) -> dict:  # picklable for spawn-started workers: drop descriptors
        state = self.__dict__.copy()
        state["_fds"], state["_pid"] = {}, -1
        return state

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def load_poses(split_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """All poses of a packed split as in-memory arrays (for lifting / evaluation).

    Returns: ``joints_2d`` (N,17,2) raw camera px (``img_to_raw`` applied), ``joints_2d_stored``
    (N,17,2) stored-image px, ``joints_3d`` (N,17,3) camera mm, ``K`` (N,3,3), ``R``, ``T``,
    ``dist``, ``visible``, ``has_depth``, ``subject``, ``action``, ``subaction``, ``camera``,
    ``frame``, ``index`` (N,), and ``action_names`` (array of str).
    """
    meta = read_meta(split_dir)
    arr = load_arrays(split_dir, mmap=False)
    A = arr["img_to_raw"].astype(np.float64)
    j2 = arr["joints_2d"].astype(np.float64)
    raw = np.einsum("nij,nkj->nki", A[:, :, :2], j2) + A[:, None, :, 2]
    out = {k: arr[k] for k in ("joints_3d", "K", "R", "T", "dist", "visible", "has_depth", *INT_ARRAYS)}
    out["joints_2d"] = raw.astype(np.float32)
    out["joints_2d_stored"] = arr["joints_2d"]
    out["action_names"] = np.asarray(meta.get("action_names", []), dtype=str)
    return out
