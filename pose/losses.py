"""Losses for C2F volumetric pose: heatmap L2 (2D and separable 3D), integral, adaptive, JS.

Reduction convention (used by every loss here)
----------------------------------------------
**Mean per element**: a loss is the sum of its per-element errors divided by the *total* number of
elements of the prediction (masked-out elements count as zero error, they are *not* removed from
the denominator), i.e. Torch's ``MSECriterion`` / PyTorch ``reduction="mean"`` as C2F used.  So

- ``heatmap_l2(hm2d, t)`` = ``sum(m * (hm2d - t)^2) / (B*J*H*W)``;
- ``volume_l2_separable(vol, ...)`` = ``sum(m * (vol - t)^2) / (B*J*D*H*W)``;
- ``integral_loss`` = ``sum(w * |d|) / (B*J*3)`` (L1) or ``sum(w * d^2) / (B*J*3)`` (L2).

Keeping the total in the denominator makes the per-sample gradient weight ``1/B`` whatever the mix
of 2D-only and 3D samples in the batch (a lone 3D sample is not up-weighted).

How the Caffe seed's 3D:2D ratios map onto this
-----------------------------------------------
The seed (H1) uses Caffe ``EuclideanLoss`` = ``sum / (2*batch)``, i.e. a *sum* over the
``J*H*W`` (2D) and ``J*D*H*W`` (3D) elements of each sample.  Writing ``m2``, ``m3`` for our
per-element means, Caffe's objective is ``(J*H*W/2) * (m2 + r_caffe * D * m3)``.  Up to the
constant factor ``J*H*W/2`` (irrelevant for RMSProp/Adam, a learning-rate factor for SGD), the
seed's ratio ``r_caffe`` therefore corresponds to ``ratio_3d = r_caffe * D`` here:

====  ========  ==========================
 D    r_caffe   equivalent ``ratio_3d``
====  ========  ==========================
 2    0.1       0.2
 4    0.3       1.2
 8    0.1       0.8
16    0.03      0.48
32    0.03      0.96
64    0.03      1.92
====  ========  ==========================

With the mean-per-element reduction the needed ratio stays near 1 for every ``D`` (the seed's
ratios were mostly compensating the growth of a *summed* 3D loss with ``D``), so we recommend
``ratio_3d = 1.0`` as the default and ``r_caffe * D`` to reproduce the seed exactly.  The I1 seed's
3D weights 0.1 / 0.3 / 0.08 (D = 8 / 16 / 64) map the same way (0.8 / 4.8 / 5.12).

Integral coordinates (I1 variant of :func:`c2f_loss`): x, y in heatmap cells, z converted from
bins of ``D`` to the same "W cells over the depth range" unit (``z * W / D``), so all three axes are
in ~30 mm units at 64x64 output for any ``D`` and the integral loss does not change scale when D
grows.  The seed's I1 used an L2 on [0, 1]-normalised coordinates; ``integral_kind="l2"`` gives that
form (per-element mean of squares).

Masks: ``visible`` (B, J) removes invisible joints from every term; ``has_depth`` (B,) removes
2D-only samples from the 3D heatmap loss and from the z part of the integral loss, so those samples
contribute only to the 2D terms.  At D = 1 the volume cannot resolve depth, so the integral z term
is dropped for every sample.

Adaptive variant: the seed's formula ``sum_i sum(e_i^2) / (N a_i)`` is a *sum* over each pair's
elements (its value grows with the element count, ~1e6 for a 64^3 volume); with RMSProp/Adam only
the relative weights matter (each pair is normalised by its own mean absolute error ``a_i``).
The 3D ``a_i`` (an L1, not separable) is computed without autograd a few samples at a time, so the
full target is never held for the whole batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from pose.decode import soft_argmax
from pose.loss_config import LossConfig
from pose.targets import (
    heatmap_2d,
    make_coords,
    px_to_hm,
    separable_factors,
    volume_target,
)

__all__ = [
    "heatmap_l2",
    "volume_sse_separable",
    "volume_l2_separable",
    "volume_l2_materialised",
    "integral_loss",
    "smooth_l1",
    "adaptive_weighted_l2",
    "js_regularization",
    "LossConfig",
    "c2f_loss",
]


# --------------------------------------------------------------------------- helpers
def _check_tensor(x: Any, name: str, ndim: int | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(x.shape)}")
    return x


def _expand_mask(mask: torch.Tensor | None, like: torch.Tensor, name: str = "mask") -> torch.Tensor | None:
    """Mask of shape ``like.shape[:k]`` (e.g. (B, J) or (B,)) -> float, broadcastable to ``like``."""
    if mask is None:
        return None
    _check_tensor(mask, name)
    k = mask.ndim
    if k > like.ndim or tuple(mask.shape) != tuple(like.shape[:k]):
        raise ValueError(f"{name} must have shape {tuple(like.shape[:2])} (a prefix of {tuple(like.shape)}), "
                         f"got {tuple(mask.shape)}")
    m = mask.to(device=like.device, dtype=like.dtype if like.is_floating_point() else torch.float32)
    return m.reshape(tuple(mask.shape) + (1,) * (like.ndim - k))


def _same_shape(a: torch.Tensor, b: torch.Tensor, na: str, nb: str) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{nb} must have the shape of {na} {tuple(a.shape)}, got {tuple(b.shape)}")


# --------------------------------------------------------------------------- heatmap L2
def heatmap_l2(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean-per-element squared error ``sum(m * (pred - target)^2) / pred.numel()``.

    Args:
        pred, target: same shape, e.g. (B, J, H, W) or (B, J, D, H, W).
        mask: optional (B, J) (or (B,)) weights/bools; masked elements count as zero error.
    """
    _check_tensor(pred, "pred")
    _check_tensor(target, "target")
    _same_shape(pred, target, "pred", "target")
    sq = (pred - target).square()
    m = _expand_mask(mask, pred)
    if m is not None:
        sq = sq * m
    return sq.sum() / pred.numel()


