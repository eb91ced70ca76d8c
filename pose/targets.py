"""C2F training targets: depth discretisation, pixel<->heatmap units, 2D heatmaps, 3D volumes.

Targets are built **batched, on the training device, from joint coordinates** (the data loader only
delivers coordinates).  The L2 loss on the 3D volume never needs the materialised volume: see
:func:`pose.losses.volume_l2_separable`; :func:`volume_target` is the plain reference.

Conventions (binding for the whole project; pose.camera and pose.decode use the same):

- Pixels: pixel i is centred at coordinate i.  Heatmap cell k (stride s = input/output) is centred
  at input pixel ``s*k + (s-1)/2``: ``hm = (px - (s-1)/2)/s`` (:func:`px_to_hm`).
- Depth: root-relative ``z_rel = Z_joint - Z_root`` (mm).  ONE :class:`DepthRange` ``(lb, ub)`` is
  used for encoding and decoding (the Caffe seed encodes with the C2F range and decodes with
  (-950.64, 892.54): a known bug, not reproduced).  ``n = (z_rel - lb)/(ub - lb)`` in [0, 1];
  bin coordinate for ``d2`` bins ``zb = n*d2 - 0.5`` (bin k centred at k, like pixels).  Rounding
  ``zb`` gives the C2F bin (``floor(zb + 0.5) == floor(n*d2)``, and at d2=64 this is C2F's ``zind - 1``;
  for smaller d2 it equals C2F's ``ceil(zind*d2/64) - 1``).
- Target shape: ``(B, J, D, H, W)`` (depth-major within joint, as the model's volume output),
  coordinates ``(B, J, 3)`` ordered (x, y, z): x, y in heatmap cells, z in bin units.
- Gaussians: *untruncated*, peak value 1 at the (continuous) centre, true standard deviation
  ``sigma`` (in cells / bins), sampled at the cell centres; no window, no clamping.  The 2D default
  sigma is 2.0 cells (true std, as the Caffe seed / Simple Baselines; C2F's Torch gaussian had an
  effective std of 3.25).  A depth sigma of 0 means a single bin: a one-hot profile on the nearest
  bin (``floor(zb + 0.5)``; all zero if that bin is outside the volume), which is C2F's ``size_z == 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

Array = Any  # np.ndarray | torch.Tensor | float

__all__ = [
    "DepthRange",
    "C2F_DEPTH_RANGE",
    "depth_to_norm",
    "norm_to_depth",
    "norm_to_bin",
    "bin_to_norm",
    "depth_to_bin",
    "bin_to_depth",
    "px_to_hm",
    "hm_to_px",
    "c2f_size_z",
    "sigma_z_for",
    "gaussian_1d",
    "separable_factors",
    "heatmap_2d",
    "volume_target",
    "make_coords",
]


@dataclass(frozen=True)
class DepthRange:
    """Root-relative depth range (mm) covered by the volume's depth axis: ``lb < ub``."""

    lb: float
    ub: float

    def __post_init__(self) -> None:
        lb, ub = float(self.lb), float(self.ub)
        if not (math.isfinite(lb) and math.isfinite(ub) and ub > lb):
            raise ValueError(f"depth_range must have finite lb < ub, got ({self.lb}, {self.ub})")
        object.__setattr__(self, "lb", lb)
        object.__setattr__(self, "ub", ub)

    @property
    def width(self) -> float:
        """ub - lb (mm)."""
        return self.ub - self.lb

    def bin_size(self, d2: int) -> float:
        """Width of one depth bin at resolution ``d2`` (mm)."""
        return self.width / _check_d2(d2)

    @classmethod
    def coerce(cls, value: DepthRange | tuple | list | dict | None) -> DepthRange:
        """Accept a DepthRange, ``[lb, ub]``, ``{"lb":..,"ub":..}`` or None (-> C2F range)."""
        if value is None:
            return C2F_DEPTH_RANGE
        if isinstance(value, DepthRange):
            return value
        if isinstance(value, dict):
            return cls(value["lb"], value["ub"])
        if isinstance(value, list | tuple) and len(value) == 2:
            return cls(value[0], value[1])
        raise ValueError(f"depth_range must be DepthRange, [lb, ub] or dict, got {value!r}")


