"""A training run's state in its checkpoint store: where training stands, writing it, resuming from it.

A checkpoint (``workflows.checkpoints.CheckpointStore`` keeps them) is three files:

- ``model.pt`` — ``pose.model.save_checkpoint`` of the weights that are validated and handed on (with
  ``ema_decay``, the running weight average), with the stage, d2, depth range, crop factor and
  soft-argmax scale, metrics and settings;
- ``train_state.pt`` — the optimiser, the :class:`Position` (epoch, batch in the epoch, iteration,
  the epoch's running loss sums, the curve so far), every RNG's state and the run's fingerprint; with
  a weight average also the trained weights (``trained_model``) and the average's update count;
- ``curve.csv`` — one row per epoch done (:data:`CURVE_FIELDS`).

Rank 0 writes (:func:`save`); a (re)started worker group resumes from the newest checkpoint that
verifies (:func:`resume`): rank 0 picks it, falling back past damaged ones (one warning line each,
set aside by the store), and every other rank loads the same one. Since the batch order is a function
of (seed, epoch, batch), a resumed run trains exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import csv
import random
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pose.model import save_checkpoint
from workflows.checkpoints import Checkpoint, CheckpointStore

__all__ = ["CURVE_FIELDS", "Position", "resume", "save"]

CURVE_FIELDS = ("epoch", "iteration", "loss", "val_mpjpe", "val_mpjpe_soft", "lr", "epoch_time_s")


@dataclass
class Position:
    """Where training stands: the next batch is ``batch`` of ``epoch`` (0-based); ``sums`` / ``nb`` are
    the running loss sums of that epoch, ``curve`` the rows of the epochs done, ``metrics`` the last
    epoch's."""

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


def _write_curve(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(CURVE_FIELDS), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r.get(k), float) else r.get(k)) for k in CURVE_FIELDS})


def save(pos: Position, *, rank: int, store: CheckpointStore | None, evaluated: torch.nn.Module,
         trained: torch.nn.Module, opt: torch.optim.Optimizer, ema: Any, model_meta: dict[str, Any],
         fingerprint: str | None, final: bool = False,
         with_folder: Callable[[Path | None], None] | None = None) -> None:
    """Rank 0 writes the checkpoint of ``pos`` (``evaluated`` as ``model.pt`` with ``model_meta``, the
    keyword arguments of ``pose.model.save_checkpoint``; ``trained`` / ``ema`` / ``opt`` into
    ``train_state.pt``) into ``store``; then ``with_folder(folder)`` runs on every rank (rank 0 with the
    checkpoint's temporary folder, the others with None), e.g. to report the epoch or log the model."""
    with (tempfile.TemporaryDirectory(prefix="c2f-ckpt-") if rank == 0 else contextlib.nullcontext()) as tmp:
        if rank == 0:
            tmp = Path(tmp)
            save_checkpoint(tmp / "model.pt", evaluated, metrics={k: float(v) for k, v in pos.metrics.items()},
                            **model_meta)
            state = {"optimizer": opt.state_dict(), "epoch": pos.epoch, "batch": pos.batch,
                     "iteration": pos.iteration, "curve": pos.curve, "sums": pos.sums, "nb": pos.nb,
                     "rng": _rng_state(), "fingerprint": fingerprint}
            if ema is not None:
                state |= {"trained_model": trained.state_dict(), "ema_updates": ema.updates}
            torch.save(state, tmp / "train_state.pt")
            _write_curve(tmp / "curve.csv", pos.curve)
            if store is not None:
                store.save(pos.iteration, tmp, {"epoch": pos.epoch, "batch": pos.batch, "final": final,
                                                "metrics": pos.metrics, "fingerprint": fingerprint})
        if with_folder is not None:
            with_folder(tmp)


def _load(d: Path, trained: torch.nn.Module, opt: torch.optim.Optimizer, ema: Any) -> Position:
    """Load the checkpoint in folder ``d`` into ``trained`` / ``opt`` (and the weight average ``ema``, a
    ``pose.ema.WeightEMA``); raises on any unreadable file."""
    ck = torch.load(Path(d, "model.pt"), map_location="cpu", weights_only=True)
    state = torch.load(Path(d, "train_state.pt"), map_location="cpu", weights_only=False)
    trained.load_state_dict(state.get("trained_model", ck["model"]))
    if ema is not None:
        ema.model.load_state_dict(ck["model"])
        ema.updates = int(state["ema_updates"])
    opt.load_state_dict(state["optimizer"])
    _set_rng_state(state["rng"])
    return Position(epoch=state["epoch"], batch=state["batch"], iteration=state["iteration"],
                    curve=state["curve"], sums=state["sums"], nb=state["nb"], metrics=dict(ck.get("metrics") or {}))


def resume(store: CheckpointStore | None, trained: torch.nn.Module, opt: torch.optim.Optimizer, ema: Any, *,
           rank: int, tag: str, agree: Callable[[int], int]) -> Position | None:
    """Load the newest checkpoint that verifies into every rank (see the module docstring); None when
    there is nothing to resume. ``agree(i)`` returns rank 0's ``i`` on every rank (an all-reduce of
    the chosen iteration, the others giving 0)."""
    if store is None:
        return None
    chosen, pos = -1, None
    if rank == 0:
        ckpt, damaged = store.scan()
        for name, reason in damaged:
            print(f"{tag} warning: checkpoint {name} is damaged ({reason}); falling back to the one before",
                  flush=True)
        while ckpt is not None:
            try:
                with store.open(ckpt) as d:
                    pos = _load(d, trained, opt, ema)
                chosen = ckpt.iteration
                break
            except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint: try the previous one
                name = ckpt.path.rsplit("/", 1)[-1]
                print(f"{tag} warning: checkpoint {name} is not loadable ({type(exc).__name__}); falling back "
                      "to the one before", flush=True)
                store.quarantine(name)
                ckpt, _ = store.scan()
    chosen = agree(chosen if rank == 0 else 0)
    if rank != 0 and chosen >= 0:
        folder = f"{store.root}/ckpt-{chosen:09d}"
        manifest, reason = store.verify(folder, digests=False)
        if manifest is None:
            raise RuntimeError(f"{tag} rank {rank}: checkpoint ckpt-{chosen:09d} is unreadable here ({reason})")
        with store.open(Checkpoint(chosen, folder, manifest)) as d:
            pos = _load(d, trained, opt, ema)
    return pos
