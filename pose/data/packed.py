"""The packed dataset format: memory-mappable arrays + a few large image shard files.

One split directory (``DIR/train`` or ``DIR/test``) holds::

    meta.json            count, action_names, joint_names, image_size, layout, source, version,
                         files: {name: {bytes, sha256}} of every array and shard below, ...
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

**A split proves it is whole.** ``meta.json`` is written last and records the size and SHA-256
of every array and shard. :func:`read_meta`, through which every reader of a split opens it,
checks that each file is there with its recorded size (a few ``stat`` calls), so a partial copy
fails at the start with one line naming the file; :func:`verify_split` (``pose prepare --verify
DIR``) also compares every checksum.

**Resumable writing.** :class:`PackWriter` closes a shard once it holds ``shard_bytes`` (or
:data:`SHARD_ROWS` samples) and writes ``rows_XXX.npz`` beside it: the shard's samples, its size
and checksum, and how many inputs had been consumed (samples packed or skipped). A writer opened
on a folder that holds such records takes over every one whose shard still has its size and
checksum and continues after the last of them (:attr:`PackWriter.position`). ``finish`` streams
the arrays from the records and then removes them, so memory holds one shard's samples whatever
the size of the dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pose import skeleton
from pose.data.records import ARRAY_FIELDS, RawSample

PACK_VERSION = 2
INT_ARRAYS: tuple[str, ...] = ("subject", "action", "subaction", "camera", "frame", "index")
DEFAULT_SHARD_BYTES = 1 << 30
#: a shard also closes at this many samples (the writer keeps the open shard's rows in buffers of
#: this length: ~10 MB, whatever the image size or the size of the split)
SHARD_ROWS = 16384
#: crop box side factor per layout (see :mod:`pose.data.dataset`).
DEFAULT_ENLARGE: dict[str, float] = {"seed": 1.28, "json": 1.25}
#: every per-sample array of a split but ``image_index``: (shape of one row, dtype)
COLUMNS: dict[str, tuple[tuple[int, ...], type]] = {
    **ARRAY_FIELDS, **{name: ((), np.int32) for name in INT_ARRAYS},
    "has_depth": ((), np.bool_), "image_size": ((2,), np.int32),
}
_RECORD_RE = re.compile(r"^(?:images|rows)_(\d+)\.(?:bin|npz)(?:\.tmp)?$")


def shard_name(shard: int) -> str:
    return f"images_{shard:03d}.bin"


def _record_name(shard: int) -> str:
    return f"rows_{shard:03d}.npz"


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, as ``sha256sum`` prints it."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def file_entry(path: str | os.PathLike) -> dict[str, int | str]:
    """``{"bytes": size, "sha256": hex}`` of one file (an entry of meta.json ``files``)."""
    return {"bytes": os.path.getsize(path), "sha256": file_digest(path)}


def _atomic_write(path: Path, write) -> None:
    """``write(fh)`` into ``path.tmp``, fsync, rename onto ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class PackWriter:
    """Appends samples to a split directory; call :meth:`finish` to write arrays and meta.json.

    Args:
        out_dir: the split directory (created; should be inside a temporary folder until renamed).
            Closed shards of an interrupted writer found there are validated and taken over.
        shard_bytes: close the current ``images_XXX.bin`` once the next image would take it past
            this size (a larger image gets a shard of its own), or once it holds :data:`SHARD_ROWS`
            samples.

    Attributes:
        position: inputs consumed so far (:meth:`add` and :meth:`skip` calls, those of the
            interrupted run whose shards were taken over included).
        resumed: number of shards taken over from an interrupted run.
        skipped: the records passed to :meth:`skip` (taken-over ones included).
    """

    def __init__(self, out_dir: str | os.PathLike, shard_bytes: int = DEFAULT_SHARD_BYTES):
        self.out_dir = Path(out_dir)
        if (self.out_dir / "meta.json").exists():
            raise FileExistsError(f"{self.out_dir}: already a finished packed split")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.shard_bytes = int(shard_bytes)
        self.position = 0
        self.skipped: list[dict] = []
        self._closed: list[dict] = []  # one record per closed shard (see _close_shard)
        self._fh = None
        self._rows: dict[str, np.ndarray] = {}  # the open shard's rows: COLUMNS + "shard_index" (offset, length)
        self._start_shard_state()
        self.resumed = self._take_over()

    # -- the open shard
    def _start_shard_state(self) -> None:
        self._count = 0  # samples in the open shard
        self._offset = 0
        self._hash = hashlib.sha256()
        self._skipped_here: list[dict] = []
        self._exts: dict[str, int] = {}

    def add(self, sample: RawSample, image_bytes: bytes) -> None:
        if self._fh is not None and (self._count >= SHARD_ROWS or
                                     self._offset + len(image_bytes) > self.shard_bytes):
            self._close_shard()
        if self._fh is None:
            self._fh = open(self.out_dir / shard_name(len(self._closed)), "wb")
        if not self._rows:
            self._rows = {name: np.empty((SHARD_ROWS, *shape), dtype) for name, (shape, dtype) in COLUMNS.items()}
            self._rows["shard_index"] = np.empty((SHARD_ROWS, 2), np.int64)
        self._fh.write(image_bytes)
        self._hash.update(image_bytes)
        row = self._count
        self._rows["shard_index"][row] = (self._offset, len(image_bytes))
        self._offset += len(image_bytes)
        for name in COLUMNS:
            self._rows[name][row] = sample.image_size if name == "image_size" else getattr(sample, name)
        self._count += 1
        ext = Path(sample.image_path).suffix.lower()
        self._exts[ext] = self._exts.get(ext, 0) + 1
        self.position += 1

    def skip(self, record: dict) -> None:
        """Count one input as consumed without a sample (``record``: index, file, reason)."""
        self.skipped.append(record)
        self._skipped_here.append(record)
        self.position += 1

    def _close_shard(self) -> None:
        """fsync the open shard, then write its record ``rows_XXX.npz`` (renamed into place last)."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        k = len(self._closed)
        info = {"count": self._count, "bytes": self._offset, "sha256": self._hash.hexdigest(),
                "position": self.position, "skipped": self._skipped_here, "image_formats": self._exts}
        cols = {name: rows[: self._count] for name, rows in self._rows.items()}
        _atomic_write(self.out_dir / _record_name(k), lambda fh: np.savez(fh, info=np.array(json.dumps(info)), **cols))
        self._closed.append(info)
        self._start_shard_state()

    # -- taking over an interrupted writer's shards
    def _valid_record(self, k: int) -> dict | None:
        rows, shard = self.out_dir / _record_name(k), self.out_dir / shard_name(k)
        if not (rows.is_file() and shard.is_file()):
            return None
        try:
            with np.load(rows) as z:
                info = json.loads(str(z["info"]))
                count = len(z["shard_index"])
        except (OSError, ValueError, KeyError):
            return None
        if count != info["count"] or shard.stat().st_size != info["bytes"] or file_digest(shard) != info["sha256"]:
            return None
        return info

    def _take_over(self) -> int:
        while (info := self._valid_record(len(self._closed))) is not None:
            self._closed.append(info)
            self.position = info["position"]
            self.skipped += info["skipped"]
        for p in self.out_dir.iterdir():  # the open shard of the interrupted run, and what followed
            m = _RECORD_RE.match(p.name)
            if m and (int(m.group(1)) >= len(self._closed) or p.name.endswith(".tmp")):
                p.unlink()
        return len(self._closed)

    def __len__(self) -> int:
        return sum(info["count"] for info in self._closed) + self._count

    def finish(self, meta: dict) -> dict:
        """Write every array, ``image_index.npy`` and (last) ``meta.json``; returns the meta.

        Each array is streamed from the shard records, one record's column at a time, with plain
        writes: memory does not grow with the split."""
        if self._fh is not None:
            self._close_shard()
        n = len(self)
        for name, (shape, dtype) in COLUMNS.items():
            _write_npy(self.out_dir / f"{name}.npy", (n, *shape), dtype, self._record_columns(name, dtype))
        _write_npy(self.out_dir / "image_index.npy", (n, 3), np.int64, self._record_columns("image_index", np.int64))
        sizes = {tuple(row) for chunk in self._record_columns("image_size", np.int32) for row in np.unique(chunk, axis=0)}
        formats: dict[str, int] = {}
        for info in self._closed:
            for ext, c in info["image_formats"].items():
                formats[ext] = formats.get(ext, 0) + c
        files = {p.name: file_entry(p) for p in sorted(self.out_dir.glob("*.npy"))}
        files.update({shard_name(k): {"bytes": info["bytes"], "sha256": info["sha256"]}
                      for k, info in enumerate(self._closed)})
        full = {
            "version": PACK_VERSION,
            "count": n,
            "joint_names": list(skeleton.JOINT_NAMES_17),
            "image_size": [int(v) for v in next(iter(sizes))] if len(sizes) == 1 else None,
            "image_formats": formats,
            "num_shards": len(self._closed),
            **meta,
            "files": files,
        }
        _atomic_write(self.out_dir / "meta.json", lambda fh: fh.write(json.dumps(full, indent=1).encode()))
        remove_records(self.out_dir)
        return full

    def _record_columns(self, name: str, dtype) -> Iterator[np.ndarray]:
        """Column ``name`` of each closed shard's record, in order (``image_index``: [shard, offset,
        length] rows)."""
        for k in range(len(self._closed)):
            with np.load(self.out_dir / _record_name(k)) as z:
                if name == "image_index":
                    local = z["shard_index"]
                    yield np.concatenate([np.full((len(local), 1), k, np.int64), local], axis=1)
                else:
                    yield np.ascontiguousarray(z[name], dtype=dtype)


def _write_npy(path: Path, shape: tuple[int, ...], dtype, chunks: Iterable[np.ndarray]) -> None:
    """An ``.npy`` of ``shape``/``dtype`` written from consecutive row blocks (plain writes)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    rows = 0
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        for chunk in chunks:
            fh.write(chunk.tobytes())
            rows += len(chunk)
    if rows != shape[0]:
        raise ValueError(f"{path}: wrote {rows} rows, expected {shape[0]}")