@contextlib.contextmanager
def _no_tf32():
    """Full fp32 precision for the contractions even if the caller enabled TF32 matmuls."""
    flag = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = flag


def _row_sumsq(p: torch.Tensor) -> torch.Tensor:
    """Per-(b, j) sums of squares of p (B, J, D, H, W) -> (B*J,) float64, without a full-size temp.

    fp32 norms of the W-long rows (short sums, ~1e-7 relative each) are squared and summed in
    float64.  A single long fp32 reduction (bmm dot product, or ``vector_norm`` on CPU) loses ~1e-4,
    which the cancellation in the separable loss would amplify.
    """
    B, J, D, H, W = p.shape
    rows = torch.linalg.vector_norm(p.reshape(B * J, D * H, W), dim=-1)
    return rows.double().square().sum(-1)


class _SeparableSSE(torch.autograd.Function):
    """Per-(b, j) sum of squared errors against ``gz (x) gy (x) gx`` without materialising it.

    ``||p - t||^2 = ||p||^2 - 2 <p, t> + ||t||^2``, ``<p, t>`` by contracting p with gx, gy, gz
    (batched matmuls), ``||t||^2 = ||gx||^2 ||gy||^2 ||gz||^2``.  Only W-long sums run in the
    input precision; everything after them is float64, since the three terms nearly cancel when
    p ~ t (the matmul over W runs without TF32).  Backward writes
    ``2 g (p - t)`` straight into the gradient buffer with one broadcast ``addcmul`` (the only
    full-size allocation).
    """

    @staticmethod
    def forward(ctx, pred: torch.Tensor, gz: torch.Tensor, gy: torch.Tensor, gx: torch.Tensor) -> torch.Tensor:
        B, J, D, H, W = pred.shape
        n = B * J
        p = pred.contiguous()
        if p.dtype not in (torch.float32, torch.float64):
            p = p.float()
        gz, gy, gx = (g.to(p.dtype).reshape(n, -1) for g in (gz, gy, gx))
        sq = _row_sumsq(p)
        with _no_tf32():  # <p, gx> over W: the only pass over the volume, short fp32 sums
            a = torch.bmm(p.reshape(n, D * H, W), gx.unsqueeze(2)).reshape(n, D, H)
        # the remaining (small) contractions over H and D in float64
        pt = (torch.bmm(a.double(), gy.double().unsqueeze(2)).reshape(n, D) * gz.double()).sum(-1)
        g64 = [g.double().square().sum(-1) for g in (gx, gy, gz)]
        tt = g64[0] * g64[1] * g64[2]
        sse = sq - 2.0 * pt + tt
        ctx.save_for_backward(p, gz, gy, gx)
        ctx.in_dtype = pred.dtype
        return sse.to(p.dtype).reshape(B, J)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        p, gz, gy, gx = ctx.saved_tensors
        B, J, D, H, W = p.shape
        n = B * J
        gyx = (gy.unsqueeze(2) * gx.unsqueeze(1)).reshape(n, 1, H * W)
        out = torch.addcmul(p.reshape(n, D, H * W), gz.unsqueeze(2), gyx, value=-1.0)  # p - t, one buffer
        out.mul_((2.0 * grad.to(out.dtype)).reshape(n, 1, 1))
        return out.reshape(B, J, D, H, W).to(ctx.in_dtype), None, None, None


