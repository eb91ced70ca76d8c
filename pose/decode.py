"""Decoding C2F heatmaps / volumes to coordinates, crop pixels, depths and camera-frame mm.

Coordinate convention (the one used everywhere in this project; pose.targets states it too)
------------------------------------------------------------------------------------------
- **Grid units.** Every decoder returns *grid coordinates* in which cell ``k`` of an axis is
  *centred at* ``k`` (0-based, like pixel-centre coordinates): a volume ``(B, J, D, H, W)`` yields
  ``(x, y, z)`` with x ∈ [0, W−1] (column), y ∈ [0, H−1] (row), z ∈ [0, D−1] (depth bin). The
  official Integral code uses the same "index" positions; C2F/Caffe decoders use cell centres in
  other units — converting through this one rule avoids their half-cell offsets (a
  known trap of the published decoders).
- **Heatmap cell → input pixel.** With stride ``s`` = input size / heatmap size (4), heatmap cell
  ``k`` is centred at input-pixel coordinate ``s·k + (s−1)/2`` (pixel ``i`` centred at ``i``, as in
  ``cv2.warpAffine``): ``px = s·hm + (s−1)/2`` (``pose.targets.hm_to_px``).
- **Depth bin → root-relative depth.** With one ``DepthRange(lb, ub)`` for encoding *and*
  decoding (default C2F −1005.1859…980.8599 mm) and ``d2`` bins, bin ``k`` is centred at
  ``lb + (k + 0.5)/d2 · (ub − lb)`` mm, i.e. ``z_rel = lb + (zb + 0.5)/d2·(ub − lb)``
  (``pose.targets.bin_to_depth``).

Camera frame: X right, Y down, Z forward, mm; pinhole back-projection without distortion (as
C2F's ``estimate3D.m``): ``X = (u − cx)·Z/fx``, ``Y = (v − cy)·Z/fy``.

Inputs may be torch tensors or numpy arrays; outputs have the kind of the main input (numpy in →
numpy out). Bad input raises one ``ValueError`` naming the argument.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pose.camera import apply_affine, backproject
from pose.loss_config import DEFAULT_SOFTMAX_SCALE
from pose.skeleton import LIMB_LENGTHS_TRAIN_MM, LIMBS_C2F_17
from pose.targets import C2F_DEPTH_RANGE, DepthRange, bin_to_depth, hm_to_px

__all__ = [
    "DECODINGS",
    "Decoded",
    "LOCAL_RADIUS",
    "argmax",
    "argmax_2d",
    "argmax_local",
    "decode_2d_stage",
    "decode_batch",
    "decode_grid",
    "decode_outputs",
    "decode_to_crop",
    "fit_root_depth",
    "soft_argmax",
    "soft_argmax_2d",
    "to_camera",
]


# --- input handling -----------------------------------------------------------------------------
def _as_tensor(x, name: str) -> tuple[torch.Tensor, bool]:
    """(tensor, was_numpy). numpy / sequences become CPU tensors (float64 kept as float64)."""
    if isinstance(x, torch.Tensor):
        return x, False
    try:
        return torch.as_tensor(np.asarray(x)), True
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name}: expected a tensor or numeric array, got {type(x).__name__}") from exc


def _float(t: torch.Tensor) -> torch.Tensor:
    """Promote integers / half precision to at least float32 (keeps float64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _check_grid(x, ndim: int, name: str, layout: str) -> tuple[torch.Tensor, bool]:
    t, was_np = _as_tensor(x, name)
    if t.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D tensor {layout}, got shape {tuple(t.shape)}")
    if any(s == 0 for s in t.shape):
        raise ValueError(f"{name}: empty dimension in shape {tuple(t.shape)} {layout}")
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name}: expected a real-valued tensor, got dtype {t.dtype}")
    return t, was_np


def _out(t: torch.Tensor, was_np: bool):
    return t.detach().cpu().numpy() if was_np else t


def _positive(value, name: str = "scale") -> float:
    """``float(value)``; ValueError naming ``name`` unless it is a finite number > 0."""
    try:
        s = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected a positive number, got {value!r}") from exc
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"{name}: expected a finite positive number, got {value!r}")
    return s


