"""Training augmentation: scale, rotation, horizontal flip with left/right swap, colour jitter.

Ranges (those of the C2F and Integral training code, identical in both):

- scale ``s = clip(1 + scale_factor·N(0,1), 1 − scale_factor, 1 + scale_factor)`` (0.75..1.25);
  ``s > 1`` zooms out (the crop box side is multiplied by ``s``);
- rotation ``r = clip(rot_factor·N(0,1), −rot_max, rot_max)`` degrees (30, ±60) with probability
  ``rot_prob`` (0.4), else 0; counter-clockwise as displayed;
- flip with probability ``flip_prob`` (0.5): image mirrored, joints swapped by
  ``skeleton.FLIP_PERM_17``, depth unchanged;
- colour: every RGB channel × U(1 − color_factor, 1 + color_factor) (0.8..1.2), clipped.

(The Caffe seed's own ranges are wider: scale U(0.7, 1.3), rotation U(−40°, 40°) always;
set the fields to reproduce them approximately.)
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pose import skeleton


@dataclass(frozen=True)
class AugConfig:
    """Augmentation ranges; ``enabled=False`` (or ``PackedDataset(train=False)``) turns all off."""

    scale_factor: float = 0.25
    rot_factor: float = 30.0
    rot_prob: float = 0.4
    rot_max: float = 60.0
    flip_prob: float = 0.5
    color_factor: float = 0.2
    enabled: bool = True

    def __post_init__(self) -> None:
        for name in ("scale_factor", "rot_factor", "rot_max", "color_factor"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.scale_factor >= 1:
            raise ValueError(f"scale_factor must be < 1, got {self.scale_factor}")
        for name in ("rot_prob", "flip_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass(frozen=True)
class AugParams:
    """One draw: box scale (>1 zooms out), rotation (deg, CCW), flip, RGB gains."""

    scale: float = 1.0
    rot: float = 0.0
    flip: bool = False
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)


IDENTITY = AugParams()


def sample_aug(cfg: AugConfig, rng: np.random.Generator) -> AugParams:
    """Draw :class:`AugParams` from ``cfg`` (identity when ``cfg.enabled`` is False)."""
    if not cfg.enabled:
        return IDENTITY
    sf = cfg.scale_factor
    scale = float(np.clip(1.0 + sf * rng.standard_normal(), 1.0 - sf, 1.0 + sf))
    rot = float(np.clip(cfg.rot_factor * rng.standard_normal(), -cfg.rot_max, cfg.rot_max))
    if rng.random() >= cfg.rot_prob:
        rot = 0.0
    flip = bool(rng.random() < cfg.flip_prob)
    cf = cfg.color_factor
    color = tuple(float(g) for g in rng.uniform(1.0 - cf, 1.0 + cf, size=3))
    return AugParams(scale=scale, rot=rot, flip=flip, color=color)


def flip_affine(width: int) -> np.ndarray:
    """(2, 3) horizontal mirror of an image ``width`` px wide: x' = width − 1 − x."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]])


def compose_affine(A, B) -> np.ndarray:
    """(2, 3) affine ``A ∘ B`` (apply B first)."""
    A3 = np.vstack([np.asarray(A, dtype=np.float64), [0.0, 0.0, 1.0]])
    B3 = np.vstack([np.asarray(B, dtype=np.float64), [0.0, 0.0, 1.0]])
    return (A3 @ B3)[:2]


def flip_joints(joints, width: int | None = None, perm=skeleton.FLIP_PERM_17) -> np.ndarray:
    """Swap left/right joints; with ``width`` also mirror x (2D px). (J, C) → (J, C)."""
    out = np.asarray(joints)[list(perm)].copy()
    if width is not None:
        out[..., 0] = width - 1 - out[..., 0]
    return out


def flip_sample(image: np.ndarray, joints_2d, joints_3d=None, visible=None):
    """Mirror an (H, W, C) image with its joints: returns (image, joints_2d, joints_3d, visible).

    ``joints_2d`` x mirrored and left/right swapped; ``joints_3d`` and ``visible`` only swapped
    (3D stays in the un-mirrored camera, see :mod:`pose.data.dataset`). Applying it twice is
    the identity.
    """
    w = image.shape[1]
    out_3d = None if joints_3d is None else flip_joints(joints_3d)
    out_vis = None if visible is None else flip_joints(np.asarray(visible)[:, None])[:, 0]
    return np.ascontiguousarray(image[:, ::-1]), flip_joints(joints_2d, w), out_3d, out_vis


def apply_color(image: np.ndarray, gains) -> np.ndarray:
    """Multiply each channel of an (H, W, 3) uint8 image by ``gains`` (3,), clip to [0, 255]."""
    g = np.asarray(gains, dtype=np.float64)
    if np.allclose(g, 1.0):
        return image
    lut = np.clip(np.round(np.arange(256, dtype=np.float64)[:, None] * g[None, :]), 0, 255).astype(np.uint8)
    return cv2.LUT(np.ascontiguousarray(image), lut.reshape(256, 1, 3))