def _check_volume(pred_vol: Any, name: str = "pred_vol") -> torch.Tensor:
    _check_tensor(pred_vol, name, 5)
    if not pred_vol.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {pred_vol.dtype}")
    return pred_vol


def _coords_for(pred_vol: torch.Tensor, coords: Any) -> torch.Tensor:
    _check_tensor(coords, "coords")
    B, J = pred_vol.shape[:2]
    if tuple(coords.shape) != (B, J, 3):
        raise ValueError(f"coords must have shape {(B, J, 3)} to match pred_vol, got {tuple(coords.shape)}")
    dtype = pred_vol.dtype if pred_vol.dtype == torch.float64 else torch.float32
    return coords.detach().to(device=pred_vol.device, dtype=dtype)


def volume_sse_separable(pred_vol: torch.Tensor, coords: torch.Tensor, sigma_2d: float = 2.0,
                         sigma_z: float | None = None, *, validate: bool = True) -> torch.Tensor:
    """Per-joint sum of squared errors ``(B, J)`` against the C2F volume target, never materialised.

    Equals ``((pred_vol - volume_target(coords, D, H, W, sigma_2d, sigma_z))**2).sum((2, 3, 4))``.
    Differentiable w.r.t. ``pred_vol`` (coords are constants).  ``validate=False`` skips the NaN
    check of ``coords`` (a device sync).
    """
    _check_volume(pred_vol)
    c = _coords_for(pred_vol, coords)
    _, _, D, H, W = pred_vol.shape
    gz, gy, gx = separable_factors(c, D, H, W, sigma_2d, sigma_z, validate=validate)
    return _SeparableSSE.apply(pred_vol, gz, gy, gx)


