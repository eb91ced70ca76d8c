"""The per-worker training loop of one curriculum stage, shared by ``workflows/stage.py`` and
``workflows/tune.py``.

``train_func(config)`` runs inside every Ray Train worker (``TorchTrainer(train_func,
train_loop_config=config, ...)``); it is ``run_worker(config, ray_context(config))``, and
``run_worker(config, local_context("cuda"))`` runs the same loop in one process without Ray
(``benchmarks/accuracy_budget.py``, ``tests/test_cuda.py``). ``config`` is the plain dict made by
:func:`build_train_config`:

    stage, d2               stage key ("d2_16") and its depth bins
    stage_cfg               the stage's validated stages.yaml entry (lr, ratio_3d, heatmap2_std,
                            epochs | iterations, batch_size (global, split over workers), optimizer,
                            loss, integral_weight, integral_kind, softmax_scale, momentum,
                            weight_decay, schedule, warmup_iters, grad_clip, ema_decay, trainable,
                            log_every, checkpoint_every)
    model                   the model section ({preset, ModelConfig overrides})
    targets                 {sigma_2d, depth_range: [lb, ub]}
    data                    {train_dir, test_dir (absolute), aug, train_limit, val_size, loader_workers, image_cache_mb}
    init_checkpoint         absolute path of the previous stage's model.pt, or None (from scratch)
    seed, cpus_per_worker, wandb ({enabled, project, mode, entity, dir, group, images, previous: the
                            budgets of the stages before, for the curriculum step; workflows/wandb_log.py}
                            or None), run_name
    run_dir                 the run's folder (local path or URI) holding its checkpoints, or None
    checkpoint_every        iterations between checkpoints when the stage does not set its own (None: epoch ends)
    max_failures, board     worker-group restarts allowed; name of the driver's RunBoard actor (or None)
    fingerprint             the run's identity (workflows/runs.py), stored with every checkpoint

Top-level keys ``lr``, ``ratio_3d``, ``heatmap2_std``, ``epochs``, ``iterations``, ``batch_size``
override the stage's values (this is how Ray Tune's sampled search space is merged in:
``train_loop_config={**base, **sampled}``).

Order: global batch ``b`` of epoch ``e`` is a function of (seed, e, b) and is split over the workers
(:mod:`pose.data.sampler`), so the optimisation does not depend on the world size (up to float
summation order and batch-norm statistics, which are per worker) and a resumed run trains exactly
the batches an uninterrupted one would.

Checkpoints: rank 0 writes ``model.pt`` (``pose.model.save_checkpoint`` format), ``train_state.pt``
(optimiser, position: epoch, batch in the epoch, iteration, the epoch's running loss sums, the
curve so far, RNG states) and ``curve.csv`` into the run's :class:`workflows.checkpoints.CheckpointStore`
every ``checkpoint_every`` iterations, at every epoch end, and when a stop is requested (SIGTERM to
any worker, or the driver's request through its board). A (re)started worker group resumes from the
newest checkpoint that verifies. With ``ema_decay`` (:class:`pose.ema.WeightEMA`) the validation and
``model.pt`` use the running weight average, and ``train_state.pt`` also holds the trained weights
(``trained_model``) and the average's update count, so a resume continues both. With ``trainable:
head`` only ``heatmap2`` trains (:func:`freeze_trunk`). Every epoch all workers call ``report(metrics)`` with
``{"epoch", "iteration", "loss", "loss_2d", "loss_3d", ..., "val_mpjpe" (argmax, GT root depth, mm),
"val_mpjpe_soft", "lr", "epoch_time_s"}`` — after the epoch's checkpoint is stored, so a restart never
reports an epoch twice.
"""

from __future__ import annotations

import contextlib
import csv
import math
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workflows.config import effective_stage

__all__ = [
    "CURVE_FIELDS",
    "WorkerContext",
    "WorkerStopped",
    "build_train_config",
    "check_inputs",
    "forward",
    "local_context",
    "make_model",
    "memory_format_for",
    "ray_context",
    "run_worker",
    "train_func",
    "val_indices",
]

CURVE_FIELDS = ("epoch", "iteration", "loss", "val_mpjpe", "val_mpjpe_soft", "lr", "epoch_time_s")


