"""``pose prepare SRC --out DIR``: validate every sample of a dataset and pack it for training.

Reads the seed txt layout (:mod:`pose.data.seed_txt`) or the H36M JSON layout
(:mod:`pose.data.h36m_json`), checks each sample (field files present, 32/17 joints, numbers
finite, depth positive, camera parses with a positive focal length, image decodes with the
expected size) and writes ``DIR/train`` and/or ``DIR/test`` in the packed format
(:mod:`pose.data.packed`).

- ``--on-bad fail`` (default) stops at the first bad sample with one line
  ``pose prepare: error: sample <index>: <file>: <reason>`` and exit status 1;
  ``--on-bad skip`` prints that line as a warning, packs the rest and lists the skipped samples
  in ``<split>/report.json``.
- Atomic output: everything is written to ``DIR.tmp-<random>`` beside DIR and renamed onto DIR at
  the end; on any error or interruption the temporary folder is removed. An existing DIR is
  never overwritten unless ``--force`` is given (then it is replaced in one rename after the new
  output is complete).
- Fatal problems (SRC missing, unknown layout, nothing valid) exit non-zero with one line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pose.data.h36m_json import H36MJsonReader
from pose.data.packed import DEFAULT_ENLARGE, DEFAULT_SHARD_BYTES, PackWriter
from pose.data.records import BadSample, RawSample
from pose.data.seed_txt import SeedTxtReader
from pose.data.seed_txt import parse_index_list as _parse_index_list

PROG = "pose prepare"
_READER = None  # the reader of the current run, shared with forked workers


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("src", help="dataset root (seed txt layout or H36M JSON layout)")
    parser.add_argument("--out", required=True, help="output directory; receives train/ and/or test/")
    parser.add_argument("--layout", choices=("auto", "seed", "json"), default="auto")
    parser.add_argument("--split", choices=("train", "test", "all"), default="all",
                        help="train = S1,S5,S6,S7,S8; test = S9,S11; all = both (two folders)")
    parser.add_argument("--on-bad", choices=("skip", "fail"), default="fail",
                        help="bad sample: skip it (listed in report.json) or stop with an error")
    parser.add_argument("--force", action="store_true", help="replace an existing --out directory")
    parser.add_argument("--every", type=int, default=1, help="keep every N-th sample of each split")
    parser.add_argument("--limit", type=int, default=0, help="keep at most N samples per split (0 = all)")
    parser.add_argument("--index-list", default=None,
                        help="text file of global sample indices to keep (e.g. the seed's train_index.txt)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes reading and checking samples (default 1 = in-process; more forks "
                        "worker processes, worth it for real Human3.6M on many cores)")
    parser.add_argument("--shard-mb", type=float, default=DEFAULT_SHARD_BYTES / 2**20,
                        help="size of one image shard file, MiB")
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
    import cv2

    cv2.setNumThreads(0)


def _work(index: int):
    try:
        return check_sample(_READER, index)
    except BadSample as exc:
        return exc
    except Exception as exc:  # an unexpected parse failure is still a bad sample, not a crash
        return BadSample(index, getattr(_READER, "root", "?"), f"{type(exc).__name__}: {exc}")


def select_indices(indices: list[int], every: int = 1, limit: int = 0, keep: set[int] | None = None) -> list[int]:
    out = [i for i in indices if keep is None or i in keep]
    out = out[:: max(1, every)]
    return out[:limit] if limit > 0 else out


def pack_split(reader, indices: list[int], out_dir: Path, *, on_bad: str = "fail", workers: int = 1,
               shard_bytes: int = DEFAULT_SHARD_BYTES, meta: dict | None = None, progress: bool = True,
               desc: str = "pack") -> tuple[dict, list[dict]]:
    """Check and pack ``indices`` of ``reader`` into ``out_dir``; returns (meta, skipped).

    With ``on_bad="fail"`` the first bad sample raises :class:`BadSample`.
    """
    global _READER
    _READER = reader
    writer = PackWriter(out_dir, shard_bytes=shard_bytes)
    skipped: list[dict] = []
    bar = tqdm(total=len(indices), desc=desc, unit="sample", disable=not progress, file=sys.stderr)
    pool = None
    try:
        if workers > 1 and len(indices) > 64:
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
            pool = ctx.Pool(workers, initializer=_init_worker)
            results = pool.imap(_work, indices, chunksize=32)
        else:
            results = map(_work, indices)
        for result in results:
            bar.update(1)
            if isinstance(result, BadSample):
                if on_bad == "fail":
                    raise result
                skipped.append(result.as_dict())
                tqdm.write(f"{PROG}: warning: skipped {result}", file=sys.stderr)
                continue
            writer.add(*result)
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
        _READER = None
    full_meta = dict(meta or {})
    full_meta["action_names"] = list(reader.action_names)
    full_meta["skipped"] = len(skipped)
    out = writer.finish(full_meta)
    with open(out_dir / "report.json", "w") as fh:
        json.dump({"count": len(writer), "skipped_count": len(skipped), "skipped": skipped}, fh, indent=1)
    return out, skipped


def prepare(src: str | os.PathLike, out: str | os.PathLike, *, layout: str = "auto", split: str = "all",
            on_bad: str = "fail", force: bool = False, every: int = 1, limit: int = 0,
            index_list: str | None = None, workers: int = 1, shard_bytes: int = DEFAULT_SHARD_BYTES,
            progress: bool = True) -> dict:
    """Library entry of ``pose prepare``; returns {split: meta}. Raises on fatal errors/bad samples."""
    out = Path(out).absolute()
    if out.exists() and not force:
        raise FileExistsError(f"output {out} already exists (use --force to replace it)")
    reader = make_reader(src, layout)
    keep = set(_parse_index_list(Path(index_list)).tolist()) if index_list else None
    splits = ("train", "test") if split == "all" else (split,)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    metas: dict[str, dict] = {}
    try:
        for name in splits:
            indices = select_indices(reader.indices(name), every, limit, keep)
            if not indices:
                if split == "all":
                    tqdm.write(f"{PROG}: warning: no {name} samples in {src}", file=sys.stderr)
                    continue
                raise ValueError(f"{src}: no samples in split {name!r}")
            meta = {"split": name, "layout": reader.layout, "source": str(Path(src).absolute()),
                    "bbox_enlarge": DEFAULT_ENLARGE[reader.layout], "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
            if reader.layout == "json":  # images of the corrupt sequence, dropped by the reader
                meta["excluded_corrupt_sequence_images"] = len(reader.skipped_sequences)
            metas[name], _ = pack_split(reader, indices, tmp / name, on_bad=on_bad, workers=workers,
                                        shard_bytes=shard_bytes, meta=meta, progress=progress, desc=name)
            if metas[name]["count"] == 0:
                raise ValueError(f"{src}: every sample of split {name!r} is bad (see warnings above)")
        if not metas:
            raise ValueError(f"{src}: no samples in any split")
        if out.exists():  # --force: swap in one rename, then delete the old tree
            old = out.parent / f"{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return metas


def _sigterm(signum, frame):  # turn SIGTERM into an exception so the temporary output is removed
    raise SystemExit(128 + signum)


def main(args: argparse.Namespace) -> int:
    if args.every < 1 or args.limit < 0 or args.workers < 1 or args.shard_mb <= 0:
        print(f"{PROG}: error: --every, --workers must be >= 1, --limit >= 0, --shard-mb > 0", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _sigterm)
    t0 = time.perf_counter()
    try:
        metas = prepare(args.src, args.out, layout=args.layout, split=args.split, on_bad=args.on_bad,
                        force=args.force, every=args.every, limit=args.limit, index_list=args.index_list,
                        workers=args.workers, shard_bytes=int(args.shard_mb * 2**20), progress=not args.quiet)
    except BadSample as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, FileExistsError, ValueError, OSError) as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    dt = time.perf_counter() - t0
    parts = [f"{name}: {m['count']} samples ({m['skipped']} skipped)" for name, m in metas.items()]
    print(f"{PROG}: wrote {args.out} — " + ", ".join(parts) + f" in {dt:.1f} s")
    return 0
