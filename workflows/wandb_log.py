"""One curriculum, one wandb view: what the training stages and the evaluation log to Weights & Biases.

With ``wandb.enabled`` (the default; ``--wandb`` / ``--no-wandb`` on a stage's command line) the
runs of one curriculum share one wandb **group**, written offline under ``outputs/wandb/`` unless
``wandb.mode`` says otherwise (``wandb sync outputs/wandb/wandb/offline-run-*`` uploads them later):

- each training stage is a run (``job_type: stage``, named by its stage key, id = the stage run's
  name ``d2_16-<fingerprint>``, so a stage resumed after a failure continues its run), its config the
  stage's train config; every epoch it logs the epoch's metrics and ``curriculum/iteration``, the iteration counted from the start of the curriculum (the iterations of
  the stages before it plus its own), which every other metric is plotted against
  (``define_metric``), so the stages follow each other on one step axis; at the end its final
  ``model.pt`` is logged as an artifact ``model-d2_16`` (type ``model``);
- ``workflows/evaluate.py`` adds one run (``job_type: evaluate``) with the evaluation's tables
  (``eval/per_stage``, ``eval/per_action``: ``wandb.Table``), its plots and gallery (``wandb.Image``)
  and the final numbers in its summary. The pictures (the final stage's best and worst test frames)
  are drawn there, never in a training stage: training code runs no drawing code, so editing a plot
  reruns only the evaluation (dvc.yaml).

The group is ``wandb.group`` when set, else ``curriculum-<hash>``: a hash of the settings that make
the curriculum (``seed``, ``model``, ``targets``, ``data`` less its execution keys,
``stage_defaults``, ``train``) and of the prepared data's ``meta.json`` files. Every stage of one
``dvc repro`` runs as its own process and derives the same group; changing any stage's settings
makes another curriculum, so the stages that run again (and the evaluation) log into a new group
while the unchanged stages' runs stay in the old one (set ``wandb.group`` to keep a series of
experiments in one group).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from workflows.common import outputs_dir
from workflows.config import stage_chain

__all__ = [
    "CURRICULUM_STEP",
    "curriculum_group",
    "init_stage_run",
    "log_epoch",
    "log_evaluation",
    "log_model",
    "previous_budgets",
    "step_offset",
]

#: the step metric every logged metric is plotted against: the iteration from the curriculum's start
CURRICULUM_STEP = "curriculum/iteration"
#: sections whose settings make the curriculum (and so its group)
_GROUP_SECTIONS = ("seed", "model", "targets", "stage_defaults", "train")
#: data keys that change how fast, not what, a stage trains
_EXECUTION_DATA_KEYS = ("loader_workers", "image_cache_mb")


def curriculum_group(cfg: Mapping[str, Any], data_dir: str | Path) -> str:
    """The wandb group of the curriculum of validated config ``cfg`` trained on the prepared data in
    ``data_dir`` (the folder holding ``train/`` and ``test/``); see the module docstring."""
    if cfg["wandb"].get("group"):
        return str(cfg["wandb"]["group"])
    identity: dict[str, Any] = {k: cfg[k] for k in _GROUP_SECTIONS}
    identity["data"] = {k: v for k, v in cfg["data"].items() if k not in _EXECUTION_DATA_KEYS}
    for split in ("train", "test"):
        meta = Path(data_dir, split, "meta.json")
        identity[f"{split}_meta_sha256"] = hashlib.sha256(meta.read_bytes()).hexdigest() if meta.is_file() else None
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return "curriculum-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def previous_budgets(cfg: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """``{iterations, epochs, batch_size}`` of each stage before ``key`` on its ``init`` chain."""
    return [{k: cfg["train"][s][k] for k in ("iterations", "epochs", "batch_size")}
            for s in stage_chain(cfg, key)[:-1]]


def step_offset(previous: Sequence[Mapping[str, Any]], n_train: int) -> int:
    """Iterations the stages before this one trained (``previous`` from :func:`previous_budgets``) on a
    training split of ``n_train`` samples (an epoch is ``n_train // batch_size`` iterations, as
    ``pose.data.sampler.ShardedBatchSampler`` makes it)."""
    return sum(int(p["iterations"] or p["epochs"] * max(1, n_train // int(p["batch_size"]))) for p in previous)


def _init(wb: Mapping[str, Any], curriculum_step: bool, **kwargs: Any):
    import wandb

    os.makedirs(wb["dir"], exist_ok=True)
    run = wandb.init(project=wb["project"], entity=wb.get("entity"), mode=wb["mode"], dir=wb["dir"],
                     group=wb["group"], reinit="finish_previous", settings=wandb.Settings(silent=True), **kwargs)
    if curriculum_step:
        run.define_metric(CURRICULUM_STEP)
        run.define_metric("*", step_metric=CURRICULUM_STEP)
    return run


def init_stage_run(wb: Mapping[str, Any], run_name: str, stage: str, config: Mapping[str, Any]):
    """The wandb run of a training stage (rank 0 of ``workflows.train_loop``; ``wb`` its wandb settings,
    ``config`` what the run logs as its config): id = the stage run's name, so a resumed stage run
    (same name) continues it instead of adding one."""
    return _init(wb, True, id=run_name, resume="allow", name=stage, job_type="stage", config=dict(config))


def log_epoch(run, metrics: Mapping[str, Any], curriculum_iteration: int) -> None:
    """One epoch's metrics and the curriculum step (stage step: the iteration)."""
    run.log({**metrics, CURRICULUM_STEP: int(curriculum_iteration)}, step=int(metrics["iteration"]))


def log_model(run, path: str | Path, stage: str, metrics: Mapping[str, Any]) -> None:
    """The stage's final ``model.pt`` as artifact ``model-<stage>`` (type ``model``; copied when logged)."""
    import wandb

    art = wandb.Artifact(f"model-{stage}", type="model",
                         metadata={k: float(v) for k, v in metrics.items() if isinstance(v, int | float)})
    art.add_file(str(path), name="model.pt")
    run.log_artifact(art)


def log_evaluation(cfg: Mapping[str, Any], root: Path, result: Mapping[str, Any],
                   plots: Sequence[tuple[str, Path]]) -> str:
    """The evaluation's run in the curriculum's group: tables, plots, gallery, final numbers. Returns
    the group."""
    import wandb

    wb = {**cfg["wandb"], "dir": str(outputs_dir(root, "wandb"))}
    wb["group"] = curriculum_group(cfg, outputs_dir(root, "data", "packed"))
    run = _init(wb, False, name="evaluate", job_type="evaluate", config={"seed": cfg["seed"], "evaluate": cfg["evaluate"]})
    cols = ["stage", "d2", "mpjpe_argmax", "mpjpe_local", "mpjpe_soft", "mpjpe_argmax_fit", "pa_mpjpe", "subset_mpjpe_argmax",
            "baseline_mean_pose"]
    rows = result["rows"]
    per_stage = wandb.Table(columns=cols, data=[[r.get(c) for c in cols] for r in rows])
    final = result["metrics"]["final"]
    pa = result["per_action"]
    acts = pa[final["stage"]]["mpjpe_argmax"]["per_action"]
    per_action = wandb.Table(columns=["action", *[f"{k} mpjpe_argmax" for k in result["metrics"]["stages"]],
                                      "mean pose mpjpe"],
                             data=[[a, *[pa[k]["mpjpe_argmax"]["per_action"].get(a) for k in result["metrics"]["stages"]],
                                    pa["baseline_mean_pose"]["mpjpe"]["per_action"].get(a)] for a in acts])
    data: dict[str, Any] = {"eval/per_stage": per_stage, "eval/per_action": per_action}
    for caption, path in plots:
        data[f"eval/{Path(path).stem}"] = wandb.Image(str(path), caption=caption)
    if result.get("gallery"):
        data["eval/gallery"] = [wandb.Image(f.picture, caption=f"{f.kind} #{f.index} {f.action} {f.error_mm:.0f} mm")
                                for f in result["gallery"]]
    run.log(data)
    run.summary.update({f"final/{k}": v for k, v in final.items() if isinstance(v, int | float | str)})
    run.finish()
    return wb["group"]
