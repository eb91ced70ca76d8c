"""Training lifters: Chen et al.'s (CVPR 2019) geometric self-supervision and the supervised baseline.

Objective: ``L_G = L_adv + w_2D·L_2D + w_3D·L_3D + w_T·L_T (+ w_h·L_heuristic)``,
``L_D = softplus(−D(x)) + softplus(D(x̃))``, with accuracy-cap gating (cap 0.9: a network whose
opponent it beats more than 90 % of the time pauses). ``L_2D`` and ``L_3D`` are means over batch,
joints and coordinates of squared differences; the adversarial terms are batch means.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pose.lifting.geometry import (
    NUM_JOINTS,
    check_2d,
    normalize_2d,
    project,
    random_rotation,
    rotate,
    unrotate,
)
from pose.lifting.model import Discriminator, Lifter, LifterConfig, lift

__all__ = [
    "CycleOutput",
    "SupervisedConfig",
    "UnsupervisedConfig",
    "cap_gates",
    "config_from_dict",
    "cycle",
    "cycle_losses",
    "disc_accuracy",
    "disc_loss",
    "gen_adv_loss",
    "kudo_heuristic_loss",
    "train_supervised",
    "train_unsupervised",
]

#: Kudo heuristic joints: v0 = joint 9 − joint 8 (nose − neck), v1 = joint 14 − joint 11 (RSho − LSho).
_HEUR = (9, 8, 14, 11)


@dataclass
class CycleOutput:
    """Tensors of one lift → rotate → project → lift → rotate back → project cycle (Chen et al.'s self-consistency)."""

    X: torch.Tensor        # first lift (B,J,3)
    X_rot: torch.Tensor    # X̃ = R X (B,J,3)
    x_rot: torch.Tensor    # x̃ = P(X̃) (B,J,2), the synthetic view
    X_rot2: torch.Tensor   # X̂' = lift(x̃) (B,J,3)
    x_back: torch.Tensor   # x̂ = P(R⁻¹ X̂') (B,J,2)


def cycle(model: Lifter | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, R: torch.Tensor,
          camera: str = "perspective", c: float = 10.0) -> CycleOutput:
    """Run the geometric cycle for unit-space 2D ``x (B, 17, 2)`` and rotations ``R (B, 3, 3)``.

    ``model`` is a :class:`Lifter` or any callable mapping unit-space 2D to root-relative 3D.
    """
    f = (lambda t: lift(model, t)) if isinstance(model, Lifter) else model
    X = f(x)
    X_rot = rotate(X, R)
    x_rot = project(X_rot, camera, c)
    X_rot2 = f(x_rot)
    x_back = project(unrotate(X_rot2, R), camera, c)
    return CycleOutput(X, X_rot, x_rot, X_rot2, x_back)


def cycle_losses(out: CycleOutput, x: torch.Tensor, stop_grad_3d: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_2D, L_3D)``: mean squared ``x̂ − x`` and ``X̂' − X̃`` (Chen et al.'s 2D and 3D
    consistency terms)."""
    l2d = (out.x_back - x).pow(2).mean()
    target = out.X_rot.detach() if stop_grad_3d else out.X_rot
    l3d = (out.X_rot2 - target).pow(2).mean()
    return l2d, l3d


def disc_loss(logit_real: torch.Tensor, logit_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator loss ``mean softplus(−ℓ_real) + mean softplus(ℓ_fake)`` (pass detached fakes)."""
    return F.softplus(-logit_real).mean() + F.softplus(logit_fake).mean()