def remove_records(split_dir: str | os.PathLike) -> None:
    """Delete the per-shard records ``rows_XXX.npz`` of a finished split."""
    for p in Path(split_dir).glob("rows_*.npz*"):
        p.unlink()


def read_meta(split_dir: str | os.PathLike) -> dict:
    """meta.json of a packed split, after checking that every file it lists has its recorded size.

    Raises FileNotFoundError / ValueError with one line naming the file (a missing meta.json, an
    older format version, a missing or wrongly sized array or shard)."""
    split_dir = Path(split_dir)
    path = split_dir / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{split_dir}: not a packed split (no meta.json); run `pose prepare`")
    with open(path) as fh:
        meta = json.load(fh)
    if meta.get("version") != PACK_VERSION:
        raise ValueError(f"{path}: packed format version {meta.get('version')}, expected {PACK_VERSION} "
                         "(re-run `pose prepare`)")
    files = meta.get("files")
    if not isinstance(files, dict) or not files:
        raise ValueError(f"{path}: lists no files with their sizes and checksums (re-run `pose prepare`)")
    for name, entry in files.items():
        try:
            size = (split_dir / name).stat().st_size
        except FileNotFoundError:
            raise FileNotFoundError(f"{split_dir / name}: missing, but meta.json lists it (an incomplete copy of "
                                    f"{split_dir}?)") from None
        if size != entry["bytes"]:
            raise ValueError(f"{split_dir / name}: {size:,} bytes, meta.json records {entry['bytes']:,} (an "
                             f"incomplete copy of {split_dir}?)")
    return meta