# --------------------------------------------------------------------------------------------
# driver-side helpers
def build_train_config(
    cfg: Mapping[str, Any],
    key: str,
    root: Path,
    *,
    run_name: str,
    data_dir: Path | None = None,
    wandb: bool | None = None,
) -> dict[str, Any]:
    """The ``train_loop_config`` dict for stage ``key`` of the validated config ``cfg``."""
    from workflows.common import outputs_dir

    st = cfg["train"][key]
    data_dir = Path(data_dir) if data_dir else outputs_dir(root, "data", "packed")
    init = st["init"]
    wb = dict(cfg["wandb"])
    if wandb is not None:
        wb["enabled"] = bool(wandb)
    wb["dir"] = str(outputs_dir(root, "wandb"))
    if wb["enabled"]:  # the curriculum's group and where this stage starts on its step axis
        from workflows.wandb_log import curriculum_group, previous_budgets

        wb["group"] = curriculum_group(cfg, data_dir)
        wb["previous"] = previous_budgets(cfg, key)
    return {
        "stage": key,
        "d2": st["d2"],
        "stage_cfg": dict(st),
        "model": dict(cfg["model"]),
        "targets": dict(cfg["targets"]),
        "data": {
            "train_dir": str(data_dir / "train"),
            "test_dir": str(data_dir / "test"),
            "aug": cfg["data"]["aug"],
            "train_limit": cfg["data"]["train_limit"],
            "val_size": cfg["data"]["val_size"],
            "loader_workers": cfg["data"]["loader_workers"],
            "image_cache_mb": cfg["data"]["image_cache_mb"],
        },
        "init_checkpoint": str(outputs_dir(root, "stages", init, "model.pt")) if init else None,
        "seed": cfg["seed"],
        "cpus_per_worker": cfg["ray"]["cpus_per_worker"],
        "wandb": wb if wb["enabled"] else None,
        "run_name": run_name,
        "run_dir": None,  # set by the driver: workflows/runs.py names and places the run
        "checkpoint_every": cfg["ray"]["checkpoint_every"],
        "max_failures": cfg["ray"]["max_failures"],
        "board": None,
        "fingerprint": None,
    }


def model_config(config: Mapping[str, Any], heatmap2_std: float):
    from pose.model import ModelConfig

    m = dict(config["model"])
    preset = m.pop("preset")
    return ModelConfig.preset(preset, d2=int(config["d2"]), heatmap2_std=float(heatmap2_std), **m)


def check_inputs(config: Mapping[str, Any]) -> None:
    """Driver-side checks before any Ray work: data present, previous checkpoint present and fitting.

    Raises ``workflows.common.UserError`` with one line.
    """
    from pose.data import read_meta
    from workflows.common import UserError

    for split in ("train", "test"):
        d = Path(config["data"][f"{split}_dir"])
        if not (d / "meta.json").is_file():
            raise UserError(
                f"prepared data not found: {d}/meta.json (run `dvc repro prepare`, or `pose prepare SRC --out "
                f"{d.parent}`)"
            )
        try:
            read_meta(d)  # every array and shard present with its recorded size (a partial copy stops here)
        except (OSError, ValueError) as exc:
            raise UserError(str(exc)) from None
    init = config["init_checkpoint"]
    if init is None:
        return
    if not Path(init).is_file():
        prev = Path(init).parent.name
        raise UserError(
            f"previous stage checkpoint not found: {init} (stage {config['stage']} starts from {prev}; "
            f"run `dvc repro train@{prev}` or `python -m workflows.stage --d2 {int(prev[3:])}` first)"
        )
    try:
        ckpt = torch.load(init, map_location="cpu", weights_only=True)
        mc = ckpt["model_config"]
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user problem here
        raise UserError(f"previous stage checkpoint {init} is not readable ({type(exc).__name__}: {exc})") from None
    want = model_config(config, 0.01).to_dict()
    diff = [k for k in want if k not in ("d2", "heatmap2_std") and mc.get(k) != want[k]]
    if diff:
        k = diff[0]
        raise UserError(
            f"previous stage checkpoint {init} has model.{k}={mc.get(k)!r} but stages.yaml gives {want[k]!r} "
            "(rerun the earlier stages after changing the model section)"
        )


