"""``pose prepare SRC --out DIR``: validate every sample of a dataset and pack it for training.

Reads the seed txt layout (:mod:`pose.data.seed_txt`) or the H36M JSON layout
(:mod:`pose.data.h36m_json`), checks each sample (field files present, 32/17 joints, numbers
finite, depth positive, camera parses with a positive focal length, image decodes with the
expected size) and writes ``DIR/train`` and/or ``DIR/test`` in the packed format
(:mod:`pose.data.packed`).

- ``--on-bad fail`` (default) stops at the first bad sample with one line
  ``pose prepare: error: sample <index>: <file>: <reason>`` and exit status 1;
  ``--on-bad skip`` prints that line as a warning, packs the rest and lists the skipped samples
  in ``<split>/report.json`` — unless more than ``--max-skip-fraction`` of a split is bad: then it
  stops with one line giving the count and the three most common reasons (a reader that rejects
  a whole file kind must not silently drop most of a dataset).
- Atomic and resumable output: everything is written to ``DIR.partial`` beside DIR and renamed
  onto DIR at the end. A bad input (a bad sample with ``--on-bad fail``, too many skipped, no
  samples) removes it. An interruption (Ctrl-C, SIGTERM, a crash, a lost machine) keeps its
  complete shards: the same command run again validates them (sizes and SHA-256) and continues
  after them. A ``DIR.partial`` of other inputs or options is emptied first. An existing DIR is
  never overwritten unless ``--force`` is given (then it is replaced in one rename after the new
  output is complete).
- ``--verify DIR`` checks a packed folder (or one split) against its meta.json: every file
  present with its recorded size and SHA-256 (after copying it to a cluster volume, say).
- Fatal problems (SRC missing, unknown layout, nothing valid) exit non-zero with one line.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pose.data.h36m_json import H36MJsonReader
from pose.data.packed import (
    DEFAULT_ENLARGE,
    DEFAULT_SHARD_BYTES,
    PACK_VERSION,
    PackWriter,
    remove_records,
    verify_split,
)
from pose.data.records import BadSample, RawSample
from pose.data.seed_txt import SeedTxtReader
from pose.data.seed_txt import parse_index_list as _parse_index_list

PROG = "pose prepare"
#: largest fraction of a split that ``--on-bad skip`` may drop (``data.max_skip_fraction``)
DEFAULT_MAX_SKIP_FRACTION = 0.01
_JOB = "job.json"  # inside DIR.partial: the inputs and options its shards were written for
_READER = None  # the reader of the current run, shared with forked workers
_CHUNK = 32  # samples per task of a worker process
_IN_FLIGHT_PER_WORKER = 4 * _CHUNK  # samples checked but not yet written, per worker, at most

EPILOG = """\
resuming: output goes to DIR.partial and is renamed onto DIR when complete. After an interruption
(Ctrl-C, SIGTERM, a lost machine) run the same command again: the complete shards are checked
(size, SHA-256) and kept, and packing continues after them. A bad input removes DIR.partial.

skipped data: with --on-bad skip, more than --max-skip-fraction of a split bad stops the run with
one line naming the count and the three most common reasons.