def gen_adv_loss(logit_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss ``mean softplus(−ℓ_fake)``."""
    return F.softplus(-logit_fake).mean()


def disc_accuracy(logit_real: torch.Tensor, logit_fake: torch.Tensor) -> float:
    """``½(mean[σ(ℓ_real) > ½] + mean[σ(ℓ_fake) < ½])`` as a Python float."""
    return 0.5 * ((logit_real > 0).float().mean().item() + (logit_fake < 0).float().mean().item())


def cap_gates(acc: float, cap: float = 0.9) -> tuple[bool, bool]:
    """Accuracy-cap gating (Kudo): ``(update_G, update_D) = (acc ≥ 1 − cap, acc ≤ cap)``."""
    if not 0.5 <= cap <= 1.0:
        raise ValueError(f"cap: expected a value in [0.5, 1], got {cap}")
    return acc >= 1.0 - cap, acc <= cap


def kudo_heuristic_loss(X: torch.Tensor) -> torch.Tensor:
    """Kudo's face-forward heuristic on 3D ``(B, 17, 3)``: mean ReLU(−sin∠(v0, v1)) in the z–x plane.

    v0 = nose − neck, v1 = RShoulder − LShoulder; ``sin = (v0_z v1_x − v1_z v0_x)/(‖v0‖‖v1‖)`` (norms
    in the z–x plane). Real H36M poses in our camera frame give sin > 0 (loss 0).
    """
    a, b, r, l = _HEUR
    v0 = (X[:, a] - X[:, b])[:, [0, 2]]
    v1 = (X[:, r] - X[:, l])[:, [0, 2]]
    s = (v0[:, 1] * v1[:, 0] - v1[:, 1] * v0[:, 0]) / (v0.norm(dim=-1) * v1.norm(dim=-1) + 1e-8)
    return F.relu(-s).mean()


@dataclass
class UnsupervisedConfig:
    """Chen et al. self-supervision. Defaults are the paper's weights (w_2D 10, w_3D 0.001, w_T 1)
    with learning rates calibrated on Human3.6M poses (lifter 1e-3, discriminator 1e-4: a
    discriminator that learns faster than the lifter wins and the lifter collapses)."""

    lifter: LifterConfig = field(default_factory=LifterConfig)
    disc_width: int = 1024
    disc_blocks: int = 3
    iterations: int = 8000
    batch_size: int = 256
    lr: float = 1e-3
    lr_disc: float = 1e-4
    w_2d: float = 10.0
    w_3d: float = 0.001
    w_t: float = 1.0
    w_heuristic: float = 0.0
    cap: float = 0.9
    azim_range_deg: float = 180.0
    elev_range_deg: float = 20.0
    temporal: bool = False
    stop_grad_3d: bool = False
    seed: int = 0
    eval_every: int = 0


@dataclass
class SupervisedConfig:
    """Supervised (Martinez-style) lifter on the same module: MSE on root-relative unit-space 3D."""

    lifter: LifterConfig = field(default_factory=lambda: LifterConfig(output="xyz", camera="orthographic", blocks=2))
    iterations: int = 3000
    batch_size: int = 256
    lr: float = 1e-3
    lr_decay: float = 0.96
    lr_decay_every: int = 100000
    max_norm: bool = True
    seed: int = 0
    eval_every: int = 0


def config_from_dict(cls, params: dict | None):
    """Build an :class:`UnsupervisedConfig`/:class:`SupervisedConfig` from a plain dict.

    Keys: the dataclass fields and the :class:`LifterConfig` fields, either flat (as in
    ``stages.yaml``) or in a nested ``lifter`` dict; optionally a nested ``weights`` dict
    ``{w_2d, w_3d, w_t, w_heuristic}``. Unknown keys raise ``ValueError``.
    """
    params = dict(params or {})
    names = {f.name for f in fields(cls)}
    lnames = {f.name for f in fields(LifterConfig)}
    lifter = dict(params.pop("lifter", None) or {})
    weights = params.pop("weights", None) or {}
    params.update(weights)
    for k in [k for k in params if k in lnames and k not in names]:  # flat form: lifter fields at top level
        lifter[k] = params.pop(k)
    bad = sorted(set(params) - names)
    if bad:
        raise ValueError(f"params: unknown keys {bad} for {cls.__name__}")
    lbad = sorted(set(lifter) - lnames)
    if lbad:
        raise ValueError(f"params.lifter: unknown keys {lbad}")
    base = cls().lifter
    lcfg = LifterConfig(**{**asdict(base), **lifter})
    return cls(lifter=lcfg, **params)


def _record(G: nn.Module, it: int, rec: dict, history: list, eval_fn, log_fn) -> None:
    """Add held-out metrics (in eval mode) to ``rec``, append it to ``history`` and log it."""
    if eval_fn is not None:
        G.eval()
        rec.update(eval_fn(G))
        G.train()
    history.append(rec)
    if log_fn is not None:
        log_fn(it, rec)


def train_unsupervised(x_unit, cfg: UnsupervisedConfig | None = None, next_index=None,
                       eval_fn: Callable[[Lifter], dict] | None = None, progress: bool = False,
                       log_fn: Callable[[int, dict], None] | None = None) -> tuple[Lifter, list[dict]]:
    """Train a depth lifter from unit-space 2D poses ``(N, 17, 2)`` alone (never reads 3D).

    ``next_index (N,)`` int: index of each pose's temporal neighbour (−1 if none), needed when
    ``cfg.temporal``. ``eval_fn(lifter) -> dict`` is called every ``cfg.eval_every`` iterations and
    at the end; ``log_fn(iteration, record)`` receives each record. Returns (lifter in eval mode,
    history of records with losses, D accuracy, gate counts and eval results).
    """
    cfg = cfg or UnsupervisedConfig()
    x_all = torch.as_tensor(np.asarray(x_unit), dtype=torch.float32)
    check_2d(x_all, "x_unit")
    if len(x_all) == 0:
        raise ValueError("x_unit: no poses to train on")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    lc = cfg.lifter
    G = Lifter(lc)
    D = Discriminator(cfg.disc_width, cfg.disc_blocks)
    T = Discriminator(cfg.disc_width, cfg.disc_blocks) if cfg.temporal else None
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr)
    d_params = list(D.parameters()) + (list(T.parameters()) if T is not None else [])
    opt_d = torch.optim.Adam(d_params, lr=cfg.lr_disc)
    if cfg.temporal:
        if next_index is None:
            raise ValueError("next_index: required when temporal=True")
        nxt = torch.as_tensor(np.asarray(next_index), dtype=torch.long)
        valid = torch.nonzero(nxt >= 0).flatten()
        if len(valid) == 0:
            raise ValueError("next_index: no pose has a temporal neighbour")
    azim, elev = math.radians(cfg.azim_range_deg), math.radians(cfg.elev_range_deg)
    norm = lc.norm
    history: list[dict] = []
    stats = {"l_g": 0.0, "l_d": 0.0, "l2d": 0.0, "l3d": 0.0, "acc": 0.0, "g_steps": 0, "d_steps": 0, "n": 0}
    it_range = range(1, cfg.iterations + 1)
    if progress:
        from tqdm import tqdm

        it_range = tqdm(it_range, desc="lift-unsup", mininterval=5.0)
    t0 = time.time()
    G.train()
    D.train()
    for it in it_range:
        if cfg.temporal:
            idx = valid[torch.randint(0, len(valid), (cfg.batch_size,), generator=gen)]
            x = x_all[idx]
            x_next = x_all[nxt[idx]]
        else:
            idx = torch.randint(0, len(x_all), (cfg.batch_size,), generator=gen)
            x = x_all[idx]
        real = x_all[torch.randint(0, len(x_all), (cfg.batch_size,), generator=gen)]
        R = random_rotation(cfg.batch_size, azim, elev, gen)
        out = cycle(G, x, R, lc.camera, lc.c)
        l2d, l3d = cycle_losses(out, x, cfg.stop_grad_3d)
        fake = normalize_2d(out.x_rot, norm)[0]
        lf = D(fake)
        lr_ = D(real)
        acc = disc_accuracy(lr_.detach(), lf.detach())
        up_g, up_d = cap_gates(acc, cfg.cap)
        loss_g = gen_adv_loss(lf) + cfg.w_2d * l2d + cfg.w_3d * l3d
        if cfg.w_heuristic > 0:
            loss_g = loss_g + cfg.w_heuristic * kudo_heuristic_loss(out.X)
        if T is not None:
            X2 = lift(G, x_next)
            x2_rot = project(rotate(X2, R), lc.camera, lc.c)
            fake_t = normalize_2d(out.x_rot, norm)[0] - normalize_2d(x2_rot, norm)[0]
            real_t = x - x_next
            lft = T(fake_t)
            lrt = T(real_t)
            loss_g = loss_g + cfg.w_t * gen_adv_loss(lft)
        if up_g:
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            stats["g_steps"] += 1
        if up_d:
            opt_d.zero_grad(set_to_none=True)
            loss_d = disc_loss(lr_, D(fake.detach()))
            if T is not None:
                loss_d = loss_d + disc_loss(lrt, T(fake_t.detach()))
            loss_d.backward()
            opt_d.step()
            stats["d_steps"] += 1
            stats["l_d"] += float(loss_d.detach())
        stats["l_g"] += float(loss_g.detach())
        stats["l2d"] += float(l2d.detach())
        stats["l3d"] += float(l3d.detach())
        stats["acc"] += acc
        stats["n"] += 1
        last = it == cfg.iterations
        if (cfg.eval_every and it % cfg.eval_every == 0) or last:
            n = max(stats.pop("n"), 1)
            rec = {"iteration": it, "seconds": time.time() - t0}
            rec.update({k: (v / n if k not in ("g_steps", "d_steps") else v) for k, v in stats.items()})
            _record(G, it, rec, history, eval_fn, log_fn)
            stats = dict.fromkeys(stats, 0.0) | {"g_steps": 0, "d_steps": 0, "n": 0}
    G.eval()
    return G, history


def _apply_max_norm(model: nn.Module) -> None:
    """Martinez ``--max_norm``: rescale each Linear weight to Frobenius norm ≤ 1 (in place)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                n = m.weight.norm()
                if n > 1.0:
                    m.weight.mul_(1.0 / n)


def train_supervised(x_unit, y_unit, cfg: SupervisedConfig | None = None,
                     eval_fn: Callable[[Lifter], dict] | None = None, progress: bool = False,
                     log_fn: Callable[[int, dict], None] | None = None,
                     unit_mm: float | None = None) -> tuple[Lifter, list[dict]]:
    """Supervised lifter: unit-space 2D ``(N, 17, 2)`` → root-relative unit-space 3D ``(N, 17, 3)``.

    ``y_unit`` is the 3D target in the same unit as the input (see ``pose.lifting.data.to_unit_space``).
    With ``output="depth"`` only the z channel is regressed (MSE); with ``"xyz"`` all of it.
    ``unit_mm`` (mean 3D scale of the training set, mm) is stored in the lifter for :func:`lift_2d`.
    """
    cfg = cfg or SupervisedConfig()
    x_all = torch.as_tensor(np.asarray(x_unit), dtype=torch.float32)
    y_all = torch.as_tensor(np.asarray(y_unit), dtype=torch.float32)
    check_2d(x_all, "x_unit")
    if y_all.shape != (len(x_all), NUM_JOINTS, 3):
        raise ValueError(f"y_unit: expected shape ({len(x_all)}, {NUM_JOINTS}, 3), got {tuple(y_all.shape)}")
    if len(x_all) == 0:
        raise ValueError("x_unit: no poses to train on")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    G = Lifter(cfg.lifter)
    if unit_mm is not None:
        G.unit_mm.fill_(float(unit_mm))
    opt = torch.optim.Adam(G.parameters(), lr=cfg.lr)
    y_all = y_all - y_all[:, :1]
    history: list[dict] = []
    acc_loss, n = 0.0, 0
    t0 = time.time()
    it_range = range(1, cfg.iterations + 1)
    if progress:
        from tqdm import tqdm

        it_range = tqdm(it_range, desc="lift-sup", mininterval=5.0)
    G.train()
    for it in it_range:
        for g in opt.param_groups:
            g["lr"] = cfg.lr * cfg.lr_decay ** (it / cfg.lr_decay_every)
        idx = torch.randint(0, len(x_all), (cfg.batch_size,), generator=gen)
        pred = lift(G, x_all[idx])
        tgt = y_all[idx]
        loss = (pred[..., 2] - tgt[..., 2]).pow(2).mean() if cfg.lifter.output == "depth" else (pred - tgt).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cfg.max_norm:
            _apply_max_norm(G.net)
        acc_loss += float(loss.detach())
        n += 1
        if (cfg.eval_every and it % cfg.eval_every == 0) or it == cfg.iterations:
            rec = {"iteration": it, "seconds": time.time() - t0, "loss": acc_loss / max(n, 1)}
            _record(G, it, rec, history, eval_fn, log_fn)
            acc_loss, n = 0.0, 0
    G.eval()
    return G, history

