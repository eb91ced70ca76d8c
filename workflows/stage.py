"""Train one curriculum stage as a Ray Train job and publish its outputs for DVC.

    python workflows/stage.py --d2 16 [--config stages.yaml] [--num-workers N] [--use-gpu] [--wandb]
                              [--root DIR] [--data DIR]

- Reads and validates ``stages.yaml`` (entry ``train.d2_16``), checks that the prepared data and the
  previous stage's checkpoint (``init``) exist, then runs ``workflows.train_loop.train_func`` under a
  ``TorchTrainer`` (DDP over gloo on CPU, NCCL on GPU; workers/GPU from ``ray:`` or the flags).
- Ray: a private local instance, or the cluster named by ``RAY_ADDRESS`` (also what a
  ``ray job submit`` job sees). Each run gets a fresh ``RunConfig`` name
  (``d2_16-<time>-<random>``) under ``<root>/outputs/ray/``, so a rerun never silently resumes an
  old run.
- On success writes ``<root>/outputs/stages/d2_16/{model.pt, metrics.json, curve.csv}`` atomically
  (staged in a temporary folder, then renamed); on any failure nothing is written there and the
  exit code is non-zero, with one ``error: ...`` line for input problems.

Under ``ray job submit --working-dir .`` the script runs in an uploaded copy of the repository:
pass ``--root $PWD`` (or set ``POSE_ROOT``) so data and outputs resolve to the real folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workflows.common import (
    UserError,
    check_capacity,
    init_ray,
    outputs_dir,
    project_root,
    ray_env_defaults,
    ray_storage,
    run_cli,
    shutdown_ray,
)
from workflows.config import load_config, stage_key


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="python workflows/stage.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--d2", type=int, required=True, help="depth resolution of the stage to train (key d2_XX)")
    p.add_argument("--config", default="stages.yaml", help="configuration file (default: %(default)s)")
    p.add_argument("--num-workers", type=int, default=None, help="Ray Train workers (default: ray.num_workers)")
    gpu = p.add_mutually_exclusive_group()
    gpu.add_argument("--use-gpu", dest="use_gpu", action="store_true", default=None, help="one GPU per worker, NCCL")
    gpu.add_argument("--no-gpu", dest="use_gpu", action="store_false", help="CPU workers, gloo")
    p.add_argument("--wandb", action="store_true", default=None, help="log to Weights & Biases (mode from wandb:)")
    p.add_argument("--root", default=None, help="project root for data and outputs (default: $POSE_ROOT or cwd)")
    p.add_argument("--data", default=None, help="prepared data folder with train/ and test/ "
                   "(default: <root>/outputs/data/packed)")
    return p


def publish(files: dict[str, Path | str | bytes], final: Path) -> None:
    """Write ``{name: source path | text | bytes}`` into ``final`` atomically (stage, then rename)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    staging = final.parent / f".{final.name}.tmp-{token}"
    staging.mkdir()
    try:
        for name, src in files.items():
            dst = staging / name
            if isinstance(src, Path):
                shutil.copyfile(src, dst)
            elif isinstance(src, bytes):
                dst.write_bytes(src)
            else:
                dst.write_text(src)
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{token}"
            final.rename(old)
        staging.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def run_stage(args: argparse.Namespace) -> dict[str, Any]:
    """Validate inputs, train with Ray Train, publish outputs; returns the stage metrics dict."""
    from workflows.train_loop import build_train_config, check_inputs

    t_start = time.time()
    ray_env_defaults()
    root = project_root(args.root)
    cfg = load_config(args.config)
    key = stage_key(args.d2) if args.d2 and args.d2 > 0 else None
    if key is None or key not in cfg["train"]:
        raise UserError(f"{args.config}: train: no stage with d2={args.d2} (stages: {', '.join(cfg['train'])})")
    num_workers = args.num_workers or cfg["ray"]["num_workers"]
    if num_workers < 1:
        raise UserError(f"--num-workers must be >= 1, got {num_workers}")
    use_gpu = cfg["ray"]["use_gpu"] if args.use_gpu is None else args.use_gpu
    run_name = f"{key}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    tc = build_train_config(cfg, key, root, run_name=run_name, data_dir=Path(args.data).resolve() if args.data else None,
                            wandb=args.wandb)
    check_inputs(tc)

    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from workflows.train_loop import train_func

    resources = {"CPU": float(cfg["ray"]["cpus_per_worker"])}
    if use_gpu:
        resources["GPU"] = 1.0
    check_capacity({k: v * num_workers for k, v in resources.items()}, f"stage {key} ({num_workers} worker(s))")
    init_ray()
    # Checkpoints are fetched back from the Ray storage to publish the stage outputs.
    storage, local_storage = ray_storage(root)
    trainer = TorchTrainer(
        train_func,
        train_loop_config=tc,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage,
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    print(f"[{key}] Ray Train run {run_name}: {num_workers} worker(s), {'GPU/nccl' if use_gpu else 'CPU/gloo'}, "
          f"storage {storage}", flush=True)
    try:
        result = trainer.fit()
    except Exception as exc:  # noqa: BLE001 - Train V2 wraps worker errors; report them in one line
        msg = str(exc).strip().splitlines()
        raise UserError(f"stage {key} failed during training: {msg[-1] if msg else type(exc).__name__} "
                        f"(worker logs above; run folder {storage}/{run_name})") from None
    if getattr(result, "error", None):
        raise UserError(f"stage {key} failed during training: {result.error}")
    if result.checkpoint is None:
        raise UserError(f"stage {key} reported no checkpoint (run folder {storage}/{run_name})")

    metrics = {k: v for k, v in dict(result.metrics or {}).items() if isinstance(v, int | float)}
    metrics.update({
        "stage": key,
        "d2": cfg["train"][key]["d2"],
        "init": cfg["train"][key]["init"],
        "num_workers": num_workers,
        "use_gpu": bool(use_gpu),
        "run_name": run_name,
        "wall_s": round(time.time() - t_start, 1),
    })
    with result.checkpoint.as_directory() as ckdir:
        ckdir = Path(ckdir)
        for name in ("model.pt", "curve.csv"):
            if not (ckdir / name).is_file():
                raise UserError(f"stage {key}: checkpoint {ckdir} lacks {name}")
        publish(
            {
                "model.pt": ckdir / "model.pt",
                "curve.csv": ckdir / "curve.csv",
                "metrics.json": json.dumps(metrics, indent=2) + "\n",
            },
            outputs_dir(root, "stages", key),
        )
    if not cfg["ray"]["keep_runs"] and local_storage:
        shutil.rmtree(Path(storage, run_name), ignore_errors=True)
    print(f"[{key}] done in {metrics['wall_s']:.0f} s: val MPJPE {metrics.get('val_mpjpe', float('nan')):.1f} mm "
          f"(argmax), {metrics.get('val_mpjpe_soft', float('nan')):.1f} mm (soft); wrote "
          f"{outputs_dir(root, 'stages', key)}", flush=True)
    return metrics


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run_stage(args)
    finally:
        shutdown_ray()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(run_cli(main))
