"""Test MPJPE reached per training budget (iterations, seconds): one curriculum stage trained
from scratch (or from ``--init``) under several variants, each in its own process, on CPU or one GPU, without Ray.

Every variant runs :func:`workflows.train_loop.run_worker` (the loop Ray Train runs) with
:func:`workflows.train_loop.local_context`: one stage of a profile (``--profile``, ``--stage``,
``init`` removed) plus the variant's overrides; after each epoch it validates on ``--val-size``
fixed test frames (argmax and soft-argmax MPJPE, GT root depth, no flip test). Variants run side
by side (``--parallel``), each with ``--threads`` torch threads and ``--loader-workers`` data
loader processes, so that one GPU is shared. The figures answer "how good does the model get
within this much compute", e.g. to size the default profile for 2 CPU cores.

Variant syntax: ``"NAME key=value ..."``; keys are ``model.<field>``, ``targets.<field>``,
``data.<field>`` or a stage field (``lr``, ``batch_size``, ``iterations``, ``precision``, ...);
values are YAML scalars. The config is validated after the overrides, so a bad key is one line.

    python benchmarks/accuracy_budget.py --device cuda --iterations 6000 --parallel 4 \\
        --variant tiny64 --variant "tiny128 model.input_size=128" \\
        --variant "full256 model.preset=full precision=bf16" --json out.json

Data: ``--data DIR`` (a packed folder with train/ and test/); when it does not exist it is made
there from the profile's embedded dataset (``pose synth`` + ``pose prepare``, ``--data-workers``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", action="append", default=None,
                   help='"NAME key=value ..." (repeatable; default: one variant "base" with no overrides)')
    p.add_argument("--profile", default="default", help="profile the stage settings come from")
    p.add_argument("--stage", default="d2_16", help="stage of the profile to train from scratch")
    p.add_argument("--init", type=Path, default=None,
                   help="start every variant from this checkpoint (model.pt of an earlier stage) instead of scratch")
    p.add_argument("--iterations", type=int, default=None, help="iterations per variant (default: the stage's)")
    p.add_argument("--seconds", type=float, default=None,
                   help="stop a variant at the first epoch end past this many seconds (its schedule unfinished)")
    p.add_argument("--val-size", type=int, default=448, help="test frames validated after each epoch")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--parallel", type=int, default=1, help="variants trained at the same time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per variant")
    p.add_argument("--loader-workers", type=int, default=0, help="data loader processes per variant")
    p.add_argument("--data", type=Path, default=ROOT / "outputs" / "data" / "packed", help="packed data folder")
    p.add_argument("--data-workers", type=int, default=os.cpu_count() or 1, help="processes to make --data")
    p.add_argument("--out", type=Path, default=Path("accuracy_budget_runs"), help="per-variant logs and checkpoints")
    p.add_argument("--json", type=Path, default=None, help="write all results here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    for name in ("val_size", "parallel", "threads"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if a.iterations is not None and a.iterations < 1:
        p.error(f"--iterations must be >= 1, got {a.iterations}")
    a.variant = a.variant or ["base"]
    a.data, a.out = a.data.resolve(), a.out.resolve()
    a.json = a.json.resolve() if a.json else None
    names = [v.split()[0] for v in a.variant if v.split()]
    if len(names) != len(a.variant) or len(set(names)) != len(names):
        p.error(f"--variant: each needs a unique NAME first, got {a.variant}")
    return a


def variant_config(args: argparse.Namespace, spec: str) -> dict[str, Any]:
    """The validated stages.yaml mapping of one variant (its stage has no init)."""
    import yaml

    from workflows.config import ConfigError, make_profile, validate

    cfg = make_profile(args.profile)
    if args.stage not in cfg["train"]:
        raise ConfigError(f"--stage: {args.stage!r} not in profile {args.profile!r} ({', '.join(cfg['train'])})")
    cfg["train"] = {args.stage: {**cfg["train"][args.stage], "init": None}}
    cfg["tune"]["stage"] = args.stage  # the sweep section must name a stage that is left
    st = cfg["train"][args.stage]
    if args.iterations:
        st.update(iterations=args.iterations, epochs=None)
    cfg["data"].update(val_size=args.val_size, loader_workers=args.loader_workers)
    name, *pairs = spec.split()
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ConfigError(f"--variant {name}: expected key=value, got {pair!r}")
        value = yaml.safe_load(raw)
        section, dot, field = key.partition(".")
        if dot and section in ("model", "targets", "data"):
            cfg[section][field] = value
        else:
            st[key] = value
    cfg = validate(cfg, f"--variant {name}")
    return cfg


def ensure_data(args: argparse.Namespace) -> None:
    if (args.data / "train" / "meta.json").is_file() and (args.data / "test" / "meta.json").is_file():
        return
    from workflows.config import make_profile

    frames = make_profile(args.profile)["data"]["synth_frames"]
    raw = args.data.parent / (args.data.name + "_raw")
    pose = [sys.executable, "-m", "pose.tools.cli"]
    synth = pose + ["synth", "--out", str(raw), "--workers", str(args.data_workers), "--force", "--quiet"]
    if frames:
        synth += ["--frames", str(frames)]
    for argv in (synth, pose + ["prepare", str(raw), "--out", str(args.data), "--split", "all",
                                "--workers", str(args.data_workers), "--force", "--quiet"]):
        t0 = time.time()
        subprocess.run(argv, cwd=ROOT, check=True)
        print(f"[data] {' '.join(argv[3:5])}: {time.time() - t0:.0f} s", flush=True)


class _OutOfTime(Exception):
    pass


def run_variant(args: argparse.Namespace, spec: str) -> dict[str, Any]:
    """Train one variant in this process; returns its curve and timings."""
    import torch

    from workflows.stage import build_stage_run
    from workflows.train_loop import local_context, run_worker

    name = spec.split()[0]
    cfg = variant_config(args, spec)
    out = args.out / name
    out.mkdir(parents=True, exist_ok=True)
    config = build_stage_run(cfg, args.stage, ROOT, run_name=f"budget-{name}", data_dir=args.data, wandb=False)
    config = config.replace(cpus_per_worker=args.threads)
    if args.init is not None:
        config = config.replace(init_checkpoint=str(args.init.resolve()))
    wc = local_context(args.device, out)
    t0 = time.time()
    report = wc.report

    def report_with_deadline(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        report(metrics, checkpoint_dir)
        if args.seconds is not None and time.time() - t0 > args.seconds:
            raise _OutOfTime

    wc.report = report_with_deadline
    stopped = False
    try:
        run_worker(config, wc)
    except _OutOfTime:
        stopped = True
    wall = time.time() - t0
    elapsed = 0.0
    curve = []
    for r in wc.reports:
        elapsed += r["epoch_time_s"]
        curve.append({"iteration": int(r["iteration"]), "seconds": round(elapsed, 2), "loss": r["loss"],
                      "val_mpjpe": r["val_mpjpe"], "val_mpjpe_soft": r["val_mpjpe_soft"]})
    st = cfg["train"][args.stage]
    dev = torch.cuda.get_device_name(wc.device) if wc.device.type == "cuda" else "cpu"
    return {"name": name, "spec": spec, "device": dev, "model": cfg["model"], "stage": st,
            "sigma_2d": cfg["targets"]["sigma_2d"], "wall_s": round(wall, 1), "stopped_at_seconds": stopped,
            "it_per_s": round(curve[-1]["iteration"] / max(curve[-1]["seconds"], 1e-9), 2), "curve": curve,
            "final": curve[-1]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:  # child process: one variant, result as JSON on the last line
        spec = next(v for v in args.variant if v.split()[0] == args.worker)
        print("RESULT " + json.dumps(run_variant(args, spec)), flush=True)
        return 0
    from workflows.config import ConfigError

    if args.init is not None and not args.init.is_file():
        print(f"error: --init: checkpoint not found: {args.init}", file=sys.stderr)
        return 2
    for spec in args.variant:  # validate every variant before any work
        try:
            variant_config(args, spec)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    ensure_data(args)
    args.out.mkdir(parents=True, exist_ok=True)
    pending = list(args.variant)
    running: list[tuple[str, subprocess.Popen, Any]] = []
    results: list[dict[str, Any]] = []
    base = list(argv if argv is not None else sys.argv[1:])
    while pending or running:
        while pending and len(running) < args.parallel:
            spec = pending.pop(0)
            name = spec.split()[0]
            log = open(args.out / f"{name}.log", "w")  # noqa: SIM115 - closed when the child ends
            proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *base, "--worker", name], stdout=log,
                                    stderr=subprocess.STDOUT, cwd=ROOT)
            running.append((name, proc, log))
            print(f"[{name}] started (log {args.out / (name + '.log')})", flush=True)
        time.sleep(2)
        for item in list(running):
            name, proc, log = item
            if proc.poll() is None:
                continue
            log.close()
            running.remove(item)
            text = (args.out / f"{name}.log").read_text()
            lines = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(f"[{name}] FAILED (exit {proc.returncode}); last lines:\n" + "\n".join(text.splitlines()[-8:]))
                results.append({"name": name, "failed": True, "returncode": proc.returncode})
                continue
            res = json.loads(lines[-1][len("RESULT "):])
            results.append(res)
            f = res["final"]
            cut = " (stopped by --seconds)" if res["stopped_at_seconds"] else ""
            print(f"[{name}] {f['iteration']} it{cut} in {f['seconds']:.0f} s ({res['it_per_s']:.1f} it/s): "
                  f"val MPJPE argmax {f['val_mpjpe']:.1f} mm, soft {f['val_mpjpe_soft']:.1f} mm", flush=True)
    order = {v.split()[0]: i for i, v in enumerate(args.variant)}
    results.sort(key=lambda r: order[r["name"]])
    print("\n| variant | it | s | it/s | MPJPE argmax | soft | best argmax (at it) |\n|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        if r.get("failed"):
            print(f"| {r['name']} | failed | | | | | |")
            continue
        f = r["final"]
        best = min(r["curve"], key=lambda c: c["val_mpjpe"])
        print(f"| {r['name']} | {f['iteration']} | {f['seconds']:.0f} | {r['it_per_s']:.1f} | {f['val_mpjpe']:.1f} | "
              f"{f['val_mpjpe_soft']:.1f} | {best['val_mpjpe']:.1f} ({best['iteration']}) |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                        indent=1))
        print(f"wrote {args.json}")
    return 1 if any(r.get("failed") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
