"""Work lost per failure: a curriculum stage killed or terminated at a chosen iteration, then resumed.

    python benchmarks/fault_recovery.py [--profile default] [--stage d2_02] [--iterations 400]
        [--checkpoint-every 100] [--fail-at 150] [--scenario worker-kill ...] [--json out.json]

Runs ``workflows/stage.py`` (real Ray Train, a private local Ray, the profile's workers) on one
stage of a profile, shortened to ``--iterations``, with checkpoints every ``--checkpoint-every``
iterations (default: the profile's ``ray.checkpoint_every``), once uninterrupted and once per
scenario, each failure caused when the stage's log first shows iteration ``--fail-at``:

- ``worker-kill``: SIGKILL to one Ray Train worker (a lost node, the OOM killer); Ray Train restarts
  the worker group, which resumes from the last checkpoint.
- ``driver-kill``: SIGKILL to the stage driver and its private Ray (a lost head node, a closed
  laptop), then the same command again.
- ``driver-sigterm``: SIGTERM to the driver (``ray job stop``, Kubernetes, spot reclaim): the
  workers checkpoint at the next iteration and stop; then the same command again.
- ``worker-sigterm``: SIGTERM to one worker: it checkpoints at the next iteration and the group restarts.

Reported per scenario: the iteration the failure hit (the last one logged before it; the log
prints every 10 iterations, so this is a lower bound within 10), the iteration training resumed
at, the **iterations redone** (their difference, 0 when a checkpoint was written at the failure),
their cost in seconds at the uninterrupted run's speed, the extra wall time of the whole stage over
the uninterrupted run (redone work plus restarting Ray / the worker group), and whether the final
weights equal the uninterrupted run's bitwise. Data: ``--data DIR`` (packed train/ and test/);
made there from the profile's embedded dataset when missing (``--frames`` frames).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SCENARIOS = ("worker-kill", "driver-kill", "driver-sigterm", "worker-sigterm")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="default", help="profile the stage comes from (default: %(default)s)")
    p.add_argument("--stage", default="d2_02", help="stage to run, from scratch (default: %(default)s)")
    p.add_argument("--iterations", type=int, default=400, help="iterations of the stage (default: %(default)s)")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="iterations between checkpoints (default: the profile's ray.checkpoint_every)")
    p.add_argument("--fail-at", type=int, default=150,
                   help="cause the failure when the log shows this iteration (default: %(default)s, halfway "
                   "between the default profile's checkpoints at 100 and 200)")
    p.add_argument("--scenario", action="append", choices=SCENARIOS, default=None,
                   help="scenarios to run (repeatable; default: all)")
    p.add_argument("--data", type=Path, default=None, help="packed data folder (default: made in a temp folder)")
    p.add_argument("--frames", type=int, default=2000, help="embedded frames to render when --data is missing")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    a = p.parse_args(argv)
    if not 0 < a.fail_at < a.iterations:
        p.error(f"--fail-at must lie in (0, --iterations={a.iterations}), got {a.fail_at}")
    a.scenario = a.scenario or list(SCENARIOS)
    return a


def _descendants(pid: int) -> list[Any]:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _end(proc: subprocess.Popen, seen: list[Any]) -> None:
    """Kill what is left of ``proc``'s session (its process group and the descendants seen)."""
    import psutil

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for k in seen:
        with contextlib.suppress(psutil.Error):
            k.kill()
    psutil.wait_procs(seen, timeout=20)


def _last_iteration(text: str, stage: str) -> int:
    its = [int(m) for m in re.findall(rf"\[{stage}\] epoch \d+/\d+ it (\d+)/", text)]
    return max(its, default=0)


def run_stage(root: Path, stage: str, log: Path, fail: str | None = None, fail_at: int = 0) -> dict[str, Any]:
    """One ``stage.py`` run; with ``fail``, the failure is caused once the log shows ``fail_at``.
    Returns its wall time, exit code and the iteration the failure hit."""
    d2 = int(stage.split("_")[1])
    argv = [sys.executable, str(ROOT / "workflows" / "stage.py"), "--d2", str(d2), "--root", str(root),
            "--config", str(root / "stages.yaml")]
    env = {**os.environ, "RAY_ADDRESS": "local", "PYTHONUNBUFFERED": "1"}
    t0 = time.time()
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, cwd=root, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    seen: list[Any] = []
    hit = None
    try:
        while proc.poll() is None:
            time.sleep(0.05)
            if fail is None or hit is not None:
                continue
            if _last_iteration(log.read_text(errors="replace"), stage) < fail_at:
                continue
            seen = _descendants(proc.pid)
            workers = [k for k in seen if "RayTrainWorker" in " ".join(k.cmdline())]
            hit = _last_iteration(log.read_text(errors="replace"), stage)
            if fail == "worker-kill":
                workers[-1].send_signal(signal.SIGKILL)
            elif fail == "worker-sigterm":
                workers[-1].send_signal(signal.SIGTERM)
            elif fail == "driver-kill":
                proc.send_signal(signal.SIGKILL)
            else:
                proc.send_signal(signal.SIGTERM)
        rc = proc.wait()
    finally:
        seen += _descendants(proc.pid)
        _end(proc, seen)
    return {"wall_s": time.time() - t0, "rc": rc, "failed_at": hit}


