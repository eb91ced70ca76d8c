"""``pose prepare`` at scale: frames/s per worker, peak memory against dataset size, resuming.

    python benchmarks/prepare_scale.py [--data DIR] [--frames 50000] [--every 4,2,1] [--workers 1,2]
        [--repeats 3] [--shard-mb MB] [--resume] [--baseline-tree DIR] [--json PATH]

Renders ``--frames`` frames of the embedded dataset with ``pose synth`` into ``--data`` (reused
when it is there: ~10 small files per frame, the seed's layout), then runs ``pose prepare DATA
--out TMP --split all --on-bad skip --every E --workers W`` in a fresh process for every (W, E),
``--repeats`` times, alternating the configurations. While it runs, the proportional set size
(PSS: shared pages counted once) of the process and its worker processes is sampled every 50 ms.

Per run: frames packed, wall s, frames/s, frames/s per worker, peak PSS of all processes (MiB),
peak RSS of the main process (VmHWM), CPU s of the main process and of the workers. Medians over
the repeats are printed; the JSON holds every run.

- ``--baseline-tree DIR``: also run the ``pose`` of another checkout (``PYTHONPATH=DIR``; a tree
  whose ``pose prepare`` has no ``--max-skip-fraction``), labelled ``baseline``, with
  ``--baseline-workers``.
- ``--resume``: a run with shards of a tenth of the images stopped with SIGTERM once half of its
  train shards are complete, run again, compared with an uninterrupted run (same file table in meta.json), and
  ``pose prepare --verify`` timed on the result.

Projection (printed): Human3.6M in the seed layout (2,108,571 frames: 1,559,752 train, 548,819
test) on C cores = frames / min((C − 1) × worker frames/s, 1 / main-process CPU s per frame).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
H36M_FRAMES = 1_559_752 + 548_819  # the seed's index_range files: train S1,5,6,7,8 + test S9,11


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name"))
    except (OSError, subprocess.SubprocessError, StopIteration):
        name = platform.processor() or "unknown CPU"
    return f"{name}, {os.cpu_count()} cores"


class Sampler(threading.Thread):
    """Peak PSS of a process tree, the main process's VmHWM, and the last CPU times seen per pid."""

    def __init__(self, pid: int, every: float = 0.05):
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.every = every
        self.peak_pss = 0
        self.peak_rss_main = 0
        self.cpu: dict[int, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
            except psutil.Error:
                break
            total = 0
            for p in procs:
                try:
                    total += p.memory_full_info().pss
                    t = p.cpu_times()
                    self.cpu[p.pid] = t.user + t.system
                except psutil.Error:
                    pass
            self.peak_pss = max(self.peak_pss, total)
            try:
                with open(f"/proc/{self.proc.pid}/status") as fh:
                    hwm = next(int(ln.split()[1]) for ln in fh if ln.startswith("VmHWM"))
                self.peak_rss_main = max(self.peak_rss_main, hwm * 1024)
            except (OSError, StopIteration):
                pass
            self.done.wait(self.every)


def pose_cmd(tree: Path | None) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    return [sys.executable, "-m", "pose.tools.cli"], env


def run_prepare(src: Path, out: Path, workers: int, every: int, tree: Path | None = None,
                extra: list[str] | None = None, interrupt_when=None) -> dict:
    """One ``pose prepare`` in a fresh process; ``interrupt_when(out)`` → True sends it SIGTERM."""
    cmd, env = pose_cmd(tree)
    argv = [*cmd, "prepare", str(src), "--out", str(out), "--split", "all", "--on-bad", "skip",
            "--every", str(every), "--workers", str(workers), "--quiet", *(extra or [])]
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=tree or REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = Sampler(proc.pid)
    sampler.start()
    interrupted = False
    while proc.poll() is None:
        if interrupt_when is not None and not interrupted and interrupt_when(out):
            proc.send_signal(signal.SIGTERM)
            interrupted = True
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.done.set()
    sampler.join()
    if proc.returncode != 0 and not interrupted:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    frames = 0
    for split in ("train", "test"):
        meta = out / split / "meta.json"
        if meta.is_file():
            frames += json.loads(meta.read_text())["count"]
    main_cpu = sampler.cpu.get(proc.pid, 0.0)
    worker_cpu = sum(v for pid, v in sampler.cpu.items() if pid != proc.pid)
    return {
        "workers": workers, "every": every, "frames": frames, "wall_s": wall,
        "frames_per_s": frames / wall if frames else 0.0,
        "frames_per_s_per_worker": frames / wall / workers if frames else 0.0,
        "peak_pss_mib": sampler.peak_pss / 2**20, "peak_rss_main_mib": sampler.peak_rss_main / 2**20,
        "main_cpu_s": main_cpu, "worker_cpu_s": worker_cpu, "returncode": proc.returncode,
        "interrupted": interrupted, "stderr_tail": stderr[-600:],
        "load_avg_1min": [load_before, os.getloadavg()[0]],  # other work on the machine, before and after
    }


def ensure_data(data: Path, frames: int, tree: Path | None) -> None:
    if (data / "index_range").is_dir():
        return
    cmd, env = pose_cmd(tree)
    t0 = time.perf_counter()
    subprocess.run([*cmd, "synth", "--out", str(data), "--frames", str(frames), "--seed", "0", "--quiet"],
                   cwd=REPO, env=env, check=True)
    print(f"pose synth: {frames} frames into {data} in {time.perf_counter() - t0:.0f} s", flush=True)


def file_table(out: Path) -> dict[str, dict]:
    return {split: json.loads((out / split / "meta.json").read_text())["files"] for split in ("train", "test")}


def resume_check(src: Path, tmp: Path, tree: Path | None) -> dict:
    """Uninterrupted vs interrupted-at-half + resumed, 2 workers, shards of 1/10 of the images; then --verify."""
    image_bytes = sum(p.stat().st_size for p in (src / "images").iterdir())
    shard = ["--shard-mb", f"{image_bytes / 10 / 2**20:.3f}"]
    full = run_prepare(src, tmp / "full", 2, 1, tree, extra=shard)
    n_train_shards = json.loads((tmp / "full" / "train" / "meta.json").read_text())["num_shards"]

    def half_done(out: Path) -> bool:
        part = out.parent / f"{out.name}.partial" / "train"
        return part.is_dir() and len(list(part.glob("rows_*.npz"))) >= max(1, n_train_shards // 2)

    first = run_prepare(src, tmp / "resumed", 2, 1, tree, extra=shard, interrupt_when=half_done)
    kept = len(list((tmp / "resumed.partial" / "train").glob("rows_*.npz")))
    second = run_prepare(src, tmp / "resumed", 2, 1, tree, extra=shard)
    same = file_table(tmp / "full") == file_table(tmp / "resumed")
    cmd, env = pose_cmd(tree)
    t0 = time.perf_counter()
    r = subprocess.run([*cmd, "prepare", "--verify", str(tmp / "resumed"), "--quiet"], cwd=tree or REPO, env=env,
                       capture_output=True, text=True)
    verify_s = time.perf_counter() - t0
    size = sum(e["bytes"] for t in file_table(tmp / "resumed").values() for e in t.values())
    return {"uninterrupted": full, "interrupted": first, "train_shards": n_train_shards, "shards_kept": kept,
            "resumed": second, "identical_file_table": same, "verify_s": verify_s, "verify_bytes": size,
            "verify_ok": r.returncode == 0}


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "c2f_prepare_scale" / "raw")
    ap.add_argument("--frames", type=int, default=50000)
    ap.add_argument("--every", default="4,2,1", help="subsampling steps: dataset sizes frames/E")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--resume", action="store_true", help="also measure an interrupted + resumed run")
    ap.add_argument("--tree", type=Path, default=None, help="checkout whose `pose` is measured (default: this one)")
    ap.add_argument("--baseline-tree", type=Path, default=None)
    ap.add_argument("--baseline-workers", default="1", help="worker counts run with the baseline tree")
    ap.add_argument("--shard-mb", type=float, default=None, help="pose prepare --shard-mb (default: its own)")
    ap.add_argument("--cores", type=int, default=16, help="cores of the projection")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    ensure_data(args.data, args.frames, None)
    workers = [int(w) for w in args.workers.split(",")]
    everies = [int(e) for e in args.every.split(",")]
    baseline_workers = [int(w) for w in args.baseline_workers.split(",")]
    shard = [] if args.shard_mb is None else ["--shard-mb", str(args.shard_mb)]
    trees = [("current", args.tree.resolve() if args.tree else None)] + ([("baseline", args.baseline_tree.resolve())] if args.baseline_tree else [])
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="prepare_scale_", dir=args.data.parent) as tmp:
        tmp = Path(tmp)
        for rep in range(args.repeats):
            for label, tree in trees:
                for w in (workers if label == "current" else baseline_workers):
                    for e in everies:
                        out = tmp / f"{label}_w{w}_e{e}"
                        r = run_prepare(args.data, out, w, e, tree, extra=shard)
                        shutil.rmtree(out)
                        r.update(label=label, repeat=rep)
                        runs.append(r)
                        print(f"[{rep}] {label} workers={w} every={e}: {r['frames']} frames {r['wall_s']:.1f} s "
                              f"{r['frames_per_s']:.0f}/s, peak PSS {r['peak_pss_mib']:.0f} MiB, main RSS "
                              f"{r['peak_rss_main_mib']:.0f} MiB", flush=True)
        resume = resume_check(args.data, tmp, trees[0][1]) if args.resume else None
    summary = []
    for label, _ in trees:
        for w in (workers if label == "current" else baseline_workers):
            for e in everies:
                sel = [r for r in runs if r["label"] == label and r["workers"] == w and r["every"] == e]
                row = {"label": label, "workers": w, "every": e, "frames": sel[0]["frames"]}
                for key in ("wall_s", "frames_per_s", "frames_per_s_per_worker", "peak_pss_mib", "peak_rss_main_mib",
                            "main_cpu_s", "worker_cpu_s"):
                    row[key] = median_of(sel, key)
                summary.append(row)
    print(f"\nmedians of {args.repeats} ({cpu_name()}):")
    print("| tree | workers | frames | wall s | frames/s | frames/s per worker | peak PSS MiB | main RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in summary:
        print(f"| {s['label']} | {s['workers']} | {s['frames']:,} | {s['wall_s']:.1f} | {s['frames_per_s']:.0f} | "
              f"{s['frames_per_s_per_worker']:.0f} | {s['peak_pss_mib']:.0f} | {s['peak_rss_main_mib']:.0f} |")
    projection = None
    pooled = [s for s in summary if s["label"] == "current" and s["workers"] > 1]
    if pooled:
        big = max(pooled, key=lambda s: (s["frames"], s["workers"]))
        worker_rate = big["frames"] / big["worker_cpu_s"]  # frames per worker CPU-second
        main_cap = big["frames"] / big["main_cpu_s"]  # the main process packs every frame
        rate = min((args.cores - 1) * worker_rate, main_cap)
        projection = {"cores": args.cores, "frames": H36M_FRAMES, "worker_frames_per_cpu_s": worker_rate,
                      "main_process_cap_frames_per_s": main_cap, "frames_per_s": rate,
                      "hours": H36M_FRAMES / rate / 3600}
        print(f"\nprojection, Human3.6M seed layout ({H36M_FRAMES:,} frames) on {args.cores} cores: "
              f"{worker_rate:.0f} frames per worker CPU-s x {args.cores - 1} workers, main process cap "
              f"{main_cap:.0f} frames/s -> {rate:.0f} frames/s, {projection['hours']:.2f} h")
    if resume:
        u, i, s = resume["uninterrupted"], resume["interrupted"], resume["resumed"]
        print(f"\nresume: uninterrupted {u['wall_s']:.1f} s; interrupted after {i['wall_s']:.1f} s with "
              f"{resume['shards_kept']}/{resume['train_shards']} train shards kept; resumed run {s['wall_s']:.1f} s; "
              f"identical file table: {resume['identical_file_table']}; --verify {resume['verify_bytes'] / 1e9:.2f} GB "
              f"in {resume['verify_s']:.1f} s (ok: {resume['verify_ok']})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"cpu": cpu_name(), "date": time.strftime("%Y-%m-%d"), "data": str(args.data),
                                         "repeats": args.repeats, "shard_mb": args.shard_mb, "summary": summary, "projection": projection,
                                         "resume": resume, "runs": runs}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