def val_indices(n: int, size: int, seed: int) -> np.ndarray:
    """Fixed random subset (sorted) of ``min(size, n)`` test indices used for per-epoch validation."""
    rng = np.random.default_rng(seed + 9173)
    return np.sort(rng.choice(n, size=min(size, n), replace=False))


# --------------------------------------------------------------------------------------------
# worker side
def make_model(config: Mapping[str, Any], heatmap2_std: float, seed: int):
    """Build the stage's model; from the previous checkpoint with ``expand_from`` when there is one
    (``heatmap2`` re-initialised, or resampled with the stage's ``heatmap2_init: upsample``)."""
    from pose.model import C2FPoseNet, expand_from

    torch.manual_seed(seed)
    model = C2FPoseNet(model_config(config, heatmap2_std))
    gen = torch.Generator().manual_seed(seed + 1)
    if config["init_checkpoint"]:
        prev = torch.load(config["init_checkpoint"], map_location="cpu", weights_only=True)
        heatmap2_init = effective_stage(config).get("heatmap2_init", "normal")
        expand_from(model, prev["model"], heatmap2_std, generator=gen, heatmap2_init=heatmap2_init)
    return model


#: where the cosine schedule ends, as a fraction of the stage's lr, when ``lr_final`` is not set
LR_FINAL_FRACTION = 0.02


def freeze_trunk(model: torch.nn.Module) -> list[torch.nn.Module]:
    """``trainable: head``: only ``heatmap2`` (the 1x1 conv whose output holds the d2 depth bins)
    keeps ``requires_grad``; returns the modules that must stay in eval mode while it trains (every
    norm layer, so the frozen trunk computes in training exactly the features it computes at test
    time)."""
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("heatmap2."))
    return [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d | torch.nn.GroupNorm)]


def train_mode(model: torch.nn.Module, frozen: list[torch.nn.Module]) -> None:
    """``model.train()`` with the ``frozen`` modules (:func:`freeze_trunk`) kept in eval mode."""
    model.train()
    for m in frozen:
        m.eval()


def _lr_factor(it: int, total: int, schedule: str, warmup: int, final: float = LR_FINAL_FRACTION) -> float:
    """Learning-rate multiplier at iteration ``it`` of ``total``: linear warm-up over ``warmup``
    iterations, then constant, cosine from 1 down to ``final``, or ×0.1 for the last 20 % (step)."""
    if warmup and it < warmup:
        return (it + 1) / warmup
    if schedule == "cosine":
        p = min(1.0, (it - warmup) / max(1, total - warmup))
        return final + (1.0 - final) * 0.5 * (1 + math.cos(math.pi * p))
    if schedule == "step":
        return 0.1 if it >= int(0.8 * total) else 1.0
    return 1.0


def _optimizer(params, st: Mapping[str, Any]) -> torch.optim.Optimizer:
    name, lr, wd, mom = st["optimizer"], st["lr"], st["weight_decay"], st["momentum"]
    if name == "rmsprop":  # Torch7 / Caffe defaults: alpha 0.99, eps 1e-8
        return torch.optim.RMSprop(params, lr=lr, alpha=0.99, eps=1e-8, weight_decay=wd, momentum=mom)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.SGD(params, lr=lr, momentum=mom, weight_decay=wd)


def _loss_config(config: Mapping[str, Any], st: Mapping[str, Any]):
    from pose.losses import LossConfig
    from pose.targets import DepthRange

    lb, ub = config["targets"]["depth_range"]
    return LossConfig(
        variant=st["loss"],
        ratio_3d=float(st["ratio_3d"]),
        integral_weight=float(st["integral_weight"]),
        integral_kind=st["integral_kind"],
        softmax_scale=float(st["softmax_scale"]),
        sigma_2d=float(config["targets"]["sigma_2d"]),
        depth_range=DepthRange(lb, ub),
        stride=4,
    )