def _project(args: argparse.Namespace, base: Path, data: Path) -> Path:
    from workflows.config import make_profile, write_config

    cfg = make_profile(args.profile)
    st = cfg["train"][args.stage]
    st.update(init=None, iterations=args.iterations, epochs=None, log_every=10)
    if args.checkpoint_every:
        cfg["ray"]["checkpoint_every"] = args.checkpoint_every
    st["checkpoint_every"] = None
    cfg["train"] = {args.stage: st}
    cfg["tune"] = None
    root = base / "proj"
    (root / "outputs" / "data").mkdir(parents=True)
    (root / "outputs" / "data" / "packed").symlink_to(data, target_is_directory=True)
    write_config(cfg, root / "stages.yaml")
    return root


def _prepare_data(args: argparse.Namespace, base: Path) -> Path:
    if args.data is not None and (args.data / "train" / "meta.json").is_file():
        return args.data.resolve()
    from workflows.config import make_profile

    d = make_profile(args.profile)["data"]
    out = (args.data or base / "packed").resolve()
    pose = [sys.executable, "-m", "pose.tools.cli"]
    for argv in (pose + ["synth", "--out", str(base / "raw"), "--frames", str(args.frames), "--seed", "0",
                         "--limb-mix", str(d["synth_limb_mix"]), "--looks", d["synth_looks"], "--quiet"],
                 pose + ["prepare", str(base / "raw"), "--out", str(out), "--on-bad", "skip"]):
        subprocess.run(argv, cwd=ROOT, check=True)
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    results: dict[str, Any] = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                               "cpu": platform.processor() or platform.machine(), "scenarios": {}}
    with contextlib.suppress(OSError):
        results["cpu"] = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    results["cores"] = os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="fault-recovery-") as tmp:
        base = Path(tmp)
        data = _prepare_data(args, base)

        def fresh(name: str) -> Path:
            d = base / name
            d.mkdir()
            return _project(args, d, data)

        ref_root = fresh("reference")
        ref = run_stage(ref_root, args.stage, base / "reference.log")
        if ref["rc"] != 0:
            raise SystemExit(f"error: the uninterrupted run failed (rc {ref['rc']}); log {base / 'reference.log'}:\n"
                             + (base / "reference.log").read_text()[-3000:])
        ref_text = (base / "reference.log").read_text()
        per_it = _seconds_per_iteration(ref_text, args.stage)
        ref_w = torch.load(ref_root / "outputs" / "stages" / args.stage / "model.pt", weights_only=True)["model"]
        results["uninterrupted"] = {"wall_s": round(ref["wall_s"], 1), "seconds_per_iteration": per_it}
        print(f"uninterrupted: {ref['wall_s']:.1f} s, {per_it:.3f} s/iteration", flush=True)
        for scenario in args.scenario:
            root = fresh(scenario)
            first = run_stage(root, args.stage, base / f"{scenario}.log", fail=scenario, fail_at=args.fail_at)
            text = (base / f"{scenario}.log").read_text(errors="replace")
            wall = first["wall_s"]
            if scenario.startswith("driver"):
                again = run_stage(root, args.stage, base / f"{scenario}-again.log")
                text += (base / f"{scenario}-again.log").read_text(errors="replace")
                wall += again["wall_s"]
                rc = again["rc"]
            else:
                rc = first["rc"]
            m = re.search(rf"(?:resuming {args.stage} from iteration|\[{args.stage}\] resumed at iteration) (\d+)", text)
            stopped = re.search(r"stopped at iteration (\d+)", text)
            resumed = int(m.group(1)) if m else None
            again_text = (base / f"{scenario}-again.log").read_text(errors="replace") if scenario.startswith(
                "driver") else ""
            started_fresh = f"starting {args.stage} fresh" in again_text  # the run's identity changed (code edited?)
            if started_fresh:
                resumed = 0
            hit = max(first["failed_at"] or 0, int(stopped.group(1)) if stopped else 0)
            redone = None if resumed is None else max(0, hit - resumed)
            equal = None
            model = root / "outputs" / "stages" / args.stage / "model.pt"
            if model.is_file():
                w = torch.load(model, weights_only=True)["model"]
                equal = all(torch.equal(w[k], ref_w[k]) for k in ref_w)
            row = {"rc": rc, "failed_at_iteration": hit, "resumed_at_iteration": resumed,
                   "iterations_redone": redone,
                   "redone_s": None if redone is None else round(redone * per_it, 1),
                   "extra_wall_s": round(wall - ref["wall_s"], 1), "weights_equal_uninterrupted": equal,
                   "rerun_started_fresh": started_fresh}
            results["scenarios"][scenario] = row
            print(f"{scenario}: failure at iteration {hit}, resumed at {resumed}, {redone} iteration(s) redone "
                  f"({row['redone_s']} s), stage {row['extra_wall_s']:+.1f} s over the uninterrupted run, "
                  f"weights equal: {equal}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _seconds_per_iteration(text: str, stage: str) -> float:
    """Median seconds per iteration from the ``(x it/s)`` of the log's progress lines."""
    import statistics

    rates = [float(r) for r in re.findall(rf"\[{stage}\] epoch \d+/\d+ it \d+/\d+ .*\(([\d.]+) it/s\)", text)]
    return 1.0 / statistics.median(rates) if rates else float("nan")


if __name__ == "__main__":
    sys.exit(main())
