"""Ray Tune sweep of one curriculum stage's 3D:2D loss ratio and heatmap2 init std, tracked in wandb.

    python -m workflows.tune --d2 16 --num-samples 8 [--config stages.yaml] [--max-concurrent 2]
                             [--epochs E] [--num-workers 1] [--use-gpu] [--wandb-mode offline]
    python -m workflows.tune --d2 16 --apply [--best FILE] [--config stages.yaml]

Every trial is a Ray Train run of the stage (``workflows.train_loop.train_func`` under a
``TorchTrainer``) that starts from the previous stage's checkpoint, exactly as
``workflows/stage.py`` does, with the sampled ``ratio_3d`` / ``heatmap2_std`` (/ ``lr``) merged
into its config. The search space, budget and ASHA settings come from the ``tune:`` section of
stages.yaml; flags override the budget. ASHA stops poor trials early on the validation MPJPE.
The trials are drawn by a seeded searcher (``tune.searcher``: Tune's random search, or Optuna's
TPE through Tune's ``OptunaSearch``; ``tune.seed``), so the same sweep samples the same trials.

Tracking: the driver-side ``WandbLoggerCallback`` records each trial's config and per-epoch
metrics as its own wandb run, all runs of one sweep in one group (``tune-d2_16-<time>``) of the
project from ``wandb.project``. Offline by default (runs under ``outputs/wandb/wandb/``; upload
later with ``wandb sync outputs/wandb/wandb/offline-run-*``); ``--wandb-mode online`` with an API
key logs live. Trials stopped early keep their history (the callback runs in the driver).

Results: ``outputs/tune/<stage>/best_params.json`` (best trial's parameters and metric, every
trial's, and the searcher and seed that drew them), ``trials.csv`` and ``trials.png`` (its title
names the searcher and seed). ``--apply`` writes the best parameters into that
stage's entry of stages.yaml (comments and the other entries untouched), so the next
``dvc repro`` retrains that stage and the ones after it with them.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from workflows.common import (
    UserError,
    check_capacity,
    init_ray,
    outputs_dir,
    project_root,
    ray_env_defaults,
    ray_storage,
    require_packed,
    run_cli,
    run_with_ray,
)
from workflows.config import SEARCH_PARAMS, load_config, stage_key
from workflows.raytrain import start_board, torch_trainer
from workflows.runs import fingerprint, remove_run_dir, run_identity, run_name
from workflows.stage import build_stage_run, check_inputs
from workflows.stage_run import StageRun
from workflows.train_loop import train_func
from workflows.tune_workarounds import (
    LEDGER_NAMESPACE,
    START_RETRIES,
    WANDB_FLUSH_TIMEOUT_S,
    PlacementGroupLedger,
    SweepStalled,
    find_cause,
    flushing_wandb_callback,
    register_placement_group,
    release_callback,
    stall_watchdog,
    use_callbacks,
)

EPILOG = """\
search space and budget: the tune: section of the config, e.g.
  tune:
    stage: d2_16                 # stage tuned when --d2 is not given
    metric: val_mpjpe            # per-epoch validation MPJPE (mm), minimised
    num_samples: 8               # trials (--num-samples)
    max_concurrent: 2            # trials at once (--max-concurrent)
    epochs: null                 # epochs per trial = ASHA max_t (--epochs; null: the stage's budget
                                 # in whole epochs)
    search: {ratio_3d: {dist: loguniform, lo: 0.1, hi: 10.0},
             heatmap2_std: {dist: loguniform, lo: 1.0e-4, hi: 1.0e-2}}   # also lr; dist uniform|choice
    asha: {grace_period: 1, reduction_factor: 2}
    searcher: random             # or optuna: Optuna's TPE (model-based) after random start-up trials
    seed: null                   # the searcher's seed (null: the top-level seed); same seed, same trials

needs: prepared data (<root>/outputs/data/packed or --data) and the previous stage's checkpoint
(<root>/outputs/stages/<init>/model.pt, from `dvc repro train@<init>` or workflows/stage.py).