checking a copy: pose prepare --verify DIR  (sizes and SHA-256 of every file against meta.json;
opening a split for training checks the sizes only)"""


class TooManySkipped(ValueError):
    """More of a split is bad than ``max_skip_fraction`` allows (one line)."""


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("src", nargs="?", help="dataset root (seed txt layout or H36M JSON layout)")
    parser.add_argument("--out", help="output directory; receives train/ and/or test/ (required with SRC)")
    parser.add_argument("--verify", metavar="DIR", default=None,
                        help="check a packed folder (train/, test/) or split: sizes and SHA-256 of every file")
    parser.add_argument("--layout", choices=("auto", "seed", "json"), default="auto")
    parser.add_argument("--split", choices=("train", "test", "all"), default="all",
                        help="train = S1,S5,S6,S7,S8; test = S9,S11; all = both (two folders)")
    parser.add_argument("--on-bad", choices=("skip", "fail"), default="fail",
                        help="bad sample: skip it (listed in report.json) or stop with an error")
    parser.add_argument("--max-skip-fraction", type=float, default=DEFAULT_MAX_SKIP_FRACTION, metavar="F",
                        help="with --on-bad skip: stop when more than this fraction of a split is bad "
                        "(default %(default)g)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out directory")
    parser.add_argument("--every", type=int, default=1, help="keep every N-th sample of each split")
    parser.add_argument("--limit", type=int, default=0, help="keep at most N samples per split (0 = all)")
    parser.add_argument("--index-list", default=None,
                        help="text file of global sample indices to keep (e.g. the seed's train_index.txt)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes reading and checking samples (default 1 = in-process; more forks "
                        "worker processes, worth it for real Human3.6M on many cores: README 'Preparing at scale')")
    parser.add_argument("--shard-mb", type=float, default=DEFAULT_SHARD_BYTES / 2**20,
                        help="size of one image shard file, MiB (also the unit of resuming)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def make_reader(src: str | os.PathLike, layout: str = "auto"):
    """The reader for ``src`` (``layout`` auto-detected unless seed|json)."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"source {src} does not exist or is not a directory")
    if layout == "auto":
        if SeedTxtReader.detect(src):
            layout = "seed"
        elif H36MJsonReader.detect(src):
            layout = "json"
        else:
            raise ValueError(f"{src}: neither the seed txt layout (gt_joint_3d_mono_raw/, info_all/) "
                             "nor the H36M JSON layout (Human36M_subject*_data.json) found")
    return SeedTxtReader(src) if layout == "seed" else H36MJsonReader(src)


