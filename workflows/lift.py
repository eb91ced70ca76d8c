"""Train a 2D→3D lifter (supervised Martinez-style or unsupervised Chen et al.) as a Ray Train job.

    python -m workflows.lift --mode supervised|unsupervised [--config stages.yaml] [--root DIR]
                             [--data DIR] [--extra-2d NPZ ...] [--iterations N]

- Params: ``stages.yaml`` section ``lift.<mode>``, a flat mapping of what differs from the defaults
  of ``pose.lifting.UnsupervisedConfig``/``SupervisedConfig`` (and their ``LifterConfig``): any of
  their fields, ``epochs`` instead of ``iterations``, ``extra_2d``, and the drawn training poses'
  ``poses`` / ``limb_mix`` / ``subjects`` / ``noise_px`` / ``joint_jitter`` / ``mirror`` / ``limb_prior``
  (``pose.lifting.poses.draw_poses``); plus
  the global ``seed`` when the entry has none.
- Training data: ``poses`` 2D/3D pairs drawn from the embedded *training* clips by Human3.6M-like
  cameras (``pose.lifting.poses``; no images, seconds for 10⁵ poses). The unsupervised lifter reads
  **only their 2D** (plus ``--extra-2d`` / the ``extra_2d`` param: 2D-only ``.npz`` files of N×17×2).
- Evaluation (3D used here only): the packed test split ``<root>/outputs/data/packed/test``
  (``--data`` overrides the packed folder) and, unless ``data.real_test`` is null, the real-pose
  split ``<root>/outputs/data/real/packed/test`` (real Human3.6M poses), each against the flat-depth
  baseline on the same 2D.
- Ray: one ``TorchTrainer`` worker (the two-optimiser GAN loop is not data-parallel), a private
  local instance unless ``RAY_ADDRESS`` is set, and a fresh ``RunConfig`` name per run.
- Writes ``<root>/outputs/lift/<mode>/{model.pt, metrics.json, curve.csv}`` atomically. metrics.json
  has one record per split (``test``, ``real``): ``pa_mpjpe`` (P-MPJPE: per-pose similarity
  Procrustes, mm), ``mpjpe_scaled`` (N-MPJPE: root-aligned, scale-normalised, mm), ``flat_*`` (the
  flat-depth baseline), ``ratio_to_flat`` / ``n_ratio_to_flat`` (model ÷ flat), ``sign_agnostic_*``
  (the better global depth sign, labelled separately) and ``per_action`` tables.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pose import lifting
from pose.data.packed import file_digest
from pose.lifting import data as lift_data
from pose.lifting.poses import draw_poses
from pose.metrics import evaluate_predictions
from workflows.checkpoints import CheckpointStore
from workflows.common import (
    MAKE_PACKED,
    MAKE_REAL,
    UserError,
    outputs_dir,
    project_root,
    publish,
    ray_env_defaults,
    ray_storage,
    require_packed,
    run_cli,
    run_with_ray,
)
from workflows.config import load_config
from workflows.console import quiet_ray, verbose_from_env
from workflows.raytrain import run_train_job
from workflows.runs import RunInUse, code_digest, fingerprint, open_run, remove_run_dir, run_name

MODES = ("supervised", "unsupervised")
#: keys of ``lift.<mode>`` handled here rather than by the lifting configs: ``extra_2d`` (list of
#: 2D-only .npz files), ``epochs`` (if set, overrides ``iterations`` with
#: ``ceil(epochs · N_train / batch_size)``), ``cpus`` (the CPUs the lift's one Ray worker asks for and
#: its torch threads; null = ``ray.cpus_per_worker``: the lift stages run alone, so one worker may
#: take what a training stage's workers take together), the drawn training poses (:data:`_POSE_KEYS`);
#: ``eval_every`` and ``seed`` are the configs' own fields with the workflow's defaults (held-out
#: metrics every 1000 iterations; the global seed).
_WORKFLOW_DEFAULTS: dict[str, Any] = {"extra_2d": [], "epochs": None, "eval_every": 1000, "seed": None, "cpus": None,
                                      "poses": 200_000, "limb_mix": 0.5, "subjects": 200, "noise_px": 0.0,
                                      "joint_jitter": True, "mirror": 0.0, "limb_prior": 0.0}
#: keys of the drawn training poses: ``pose.lifting.poses.draw_poses``'s n, limb_mix, subjects,
#: noise_px, joint_jitter, mirror, limb_prior
_POSE_KEYS = ("poses", "limb_mix", "subjects", "noise_px", "joint_jitter", "mirror", "limb_prior")
_LOCAL_KEYS = ("extra_2d", "epochs", "cpus", *_POSE_KEYS)
#: evaluation splits: name → folder under outputs/data
SPLITS = {"test": ("packed", "test"), "real": ("real", "packed", "test")}
#: iterations between a lift run's checkpoints (a killed lift resumes from the last one)
CHECKPOINT_EVERY = 500


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="python -m workflows.lift", description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=MODES, required=True, help="supervised (uses 3D) or unsupervised (2D only)")
    p.add_argument("--config", default="stages.yaml", help="configuration file (default: %(default)s)")
    p.add_argument("--root", default=None, help="project root for data and outputs (default: $POSE_ROOT or cwd)")
    p.add_argument("--data", default=None, help="prepared data folder whose test/ is evaluated "
                   "(default: <root>/outputs/data/packed)")
    p.add_argument("--extra-2d", nargs="*", default=None, help="extra 2D-only pose files (.npz, N×17×2) "
                   "for the unsupervised lifter")
    p.add_argument("--iterations", type=int, default=None, help="override lift.<mode>.iterations")
    p.add_argument("--out", default=None, help="output folder (default: <root>/outputs/lift/<mode>)")
    p.add_argument("--fresh", action="store_true",
                   help="discard the checkpoints of an earlier run of the same configuration and start over")
    p.add_argument("--verbose", action="store_true", default=None,
                   help="also show Ray's own lines (default: only in outputs/logs/lift_<mode>.log; or POSE_VERBOSE=1)")
    return p


def _check_pose_keys(mode: str, p: dict[str, Any]) -> None:
    """The drawn-pose keys of ``lift.<mode>``: a UserError naming the bad one."""
    checks = {"poses": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
              "subjects": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
              "limb_mix": (lambda v: isinstance(v, int | float) and 0 <= v <= 1, "a number in [0, 1]"),
              "mirror": (lambda v: isinstance(v, int | float) and 0 <= v <= 1, "a number in [0, 1]"),
              "limb_prior": (lambda v: isinstance(v, int | float) and 0 <= v <= 1, "a number in [0, 1]"),
              "noise_px": (lambda v: isinstance(v, int | float) and v >= 0, "a number >= 0")}
    for key, (ok, what) in checks.items():
        if isinstance(p[key], bool) or not ok(p[key]):
            raise UserError(f"lift.{mode}.{key}: must be {what}, got {p[key]!r}")
    if not isinstance(p["joint_jitter"], bool):
        raise UserError(f"lift.{mode}.joint_jitter: must be true or false, got {p['joint_jitter']!r}")


def resolve_params(mode: str, params: dict[str, Any] | None, global_seed: int = 0) -> dict[str, Any]:
    """Defaults of ``mode`` overridden by ``params`` (the ``lift.<mode>`` entry); validates the keys."""
    if mode not in MODES:
        raise UserError(f"mode: expected one of {MODES}, got {mode!r}")
    cls = lifting.UnsupervisedConfig if mode == "unsupervised" else lifting.SupervisedConfig
    base = dataclasses.asdict(cls())
    out = {**base.pop("lifter"), **base, **_WORKFLOW_DEFAULTS, **(params or {})}  # flat, as in stages.yaml
    if out["cpus"] is not None and (isinstance(out["cpus"], bool) or not isinstance(out["cpus"], int) or out["cpus"] < 1):
        raise UserError(f"lift.{mode}.cpus: must be an integer >= 1 or null, got {out['cpus']!r}")
    if out["epochs"] is not None and not (isinstance(out["epochs"], int | float) and out["epochs"] > 0):
        raise UserError(f"lift.{mode}.epochs: must be a number > 0 or null, got {out['epochs']!r}")
    _check_pose_keys(mode, out)
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
def flat_baseline(ps, norm: str) -> tuple[Any, dict[str, Any]]:
    """A pose set with 3D (``pose.lifting.data.PoseSet``) in unit space of ``norm`` and the flat-depth
    baseline on it → (unit-space 2D (N, 17, 2), ``evaluate_predictions`` result); computed once per
    split, whatever the number of evaluations."""
    x, _, _ = lift_data.to_unit_space(ps, norm)
    return x, evaluate_predictions(lifting.flat_pose(x), ps.joints_3d, sign_agnostic=False)


def evaluate_lifter(lifter, ps, x, flat: dict[str, Any]) -> dict[str, Any]:
    """A lifter on a pose set with 3D and its :func:`flat_baseline` ``(x, flat)``: :func:`summarize`
    of its predictions against the flat-depth baseline on the same 2D."""
    res = evaluate_predictions(lifting.predict_3d(lifter, x), ps.joints_3d, ps.action, ps.action_names)
    return summarize(res, flat)


def summarize(res: dict[str, Any], flat: dict[str, Any]) -> dict[str, Any]:
    """Flat metrics record from two ``evaluate_predictions`` results (model, flat baseline)."""
    sa = res["sign_agnostic"]
    out = {
        "pa_mpjpe": res["pa_mpjpe"],
        "mpjpe_scaled": res["n_mpjpe"],
        "flat_pa_mpjpe": flat["pa_mpjpe"],
        "flat_mpjpe_scaled": flat["n_mpjpe"],
        "ratio_to_flat": res["pa_mpjpe"] / max(flat["pa_mpjpe"], 1e-9),
        "n_ratio_to_flat": res["n_mpjpe"] / max(flat["n_mpjpe"], 1e-9),
        "sign_agnostic_pa_mpjpe": sa["pa_mpjpe"],
        "sign_agnostic_mpjpe_scaled": sa["n_mpjpe"],
        "sign_agnostic_flipped": sa["flipped"],
        "test_count": res["count"],
    }
    if "per_action" in res:
        out["per_action"] = {
            "pa_mpjpe": res["per_action"]["pa_mpjpe"],
            "mpjpe_scaled": res["per_action"]["n_mpjpe"],
            "sign_agnostic_pa_mpjpe": res["per_action"]["sign_agnostic_pa_mpjpe"],
        }
    return out


def training_poses(mode: str, p: dict[str, Any], temporal: bool = False):
    """The drawn training poses of resolved params ``p`` (``pose.lifting.poses.draw_poses``) and, for
    the unsupervised lifter, the ``extra_2d`` files' 2D-only poses → (PoseSet, list of extra sets)."""
    drawn = draw_poses(int(p["poses"]), seed=int(p["seed"]), limb_mix=float(p["limb_mix"]),
                       subjects=int(p["subjects"]), noise_px=float(p["noise_px"]),
                       joint_jitter=bool(p["joint_jitter"]), temporal=temporal, mirror=float(p["mirror"]),
                       limb_prior=float(p["limb_prior"]))
    extra = [lift_data.load_2d_npz(f) for f in p.get("extra_2d") or []] if mode == "unsupervised" else []
    return drawn, extra