def _datasets(config: Mapping[str, Any], input_size: int, seed: int, rank: int, world: int):
    from pose.data import AugConfig, PackedDataset

    d = config["data"]
    aug = AugConfig(**d["aug"]) if isinstance(d["aug"], Mapping) else AugConfig()
    use_aug = bool(d["aug"])
    cache = float(d["image_cache_mb"])
    train = PackedDataset(d["train_dir"], input_size=input_size, train=use_aug, aug=aug, cache_mb=cache)
    if d["train_limit"] and d["train_limit"] < len(train):
        idx = np.sort(np.random.default_rng(seed + 17).choice(len(train), d["train_limit"], replace=False))
        train = PackedDataset(d["train_dir"], input_size=input_size, train=use_aug, aug=aug, indices=idx,
                              cache_mb=cache)
    test_n = len(PackedDataset(d["test_dir"], input_size=input_size, train=False))
    vidx = val_indices(test_n, d["val_size"], seed)[rank::world]
    val = PackedDataset(d["test_dir"], input_size=input_size, train=False, indices=vidx)
    return train, val


def _to(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def evaluate_mpjpe(model, loader, depth_range, device, softmax_scale: float) -> tuple[float, float, int]:
    """Sum of per-sample root-aligned MPJPE (argmax, soft-argmax; GT root depth) and the count."""
    from pose.metrics import mpjpe
    from pose.predict import predict_loader

    res = predict_loader(model, loader, depth_range=depth_range, device=device, softmax_scale=softmax_scale,
                         decodings={m: (m, "gt") for m in ("argmax", "soft_argmax")})
    return float(mpjpe(res["argmax"], res["gt"]).sum()), float(mpjpe(res["soft_argmax"], res["gt"]).sum()), len(res["gt"])


def _allreduce(values: list[float], device: torch.device) -> list[float]:
    """Sum ``values`` over the ranks (float64; on ``device``, as NCCL needs); as given without DDP."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (the batch-norm statistics, which each DDP worker keeps for itself) on every
    rank, so that every worker validates the model rank 0 saves; nothing without DDP."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for b in module.buffers():
            dist.broadcast(b, 0)


def _write_curve(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(CURVE_FIELDS), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r.get(k), float) else r.get(k)) for k in CURVE_FIELDS})


def _wandb_run(config: Mapping[str, Any], rank: int):
    """Rank 0's wandb run of the stage (workflows/wandb_log.py), or None."""
    wb = config.get("wandb")
    if not wb or rank != 0:  # setup_wandb(rank_zero_only) is unreliable under Train V2
        return None
    try:
        import wandb  # noqa: F401
    except ImportError:
        print("[wandb] not installed; logging disabled", flush=True)
        return None
    from workflows.wandb_log import init_stage_run

    # one wandb run per training run: a resumed run (same name) continues it instead of adding one
    return init_stage_run(config)


@dataclass
class WorkerContext:
    """Where one training process runs and how it talks to whoever launched it.

    ``report(metrics, checkpoint_dir)`` is called by every rank once per epoch, after the epoch's
    checkpoint is stored; ``checkpoint_dir`` (rank 0 only, else None) is a temporary folder holding
    ``model.pt``, ``train_state.pt`` and ``curve.csv`` that must be copied before ``report`` returns.
    ``board`` (a :class:`workflows.runs.RunBoard` handle or None) carries the driver's stop request
    and counts attempts; ``sigterm`` is set when this process got SIGTERM.
    """

    rank: int
    world: int
    device: torch.device
    prepare_model: Callable[[torch.nn.Module], torch.nn.Module]
    report: Callable[[dict[str, Any], Path | None], None]
    board: Any | None = None
    sigterm: threading.Event | None = None
    reports: list[dict[str, Any]] = field(default_factory=list)  # filled by local_context's report


def ray_context(config: Mapping[str, Any]) -> WorkerContext:
    """The context of a Ray Train worker (DDP through ``ray.train.torch``): metrics go to
    ``ray.train.report`` (checkpoints go to the run's own store, ``config["run_dir"]``); SIGTERM to
    this worker becomes a stop request (:func:`workflows.runs.install_sigterm_flag`)."""
    import ray
    import ray.train
    import ray.train.torch

    from workflows.runs import BOARD_NAMESPACE, install_sigterm_flag

    ctx = ray.train.get_context()

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        ray.train.report(metrics)

    board = None
    if config.get("board"):
        try:
            board = ray.get_actor(config["board"], namespace=BOARD_NAMESPACE)
        except ValueError:  # the driver is gone (or never made one): nobody to ask us to stop
            print(f"[{config['stage']}] warning: run board {config['board']} not found; attempts are not "
                  "counted", flush=True)
    sigterm = threading.Event()
    if not install_sigterm_flag(sigterm):
        print(f"[{config['stage']}] warning: SIGTERM handler not installed; a SIGTERM ends this worker "
              "without a checkpoint", flush=True)
    return WorkerContext(
        rank=ctx.get_world_rank(), world=ctx.get_world_size(), device=ray.train.torch.get_device(),
        prepare_model=ray.train.torch.prepare_model, report=report, board=board, sigterm=sigterm,
    )


def local_context(device: str | torch.device = "cpu", out_dir: str | Path | None = None) -> WorkerContext:
    """One process, no Ray (benchmarks, quick experiments): each report is appended to
    ``ctx.reports`` and its checkpoint folder copied over ``out_dir`` (when given)."""
    reports: list[dict[str, Any]] = []

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        reports.append(dict(metrics))
        if checkpoint_dir is not None and out_dir is not None:
            shutil.copytree(checkpoint_dir, out_dir, dirs_exist_ok=True)

    return WorkerContext(rank=0, world=1, device=torch.device(device), prepare_model=lambda m: m.to(device),
                         report=report, reports=reports)


def memory_format_for(device: torch.device) -> torch.memory_format:
    """Layout of weights and input for training on ``device``: NHWC on CPU (oneDNN convolutions run
    the tiny model's step 15-22 % faster), NCHW on CUDA (NHWC was 5-26 % slower on an H200;
    benchmarks/README.md)."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def forward(model: torch.nn.Module, images: torch.Tensor, bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The training forward pass: (hm2d, vol) in fp32, computed under bf16 autocast when ``bf16``
    (the losses then run in fp32)."""
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
        hm2d, vol = model(images.contiguous(memory_format=memory_format_for(images.device)))
    return hm2d.float(), vol.float()


def train_func(config: dict[str, Any]) -> None:
    """Train one stage inside a Ray Train worker (see the module docstring for ``config``)."""
    run_worker(config, ray_context(config))


class WorkerStopped(RuntimeError):
    """Raised by every rank after a SIGTERM to one of them was turned into a checkpoint: Ray Train
    then starts the worker group again (``ray.max_failures``), which resumes from that checkpoint."""


@dataclass
class _Position:
    """Where training stands: the next batch is ``batch`` of ``epoch`` (0-based); ``sums`` / ``nb`` are
    the running loss sums of that epoch, ``curve`` the rows of the epochs done."""

    epoch: int = 0
    batch: int = 0
    iteration: int = 0
    curve: list[dict[str, Any]] = field(default_factory=list)
    sums: dict[str, float] = field(default_factory=dict)
    nb: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _load_position(d: Path, core: torch.nn.Module, opt: torch.optim.Optimizer, ema=None) -> _Position:
    """Load the checkpoint in folder ``d`` into ``core`` / ``opt`` (and the weight average ``ema``, a
    ``pose.ema.WeightEMA``); raises on any unreadable file."""
    ck = torch.load(Path(d, "model.pt"), map_location="cpu", weights_only=True)
    state = torch.load(Path(d, "train_state.pt"), map_location="cpu", weights_only=False)
    core.load_state_dict(state.get("trained_model", ck["model"]))
    if ema is not None:
        ema.model.load_state_dict(ck["model"])
        ema.updates = int(state["ema_updates"])
    opt.load_state_dict(state["optimizer"])
    _set_rng_state(state["rng"])
    return _Position(epoch=state["epoch"], batch=state["batch"], iteration=state["iteration"],
                     curve=state["curve"], sums=state["sums"], nb=state["nb"], metrics=dict(ck.get("metrics") or {}))


def _resume(store, core, opt, ema, wc: WorkerContext, tag: str, device: torch.device) -> _Position | None:
    """Rank 0 picks the newest checkpoint that verifies and loads (falling back to older ones, one
    warning line each), every other rank loads the same one. None: nothing to resume."""
    from workflows.checkpoints import Checkpoint

    if store is None:
        return None
    chosen, pos = -1, None
    if wc.rank == 0:
        ckpt, damaged = store.scan()
        for name, reason in damaged:
            print(f"{tag} warning: checkpoint {name} is damaged ({reason}); falling back to the one before",
                  flush=True)
        while ckpt is not None:
            try:
                with store.open(ckpt) as d:
                    pos = _load_position(d, core, opt, ema)
                chosen = ckpt.iteration
                break
            except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint: try the previous one
                name = ckpt.path.rsplit("/", 1)[-1]
                print(f"{tag} warning: checkpoint {name} is not loadable ({type(exc).__name__}); falling back "
                      "to the one before", flush=True)
                store.quarantine(name)
                ckpt, _ = store.scan()
    chosen = int(_allreduce([float(chosen if wc.rank == 0 else 0)], device)[0])
    if wc.rank != 0 and chosen >= 0:
        folder = f"{store.root}/ckpt-{chosen:09d}"
        manifest, reason = store.verify(folder, digests=False)
        if manifest is None:
            raise RuntimeError(f"{tag} rank {wc.rank}: checkpoint ckpt-{chosen:09d} is unreadable here ({reason})")
        with store.open(Checkpoint(chosen, folder, manifest)) as d:
            pos = _load_position(d, core, opt, ema)
    return pos


def run_worker(config: dict[str, Any], wc: WorkerContext) -> str:
    """The training loop of one stage in one worker ``wc`` (Ray Train's or :func:`local_context`).

    Resumes from the newest checkpoint in ``config["run_dir"]`` (when given) and checkpoints there
    every ``checkpoint_every`` iterations, at every epoch end and when asked to stop. Returns
    ``"done"``, or ``"stopped"`` when the driver asked to stop (after the checkpoint); raises
    :class:`WorkerStopped` after a SIGTERM to a worker (after the checkpoint).
    """
    from pose.data.sampler import ShardedBatchSampler, shard_loss_scale
    from pose.ema import WeightEMA
    from pose.losses import c2f_loss
    from pose.targets import DepthRange
    from workflows.checkpoints import CheckpointStore
    from workflows.runs import StopPoller

    rank, world, device = wc.rank, wc.world, wc.device
    torch.set_num_threads(max(1, int(round(float(config.get("cpus_per_worker", 1))))))
    st = effective_stage(config)
    seed = int(config["seed"]) * 1000 + int(config["d2"])
    tag = f"[{config['stage']}]"
    bf16 = st.get("precision", "fp32") == "bf16"

    model = make_model(config, st["heatmap2_std"], seed)
    input_size = model.cfg.input_size
    train_ds, val_ds = _datasets(config, input_size, seed, rank, world)
    batch_size = min(int(st["batch_size"]), len(train_ds))
    sampler = ShardedBatchSampler(len(train_ds), int(st["batch_size"]), rank, world, seed)
    lo, hi = sampler.rank_slice(batch_size)  # raises when there are more workers than samples per batch
    loss_scale = shard_loss_scale(hi - lo, batch_size, world)
    workers = config["data"]["loader_workers"]
    loader = torch.utils.data.DataLoader(
        train_ds, batch_sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    val_loader = torch.utils.data.DataLoader(val_ds, batch_size=max(hi - lo, 16), shuffle=False, num_workers=0)

    frozen = freeze_trunk(model) if st["trainable"] == "head" else []  # before DDP registers its hooks
    model = wc.prepare_model(model.to(memory_format=memory_format_for(device)))
    core = model.module if hasattr(model, "module") else model
    opt = _optimizer([p for p in model.parameters() if p.requires_grad], st)
    # with ema_decay the weight average is what is validated and saved as model.pt (the next stage's
    # start and evaluate's input); the trained weights travel in train_state.pt for resuming
    ema = WeightEMA(core, st["ema_decay"]) if st.get("ema_decay") else None
    evaluated = ema.model if ema is not None else core
    loss_cfg = _loss_config(config, st)
    depth_range = DepthRange(*config["targets"]["depth_range"])

    steps = sampler.batches_per_epoch
    total = st["iterations"] or st["epochs"] * steps
    final_factor = LR_FINAL_FRACTION if st["lr_final"] is None else st["lr_final"] / st["lr"]
    epochs = math.ceil(total / steps)
    every = st.get("checkpoint_every") or config.get("checkpoint_every")
    store = CheckpointStore(config["run_dir"]) if config.get("run_dir") else None
    attempt = 1
    if wc.board is not None and rank == 0:
        import ray

        attempt = int(ray.get(wc.board.next_attempt.remote()))
    pos = _resume(store, core, opt, ema, wc, tag, device)
    if pos is not None and rank == 0 and (attempt > 1 or wc.board is None):  # else the driver said it
        tries = f" (attempt {attempt} of {config['max_failures'] + 1})" if attempt > 1 else ""
        print(f"{tag} resumed at iteration {pos.iteration}{tries}", flush=True)
    elif attempt > 1 and rank == 0:
        print(f"{tag} restarted from the beginning, no checkpoint yet (attempt {attempt} of "
              f"{config['max_failures'] + 1})", flush=True)
    pos = pos or _Position()

    run = _wandb_run(config, rank)
    if rank == 0:
        src = config["init_checkpoint"] or "scratch"
        print(f"{tag} d2={config['d2']} from {src}; {len(train_ds)} train / {int(config['data']['val_size'])} val "
              f"samples, {world} worker(s) x batch {hi - lo} on {device}, {epochs} epoch(s) x {steps} it "
              f"({total} iterations), {st['optimizer']} lr {st['lr']:g}, loss {st['loss']} ratio_3d "
              f"{st['ratio_3d']:g}{f', weight average {ema.decay:g}' if ema else ''}"
              f"{', heatmap2 only (trunk frozen)' if frozen else ''}"
              f"{', bf16 autocast' if bf16 else ''}", flush=True)

    def save(p: _Position, final: bool = False, report: dict[str, Any] | None = None) -> None:
        """Rank 0 writes the checkpoint of position ``p`` into the store; then, with ``report``, every
        rank reports those metrics (rank 0 with the checkpoint's folder)."""
        from pose.model import save_checkpoint

        with (tempfile.TemporaryDirectory(prefix="c2f-ckpt-") if rank == 0 else contextlib.nullcontext()) as tmp:
            if rank == 0:
                tmp = Path(tmp)
                save_checkpoint(
                    tmp / "model.pt", evaluated, depth_range=list(config["targets"]["depth_range"]),
                    stage=config["stage"], d2=int(config["d2"]), bbox_enlarge=train_ds.bbox_enlarge,
                    softmax_scale=float(st["softmax_scale"]),
                    metrics={k: float(v) for k, v in p.metrics.items()},
                    train={k: v for k, v in st.items() if v is not None},
                    init_checkpoint=config["init_checkpoint"] or "",
                )
                state = {"optimizer": opt.state_dict(), "epoch": p.epoch, "batch": p.batch,
                         "iteration": p.iteration, "curve": p.curve, "sums": p.sums, "nb": p.nb,
                         "rng": _rng_state(), "fingerprint": config.get("fingerprint")}
                if ema is not None:
                    state |= {"trained_model": core.state_dict(), "ema_updates": ema.updates}
                torch.save(state, tmp / "train_state.pt")
                _write_curve(tmp / "curve.csv", p.curve)
                if store is not None:
                    store.save(p.iteration, tmp, {"epoch": p.epoch, "batch": p.batch, "final": final,
                                                  "metrics": p.metrics, "fingerprint": config.get("fingerprint")})
                if final and run is not None:
                    from workflows.wandb_log import log_model

                    log_model(run, tmp / "model.pt", config["stage"], p.metrics)
            if report is not None:
                wc.report(report, tmp)

    poller = StopPoller(wc.board if rank == 0 else None)
    announced = False
    train_mode(model, frozen)
    while pos.epoch < epochs:
        epoch = pos.epoch
        sampler.set_position(epoch, min(pos.batch, steps))
        t0, here = time.time(), 0  # the rate counts the batches trained since (re)starting the epoch
        for batch in loader:
            if pos.iteration >= total:
                break
            it = pos.iteration
            batch = _to(batch, device)
            lr = st["lr"] * _lr_factor(it, total, st["schedule"], st["warmup_iters"], final_factor)
            for g in opt.param_groups:
                g["lr"] = lr
            hm2d, vol = forward(model, batch["image"], bf16)
            loss, parts = c2f_loss(hm2d, vol, batch, loss_cfg)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{tag} loss is {loss.item()} at iteration {it} (lower lr?)")
            opt.zero_grad(set_to_none=True)
            (loss * loss_scale if loss_scale != 1.0 else loss).backward()
            if st["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), st["grad_clip"])
            opt.step()
            if ema is not None:
                ema.update(core)
            # one small all-reduce per iteration: the batch's mean loss and whether any rank must stop
            got_sigterm = wc.sigterm is not None and wc.sigterm.is_set()
            if got_sigterm and not announced:
                print(f"{tag} rank {rank} got SIGTERM: checkpoint after this iteration, then stop", flush=True)
                announced = True
            local_stop = (1.0 if poller.poll() else 0.0, 1.0 if got_sigterm else 0.0)
            *stop, batch_loss = _allreduce([*local_stop, float(loss.detach()) * loss_scale / world], device)
            pos.iteration, pos.batch, pos.nb, here = it + 1, pos.batch + 1, pos.nb + 1, here + 1
            pos.sums["loss"] = pos.sums.get("loss", 0.0) + batch_loss
            for k, v in parts.items():
                name = k if k.startswith("loss") else f"loss_{k}"
                pos.sums[name] = pos.sums.get(name, 0.0) + float(v)
            if rank == 0 and (pos.iteration % st["log_every"] == 0 or pos.iteration == total):
                rate = here / max(time.time() - t0, 1e-9)
                eta = int(round((total - pos.iteration) / max(rate, 1e-9)))
                print(f"{tag} epoch {epoch + 1}/{epochs} it {pos.iteration}/{total} loss "
                      f"{pos.sums['loss'] / pos.nb:.5f} lr {lr:.3g} ({rate:.1f} it/s, ETA {eta // 60}:{eta % 60:02d})",
                      flush=True)
            if any(stop):
                return _stop(save, pos, stop, wc, tag, run, device)
            if every and pos.iteration % every == 0 and pos.batch < steps and pos.iteration < total:
                save(pos)
        _broadcast_buffers(evaluated)
        s_arg, s_soft, n = evaluate_mpjpe(evaluated, val_loader, depth_range, device, float(st["softmax_scale"]))
        train_mode(model, frozen)
        s_arg, s_soft, n = _allreduce([s_arg, s_soft, float(n)], device)
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "iteration": pos.iteration,
            "loss": pos.sums.get("loss", 0.0) / max(pos.nb, 1),
            **{k: v / max(pos.nb, 1) for k, v in pos.sums.items() if k != "loss"},
            "val_mpjpe": s_arg / max(n, 1.0),
            "val_mpjpe_soft": s_soft / max(n, 1.0),
            "lr": float(opt.param_groups[0]["lr"]),
            "epoch_time_s": time.time() - t0,
        }
        pos = _Position(epoch=epoch + 1, batch=0, iteration=pos.iteration,
                        curve=[*pos.curve, {k: metrics.get(k) for k in CURVE_FIELDS}],
                        metrics=dict(metrics))
        if rank == 0:
            print(f"{tag} epoch {epoch + 1}/{epochs} done: loss {metrics['loss']:.5f}  val MPJPE argmax "
                  f"{metrics['val_mpjpe']:.1f} mm, soft {metrics['val_mpjpe_soft']:.1f} mm "
                  f"({metrics['epoch_time_s']:.1f} s)", flush=True)
        # stored before it is reported: a crash in between loses a report, never repeats one
        save(pos, final=pos.epoch >= epochs, report=metrics)
        if run is not None:
            from workflows.wandb_log import log_epoch, step_offset

            log_epoch(run, metrics, step_offset(config["wandb"].get("previous", []), len(train_ds)) + pos.iteration)
    if run is not None:
        run.finish()
    return "done"


def _stop(save, pos: _Position, stop, wc: WorkerContext, tag: str, run, device) -> str:
    """Checkpoint ``pos``, wait for every rank, then return ``"stopped"`` (the driver asked) or raise
    :class:`WorkerStopped` (a worker got SIGTERM)."""
    save(pos)
    _allreduce([0.0], device)  # every rank waits until rank 0 has stored the checkpoint
    if run is not None:
        run.finish()
    by_sigterm = stop[1] > 0
    if wc.rank == 0:
        why = "a worker got SIGTERM" if by_sigterm else "the driver asked to stop"
        print(f"{tag} stopped at iteration {pos.iteration}: {why}; checkpoint saved", flush=True)
    if by_sigterm:
        raise WorkerStopped(f"stopped on SIGTERM at iteration {pos.iteration} after a checkpoint")
    return "stopped"
