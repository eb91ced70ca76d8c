"""The per-worker training loop of one curriculum stage, shared by ``workflows/stage.py`` and
``workflows/tune.py``: set up, one training step, the end of an epoch.

``train_func(config)`` runs inside every Ray Train worker (``TorchTrainer(train_func,
train_loop_config=run.loop_config(), ...)``): it is ``run_worker(run, ray_context(...))`` for the
:class:`workflows.stage_run.StageRun` in ``config`` (a Tune trial's samples applied), and
``run_worker(run, local_context("cuda"))`` runs the same loop in one process without Ray
(``benchmarks/accuracy_budget.py``, ``tests/test_cuda.py``).

Order: global batch ``b`` of epoch ``e`` is a function of (seed, e, b) and is split over the workers
(:mod:`pose.data.sampler`), so the optimisation does not depend on the world size (up to float
summation order and batch-norm statistics, which are per worker) and a resumed run trains exactly
the batches an uninterrupted one would.

Checkpoints (``workflows/train_state.py``): rank 0 writes one into the run's store every
``checkpoint_every`` iterations, at every epoch end and when a stop is requested (SIGTERM to any
worker, or the driver's request through its board; ``workflows/runs.py``); a (re)started worker group
resumes from the newest one that verifies. With ``ema_decay`` (:class:`pose.ema.WeightEMA`) the
validation and ``model.pt`` use the running weight average; with ``trainable: head`` only ``heatmap2``
trains (:func:`freeze_trunk`). Every epoch all workers call ``report(metrics)`` with ``{"epoch",
"iteration", "loss", "loss_2d", "loss_3d", ..., "val_mpjpe" (argmax, GT root depth, mm),
"val_mpjpe_soft", "lr", "epoch_time_s"}`` — after the epoch's checkpoint is stored, so a restart never
reports an epoch twice.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from pose.data import AugConfig, PackedDataset
from pose.data.sampler import ShardedBatchSampler, shard_loss_scale
from pose.ema import WeightEMA
from pose.loss_config import LossConfig
from pose.losses import c2f_loss
from pose.metrics import mpjpe
from pose.model import C2FPoseNet, expand_from
from pose.predict import predict_loader
from pose.targets import DepthRange
from workflows.checkpoints import CheckpointStore
from workflows.runs import BOARD_NAMESPACE, StopPoller, install_sigterm_flag
from workflows.stage_run import StageRun
from workflows.train_state import CURVE_FIELDS, Position, resume, save
from workflows.wandb_log import init_stage_run, log_epoch, log_model, step_offset

__all__ = [
    "WorkerContext",
    "WorkerStopped",
    "evaluate_mpjpe",
    "forward",
    "local_context",
    "make_model",
    "memory_format_for",
    "ray_context",
    "run_worker",
    "train_func",
    "val_indices",
]

#: where the cosine schedule ends, as a fraction of the stage's lr, when ``lr_final`` is not set
LR_FINAL_FRACTION = 0.02


# --------------------------------------------------------------------------------------------
# where a worker runs
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


def ray_context(board: str | None, tag: str) -> WorkerContext:
    """The context of a Ray Train worker (DDP through ``ray.train.torch``): metrics go to
    ``ray.train.report`` (checkpoints go to the run's own store); ``board`` names the driver's run
    board; SIGTERM to this worker becomes a stop request (:func:`workflows.runs.install_sigterm_flag`)."""
    import ray  # here: a worker process has Ray; a local run never imports it
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    handle = None
    if board:
        try:
            handle = ray.get_actor(board, namespace=BOARD_NAMESPACE)
        except ValueError:  # the driver is gone (or never made one): nobody to ask us to stop
            print(f"{tag} warning: run board {board} not found; attempts are not counted", flush=True)
    sigterm = threading.Event()
    if not install_sigterm_flag(sigterm):
        print(f"{tag} warning: SIGTERM handler not installed; a SIGTERM ends this worker without a checkpoint",
              flush=True)
    return WorkerContext(
        rank=ctx.get_world_rank(), world=ctx.get_world_size(), device=ray.train.torch.get_device(),
        prepare_model=ray.train.torch.prepare_model, report=lambda metrics, folder: ray.train.report(metrics),
        board=handle, sigterm=sigterm,
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


def train_func(config: dict[str, Any]) -> None:
    """Train one stage inside a Ray Train worker (``config``: see the module docstring)."""
    run = StageRun.from_loop_config(config)
    run_worker(run, ray_context(config.get("board"), f"[{run.stage}]"))


class WorkerStopped(RuntimeError):
    """Raised by every rank after a SIGTERM to one of them was turned into a checkpoint: Ray Train
    then starts the worker group again (``ray.max_failures``), which resumes from that checkpoint."""


# --------------------------------------------------------------------------------------------
# pieces of a step
def make_model(run: StageRun, seed: int) -> C2FPoseNet:
    """Build the stage's model; from the previous checkpoint with ``expand_from`` when there is one
    (``heatmap2`` re-initialised, or resampled with the stage's ``heatmap2_init: upsample``)."""
    st = run.settings
    torch.manual_seed(seed)
    model = C2FPoseNet(run.model_config())
    gen = torch.Generator().manual_seed(seed + 1)
    if run.init_checkpoint:
        prev = torch.load(run.init_checkpoint, map_location="cpu", weights_only=True)
        expand_from(model, prev["model"], st.heatmap2_std, generator=gen, heatmap2_init=st.heatmap2_init)
    return model


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


def _optimizer(params, st) -> torch.optim.Optimizer:
    if st.optimizer == "rmsprop":  # Torch7 / Caffe defaults: alpha 0.99, eps 1e-8
        return torch.optim.RMSprop(params, lr=st.lr, alpha=0.99, eps=1e-8, weight_decay=st.weight_decay,
                                   momentum=st.momentum)
    if st.optimizer == "adam":
        return torch.optim.Adam(params, lr=st.lr, weight_decay=st.weight_decay)
    return torch.optim.SGD(params, lr=st.lr, momentum=st.momentum, weight_decay=st.weight_decay)


def val_indices(n: int, size: int, seed: int) -> np.ndarray:
    """Fixed random subset (sorted) of ``min(size, n)`` test indices used for per-epoch validation."""
    rng = np.random.default_rng(seed + 9173)
    return np.sort(rng.choice(n, size=min(size, n), replace=False))


def _datasets(run: StageRun, input_size: int, seed: int, rank: int, world: int):
    d = run.data
    aug = AugConfig(**d.aug) if isinstance(d.aug, Mapping) else AugConfig()
    use_aug, cache = bool(d.aug), float(d.image_cache_mb)
    train = PackedDataset(d.train_dir, input_size=input_size, train=use_aug, aug=aug, cache_mb=cache)
    if d.train_limit and d.train_limit < len(train):
        idx = np.sort(np.random.default_rng(seed + 17).choice(len(train), d.train_limit, replace=False))
        train = PackedDataset(d.train_dir, input_size=input_size, train=use_aug, aug=aug, indices=idx, cache_mb=cache)
    test_n = len(PackedDataset(d.test_dir, input_size=input_size, train=False))
    vidx = val_indices(test_n, d.val_size, seed)[rank::world]
    return train, PackedDataset(d.test_dir, input_size=input_size, train=False, indices=vidx)


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


def evaluate_mpjpe(model, loader, depth_range, device, softmax_scale: float) -> tuple[float, float, int]:
    """Sum of per-sample root-aligned MPJPE (argmax, soft-argmax; GT root depth) and the count."""
    res = predict_loader(model, loader, depth_range=depth_range, device=device, softmax_scale=softmax_scale,
                         decodings={m: (m, "gt") for m in ("argmax", "soft_argmax")})
    return float(mpjpe(res["argmax"], res["gt"]).sum()), float(mpjpe(res["soft_argmax"], res["gt"]).sum()), len(res["gt"])


def _allreduce(values: list[float], device: torch.device) -> list[float]:
    """Sum ``values`` over the ranks (float64; on ``device``, as NCCL needs); as given without DDP."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (the batch-norm statistics, which each DDP worker keeps for itself) on every
    rank, so that every worker validates the model rank 0 saves; nothing without DDP."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for b in module.buffers():
            dist.broadcast(b, 0)


# --------------------------------------------------------------------------------------------
# the loop: set up, step, end of epoch
#: where a worker's time goes (seconds since this attempt started): set-up (model, data, DDP), waiting
#: for a batch, the training step (forward, loss, backward, optimiser, weight average, the step's
#: all-reduce), validation, checkpoints; reported with every epoch's metrics as ``time_<part>_s``
TIME_PARTS = ("setup", "data", "step", "validation", "checkpoint")


@dataclass
class _Worker:
    """One worker's training set-up (made once by :func:`_set_up`)."""

    run: StageRun
    wc: WorkerContext
    tag: str
    model: torch.nn.Module  # what trains (DDP-wrapped under Ray)
    core: torch.nn.Module  # the bare network inside ``model``
    evaluated: torch.nn.Module  # what is validated and saved: the weight average, or ``core``
    ema: WeightEMA | None
    frozen: list[torch.nn.Module]
    opt: torch.optim.Optimizer
    train_ds: PackedDataset
    sampler: ShardedBatchSampler
    loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    loss_cfg: LossConfig
    loss_scale: float
    lr_final_fraction: float  # where the cosine schedule ends, as a fraction of the stage's lr
    total: int  # iterations of the stage
    steps: int  # iterations per epoch
    epochs: int
    store: CheckpointStore | None
    wandb: Any | None = None
    clock: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIME_PARTS, 0.0))

    def timed(self, part: str, since: float) -> float:
        """Add the time since ``since`` to ``part``; returns now."""
        now = time.perf_counter()
        self.clock[part] += now - since
        return now

    def save(self, pos: Position, final: bool = False, report: dict[str, Any] | None = None) -> None:
        """Checkpoint ``pos``; with ``report`` every rank then reports those metrics (rank 0 with the
        checkpoint's folder), and the final model goes to wandb."""
        st = self.run.settings

        def after(folder: Path | None) -> None:
            if final and folder is not None and self.wandb is not None:
                log_model(self.wandb, folder / "model.pt", self.run.stage, pos.metrics)
            if report is not None:
                self.wc.report(report, folder)

        t0 = time.perf_counter()
        meta = {"depth_range": list(self.run.depth_range), "stage": self.run.stage, "d2": self.run.d2,
                "bbox_enlarge": self.train_ds.bbox_enlarge, "softmax_scale": float(st.softmax_scale),
                "train": {k: v for k, v in st.as_dict().items() if v is not None},
                "init_checkpoint": self.run.init_checkpoint or ""}
        save(pos, rank=self.wc.rank, store=self.store, evaluated=self.evaluated, trained=self.core, opt=self.opt,
             ema=self.ema, model_meta=meta, fingerprint=self.run.fingerprint, final=final, with_folder=after)
        self.timed("checkpoint", t0)