def run_training(config: dict[str, Any], checkpointing: lifting.Checkpointing | None = None
                 ) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """Draw poses, train, evaluate (pure Python; used by the Ray worker and by tests).

    ``config``: ``mode``, ``params`` (resolved), ``splits`` ({name: packed split folder}, evaluated).
    ``checkpointing``: how training saves and resumes (``pose.lifting.Checkpointing``).
    Returns (lifter, metrics dict with one record per split, history).
    """
    mode, p = config["mode"], dict(config["params"])
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    evals = {}
    for name, split in config["splits"].items():
        ps = lift_data.from_packed(split)
        if ps.joints_3d is None:
            raise ValueError(f"{split}: split has no 3D ground truth to evaluate against")
        evals[name] = ps
    cls = lifting.UnsupervisedConfig if mode == "unsupervised" else lifting.SupervisedConfig
    cfg = lifting.config_from_dict(cls, {k: v for k, v in p.items() if k not in _LOCAL_KEYS})
    t0 = time.time()
    drawn, extra = training_poses(mode, p, temporal=mode == "unsupervised" and cfg.temporal)
    n_train = len(drawn) + sum(len(e) for e in extra)
    if p.get("epochs"):
        cfg.iterations = max(1, math.ceil(float(p["epochs"]) * n_train / cfg.batch_size))
    norm = cfg.lifter.norm
    baselines = {name: flat_baseline(ps, norm) for name, ps in evals.items()}
    print(f"[lift {mode}] {len(drawn)} training poses drawn in {time.time() - t0:.1f} s"
          + (f" (+{n_train - len(drawn)} extra 2D)" if extra else ""), flush=True)

    def eval_fn(G) -> dict[str, float]:
        out = {}
        for name, ps in evals.items():
            r = evaluate_lifter(G, ps, *baselines[name])
            out.update({f"{name}_pa_mpjpe": r["pa_mpjpe"], f"{name}_ratio_to_flat": r["ratio_to_flat"]})
        return out

    def log_fn(it: int, rec: dict) -> None:
        print(f"[lift {mode}] it {it}: " + ", ".join(f"{k} {v:.4g}" for k, v in rec.items()
                                                   if isinstance(v, float)), flush=True)

    t0 = time.time()
    if mode == "unsupervised":
        parts = [lift_data.to_unit_space(lift_data.PoseSet(drawn.joints_2d), norm)[0]]  # 2D only
        parts += [lift_data.to_unit_space(e, norm)[0] for e in extra]
        x_all = np.concatenate(parts)
        nxt = None
        if cfg.temporal:
            nxt = np.concatenate([lift_data.neighbour_index(drawn), np.full(len(x_all) - len(drawn), -1, np.int64)])
        lifter, hist = lifting.train_unsupervised(x_all, cfg, next_index=nxt, eval_fn=eval_fn, log_fn=log_fn,
                                                  checkpointing=checkpointing)
    else:
        x_train, y_train, s3 = lift_data.to_unit_space(drawn, norm)
        lifter, hist = lifting.train_supervised(x_train, y_train, cfg, eval_fn=eval_fn, log_fn=log_fn,
                                                unit_mm=float(np.mean(s3)), checkpointing=checkpointing)
    metrics: dict[str, Any] = {name: evaluate_lifter(lifter, ps, *baselines[name]) for name, ps in evals.items()}
    metrics.update({"mode": mode, "train_count": int(n_train), "iterations": cfg.iterations,
                    "train_s": round(time.time() - t0, 1)})
    return lifter, metrics, hist