writes: <root>/outputs/tune/d2_XX/{best_params.json, trials.csv, trials.png}; Ray runs under
<root>/outputs/ray (or $POSE_STORAGE_PATH); wandb runs, one per trial, in one group per sweep, under
<root>/outputs/wandb/wandb/offline-run-* (upload: wandb sync <root>/outputs/wandb/wandb/offline-run-*).

examples:
  python -m workflows.tune --d2 16 --num-samples 8
  python -m workflows.tune --d2 16 --apply            # best parameters -> train.d2_16 of stages.yaml
  dvc repro                                           # retrains d2_16 and the stages after it
  ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
      python -m workflows.tune --d2 16 --root $PWD    # on a running cluster (RAY_ADDRESS is set there)
"""


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(
        prog="python -m workflows.tune",
        description="Ray Tune sweep (ASHA early stopping on val_mpjpe) of one curriculum stage's 3D:2D loss\n"
        "ratio and heatmap2 init std (and lr if listed). Each trial is a Ray Train run of the stage\n"
        "started from the previous stage's checkpoint, tracked in wandb (offline by default).\n"
        "--apply writes the best parameters into that stage's entry of stages.yaml.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--d2", type=int, default=None,
                   help="depth resolution of the stage to tune, key train.d2_XX (default: tune.stage of the config)")
    p.add_argument("--config", default="stages.yaml", help="configuration file (default: %(default)s)")
    p.add_argument("--num-samples", type=int, default=None, help="number of trials (default: tune.num_samples)")
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="trials run at once (default: tune.max_concurrent)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per trial, also ASHA's max_t (default: tune.epochs, else the stage's budget "
                        "rounded up to whole epochs)")
    p.add_argument("--num-workers", type=int, default=1, help="Ray Train workers per trial (default: 1)")
    gpu = p.add_mutually_exclusive_group()
    gpu.add_argument("--use-gpu", dest="use_gpu", action="store_true", default=None, help="one GPU per worker")
    gpu.add_argument("--no-gpu", dest="use_gpu", action="store_false", help="CPU workers")
    p.add_argument("--wandb-mode", choices=("offline", "online", "disabled"), default=None,
                   help="wandb tracking of the trials (default: wandb.mode of stages.yaml, offline)")
    p.add_argument("--root", default=None, help="project root for data and outputs (default: $POSE_ROOT or cwd)")
    p.add_argument("--data", default=None, help="prepared data folder with train/ and test/ "
                   "(default: <root>/outputs/data/packed)")
    p.add_argument("--apply", action="store_true",
                   help="do not sweep: write the best parameters of a finished sweep into stages.yaml")
    p.add_argument("--best", default=None,
                   help="best-parameters file for --apply (default: <root>/outputs/tune/d2_XX/best_params.json)")
    p.add_argument("--resume", action="store_true",
                   help="require an earlier sweep of the same settings to resume (without it, one is resumed\n"
                   "when there is one, else a new sweep starts)")
    p.add_argument("--fresh", action="store_true",
                   help="discard an earlier sweep of the same settings (its trials and checkpoints) and start over")
    p.add_argument("--stall-timeout", type=float, default=None, metavar="S",
                   help="abort the sweep with an error when no trial has started, reported or ended for S\n"
                   "seconds (default: no limit; set it above the longest epoch)")
    return p


# --------------------------------------------------------------------------------------------
# search space
def search_space(search: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Ray Tune param_space from the validated ``tune.search`` mapping."""
    from ray import tune

    if not search:
        raise UserError("tune.search is empty: give at least one of " + ", ".join(SEARCH_PARAMS))
    space: dict[str, Any] = {}
    for name, sp in search.items():
        if sp["dist"] == "loguniform":
            space[name] = tune.loguniform(sp["lo"], sp["hi"])
        elif sp["dist"] == "uniform":
            space[name] = tune.uniform(sp["lo"], sp["hi"])
        else:
            space[name] = tune.choice(list(sp["values"]))
    return space


#: searchers of ``tune.searcher``
SEARCHERS = ("random", "optuna")


