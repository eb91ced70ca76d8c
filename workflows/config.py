"""``stages.yaml``: the single configuration of the training workflow, its validation and profiles.

Layout (every section is a mapping; unknown keys are errors)::

    profile: default            # name of the profile this file was written from (informational)
    seed: 0                     # global seed (data order, heatmap2 re-init, subsets)
    model:    {preset: tiny|micro|full, <ModelConfig field>: value, ...}   (d2 / heatmap2_std come from the stage)
    targets:  {sigma_2d, depth_range: [lb, ub]}                           (mm; one range for encode + decode)
    data:     {source: embedded | PATH, layout, synth_frames, synth_seed, synth_limb_mix, synth_tilt,
               synth_pose_prior, synth_mirror,
               synth_looks: sequence|frame, synth_appearance: classic|varied|mixed, synth_varied_share, real_test: NPZ | null, on_bad, max_skip_fraction,
               aug: true | false | {scale_factor, rot_factor, rot_prob, rot_max, flip_prob, color_factor},
               train_limit, val_size, loader_workers, image_cache_mb}
    stage_defaults: {lr, ratio_3d, heatmap2_std, heatmap2_init: normal|upsample, epochs | iterations,
                     batch_size, optimizer: rmsprop|adam|sgd, loss: H1|I1|adaptive, precision: fp32|bf16, ...}
    train:                      # the curriculum: one entry per stage, keyed d2_XX (XX = d2, 2 digits),
      d2_02: {d2: 2, init: null, lr: 2.0e-3}   # holding only what differs from stage_defaults
      d2_04: {d2: 4, init: d2_02, ...}   # init = the stage whose final weights this one starts from
    evaluate: {subset_size, batch_size, bone_fit, max_samples, flip_test}
    ray:      {num_workers: N | [min, max], use_gpu, cpus_per_worker, max_failures, checkpoint_every, keep_runs}
    wandb:    {enabled, project, mode, entity, group, images}
    lift:     {supervised: {...}, unsupervised: {...}}   (scalars / lists of scalars; read by workflows/lift.py)
    tune:     {stage, metric, mode, num_samples, max_concurrent, epochs, search: {...}, asha: {...}, searcher, seed}

A stage's effective settings are ``stage_defaults`` overridden by its own entry, with the defaults
of :data:`STAGE_FIELDS` for keys neither gives; ``validate`` returns them in full under ``train``.
The ``model`` section and ``data.aug`` are checked against the library's own dataclasses
(``pose.model.ModelConfig``, ``pose.data.AugConfig``) by :func:`from_mapping`.

Profiles: ``stages.yaml`` holds the *active* settings (what ``dvc repro`` runs, and what DVC tracks
per stage: ``train@d2_16`` depends only on ``train.d2_16`` and ``stage_defaults`` plus the shared
``model``/``targets``/``data`` sections). The named profiles are data files,
``workflows/profiles/<name>.yaml`` (``default``: the whole curriculum on the embedded dataset on 2
CPU cores in ~19 min of training; ``full``: the seed's recipe for GPUs; ``micro``: a seconds-long
smoke run for tests), each saying only what differs from the defaults. Switch with::

    python -m workflows.config --profile full --write stages.yaml
    python -m workflows.config --check [stages.yaml]        # validate; exit 1 with one line on error

Every validation problem raises :class:`ConfigError` (a ValueError) with one line naming the key,
e.g. ``stages.yaml: train.d2_16.lr: must be > 0, got -0.001``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import re
import sys
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from pose.data.augment import AugConfig
from pose.loss_config import LOSS_VARIANTS, LossConfig
from pose.model import HEATMAP2_INITS, PRESETS, ModelConfig, stage_key
from pose.targets import C2F_DEPTH_RANGE

__all__ = [
    "ConfigError",
    "CURRICULUM",
    "filled_profile",
    "PROFILES",
    "from_mapping",
    "load_config",
    "make_profile",
    "stage_chain",
    "stage_key",
    "validate",
    "write_config",
]

#: The curriculum of depth resolutions the seeds train, each stage fine-tuned from the one before.
CURRICULUM = (2, 4, 8, 16, 32, 64)
OPTIMIZERS = ("rmsprop", "adam", "sgd")
SCHEDULES = ("constant", "cosine", "step")
PRECISIONS = ("fp32", "bf16")  # bf16: forward under torch.autocast (GPU), losses and weights in fp32
#: ModelConfig fields that come from the stage, not from the model section
_STAGE_MODEL_FIELDS = ("d2", "heatmap2_std")
_STAGE_KEY = re.compile(r"^d2_(\d{2,})$")
PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
#: ``data.real_test`` default (a path relative to the project root): 394 real Human3.6M poses of S9
#: with their intrinsics and person boxes (c2f-vol-demo, shipped in pose/data/c2f_vol_demo/), rendered with
#: their own camera and box by ``pose.data.synth.real`` as a test split that is evaluated, never trained on
REAL_TEST = "pose/data/c2f_vol_demo/valid.npz"


class ConfigError(ValueError):
    """A stages.yaml problem; ``str(err)`` is one line naming the key."""


_REQUIRED = object()


class _F:
    """One field: kind ("int", "float", "bool", "str", "any"), default, nullable, check, choices."""

    def __init__(
        self,
        kind: str,
        default: Any = _REQUIRED,
        *,
        null: bool = False,
        check: Callable[[Any], str | None] | None = None,
        choices: tuple | None = None,
    ) -> None:
        self.kind, self.default, self.null, self.check, self.choices = kind, default, null, check, choices


#: a dataclass annotation -> the kind of :class:`_F` that checks it
_KINDS = {int: "int", float: "float", bool: "bool", str: "str"}


def _gt0(v: float) -> str | None:
    return None if v > 0 else f"must be > 0, got {v!r}"


def _ge0(v: float) -> str | None:
    return None if v >= 0 else f"must be >= 0, got {v!r}"


def _open_unit(v: float) -> str | None:
    return None if 0 < v < 1 else f"must be in (0, 1), got {v!r}"


def _unit(v: float) -> str | None:
    return None if 0 <= v <= 1 else f"must be in [0, 1], got {v!r}"


def _ge1(v: int) -> str | None:
    return None if v >= 1 else f"must be >= 1, got {v!r}"


def _workers(v: Any) -> str | None:
    def count(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x >= 1

    if count(v) or (isinstance(v, list) and len(v) == 2 and all(map(count, v)) and v[0] <= v[1]):
        return None
    return f"must be a worker count >= 1 or [min, max] with 1 <= min <= max, got {v!r}"


STAGE_FIELDS: dict[str, _F] = {
    "d2": _F("int", check=_ge1),
    "init": _F("str", null=True),
    "lr": _F("float", check=_gt0),
    "lr_final": _F("float", None, null=True, check=_gt0),
    "heatmap2_std": _F("float", check=_gt0),
    "heatmap2_init": _F("str", "normal", choices=HEATMAP2_INITS),
    "epochs": _F("int", None, null=True, check=_ge1),
    "iterations": _F("int", None, null=True, check=_ge1),
    "batch_size": _F("int", check=_ge1),
    "optimizer": _F("str", "rmsprop", choices=OPTIMIZERS),
    "momentum": _F("float", 0.0, check=_ge0),
    "weight_decay": _F("float", 0.0, check=_ge0),
    "schedule": _F("str", "constant", choices=SCHEDULES),
    "warmup_iters": _F("int", 0, check=_ge0),
    "grad_clip": _F("float", None, null=True, check=_gt0),
    "ema_decay": _F("float", None, null=True, check=_open_unit),  # null: no weight average
    "trainable": _F("str", "all", choices=("all", "head")),  # head: only heatmap2 trains
    "log_every": _F("int", 50, check=_ge1),
    "precision": _F("str", "fp32", choices=PRECISIONS),
    "checkpoint_every": _F("int", None, null=True, check=_ge1),  # iterations; null: ray.checkpoint_every
}
#: stage keys that are ``pose.loss_config.LossConfig`` fields (``loss`` is its ``variant``): their
#: kinds, defaults and checks are LossConfig's own (a stage is checked by building one);
#: ``ratio_3d`` has no default here, every stage of a curriculum states its 3D:2D ratio
LOSS_KEYS = {"loss": "variant", "ratio_3d": "ratio_3d", "integral_weight": "integral_weight",
             "integral_kind": "integral_kind", "softmax_scale": "softmax_scale"}


def _loss_fields() -> dict[str, _F]:
    hints = typing.get_type_hints(LossConfig)
    defaults = {f.name: f.default for f in dataclasses.fields(LossConfig)}
    return {key: _F(_KINDS[hints[name]], _REQUIRED if key == "ratio_3d" else defaults[name],
                    choices=LOSS_VARIANTS if key == "loss" else None)
            for key, name in LOSS_KEYS.items()}


STAGE_FIELDS.update(_loss_fields())

SECTIONS: dict[str, dict[str, _F]] = {
    "targets": {
        "sigma_2d": _F("float", 2.0, check=_gt0),
        "depth_range": _F("any", [C2F_DEPTH_RANGE.lb, C2F_DEPTH_RANGE.ub]),
    },
    "data": {
        "source": _F("str", "embedded"),
        "layout": _F("str", "auto", choices=("auto", "seed", "json")),
        "synth_frames": _F("int", None, null=True, check=_ge1),
        "synth_seed": _F("int", 0),
        "synth_limb_mix": _F("float", 0.0, check=_unit),
        "synth_tilt": _F("float", 0.0, check=_unit),
        "synth_pose_prior": _F("float", 0.0, check=_unit),
        "synth_mirror": _F("float", 0.0, check=_unit),
        # pose.data.synth.generate.LOOKS, copied: importing the renderer would make it a code dependency
        # of every DVC stage (tests/test_config.py checks the two agree)
        "synth_looks": _F("str", "sequence", choices=("sequence", "frame")),
        # pose.data.synth.generate.TRAIN_FAMILIES, copied likewise: the training frames' look family
        "synth_appearance": _F("str", "classic", choices=("classic", "varied", "mixed")),
        # with synth_appearance: mixed, the share of training looks drawn from the varied family
        "synth_varied_share": _F("float", 0.5, check=_unit),
        # an npz of real poses rendered as a second, evaluate-only test split (workflows/data.py)
        "real_test": _F("str", REAL_TEST, null=True),
        "on_bad": _F("str", "skip", choices=("skip", "fail")),
        "max_skip_fraction": _F("float", 0.01, check=_unit),
        "aug": _F("any", True),
        "train_limit": _F("int", None, null=True, check=_ge1),
        "val_size": _F("int", 256, check=_ge1),
        "loader_workers": _F("int", 0, check=_ge0),
        "image_cache_mb": _F("int", 0, check=_ge0),
    },
    "evaluate": {
        "subset_size": _F("int", 500, check=_ge1),
        "batch_size": _F("int", 32, check=_ge1),
        "bone_fit": _F("bool", True),
        "max_samples": _F("int", None, null=True, check=_ge1),
        "flip_test": _F("bool", False),
    },
    "ray": {
        "num_workers": _F("any", 1, check=_workers),  # N, or [min, max] for elastic training
        "use_gpu": _F("bool", False),
        "cpus_per_worker": _F("float", 1.0, check=_gt0),
        "max_failures": _F("int", 2, check=_ge0),  # worker-group restarts (from the last checkpoint) per run
        "checkpoint_every": _F("int", None, null=True, check=_ge1),  # iterations; null: epoch ends only
        "keep_runs": _F("bool", False),
    },
    "wandb": {
        # on by default: `dvc repro` writes the curriculum's offline runs (no account needed; `wandb sync`)
        "enabled": _F("bool", True),
        "project": _F("str", "c2f-pose"),
        "mode": _F("str", "offline", choices=("offline", "online", "disabled")),
        "entity": _F("str", None, null=True),
        # the wandb group of the curriculum's runs (each stage, evaluate); null: "curriculum-<hash>" of
        # the settings the stages share and the prepared data (workflows/wandb_log.py)
        "group": _F("str", None, null=True),
    },
}

TUNE_FIELDS: dict[str, _F] = {
    "stage": _F("str", "d2_16"),
    "metric": _F("str", "val_mpjpe"),
    "mode": _F("str", "min", choices=("min", "max")),
    "num_samples": _F("int", 8, check=_ge1),
    "max_concurrent": _F("int", 2, check=_ge1),
    "epochs": _F("int", None, null=True, check=_ge1),
    "search": _F("any", _REQUIRED),
    "asha": _F("any", {"grace_period": 1, "reduction_factor": 2}),
    # random: Tune's random search; optuna: Optuna's TPE (model-based) through Ray Tune's OptunaSearch
    "searcher": _F("str", "random", choices=("random", "optuna")),
    "seed": _F("int", None, null=True),  # the searcher's seed; null: the top-level seed
}
SEARCH_PARAMS = ("ratio_3d", "heatmap2_std", "lr")
TOP_LEVEL = ("profile", "seed", "model", "targets", "data", "stage_defaults", "train", "evaluate", "ray", "wandb",
             "lift", "tune")


# --------------------------------------------------------------------------------------------
# validation
def _fail(where: str, key: str, msg: str) -> ConfigError:
    return ConfigError(f"{where}: {key}: {msg}")


def _coerce(value: Any, f: _F, where: str, key: str) -> Any:
    """Check ``value`` against field ``f``; returns the normalised value."""
    if value is None:
        if f.null:
            return None
        raise _fail(where, key, f"must not be null (expected {f.kind})")
    if f.kind == "any":
        pass
    elif f.kind == "bool":
        if not isinstance(value, bool):
            raise _fail(where, key, f"must be true or false, got {value!r}")
        return value
    if f.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise _fail(where, key, f"must be an integer, got {value!r}")
    elif f.kind == "float":
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise _fail(where, key, f"must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(where, key, f"must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise _fail(where, key, f"must be finite, got {value!r}")
    elif f.kind == "str":
        if not isinstance(value, str):
            raise _fail(where, key, f"must be a string, got {value!r}")
    if f.choices is not None and value not in f.choices:
        raise _fail(where, key, f"must be one of {list(f.choices)}, got {value!r}")
    if f.check is not None:
        msg = f.check(value)
        if msg:
            raise _fail(where, key, msg)
    return value


def _section(data: Any, fields: dict[str, _F], where: str, prefix: str) -> dict[str, Any]:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise _fail(where, prefix, f"must be a mapping, got {type(data).__name__}")
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise _fail(where, f"{prefix}.{unknown[0]}", f"unknown key (allowed: {', '.join(fields)})")
    out: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}"
        if name in data:
            out[name] = _coerce(data[name], f, where, key)
        elif f.default is _REQUIRED:
            raise _fail(where, key, "missing required key")
        else:
            out[name] = copy.deepcopy(f.default)
    return out


def _scalar_or_list(value: Any) -> bool:
    scalar = (bool, int, float, str, type(None))
    return isinstance(value, scalar) or (isinstance(value, list) and all(isinstance(v, scalar) for v in value))


def from_mapping(cls: type, data: Any, where: str, prefix: str, exclude: tuple[str, ...] = (),
                 base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Check a mapping of ``cls``'s dataclass fields (names and types read from its annotations).

    Returns the given keys, normalised (an int where an int is annotated, a float for a float, ...);
    ``cls(**base, **result)`` is built once so that its own ``__post_init__`` checks apply (``base``:
    values the mapping is applied over, e.g. a model preset's sizes). Raises
    :class:`ConfigError` with one line naming the key (``<where>: <prefix>.<field>: <problem>``).
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise _fail(where, prefix, f"must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name not in exclude]
    out: dict[str, Any] = {}
    for k, v in data.items():
        if k not in names:
            raise _fail(where, f"{prefix}.{k}", f"unknown key (allowed: {', '.join(names)})")
        out[k] = _coerce(v, _F(_KINDS.get(hints[k], "any")), where, f"{prefix}.{k}")
    try:
        cls(**{**(base or {}), **out})
    except (ValueError, TypeError) as exc:
        raise _dataclass_error(exc, out, where, prefix) from None
    return out


def _dataclass_error(exc: Exception, given: Mapping[str, Any], where: str, prefix: str) -> ConfigError:
    """A dataclass's ``__post_init__`` message (``"<field> must ..."``) as a one-line error naming the key."""
    msg = str(exc)
    name, _, rest = msg.partition(" ")
    if name.rstrip(":") in given and rest:
        return _fail(where, f"{prefix}.{name.rstrip(':')}", rest)
    return _fail(where, prefix, msg)