# --- argmax / soft-argmax -------------------------------------------------------------------------
def _argmax_nd(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.is_floating_point() and torch.isnan(t).any():
        raise ValueError(f"{name}: contains NaN")
    b, j, *spatial = t.shape
    flat = t.reshape(b, j, -1).argmax(dim=-1)  # first maximum on ties
    coords = []
    for size in reversed(spatial):  # x (last axis) first
        coords.append(flat % size)
        flat = torch.div(flat, size, rounding_mode="floor")
    return torch.stack(coords, dim=-1).long()


def _soft_argmax_nd(t: torch.Tensor, scale: float, name: str, validate: bool) -> torch.Tensor:
    b, j, *spatial = t.shape
    logits = _float(t).reshape(b, j, -1) * scale
    prob = torch.softmax(logits, dim=-1).reshape(t.shape[:2] + tuple(spatial))
    n = len(spatial)
    coords = []
    for axis in reversed(range(n)):  # x (last axis) first
        others = tuple(2 + a for a in range(n) if a != axis)
        marginal = prob.sum(dim=others) if others else prob  # (B, J, size)
        pos = torch.arange(spatial[axis], device=t.device, dtype=prob.dtype)
        coords.append((marginal * pos).sum(dim=-1))
    out = torch.stack(coords, dim=-1)
    if validate and not torch.isfinite(out).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return out


def argmax(volume):
    """Hard argmax of each joint's whole volume.

    volume: ``(B, J, D, H, W)``. Returns int64 ``(B, J, 3)`` = (x, y, z) grid indices
    (column, row, depth bin); ties → the first maximum in (z, y, x) raster order.
    """
    t, was_np = _check_grid(volume, 5, "volume", "(B, J, D, H, W)")
    return _out(_argmax_nd(t, "volume"), was_np)


def argmax_2d(hm):
    """Hard argmax of each joint's heatmap. hm: ``(B, J, H, W)`` → int64 ``(B, J, 2)`` = (x, y)."""
    t, was_np = _check_grid(hm, 4, "hm", "(B, J, H, W)")
    return _out(_argmax_nd(t, "hm"), was_np)


#: half-width (cells / bins) of the window :func:`argmax_local` averages over: 2 → 5×5×5
LOCAL_RADIUS = 2


def argmax_local(volume, radius: int = LOCAL_RADIUS):
    """Hard argmax refined by the centroid of the volume around it (sub-cell precision).

    volume: ``(B, J, D, H, W)``. For each joint: the argmax voxel, then the mean position of the
    ``(2r+1)³`` window around it (cut at the volume's borders) weighted by ``max(v, 0)``. The
    argmax picks the mode (robust to a second, weaker peak, unlike the whole-volume soft-argmax);
    the local centroid removes most of the quantisation of a hard argmax (half a cell / bin at
    most), e.g. −15.5 … +15.5 mm in depth at d2 = 64 and about ±30 mm across a 32-cell heatmap
    of a 2 m box. A window with no positive value keeps the argmax voxel. Returns float64
    ``(B, J, 3)`` = (x, y, z) grid units (cell k centred at k).
    """
    r = _check_int(radius, "radius", 0)
    t, was_np = _check_grid(volume, 5, "volume", "(B, J, D, H, W)")
    idx = _argmax_nd(t, "volume")  # (B, J, 3) x, y, z
    b, j, *spatial = t.shape  # D, H, W
    flat = t.reshape(b * j, *spatial).to(torch.float64)
    centre = idx.reshape(b * j, 3).flip(-1)  # z, y, x
    offs = torch.arange(-r, r + 1, device=t.device)
    # window coordinates per axis, clamped; out-of-volume positions get zero weight
    pos = [centre[:, a, None] + offs for a in range(3)]  # each (N, k)
    inside = [(p >= 0) & (p < n) for p, n in zip(pos, spatial, strict=True)]
    pc = [p.clamp(0, n - 1) for p, n in zip(pos, spatial, strict=True)]
    rows = torch.arange(b * j, device=t.device)[:, None, None, None]
    win = flat[rows, pc[0][:, :, None, None], pc[1][:, None, :, None], pc[2][:, None, None, :]]
    mask = inside[0][:, :, None, None] & inside[1][:, None, :, None] & inside[2][:, None, None, :]
    w = torch.where(mask, win.clamp_min(0), torch.zeros_like(win))
    total = w.sum(dim=(1, 2, 3))
    ok = total > 0
    norm = torch.where(ok, total, torch.ones_like(total))
    off = offs.to(torch.float64)
    dz = (w.sum(dim=(2, 3)) * off).sum(-1) / norm
    dy = (w.sum(dim=(1, 3)) * off).sum(-1) / norm
    dx = (w.sum(dim=(1, 2)) * off).sum(-1) / norm
    delta = torch.where(ok[:, None], torch.stack([dx, dy, dz], -1), torch.zeros(b * j, 3, dtype=torch.float64,
                                                                                   device=t.device))
    out = idx.to(torch.float64) + delta.reshape(b, j, 3)
    return _out(out, was_np)


def soft_argmax(volume, scale: float = 1.0, validate: bool = True):
    """Integral (soft-argmax) decoding of a volume, differentiable.

    volume: ``(B, J, D, H, W)`` logits. Each joint's whole ``D·H·W`` block is multiplied by
    ``scale`` (the seed's ×30/×50 for heatmap-trained outputs) and soft-maxed; the result is the
    expectation of the cell positions (cell k centred at k). Returns float ``(B, J, 3)`` = (x, y, z)
    in grid units (float32, or float64 for float64 input). ``validate=False`` skips the finiteness
    check of the result (avoids a device sync inside training loops).
    """
    s = _positive(scale)
    t, was_np = _check_grid(volume, 5, "volume", "(B, J, D, H, W)")
    return _out(_soft_argmax_nd(t, s, "volume", validate), was_np)


def soft_argmax_2d(hm, scale: float = 1.0, validate: bool = True):
    """2D soft-argmax: hm ``(B, J, H, W)`` → float ``(B, J, 2)`` = (x, y) grid units (see soft_argmax)."""
    s = _positive(scale)
    t, was_np = _check_grid(hm, 4, "hm", "(B, J, H, W)")
    return _out(_soft_argmax_nd(t, s, "hm", validate), was_np)


# --- grid units → crop pixels / mm -----------------------------------------------------------------
def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_finite(t: torch.Tensor, name: str) -> None:
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise ValueError(f"{name}: contains NaN or inf")


def decode_to_crop(xyz, d2: int, stride: int = 4, depth_range: DepthRange = C2F_DEPTH_RANGE):
    """Grid coordinates → crop-input pixels and root-relative depth.

    xyz: ``(B, J, 3)`` = (x, y heatmap units; z bin units of ``d2`` bins), e.g. from
    ``soft_argmax``/``argmax``. Returns ``(uv_crop_px (B, J, 2), z_rel_mm (B, J))`` with
    ``px = stride·hm + (stride−1)/2`` and ``z_rel = lb + (z + 0.5)/d2·(ub − lb)``.
    """
    t, was_np = _as_tensor(xyz, "xyz")
    if t.ndim != 3 or t.shape[-1] != 3:
        raise ValueError(f"xyz: expected shape (B, J, 3), got {tuple(t.shape)}")
    t = _float(t)
    _check_finite(t, "xyz")
    d2 = _check_int(d2, "d2", 1)
    if isinstance(stride, bool) or not isinstance(stride, int | float | np.integer | np.floating) or not (
        math.isfinite(stride) and stride > 0
    ):
        raise ValueError(f"stride: expected a positive number, got {stride!r}")
    depth_range = DepthRange.coerce(depth_range)  # DepthRange, [lb, ub] or {"lb", "ub"}
    uv = hm_to_px(t[..., :2], stride)
    z_rel = bin_to_depth(t[..., 2], d2, depth_range)
    return _out(uv, was_np), _out(z_rel, was_np)


def _check_camera_inputs(uv_img_px, z_rel_mm, K):
    uv, was_np = _as_tensor(uv_img_px, "uv_img_px")
    if uv.ndim != 3 or uv.shape[-1] != 2:
        raise ValueError(f"uv_img_px: expected shape (B, J, 2), got {tuple(uv.shape)}")
    uv = _float(uv)
    _check_finite(uv, "uv_img_px")
    b, j = uv.shape[:2]
    z, _ = _as_tensor(z_rel_mm, "z_rel_mm")
    if tuple(z.shape) != (b, j):
        raise ValueError(f"z_rel_mm: expected shape ({b}, {j}) like uv_img_px, got {tuple(z.shape)}")
    z = _float(z).to(device=uv.device, dtype=uv.dtype)
    _check_finite(z, "z_rel_mm")
    k, _ = _as_tensor(K, "K")
    if k.ndim == 2:
        k = k.expand(b, 3, 3) if k.shape == (3, 3) else k
    if tuple(k.shape) != (b, 3, 3):
        raise ValueError(f"K: expected shape ({b}, 3, 3) or (3, 3), got {tuple(k.shape)}")
    k = _float(k).to(device=uv.device, dtype=uv.dtype)
    _check_finite(k, "K")
    if (k[:, 0, 0] == 0).any() or (k[:, 1, 1] == 0).any():
        raise ValueError("K: focal lengths K[0,0] and K[1,1] must be non-zero")
    return uv, z, k, was_np


def to_camera(uv_img_px, z_rel_mm, root_depth, K):
    """Back-project image pixels to camera-frame mm with a given root depth (pinhole, no distortion).

    uv_img_px: ``(B, J, 2)`` raw-image pixels; z_rel_mm: ``(B, J)``; root_depth: ``(B,)`` mm (Z of
    the root joint); K: ``(B, 3, 3)`` or ``(3, 3)``. Returns ``(B, J, 3)`` with
    ``Z = z_rel + root_depth``, ``X = (u − cx)·Z/fx``, ``Y = (v − cy)·Z/fy``.
    """
    uv, z, k, was_np = _check_camera_inputs(uv_img_px, z_rel_mm, K)
    r, _ = _as_tensor(root_depth, "root_depth")
    if tuple(r.shape) != (uv.shape[0],):
        raise ValueError(f"root_depth: expected shape ({uv.shape[0]},), got {tuple(r.shape)}")
    r = _float(r).to(device=uv.device, dtype=uv.dtype)
    _check_finite(r, "root_depth")
    depth = z + r[:, None]
    return _out(backproject(uv, depth, k), was_np)


def fit_root_depth(
    uv_img_px,
    z_rel_mm,
    K,
    limb_lengths=LIMB_LENGTHS_TRAIN_MM,
    z0: float = 2000.0,
    bounds: tuple[float, float] | None = None,
    limbs: Sequence[tuple[int, int]] = LIMBS_C2F_17,
    grid_points: int = 512,
    iterations: int = 64,
):
    """C2F root-depth estimate (``evalH36M.m`` recType 3): fit ``Z_root`` so the back-projected
    skeleton's limb lengths match ``limb_lengths``.

    uv_img_px: ``(B, J, 2)`` raw-image pixels; z_rel_mm: ``(B, J)`` root-relative depth; K:
    ``(B, 3, 3)`` or ``(3, 3)``; limb_lengths: ``(L,)`` (default: C2F training means, mm) or
    ``(B, L)`` per sample (recType 2 with the subject's own lengths), ordered as ``limbs``
    (default ``LIMBS_C2F_17``). Returns ``Z_root`` ``(B,)`` in mm.

    Objective (as C2F): ``f(Z) = ‖ℓ(Z) − ℓ_target‖₂`` with ``ℓ_l(Z) = ‖A_l·Z + B_l‖``, where for
    limb (p, c) and unit-depth rays ``r_j = ((u−cx)/fx, (v−cy)/fy, 1)``: ``A = r_p − r_c``,
    ``B = r_p·z_p − r_c·z_c``. C2F runs Nelder–Mead from ``z0`` = 2000 mm; here, vectorised over
    the batch, ``f`` is evaluated on ``grid_points`` log-spaced depths in ``bounds`` (default
    ``(z0/20, 25·z0)`` = 100 … 50 000 mm) and the best grid cell's neighbourhood is refined by
    golden-section search (``iterations`` steps, bracket shrinks by 0.618 per step) — the global
    minimum within the bounds, to well below 1e-3 mm.
    """
    uv, z, k, was_np = _check_camera_inputs(uv_img_px, z_rel_mm, K)
    b, j = uv.shape[:2]
    dt = torch.float64
    uv, z, k = uv.to(dt), z.to(dt), k.to(dt)
    limbs = _check_limbs(limbs, j)
    tgt = _target_lengths(limb_lengths, b, len(limbs), uv.device)
    lo, hi = _depth_bounds(z0, bounds)
    grid_points = _check_int(grid_points, "grid_points", 3)
    iterations = _check_int(iterations, "iterations", 0)

    rays = backproject(uv, torch.ones_like(z), k)  # (B, J, 3) with Z = 1
    p_idx = [p for p, _ in limbs]
    c_idx = [c for _, c in limbs]
    a = rays[:, p_idx] - rays[:, c_idx]  # (B, L, 3)
    bvec = rays[:, p_idx] * z[:, p_idx, None] - rays[:, c_idx] * z[:, c_idx, None]
    aa = (a * a).sum(-1)  # (B, L)
    ab = (a * bvec).sum(-1)
    bb = (bvec * bvec).sum(-1)

    def cost(zr: torch.Tensor) -> torch.Tensor:  # zr (B, K) -> (B, K), squared residual norm
        zr = zr[..., None]
        length = (aa[:, None] * zr**2 + 2 * ab[:, None] * zr + bb[:, None]).clamp_min(0).sqrt()
        return ((length - tgt[:, None]) ** 2).sum(-1)

    grid = torch.logspace(math.log10(lo), math.log10(hi), grid_points, dtype=dt, device=uv.device)
    root = _grid_then_golden_section(cost, grid.expand(b, grid_points), iterations)
    if not was_np and isinstance(uv_img_px, torch.Tensor):
        root = root.to(uv_img_px.dtype if uv_img_px.is_floating_point() else torch.float32)
    return _out(root, was_np)


def _check_limbs(limbs: Sequence[tuple[int, int]], j: int) -> list[tuple[int, int]]:
    try:
        limbs = [tuple(int(i) for i in lp) for lp in limbs]
        ok = bool(limbs) and all(len(lp) == 2 and 0 <= min(lp) and max(lp) < j for lp in limbs)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"limbs: expected (parent, child) joint pairs with indices in [0, {j})")
    return limbs


