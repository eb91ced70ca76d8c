"""One training run of a curriculum stage, as the driver hands it to every worker: a typed object
built once (``workflows.stage.build_stage_run``), never re-read from the YAML.

- :class:`StageSettings` — the stage's effective settings: ``stage_defaults`` overridden by its own
  ``train.d2_XX`` entry, every field of ``workflows.config.STAGE_FIELDS`` (where their kinds,
  defaults and checks are stated) as an attribute.
- :class:`DataSettings` — the prepared data and how it is read.
- :class:`StageRun` — the settings, the shared ``model`` / ``targets`` sections, the data, the
  previous stage's checkpoint and where the run keeps its own (set by the driver; ``workflows.runs``
  names the run).

Ray Train gives a worker ``train_loop_config``, a dict: the driver passes ``{"run": run}``
(:meth:`StageRun.loop_config`), and a Ray Tune trial merges its sampled values into it
(``{**base, **sampled}``); :meth:`StageRun.from_loop_config` applies those samples once
(:meth:`StageSettings.with_overrides`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pose.loss_config import LossConfig
from pose.model import ModelConfig
from pose.targets import DepthRange
from workflows.config import LOSS_KEYS, STAGE_FIELDS

__all__ = ["OVERRIDABLE", "DataSettings", "StageRun", "StageSettings"]

#: stage settings a Ray Tune trial may sample (merged into ``train_loop_config`` at its top level)
OVERRIDABLE = ("lr", "ratio_3d", "heatmap2_std", "epochs", "iterations", "batch_size")

_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "any": Any}


def _stage_field(name: str) -> tuple[str, Any]:
    f = STAGE_FIELDS[name]
    kind = _TYPES[f.kind]
    return name, kind | None if f.null else kind


def _with_overrides(self: Any, samples: Mapping[str, Any]) -> Any:
    """These settings with a Tune trial's ``samples`` (keys of :data:`OVERRIDABLE`) applied: a
    sampled ``epochs`` replaces ``iterations`` and the reverse; a sampled ``heatmap2_std`` implies
    ``heatmap2_init: normal`` (the std of a re-initialised head; a resampled head has none), so
    sweeping it is never a silent no-op."""
    changes: dict[str, Any] = {}
    for k in OVERRIDABLE:
        if samples.get(k) is None:
            continue
        changes[k] = samples[k]
        if k == "epochs":
            changes["iterations"] = None
        if k == "iterations":
            changes["epochs"] = None
        if k == "heatmap2_std":
            changes["heatmap2_init"] = "normal"
    return dataclasses.replace(self, **changes) if changes else self


#: The effective settings of one stage (``workflows.config.STAGE_FIELDS``; ``validate`` fills them
#: all, so ``StageSettings(**cfg["train"][key])``). Frozen; ``with_overrides(samples)`` and
#: ``as_dict()`` besides the fields.
StageSettings = dataclasses.make_dataclass(
    "StageSettings", [_stage_field(name) for name in STAGE_FIELDS], frozen=True,
    namespace={"with_overrides": _with_overrides, "as_dict": lambda self: dataclasses.asdict(self),
               "__module__": __name__},
)


@dataclass(frozen=True)
class DataSettings:
    """The packed splits (absolute folders) and how they are read (``stages.yaml`` ``data``)."""

    train_dir: str
    test_dir: str
    aug: bool | dict[str, Any]
    train_limit: int | None
    val_size: int
    loader_workers: int
    image_cache_mb: int


@dataclass
class StageRun:
    """Everything one worker needs to train stage ``stage`` (see the module docstring).

    ``model``: the validated ``model`` section ({preset, ModelConfig overrides}); ``sigma_2d``
    (heatmap cells) and ``depth_range`` (mm) from ``targets``; ``init_checkpoint``: the previous
    stage's ``model.pt`` (absolute), or None (from scratch); ``wandb``: the run's wandb settings
    (``workflows/wandb_log.py``) or None; ``run_dir``: the run's folder (local path or URI) holding its
    checkpoints; ``checkpoint_every``: iterations between checkpoints when the stage sets none
    (None: epoch ends); ``board``: the driver's :class:`workflows.runs.RunBoard` actor name;
    ``fingerprint``: the run's identity (``workflows/runs.py``), stored with every checkpoint.
    """

    stage: str
    settings: StageSettings  # type: ignore[valid-type]
    model: dict[str, Any]
    sigma_2d: float
    depth_range: tuple[float, float]
    data: DataSettings
    init_checkpoint: str | None
    seed: int
    cpus_per_worker: float = 1.0
    wandb: dict[str, Any] | None = None
    run_name: str = ""
    run_dir: str | None = None
    checkpoint_every: int | None = None
    max_failures: int = 0
    board: str | None = None
    fingerprint: str | None = None
    ray_log: str | None = None

    @property
    def d2(self) -> int:
        return int(self.settings.d2)

    def model_config(self, heatmap2_std: float | None = None) -> ModelConfig:
        """The stage's ``ModelConfig``: the model section's preset and overrides, this stage's d2."""
        m = dict(self.model)
        preset = m.pop("preset")
        std = self.settings.heatmap2_std if heatmap2_std is None else heatmap2_std
        return ModelConfig.preset(preset, d2=self.d2, heatmap2_std=float(std), **m)

    def loss_config(self) -> LossConfig:
        """The objective of this stage (its loss keys, the targets' sigma and depth range, stride 4)."""
        loss = {name: getattr(self.settings, key) for key, name in LOSS_KEYS.items()}
        return LossConfig(**loss, sigma_2d=float(self.sigma_2d), depth_range=DepthRange(*self.depth_range), stride=4)

    def loop_config(self) -> dict[str, Any]:
        """Ray Train's ``train_loop_config`` for this run (a Tune trial adds its samples)."""
        return {"run": self}

    @staticmethod
    def from_loop_config(config: Mapping[str, Any]) -> StageRun:
        """The run in a worker's ``train_loop_config``, a Tune trial's samples applied."""
        run = config["run"]
        samples = {k: config[k] for k in OVERRIDABLE if k in config}
        return dataclasses.replace(run, settings=run.settings.with_overrides(samples)) if samples else run

    def replace(self, **changes: Any) -> StageRun:
        return dataclasses.replace(self, **changes)
