"""Camera geometry for Human3.6M: pinhole projection, distortion, world<->camera, crop affines.

Every function accepts numpy arrays or torch tensors and returns the same kind (torch in ->
torch out on the same device/dtype; numpy in -> numpy out).  Leading batch dimensions broadcast.

Conventions (the project's one set: pose.targets and pose.decode follow them too):

- Camera frame: X right, Y down, Z forward (mm).  ``X_cam = R (X_world - T)`` with ``T`` the
  camera centre in world mm (H36M / Martinez / mks0601 convention).
- Pixels: pixel ``i`` has its centre at coordinate ``i`` (0-based pixel-centre coordinates, the
  same as ``cv2.warpAffine``).  ``K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` maps camera rays to
  these pixel coordinates, i.e. the principal point ``(cx, cy)`` is given in that convention.
- Distortion: H36M metadata order ``k = (k1, k2, k3)`` radial, ``p = (p1, p2)`` tangential, with
  the formula of Martinez' ``project_point_radial`` (the H36M toolbox formula; VideoPose3D stores
  the two ``p`` values swapped).
- Crop affine: ``crop_affine(center, size, rot_deg, out_res)`` maps image pixel coordinates to crop
  pixel coordinates: the square box of side ``size`` px centred at ``center`` covers the whole
  ``out_res x out_res`` crop (box edge -> -0.5, box centre -> (out_res - 1)/2), and the content is
  rotated by ``rot_deg`` counter-clockwise as displayed (same sense as
  ``cv2.getRotationMatrix2D``).  Use it directly with ``cv2.warpAffine(img, M, (out_res, out_res))``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

Array = Any  # np.ndarray | torch.Tensor

__all__ = [
    "project",
    "backproject",
    "world_to_camera",
    "camera_to_world",
    "distort_normalized",
    "distort",
    "project_distorted",
    "crop_affine",
    "invert_affine",
    "apply_affine",
]


# --------------------------------------------------------------------------- helpers
def _is_torch(*xs: Array) -> bool:
    return any(isinstance(x, torch.Tensor) for x in xs)


def _like(x: Array, ref: Array) -> Array:
    """Convert ``x`` to the kind (and for torch: device and float dtype) of ``ref``."""
    if isinstance(ref, torch.Tensor):
        if isinstance(x, torch.Tensor):
            return x.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else x.dtype)
        dtype = ref.dtype if ref.is_floating_point() else torch.get_default_dtype()
        return torch.as_tensor(np.asarray(x), dtype=dtype, device=ref.device)
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _as_float(x: Array, name: str) -> Array:
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.to(torch.get_default_dtype())
    a = np.asarray(x)
    if a.dtype.kind not in "fc":
        a = a.astype(np.float64)
    return a


def _check(x: Array, name: str, last: tuple[int, ...], min_ndim: int | None = None) -> None:
    shape = tuple(x.shape)
    n = len(last)
    if len(shape) < (min_ndim if min_ndim is not None else n) or shape[len(shape) - n :] != last:
        want = "(...," + ",".join(str(v) for v in last) + ")"
        raise ValueError(f"{name} must have shape {want}, got {shape}")
    finite = bool(torch.isfinite(x).all()) if isinstance(x, torch.Tensor) else bool(np.isfinite(x).all())
    if not finite:
        raise ValueError(f"{name} contains NaN or infinite values")


def _t(m: Array) -> Array:
    """Transpose the last two axes."""
    return m.transpose(-1, -2) if isinstance(m, torch.Tensor) else np.swapaxes(m, -1, -2)


def _cat(xs: list[Array], axis: int) -> Array:
    if isinstance(xs[0], torch.Tensor):
        return torch.cat(xs, dim=axis)
    return np.concatenate(xs, axis=axis)


def _stack(xs: list[Array], axis: int) -> Array:
    if isinstance(xs[0], torch.Tensor):
        return torch.stack(xs, dim=axis)
    return np.stack(xs, axis=axis)


def _inv(m: Array) -> Array:
    return torch.linalg.inv(m) if isinstance(m, torch.Tensor) else np.linalg.inv(m)


def _prep(*pairs: tuple[Array, str]) -> list[Array]:
    """Float-convert all inputs and bring them to one kind (torch wins if any input is torch)."""
    xs = [_as_float(x, n) for x, n in pairs]
    if _is_torch(*xs):
        ref = next(x for x in xs if isinstance(x, torch.Tensor))
        xs = [_like(x, ref) for x in xs]
    return xs


def _check_T(T: Array) -> None:
    if T.ndim == 0 or (T.shape[-1] != 3 and tuple(T.shape[-2:]) != (3, 1)):
        raise ValueError(f"T must have shape (..., 3) or (3, 1), got {tuple(T.shape)}")
    _check(T[..., None], "T", (1,))


def _vec3(T: Array) -> Array:
    """Accept T as (..., 3) or as the H36M/Martinez (3, 1) column; return (..., 1, 3)."""
    if tuple(T.shape[-2:]) == (3, 1):
        T = T[..., 0]
    return T[..., None, :]


# --------------------------------------------------------------------------- pinhole
def project(points: Array, K: Array) -> Array:
    """Pinhole projection of camera-frame points to pixels (no distortion).

    Args:
        points: (..., J, 3) camera-frame coordinates, mm (Z > 0 in front of the camera).
        K: (..., 3, 3) intrinsics (broadcast against the leading dims of ``points``).
    Returns:
        (..., J, 2) pixel coordinates (pixel-centre convention).
    """
    points, K = _prep((points, "points"), (K, "K"))
    _check(points, "points", (3,), 2)
    _check(K, "K", (3, 3))
    uvw = points @ _t(K)
    return uvw[..., :2] / uvw[..., 2:3]


def backproject(uv: Array, depth: Array, K: Array) -> Array:
    """Inverse of :func:`project` given each point's depth Z.

    Args:
        uv: (..., J, 2) pixel coordinates.
        depth: (..., J) camera-frame Z of each point, mm.
        K: (..., 3, 3) intrinsics.
    Returns:
        (..., J, 3) camera-frame points, mm.
    """
    uv, depth, K = _prep((uv, "uv"), (depth, "depth"), (K, "K"))
    _check(uv, "uv", (2,), 2)
    _check(K, "K", (3, 3))
    if tuple(depth.shape) != tuple(uv.shape[:-1]):
        raise ValueError(f"depth must have shape {tuple(uv.shape[:-1])} (uv without its last axis), got {tuple(depth.shape)}")
    _check(depth[..., None], "depth", (1,))
    ones = uv[..., :1] * 0 + 1
    rays = _cat([uv, ones], -1) @ _t(_inv(K))
    rays = rays / rays[..., 2:3]
    return rays * depth[..., None]


def world_to_camera(X: Array, R: Array, T: Array) -> Array:
    """``X_cam = R (X_world - T)``.

    Args:
        X: (..., J, 3) world points, mm.  R: (..., 3, 3).  T: (..., 3) camera centre (or (3, 1)).
    Returns:
        (..., J, 3) camera-frame points, mm.
    """
    X, R, T = _prep((X, "X"), (R, "R"), (T, "T"))
    _check(X, "X", (3,), 2)
    _check(R, "R", (3, 3))
    _check_T(T)
    return (X - _vec3(T)) @ _t(R)


def camera_to_world(X: Array, R: Array, T: Array) -> Array:
    """Inverse of :func:`world_to_camera`: ``X_world = R^T X_cam + T`` (shapes as there)."""
    X, R, T = _prep((X, "X"), (R, "R"), (T, "T"))
    _check(X, "X", (3,), 2)
    _check(R, "R", (3, 3))
    _check_T(T)
    return X @ R + _vec3(T)


# --------------------------------------------------------------------------- distortion
def distort_normalized(xy: Array, k: Array, p: Array) -> Array:
    """H36M radial + tangential distortion of normalised image coordinates (Martinez formula).

    With ``r2 = x^2 + y^2``, ``radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3``, ``tan = p1 y + p2 x``:
    ``x' = x (radial + tan) + p2 r2``, ``y' = y (radial + tan) + p1 r2``.

    Args:
        xy: (..., J, 2) normalised coordinates (X/Z, Y/Z).
        k: (..., 3) radial coefficients (k1, k2, k3).  p: (..., 2) tangential (p1, p2), H36M order.
    Returns:
        (..., J, 2) distorted normalised coordinates.
    """
    xy, k, p = _prep((xy, "xy"), (k, "k"), (p, "p"))
    _check(xy, "xy", (2,), 2)
    k = k.reshape(*k.shape[:-2], -1) if tuple(k.shape[-2:]) == (3, 1) else k
    p = p.reshape(*p.shape[:-2], -1) if tuple(p.shape[-2:]) == (2, 1) else p
    if k.shape[-1] != 3:
        raise ValueError(f"k must have shape (..., 3), got {tuple(k.shape)}")
    if p.shape[-1] != 2:
        raise ValueError(f"p must have shape (..., 2), got {tuple(p.shape)}")
    x, y = xy[..., 0], xy[..., 1]
    k1, k2, k3 = (k[..., i : i + 1] for i in range(3))
    p1, p2 = p[..., 0:1], p[..., 1:2]
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
    tan = p1 * y + p2 * x
    return _stack([x * (radial + tan) + p2 * r2, y * (radial + tan) + p1 * r2], -1)


def distort(points_cam: Array, K: Array, k: Array, p: Array) -> Array:
    """Project camera-frame points to pixels with H36M distortion.

    Args:
        points_cam: (..., J, 3) camera-frame mm.  K: (..., 3, 3).  k: (..., 3).  p: (..., 2).
    Returns:
        (..., J, 2) distorted pixel coordinates (equals :func:`project` when k = p = 0).
    """
    points_cam, K = _prep((points_cam, "points_cam"), (K, "K"))
    _check(points_cam, "points_cam", (3,), 2)
    _check(K, "K", (3, 3))
    xy = distort_normalized(points_cam[..., :2] / points_cam[..., 2:3], k, p)
    K = _like(K, xy)
    ones = xy[..., :1] * 0 + 1
    uvw = _cat([xy, ones], -1) @ _t(K)
    return uvw[..., :2]


def project_distorted(points: Array, K: Array, k: Array, p: Array, R: Array | None = None,
                      T: Array | None = None) -> Array:
    """Pixels of 3D points with distortion; world points if ``R`` and ``T`` are given.

    Without ``R``/``T`` this is :func:`distort` (camera-frame input).  With them it is Martinez'
    ``project_point_radial(P, R, T, f, c, k, p)`` with ``K = [[f_x, 0, c_x], [0, f_y, c_y], [0, 0, 1]]``.
    """
    if (R is None) != (T is None):
        raise ValueError("R and T must be given together (or neither)")
    if R is not None:
        points = world_to_camera(points, R, T)
    return distort(points, K, k, p)


# --------------------------------------------------------------------------- crop affine
def crop_affine(center: Array, size: Array, rot_deg: Array = 0.0, out_res: int = 256) -> Array:
    """2x3 affine mapping image pixel coordinates to crop pixel coordinates.

    ``crop = s * Rot(rot_deg) (x - center) + (out_res - 1)/2`` with ``s = out_res / size`` and
    ``Rot`` = ``[[cos, sin], [-sin, cos]]`` (counter-clockwise as displayed, y down), so the box
    edge maps to -0.5 and the box centre to (out_res - 1)/2.

    Args:
        center: (..., 2) box centre, image px.  size: (...) box side, px (> 0).
        rot_deg: (...) rotation, degrees.  out_res: crop side, px.
    Returns:
        (..., 2, 3) affine (numpy float64 unless any input is a torch tensor).
    """
    if int(out_res) < 1:
        raise ValueError(f"out_res must be a positive int, got {out_res}")
    center, size, rot = _prep((center, "center"), (size, "size"), (rot_deg, "rot_deg"))
    _check(center, "center", (2,))
    if isinstance(center, torch.Tensor):
        bad = not bool((torch.isfinite(size) & (size > 0)).all())
        cos, sin = torch.cos(rot * (math.pi / 180)), torch.sin(rot * (math.pi / 180))
    else:
        bad = not bool(np.all(np.isfinite(size) & (size > 0)))
        cos, sin = np.cos(np.deg2rad(rot)), np.sin(np.deg2rad(rot))
    if bad:
        raise ValueError("size must be finite and > 0")
    s = out_res / size
    a, b = s * cos, s * sin
    cx, cy = center[..., 0], center[..., 1]
    h = (out_res - 1) / 2.0
    a, b, cx, cy = _broadcast(a, b, cx, cy)
    row0 = _stack([a, b, h - a * cx - b * cy], -1)
    row1 = _stack([-b, a, h + b * cx - a * cy], -1)
    return _stack([row0, row1], -2)


def _broadcast(*xs: Array) -> list[Array]:
    if isinstance(xs[0], torch.Tensor):
        return list(torch.broadcast_tensors(*xs))
    return list(np.broadcast_arrays(*xs))


def invert_affine(M: Array) -> Array:
    """Inverse of a (..., 2, 3) affine (as a (..., 2, 3) affine)."""
    (M,) = _prep((M, "M"))
    _check(M, "M", (2, 3))
    A, t = M[..., :2], M[..., 2:]
    Ai = _inv(A)
    return _cat([Ai, -(Ai @ t)], -1)


def apply_affine(pts: Array, M: Array) -> Array:
    """Apply a (..., 2, 3) affine to (..., J, 2) points: ``A p + t``."""
    pts, M = _prep((pts, "pts"), (M, "M"))
    _check(pts, "pts", (2,), 2)
    _check(M, "M", (2, 3))
    return pts @ _t(M[..., :2]) + M[..., None, :, 2]