def _set_up(run: StageRun, wc: WorkerContext) -> _Worker:
    """The model (from the previous stage), data, optimiser, weight average and store of one worker."""
    st, device = run.settings, wc.device
    torch.set_num_threads(max(1, int(round(float(run.cpus_per_worker)))))
    seed = run.seed * 1000 + run.d2
    model = make_model(run, seed)
    train_ds, val_ds = _datasets(run, model.cfg.input_size, seed, wc.rank, wc.world)
    batch_size = min(int(st.batch_size), len(train_ds))
    sampler = ShardedBatchSampler(len(train_ds), int(st.batch_size), wc.rank, wc.world, seed)
    lo, hi = sampler.rank_slice(batch_size)  # raises when there are more workers than samples per batch
    workers = run.data.loader_workers
    loader = torch.utils.data.DataLoader(train_ds, batch_sampler=sampler, num_workers=workers,
                                         pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    val_loader = torch.utils.data.DataLoader(val_ds, batch_size=max(hi - lo, 16), shuffle=False, num_workers=0)
    frozen = freeze_trunk(model) if st.trainable == "head" else []  # before DDP registers its hooks
    model = wc.prepare_model(model.to(memory_format=memory_format_for(device)))
    core = model.module if hasattr(model, "module") else model
    opt = _optimizer([p for p in model.parameters() if p.requires_grad], st)
    # with ema_decay the weight average is what is validated and saved as model.pt (the next stage's
    # start and evaluate's input); the trained weights travel in train_state.pt for resuming
    ema = WeightEMA(core, st.ema_decay) if st.ema_decay else None
    steps = sampler.batches_per_epoch
    total = st.iterations or st.epochs * steps
    return _Worker(
        run=run, wc=wc, tag=f"[{run.stage}]", model=model, core=core, evaluated=ema.model if ema else core,
        ema=ema, frozen=frozen, opt=opt, train_ds=train_ds, sampler=sampler, loader=loader, val_loader=val_loader,
        loss_cfg=run.loss_config(), loss_scale=shard_loss_scale(hi - lo, batch_size, wc.world),
        lr_final_fraction=LR_FINAL_FRACTION if st.lr_final is None else st.lr_final / st.lr, total=total, steps=steps,
        epochs=math.ceil(total / steps), store=CheckpointStore(run.run_dir) if run.run_dir else None,
    )


def _start(w: _Worker) -> Position:
    """Resume from the run's newest checkpoint (or start at 0), then say so: the header line on rank 0."""
    run, st, rank = w.run, w.run.settings, w.wc.rank
    attempt = 1
    if w.wc.board is not None and rank == 0:
        import ray  # only a Ray worker has a board

        attempt = int(ray.get(w.wc.board.next_attempt.remote()))
    pos = resume(w.store, w.core, w.opt, w.ema, rank=rank, tag=w.tag,
                 agree=lambda i: int(_allreduce([float(i)], w.wc.device)[0]))
    tries = f" (attempt {attempt} of {run.max_failures + 1})" if attempt > 1 else ""
    if rank == 0:
        if pos is not None:
            start = f"resumed at iteration {pos.iteration}{tries}; d2={run.d2},"
        elif attempt > 1:
            start = f"restarted from the beginning, no checkpoint yet{tries}; d2={run.d2} from {run.init_checkpoint or 'scratch'};"
        else:
            start = f"d2={run.d2} from {run.init_checkpoint or 'scratch'};"
        lo, hi = w.sampler.rank_slice(min(int(st.batch_size), len(w.train_ds)))
        print(f"{w.tag} {start} {len(w.train_ds)} train / {int(run.data.val_size)} val samples, "
              f"{w.wc.world} worker(s) x batch {hi - lo} on {w.wc.device}, {w.epochs} epoch(s) x {w.steps} it "
              f"({w.total} iterations), {st.optimizer} lr {st.lr:g}, loss {st.loss} ratio_3d {st.ratio_3d:g}"
              f"{f', weight average {w.ema.decay:g}' if w.ema else ''}"
              f"{', heatmap2 only (trunk frozen)' if w.frozen else ''}"
              f"{', bf16 autocast' if st.precision == 'bf16' else ''}", flush=True)
        # one wandb run per training run: a resumed run (same name) continues it instead of adding one
        w.wandb = init_stage_run(run.wandb, run.run_name, run.stage, _wandb_config(run)) if run.wandb else None
    return pos or Position()


def _wandb_config(run: StageRun) -> dict[str, Any]:
    """What a stage's wandb run records as its config: the run's settings, model, targets and data."""
    return {"stage": run.stage, "settings": run.settings.as_dict(), "model": run.model,
            "targets": {"sigma_2d": run.sigma_2d, "depth_range": list(run.depth_range)},
            "data": dataclasses.asdict(run.data), "init_checkpoint": run.init_checkpoint, "seed": run.seed,
            "run_name": run.run_name, "fingerprint": run.fingerprint}


def _step(w: _Worker, batch: dict[str, Any], pos: Position, poller: StopPoller) -> tuple[float, float, bool]:
    """One iteration: forward, loss, backward, optimiser and weight-average updates, and one small
    all-reduce (the batch's mean loss and whether any rank must stop). Advances ``pos``; returns the
    stop flags summed over the ranks (driver's request, a worker's SIGTERM) and whether this worker
    got SIGTERM."""
    st, device = w.run.settings, w.wc.device
    it = pos.iteration
    batch = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    lr = st.lr * _lr_factor(it, w.total, st.schedule, st.warmup_iters, w.lr_final_fraction)
    for g in w.opt.param_groups:
        g["lr"] = lr
    hm2d, vol = forward(w.model, batch["image"], st.precision == "bf16")
    loss, parts = c2f_loss(hm2d, vol, batch, w.loss_cfg)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{w.tag} loss is {loss.item()} at iteration {it} (lower lr?)")
    w.opt.zero_grad(set_to_none=True)
    (loss * w.loss_scale if w.loss_scale != 1.0 else loss).backward()
    if st.grad_clip:
        torch.nn.utils.clip_grad_norm_(w.model.parameters(), st.grad_clip)
    w.opt.step()
    if w.ema is not None:
        w.ema.update(w.core)
    sigterm = w.wc.sigterm is not None and w.wc.sigterm.is_set()
    local_stop = (1.0 if poller.poll() else 0.0, 1.0 if sigterm else 0.0)
    *stop, batch_loss = _allreduce([*local_stop, float(loss.detach()) * w.loss_scale / w.wc.world], device)
    pos.iteration, pos.batch, pos.nb = it + 1, pos.batch + 1, pos.nb + 1
    pos.sums["loss"] = pos.sums.get("loss", 0.0) + batch_loss
    for k, v in parts.items():
        name = k if k.startswith("loss") else f"loss_{k}"
        pos.sums[name] = pos.sums.get(name, 0.0) + float(v)
    return stop[0], stop[1], sigterm


def _end_epoch(w: _Worker, pos: Position, t0: float) -> Position:
    """Validate (rank 0's batch-norm statistics on every rank), print, checkpoint, then report and log the
    epoch; returns the position at the start of the next epoch."""
    st, device, epoch = w.run.settings, w.wc.device, pos.epoch
    t_val = time.perf_counter()
    _broadcast_buffers(w.evaluated)
    s_arg, s_soft, n = evaluate_mpjpe(w.evaluated, w.val_loader, DepthRange(*w.run.depth_range), device,
                                      float(st.softmax_scale))
    train_mode(w.model, w.frozen)
    s_arg, s_soft, n = _allreduce([s_arg, s_soft, float(n)], device)
    w.timed("validation", t_val)
    metrics: dict[str, Any] = {
        "epoch": epoch + 1,
        "iteration": pos.iteration,
        "loss": pos.sums.get("loss", 0.0) / max(pos.nb, 1),
        **{k: v / max(pos.nb, 1) for k, v in pos.sums.items() if k != "loss"},
        "val_mpjpe": s_arg / max(n, 1.0),
        "val_mpjpe_soft": s_soft / max(n, 1.0),
        "lr": float(w.opt.param_groups[0]["lr"]),
        "epoch_time_s": time.time() - t0,
        **{f"time_{k}_s": round(v, 2) for k, v in w.clock.items()},
    }
    pos = Position(epoch=epoch + 1, batch=0, iteration=pos.iteration,
                   curve=[*pos.curve, {k: metrics.get(k) for k in CURVE_FIELDS}], metrics=dict(metrics))
    if w.wc.rank == 0:
        print(f"{w.tag} epoch {epoch + 1}/{w.epochs} done: loss {metrics['loss']:.5f}  val MPJPE argmax "
              f"{metrics['val_mpjpe']:.1f} mm, soft {metrics['val_mpjpe_soft']:.1f} mm "
              f"({metrics['epoch_time_s']:.1f} s)", flush=True)
    # stored before it is reported: a crash in between loses a report, never repeats one
    w.save(pos, final=pos.epoch >= w.epochs, report=metrics)
    if w.wandb is not None:
        log_epoch(w.wandb, metrics, step_offset((w.run.wandb or {}).get("previous", []), len(w.train_ds))
                  + pos.iteration)
    return pos


def _stop(w: _Worker, pos: Position, by_sigterm: bool) -> str:
    """Checkpoint ``pos``, wait for every rank, then return ``"stopped"`` (the driver asked) or raise
    :class:`WorkerStopped` (a worker got SIGTERM)."""
    w.save(pos)
    _allreduce([0.0], w.wc.device)  # every rank waits until rank 0 has stored the checkpoint
    if w.wandb is not None:
        w.wandb.finish()
    if w.wc.rank == 0:
        why = "a worker got SIGTERM" if by_sigterm else "the driver asked to stop"
        print(f"{w.tag} stopped at iteration {pos.iteration}: {why}; checkpoint saved", flush=True)
    if by_sigterm:
        raise WorkerStopped(f"stopped on SIGTERM at iteration {pos.iteration} after a checkpoint")
    return "stopped"


def run_worker(run: StageRun, wc: WorkerContext) -> str:
    """The training loop of one stage in one worker ``wc`` (Ray Train's or :func:`local_context`).

    Resumes from the newest checkpoint in ``run.run_dir`` (when given) and checkpoints there every
    ``checkpoint_every`` iterations, at every epoch end and when asked to stop. Returns ``"done"``, or
    ``"stopped"`` when the driver asked to stop (after the checkpoint); raises :class:`WorkerStopped`
    after a SIGTERM to a worker (after the checkpoint).
    """
    t_setup = time.perf_counter()
    w = _set_up(run, wc)
    pos = _start(w)
    w.timed("setup", t_setup)
    every = run.settings.checkpoint_every or run.checkpoint_every
    poller = StopPoller(wc.board if wc.rank == 0 else None)
    announced = False
    train_mode(w.model, w.frozen)
    while pos.epoch < w.epochs:
        w.sampler.set_position(pos.epoch, min(pos.batch, w.steps))
        t0, here = time.time(), 0  # the rate counts the batches trained since (re)starting the epoch
        tick = time.perf_counter()
        for batch in w.loader:
            if pos.iteration >= w.total:
                break
            tick = w.timed("data", tick)
            driver_stop, sigterm, mine = _step(w, batch, pos, poller)
            tick = w.timed("step", tick)
            here += 1
            if mine and not announced:
                print(f"{w.tag} rank {wc.rank} got SIGTERM: checkpoint after this iteration, then stop", flush=True)
                announced = True
            if wc.rank == 0 and (pos.iteration % run.settings.log_every == 0 or pos.iteration == w.total):
                rate = here / max(time.time() - t0, 1e-9)
                eta = int(round((w.total - pos.iteration) / max(rate, 1e-9)))
                print(f"{w.tag} epoch {pos.epoch + 1}/{w.epochs} it {pos.iteration}/{w.total} loss "
                      f"{pos.sums['loss'] / pos.nb:.5f} lr {w.opt.param_groups[0]['lr']:.3g} ({rate:.1f} it/s, "
                      f"ETA {eta // 60}:{eta % 60:02d})", flush=True)
            if driver_stop or sigterm:
                return _stop(w, pos, by_sigterm=sigterm > 0)
            if every and pos.iteration % every == 0 and pos.batch < w.steps and pos.iteration < w.total:
                w.save(pos)
            tick = time.perf_counter()
        pos = _end_epoch(w, pos, t0)
    if w.wandb is not None:
        w.wandb.finish()
    return "done"