def tpe_startup_trials(num_samples: int) -> int:
    """Trials Optuna's TPE draws at random before its model proposes: half the sweep, 1 to 10 (Optuna's
    own default, 10, would leave a sweep of 8 or fewer purely random)."""
    return max(1, min(10, int(num_samples) // 2))


def make_searcher(name: str, seed: int, max_concurrent: int, num_samples: int):
    """The sweep's search algorithm, seeded: the same sweep samples the same trials.

    ``random``: Tune's random search (``BasicVariantGenerator(random_state=seed)``; the samples do not
    depend on the results). ``optuna``: Optuna's TPE sampler (``TPESampler(seed=seed)``, model-based
    after :func:`tpe_startup_trials` random ones) through Tune's ``OptunaSearch``, under a
    ``ConcurrencyLimiter``; its proposals depend on the results it was told, so two sweeps propose
    the same trials when their results arrive in the same order (always with ``max_concurrent: 1``).
    Metric and mode come from the ``TuneConfig``.
    """
    if name == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=int(seed), max_concurrent=int(max_concurrent))
    if name == "optuna":
        import optuna
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # not one INFO line per trial
        sampler = optuna.samplers.TPESampler(seed=int(seed), n_startup_trials=tpe_startup_trials(num_samples))
        return ConcurrencyLimiter(OptunaSearch(sampler=sampler), max_concurrent=int(max_concurrent))
    raise UserError(f"tune.searcher: must be one of {list(SEARCHERS)}, got {name!r}")


# --------------------------------------------------------------------------------------------
# sweep
def _stage_epochs(run: StageRun) -> int:
    """A trial's epochs when neither ``--epochs`` nor ``tune.epochs`` says: the stage's own, or its
    ``iterations`` rounded up to whole epochs (ASHA compares trials at epoch ends)."""
    st = run.settings
    if st.epochs:
        return int(st.epochs)
    n_train = int(require_packed(Path(run.data.train_dir))["count"])
    if run.data.train_limit:
        n_train = min(n_train, int(run.data.train_limit))
    return math.ceil(int(st.iterations) / max(1, n_train // int(st.batch_size)))


@dataclass
class _Sweep:
    """What one sweep runs: the stage's base run (every trial's, before its samples), the search,
    the budget and the sweep's name (its identity: the same sweep again resumes it)."""

    key: str
    base: StageRun
    tcfg: dict[str, Any]
    space: dict[str, Any]
    num_samples: int
    max_conc: int
    epochs: int
    searcher: str
    search_seed: int
    use_gpu: bool
    mode: str
    name: str
    max_failures: int


def _plan(args: argparse.Namespace, cfg: dict[str, Any], root: Path) -> _Sweep:
    """Check the flags and the ``tune:`` section, build the base run and name the sweep."""
    key = _stage(cfg, args)
    tcfg = cfg.get("tune") or {}
    if not tcfg:
        raise UserError(f"{args.config}: tune: section missing (search space, num_samples, asha)")
    num_samples = tcfg["num_samples"] if args.num_samples is None else args.num_samples
    max_conc = tcfg["max_concurrent"] if args.max_concurrent is None else args.max_concurrent
    for flag, v in (("--num-samples", num_samples), ("--max-concurrent", max_conc), ("--epochs", args.epochs),
                    ("--num-workers", args.num_workers), ("--stall-timeout", args.stall_timeout)):
        if v is not None and v < 1:
            raise UserError(f"{flag} must be >= 1, got {v}")
    use_gpu = bool(cfg["ray"]["use_gpu"] if args.use_gpu is None else args.use_gpu)
    base = build_stage_run(cfg, key, root, data_dir=Path(args.data).resolve() if args.data else None, wandb=False)
    check_inputs(base)  # data present, previous checkpoint present and of the same model size
    epochs = int(args.epochs or tcfg.get("epochs") or _stage_epochs(base))
    base = base.replace(settings=base.settings.with_overrides({"epochs": epochs}))
    searcher = tcfg["searcher"]
    search_seed = cfg["seed"] if tcfg["seed"] is None else tcfg["seed"]
    sweep_id = fingerprint({
        "run": run_identity(base, args.num_workers, use_gpu), "search": tcfg["search"],
        "num_samples": num_samples, "max_concurrent": max_conc, "epochs": epochs, "asha": tcfg["asha"],
        "metric": tcfg["metric"], "mode": tcfg["mode"], "searcher": searcher, "search_seed": search_seed,
    })
    per_worker = _worker_resources(base.cpus_per_worker, use_gpu)
    check_capacity({"CPU": _TRIAL_CPU + args.num_workers * per_worker["CPU"],
                    "GPU": args.num_workers * per_worker.get("GPU", 0.0)},
                   f"a trial of {key} ({args.num_workers} worker(s))")
    return _Sweep(key=key, base=base.replace(fingerprint=sweep_id), tcfg=tcfg,
                  space=search_space(tcfg.get("search") or {}), num_samples=num_samples, max_conc=max_conc,
                  epochs=epochs, searcher=searcher, search_seed=search_seed, use_gpu=use_gpu,
                  mode=args.wandb_mode or cfg["wandb"]["mode"], name=run_name(f"tune-{key}", sweep_id),
                  max_failures=int(cfg["ray"]["max_failures"]))


def _tuner(sw: _Sweep, trainable: Any, callbacks: list[Any], storage: str, sweep_dir: str, resume: bool) -> Any:
    """The sweep's ``tune.Tuner``: restored from ``sweep_dir`` when it holds this sweep (finished trials
    kept; unfinished and failed ones run again, each from its own checkpoints; the searcher and ASHA
    continue from their saved state), else a new one."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    restorable = tune.Tuner.can_restore(sweep_dir)
    if resume and not restorable:
        raise UserError(f"--resume: no sweep {sw.name} under {storage} to resume (it is named by its settings: "
                        "the same stages.yaml, data and flags; without --resume a new sweep starts)")
    if restorable:
        tuner = tune.Tuner.restore(sweep_dir, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                   param_space=sw.space)
        use_callbacks(tuner, callbacks)
        print(f"[tune {sw.key}] resuming sweep {sw.name} (finished trials kept, the others resume from their "
              "last checkpoint; --fresh starts over)", flush=True)
        return tuner
    tc = sw.tcfg
    asha = ASHAScheduler(time_attr="epoch", max_t=sw.epochs,  # the epoch, not Tune's report count: restarts keep it
                         grace_period=min(int(tc["asha"]["grace_period"]), sw.epochs),
                         reduction_factor=float(tc["asha"]["reduction_factor"]))
    print(f"[tune {sw.key}] starting sweep {sw.name}", flush=True)
    return tune.Tuner(
        trainable,
        param_space=sw.space,
        # the searcher limits the trials at once itself (max_concurrent_trials stays unset)
        tune_config=tune.TuneConfig(metric=tc["metric"], mode=tc["mode"], num_samples=sw.num_samples,
                                    search_alg=make_searcher(sw.searcher, sw.search_seed, sw.max_conc, sw.num_samples),
                                    scheduler=asha),
        run_config=tune.RunConfig(name=sw.name, storage_path=storage, callbacks=callbacks, verbose=1,
                                  # a trial whose Ray Train run failed (after its own restarts) runs
                                  # again from its last checkpoint
                                  failure_config=tune.FailureConfig(max_failures=sw.max_failures)),
    )


def _callbacks(sw: _Sweep, cfg: dict[str, Any], ledger_name: str, wandb_dir: Path, stall_timeout: float | None
               ) -> list[Any]:
    """The driver's Tune callbacks: placement-group release, the stall watchdog, one wandb run per trial."""
    callbacks: list[Any] = [release_callback(ledger_name)]
    if stall_timeout:
        callbacks.append(stall_watchdog(float(stall_timeout)))
    if sw.mode != "disabled":
        callbacks.append(flushing_wandb_callback(
            project=cfg["wandb"]["project"], group=sw.name, entity=cfg["wandb"]["entity"], mode=sw.mode,
            dir=str(wandb_dir), log_config=True, job_type=f"tune-{sw.key}",
            excludes=["checkpoint_dir_name", "should_checkpoint"],
            resume="allow",  # a resumed trial continues its wandb run (same id: the trial id)
            # offline: nothing to upload, so Ray need not wait its default 30 min for a trial's writer
            **({"upload_timeout": WANDB_FLUSH_TIMEOUT_S} if sw.mode == "offline" else {}),
        ))
    return callbacks


def run_sweep(args: argparse.Namespace) -> dict[str, Any]:
    """Run (or resume) the sweep ``args`` describes; write its results; returns the summary."""
    t0 = time.time()
    ray_env_defaults()
    root = project_root(args.root)
    cfg = load_config(args.config)
    sw = _plan(args, cfg, root)
    storage, _ = ray_storage(root)
    sweep_dir = f"{storage.rstrip('/')}/{sw.name}"
    if args.fresh:
        remove_run_dir(sweep_dir)
    wandb_dir = outputs_dir(root, "wandb")
    wandb_dir.mkdir(parents=True, exist_ok=True)
    env = {"WANDB_MODE": sw.mode, "WANDB_DIR": str(wandb_dir), "WANDB_SILENT": "true",
           # worker start-up (a fresh process importing torch) can pass Ray's 60 s on a loaded machine
           "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": os.environ.get("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")}
    os.environ.update(env)
    init_ray(env_vars=env)

    import ray
    from ray import tune

    ledger_name = f"pg-ledger-{sw.name}"
    ledger = ray.remote(num_cpus=0)(PlacementGroupLedger).options(  # noqa: F841 - held while the sweep runs
        name=ledger_name, namespace=LEDGER_NAMESPACE).remote()
    trainable = tune.with_resources(_make_trainable(sw, sweep_dir, args.num_workers, ledger=ledger_name),
                                    {"CPU": _TRIAL_CPU})
    tuner = _tuner(sw, trainable, _callbacks(sw, cfg, ledger_name, wandb_dir, args.stall_timeout), storage,
                   sweep_dir, args.resume)
    key = sw.key
    print(f"[tune {key}] {sw.num_samples} trial(s), {sw.max_conc} at once, {sw.epochs} epoch(s) each, "
          f"{sw.searcher} search (seed {sw.search_seed}) of {', '.join(sw.space)}; wandb {sw.mode} group {sw.name}",
          flush=True)
    if "heatmap2_std" in sw.space and cfg["train"][key].get("heatmap2_init") == "upsample":
        print(f"[tune {key}] heatmap2_std is searched: trials re-initialise heatmap2 (heatmap2_init: normal) "
              "instead of resampling the previous stage's", flush=True)
    try:
        grid = tuner.fit()
    except Exception as exc:  # noqa: BLE001 - Tune wraps a callback's error; show ours in one line
        stalled = find_cause(exc, SweepStalled)
        if stalled is None:
            raise
        raise UserError(f"tune {key}: {stalled}") from None
    summary = _summarise(grid, key, sw.tcfg, list(sw.space), sw.epochs, sw.name, sw.mode, sw.name, sweep_dir,
                         time.time() - t0)
    summary["searcher"], summary["search_seed"] = sw.searcher, sw.search_seed
    out = outputs_dir(root, "tune", key)
    _write_results(summary, out)
    b = summary["best"]
    print(f"[tune {key}] best {sw.tcfg['metric']} {b['metric']:.2f} with "
          + ", ".join(f"{k}={v:.4g}" for k, v in b["params"].items())
          + f" ({summary['num_completed']} completed, {summary['num_stopped_early']} stopped early); wrote {out}",
          flush=True)
    return summary


def _stage(cfg: dict[str, Any], args: argparse.Namespace) -> str:
    if args.d2 is None:
        key = (cfg.get("tune") or {}).get("stage")
        if not key:
            raise UserError(f"{args.config}: tune.stage: missing (or pass --d2)")
        return key
    key = stage_key(args.d2) if args.d2 > 0 else None
    if key is None or key not in cfg["train"]:
        raise UserError(f"{args.config}: train: no stage with d2={args.d2} (stages: {', '.join(cfg['train'])})")
    return key


def _make_trainable(sw: _Sweep, sweep_dir: str, num_workers: int, ledger: str | None = None):
    """A function trainable that runs one Ray Train fit of the stage per trial (Ray 2.60's Train V2 runs
    a Ray Train job inside a Tune trial only from a function trainable, not as ``Tuner(trainer)``), set
    up by ``workflows.raytrain`` as every other Ray Train job.

    Each trial trains with its own checkpoint store, ``<sweep_dir>/runs/<trial id>``, so a trial that
    runs again (a retry, or a resumed sweep) continues from its last checkpoint. ``ledger``: name of
    the placement-group ledger actor the trial's Train workers register their placement
    group with (see ``workflows.tune_workarounds``).
    """

    def trial(sampled: dict[str, Any]) -> None:
        from ray import tune
        from ray.tune.integration.ray_train import TuneReportCallback

        ctx = tune.get_context()
        trial_id = ctx.get_trial_id()
        run_dir = f"{sweep_dir}/runs/{trial_id}"
        run = sw.base.replace(run_name=f"train-{ctx.get_trial_name()}", run_dir=run_dir, max_failures=sw.max_failures)
        config = {**run.loop_config(), **sampled, "_pg_ledger": ledger, "_trial_id": trial_id}
        board = start_board(config, prefix=f"board-{trial_id}")  # noqa: F841 - held until fit() returns
        # a lost worker restarts the group from the trial's last checkpoint; Train V2 retries a worker
        # group that cannot start for ever by default: a trial whose CPUs never come free would hold
        # the sweep; fail it instead (ASHA goes on with the others)
        torch_trainer(_trial_train_func, config, storage_path=f"{run_dir}/ray", workers=num_workers,
                      resources=_worker_resources(sw.base.cpus_per_worker, sw.use_gpu), use_gpu=sw.use_gpu,
                      max_failures=sw.max_failures, callbacks=[TuneReportCallback()],
                      controller_failure_limit=START_RETRIES).fit()

    trial.__name__ = trial.__qualname__ = sw.key  # trials are named d2_16_<id> (also the wandb run names)
    return trial


_TRIAL_CPU = 0.1  # the trial actor itself (it only waits for its Ray Train run)


def _worker_resources(cpus: float, use_gpu: bool) -> dict[str, float]:
    """Resources of one Ray Train worker of a trial: on CPU at most 0.9 CPU, so that a trial
    (0.1 + 0.9) fits in one core."""
    return {"CPU": cpus, "GPU": 1.0} if use_gpu else {"CPU": min(cpus, 0.9)}


def _trial_train_func(config: dict[str, Any]) -> None:
    """Ray Train worker entry of a trial: register the worker group's placement group, then train."""
    config = dict(config)
    register_placement_group(config.pop("_pg_ledger", None), config.pop("_trial_id", None))
    train_func(config)


def _summarise(grid, key, tcfg, params, epochs, group, mode, sweep_name, sweep_dir, wall) -> dict[str, Any]:
    metric = tcfg["metric"]
    trials = []
    for r in grid:
        m = dict(r.metrics or {})
        hist = r.metrics_dataframe
        values = [] if hist is None or metric not in hist else [float(v) for v in hist[metric].tolist()]
        cfg = r.config or {}
        trials.append({
            "trial": r.path.rstrip("/").split("/")[-1] if r.path else None,
            "trial_id": m.get("trial_id"),  # also the wandb run id
            "params": {k: float(cfg[k]) for k in params if k in cfg},
            "metric": float(m.get(metric, math.nan)),
            "best_metric": float(min(values) if tcfg["mode"] == "min" else max(values)) if values else math.nan,
            "epochs_run": int(m.get("epoch", len(values)) or 0),
            "error": str(r.error).splitlines()[0] if r.error else None,
            "run_dir": f"{sweep_dir}/runs/{m['trial_id']}" if m.get("trial_id") else None,
        })
    ok = [t for t in trials if not t["error"] and math.isfinite(t["metric"])]
    if not ok:
        errs = "; ".join(t["error"] or "no metric" for t in trials)[:500]
        raise UserError(f"tune {key}: no trial finished ({errs})")
    sign = 1.0 if tcfg["mode"] == "min" else -1.0
    best = min(ok, key=lambda t: sign * t["metric"])
    return {
        "stage": key, "metric": metric, "mode": tcfg["mode"], "epochs": int(epochs), "sweep": sweep_name,
        "wandb_group": group, "wandb_mode": mode, "wall_s": round(wall, 1),
        "num_trials": len(trials), "num_completed": sum(t["epochs_run"] >= epochs for t in ok),
        "num_stopped_early": sum(t["epochs_run"] < epochs for t in ok),
        "best": best, "trials": trials,
    }


def _write_results(summary: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".best_params.json.tmp-{uuid.uuid4().hex[:6]}"
    tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    os.replace(tmp, out / "best_params.json")
    params = sorted({k for t in summary["trials"] for k in t["params"]})
    with open(out / "trials.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", *params, summary["metric"], "best_" + summary["metric"], "epochs_run", "error"])
        for t in summary["trials"]:
            w.writerow([t["trial"], *(t["params"].get(k) for k in params), t["metric"], t["best_metric"],
                        t["epochs_run"], t["error"] or ""])
    _plot(summary, params, out / "trials.png")


def _plot(summary: dict[str, Any], params: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [t for t in summary["trials"] if math.isfinite(t["metric"])]
    fig, axes = plt.subplots(1, max(1, len(params)), figsize=(4.2 * max(1, len(params)), 3.6), squeeze=False)
    for ax, p in zip(axes[0], params, strict=False):
        x = [t["params"].get(p, math.nan) for t in ok]
        y = [t["metric"] for t in ok]
        c = ["tab:green" if t["epochs_run"] >= summary["epochs"] else "tab:orange" for t in ok]
        ax.scatter(x, y, c=c)
        bx = summary["best"]["params"].get(p)
        if bx is not None:
            ax.scatter([bx], [summary["best"]["metric"]], marker="*", s=220, c="tab:red", label="best")
        ax.set_xscale("log")
        ax.set_xlabel(p)
        ax.set_ylabel(f"{summary['metric']} (mm)")
        ax.grid(alpha=0.3)
    axes[0][0].set_title(f"{summary['stage']}: green = completed, orange = stopped by ASHA", fontsize=9)
    fig.suptitle(f"{summary['stage']} sweep: {summary['num_trials']} trials, {summary.get('searcher', 'random')} "
                 f"search, seed {summary.get('search_seed')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# --apply
def apply_best(args: argparse.Namespace) -> dict[str, float]:
    """Write the best parameters into ``train.<stage>`` of the config file; returns what changed."""
    root = project_root(args.root)
    cfg = load_config(args.config)
    key = _stage(cfg, args)
    best_path = Path(args.best) if args.best else outputs_dir(root, "tune", key, "best_params.json")
    if not best_path.is_file():
        raise UserError(f"no sweep results at {best_path} (run `python -m workflows.tune --d2 {args.d2}` first)")
    try:
        summary = json.loads(best_path.read_text())
        params = summary["best"]["params"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{best_path}: not a best-parameters file ({exc})") from None
    if summary.get("stage") not in (None, key):
        raise UserError(f"{best_path} holds a sweep of {summary['stage']}, not {key}")
    bad = [k for k in params if k not in SEARCH_PARAMS]
    if bad:
        raise UserError(f"{best_path}: unknown parameter {bad[0]!r} (allowed: {', '.join(SEARCH_PARAMS)})")

    yaml = YAML()  # round-trip: keeps comments, order and every other entry as written
    yaml.preserve_quotes = True
    path = Path(args.config)
    doc = yaml.load(path.read_text())
    entry = doc["train"][key]
    for k, v in params.items():
        entry[k] = float(f"{float(v):.6g}")
    changed_init = "heatmap2_std" in params and entry.get("heatmap2_init", "normal") != "normal"
    if changed_init:  # the trials re-initialised heatmap2 (StageSettings.with_overrides): so does the stage
        entry["heatmap2_init"] = "normal"
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:6]}")
    with open(tmp, "w") as f:
        yaml.dump(doc, f)
    try:
        load_config(tmp)  # never leave an invalid stages.yaml behind
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    changed = {k: float(entry[k]) for k in params}
    print(f"[tune {key}] wrote " + ", ".join(f"train.{key}.{k}={v:.6g}" for k, v in changed.items())
          + (f", train.{key}.heatmap2_init=normal" if changed_init else "")
          + f" into {path}; `dvc repro` retrains {key} and the stages after it", flush=True)
    return changed


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.apply:
        apply_best(args)
        return 0
    return run_with_ray(run_sweep, args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
