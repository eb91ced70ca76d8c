"""Lifting networks (Martinez' residual MLP, the 2D-pose discriminator), their checkpoints, and
lifting 2D joints (unit space or pixels) to root-relative 3D."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pose.lifting.geometry import NORMS, NUM_JOINTS, check_2d, depth_to_3d, normalize_2d

__all__ = [
    "NOMINAL_UNIT_MM",
    "Discriminator",
    "Lifter",
    "LifterConfig",
    "ResidualMLP",
    "lift",
    "lift_2d",
    "load_lifter",
    "predict_3d",
    "save_lifter",
]

#: y-RMS (mm) of root-relative real H36M poses (S9 Posing fixture: 478.7 mm); the default mm scale of
#: lifters trained without 3D.
NOMINAL_UNIT_MM = 478.7
#: initial scale of a perspective depth lifter's output layer (:class:`Lifter`)
PERSPECTIVE_OUT_SCALE = 0.01


class ResidualMLP(nn.Module):
    """Martinez' residual MLP: Lin → [BN] → ReLU → Drop, ``blocks`` × (2 such layers + skip), Lin.

    ``(B, in_dim) → (B, out_dim)``. ``batch_norm=False`` is the discriminator variant (Chen et al.'s
    discriminator has no batch normalisation).
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
    norm: the per-pose 2D scale of unit space (``pose.lifting.geometry.pose_scale``): ``"y_rms"``,
    ``"kudo"`` or ``"head"`` (Chen et al.'s root-to-head distance).
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
        if self.norm not in NORMS:
            raise ValueError(f"norm: expected one of {NORMS}, got {self.norm!r}")
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
        if self.cfg.output == "depth" and self.cfg.camera == "perspective":
            # start near flat depth: the perspective cycle divides by each joint's depth, and the
            # random first depths of a full-size output layer put joints at the camera (the
            # self-supervised cycle then diverged: 2D reprojection error ~3 units)
            with torch.no_grad():
                self.net.out.weight.mul_(PERSPECTIVE_OUT_SCALE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_2d(x, "x")
        y = self.net(x.reshape(x.shape[0], -1))
        return y if self.cfg.output == "depth" else y.reshape(-1, NUM_JOINTS, 3)


class Discriminator(nn.Module):
    """2D-pose discriminator ``(B, 17, 2) → (B, 1)`` logits: residual MLP without BN (as Chen et al.).

    The temporal discriminator (Chen et al.'s variant for sequences) is the same network applied to frame differences.
    """

    def __init__(self, width: int = 1024, blocks: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = ResidualMLP(NUM_JOINTS * 2, 1, width, blocks, dropout, batch_norm=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_2d(x, "x")
        return self.net(x.reshape(x.shape[0], -1))


def lift(model: Lifter, x: torch.Tensor) -> torch.Tensor:
    """Apply a :class:`Lifter` to unit-space 2D ``(B, 17, 2)``: root-relative unit-space 3D ``(B, 17, 3)``."""
    y = model(x)
    if model.cfg.output == "xyz":
        return y - y[:, :1]
    return depth_to_3d(x, y, model.cfg.camera, model.cfg.c)


@torch.no_grad()
def predict_3d(model: Lifter, x_unit, batch_size: int = 4096) -> np.ndarray:
    """Eval-mode lifting of unit-space 2D ``(N, 17, 2)`` → root-relative unit-space 3D ``(N, 17, 3)``."""
    was = model.training
    model.eval()
    x = torch.as_tensor(np.asarray(x_unit), dtype=torch.float32)
    outs = [lift(model, x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    model.train(was)
    return torch.cat(outs).numpy() if outs else np.zeros((0, NUM_JOINTS, 3), np.float32)


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
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file is the same user error
        raise ValueError(f"path: {path} is not a readable lifter checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
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
    (the inversion ambiguity of lifting from 2D alone) unless trained with the heuristic loss.
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

