"""The checkpoint store of one training run: written as it trains, read back to resume it.

Layout under the run folder (a local path, shared storage, or a ``pyarrow.fs`` URI such as
``s3://bucket/runs/d2_16-<fingerprint>``)::

    checkpoints/ckpt-000000300/{model.pt, train_state.pt, curve.csv, manifest.json}
    checkpoints/ckpt-000000400/...
    checkpoints/damaged-ckpt-000000500/...     (set aside by :meth:`CheckpointStore.quarantine`)

A checkpoint is the files of one iteration plus ``manifest.json``, written **last**, which records
the iteration, the position in the epoch, the metrics and each file's size and SHA-256. A crash
during a write therefore leaves a folder without a manifest, or files whose size or digest does not
match it: :meth:`CheckpointStore.verify` names the problem, and the newest checkpoint that verifies
is the one a run resumes from (the previous one is kept for exactly this: ``keep=2``).

One writer per run (rank 0 of the run's worker group; the driver holds the run's lock), any number of
readers (every rank reads the checkpoint it resumes from, so the run folder must be reachable from
every node, as Ray's own ``storage_path`` must be).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from pose.data.packed import file_digest

__all__ = ["CHECKPOINT_FILES", "Checkpoint", "CheckpointStore"]

#: what every checkpoint holds besides its manifest
CHECKPOINT_FILES = ("model.pt", "train_state.pt", "curve.csv")
_NAME = re.compile(r"^ckpt-(\d{9})$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Checkpoint:
    """One verified checkpoint: its iteration, its folder (store-relative) and its manifest."""

    iteration: int
    path: str
    manifest: dict[str, Any]


class CheckpointStore:
    """Checkpoints of one run under ``<run_dir>/checkpoints`` (see the module docstring).

    Args:
        run_dir: the run folder, a local path or a ``pyarrow.fs`` URI.
        keep: verified checkpoints kept after each save (the newest ``keep``; >= 2 so that a
            damaged newest one still leaves one to fall back to).
    """

    def __init__(self, run_dir: str | Path, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.uri = str(run_dir)
        if "://" in self.uri:
            self.fs, base = pafs.FileSystem.from_uri(self.uri)
        else:
            self.fs, base = pafs.LocalFileSystem(), str(Path(self.uri).resolve())
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.root = f"{base.rstrip('/')}/checkpoints"
        self.keep = keep

    # ---------------------------------------------------------------------------------- listing
    def _entries(self) -> list[tuple[int, str]]:
        """``(iteration, folder)`` of every ``ckpt-*`` folder, newest first (verified or not)."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        out = []
        for info in infos:
            m = _NAME.match(info.base_name)
            if m and info.type == pafs.FileType.Directory:
                out.append((int(m.group(1)), info.path))
        return sorted(out, reverse=True)

    def verify(self, folder: str, digests: bool = True) -> tuple[dict[str, Any] | None, str | None]:
        """``(manifest, None)`` when the checkpoint in ``folder`` is whole, else ``(None, reason)``:
        no manifest (a write that never finished), a missing file, a size or (``digests``) SHA-256
        that differs from the manifest's."""
        try:
            with self.fs.open_input_stream(f"{folder}/manifest.json") as f:
                manifest = json.loads(f.read().decode())
            files = manifest["files"]
        except FileNotFoundError:
            return None, "no manifest.json (the write never finished)"
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return None, f"manifest.json is not readable ({type(exc).__name__})"
        for name in CHECKPOINT_FILES:
            want = files.get(name)
            if want is None:
                return None, f"manifest lacks {name}"
            info = self.fs.get_file_info(f"{folder}/{name}")
            if info.type != pafs.FileType.File:
                return None, f"{name} is missing"
            if info.size != want["size"]:
                return None, f"{name} has {info.size} of {want['size']} bytes"
            if digests and self._digest(f"{folder}/{name}") != want["sha256"]:
                return None, f"{name} does not match its SHA-256"
        return manifest, None

    def _digest(self, path: str) -> str:
        h = hashlib.sha256()
        with self.fs.open_input_stream(path) as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        return h.hexdigest()

    def scan(self, digests: bool = True) -> tuple[Checkpoint | None, list[tuple[str, str]]]:
        """The newest checkpoint that verifies, and ``(folder name, reason)`` of each newer one that
        does not (newest first)."""
        damaged = []
        for it, folder in self._entries():
            manifest, reason = self.verify(folder, digests=digests)
            if manifest is not None:
                return Checkpoint(it, folder, manifest), damaged
            damaged.append((folder.rsplit("/", 1)[-1], reason))
        return None, damaged

    def quarantine(self, name: str) -> str:
        """Rename ``checkpoints/<name>`` to ``checkpoints/damaged-<name>`` (kept for inspection, never
        read again); returns the new folder."""
        dst = f"{self.root}/damaged-{name}"
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_dir(dst)
        self.fs.move(f"{self.root}/{name}", dst)
        return dst

    @contextlib.contextmanager
    def open(self, ckpt: Checkpoint) -> Iterator[Path]:
        """A local folder holding ``ckpt``'s files (the folder itself on a local store, else a download)."""
        if self.local:
            yield Path(ckpt.path)
            return
        with tempfile.TemporaryDirectory(prefix="c2f-resume-") as tmp:
            for name in (*CHECKPOINT_FILES, "manifest.json"):
                with self.fs.open_input_stream(f"{ckpt.path}/{name}") as src, open(Path(tmp, name), "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
            yield Path(tmp)

    # ---------------------------------------------------------------------------------- writing
    def save(self, iteration: int, src_dir: str | Path, info: dict[str, Any]) -> str:
        """Store the files of ``src_dir`` (a local folder holding :data:`CHECKPOINT_FILES`) as the
        checkpoint of ``iteration``, with ``info`` (epoch, position, metrics, ...) in its manifest;
        then drop all but the newest ``keep`` checkpoints. Returns the checkpoint's folder."""
        src_dir = Path(src_dir)
        folder = f"{self.root}/ckpt-{iteration:09d}"
        files = {}
        for name in CHECKPOINT_FILES:
            p = src_dir / name
            files[name] = {"size": p.stat().st_size, "sha256": file_digest(p)}
        with contextlib.suppress(FileNotFoundError):  # the same iteration saved again (e.g. after a resume)
            self.fs.delete_dir(folder)
        self.fs.create_dir(folder, recursive=True)
        for name in CHECKPOINT_FILES:
            with open(src_dir / name, "rb") as src, self.fs.open_output_stream(f"{folder}/{name}") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
        manifest = {"iteration": int(iteration), "created": time.time(), **info, "files": files}
        data = json.dumps(manifest, indent=1, default=float).encode()
        if self.local:  # the manifest appears whole or not at all
            tmp = f"{folder}/.manifest.json.tmp"
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, f"{folder}/manifest.json")
        else:  # object stores write an object in one piece
            with self.fs.open_output_stream(f"{folder}/manifest.json") as f:
                f.write(data)
        self._prune(keep_folder=folder)
        return folder

    def _prune(self, keep_folder: str) -> None:
        kept = 0
        for _, folder in self._entries():
            if folder == keep_folder or (kept < self.keep and self.verify(folder, digests=False)[0] is not None):
                kept += 1
                continue
            with contextlib.suppress(FileNotFoundError, OSError):
                self.fs.delete_dir(folder)