def check_sample(reader, index: int) -> tuple[RawSample, bytes]:
    """Read sample ``index``, validate it and its image; raises :class:`BadSample`."""
    sample = reader.read(index)
    sample.validate()
    path = Path(sample.image_path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadSample(index, path, "image file missing") from None
    except OSError as exc:
        raise BadSample(index, path, f"image unreadable: {exc}") from None
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise BadSample(index, path, "image does not decode")
    w, h = sample.image_size
    if img.shape[:2] != (h, w):
        raise BadSample(index, path, f"image is {img.shape[1]}x{img.shape[0]}, expected {w}x{h}")
    return sample, data


def _init_worker() -> None:
    # OpenCV's thread pool does not survive fork(): a forked child that decodes with it can hang.
    cv2.setNumThreads(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it ends the pool)
    # The parent's SIGTERM handler is Python code, which a worker blocked on the task queue's lock may
    # never run (a signal that lands just before sem_wait is lost): Pool.terminate() then waited for
    # ever (seen once in ten 50k-frame runs). A worker has nothing to clean up: die at once.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _work(index: int):
    try:
        return check_sample(_READER, index)
    except BadSample as exc:
        return exc
    except Exception as exc:  # an unexpected parse failure is still a bad sample, not a crash
        return BadSample(index, getattr(_READER, "root", "?"), f"{type(exc).__name__}: {exc}")


def _wind_down(pool, unread) -> None:
    """End a pool: take the results still coming (``unread``: at most the in-flight window, once
    no new task is fed), then let the workers end on their sentinels. ``Pool.terminate()`` with
    results unread deadlocks when a result is larger than a pipe's buffer (an image is): the worker
    writing it holds the result queue's lock that terminate() needs (seen in a test under load)."""
    if unread is not None:
        try:
            for _ in unread:
                pass
        except Exception:  # noqa: BLE001 - the pool is broken; fall back to killing it
            pool.terminate()
            pool.join()
            return
    pool.close()
    pool.join()


def select_indices(indices: list[int], every: int = 1, limit: int = 0, keep: set[int] | None = None) -> list[int]:
    out = [i for i in indices if keep is None or i in keep]
    out = out[:: max(1, every)]
    return out[:limit] if limit > 0 else out


def reason_kind(record: dict) -> str:
    """A skipped sample's reason with its numbers and quoted text blanked, after the folder of its
    file: ``gt_joint_3d_mono_raw: joint line #: expected # numbers, got # (…): …``."""
    folder = re.sub(r"(?<![A-Za-z])\d+(?![A-Za-z])", "#", Path(record["file"]).parent.name)  # s_#_act_#_...
    text = re.sub(r"\d+(?:\.\d+)?", "#", re.sub(r"'[^']*'|\"[^\"]*\"", "…", record["reason"]))
    return f"{folder}: {text}"


def skip_summary(split: str, skipped: Sequence[dict], seen: int, total: int, max_fraction: float) -> str:
    """The one line of :class:`TooManySkipped`: the count and the three most common reasons."""
    common = "; ".join(f"{n:,} × {kind}" for kind, n in Counter(map(reason_kind, skipped)).most_common(3))
    return (f"{split}: {len(skipped):,} of the first {seen:,} samples are bad, more than --max-skip-fraction "
            f"(data.max_skip_fraction) {max_fraction:g} of the {total:,} allows; most common: {common}")


def pack_split(reader, indices: Sequence[int], out_dir: Path, *, on_bad: str = "fail", workers: int = 1,
               shard_bytes: int = DEFAULT_SHARD_BYTES, meta: dict | None = None, progress: bool = True,
               desc: str = "pack", max_skip_fraction: float = DEFAULT_MAX_SKIP_FRACTION) -> tuple[dict, list[dict]]:
    """Check and pack ``indices`` of ``reader`` into ``out_dir``; returns (meta, skipped).

    Continues after the complete shards of an interrupted run found in ``out_dir``
    (:class:`~pose.data.packed.PackWriter`). With ``on_bad="fail"`` the first bad sample raises
    :class:`BadSample`; with ``"skip"`` more than ``max_skip_fraction`` of ``indices`` bad raises
    :class:`TooManySkipped` as soon as that many are seen.
    """
    global _READER
    _READER = reader
    writer = PackWriter(out_dir, shard_bytes=shard_bytes)
    if writer.resumed:
        tqdm.write(f"{PROG}: {desc}: resuming after {writer.resumed} complete shard(s) of an interrupted run "
                   f"({len(writer):,} samples packed, {writer.position:,} of {len(indices):,} checked)", file=sys.stderr)
    todo = indices[writer.position:]
    bar = tqdm(total=len(indices), initial=writer.position, desc=desc, unit="sample", disable=not progress,
               file=sys.stderr)
    pool = None
    window, stop = threading.Semaphore(workers * _IN_FLIGHT_PER_WORKER), threading.Event()

    def feed():  # at most `window` samples checked ahead of the writer: memory bounded when it is the slower
        for index in todo:
            while not window.acquire(timeout=0.1):
                if stop.is_set():
                    return
            if stop.is_set():
                return
            yield index

    finished = False
    try:
        if workers > 1 and len(todo) > 64:
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
            pool = ctx.Pool(workers, initializer=_init_worker)
            results = pool.imap(_work, feed(), chunksize=_CHUNK)
        else:
            results = map(_work, todo)
        for result in results:
            window.release()
            bar.update(1)
            if isinstance(result, BadSample):
                if on_bad == "fail":
                    raise result
                writer.skip(result.as_dict())
                tqdm.write(f"{PROG}: warning: skipped {result}", file=sys.stderr)
                if len(writer.skipped) > max_skip_fraction * len(indices):
                    raise TooManySkipped(skip_summary(desc, writer.skipped, writer.position, len(indices),
                                                      max_skip_fraction))
                continue
            writer.add(*result)
        finished = True
    finally:
        bar.close()
        stop.set()  # no new tasks
        if pool is not None:
            _wind_down(pool, None if finished else results)
        _READER = None
    full_meta = dict(meta or {})
    full_meta["action_names"] = list(reader.action_names)
    full_meta["skipped"] = len(writer.skipped)
    with open(out_dir / "report.json", "w") as fh:  # before meta.json: a split with meta.json is complete
        json.dump({"count": len(writer), "skipped_count": len(writer.skipped), "skipped": writer.skipped}, fh, indent=1)
    return writer.finish(full_meta), writer.skipped


def partial_dir(out: str | os.PathLike) -> Path:
    """Where ``pose prepare --out OUT`` writes until its output is complete: ``OUT.partial``."""
    out = Path(out).absolute()
    return out.parent / f"{out.name}.partial"


def _claim(partial: Path, job: dict) -> int:
    """Lock ``partial`` (created if needed) for this run; empty it unless it holds an interrupted
    run of the same ``job``. Returns the file descriptor that holds the lock."""
    partial.mkdir(exist_ok=True)
    fd = os.open(partial, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FileExistsError(f"{partial}: another `pose prepare` is writing it") from None
    try:
        old = json.loads((partial / _JOB).read_text())
    except (OSError, ValueError):
        old = None
    if old != job:
        if any(partial.iterdir()):
            tqdm.write(f"{PROG}: warning: {partial} holds an interrupted run of other inputs or options; "
                       "starting afresh", file=sys.stderr)
        for child in partial.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        (partial / _JOB).write_text(json.dumps(job, indent=1))
    return fd


def _finished_split(split_dir: Path, progress: bool) -> dict | None:
    """The meta of a split an interrupted run completed, if every checksum still matches."""
    if not (split_dir / "meta.json").is_file():
        return None
    try:
        meta = verify_split(split_dir, progress=progress)
    except (OSError, ValueError) as exc:
        tqdm.write(f"{PROG}: warning: packing {split_dir.name} again: {exc}", file=sys.stderr)
        shutil.rmtree(split_dir)
        return None
    remove_records(split_dir)
    tqdm.write(f"{PROG}: {split_dir.name}: complete from an interrupted run ({meta['count']:,} samples)", file=sys.stderr)
    return meta


def prepare(src: str | os.PathLike, out: str | os.PathLike, *, layout: str = "auto", split: str = "all",
            on_bad: str = "fail", force: bool = False, every: int = 1, limit: int = 0,
            index_list: str | None = None, workers: int = 1, shard_bytes: int = DEFAULT_SHARD_BYTES,
            progress: bool = True, max_skip_fraction: float = DEFAULT_MAX_SKIP_FRACTION) -> dict:
    """Library entry of ``pose prepare``; returns {split: meta}. Raises on fatal errors/bad samples.

    Writes into :func:`partial_dir` (resumed when it holds an interrupted run of the same inputs
    and options) and renames it onto ``out`` when complete; a bad input removes it.
    """
    out = Path(out).absolute()
    if out.exists() and not force:
        raise FileExistsError(f"output {out} already exists (use --force to replace it)")
    src = Path(src).absolute()
    reader = make_reader(src, layout)
    keep = set(_parse_index_list(Path(index_list)).tolist()) if index_list else None
    selected = {name: select_indices(reader.indices(name), every, limit, keep)
                for name in (("train", "test") if split == "all" else (split,))}
    for name, indices in selected.items():
        if not indices:
            if split != "all":
                raise ValueError(f"{src}: no samples in split {name!r}")
            tqdm.write(f"{PROG}: warning: no {name} samples in {src}", file=sys.stderr)
    if not any(selected.values()):
        raise ValueError(f"{src}: no samples in any split")
    job = {"version": PACK_VERSION, "source": str(src), "layout": reader.layout, "on_bad": on_bad,
           "shard_bytes": int(shard_bytes),
           "splits": {name: hashlib.sha256(np.asarray(idx, dtype=np.int64).tobytes()).hexdigest()
                      for name, idx in selected.items()}}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_dir(out)
    lock = _claim(tmp, job)
    metas: dict[str, dict] = {}
    try:
        for name, indices in selected.items():
            if not indices:
                continue
            meta = _finished_split(tmp / name, progress)
            if meta is None:
                meta = {"split": name, "layout": reader.layout, "source": str(src),
                        "bbox_enlarge": DEFAULT_ENLARGE[reader.layout]}
                if reader.layout == "json":  # images of the corrupt sequence, dropped by the reader
                    meta["excluded_corrupt_sequence_images"] = len(reader.skipped_sequences)
                meta, _ = pack_split(reader, indices, tmp / name, on_bad=on_bad, workers=workers,
                                     shard_bytes=shard_bytes, meta=meta, progress=progress, desc=name,
                                     max_skip_fraction=max_skip_fraction)
            if meta["count"] == 0:
                raise ValueError(f"{src}: every sample of split {name!r} is bad (see warnings above)")
            metas[name] = meta
        (tmp / _JOB).unlink()
        if out.exists():  # --force: swap in one rename, then delete the old tree
            old = out.parent / f"{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except (BadSample, ValueError):  # bad input: nothing of this run is kept
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(lock)
    return metas


def verify(path: str | os.PathLike, progress: bool = True) -> dict[Path, dict]:
    """``pose prepare --verify``: {split folder: meta} of ``path`` (a split, or a folder of
    ``train/`` and ``test/``), each checked by :func:`~pose.data.packed.verify_split`."""
    path = Path(path)
    if (path / "meta.json").is_file():
        splits = [path]
    else:
        splits = [path / name for name in ("train", "test") if (path / name).is_dir()]
        if not splits:
            raise FileNotFoundError(f"{path}: not a packed folder (no meta.json, no train/ or test/)")
    return {d: verify_split(d, progress=progress) for d in splits}


def _sigterm(signum, frame):  # turn SIGTERM into an exception so the run ends like a Ctrl-C
    raise SystemExit(128 + signum)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def main(args: argparse.Namespace) -> int:
    if args.verify is not None:
        if args.src or args.out:
            print(f"{PROG}: error: --verify DIR takes no SRC or --out", file=sys.stderr)
            return 2
        try:
            for d, meta in verify(args.verify, progress=not args.quiet).items():
                size = sum(e["bytes"] for e in meta["files"].values())
                print(f"{PROG}: {d}: {len(meta['files'])} files, {size / 1e9:.2f} GB, {meta['count']:,} samples: "
                      "sizes and SHA-256 match meta.json")
        except (OSError, ValueError) as exc:
            print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
            return 1
        return 0
    if not args.src or not args.out:
        print(f"{PROG}: error: give SRC and --out DIR (or --verify DIR)", file=sys.stderr)
        return 2
    if (args.every < 1 or args.limit < 0 or args.workers < 1 or args.shard_mb <= 0
            or not 0 <= args.max_skip_fraction <= 1):
        print(f"{PROG}: error: --every, --workers must be >= 1, --limit >= 0, --shard-mb > 0, "
              "--max-skip-fraction in [0, 1]", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _sigterm)
    t0 = time.perf_counter()
    try:
        metas = prepare(args.src, args.out, layout=args.layout, split=args.split, on_bad=args.on_bad,
                        force=args.force, every=args.every, limit=args.limit, index_list=args.index_list,
                        workers=args.workers, shard_bytes=int(args.shard_mb * 2**20), progress=not args.quiet,
                        max_skip_fraction=args.max_skip_fraction)
    except BadSample as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, FileExistsError, ValueError, OSError) as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit) as exc:
        kept = partial_dir(args.out)
        note = (f"complete shards kept in {kept}: run the same command to resume" if kept.exists()
                else "nothing kept")
        print(f"{PROG}: error: interrupted; {note}", file=sys.stderr)
        return exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    dt = time.perf_counter() - t0
    parts = [f"{name}: {m['count']} samples ({m['skipped']} skipped)" for name, m in metas.items()]
    print(f"{PROG}: wrote {args.out} — " + ", ".join(parts) + f" in {dt:.1f} s")
    return 0
