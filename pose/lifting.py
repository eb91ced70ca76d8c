"""2D→3D lifting: Martinez' residual MLP and Chen et al.'s (CVPR 2019) geometric self-supervision.

Library only (no orchestration; ``workflows/lift.py`` runs it). Spec: ``chen_spec.md``.

Units and frames
----------------
- Joints are the 17 H36M joints of ``pose.skeleton`` (root = 0). Camera frame: X right, Y down,
  Z forward.
- **Unit space.** Every 2D pose is root-centred and divided by a per-pose scale ``s``
  (:func:`normalize_2d`); the default scale is the RMS of the root-relative *y* coordinates of the
  16 non-root joints (``"y_rms"``), which is exactly invariant under the training rotation about the
  vertical axis (orthographic), so real and rotated-fake 2D poses carry no scale cue for the
  discriminator (spec §7.1/§7.3, "scale leak"). The discriminator always sees re-normalised poses.
  ``"kudo"`` (mean root distance) is available for comparison.
- 3D poses produced by the lifter are **root-relative, in unit space** (the same unit as the
  normalised 2D input): ``X = (x, y, d)`` orthographically, and perspectively (Chen, root at
  distance ``c`` on the optical axis) ``z = max(c + d − d_root, 1)``, ``X = (x·z/c, y·z/c, z − c)``.
  With ``d ≡ 0`` both give the flat pose ``(x, y, 0)``.
- :func:`lift_2d` converts to millimetres with the lifter's ``unit_mm`` buffer (the mean 3D scale of
  the training poses for supervised lifters; a nominal H36M value otherwise).

Objective (spec §2): ``L_G = L_adv + w_2D·L_2D + w_3D·L_3D + w_T·L_T (+ w_h·L_heuristic)``,
``L_D = softplus(−D(x)) + softplus(D(x̃))``, accuracy-cap gating with cap 0.9. Reductions: ``L_2D`` and
``L_3D`` are means over batch, joints and coordinates of squared differences; GAN terms are batch means.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pose.metrics import action_table, pa_mpjpe

__all__ = [
    "NOMINAL_UNIT_MM",
    "CycleOutput",
    "Discriminator",
    "Lifter",
    "LifterConfig",
    "ResidualMLP",
    "SupervisedConfig",
    "UnsupervisedConfig",
    "cap_gates",
    "cycle",
    "cycle_losses",
    "disc_accuracy",
    "disc_loss",
    "evaluate_predictions",
    "flat_pose",
    "gen_adv_loss",
    "kudo_heuristic_loss",
    "lift",
    "lift_2d",
    "load_lifter",
    "n_mpjpe",
    "normalize_2d",
    "pose_scale",
    "predict_3d",
    "project",
    "random_rotation",
    "rotate",
    "save_lifter",
    "train_supervised",
    "train_unsupervised",
    "unrotate",
]

NUM_JOINTS = 17
#: y-RMS (mm) of root-relative real H36M poses (S9 Posing fixture: 478.7 mm); the default mm scale of
#: lifters trained without 3D.
NOMINAL_UNIT_MM = 478.7
#: Kudo heuristic joints: v0 = joint 9 − joint 8 (nose − neck), v1 = joint 14 − joint 11 (RSho − LSho).
_HEUR = (9, 8, 14, 11)


# --- networks -----------------------------------------------------------------------------------
class ResidualMLP(nn.Module):
    """Martinez' residual MLP: Lin → [BN] → ReLU → Drop, ``blocks`` × (2 such layers + skip), Lin.

    ``(B, in_dim) → (B, out_dim)``. ``batch_norm=False`` is the discriminator variant (spec §1.2).
    """

    def __init__(self, in_dim: int, out_dim: int, width: int = 1024, blocks: int = 4,
                 dropout: float = 0.5, batch_norm: bool = True) -> None:
        super().__init__()
        if in_dim < 1 or out_dim < 1 or width < 1 or blocks < 0:
            raise ValueError(f"ResidualMLP: bad sizes in_dim={in_dim} out_dim={out_dim} width={width} blocks={blocks}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a value in [0, 1), got {dropout}")

        def layer(i: int, o: int) -> nn.Sequential:
            mods: list[nn.Module] = [nn.Linear(i, o)]
            if batch_norm:
                mods.append(nn.BatchNorm1d(o))
            mods.append(nn.ReLU(inplace=True))
            if dropout > 0:
                mods.append(nn.Dropout(dropout))
            return nn.Sequential(*mods)

        self.inp = layer(in_dim, width)
        self.blocks = nn.ModuleList(nn.Sequential(layer(width, width), layer(width, width)) for _ in range(blocks))
        self.out = nn.Linear(width, out_dim)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for blk in self.blocks:
            h = h + blk(h)
        return self.out(h)


@dataclass
class LifterConfig:
    """Lifter architecture and camera model.

    output: ``"depth"`` (Chen/Kudo: one depth per joint, x/y from the input) or ``"xyz"`` (Martinez:
    full root-relative 3D). camera: ``"perspective"`` (root at distance ``c``) or ``"orthographic"``.
    """

    output: str = "depth"
    camera: str = "perspective"
    c: float = 10.0
    width: int = 1024
    blocks: int = 4
    dropout: float = 0.5
    batch_norm: bool = True
    norm: str = "y_rms"

    def __post_init__(self) -> None:
        if self.output not in ("depth", "xyz"):
            raise ValueError(f"output: expected 'depth' or 'xyz', got {self.output!r}")
        if self.camera not in ("perspective", "orthographic"):
            raise ValueError(f"camera: expected 'perspective' or 'orthographic', got {self.camera!r}")
        if self.norm not in ("y_rms", "kudo"):
            raise ValueError(f"norm: expected 'y_rms' or 'kudo', got {self.norm!r}")
        if not self.c > 1.0:
            raise ValueError(f"c: expected a camera distance > 1, got {self.c}")


class Lifter(nn.Module):
    """Lifting network ``(B, 17, 2)`` unit-space 2D → ``(B, 17)`` depths or ``(B, 17, 3)`` 3D.

    Use :func:`lift` to get root-relative unit-space 3D poses for either output kind.
    Buffer ``unit_mm`` (scalar): millimetres per unit, used by :func:`lift_2d`.
    """

    def __init__(self, cfg: LifterConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or LifterConfig()
        out = NUM_JOINTS if self.cfg.output == "depth" else NUM_JOINTS * 3
        self.net = ResidualMLP(NUM_JOINTS * 2, out, self.cfg.width, self.cfg.blocks, self.cfg.dropout,
                               self.cfg.batch_norm)
        self.register_buffer("unit_mm", torch.tensor(float(NOMINAL_UNIT_MM)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_2d(x, "x")
        y = self.net(x.reshape(x.shape[0], -1))
        return y if self.cfg.output == "depth" else y.reshape(-1, NUM_JOINTS, 3)


class Discriminator(nn.Module):
    """2D-pose discriminator ``(B, 17, 2) → (B, 1)`` logits: residual MLP without BN (spec §1.2).

    The temporal discriminator (spec §2.5) is the same network applied to frame differences.
    """

    def __init__(self, width: int = 1024, blocks: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = ResidualMLP(NUM_JOINTS * 2, 1, width, blocks, dropout, batch_norm=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_2d(x, "x")
        return self.net(x.reshape(x.shape[0], -1))


def _check_2d(x: torch.Tensor, name: str) -> None:
    if x.ndim != 3 or x.shape[1:] != (NUM_JOINTS, 2):
        raise ValueError(f"{name}: expected 2D poses of shape (B, {NUM_JOINTS}, 2), got {tuple(x.shape)}")


# --- geometry -----------------------------------------------------------------------------------
def pose_scale(p: torch.Tensor, norm: str = "y_rms") -> torch.Tensor:
    """Per-pose scale ``(..., 17, C≥2) → (...)`` of root-relative coordinates (non-root joints).

    ``"y_rms"``: RMS of the y coordinates (rotation-invariant about the vertical axis);
    ``"kudo"``: mean xy distance to the root (Kudo et al.).
    """
    rel = p[..., 1:, :2] - p[..., :1, :2]
    if norm == "y_rms":
        return rel[..., 1].pow(2).mean(-1).sqrt()
    if norm == "kudo":
        return rel.norm(dim=-1).mean(-1)
    raise ValueError(f"norm: expected 'y_rms' or 'kudo', got {norm!r}")


def normalize_2d(p, norm: str = "y_rms", eps: float = 1e-8):
    """Root-centre and scale 2D poses: ``(..., 17, 2)`` → (unit-space poses, scale ``(...)``).

    Accepts numpy or torch; returns the same kind. ``p_unit = (p − p_root) / s``.
    """
    is_np = isinstance(p, np.ndarray)
    t = torch.as_tensor(p, dtype=torch.float32) if is_np else p
    if t.shape[-2:] != (NUM_JOINTS, 2):
        raise ValueError(f"p: expected 2D poses of shape (..., {NUM_JOINTS}, 2), got {tuple(t.shape)}")
    s = pose_scale(t, norm).clamp_min(eps)
    out = (t - t[..., :1, :]) / s[..., None, None]
    return (out.numpy(), s.numpy()) if is_np else (out, s)


def random_rotation(n: int, azim_range: float = math.pi, elev_range: float = math.pi / 9,
                    generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """``(n, 3, 3)`` rotations ``R = R_elev(φ)·R_azim(θ)``, θ ~ U[−azim, azim] about the vertical (y)
    axis, φ ~ U[−elev, elev] about the camera x axis (spec §2.2)."""
    u = torch.rand(n, 2, generator=generator, device=device) * 2 - 1
    th, ph = u[:, 0] * azim_range, u[:, 1] * elev_range
    ct, st, cp, sp = th.cos(), th.sin(), ph.cos(), ph.sin()
    o, z = torch.ones_like(th), torch.zeros_like(th)
    # azimuth (Appendix B): x' = x cosθ + z sinθ, y' = y, z' = −x sinθ + z cosθ
    ra = torch.stack([ct, z, st, z, o, z, -st, z, ct], -1).reshape(n, 3, 3)
    re = torch.stack([o, z, z, z, cp, -sp, z, sp, cp], -1).reshape(n, 3, 3)
    return re @ ra


def rotate(X: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Rotate root-relative poses ``(B, J, 3)`` about the root by ``R (B, 3, 3)``: ``X Rᵀ``."""
    return X @ R.transpose(-1, -2)


