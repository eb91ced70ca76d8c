"""Training lifters: Chen et al.'s (CVPR 2019) geometric self-supervision and the supervised baseline.

Objective: ``L_G = L_adv + w_2D·L_2D + w_3D·L_3D + w_T·L_T (+ w_h·L_heuristic)``,
``L_D = softplus(−D(x)) + softplus(D(x̃))``, with accuracy-cap gating (cap 0.9: a network whose
opponent it beats more than 90 % of the time pauses). ``L_2D`` and ``L_3D`` are means over batch,
joints and coordinates of squared differences; the adversarial terms are batch means.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

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
from pose.skeleton import LIMB_LENGTHS_TRAIN_MM, LIMBS_C2F_17, PARENTS_17

__all__ = [
    "Checkpointing",
    "CycleOutput",
    "SupervisedConfig",
    "UnsupervisedConfig",
    "bone_ratio_loss",
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

#: bone-proportion prior (:func:`bone_ratio_loss`): the length of each of the 16 bones (child joint
#: 1..16 of ``pose.skeleton.PARENTS_17``), mm: Human3.6M's mean training-subject limb lengths
#: (``pose.skeleton.LIMB_LENGTHS_TRAIN_MM``, also the embedded clips' body model); only the ratios matter
_LIMB_MM = {limb: mm for limb, mm in zip(LIMBS_C2F_17, LIMB_LENGTHS_TRAIN_MM, strict=True)}
BONE_TEMPLATE_MM = torch.tensor([_LIMB_MM[(PARENTS_17[j], j)] for j in range(1, NUM_JOINTS)], dtype=torch.float32)

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


def bone_ratio_loss(X: torch.Tensor, template: torch.Tensor = BONE_TEMPLATE_MM) -> torch.Tensor:
    """Bone-proportion prior on 3D poses ``(B, 17, 3)``: the mean over poses of the variance over the
    16 bones of ``log(length / template length)``, 0 when a pose's bones are in the template's
    proportions at any scale. A body's proportions are known a priori (bone lengths vary ~5 % between
    adults), and a bone shorter in 2D than its share of the body must leave the image plane: the
    prior says by how much, the adversarial and cycle terms which way."""
    child = torch.arange(1, NUM_JOINTS)
    parent = torch.tensor(PARENTS_17[1:])
    length = (X[:, child] - X[:, parent]).norm(dim=-1).clamp_min(1e-6)
    r = length.log() - template.to(X).log()
    return r.var(dim=-1, unbiased=False).mean()


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
    w_bone: float = 0.0
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


@dataclass
class Checkpointing:
    """How a lifter's training is checkpointed and resumed (``workflows/lift.py`` keeps the files).

    Every ``every`` iterations (not at the last) ``save(iteration, state, lifter)`` receives the whole
    training state — weights, optimisers, the batch generator's and torch's RNG states, the history
    and the running sums of the current record — as plain objects for ``torch.save``; training given
    such a ``state`` continues from it as if never interrupted (the same batches, the same result).
    """

    every: int = 0
    save: Callable[[int, dict, Lifter], None] | None = None
    state: dict | None = None


def _snapshot(it: int, nets: dict[str, nn.Module], opts: dict[str, torch.optim.Optimizer],
              gen: torch.Generator, history: list, sums: dict, seconds: float) -> dict:
    """The training state at iteration ``it``, copied (training goes on changing the live tensors)."""
    return copy.deepcopy({"iteration": it, "nets": {k: m.state_dict() for k, m in nets.items()},
                          "optimizers": {k: o.state_dict() for k, o in opts.items()}, "generator": gen.get_state(),
                          "torch_rng": torch.get_rng_state(), "history": history, "sums": sums, "seconds": seconds})


def _restore(state: dict, nets: dict[str, nn.Module], opts: dict[str, torch.optim.Optimizer],
             gen: torch.Generator) -> int:
    """Load ``state`` (:func:`_snapshot`) into the networks, optimisers and generator; returns its iteration."""
    for k, m in nets.items():
        m.load_state_dict(state["nets"][k])
    for k, o in opts.items():
        o.load_state_dict(state["optimizers"][k])
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["iteration"])


@dataclass
class _Gan:
    """The networks and optimisers of the unsupervised lifter: lifter ``G``, 2D discriminator ``D``
    and (with ``temporal``) the temporal discriminator ``T``."""

    G: Lifter
    D: Discriminator
    T: Discriminator | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer

    @classmethod
    def make(cls, cfg: UnsupervisedConfig) -> _Gan:
        G = Lifter(cfg.lifter)
        D = Discriminator(cfg.disc_width, cfg.disc_blocks)
        T = Discriminator(cfg.disc_width, cfg.disc_blocks) if cfg.temporal else None
        d_params = list(D.parameters()) + (list(T.parameters()) if T is not None else [])
        return cls(G, D, T, torch.optim.Adam(G.parameters(), lr=cfg.lr), torch.optim.Adam(d_params, lr=cfg.lr_disc))

    def nets(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D, **({"T": self.T} if self.T is not None else {})}

    def opts(self) -> dict[str, torch.optim.Optimizer]:
        return {"G": self.opt_g, "D": self.opt_d}


def _unsup_step(gan: _Gan, x: torch.Tensor, x_next: torch.Tensor | None, real: torch.Tensor, R: torch.Tensor,
                cfg: UnsupervisedConfig) -> dict[str, float]:
    """One iteration of Chen et al.'s objective on 2D batch ``x`` (its temporal neighbours ``x_next``),
    real 2D poses ``real`` for the discriminator and rotations ``R``; returns the record's increments."""
    lc, norm = cfg.lifter, cfg.lifter.norm
    out = cycle(gan.G, x, R, lc.camera, lc.c)
    l2d, l3d = cycle_losses(out, x, cfg.stop_grad_3d)
    fake = normalize_2d(out.x_rot, norm)[0]
    lf, lr_ = gan.D(fake), gan.D(real)
    acc = disc_accuracy(lr_.detach(), lf.detach())
    up_g, up_d = cap_gates(acc, cfg.cap)
    loss_g = gen_adv_loss(lf) + cfg.w_2d * l2d + cfg.w_3d * l3d
    if cfg.w_heuristic > 0:
        loss_g = loss_g + cfg.w_heuristic * kudo_heuristic_loss(out.X)
    if cfg.w_bone > 0:
        loss_g = loss_g + cfg.w_bone * bone_ratio_loss(out.X)
    if gan.T is not None:
        x2_rot = project(rotate(lift(gan.G, x_next), R), lc.camera, lc.c)
        fake_t = normalize_2d(out.x_rot, norm)[0] - normalize_2d(x2_rot, norm)[0]
        lft = gan.T(fake_t)
        lrt = gan.T(x - x_next)  # after the fake batch: the batch-norm statistics update in this order
        loss_g = loss_g + cfg.w_t * gen_adv_loss(lft)
    inc = {"l_g": float(loss_g.detach()), "l_d": 0.0, "l2d": float(l2d.detach()), "l3d": float(l3d.detach()),
           "acc": acc, "g_steps": 0, "d_steps": 0}
    if up_g:
        gan.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        gan.opt_g.step()
        inc["g_steps"] = 1
    if up_d:
        gan.opt_d.zero_grad(set_to_none=True)
        loss_d = disc_loss(lr_, gan.D(fake.detach()))
        if gan.T is not None:
            loss_d = loss_d + disc_loss(lrt, gan.T(fake_t.detach()))
        loss_d.backward()
        gan.opt_d.step()
        inc["d_steps"], inc["l_d"] = 1, float(loss_d.detach())
    return inc