#: C2F's 64-bin voxel limits (c2f-vol-demo voxel_limits.mat, first and last edge), 31.032 mm bins.
C2F_DEPTH_RANGE = DepthRange(-1005.1859029814127, 980.8598618317474)


def _check_d2(d2: Any, name: str = "d2") -> int:
    if isinstance(d2, bool) or not isinstance(d2, int | np.integer) or int(d2) < 1:
        raise ValueError(f"{name} must be an int >= 1, got {d2!r}")
    return int(d2)


def _check_stride(stride: Any) -> int | float:
    if not isinstance(stride, int | float | np.integer | np.floating) or not stride > 0:
        raise ValueError(f"stride must be a positive number, got {stride!r}")
    return stride


def _check_finite(x: Array, name: str) -> None:
    if isinstance(x, torch.Tensor):
        ok = bool(torch.isfinite(x).all())
    else:
        ok = bool(np.all(np.isfinite(np.asarray(x, dtype=np.float64))))
    if not ok:
        raise ValueError(f"{name} contains NaN or infinite values")


# --------------------------------------------------------------------------- unit conversions
def depth_to_norm(z_rel: Array, depth_range: DepthRange = C2F_DEPTH_RANGE) -> Array:
    """Root-relative depth (mm) -> normalised depth ``n = (z - lb)/(ub - lb)`` (in [0,1] inside)."""
    dr = DepthRange.coerce(depth_range)
    return (z_rel - dr.lb) / dr.width


def norm_to_depth(n: Array, depth_range: DepthRange = C2F_DEPTH_RANGE) -> Array:
    """Normalised depth -> root-relative depth (mm); inverse of :func:`depth_to_norm`."""
    dr = DepthRange.coerce(depth_range)
    return n * dr.width + dr.lb


def norm_to_bin(n: Array, d2: int) -> Array:
    """Normalised depth -> bin coordinate ``zb = n*d2 - 0.5`` (bin k centred at k)."""
    d2 = _check_d2(d2)
    return n * d2 - 0.5


def bin_to_norm(zb: Array, d2: int) -> Array:
    """Bin coordinate -> normalised depth ``(zb + 0.5)/d2``."""
    d2 = _check_d2(d2)
    return (zb + 0.5) / d2


def depth_to_bin(z_rel: Array, d2: int, depth_range: DepthRange = C2F_DEPTH_RANGE) -> Array:
    """Root-relative depth (mm) -> bin coordinate at resolution d2."""
    return norm_to_bin(depth_to_norm(z_rel, depth_range), d2)


def bin_to_depth(zb: Array, d2: int, depth_range: DepthRange = C2F_DEPTH_RANGE) -> Array:
    """Bin coordinate at resolution d2 -> root-relative depth (mm); bin k -> its centre."""
    return norm_to_depth(bin_to_norm(zb, d2), depth_range)


def px_to_hm(px: Array, stride: int | float) -> Array:
    """Input-pixel coordinates -> heatmap-cell coordinates: ``(px - (s-1)/2)/s``."""
    s = _check_stride(stride)
    return (px - (s - 1) / 2.0) / s


def hm_to_px(hm: Array, stride: int | float) -> Array:
    """Heatmap-cell coordinates -> input-pixel coordinates: ``s*hm + (s-1)/2``."""
    s = _check_stride(stride)
    return hm * s + (s - 1) / 2.0


# --------------------------------------------------------------------------- gaussian widths
def c2f_size_z(d2: int, sigma_2d: float = 2.0) -> int:
    """C2F depth window (odd, in bins): ``2*floor((6*sigma_2d*d2/64 + 1)/2) + 1``
    (the C2F Torch code's window: six 2D sigmas, scaled from 64 bins to ``d2``).

    With sigma_2d = 2: d2 = 1, 2, 4 -> 1; 8 -> 3; 16 -> 5; 32 -> 7; 64 -> 13.
    """
    d2 = _check_d2(d2)
    return 2 * math.floor((6.0 * sigma_2d * d2 / 64.0 + 1.0) / 2.0) + 1