def unrotate(X: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rotate`: ``X R``."""
    return X @ R


def project(X: torch.Tensor, camera: str = "perspective", c: float = 10.0) -> torch.Tensor:
    """Root-relative unit-space 3D ``(B, J, 3)`` → unit-space 2D ``(B, J, 2)``.

    Orthographic: ``(X, Y)``. Perspective (root at ``(0, 0, c)``): ``c·(X, Y)/max(Z + c, 1)``.
    """
    if camera == "orthographic":
        return X[..., :2]
    if camera == "perspective":
        return c * X[..., :2] / (X[..., 2:] + c).clamp_min(1.0)
    raise ValueError(f"camera: expected 'perspective' or 'orthographic', got {camera!r}")


def depth_to_3d(x: torch.Tensor, d: torch.Tensor, camera: str = "perspective", c: float = 10.0) -> torch.Tensor:
    """Unit-space 2D ``(B, J, 2)`` + depths ``(B, J)`` → root-relative unit-space 3D ``(B, J, 3)``.

    The root's depth is forced to 0 (``d − d_root``) so that rotations are about the root.
    """
    d = d - d[:, :1]
    if camera == "orthographic":
        return torch.cat([x, d[..., None]], -1)
    z = (d + c).clamp_min(1.0)[..., None]
    return torch.cat([x * z / c, z - c], -1)


def lift(model: Lifter, x: torch.Tensor) -> torch.Tensor:
    """Apply a :class:`Lifter` to unit-space 2D ``(B, 17, 2)``: root-relative unit-space 3D ``(B, 17, 3)``."""
    y = model(x)
    if model.cfg.output == "xyz":
        return y - y[:, :1]
    return depth_to_3d(x, y, model.cfg.camera, model.cfg.c)


def flat_pose(x: torch.Tensor | np.ndarray):
    """The flat-depth baseline: ``(N, 17, 2) → (N, 17, 3)`` with z ≡ 0 (numpy or torch)."""
    if isinstance(x, np.ndarray):
        return np.concatenate([x, np.zeros(x.shape[:-1] + (1,), x.dtype)], -1)
    return torch.cat([x, torch.zeros_like(x[..., :1])], -1)


@dataclass
class CycleOutput:
    """Tensors of one lift → rotate → project → lift → rotate back → project cycle (spec §2.3)."""

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
    """``(L_2D, L_3D)``: mean squared ``x̂ − x`` and ``X̂' − X̃`` (spec §2.3)."""
    l2d = (out.x_back - x).pow(2).mean()
    target = out.X_rot.detach() if stop_grad_3d else out.X_rot
    l3d = (out.X_rot2 - target).pow(2).mean()
    return l2d, l3d


# --- adversarial terms --------------------------------------------------------------------------
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


# --- metrics ------------------------------------------------------------------------------------
def n_mpjpe(pred, gt) -> np.ndarray:
    """MPJPE after root alignment and per-frame optimal scale of ``pred`` (N-MPJPE), ``(N,)`` float64."""
    p = np.asarray(pred, np.float64)
    g = np.asarray(gt, np.float64)
    p = p - p[:, :1]
    g = g - g[:, :1]
    s = (p * g).sum((1, 2)) / np.maximum((p * p).sum((1, 2)), 1e-12)
    return np.linalg.norm(s[:, None, None] * p - g, axis=-1).mean(-1)


def evaluate_predictions(pred, gt, actions=None, action_names=None, sign_agnostic: bool = True) -> dict:
    """Metrics of predicted 3D ``(N, 17, 3)`` (any scale) against ground truth ``(N, 17, 3)`` mm.

    Returns ``{"n_mpjpe", "pa_mpjpe"}`` means (mm; ``n_mpjpe`` = MPJPE after root alignment and scale
    normalisation) and, when ``sign_agnostic``, ``"sign_agnostic": {"flipped": bool, "n_mpjpe",
    "pa_mpjpe"}`` — the better of ẑ and −ẑ chosen **once for the whole set** by P-MPJPE (Kudo's
    "allow inversion"; spec §7.2). With ``actions`` (N,) int and ``action_names``, per-action tables
    (``pose.metrics.action_table``) under ``"per_action"``.
    """
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"pred: shape {pred.shape} does not match gt {gt.shape} (expected (N, J, 3))")
    pa = pa_mpjpe(pred, gt)
    nm = n_mpjpe(pred, gt)
    res: dict = {"n_mpjpe": float(nm.mean()), "pa_mpjpe": float(pa.mean()), "count": int(len(pred))}
    per = {"n_mpjpe": nm, "pa_mpjpe": pa}
    if sign_agnostic:
        flipped = pred * np.array([1.0, 1.0, -1.0])
        pa_f = pa_mpjpe(flipped, gt)
        use_flip = bool(pa_f.mean() < pa.mean())
        nm_f = n_mpjpe(flipped, gt) if use_flip else nm
        res["sign_agnostic"] = {"flipped": use_flip, "n_mpjpe": float(nm_f.mean()),
                                "pa_mpjpe": float((pa_f if use_flip else pa).mean())}
        per["sign_agnostic_pa_mpjpe"] = pa_f if use_flip else pa
    if actions is not None and action_names is not None:
        res["per_action"] = {k: action_table(v, np.asarray(actions), list(action_names)) for k, v in per.items()}
    return res


@torch.no_grad()
def predict_3d(model: Lifter, x_unit, batch_size: int = 4096) -> np.ndarray:
    """Eval-mode lifting of unit-space 2D ``(N, 17, 2)`` → root-relative unit-space 3D ``(N, 17, 3)``."""
    was = model.training
    model.eval()
    x = torch.as_tensor(np.asarray(x_unit), dtype=torch.float32)
    outs = [lift(model, x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    model.train(was)
    return torch.cat(outs).numpy() if outs else np.zeros((0, NUM_JOINTS, 3), np.float32)


# --- training -----------------------------------------------------------------------------------
@dataclass
class UnsupervisedConfig:
    """Chen et al. self-supervision. Defaults are the paper's weights (w_2D 10, w_3D 0.001, w_T 1)
    with the spec's calibrated learning rates (lifter 1e-3, discriminator 1e-4; §7.3)."""

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


def _batches(n: int, batch: int, gen: torch.Generator):
    while True:
        yield torch.randint(0, n, (batch,), generator=gen)


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
    _check_2d(x_all, "x_unit")
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

    ``y_unit`` is the 3D target in the same unit as the input (see ``pose.lift_data.to_unit_space``).
    With ``output="depth"`` only the z channel is regressed (MSE); with ``"xyz"`` all of it.
    ``unit_mm`` (mean 3D scale of the training set, mm) is stored in the lifter for :func:`lift_2d`.
    """
    cfg = cfg or SupervisedConfig()
    x_all = torch.as_tensor(np.asarray(x_unit), dtype=torch.float32)
    y_all = torch.as_tensor(np.asarray(y_unit), dtype=torch.float32)
    _check_2d(x_all, "x_unit")
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


# --- checkpoints and inference ------------------------------------------------------------------
def save_lifter(path: str | Path, model: Lifter, **extra) -> None:
    """Save ``{"lifter": state_dict, "lifter_config": dict, **extra}`` (plain types; weights_only-safe)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {"lifter": model.state_dict(), "lifter_config": asdict(model.cfg), "kind": "lifter"}
    ckpt.update(extra)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)


def load_lifter(path: str | Path, map_location: str = "cpu") -> Lifter:
    """Load a lifter saved by :func:`save_lifter` (``torch.load(weights_only=True)``), in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path: lifter checkpoint {path} does not exist")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or "lifter" not in ckpt or "lifter_config" not in ckpt:
        raise ValueError(f"path: {path} is not a lifter checkpoint (no 'lifter'/'lifter_config' keys)")
    model = Lifter(LifterConfig(**ckpt["lifter_config"]))
    model.load_state_dict(ckpt["lifter"])
    model.eval()
    return model


def lift_2d(lifter: Lifter, joints_2d_px) -> np.ndarray:
    """Lift 2D joints in pixels ``(N, 17, 2)`` (or ``(17, 2)``) → root-relative 3D ``(N, 17, 3)`` mm.

    The 2D poses are root-centred and scale-normalised (so any pixel frame with square pixels works);
    the unit-space 3D output is multiplied by ``lifter.unit_mm``. The camera frame's axes apply:
    x right, y down, z away from the camera. Unsupervised lifters have a global depth-sign ambiguity
    (spec §7.2) unless trained with the heuristic loss.
    """
    arr = np.asarray(joints_2d_px, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (NUM_JOINTS, 2):
        raise ValueError(f"joints_2d_px: expected shape (N, {NUM_JOINTS}, 2), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("joints_2d_px: contains NaN or inf")
    x, _ = normalize_2d(arr.astype(np.float32), lifter.cfg.norm)
    return predict_3d(lifter, x) * float(lifter.unit_mm)
