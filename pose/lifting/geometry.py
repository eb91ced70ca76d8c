"""Unit-space geometry of 2D→3D lifting: normalisation, rotations, projections, depths → 3D.

Joints are the 17 H36M joints of ``pose.skeleton`` (root = 0); camera frame X right, Y down, Z forward.
**Unit space**: a 2D pose root-centred and divided by a per-pose scale (:func:`normalize_2d`; by
default the RMS of the root-relative *y* of the 16 non-root joints, ``"y_rms"``, which a rotation
about the vertical axis leaves unchanged under orthographic projection, so that real and rotated
fake 2D poses carry no scale cue for the discriminator; ``"kudo"`` = mean root distance; ``"head"`` =
the root-to-head distance, Chen et al.'s normalisation: the head 1 unit from the root, i.e. 1/c of
the focal length for a root at distance c). 3D poses
are root-relative in the same unit: orthographically ``X = (x, y, d)``; perspectively (root at
distance ``c`` on the optical axis) ``z = max(c + d − d_root, 1)``, ``X = (x·z/c, y·z/c, z − c)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "NUM_JOINTS",
    "check_2d",
    "depth_to_3d",
    "flat_pose",
    "normalize_2d",
    "pose_scale",
    "project",
    "random_rotation",
    "rotate",
    "unrotate",
]

NUM_JOINTS = 17
#: the head joint (Chen et al.'s normalisation measures the root-to-head distance)
HEAD = 10
#: the per-pose 2D scales of :func:`pose_scale`
NORMS = ("y_rms", "kudo", "head")


def check_2d(x: torch.Tensor, name: str) -> None:
    if x.ndim != 3 or x.shape[1:] != (NUM_JOINTS, 2):
        raise ValueError(f"{name}: expected 2D poses of shape (B, {NUM_JOINTS}, 2), got {tuple(x.shape)}")


def pose_scale(p: torch.Tensor, norm: str = "y_rms") -> torch.Tensor:
    """Per-pose scale ``(..., 17, C≥2) → (...)`` of root-relative coordinates (non-root joints).

    ``"y_rms"``: RMS of the y coordinates (rotation-invariant about the vertical axis);
    ``"kudo"``: mean xy distance to the root (Kudo et al.); ``"head"``: xy distance from the root to
    the head (joint 10; Chen et al.).
    """
    rel = p[..., 1:, :2] - p[..., :1, :2]
    if norm == "y_rms":
        return rel[..., 1].pow(2).mean(-1).sqrt()
    if norm == "kudo":
        return rel.norm(dim=-1).mean(-1)
    if norm == "head":
        return rel[..., HEAD - 1, :].norm(dim=-1)
    raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")


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
    axis, φ ~ U[−elev, elev] about the camera x axis (Chen et al.'s random
    rotation)."""
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


def flat_pose(x: torch.Tensor | np.ndarray):
    """The flat-depth baseline: ``(N, 17, 2) → (N, 17, 3)`` with z ≡ 0 (numpy or torch)."""
    if isinstance(x, np.ndarray):
        return np.concatenate([x, np.zeros(x.shape[:-1] + (1,), x.dtype)], -1)
    return torch.cat([x, torch.zeros_like(x[..., :1])], -1)