def _store_checkpoint(store: CheckpointStore, it: int, lifter: Any, state: dict[str, Any], history: list[dict],
                      params: dict[str, Any], info: dict[str, Any]) -> None:
    """One lift checkpoint: the lifter (``model.pt``), the training state, the curve so far."""
    with tempfile.TemporaryDirectory(prefix="c2f-lift-") as tmp:
        lifting.save_lifter(Path(tmp, "model.pt"), lifter, params=_plain(params), **info.get("model", {}))
        torch.save(state, Path(tmp, "train_state.pt"))
        Path(tmp, "curve.csv").write_text(_curve_csv(history))
        store.save(it, tmp, {k: v for k, v in info.items() if k != "model"})


def train_func(config: dict[str, Any]) -> None:
    """Ray Train worker entry point: resume from the run's newest checkpoint (if any), train with a
    checkpoint every ``config["checkpoint_every"]`` iterations (:data:`CHECKPOINT_EVERY`), store the
    final one (with the metrics), report the numbers."""
    store = CheckpointStore(config["run_dir"])
    ckpt, _ = store.scan()
    state = None
    if ckpt is not None:
        with store.open(ckpt) as d:
            state = torch.load(Path(d, "train_state.pt"), map_location="cpu", weights_only=False)
        print(f"[lift {config['mode']}] resumed at iteration {state['iteration']}", flush=True)
    p = config["params"]

    def save(it: int, st: dict[str, Any], lifter: Any) -> None:
        _store_checkpoint(store, it, lifter, st, st["history"], p, {"final": False})

    ck = lifting.Checkpointing(every=int(config["checkpoint_every"]), save=save, state=state)
    lifter, metrics, hist = run_training(config, ck)
    numbers = _numbers(metrics)
    _store_checkpoint(store, int(metrics["iterations"]), lifter, {"iteration": int(metrics["iterations"])}, hist, p,
                      {"final": True, "metrics": metrics, "model": {"mode": config["mode"], "metrics": numbers}})
    import ray.train  # a worker has Ray; imported at the top it would set up its loggers before quiet_ray

    ray.train.report(numbers)


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics dict, one level of split records flattened (``test_pa_mpjpe``)."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out.update({f"{k}_{kk}": vv for kk, vv in v.items() if isinstance(vv, int | float)})
        elif isinstance(v, int | float):
            out[k] = v
    return out


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
def _lift_config(args: argparse.Namespace, cfg: dict[str, Any], root: Path) -> dict[str, Any]:
    """The worker's config (mode, resolved params, evaluated splits, threads), inputs checked."""
    params = resolve_params(args.mode, (cfg.get("lift") or {}).get(args.mode), cfg.get("seed", 0))
    if args.iterations is not None:
        if args.iterations < 1:
            raise UserError(f"--iterations must be >= 1, got {args.iterations}")
        params["iterations"] = args.iterations
        params["epochs"] = None
    if args.extra_2d:
        params["extra_2d"] = list(params["extra_2d"]) + list(args.extra_2d)
    data_dir = Path(args.data).resolve() if args.data else outputs_dir(root, "data", "packed")
    splits = {"test": data_dir / "test"}
    if (cfg.get("data") or {}).get("real_test") is not None:
        splits["real"] = outputs_dir(root, "data", *SPLITS["real"])
    for name, split in splits.items():
        require_packed(split, MAKE_REAL if name == "real" else MAKE_PACKED)
    extra = []
    for path in params["extra_2d"]:
        ps = Path(path) if Path(path).is_absolute() else root / path
        try:
            lift_data.load_2d_npz(ps)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        extra.append(str(ps))
    params["extra_2d"] = extra
    return {"mode": args.mode, "params": params, "splits": {k: str(v) for k, v in splits.items()},
            "threads": lift_cpus(params, cfg), "checkpoint_every": CHECKPOINT_EVERY}


