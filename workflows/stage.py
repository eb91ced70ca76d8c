"""Train one curriculum stage as a Ray Train job and publish its outputs for DVC.

    python -m workflows.stage --d2 16 [--config stages.yaml] [--num-workers N] [--use-gpu] [--no-wandb]
                              [--root DIR] [--data DIR] [--fresh] [--verbose]

- Reads and validates ``stages.yaml`` (entry ``train.d2_16``), checks that the prepared data and the
  previous stage's checkpoint (``init``) exist, then runs ``workflows.train_loop.train_func`` under a
  ``TorchTrainer`` (DDP over gloo on CPU, NCCL on GPU; workers/GPU from ``ray:`` or the flags;
  ``ray.num_workers: [min, max]`` trains elastically).
- Ray: a private local instance, or the cluster named by ``RAY_ADDRESS`` (also what a
  ``ray job submit`` job sees).
- The run is named by its identity (``d2_16-<fingerprint>``, :mod:`workflows.runs`) and keeps its
  checkpoints under ``<root>/outputs/ray/<name>/`` (or ``$POSE_STORAGE_PATH/<name>``; not a DVC
  output, so ``dvc repro`` never deletes it). Running the same command again after a killed driver
  resumes from the last checkpoint (``resuming d2_16 from iteration N of run <name>``); a different
  configuration is a different run (``starting d2_16 fresh``); ``--fresh`` discards the old one.
  A lost worker restarts the worker group from the last checkpoint, up to ``ray.max_failures`` times.
  SIGTERM to this driver (``ray job stop``, Kubernetes, spot reclaim) or to a worker: a checkpoint at
  the next iteration, then the driver exits 143 (its SIGTERM) or the group restarts (a worker's).
- On success writes ``<root>/outputs/stages/d2_16/{model.pt, metrics.json, curve.csv}`` atomically
  (staged in a temporary folder, then renamed) and removes the run folder unless ``ray.keep_runs``;
  on any failure nothing is written there and the exit code is non-zero, with one ``error: ...`` line.

What it prints: the run line, one header line (stage, init, data, workers, iterations), a progress
line every ``log_every`` iterations (loss, lr, it/s, ETA), one line per epoch with the validation
MPJPE and the closing ``[d2_16] done`` summary. Ray's own lines (training-report dumps, worker-group
and placement-group notices, dashboard URL, C++ core-worker messages) go to
``<root>/outputs/logs/d2_16.log``, named in the header (``workflows/console.py``); ``--verbose`` or
``POSE_VERBOSE=1`` shows them as well. Errors always reach the terminal.

Under ``ray job submit --working-dir .`` the script runs in an uploaded copy of the repository:
pass ``--root $PWD`` (or set ``POSE_ROOT``) so data and outputs resolve to the real folder.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from workflows.checkpoints import CheckpointStore
from workflows.common import (
    Stopped,
    UserError,
    check_capacity,
    outputs_dir,
    project_root,
    publish,
    ray_env_defaults,
    ray_storage,
    require_packed,
    run_cli,
    run_with_ray,
)
from workflows.config import load_config, stage_key
from workflows.console import quiet_ray, verbose_from_env
from workflows.raytrain import run_train_job
from workflows.runs import RunInUse, fingerprint, open_run, remove_run_dir, run_identity, run_name
from workflows.stage_run import DataSettings, StageRun, StageSettings
from workflows.train_loop import TIME_PARTS, train_func
from workflows.wandb_log import curriculum_group, previous_budgets


# --------------------------------------------------------------------------------------------
# the run, built once by the driver
def build_stage_run(cfg: Mapping[str, Any], key: str, root: Path, *, run_name: str = "",
                    data_dir: Path | None = None, wandb: bool | None = None) -> StageRun:
    """The :class:`StageRun` of stage ``key`` of the validated config ``cfg`` (project root ``root``;
    the packed data in ``data_dir``, default ``<root>/outputs/data/packed``; ``wandb`` overrides
    ``wandb.enabled``). The run's folder and identity are the caller's to set."""
    st = cfg["train"][key]
    data_dir = Path(data_dir) if data_dir else outputs_dir(root, "data", "packed")
    wb = dict(cfg["wandb"], dir=str(outputs_dir(root, "wandb")))
    if wandb is not None:
        wb["enabled"] = bool(wandb)
    if wb["enabled"]:  # the curriculum's group and where this stage starts on its step axis
        wb |= {"group": curriculum_group(cfg, data_dir), "previous": previous_budgets(cfg, key)}
    d = cfg["data"]
    return StageRun(
        stage=key,
        settings=StageSettings(**st),
        model=dict(cfg["model"]),
        sigma_2d=float(cfg["targets"]["sigma_2d"]),
        depth_range=tuple(cfg["targets"]["depth_range"]),
        data=DataSettings(train_dir=str(data_dir / "train"), test_dir=str(data_dir / "test"), aug=d["aug"],
                          train_limit=d["train_limit"], val_size=d["val_size"], loader_workers=d["loader_workers"],
                          image_cache_mb=d["image_cache_mb"]),
        init_checkpoint=str(outputs_dir(root, "stages", st["init"], "model.pt")) if st["init"] else None,
        seed=int(cfg["seed"]),
        cpus_per_worker=float(cfg["ray"]["cpus_per_worker"]),
        wandb=wb if wb["enabled"] else None,
        run_name=run_name,
        checkpoint_every=cfg["ray"]["checkpoint_every"],
        max_failures=int(cfg["ray"]["max_failures"]),
    )


def check_inputs(run: StageRun) -> None:
    """Driver-side checks before any Ray work: the packed splits whole, the previous stage's checkpoint
    present, readable and of the same model (but d2). Raises :class:`UserError` with one line."""
    require_packed(Path(run.data.train_dir))
    require_packed(Path(run.data.test_dir))
    init = run.init_checkpoint
    if init is None:
        return
    if not Path(init).is_file():
        prev = Path(init).parent.name
        raise UserError(
            f"previous stage checkpoint not found: {init} (stage {run.stage} starts from {prev}; "
            f"run `dvc repro train@{prev}` or `python -m workflows.stage --d2 {int(prev[3:])}` first)"
        )
    try:
        mc = torch.load(init, map_location="cpu", weights_only=True)["model_config"]
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user problem here
        raise UserError(f"previous stage checkpoint {init} is not readable ({type(exc).__name__}: {exc})") from None
    want = run.model_config().to_dict()
    diff = [k for k in want if k not in ("d2", "heatmap2_std") and mc.get(k) != want[k]]
    if diff:
        k = diff[0]
        raise UserError(
            f"previous stage checkpoint {init} has model.{k}={mc.get(k)!r} but stages.yaml gives {want[k]!r} "
            "(rerun the earlier stages after changing the model section)"
        )


# --------------------------------------------------------------------------------------------
# the command
def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="python -m workflows.stage", description=__doc__.split("\n\n")[0])
    p.add_argument("--d2", type=int, required=True, help="depth resolution of the stage to train (key d2_XX)")
    p.add_argument("--config", default="stages.yaml", help="configuration file (default: %(default)s)")
    p.add_argument("--num-workers", type=int, default=None, help="Ray Train workers (default: ray.num_workers)")
    gpu = p.add_mutually_exclusive_group()
    gpu.add_argument("--use-gpu", dest="use_gpu", action="store_true", default=None, help="one GPU per worker, NCCL")
    gpu.add_argument("--no-gpu", dest="use_gpu", action="store_false", help="CPU workers, gloo")
    p.add_argument("--wandb", action=argparse.BooleanOptionalAction, default=None,
                   help="log to Weights & Biases, offline unless wandb.mode says otherwise (default: wandb.enabled, on)")
    p.add_argument("--root", default=None, help="project root for data and outputs (default: $POSE_ROOT or cwd)")
    p.add_argument("--data", default=None, help="prepared data folder with train/ and test/ "
                   "(default: <root>/outputs/data/packed)")
    p.add_argument("--fresh", action="store_true",
                   help="discard the checkpoints of an earlier run of the same configuration and start over")
    p.add_argument("--verbose", action="store_true", default=None,
                   help="also show Ray's own lines (default: only in outputs/logs/d2_XX.log; or POSE_VERBOSE=1)")
    return p


def run_stage(args: argparse.Namespace) -> dict[str, Any]:
    """Validate inputs, train with Ray Train (resuming the run of the same identity), publish outputs;
    returns the stage metrics dict."""
    t_start = time.time()
    ray_env_defaults()
    root = project_root(args.root)
    cfg = load_config(args.config)
    key = stage_key(args.d2) if args.d2 and args.d2 > 0 else None
    if key is None or key not in cfg["train"]:
        raise UserError(f"{args.config}: train: no stage with d2={args.d2} (stages: {', '.join(cfg['train'])})")
    workers = args.num_workers or cfg["ray"]["num_workers"]
    if min(workers if isinstance(workers, list) else [workers]) < 1:
        raise UserError(f"--num-workers must be >= 1, got {workers}")
    use_gpu = cfg["ray"]["use_gpu"] if args.use_gpu is None else args.use_gpu
    run = build_stage_run(cfg, key, root, data_dir=Path(args.data).resolve() if args.data else None, wandb=args.wandb)
    check_inputs(run)
    least = workers[0] if isinstance(workers, list) else workers
    check_capacity({"CPU": float(cfg["ray"]["cpus_per_worker"]) * least, "GPU": float(least if use_gpu else 0)},
                   f"stage {key} ({least} worker(s))")  # before any run folder is made

    storage, local_storage = ray_storage(root)
    fp = fingerprint(run_identity(run, workers, bool(use_gpu)))
    name = run_name(key, fp)
    run_dir = f"{storage.rstrip('/')}/{name}"
    log = getattr(args, "ray_log", None)
    run = run.replace(run_name=name, run_dir=run_dir, fingerprint=fp, ray_log=str(log) if log else None)
    try:
        with open_run(run_dir, fresh=args.fresh, tag=f"[{key}]") as (store, ckpt):
            if ckpt is not None:
                print(f"resuming {key} from iteration {ckpt.iteration} of run {name}", flush=True)
            else:
                print(f"starting {key} fresh (run {name}{', --fresh' if args.fresh else ''})", flush=True)
            if ckpt is None or not ckpt.manifest.get("final"):
                _train(run, workers, bool(use_gpu))
                ckpt, _ = store.scan()
            if ckpt is None or not ckpt.manifest.get("final"):
                raise UserError(f"stage {key}: run {name} ended without a final checkpoint (run folder {run_dir})")
            metrics = {k: v for k, v in ckpt.manifest.get("metrics", {}).items() if isinstance(v, int | float)}
            metrics.update({
                "stage": key,
                "d2": cfg["train"][key]["d2"],
                "init": cfg["train"][key]["init"],
                "num_workers": workers,
                "use_gpu": bool(use_gpu),
                "run_name": name,
                "wall_s": round(time.time() - t_start, 1),
            })
            with store.open(ckpt) as ckdir:
                publish(
                    {
                        "model.pt": ckdir / "model.pt",
                        "curve.csv": ckdir / "curve.csv",
                        "metrics.json": json.dumps(metrics, indent=2) + "\n",
                    },
                    outputs_dir(root, "stages", key),
                )
            if not cfg["ray"]["keep_runs"]:
                remove_run_dir(run_dir, keep_lock=True)
    except RunInUse as exc:
        raise UserError(f"stage {key}: {exc}: another `stage.py --d2 {args.d2}` of the same configuration "
                        "is running (wait for it, or stop it)") from None
    if not cfg["ray"]["keep_runs"]:
        remove_run_dir(run_dir)
    print(f"[{key}] done in {metrics['wall_s']:.0f} s: val MPJPE {metrics.get('val_mpjpe', float('nan')):.1f} mm "
          f"(argmax), {metrics.get('val_mpjpe_soft', float('nan')):.1f} mm (soft); wrote "
          f"{outputs_dir(root, 'stages', key)}", flush=True)
    line = time_line(metrics)
    if line:
        print(f"[{key}] {line}", flush=True)
    return metrics


def time_line(metrics: dict[str, Any]) -> str:
    """Where the stage's time went, from rank 0's ``time_<part>_s`` of its last attempt (empty when a
    stage from an older version lacks them): the loop's parts, and the rest of the wall time (Ray
    start-up and shutdown, earlier attempts, publishing)."""
    parts = {k: metrics.get(f"time_{k}_s") for k in TIME_PARTS}
    if any(v is None for v in parts.values()):
        return ""
    rest = metrics["wall_s"] - sum(parts.values())
    return ("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]))
            + f"; outside the loop (Ray start-up and shutdown, publishing) {rest:.0f} s")


def _train(run: StageRun, workers: int | list[int], use_gpu: bool) -> None:
    """Run the stage's Ray Train job until it finishes; every worker-group start resumes from the run's
    newest checkpoint. SIGTERM to this driver: the workers checkpoint at the next iteration and stop,
    then :class:`workflows.common.Stopped` is raised."""
    key, run_dir, max_failures, log = run.stage, run.run_dir, run.max_failures, run.ray_log

    def where() -> str:
        last = CheckpointStore(run_dir).scan(digests=False)[0]
        return f"iteration {last.iteration}" if last is not None else "the beginning (no checkpoint yet)"

    shown = f"elastic {workers[0]}-{workers[1]}" if isinstance(workers, list) else str(workers)
    print(f"[{key}] Ray Train: {shown} worker(s), {'GPU/nccl' if use_gpu else 'CPU/gloo'}, run folder {run_dir}, "
          f"up to {max_failures} restart(s) from the last checkpoint"
          + (f"; Ray's messages in {log} (--verbose shows them)" if log else ""), flush=True)
    job = run_train_job(
        train_func, run.loop_config(), what=f"stage {key}", storage_path=f"{run_dir}/ray", workers=workers,
        cpus_per_worker=run.cpus_per_worker, use_gpu=use_gpu, max_failures=max_failures,
        board=True, on_failure=lambda: (f"gave up after ray.max_failures={max_failures} restart(s); worker logs "
                                        f"{'in ' + log if log else 'above'}; the run keeps its checkpoints: the same command resumes it "
                                        f"from {where()}"),
    )
    if job.stopped_by is not None:
        last = CheckpointStore(run_dir).scan(digests=False)[0]
        if last is None or not last.manifest.get("final"):
            raise Stopped(f"[{key}] stopped by {job.stopped_by} at {where()}; the same command resumes run "
                          f"{run.run_name} from there")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbose = verbose_from_env() if args.verbose is None else args.verbose
    if verbose:
        quiet = contextlib.nullcontext(None)
    else:
        key = stage_key(args.d2) if args.d2 and args.d2 > 0 else "stage"
        quiet = quiet_ray(outputs_dir(project_root(args.root), "logs", f"{key}.log"))
    with quiet as log:
        args.ray_log = log
        return run_with_ray(run_stage, args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