def sigma_z_for(d2: int, sigma_2d: float = 2.0, rule: str = "c2f") -> float:
    """Standard deviation (in bins) of the depth gaussian at resolution ``d2``.

    All rules use C2F's window ``size_z = c2f_size_z(d2, sigma_2d)`` and return 0.0 (= single-bin
    one-hot profile) when ``size_z == 1`` (d2 <= 4 for sigma_2d = 2):

    - ``"c2f"``: ``0.25*size_z`` -- C2F's Torch ``image.gaussian`` (relative sigma 0.25):
      d2 = 8, 16, 32, 64 -> 0.75, 1.25, 1.75, 3.25 bins.
    - ``"caffe"``: ``size_z/6`` -- the Caffe seed renderer: 0.5, 0.833, 1.167, 2.167 bins.
    - ``"linear"``: ``sigma_2d*d2/64`` (depth std proportional to the resolution, no window).
    """
    d2 = _check_d2(d2)
    if not (isinstance(sigma_2d, int | float) and math.isfinite(sigma_2d) and sigma_2d > 0):
        raise ValueError(f"sigma_2d must be a positive number, got {sigma_2d!r}")
    size_z = c2f_size_z(d2, sigma_2d)
    if rule == "linear":
        return float(sigma_2d * d2 / 64.0)
    if size_z == 1:
        return 0.0
    if rule == "c2f":
        return 0.25 * size_z
    if rule == "caffe":
        return size_z / 6.0
    raise ValueError(f"rule must be 'c2f', 'caffe' or 'linear', got {rule!r}")


# --------------------------------------------------------------------------- gaussians
def gaussian_1d(centre: torch.Tensor, n: int, sigma: float) -> torch.Tensor:
    """Untruncated 1D gaussian profiles sampled at cells 0..n-1, peak 1 at ``centre``.

    Args:
        centre: (...) continuous centres in cell units.  n: number of cells.
        sigma: std in cells; 0 -> one-hot on the nearest cell ``floor(centre + 0.5)`` (zero if
            outside 0..n-1).
    Returns:
        (..., n) with the dtype/device of ``centre``.
    """
    grid = torch.arange(n, device=centre.device, dtype=centre.dtype)
    if sigma == 0:
        return (grid == torch.floor(centre + 0.5)[..., None]).to(centre.dtype)
    d = grid - centre[..., None]
    return torch.exp(d * d * (-0.5 / (sigma * sigma)))


def _check_sigma(sigma: Any, name: str, allow_zero: bool = False) -> float:
    ok = isinstance(sigma, int | float | np.floating) and math.isfinite(float(sigma))
    ok = ok and (float(sigma) >= 0 if allow_zero else float(sigma) > 0)
    if not ok:
        raise ValueError(f"{name} must be a finite number {'>=' if allow_zero else '>'} 0, got {sigma!r}")
    return float(sigma)


def _check_coords(coords: Any, name: str, last: int, validate: bool = True) -> torch.Tensor:
    if not isinstance(coords, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(coords).__name__}")
    if coords.ndim != 3 or coords.shape[-1] != last:
        raise ValueError(f"{name} must have shape (B, J, {last}), got {tuple(coords.shape)}")
    if not coords.is_floating_point():
        coords = coords.to(torch.get_default_dtype())
    if validate:
        _check_finite(coords, name)
    return coords