def volume_l2_separable(pred_vol: torch.Tensor, coords: torch.Tensor, sigma_2d: float = 2.0,
                        sigma_z: float | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """3D heatmap L2 (mean per element) without materialising the (B, J, D, H, W) target.

    Equals ``heatmap_l2(pred_vol, volume_target(coords, D, H, W, sigma_2d, sigma_z), mask)`` (to
    float rounding) in value and gradient.

    Args:
        pred_vol: (B, J, D, H, W) predicted volume.
        coords: (B, J, 3) target coordinates (x, y cells; z bins), see ``pose.targets.make_coords``.
        sigma_2d: 2D std (cells).  sigma_z: depth std (bins), 0 = one-hot, None -> ``sigma_z_for``.
        mask: optional (B, J) (or (B,)) weights, e.g. ``visible & has_depth[:, None]``.
    """
    sse = volume_sse_separable(pred_vol, coords, sigma_2d, sigma_z)
    if mask is not None:
        m = _expand_mask(mask, sse, "mask")
        sse = sse * m
    return sse.sum() / pred_vol.numel()


def volume_l2_materialised(pred_vol: torch.Tensor, coords: torch.Tensor, sigma_2d: float = 2.0,
                           sigma_z: float | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Reference/baseline for :func:`volume_l2_separable`: builds the full target."""
    _check_volume(pred_vol)
    c = _coords_for(pred_vol, coords)
    _, _, D, H, W = pred_vol.shape
    return heatmap_l2(pred_vol, volume_target(c, D, H, W, sigma_2d, sigma_z).to(pred_vol.dtype), mask)


@torch.no_grad()
def _volume_abs_sum(pred_vol: torch.Tensor, coords: torch.Tensor, sigma_2d: float, sigma_z: float | None,
                    mask: torch.Tensor | None, max_elems: int = 1 << 24) -> torch.Tensor:
    """``sum(m * |pred - t|)`` (no grad), building the target a few samples at a time."""
    B = pred_vol.shape[0]
    per = max(1, max_elems // max(1, pred_vol[0].numel()))
    c = _coords_for(pred_vol, coords)
    _, _, D, H, W = pred_vol.shape
    total = pred_vol.new_zeros((), dtype=torch.float64)
    for s in range(0, B, per):
        e = (pred_vol[s : s + per] - volume_target(c[s : s + per], D, H, W, sigma_2d, sigma_z)).abs_()
        e = e.sum((2, 3, 4))
        if mask is not None:
            e = e * mask[s : s + per].to(e.dtype)
        total += e.sum().double()
    return total


# --------------------------------------------------------------------------- coordinate losses
def integral_loss(pred_xyz: torch.Tensor, gt_xyz: torch.Tensor, has_depth: torch.Tensor | None = None,
                  kind: str = "l1", visible: torch.Tensor | None = None, z_scale: float = 1.0) -> torch.Tensor:
    """Coordinate loss on (soft-argmax) joint positions, mean per coordinate.

    ``sum(w * e) / (B*J*3)`` with ``e = |d|`` (``kind="l1"``, the Integral paper) or ``d^2``
    (``"l2"``, the seed's I1), ``d = pred - gt`` and ``d_z`` multiplied by ``z_scale``; ``w`` =
    ``visible`` for x, y and ``visible * has_depth`` for z (2D-only samples: no z term).

    Args:
        pred_xyz, gt_xyz: (B, J, 3).  has_depth: (B,) bool (None = all True).
        visible: (B, J) (None = all True).  z_scale: factor on the z difference (unit change).
    """
    _check_tensor(pred_xyz, "pred_xyz", 3)
    _check_tensor(gt_xyz, "gt_xyz", 3)
    if pred_xyz.shape[-1] != 3:
        raise ValueError(f"pred_xyz must have shape (B, J, 3), got {tuple(pred_xyz.shape)}")
    _same_shape(pred_xyz, gt_xyz, "pred_xyz", "gt_xyz")
    if kind not in ("l1", "l2"):
        raise ValueError(f"kind must be 'l1' or 'l2', got {kind!r}")
    B, J, _ = pred_xyz.shape
    d = pred_xyz - gt_xyz.to(pred_xyz.dtype).detach()
    if z_scale != 1.0:
        d = torch.cat([d[..., :2], d[..., 2:] * z_scale], dim=-1)
    e = d.abs() if kind == "l1" else d.square()
    w = torch.ones(B, J, 3, device=d.device, dtype=d.dtype)
    if visible is not None:
        _check_tensor(visible, "visible")
        if tuple(visible.shape) != (B, J):
            raise ValueError(f"visible must have shape {(B, J)}, got {tuple(visible.shape)}")
        w = w * visible.to(device=d.device, dtype=d.dtype)[..., None]
    if has_depth is not None:
        _check_tensor(has_depth, "has_depth")
        if tuple(has_depth.shape) != (B,):
            raise ValueError(f"has_depth must have shape {(B,)}, got {tuple(has_depth.shape)}")
        zmask = torch.ones(B, 1, 3, device=d.device, dtype=d.dtype)
        zmask[..., 2] = has_depth.to(device=d.device, dtype=d.dtype)[:, None]
        w = w * zmask
    return (w * e).sum() / e.numel()


def smooth_l1(pred: torch.Tensor, target: torch.Tensor, beta: float = 1.0,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """Smooth L1 (Huber, ``0.5 d^2/beta`` if ``|d| < beta`` else ``|d| - 0.5 beta``), mean per element."""
    _check_tensor(pred, "pred")
    _check_tensor(target, "target")
    _same_shape(pred, target, "pred", "target")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    e = F.smooth_l1_loss(pred, target, reduction="none", beta=beta)
    m = _expand_mask(mask, pred)
    if m is not None:
        e = e * m
    return e.sum() / pred.numel()


def _adaptive_term(sq_sum: torch.Tensor, abs_mean: torch.Tensor, batch: int, eps: float) -> torch.Tensor:
    return sq_sum / (batch * abs_mean.detach().clamp_min(eps))


def adaptive_weighted_l2(pairs: Sequence[Sequence[torch.Tensor]], eps: float = 1e-8) -> torch.Tensor:
    """Caffe ``AdaptiveWeightEucLoss``: ``sum_i (1/a_i) sum_{n,d} (p_i - g_i)^2 / N``.

    ``a_i`` = mean over batch and dims of ``|p_i - g_i|``, **detached** (a constant for the
    gradient, so ``dL/dp_i = 2 (p_i - g_i) / (N a_i)``), clamped below at ``eps``; ``N`` = batch
    size (first dim of ``p_i``).

    Args:
        pairs: sequence of ``(pred, gt)`` or ``(pred, gt, weight)``; ``weight`` of shape a prefix of
            ``pred.shape`` (e.g. (B, J)) masks elements: ``a_i`` is then the mean over the weighted
            elements and the squared sum is weighted.
    """
    if len(pairs) == 0:
        raise ValueError("pairs must contain at least one (pred, gt) pair")
    total = None
    for i, pair in enumerate(pairs):
        if len(pair) not in (2, 3):
            raise ValueError(f"pairs[{i}] must be (pred, gt) or (pred, gt, weight)")
        pred, gt = _check_tensor(pair[0], f"pairs[{i}][0]"), _check_tensor(pair[1], f"pairs[{i}][1]")
        _same_shape(pred, gt, f"pairs[{i}][0]", f"pairs[{i}][1]")
        diff = pred - gt.detach()
        w = _expand_mask(pair[2], diff, f"pairs[{i}][2]") if len(pair) == 3 else None
        if w is None:
            sq, abs_mean = diff.square().sum(), diff.detach().abs().mean()
        else:
            wf = w.expand_as(diff)
            sq = (diff.square() * wf).sum()
            abs_mean = (diff.detach().abs() * wf).sum() / wf.sum().clamp_min(1e-12)
        term = _adaptive_term(sq, abs_mean, pred.shape[0], eps)
        total = term if total is None else total + term
    return total


def js_regularization(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Jensen-Shannon regularisation of the Caffe seed.

    ``sum over elements with p > eps and q > eps of 0.5 [p log(p/m) + q log(q/m)]``, ``m = (p+q)/2``,
    divided by the batch size ``p.shape[0]``.  For full-support distributions this is the JS
    divergence (natural log) per sample, in [0, log 2].  ``dL/dp = 0.5 log(p/m) / B`` on the kept
    elements (as the Caffe layer).

    Args:
        p: (B, ...) predicted non-negative values (e.g. normalised heatmaps).  q: same shape (target).
    """
    _check_tensor(p, "p")
    _check_tensor(q, "q")
    _same_shape(p, q, "p", "q")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    keep = (p > eps) & (q > eps)
    ps = torch.where(keep, p, torch.ones_like(p))
    qs = torch.where(keep, q.to(p.dtype), torch.ones_like(p))
    m = 0.5 * (ps + qs)
    term = 0.5 * (ps * torch.log(ps / m) + qs * torch.log(qs / m))
    return torch.where(keep, term, torch.zeros_like(term)).sum() / p.shape[0]


# --------------------------------------------------------------------------- combined objective
def _batch_field(batch: dict, key: str, shape: tuple[int, ...], device: torch.device,
                 dtype: torch.dtype | None, default: Any = None) -> torch.Tensor:
    if key not in batch or batch[key] is None:
        if default is None:
            raise ValueError(f"batch is missing {key!r}")
        return torch.full(shape, default, device=device)
    v = torch.as_tensor(batch[key])
    if tuple(v.shape) != shape:
        raise ValueError(f"batch[{key!r}] must have shape {shape}, got {tuple(v.shape)}")
    return v.to(device=device, dtype=dtype) if dtype is not None else v.to(device=device)


def _loss_inputs(hm2d: torch.Tensor, vol: torch.Tensor, batch: dict
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check the outputs and the batch of :func:`c2f_loss`: (joints_2d (B, J, 2) px, z_rel (B, J) mm —
    both zeroed where they are not used —, has_depth (B,), visible (B, J))."""
    _check_tensor(hm2d, "hm2d", 4)
    _check_volume(vol, "vol")
    B, J, H, W = hm2d.shape
    D = vol.shape[2]
    if tuple(vol.shape) != (B, J, D, H, W):
        raise ValueError(f"vol must have shape (B, J, D, H, W) = {(B, J, 'D', H, W)} matching hm2d, got {tuple(vol.shape)}")
    if not isinstance(batch, dict):
        raise ValueError(f"batch must be a dict, got {type(batch).__name__}")
    dev = vol.device
    j2 = _batch_field(batch, "joints_2d", (B, J, 2), dev, torch.float32)
    z = _batch_field(batch, "z_rel", (B, J), dev, torch.float32)
    has_depth = _batch_field(batch, "has_depth", (B,), dev, None, True).bool()
    visible = _batch_field(batch, "visible", (B, J), dev, None, True).bool()
    j2 = torch.where(visible[..., None], j2, torch.zeros_like(j2))
    z = torch.where(visible & has_depth[:, None], z, torch.zeros_like(z))
    finite = torch.stack([torch.isfinite(j2).all(), torch.isfinite(z).all()]).tolist()  # one sync
    for key, ok in zip(("joints_2d", "z_rel"), finite, strict=True):
        if not ok:
            raise ValueError(f"batch[{key!r}] contains NaN or infinite values for visible joints "
                             "(of samples with depth, for z_rel)")
    return j2, z, has_depth, visible


def _adaptive_integral(xyz: torch.Tensor, coords: torch.Tensor, visible: torch.Tensor, vis_f: torch.Tensor,
                       hd_int: torch.Tensor, z_scale: float, B: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The adaptive objective's integral pairs, x-y and z (scaled to cells), each balanced by itself."""
    d = xyz - coords.to(xyz.dtype)
    dxy, dz = d[..., :2], d[..., 2] * z_scale
    axy = (dxy.detach().abs() * vis_f[..., None]).sum() / (2 * vis_f.sum()).clamp_min(1)
    vz = (visible & hd_int[:, None]).to(dz.dtype)
    az = (dz.detach().abs() * vz).sum() / vz.sum().clamp_min(1)
    sqxy = (dxy.square() * vis_f[..., None]).sum()
    sqz = (dz.square() * vz).sum()
    return _adaptive_term(sqxy, axy, B, eps), _adaptive_term(sqz, az, B, eps)


def c2f_loss(hm2d: torch.Tensor, vol: torch.Tensor, batch: dict, cfg: LossConfig | None = None
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """Combined C2F objective on the two stage outputs; targets are built here from coordinates.

    Args:
        hm2d: (B, J, H, W) stage-1 2D heatmaps.  vol: (B, J, D, H, W) stage-2 volume (D = d2).
        batch: dict with ``joints_2d`` (B, J, 2) crop-input px, ``z_rel`` (B, J) mm, ``has_depth``
            (B,) bool, ``visible`` (B, J) bool (``has_depth``/``visible`` default to all True).
            Values of invisible joints and the depths of 2D-only samples are ignored (may be NaN).
        cfg: :class:`LossConfig` (default H1).
    Returns:
        ``(loss, parts)``: scalar loss tensor and floats ``hm2d``, ``hm3d`` (mean L2 terms, always),
        ``integral`` (I1 / adaptive with integral), ``total``.
    """
    cfg = cfg or LossConfig()
    j2, z, has_depth, visible = _loss_inputs(hm2d, vol, batch)
    B, J, H, W = hm2d.shape
    D = vol.shape[2]
    vis3 = visible & has_depth[:, None]

    # 2D heatmap term (small: materialised)
    t2d = heatmap_2d(px_to_hm(j2, cfg.stride), H, W, cfg.sigma_2d, validate=False).to(hm2d.dtype)
    # 3D heatmap term (separable, never materialised)
    coords = make_coords(j2, z, D, cfg.stride, cfg.depth_range, validate=False)
    sigma_z = cfg.sigma_z_for(D)
    sse3 = volume_sse_separable(vol, coords, cfg.sigma_2d, sigma_z, validate=False) * vis3.to(torch.float32)
    l3d = sse3.sum() / vol.numel()
    diff2 = hm2d - t2d
    sq2 = diff2.square() * visible[..., None, None].to(diff2.dtype)
    l2d = sq2.sum() / hm2d.numel()

    use_int = cfg.variant == "I1" or (cfg.variant == "adaptive" and cfg.integral_weight > 0)
    # integral z term only for samples with depth, and only when the volume resolves depth (D > 1)
    hd_int = has_depth & (D > 1)
    lint = None
    if use_int:
        xyz = soft_argmax(vol, scale=float(cfg.softmax_scale), validate=False)
        if cfg.variant == "I1":
            lint = integral_loss(xyz, coords, hd_int, cfg.integral_kind, visible, z_scale=W / D)

    if cfg.variant == "H1":
        total = l2d + cfg.ratio_3d * l3d
    elif cfg.variant == "I1":
        total = l2d + cfg.ratio_3d * l3d + cfg.integral_weight * lint
    else:
        vis_f = visible.to(diff2.dtype)
        n2 = vis_f.sum() * H * W
        a2 = (diff2.detach().abs() * vis_f[..., None, None]).sum() / n2.clamp_min(1)
        total = _adaptive_term(sq2.sum(), a2, B, cfg.adaptive_eps)
        n3 = vis3.sum() * D * H * W
        a3 = _volume_abs_sum(vol.detach(), coords, cfg.sigma_2d, sigma_z, vis3) / n3.clamp_min(1)
        total = total + _adaptive_term(sse3.sum(), a3.to(sse3.dtype), B, cfg.adaptive_eps)
        if use_int:
            term_xy, term_z = _adaptive_integral(xyz, coords, visible, vis_f, hd_int, W / D, B, cfg.adaptive_eps)
            total = total + term_xy + term_z
            lint = integral_loss(xyz.detach(), coords, hd_int, cfg.integral_kind, visible, z_scale=W / D)

    names = ["hm2d", "hm3d", "total"]
    vals = [l2d.detach(), l3d.detach(), total.detach()]
    if lint is not None:
        names.insert(2, "integral")
        vals.insert(2, lint.detach())
    floats = torch.stack([v.float() for v in vals]).tolist()
    return total, dict(zip(names, floats, strict=True))