def verify_split(split_dir: str | os.PathLike, progress: bool = True) -> dict:
    """:func:`read_meta`, then every file's SHA-256 against meta.json; returns the meta.

    Raises ValueError naming the first file whose checksum differs."""
    split_dir = Path(split_dir)
    meta = read_meta(split_dir)
    files = meta["files"]
    with tqdm(total=sum(e["bytes"] for e in files.values()), desc=f"verify {split_dir.name}", unit="B",
              unit_scale=True, disable=not progress) as bar:
        for name, entry in files.items():
            got = file_digest(split_dir / name)
            if got != entry["sha256"]:
                raise ValueError(f"{split_dir / name}: SHA-256 {got[:16]}…, meta.json records "
                                 f"{entry['sha256'][:16]}… (a damaged copy of {split_dir}?)")
            bar.update(entry["bytes"])
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
            fd = os.open(self.split_dir / shard_name(shard), os.O_RDONLY)
            self._fds[shard] = fd
        return fd

    def __len__(self) -> int:
        return len(self.image_index)

    def __getitem__(self, i: int) -> bytes:
        shard, offset, length = (int(v) for v in self.image_index[i])
        data = os.pread(self._fd(shard), length, offset)
        if len(data) != length:
            raise OSError(f"{self.split_dir / shard_name(shard)}: short read for sample {i}")
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