def lift_cpus(params: dict[str, Any], cfg: dict[str, Any]) -> int:
    """CPUs (and torch threads) of the lift's one worker: ``lift.<mode>.cpus``, else ``ray.cpus_per_worker``."""
    return int(params["cpus"]) if params.get("cpus") else max(1, int(float(cfg["ray"]["cpus_per_worker"])))


def _identity(tc: dict[str, Any]) -> dict[str, Any]:
    """What decides a lift run's result: mode, params, the evaluated splits' data, the code."""
    return {"mode": tc["mode"], "params": _plain(tc["params"]), "threads": tc["threads"],
            "splits": {k: file_digest(Path(v, "meta.json")) for k, v in tc["splits"].items()},
            "extra_2d": [file_digest(f) for f in tc["params"]["extra_2d"]], "code_sha256": code_digest()}


def run_lift(args: argparse.Namespace) -> dict[str, Any]:
    """Validate inputs, train under Ray Train (resuming the run of the same identity), publish outputs;
    returns the metrics dict."""
    t_start = time.time()
    ray_env_defaults()
    root = project_root(args.root)
    cfg = load_config(args.config)
    tc = _lift_config(args, cfg, root)
    storage, _ = ray_storage(root)
    name = run_name(f"lift_{args.mode}", fingerprint(_identity(tc)))
    run_dir = tc["run_dir"] = f"{storage.rstrip('/')}/{name}"
    tag = f"[lift {args.mode}]"
    out_dir = Path(args.out).resolve() if args.out else outputs_dir(root, "lift", args.mode)
    try:
        with open_run(run_dir, fresh=args.fresh, tag=tag) as (store, ckpt):
            where = f"iteration {ckpt.iteration} of run {name}" if ckpt else f"run {name}"
            print(f"{tag} {'resuming from' if ckpt else 'starting'} {where}: {tc['params']['iterations']} "
                  f"iterations" + (f"; Ray's messages in {args.ray_log}" if getattr(args, "ray_log", None) else ""),
                  flush=True)
            if ckpt is None or not ckpt.manifest.get("final"):
                # one worker: the two-optimiser GAN loop is not data-parallel
                run_train_job(train_func, tc, what=f"lift {args.mode}", storage_path=f"{run_dir}/ray", workers=1,
                              cpus_per_worker=float(tc["threads"]),
                              max_failures=int(cfg["ray"]["max_failures"]), name_prefix=f"lift-{args.mode}",
                              on_failure=lambda: f"the same command resumes run {name} from its last checkpoint")
                ckpt, _ = store.scan()
            if ckpt is None or not ckpt.manifest.get("final"):
                raise UserError(f"lift {args.mode}: run {name} ended without a final checkpoint (run folder {run_dir})")
            metrics = dict(ckpt.manifest["metrics"], run_name=name, wall_s=round(time.time() - t_start, 1))
            with store.open(ckpt) as ckdir:
                publish({"model.pt": ckdir / "model.pt", "curve.csv": ckdir / "curve.csv",
                         "metrics.json": json.dumps(metrics, indent=2) + "\n"}, out_dir)
    except RunInUse as exc:
        raise UserError(f"lift {args.mode}: {exc}: another `lift --mode {args.mode}` of the same configuration "
                        "is running (wait for it, or stop it)") from None
    if not cfg["ray"]["keep_runs"]:
        remove_run_dir(run_dir)
    figures = "; ".join(f"{s} P-MPJPE {metrics[s]['pa_mpjpe']:.1f} mm vs flat depth "
                        f"{metrics[s]['flat_pa_mpjpe']:.1f} ({metrics[s]['ratio_to_flat']:.2f}x)" for s in tc["splits"])
    print(f"{tag} done in {metrics['wall_s']:.0f} s: {figures}; wrote {out_dir}", flush=True)
    return metrics


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbose = verbose_from_env() if args.verbose is None else args.verbose
    log = outputs_dir(project_root(args.root), "logs", f"lift_{args.mode}.log")
    with contextlib.nullcontext(None) if verbose else quiet_ray(log) as shown_log:
        args.ray_log = shown_log
        return run_with_ray(run_lift, args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