def _target_lengths(limb_lengths, b: int, n_limbs: int, device: torch.device) -> torch.Tensor:
    """``limb_lengths`` (L,) or (B, L) mm as a checked (B, L) float64 tensor."""
    tgt, _ = _as_tensor(limb_lengths, "limb_lengths")
    tgt = tgt.to(device=device, dtype=torch.float64)
    if tuple(tgt.shape) == (n_limbs,):
        tgt = tgt.expand(b, n_limbs)
    if tuple(tgt.shape) != (b, n_limbs):
        raise ValueError(f"limb_lengths: expected shape ({n_limbs},) or ({b}, {n_limbs}), got {tuple(tgt.shape)}")
    if not torch.isfinite(tgt).all() or (tgt <= 0).any():
        raise ValueError("limb_lengths: expected finite positive lengths")
    return tgt


def _depth_bounds(z0: float, bounds: tuple[float, float] | None) -> tuple[float, float]:
    """The searched root depths (mm): ``bounds``, or ``(z0/20, 25·z0)``."""
    z0 = _positive(z0, "z0")
    try:
        lo, hi = (z0 / 20.0, 25.0 * z0) if bounds is None else (float(bounds[0]), float(bounds[1]))
    except (TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"bounds: expected (low, high) in mm, got {bounds!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
        raise ValueError(f"bounds: expected 0 < low < high, got {bounds!r}")
    return lo, hi


def _grid_then_golden_section(cost: Callable[[torch.Tensor], torch.Tensor], grid: torch.Tensor,
                              iterations: int) -> torch.Tensor:
    """Per row of ``grid`` (B, K): the minimiser of ``cost`` — the best grid point's neighbourhood
    refined by ``iterations`` golden-section steps. Returns (B,)."""
    n = grid.shape[1]
    best = cost(grid).argmin(dim=1)
    left = grid.gather(1, (best - 1).clamp_min(0)[:, None])[:, 0]
    right = grid.gather(1, (best + 1).clamp_max(n - 1)[:, None])[:, 0]
    inv_phi = (math.sqrt(5.0) - 1.0) / 2.0
    x1 = right - inv_phi * (right - left)
    x2 = left + inv_phi * (right - left)
    f1 = cost(x1[:, None])[:, 0]
    f2 = cost(x2[:, None])[:, 0]
    for _ in range(iterations):
        go_left = f1 < f2  # minimum in [left, x2]
        right = torch.where(go_left, x2, right)
        left = torch.where(go_left, left, x1)
        new_x1 = right - inv_phi * (right - left)
        new_x2 = left + inv_phi * (right - left)
        x2, f2, x1, f1 = (
            torch.where(go_left, x1, new_x2),
            torch.where(go_left, f1, cost(new_x2[:, None])[:, 0]),
            torch.where(go_left, new_x1, x2),
            torch.where(go_left, cost(new_x1[:, None])[:, 0], f2),
        )
    return 0.5 * (left + right)


# --- the decode pipeline: network output -> joints ------------------------------------------------
#: the decodings of a volume: hard argmax (C2F), argmax refined by its local centroid
#: (:func:`argmax_local`) and soft-argmax (integral regression)
DECODINGS: tuple[str, ...] = ("argmax", "argmax_local", "soft_argmax")


@dataclass
class Decoded:
    """Batched decoding of one method (torch tensors on the volume's device, float64 where mm).

    xyz_grid (B, J, 3) grid units; uv_crop (B, J, 2) crop px; uv_img (B, J, 2) image px;
    z_rel (B, J) mm; root_depth (B,) mm; camera (B, J, 3) camera-frame mm; root_relative (B, J, 3) mm.
    """

    xyz_grid: torch.Tensor
    uv_crop: torch.Tensor
    uv_img: torch.Tensor
    z_rel: torch.Tensor
    root_depth: torch.Tensor
    camera: torch.Tensor
    root_relative: torch.Tensor


def _batched(x, tail: tuple[int, ...], B: int, device: torch.device, name: str) -> torch.Tensor:
    """``x`` (B, *tail) or (*tail) as a float64 (B, *tail) tensor on ``device``."""
    t = torch.as_tensor(x if isinstance(x, torch.Tensor) else np.asarray(x)).to(device, torch.float64)
    if tuple(t.shape) == tail:
        t = t.expand(B, *tail)
    if tuple(t.shape) != (B, *tail):
        raise ValueError(f"{name}: expected shape ({B}, {', '.join(map(str, tail))}) or {tail}, got {tuple(t.shape)}")
    return t


def decode_grid(vol: torch.Tensor, method: str, softmax_scale: float = DEFAULT_SOFTMAX_SCALE) -> torch.Tensor:
    """(B, J, D, H, W) volume → (B, J, 3) grid coordinates (float64) by ``method`` (:data:`DECODINGS`).
    The soft-argmax runs in the volume's own precision (float32 from the network)."""
    if method == "argmax":
        return argmax(vol).to(torch.float64)
    if method == "argmax_local":
        return argmax_local(vol)
    if method == "soft_argmax":
        return soft_argmax(vol, scale=softmax_scale, validate=False).to(torch.float64)
    raise ValueError(f"method: unknown decoding {method!r}; choose from {DECODINGS}")


def decode_outputs(
    vol: torch.Tensor,
    crop_to_img,
    K,
    *,
    d2: int,
    stride: int,
    depth_range: DepthRange,
    root_depth=None,
    softmax_scale: float = DEFAULT_SOFTMAX_SCALE,
    methods: Sequence[str] = DECODINGS,
) -> dict[str, Decoded]:
    """Network output → joints: THE decode, used by prediction, evaluation and training validation.

    1. grid coordinates from the final volume (:func:`decode_grid`: ``argmax`` and/or ``soft_argmax``);
    2. :func:`decode_to_crop` → crop px and root-relative depth (``depth_range``, ``d2``, ``stride``);
    3. crop px → image px through ``crop_to_img`` (the inverse crop affine; for a packed split's
       samples ``crop_to_raw``, into the raw camera image);
    4. root depth: the given one, else the C2F bone-length fit (:func:`fit_root_depth`);
    5. camera frame = :func:`to_camera` (``K`` of that image); root-relative = camera − root.

    Args:
        vol: (B, J, d2, H, W) final volume (``C2FPoseNet.forward``'s second output).
        crop_to_img: (B, 2, 3) or (2, 3) affine crop-input px → image px.
        K: (B, 3, 3) or (3, 3) intrinsics of that image.
        root_depth: (B,) mm, or None → bone-length fit.
        methods: subset of :data:`DECODINGS`.
    Returns:
        ``{method: Decoded}`` (float64 tensors on ``vol``'s device).
    """
    if not isinstance(vol, torch.Tensor) or vol.ndim != 5:
        raise ValueError(f"vol: expected a (B, J, D, H, W) tensor, got {getattr(vol, 'shape', type(vol))}")
    B, dev = vol.shape[0], vol.device
    A = _batched(crop_to_img, (2, 3), B, dev, "crop_to_img")
    Kt = _batched(K, (3, 3), B, dev, "K")
    rd_given = None if root_depth is None else _batched(
        torch.as_tensor(root_depth if isinstance(root_depth, torch.Tensor) else np.asarray(root_depth)).reshape(-1),
        (), B, dev, "root_depth").reshape(B)
    vol = vol.detach()
    out: dict[str, Decoded] = {}
    for method in methods:
        xyz = decode_grid(vol, method, softmax_scale)
        uv_crop, z_rel = decode_to_crop(xyz, d2, stride, depth_range)
        uv_img = apply_affine(uv_crop, A)
        rd = rd_given if rd_given is not None else fit_root_depth(uv_img, z_rel, Kt)
        cam = to_camera(uv_img, z_rel, rd, Kt)
        out[method] = Decoded(xyz, uv_crop, uv_img, z_rel, rd, cam, cam - cam[:, :1])
    return out


def decode_batch(
    vol: torch.Tensor,
    batch: dict[str, torch.Tensor],
    *,
    depth_range: DepthRange,
    method: str = "argmax",
    root: str = "gt",
    stride: int = 4,
    softmax_scale: float = DEFAULT_SOFTMAX_SCALE,
) -> torch.Tensor:
    """Camera-frame joints (B, J, 3) mm (float64) of a ``PackedDataset`` batch: :func:`decode_outputs`
    with ``crop_to_img = batch["crop_to_raw"]``, ``K = batch["K"]`` and the root depth
    ``batch["root_depth"]`` (``root="gt"``) or the bone-length fit (``root="fit"``, C2F recType 3)."""
    if root not in ("gt", "fit"):
        raise ValueError(f"root: expected 'gt' or 'fit', got {root!r}")
    rd = batch["root_depth"] if root == "gt" else None
    dec = decode_outputs(vol, batch["crop_to_raw"], batch["K"], d2=int(vol.shape[2]), stride=stride,
                         depth_range=depth_range, root_depth=rd, softmax_scale=softmax_scale, methods=(method,))
    return dec[method].camera


def decode_2d_stage(
    hm2d: torch.Tensor,
    crop_to_img,
    *,
    stride: int,
    method: str = "argmax",
    softmax_scale: float = DEFAULT_SOFTMAX_SCALE,
) -> torch.Tensor:
    """Stage-1 2D heatmaps (B, J, H, W) → (B, J, 2) image px (the 2D detector used for lifting)."""
    if method == "argmax":
        xy = argmax_2d(hm2d).to(torch.float64)
    elif method == "soft_argmax":
        xy = soft_argmax_2d(hm2d.to(torch.float64), scale=softmax_scale)
    else:
        raise ValueError(f"method: unknown 2D decoding {method!r}; choose from ('argmax', 'soft_argmax')")
    return apply_affine(hm_to_px(xy, stride), _batched(crop_to_img, (2, 3), hm2d.shape[0], hm2d.device, "crop_to_img"))
