"""Train a 2D→3D lifter (supervised Martinez-style or unsupervised Chen et al.) as a Ray Train job.

    python -m workflows.lift --mode supervised|unsupervised [--config stages.yaml] [--root DIR]
                             [--data DIR] [--extra-2d NPZ ...] [--iterations N]

- Params: ``stages.yaml`` section ``lift.<mode>``, a flat mapping of what differs from the defaults
  of ``pose.lifting.UnsupervisedConfig``/``SupervisedConfig`` (and their ``LifterConfig``): any of
  their fields, ``epochs`` instead of ``iterations``, ``extra_2d``; plus the global ``seed`` when the
  entry has none.
- Data: ``<root>/outputs/data/packed/{train,test}`` (``pose prepare`` output; ``--data`` overrides).
  Unsupervised training reads **only the 2D** of the train split (plus ``--extra-2d`` / the
  ``extra_2d`` param: 2D-only ``.npz`` files of N×17×2); 3D is used for evaluation on the test split.
- Ray: one ``TorchTrainer`` worker (the two-optimiser GAN loop is not data-parallel), a private
  local instance unless ``RAY_ADDRESS`` is set, and a fresh ``RunConfig`` name per run.
- Writes ``<root>/outputs/lift/<mode>/{model.pt, metrics.json, curve.csv}`` atomically. metrics.json:
  ``mpjpe_scaled`` (MPJPE after root alignment and scale normalisation, mm), ``pa_mpjpe`` (P-MPJPE),
  ``sign_agnostic_*`` (the better global depth sign; labelled separately), ``flat_*`` (the flat-depth
  baseline on the same poses), ``ratio_to_flat`` and ``per_action`` tables.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from workflows.common import (
    UserError,
    outputs_dir,
    project_root,
    ray_env_defaults,
    ray_storage,
    run_cli,
    run_with_ray,
)

MODES = ("supervised", "unsupervised")
#: keys of ``lift.<mode>`` handled here rather than by the lifting configs: ``extra_2d`` (list of
#: 2D-only .npz files), ``epochs`` (if set, overrides ``iterations`` with
#: ``ceil(epochs · N_train / batch_size)``); ``eval_every`` and ``seed`` are the configs' own fields
#: with the workflow's defaults (held-out metrics every 1000 iterations; the global seed).
_WORKFLOW_DEFAULTS: dict[str, Any] = {"extra_2d": [], "epochs": None, "eval_every": 1000, "seed": None}
_LOCAL_KEYS = ("extra_2d", "epochs")


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="python -m workflows.lift", description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=MODES, required=True, help="supervised (uses 3D) or unsupervised (2D only)")
    p.add_argument("--config", default="stages.yaml", help="configuration file (default: %(default)s)")
    p.add_argument("--root", default=None, help="project root for data and outputs (default: $POSE_ROOT or cwd)")
    p.add_argument("--data", default=None, help="prepared data folder with train/ and test/ "
                   "(default: <root>/outputs/data/packed)")
    p.add_argument("--extra-2d", nargs="*", default=None, help="extra 2D-only pose files (.npz, N×17×2)")
    p.add_argument("--iterations", type=int, default=None, help="override lift.<mode>.iterations")
    p.add_argument("--out", default=None, help="output folder (default: <root>/outputs/lift/<mode>)")
    return p


def resolve_params(mode: str, params: dict[str, Any] | None, global_seed: int = 0) -> dict[str, Any]:
    """Defaults of ``mode`` overridden by ``params`` (the ``lift.<mode>`` entry); validates the keys."""
    from pose import lifting

    if mode not in MODES:
        raise UserError(f"mode: expected one of {MODES}, got {mode!r}")
    cls = lifting.UnsupervisedConfig if mode == "unsupervised" else lifting.SupervisedConfig
    base = dataclasses.asdict(cls())
    out = {**base.pop("lifter"), **base, **_WORKFLOW_DEFAULTS, **(params or {})}  # flat, as in stages.yaml
    if out["epochs"] is not None and not (isinstance(out["epochs"], int | float) and out["epochs"] > 0):
        raise UserError(f"lift.{mode}.epochs: must be a number > 0 or null, got {out['epochs']!r}")
    if out.get("seed") is None:
        out["seed"] = int(global_seed)
    try:
        lifting.config_from_dict(cls, {k: v for k, v in out.items() if k not in _LOCAL_KEYS})
    except (TypeError, ValueError) as exc:
        raise UserError(f"lift.{mode}: {exc}") from None
    extra = out.get("extra_2d") or []
    out["extra_2d"] = [extra] if isinstance(extra, str) else list(extra)
    return out


# --------------------------------------------------------------------------------------------
# worker side
def _metrics(lifter, x_test, test_ps) -> dict[str, Any]:
    from pose import lifting
    from pose.metrics import evaluate_predictions

    pred = lifting.predict_3d(lifter, x_test)
    return evaluate_predictions(pred, test_ps.joints_3d, test_ps.action, test_ps.action_names)


def summarize(res: dict[str, Any], flat: dict[str, Any]) -> dict[str, Any]:
    """Flat metrics.json record from two ``evaluate_predictions`` results (model, flat baseline)."""
    sa = res["sign_agnostic"]
    out = {
        "mpjpe_scaled": res["n_mpjpe"],
        "pa_mpjpe": res["pa_mpjpe"],
        "sign_agnostic_mpjpe_scaled": sa["n_mpjpe"],
        "sign_agnostic_pa_mpjpe": sa["pa_mpjpe"],
        "sign_agnostic_flipped": sa["flipped"],
        "flat_mpjpe_scaled": flat["n_mpjpe"],
        "flat_pa_mpjpe": flat["pa_mpjpe"],
        "ratio_to_flat": sa["pa_mpjpe"] / max(flat["pa_mpjpe"], 1e-9),
        "test_count": res["count"],
    }
    if "per_action" in res:
        out["per_action"] = {
            "pa_mpjpe": res["per_action"]["pa_mpjpe"],
            "mpjpe_scaled": res["per_action"]["n_mpjpe"],
            "sign_agnostic_pa_mpjpe": res["per_action"]["sign_agnostic_pa_mpjpe"],
        }
    return out


def run_training(config: dict[str, Any]) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """Load data, train, evaluate (pure Python; used by the Ray worker and by tests).

    ``config``: ``mode``, ``params`` (resolved), ``train_dir``, ``test_dir``. Returns
    (lifter, metrics dict, history).
    """
    import numpy as np
    import torch

    from pose import lifting
    from pose.lifting import data as lift_data
    from pose.metrics import evaluate_predictions

    mode, p = config["mode"], dict(config["params"])
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    train_ps = lift_data.from_packed(config["train_dir"])
    test_ps = lift_data.from_packed(config["test_dir"])
    if test_ps.joints_3d is None:
        raise ValueError(f"{config['test_dir']}: test split has no 3D ground truth to evaluate against")
    cls = lifting.UnsupervisedConfig if mode == "unsupervised" else lifting.SupervisedConfig
    cfg = lifting.config_from_dict(cls, {k: v for k, v in p.items() if k not in _LOCAL_KEYS})
    if p.get("epochs"):
        n = len(train_ps) + sum(len(lift_data.load_2d_npz(f)) for f in p.get("extra_2d") or []
                                if mode == "unsupervised")
        cfg.iterations = max(1, math.ceil(float(p["epochs"]) * n / cfg.batch_size))
    norm = cfg.lifter.norm
    x_test, _, _ = lift_data.to_unit_space(test_ps, norm)
    flat = evaluate_predictions(lifting.flat_pose(x_test), test_ps.joints_3d, test_ps.action,
                                        test_ps.action_names)

    def eval_fn(G) -> dict[str, float]:
        r = _metrics(G, x_test, test_ps)
        return {"pa_mpjpe": r["pa_mpjpe"], "sign_agnostic_pa_mpjpe": r["sign_agnostic"]["pa_mpjpe"],
                "mpjpe_scaled": r["n_mpjpe"]}

    def log_fn(it: int, rec: dict) -> None:
        print(f"[lift {mode}] it {it}: " + ", ".join(f"{k} {v:.4g}" for k, v in rec.items()
                                                   if isinstance(v, float)), flush=True)

    t0 = time.time()
    if mode == "unsupervised":
        x_train, _, _ = lift_data.to_unit_space(lift_data.PoseSet(train_ps.joints_2d), norm)  # 2D only
        parts = [x_train]
        for path in p.get("extra_2d") or []:
            parts.append(lift_data.to_unit_space(lift_data.load_2d_npz(path), norm)[0])
        x_all = np.concatenate(parts)
        nxt = None
        if cfg.temporal:
            nxt = np.concatenate([lift_data.neighbour_index(train_ps),
                                  np.full(len(x_all) - len(x_train), -1, np.int64)])
        lifter, hist = lifting.train_unsupervised(x_all, cfg, next_index=nxt, eval_fn=eval_fn, log_fn=log_fn)
        n_train = len(x_all)
    else:
        if train_ps.joints_3d is None:
            raise ValueError(f"{config['train_dir']}: supervised lifting needs 3D ground truth")
        x_train, y_train, s3 = lift_data.to_unit_space(train_ps, norm)
        lifter, hist = lifting.train_supervised(x_train, y_train, cfg, eval_fn=eval_fn, log_fn=log_fn,
                                                unit_mm=float(np.mean(s3)))
        n_train = len(x_train)
    res = _metrics(lifter, x_test, test_ps)
    metrics = summarize(res, flat)
    metrics.update({"mode": mode, "train_count": int(n_train), "iterations": cfg.iterations,
                    "train_s": round(time.time() - t0, 1)})
    return lifter, metrics, hist


def train_func(config: dict[str, Any]) -> None:
    """Ray Train worker entry point: train, then report metrics with a checkpoint folder."""
    import ray.train

    from pose import lifting

    lifter, metrics, hist = run_training(config)
    with tempfile.TemporaryDirectory() as tmp:
        lifting.save_lifter(Path(tmp, "model.pt"), lifter, mode=config["mode"], params=_plain(config["params"]),
                            metrics={k: v for k, v in metrics.items() if isinstance(v, int | float)})
        Path(tmp, "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        Path(tmp, "curve.csv").write_text(_curve_csv(hist))
        ray.train.report({k: v for k, v in metrics.items() if isinstance(v, int | float | str)},
                         checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple | list) else v) for k, v in d.items()}


def _curve_csv(hist: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for rec in hist:
        keys += [k for k in rec if k not in keys and isinstance(rec[k], int | float)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for rec in hist:
        w.writerow(rec)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# driver side
def run_lift(args: argparse.Namespace) -> dict[str, Any]:
    """Validate inputs, train under Ray Train, publish outputs; returns the metrics dict."""
    from workflows.common import publish
    from workflows.config import load_config

    t_start = time.time()
    ray_env_defaults()
    root = project_root(args.root)
    cfg = load_config(args.config)
    params = resolve_params(args.mode, (cfg.get("lift") or {}).get(args.mode), cfg.get("seed", 0))
    if args.iterations is not None:
        if args.iterations < 1:
            raise UserError(f"--iterations must be >= 1, got {args.iterations}")
        params["iterations"] = args.iterations
        params["epochs"] = None
    if args.extra_2d:
        params["extra_2d"] = list(params["extra_2d"]) + list(args.extra_2d)
    data_dir = Path(args.data).resolve() if args.data else outputs_dir(root, "data", "packed")
    from pose.data.packed import read_meta

    for split in ("train", "test"):
        if not (data_dir / split / "meta.json").is_file():
            raise UserError(f"{data_dir / split}: no packed split (run `pose synth` + `pose prepare`, "
                            "or `python -m workflows.data`)")
        try:
            read_meta(data_dir / split)  # every array and shard present with its recorded size
        except (OSError, ValueError) as exc:
            raise UserError(str(exc)) from None
    extra = []
    for path in params["extra_2d"]:
        ps = Path(path) if Path(path).is_absolute() else root / path
        from pose.lifting.data import load_2d_npz

        try:
            load_2d_npz(ps)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        extra.append(str(ps))
    params["extra_2d"] = extra
    ray_cfg = cfg.get("ray") or {}
    cpus = float(ray_cfg.get("cpus_per_worker", 1.0) or 1.0)
    tc = {"mode": args.mode, "params": params, "train_dir": str(data_dir / "train"),
          "test_dir": str(data_dir / "test"), "threads": max(1, int(cpus))}

    from workflows.raytrain import run_train_job

    storage, local_storage = ray_storage(root)
    print(f"[lift {args.mode}] Ray Train: {params['iterations']} iterations, storage {storage}", flush=True)
    # one worker: the two-optimiser GAN loop is not data-parallel
    result = run_train_job(train_func, tc, what=f"lift {args.mode}", storage_path=storage, workers=1,
                           cpus_per_worker=cpus, name_prefix=f"lift-{args.mode}").result
    if result.checkpoint is None:
        raise UserError(f"lift {args.mode} reported no checkpoint (run folder {result.path})")
    out_dir = Path(args.out).resolve() if args.out else outputs_dir(root, "lift", args.mode)
    with result.checkpoint.as_directory() as ckdir:
        ckdir = Path(ckdir)
        metrics = json.loads((ckdir / "metrics.json").read_text())
        metrics.update({"run_name": Path(result.path).name, "wall_s": round(time.time() - t_start, 1)})
        publish({"model.pt": ckdir / "model.pt", "curve.csv": ckdir / "curve.csv",
                 "metrics.json": json.dumps(metrics, indent=2) + "\n"}, out_dir)
    if not ray_cfg.get("keep_runs", False) and local_storage:
        shutil.rmtree(result.path, ignore_errors=True)
    print(f"[lift {args.mode}] done in {metrics['wall_s']:.0f} s: P-MPJPE {metrics['pa_mpjpe']:.1f} mm "
          f"(sign-agnostic {metrics['sign_agnostic_pa_mpjpe']:.1f}, flat depth {metrics['flat_pa_mpjpe']:.1f}); "
          f"wrote {out_dir}", flush=True)
    return metrics


def main(argv: list[str] | None = None) -> int:
    return run_with_ray(run_lift, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(run_cli(main))