def _iterations(start: int, total: int, progress: bool, desc: str):
    its = range(start + 1, total + 1)
    return tqdm(its, desc=desc, mininterval=5.0) if progress else its


_UNSUP_SUMS = {"l_g": 0.0, "l_d": 0.0, "l2d": 0.0, "l3d": 0.0, "acc": 0.0, "g_steps": 0, "d_steps": 0, "n": 0}


def train_unsupervised(x_unit, cfg: UnsupervisedConfig | None = None, next_index=None,
                       eval_fn: Callable[[Lifter], dict] | None = None, progress: bool = False,
                       log_fn: Callable[[int, dict], None] | None = None,
                       checkpointing: Checkpointing | None = None) -> tuple[Lifter, list[dict]]:
    """Train a depth lifter from unit-space 2D poses ``(N, 17, 2)`` alone (never reads 3D).

    ``next_index (N,)`` int: index of each pose's temporal neighbour (−1 if none), needed when
    ``cfg.temporal``. ``eval_fn(lifter) -> dict`` is called every ``cfg.eval_every`` iterations and
    at the end; ``log_fn(iteration, record)`` receives each record; ``checkpointing`` saves and
    resumes (:class:`Checkpointing`). Returns (lifter in eval mode, history of records with losses,
    D accuracy, gate counts and eval results).
    """
    cfg, ck = cfg or UnsupervisedConfig(), checkpointing or Checkpointing()
    x_all = torch.as_tensor(np.asarray(x_unit), dtype=torch.float32)
    check_2d(x_all, "x_unit")
    if len(x_all) == 0:
        raise ValueError("x_unit: no poses to train on")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    gan = _Gan.make(cfg)
    if cfg.temporal:
        if next_index is None:
            raise ValueError("next_index: required when temporal=True")
        nxt = torch.as_tensor(np.asarray(next_index), dtype=torch.long)
        valid = torch.nonzero(nxt >= 0).flatten()
        if len(valid) == 0:
            raise ValueError("next_index: no pose has a temporal neighbour")
    azim, elev = math.radians(cfg.azim_range_deg), math.radians(cfg.elev_range_deg)
    history, sums, start, t0 = [], dict(_UNSUP_SUMS), 0, time.time()
    if ck.state is not None:
        start = _restore(ck.state, gan.nets(), gan.opts(), gen)
        history, sums, t0 = list(ck.state["history"]), dict(ck.state["sums"]), time.time() - ck.state["seconds"]
    gan.G.train()
    gan.D.train()
    for it in _iterations(start, cfg.iterations, progress, "lift-unsup"):
        x_next = None
        if cfg.temporal:
            idx = valid[torch.randint(0, len(valid), (cfg.batch_size,), generator=gen)]
            x, x_next = x_all[idx], x_all[nxt[idx]]
        else:
            x = x_all[torch.randint(0, len(x_all), (cfg.batch_size,), generator=gen)]
        real = x_all[torch.randint(0, len(x_all), (cfg.batch_size,), generator=gen)]
        R = random_rotation(cfg.batch_size, azim, elev, gen)
        for k, v in _unsup_step(gan, x, x_next, real, R, cfg).items():
            sums[k] += v
        sums["n"] += 1
        if (cfg.eval_every and it % cfg.eval_every == 0) or it == cfg.iterations:
            n = max(sums.pop("n"), 1)
            rec = {"iteration": it, "seconds": time.time() - t0}
            rec.update({k: (v / n if k not in ("g_steps", "d_steps") else v) for k, v in sums.items()})
            _record(gan.G, it, rec, history, eval_fn, log_fn)
            sums = dict(_UNSUP_SUMS)
        if ck.every and ck.save is not None and it % ck.every == 0 and it < cfg.iterations:
            ck.save(it, _snapshot(it, gan.nets(), gan.opts(), gen, history, sums, time.time() - t0), gan.G)
    gan.G.eval()
    return gan.G, history


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
                     unit_mm: float | None = None, checkpointing: Checkpointing | None = None) -> tuple[Lifter, list[dict]]:
    """Supervised lifter: unit-space 2D ``(N, 17, 2)`` → root-relative unit-space 3D ``(N, 17, 3)``.

    ``y_unit`` is the 3D target in the same unit as the input (see ``pose.lifting.data.to_unit_space``).
    With ``output="depth"`` only the z channel is regressed (MSE); with ``"xyz"`` all of it.
    ``unit_mm`` (mean 3D scale of the training set, mm) is stored in the lifter for :func:`lift_2d`;
    ``checkpointing`` saves and resumes (:class:`Checkpointing`).
    """
    cfg, ck = cfg or SupervisedConfig(), checkpointing or Checkpointing()
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
    history, sums, start, t0 = [], {"loss": 0.0, "n": 0}, 0, time.time()
    if ck.state is not None:
        start = _restore(ck.state, {"G": G}, {"G": opt}, gen)
        history, sums, t0 = list(ck.state["history"]), dict(ck.state["sums"]), time.time() - ck.state["seconds"]
    G.train()
    for it in _iterations(start, cfg.iterations, progress, "lift-sup"):
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
        sums["loss"] += float(loss.detach())
        sums["n"] += 1
        if (cfg.eval_every and it % cfg.eval_every == 0) or it == cfg.iterations:
            rec = {"iteration": it, "seconds": time.time() - t0, "loss": sums["loss"] / max(sums["n"], 1)}
            _record(G, it, rec, history, eval_fn, log_fn)
            sums = {"loss": 0.0, "n": 0}
        if ck.every and ck.save is not None and it % ck.every == 0 and it < cfg.iterations:
            ck.save(it, _snapshot(it, {"G": G}, {"G": opt}, gen, history, sums, time.time() - t0), G)
    G.eval()
    return G, history