def _check_size(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or int(v) < 1:
        raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    return int(v)


def separable_factors(coords: torch.Tensor, d2: int, H: int, W: int, sigma_2d: float = 2.0,
                      sigma_z: float | None = None, *, validate: bool = True
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three 1D factors ``(gz (B,J,d2), gy (B,J,H), gx (B,J,W))`` of :func:`volume_target`.

    ``target[b, j, k, h, w] = gz[b, j, k] * gy[b, j, h] * gx[b, j, w]``.  ``sigma_z=None`` ->
    :func:`sigma_z_for` (d2, sigma_2d).  ``validate=False`` skips the NaN check of ``coords`` (a
    device sync; shapes and scalars are always checked).
    """
    coords = _check_coords(coords, "coords", 3, validate)
    d2 = _check_d2(d2)
    H, W = _check_size(H, "H"), _check_size(W, "W")
    sigma_2d = _check_sigma(sigma_2d, "sigma_2d")
    sigma_z = sigma_z_for(d2, sigma_2d) if sigma_z is None else _check_sigma(sigma_z, "sigma_z", True)
    gx = gaussian_1d(coords[..., 0], W, sigma_2d)
    gy = gaussian_1d(coords[..., 1], H, sigma_2d)
    gz = gaussian_1d(coords[..., 2], d2, sigma_z)
    return gz, gy, gx


def heatmap_2d(coords: torch.Tensor, H: int, W: int, sigma: float = 2.0, *, validate: bool = True
               ) -> torch.Tensor:
    """2D gaussian heatmaps ``(B, J, H, W)``, peak 1 at ``coords`` (B, J, 2) = (x, y) in cells.

    ``validate=False`` skips the NaN check of ``coords`` (a device sync).
    """
    coords = _check_coords(coords, "coords", 2, validate)
    H, W = _check_size(H, "H"), _check_size(W, "W")
    sigma = _check_sigma(sigma, "sigma")
    gx = gaussian_1d(coords[..., 0], W, sigma)
    gy = gaussian_1d(coords[..., 1], H, sigma)
    return gy[..., :, None] * gx[..., None, :]


def volume_target(coords: torch.Tensor, d2: int, H: int, W: int, sigma_2d: float = 2.0,
                  sigma_z: float | None = None, *, validate: bool = True) -> torch.Tensor:
    """Materialised C2F volume target ``(B, J, d2, H, W)`` (reference; training uses the separable loss).

    Args:
        coords: (B, J, 3) (x, y in heatmap cells; z in bin units of ``d2``).
        d2: depth bins (>= 1).  H, W: heatmap size.  sigma_2d: std in cells.
        sigma_z: depth std in bins (0 = one-hot nearest bin); None -> ``sigma_z_for(d2, sigma_2d)``.
    """
    gz, gy, gx = separable_factors(coords, d2, H, W, sigma_2d, sigma_z, validate=validate)
    return gz[..., :, None, None] * (gy[..., :, None] * gx[..., None, :])[..., None, :, :]


def make_coords(joints_2d_px: torch.Tensor, z_rel_mm: torch.Tensor, d2: int, stride: int | float = 4,
                depth_range: DepthRange = C2F_DEPTH_RANGE, clamp_depth: bool = True, *,
                validate: bool = True) -> torch.Tensor:
    """Target coordinates ``(B, J, 3)`` from crop-input pixels and root-relative depth.

    Args:
        joints_2d_px: (B, J, 2) crop-input pixel coordinates (pixel-centre convention).
        z_rel_mm: (B, J) root-relative depth, mm.
        d2: depth bins.  stride: input px per heatmap cell.  depth_range: shared encode/decode range.
        clamp_depth: clamp the bin coordinate into the volume, ``[-0.5, d2 - 0.5 - 1e-4]`` (depths
            outside the range go to the edge bin, as C2F's zind in 1..64 does).
        validate: check both inputs for NaN/inf (a device sync); shapes are always checked.
    Returns:
        (B, J, 3): x, y in heatmap cells, z in bin units.
    """
    j2 = _check_coords(joints_2d_px, "joints_2d_px", 2, validate)
    if not isinstance(z_rel_mm, torch.Tensor):
        raise ValueError(f"z_rel_mm must be a torch.Tensor, got {type(z_rel_mm).__name__}")
    if tuple(z_rel_mm.shape) != tuple(j2.shape[:2]):
        raise ValueError(f"z_rel_mm must have shape {tuple(j2.shape[:2])}, got {tuple(z_rel_mm.shape)}")
    if validate:
        _check_finite(z_rel_mm, "z_rel_mm")
    d2 = _check_d2(d2)
    zb = depth_to_bin(z_rel_mm.to(device=j2.device, dtype=j2.dtype), d2, depth_range)
    if clamp_depth:
        zb = zb.clamp(-0.5, d2 - 0.5 - 1e-4)
    return torch.cat([px_to_hm(j2, stride), zb[..., None]], dim=-1)
