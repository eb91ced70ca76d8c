"""What makes a training run resumable: its identity, its lock, and the stop requests it obeys.

**Identity.** A run is named ``<stage>-<fingerprint>`` where the fingerprint is a SHA-256 over
everything that decides its result (:func:`run_identity`): the stage's effective settings (but not
``log_every`` / ``checkpoint_every``, which change only when things are printed or saved), the shared
``model`` / ``targets`` / training-data settings and ``seed``, the workers (count or elastic
``[min, max]``, CPUs each, GPU or not), the content of the ``init`` checkpoint and of the prepared
data's ``meta.json`` files, and the project's own Python code. Running the same stage again with the
same identity finds the same run folder and resumes from its last checkpoint; any difference gives
another name, so a run is never silently resumed under a different configuration.

**Lock.** :func:`run_lock` holds an exclusive ``flock`` on ``<run>/run.lock`` while a driver uses a
local run folder: a second driver of the same run stops with one line instead of writing the same
checkpoints. The kernel drops the lock when the holder dies, even by SIGKILL.

**Stop requests.** A worker stops at the next iteration boundary, after a checkpoint, when

- its own process gets SIGTERM (what Kubernetes and spot reclaim send before SIGKILL):
  :func:`install_sigterm_flag` replaces Ray's handler (which exits at once) by one that sets a flag;
  a second SIGTERM exits at once as before; or
- the driver asks, through the run's :class:`RunBoard` actor: :func:`stop_on_sigterm` turns a
  SIGTERM to the driver (``ray job stop``, Kubernetes) into that request. The board also counts the
  worker-group starts of one driver invocation (``attempt k of max``).

The worker's side of all three (checkpoint, then stop or raise) is ``workflows.train_loop``'s; what a
checkpoint holds and how a run resumes from it, ``workflows/train_state.py``.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

import pose
import workflows
from pose.data.packed import file_digest
from workflows.checkpoints import Checkpoint, CheckpointStore
from workflows.stage_run import StageRun

__all__ = [
    "BOARD_NAMESPACE",
    "RESULT_FREE_STAGE_KEYS",
    "RunBoard",
    "RunInUse",
    "StopPoller",
    "code_digest",
    "fingerprint",
    "install_sigterm_flag",
    "open_run",
    "remove_run_dir",
    "run_identity",
    "run_lock",
    "run_name",
    "stop_on_sigterm",
]

#: stage settings that change when things are printed or saved, not what is trained
RESULT_FREE_STAGE_KEYS = ("log_every", "checkpoint_every")
#: Ray namespace of the run boards (named actors)
BOARD_NAMESPACE = "c2f-pose-runs"
_FINGERPRINT_CHARS = 12


def _file_sha(path: str | Path) -> str | None:
    return file_digest(path) if Path(path).is_file() else None


def code_digest() -> str:
    """SHA-256 over the project's Python sources (``pose/`` and ``workflows/``, paths and bytes)."""
    h = hashlib.sha256()
    for pkg in (pose, workflows):
        base = Path(pkg.__file__).resolve().parent
        for p in sorted(base.rglob("*.py")):
            h.update(str(p.relative_to(base.parent)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def run_identity(run: StageRun, workers: int | list[int], use_gpu: bool) -> dict[str, Any]:
    """Everything that decides the result of ``run`` (see the module docstring)."""
    settings = {k: v for k, v in run.settings.as_dict().items() if k not in RESULT_FREE_STAGE_KEYS}
    data = run.data
    return {
        "stage": run.stage,
        "d2": run.d2,
        "settings": settings,
        "model": run.model,
        "targets": {"sigma_2d": run.sigma_2d, "depth_range": list(run.depth_range)},
        "data": {"aug": data.aug, "train_limit": data.train_limit, "val_size": data.val_size},
        "seed": run.seed,
        "workers": workers,
        "cpus_per_worker": run.cpus_per_worker,
        "use_gpu": bool(use_gpu),
        "init_sha256": _file_sha(run.init_checkpoint) if run.init_checkpoint else None,
        "data_meta_sha256": {split: _file_sha(Path(d, "meta.json")) for split, d in (("train", data.train_dir),
                                                                                   ("test", data.test_dir))},
        "code_sha256": code_digest(),
    }


def fingerprint(identity: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``identity``."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def run_name(key: str, fp: str) -> str:
    """``d2_16-1a2b3c4d5e6f``: the stage and the first characters of its fingerprint."""
    return f"{key}-{fp[:_FINGERPRINT_CHARS]}"


class RunInUse(RuntimeError):
    """Another live process holds the run's lock."""


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold ``<run_dir>/run.lock`` (created) for the duration; :class:`RunInUse` naming the holder's
    pid when another process holds it. A URI (``s3://``) has no lock: one driver per run is then the
    user's to ensure."""
    if "://" in str(run_dir):
        yield
        return
    path = Path(run_dir, "run.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip() or "another process"
            raise RunInUse(f"run folder {run_dir} is in use by {holder}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}".encode())
        yield
    finally:
        os.close(fd)  # also drops the lock


@contextlib.contextmanager
def open_run(run_dir: str, *, fresh: bool, tag: str) -> Iterator[tuple[CheckpointStore, Checkpoint | None]]:
    """A driver's hold on a resumable run: its lock (:class:`RunInUse` when another driver holds it),
    everything in it discarded first with ``fresh``, then its checkpoint store and newest whole
    checkpoint (None: nothing to resume), newer damaged ones set aside with one warning line each."""
    with run_lock(run_dir):
        store = CheckpointStore(run_dir)
        if fresh:
            remove_run_dir(run_dir, keep_lock=True)
        ckpt, damaged = store.scan()
        for folder, reason in damaged:
            store.quarantine(folder)
            print(f"{tag} warning: checkpoint {folder} of run {str(run_dir).rsplit('/', 1)[-1]} is damaged "
                  f"({reason}); set aside as damaged-{folder}", flush=True)
        yield store, ckpt


def remove_run_dir(run_dir: str | Path, keep_lock: bool = False) -> None:
    """Delete a run folder (local or URI); with ``keep_lock`` everything in it but ``run.lock``."""
    uri = str(run_dir)
    fs, base = pafs.FileSystem.from_uri(uri) if "://" in uri else (pafs.LocalFileSystem(), str(Path(uri).resolve()))
    if not keep_lock:
        with contextlib.suppress(FileNotFoundError, OSError):
            fs.delete_dir(base)
        return
    for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True)):
        if info.base_name == "run.lock":
            continue
        with contextlib.suppress(FileNotFoundError, OSError):
            if info.type == pafs.FileType.Directory:
                fs.delete_dir(info.path)
            else:
                fs.delete_file(info.path)


# ------------------------------------------------------------------------------------------------
# stop requests
class RunBoard:
    """Ray actor (``num_cpus=0``) owned by the driver of one run: counts worker-group starts and
    carries the driver's stop request to the workers."""

    def __init__(self) -> None:
        self._attempts = 0
        self._stop: str | None = None

    def next_attempt(self) -> int:
        self._attempts += 1
        return self._attempts

    def request_stop(self, reason: str) -> None:
        self._stop = self._stop or reason

    def stop_reason(self) -> str | None:
        return self._stop


class _StopState:
    signal: str | None = None


@contextlib.contextmanager
def stop_on_sigterm(board, tag: str) -> Iterator[_StopState]:
    """While in the block, SIGTERM to this (driver) process asks the run's workers, through their
    :class:`workflows.runs.RunBoard` ``board``, to checkpoint at the next iteration and stop; ``.signal``
    then names the signal. A second SIGTERM ends the driver at once. Without a board (None) SIGTERM
    keeps its usual effect."""
    state = _StopState()
    if board is None:
        yield state
        return

    def handler(signum, frame):
        if state.signal is not None:  # the second one: stop waiting
            raise SystemExit(128 + signum)
        state.signal = signal.Signals(signum).name
        print(f"{tag} {state.signal}: the workers save a checkpoint at the next iteration and stop "
              "(send it again to stop at once)", flush=True)
        # not from inside the handler: it may have interrupted a Ray call of this thread
        threading.Thread(target=lambda: board.request_stop.remote(state.signal), daemon=True).start()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGTERM, previous)


class StopPoller:
    """Worker side: ``poll()`` is the driver's stop reason (or None) as last read from the board,
    asking it again at most every ``interval_s`` without ever blocking the training loop."""

    def __init__(self, board: Any | None, interval_s: float = 1.0) -> None:
        self.board, self.interval_s = board, interval_s
        self._ref, self._asked, self.reason = None, 0.0, None

    def poll(self) -> str | None:
        if self.board is None or self.reason is not None:
            return self.reason
        import ray

        if self._ref is not None:
            ready, _ = ray.wait([self._ref], timeout=0)
            if not ready:
                return None
            try:
                self.reason = ray.get(self._ref)
            except Exception:  # noqa: BLE001 - the driver (and its board) is gone: nothing to obey
                self.board = None
            self._ref = None
        if self.reason is None and self.board is not None and time.monotonic() - self._asked >= self.interval_s:
            self._ref, self._asked = self.board.stop_reason.remote(), time.monotonic()
        return self.reason


_installed: dict[str, Any] = {}


def install_sigterm_flag(flag: threading.Event, timeout_s: float = 5.0) -> bool:
    """Make SIGTERM to this process set ``flag`` (once; a second SIGTERM exits as before).

    Signal handlers can only be set by the main thread, and Ray runs the training function in
    another one, so the handler is installed through ``Py_AddPendingCall`` (CPython's documented way
    to run a function in the main thread; a Ray worker's main thread runs Python for every actor
    call, so this takes milliseconds). Returns whether it was installed within ``timeout_s``.
    """
    done = threading.Event()

    def handler(signum, frame):
        if flag.is_set():  # second SIGTERM: what the process did before
            signal.signal(signal.SIGTERM, previous)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        flag.set()

    previous: Any = signal.SIG_DFL

    def install() -> None:
        nonlocal previous
        previous = signal.signal(signal.SIGTERM, handler)
        done.set()

    if threading.current_thread() is threading.main_thread():
        install()
        return True

    @ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
    def pending(_arg):
        try:
            install()
        except Exception:  # noqa: BLE001 - never raise into the interpreter's main loop
            done.set()
        return 0

    _installed[str(id(flag))] = pending  # the C callback must outlive this call
    if ctypes.pythonapi.Py_AddPendingCall(pending, None) != 0:
        return False
    return done.wait(timeout_s) and signal.getsignal(signal.SIGTERM) is handler