def _validate_model(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise _fail(where, "model", "must be a mapping with at least 'preset'")
    if "preset" not in data:
        raise _fail(where, "model.preset", f"missing required key (one of {list(PRESETS)})")
    if data["preset"] not in PRESETS:
        raise _fail(where, "model.preset", f"must be one of {list(PRESETS)}, got {data['preset']!r}")
    fields = {k: v for k, v in data.items() if k != "preset"}
    # checked over the preset's sizes (e.g. input_size against the preset's hourglass_depth)
    checked = from_mapping(ModelConfig, fields, where, "model", exclude=_STAGE_MODEL_FIELDS,
                           base=PRESETS[data["preset"]])
    return {"preset": data["preset"], **checked}


def _validate_stage(key: str, data: Any, defaults: dict[str, Any], where: str) -> dict[str, Any]:
    prefix = f"train.{key}"
    m = _STAGE_KEY.match(str(key))
    if not m:
        raise _fail(where, prefix, "stage keys must look like d2_XX (e.g. d2_16)")
    if data is not None and not isinstance(data, Mapping):
        raise _fail(where, prefix, f"must be a mapping, got {type(data).__name__}")
    data = dict(data or {})
    if "iterations" in data or "epochs" in data:  # the entry's budget replaces the defaults' whole
        defaults = {k: v for k, v in defaults.items() if k not in ("iterations", "epochs")}
    merged = {**defaults, **data}
    for name, f in STAGE_FIELDS.items():
        if name not in merged and f.default is _REQUIRED:
            raise _fail(where, f"{prefix}.{name}", "missing required key (give it here or in stage_defaults)")
    st = _section(merged, STAGE_FIELDS, where, prefix)
    try:
        LossConfig(**{name: st[key] for key, name in LOSS_KEYS.items()})
    except (ValueError, TypeError) as exc:
        field, _, rest = str(exc).partition(" ")
        key = next((k for k, n in LOSS_KEYS.items() if n == field), None)
        raise _fail(where, f"{prefix}.{key}" if key else prefix, rest if key else str(exc)) from None
    if int(m.group(1)) != st["d2"]:
        raise _fail(where, f"{prefix}.d2", f"must match the stage key ({int(m.group(1))}), got {st['d2']}")
    if (st["epochs"] is None) == (st["iterations"] is None):
        raise _fail(where, f"{prefix}.epochs", "give exactly one of epochs / iterations")
    return st


def _validate_stage_defaults(data: Any, where: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise _fail(where, "stage_defaults", f"must be a mapping, got {type(data).__name__}")
    out = {}
    for k, v in data.items():
        if k not in STAGE_FIELDS or k in ("d2", "init"):
            allowed = [n for n in STAGE_FIELDS if n not in ("d2", "init")]
            raise _fail(where, f"stage_defaults.{k}", f"unknown key (allowed: {', '.join(allowed)})")
        out[k] = _coerce(v, STAGE_FIELDS[k], where, f"stage_defaults.{k}")
    return out


def _validate_train(data: Any, defaults: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(data, Mapping) or not data:
        raise _fail(where, "train", "must be a non-empty mapping of stages keyed d2_XX")
    stages = {str(k): _validate_stage(str(k), v, defaults, where) for k, v in data.items()}
    keys = list(stages)
    prev_d2 = 0
    for i, key in enumerate(keys):
        st = stages[key]
        if st["d2"] <= prev_d2:
            raise _fail(where, f"train.{key}.d2", f"d2 must increase along the curriculum ({prev_d2} -> {st['d2']})")
        prev_d2 = st["d2"]
        init = st["init"]
        if init is None:
            if i > 0:
                raise _fail(where, f"train.{key}.init", f"only the first stage may start from scratch (init: {keys[i - 1]})")
        elif init not in stages:
            raise _fail(where, f"train.{key}.init", f"names a missing stage {init!r} (stages: {', '.join(keys)})")
        elif keys.index(init) >= i:
            raise _fail(where, f"train.{key}.init", f"must name an earlier stage, got {init!r}")
    return stages


def _validate_lift(data: Any, where: str) -> dict[str, Any]:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise _fail(where, "lift", "must be a mapping with 'supervised' and 'unsupervised'")
    out: dict[str, Any] = {}
    for k, v in data.items():
        if k not in ("supervised", "unsupervised"):
            raise _fail(where, f"lift.{k}", "unknown key (allowed: supervised, unsupervised)")
        v = {} if v is None else v
        if not isinstance(v, Mapping):
            raise _fail(where, f"lift.{k}", "must be a mapping of settings")
        for kk, vv in v.items():
            if not isinstance(kk, str) or not _scalar_or_list(vv):
                raise _fail(where, f"lift.{k}.{kk}", f"must be a scalar or a list of scalars, got {vv!r}")
            if isinstance(vv, int | float) and not isinstance(vv, bool) and not math.isfinite(vv):
                raise _fail(where, f"lift.{k}.{kk}", f"must be finite, got {vv!r}")
        out[k] = dict(v)
    out.setdefault("supervised", {})
    out.setdefault("unsupervised", {})
    return out


def _validate_tune(data: Any, stages: dict[str, Any], where: str) -> dict[str, Any]:
    if data is None:
        return {}
    out = _section(data, TUNE_FIELDS, where, "tune")
    if out["stage"] not in stages:
        raise _fail(where, "tune.stage", f"names a missing stage {out['stage']!r}")
    search = out["search"]
    if not isinstance(search, Mapping) or not search:
        raise _fail(where, "tune.search", f"must be a non-empty mapping over {list(SEARCH_PARAMS)}")
    for name, spec in search.items():
        key = f"tune.search.{name}"
        if name not in SEARCH_PARAMS:
            raise _fail(where, key, f"unknown key (allowed: {', '.join(SEARCH_PARAMS)})")
        fields = {
            "dist": _F("str", "loguniform", choices=("loguniform", "uniform", "choice")),
            "lo": _F("float", None, null=True),
            "hi": _F("float", None, null=True),
            "values": _F("any", None, null=True),
        }
        sp = _section(spec, fields, where, key)
        if sp["dist"] == "choice":
            if not isinstance(sp["values"], list) or not sp["values"]:
                raise _fail(where, f"{key}.values", "must be a non-empty list for dist: choice")
        else:
            if sp["lo"] is None or sp["hi"] is None:
                raise _fail(where, f"{key}.lo", f"lo and hi are required for dist: {sp['dist']}")
            if not sp["lo"] < sp["hi"]:
                raise _fail(where, f"{key}.hi", f"must be > lo ({sp['lo']}), got {sp['hi']}")
            if sp["dist"] == "loguniform" and sp["lo"] <= 0:
                raise _fail(where, f"{key}.lo", f"must be > 0 for loguniform, got {sp['lo']}")
        search[name] = sp
    asha = _section(
        out["asha"],
        {"grace_period": _F("int", 1, check=_ge1), "reduction_factor": _F("float", 2.0, check=lambda v: None if v > 1 else f"must be > 1, got {v}")},
        where,
        "tune.asha",
    )
    out["asha"], out["search"] = asha, dict(search)
    return out


def validate(data: Any, where: str = "stages.yaml") -> dict[str, Any]:
    """Validate a parsed stages.yaml mapping; returns a normalised deep copy with defaults filled.

    Raises :class:`ConfigError` with one line ``"<where>: <key>: <problem>"`` on the first problem.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: top level must be a mapping of sections ({', '.join(TOP_LEVEL)})")
    data = copy.deepcopy(dict(data))
    for k in data:
        if k not in TOP_LEVEL:
            raise _fail(where, str(k), f"unknown key (allowed top-level sections: {', '.join(TOP_LEVEL)})")
    for k in ("model", "train"):
        if k not in data:
            raise _fail(where, k, "missing required section")
    cfg: dict[str, Any] = {
        "profile": _coerce(data.get("profile", "custom"), _F("str"), where, "profile"),
        "seed": _coerce(data.get("seed", 0), _F("int"), where, "seed"),
        "model": _validate_model(data["model"], where),
    }
    for name, fields in SECTIONS.items():
        cfg[name] = _section(data.get(name), fields, where, name)
    dr = cfg["targets"]["depth_range"]
    if (
        not isinstance(dr, list | tuple)
        or len(dr) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in dr)
        or not dr[0] < dr[1]
    ):
        raise _fail(where, "targets.depth_range", f"must be [lb, ub] in mm with lb < ub, got {dr!r}")
    cfg["targets"]["depth_range"] = [float(dr[0]), float(dr[1])]
    aug = cfg["data"]["aug"]
    if isinstance(aug, Mapping):
        cfg["data"]["aug"] = from_mapping(AugConfig, aug, where, "data.aug", exclude=("enabled",))
    elif not isinstance(aug, bool):
        names = [f.name for f in dataclasses.fields(AugConfig) if f.name != "enabled"]
        raise _fail(where, "data.aug", f"must be true, false or a mapping of {', '.join(names)}; got {aug!r}")
    if not cfg["data"]["source"].strip():
        raise _fail(where, "data.source", "must be 'embedded' or a path to a dataset")
    cfg["stage_defaults"] = _validate_stage_defaults(data.get("stage_defaults"), where)
    cfg["train"] = _validate_train(data["train"], cfg["stage_defaults"], where)
    cfg["lift"] = _validate_lift(data.get("lift"), where)
    cfg["tune"] = _validate_tune(data.get("tune"), cfg["train"], where)
    return cfg


def load_config(path: str | Path = "stages.yaml") -> dict[str, Any]:
    """Read and validate a stages.yaml file; ConfigError (one line) if missing, unparsable or invalid."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise ConfigError(f"{where}: file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        pos = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{where}: not valid YAML{pos}: {problem}") from None
    return validate(data, where)


# --------------------------------------------------------------------------------------------
# stage helpers
def stage_chain(cfg: Mapping[str, Any], key: str) -> list[str]:
    """Keys from the first stage to ``key`` following ``init`` links (``[..., init, key]``)."""
    if key not in cfg["train"]:
        raise ValueError(f"key: no stage {key!r} in train (stages: {', '.join(cfg['train'])})")
    chain = [key]
    while cfg["train"][chain[-1]]["init"] is not None:
        chain.append(cfg["train"][chain[-1]]["init"])
    return chain[::-1]


# --------------------------------------------------------------------------------------------
# profiles
PROFILES = ("default", "full", "micro")


def make_profile(name: str) -> dict[str, Any]:
    """The validated stages.yaml mapping of a named profile (``workflows/profiles/<name>.yaml``), every
    default filled: DVC's params (dvc.yaml) must find each key they name."""
    if name not in PROFILES:
        raise ValueError(f"name: unknown profile {name!r} (profiles: {', '.join(PROFILES)})")
    return load_config(PROFILE_DIR / f"{name}.yaml")


_HEADER = """\
# c2f-pose workflow configuration (validated by workflows/config.py; see README "Configuration").
# Written from profile {name!r} (workflows/profiles/{name}.yaml, which says why it chooses what it
# does) by: python -m workflows.config --profile {name} --write {path}
# Every section DVC reads params from is written in full, defaults included. DVC tracks each train
# stage's own entry (train.d2_XX) and stage_defaults plus model/targets/data, so editing one stage
# reruns that stage and the later ones only:
#   dvc repro  |  dvc exp run -S 'stages.yaml:++train.d2_16.lr=5e-4'
"""
#: the order of the written file's sections
_ORDER = ("profile", "seed", "model", "targets", "data", "stage_defaults", "train", "evaluate", "ray", "wandb",
          "lift", "tune")


def filled_profile(name: str) -> dict[str, Any]:
    """The stages.yaml mapping ``--write`` writes for profile ``name``: the profile's own entries
    for the model, the curriculum (``stage_defaults``, ``train``), ``lift`` and ``tune``, and every
    section of :data:`SECTIONS` (and ``seed``) with its defaults filled in, so that each key dvc.yaml
    names as a param is in the file."""
    cfg = make_profile(name)
    raw = yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text())
    out = {k: cfg[k] for k in ("profile", "seed", *SECTIONS)}
    out |= {k: raw[k] for k in ("model", "stage_defaults", "train", "lift", "tune") if raw.get(k) is not None}
    return {k: out[k] for k in _ORDER if k in out}


class _Flow(dict):
    """A mapping written on one line (``{a: 1, b: 2}``)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Flow, lambda d, m: d.represent_mapping("tag:yaml.org,2002:map", m.items(), flow_style=True))


def _flow_leaves(node: Any, depth: int = 0) -> Any:
    """Below the top level, mappings of scalars (a stage entry, a lift section, ``data.aug``) as :class:`_Flow`."""
    if not isinstance(node, Mapping):
        return node
    items = {k: _flow_leaves(v, depth + 1) for k, v in node.items()}
    leaf = all(not isinstance(v, Mapping) for v in items.values())
    return _Flow(items) if depth >= 2 and leaf else dict(items)


def write_config(cfg: Mapping[str, Any], path: str | Path, header: str | None = None) -> Path:
    """Validate ``cfg`` and write it as YAML to ``path`` (atomic: temp file + rename)."""
    validate(cfg, str(path))
    path = Path(path)
    text = yaml.dump(_flow_leaves(dict(cfg)), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=110)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text((header or "") + text)
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m workflows.config", description=__doc__.split("\n\n")[0])
    p.add_argument("config", nargs="?", default="stages.yaml", help="stages.yaml to check (default: %(default)s)")
    p.add_argument("--profile", choices=PROFILES, help="profile to write (with --write) or print")
    p.add_argument("--write", metavar="PATH", help="write the profile's stages.yaml to PATH")
    p.add_argument("--check", action="store_true", help="validate CONFIG and print a summary")
    args = p.parse_args(argv)
    try:
        if args.profile:
            cfg = make_profile(args.profile)
            if args.write:
                write_config(filled_profile(args.profile), args.write,
                             _HEADER.format(name=args.profile, path=args.write))
                print(f"wrote profile {args.profile!r} to {args.write}")
            else:
                sys.stdout.write(yaml.safe_dump(cfg, sort_keys=False))
            return 0
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stages = ", ".join(f"{k}(d2={v['d2']}, init={v['init']})" for k, v in cfg["train"].items())
    print(f"{args.config}: ok (profile {cfg['profile']}, model {cfg['model']['preset']}, data {cfg['data']['source']}); "
          f"stages: {stages}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
