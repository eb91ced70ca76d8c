"""Losses: separable 3D L2 == materialised, integral, adaptive, JS, smooth L1, combined c2f_loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pose.losses import (
    LossConfig,
    adaptive_weighted_l2,
    c2f_loss,
    heatmap_l2,
    integral_loss,
    js_regularization,
    smooth_l1,
    volume_l2_materialised,
    volume_l2_separable,
    volume_sse_separable,
)
from pose.targets import heatmap_2d, make_coords, px_to_hm, sigma_z_for, volume_target

D2S = [1, 2, 4, 8, 16, 32, 64]


def _coords(B, J, D, H, W, gen, dtype=torch.float64):
    c = torch.rand(B, J, 3, generator=gen, dtype=dtype)
    return c * torch.tensor([W + 3.0, H + 3.0, D + 1.0], dtype=dtype) - torch.tensor([1.5, 1.5, 0.5], dtype=dtype)


# ----------------------------------------------------------------------------- heatmap L2
def test_heatmap_l2_hand_value_and_mask():
    pred = torch.zeros(2, 3, 2, 2)
    target = torch.ones(2, 3, 2, 2)
    target[1] = 3.0
    assert heatmap_l2(pred, target).item() == pytest.approx((12 * 1 + 12 * 9) / 24)
    mask = torch.tensor([[1, 0, 1], [0, 0, 1]], dtype=torch.bool)
    assert heatmap_l2(pred, target, mask).item() == pytest.approx((8 * 1 + 4 * 9) / 24)
    torch.testing.assert_close(heatmap_l2(pred, target), F.mse_loss(pred, target))


# ----------------------------------------------------------------------------- separable == materialised
@pytest.mark.parametrize("d2", D2S)
def test_separable_equals_materialised_value_and_gradient(d2):
    gen = torch.Generator().manual_seed(100 + d2)
    B, J, H, W = 3, 4, 10, 12
    coords = _coords(B, J, d2, H, W, gen)
    mask = torch.rand(B, J, generator=gen) > 0.3
    for sigma_z in (None, 0.0, 1.7):
        for m in (None, mask):
            pred = torch.randn(B, J, d2, H, W, generator=gen, dtype=torch.float64)
            pred = (pred * 0.3 + volume_target(coords, d2, H, W, 2.0, sigma_z)).requires_grad_(True)
            a = volume_l2_separable(pred, coords, 2.0, sigma_z, m)
            target = volume_target(coords, d2, H, W, 2.0, sigma_z)
            b = heatmap_l2(pred, target, m)
            assert abs(a.item() - b.item()) <= 1e-5 * max(1.0, abs(b.item()))
            assert a.item() == pytest.approx(b.item(), rel=1e-10)
            ga, = torch.autograd.grad(a, pred)
            gb, = torch.autograd.grad(b, pred)
            torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-14)


def test_separable_float32_full_size_precision_near_target():
    """At 64^3 (float32) the cancellation ||p||^2 - 2<p,t> + ||t||^2 stays accurate to 1e-5."""
    gen = torch.Generator().manual_seed(3)
    B, J, D, H, W = 1, 4, 64, 64, 64
    coords = _coords(B, J, D, H, W, gen, torch.float32)
    t = volume_target(coords, D, H, W, 2.0)
    for noise in (1.0, 1e-3):
        pred = t + noise * torch.randn(t.shape, generator=gen)
        a = volume_l2_separable(pred, coords)
        ref = heatmap_l2(pred.double(), t.double())
        assert abs(a.item() - ref.item()) <= 1e-5 * ref.item()


def test_separable_sse_per_joint_and_gradcheck():
    gen = torch.Generator().manual_seed(5)
    coords = _coords(2, 2, 4, 5, 6, gen)
    pred = torch.randn(2, 2, 4, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    sse = volume_sse_separable(pred, coords, 1.5, 0.8)
    want = (pred - volume_target(coords, 4, 5, 6, 1.5, 0.8)).square().sum((2, 3, 4))
    torch.testing.assert_close(sse, want, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda p: volume_sse_separable(p, coords, 1.5, 0.8), (pred,))


def test_masked_joints_get_no_gradient():
    gen = torch.Generator().manual_seed(9)
    coords = _coords(2, 3, 8, 6, 6, gen)
    pred = torch.randn(2, 3, 8, 6, 6, generator=gen, requires_grad=True)
    mask = torch.tensor([[True, False, True], [False, False, True]])
    volume_l2_separable(pred, coords, mask=mask).backward()
    assert pred.grad[~mask].abs().max() == 0 and pred.grad[mask].abs().min() >= 0
    assert pred.grad[mask].abs().sum() > 0


def test_materialised_helper_matches():
    gen = torch.Generator().manual_seed(1)
    coords = _coords(2, 3, 16, 8, 8, gen)
    pred = torch.randn(2, 3, 16, 8, 8, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(volume_l2_separable(pred, coords), volume_l2_materialised(pred, coords))


# ----------------------------------------------------------------------------- integral / smooth L1
def test_integral_loss_l1_l2_with_has_depth_and_visible():
    pred = torch.tensor([[[1.0, 2.0, 3.0]], [[0.0, 0.0, 10.0]]])
    gt = torch.tensor([[[0.0, 0.0, 0.0]], [[1.0, 1.0, 0.0]]])
    hd = torch.tensor([True, False])
    # L1: sample 0: 1+2+3, sample 1: 1+1 (z masked) over B*J*3 = 6
    assert integral_loss(pred, gt, hd, "l1").item() == pytest.approx(8 / 6)
    assert integral_loss(pred, gt, hd, "l2").item() == pytest.approx((1 + 4 + 9 + 1 + 1) / 6)
    vis = torch.tensor([[False], [True]])
    assert integral_loss(pred, gt, hd, "l1", visible=vis).item() == pytest.approx(2 / 6)
    assert integral_loss(pred, gt, hd, "l1", z_scale=2.0).item() == pytest.approx((1 + 2 + 6 + 2) / 6)
    # 2D-only sample: its z gets no gradient
    p = pred.clone().requires_grad_(True)
    integral_loss(p, gt, hd, "l2").backward()
    assert p.grad[1, 0, 2] == 0 and p.grad[0, 0, 2] == pytest.approx(2 * 3 / 6)


def test_smooth_l1_matches_torch():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 5, 6, generator=gen) * 2, torch.randn(4, 5, 6, generator=gen)
    torch.testing.assert_close(smooth_l1(a, b, beta=0.5), F.smooth_l1_loss(a, b, beta=0.5))
    m = torch.tensor([1, 0, 1, 0], dtype=torch.bool)
    want = F.smooth_l1_loss(a[m], b[m], reduction="sum") / a.numel()
    torch.testing.assert_close(smooth_l1(a, b, mask=m), want)


# ----------------------------------------------------------------------------- adaptive
def test_adaptive_weighted_l2_value_and_gradient_vs_hand_formula():
    gen = torch.Generator().manual_seed(2)
    p1 = torch.randn(3, 17, 8, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    g1 = torch.randn(3, 17, 8, 8, generator=gen, dtype=torch.float64)
    p2 = torch.randn(3, 17, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    g2 = torch.randn(3, 17, 3, generator=gen, dtype=torch.float64)
    loss = adaptive_weighted_l2([(p1, g1), (p2, g2)])
    N = 3
    a1, a2 = (p1 - g1).abs().mean().item(), (p2 - g2).abs().mean().item()
    want = ((p1 - g1) ** 2).sum().item() / (N * a1) + ((p2 - g2) ** 2).sum().item() / (N * a2)
    assert loss.item() == pytest.approx(want, rel=1e-12)
    loss.backward()
    # a_i is a constant for the gradient (detached): dL/dp = 2 (p - g) / (N a)
    torch.testing.assert_close(p1.grad, 2 * (p1 - g1).detach() / (N * a1))
    torch.testing.assert_close(p2.grad, 2 * (p2 - g2).detach() / (N * a2))
    # each term is O(#dims) whatever the error scale: scaling the error by 1000 scales it by 1000, not 1e6
    l_small = adaptive_weighted_l2([(p2.detach(), g2)]).item()
    l_big = adaptive_weighted_l2([(g2 + 1000 * (p2.detach() - g2), g2)]).item()
    assert l_big / l_small == pytest.approx(1000.0)


def test_adaptive_with_weight_mask():
    p = torch.tensor([[1.0, 5.0], [3.0, 100.0]])
    g = torch.zeros(2, 2)
    w = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # a = mean |e| over weighted elements = (1 + 3)/2 = 2; sum w e^2 = 10; N = 2
    assert adaptive_weighted_l2([(p, g, w)]).item() == pytest.approx(10 / (2 * 2))


# ----------------------------------------------------------------------------- JS
def test_js_regularization_known_distributions():
    p = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    q = torch.tensor([[0.9, 0.1]], dtype=torch.float64)
    m = [0.7, 0.3]
    want = 0.5 * (0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])) + 0.5 * (
        0.9 * math.log(0.9 / m[0]) + 0.1 * math.log(0.1 / m[1]))
    assert js_regularization(p, q).item() == pytest.approx(want, rel=1e-12)
    # = scipy's JS divergence (natural log): jensenshannon([.5, .5], [.9, .1]) ** 2
    assert js_regularization(p, q).item() == pytest.approx(0.10174922507919676, rel=1e-9)
    assert js_regularization(q, q).item() == pytest.approx(0.0, abs=1e-15)
    # nearly disjoint supports -> log 2 per sample (batch mean)
    a = torch.tensor([[1.0, 1e-3, 0.0], [0.0, 1e-3, 1.0]], dtype=torch.float64)
    b = torch.tensor([[1e-3, 1.0, 0.0], [1e-3, 1.0, 0.0]], dtype=torch.float64)
    v = js_regularization(a, b).item()
    assert 0.5 < v < math.log(2)
    # elements at or below eps in p or q are ignored (Caffe semantics)
    assert js_regularization(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])).item() == 0.0


def test_js_gradient_is_half_log_p_over_m():
    gen = torch.Generator().manual_seed(4)
    p = torch.rand(2, 5, generator=gen, dtype=torch.float64) + 0.05
    q = torch.rand(2, 5, generator=gen, dtype=torch.float64) + 0.05
    p.requires_grad_(True)
    js_regularization(p, q).backward()
    m = (p.detach() + q) / 2
    torch.testing.assert_close(p.grad, 0.5 * torch.log(p.detach() / m) / 2)


# ----------------------------------------------------------------------------- c2f_loss
def _batch(B, J, S, gen, has_depth=None):
    return {
        "joints_2d": torch.rand(B, J, 2, generator=gen) * (S - 1),
        "z_rel": (torch.rand(B, J, generator=gen) * 2 - 1) * 900,
        "has_depth": torch.ones(B, dtype=torch.bool) if has_depth is None else has_depth,
        "visible": torch.rand(B, J, generator=gen) > 0.2,
    }


def test_c2f_loss_h1_matches_materialised_reference():
    gen = torch.Generator().manual_seed(11)
    B, J, D, H, W, S = 3, 5, 8, 16, 16, 64
    batch = _batch(B, J, S, gen, torch.tensor([True, False, True]))
    hm = torch.randn(B, J, H, W, generator=gen, requires_grad=True)
    vol = torch.randn(B, J, D, H, W, generator=gen, requires_grad=True)
    cfg = LossConfig(variant="H1", ratio_3d=0.7)
    loss, parts = c2f_loss(hm, vol, batch, cfg)
    vis, hd = batch["visible"], batch["has_depth"]
    t2 = heatmap_2d(px_to_hm(batch["joints_2d"], 4), H, W, 2.0)
    coords = make_coords(batch["joints_2d"], batch["z_rel"], D, 4)
    t3 = volume_target(coords, D, H, W, 2.0, sigma_z_for(D))
    ref2 = heatmap_l2(hm, t2, vis)
    ref3 = heatmap_l2(vol, t3, vis & hd[:, None])
    ref = ref2 + 0.7 * ref3
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert parts["hm2d"] == pytest.approx(ref2.item(), rel=1e-5)
    assert parts["hm3d"] == pytest.approx(ref3.item(), rel=1e-5)
    assert parts["total"] == pytest.approx(loss.item()) and set(parts) == {"hm2d", "hm3d", "total"}
    g = torch.autograd.grad(loss, [hm, vol])
    gr = torch.autograd.grad(ref, [hm, vol])
    for a, b in zip(g, gr, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-9)
    # the 2D-only sample contributes nothing to the 3D term
    assert g[1][1].abs().max() == 0


@pytest.mark.parametrize("variant", ["I1", "adaptive"])
def test_c2f_loss_i1_and_adaptive(variant):
    gen = torch.Generator().manual_seed(12)
    B, J, D, H, W, S = 2, 4, 4, 8, 8, 32
    batch = _batch(B, J, S, gen, torch.tensor([True, False]))
    hm = torch.randn(B, J, H, W, generator=gen, requires_grad=True)
    vol = torch.randn(B, J, D, H, W, generator=gen, requires_grad=True)
    cfg = LossConfig(variant=variant, ratio_3d=1.0, integral_weight=0.5, integral_kind="l1", softmax_scale=30.0)
    loss, parts = c2f_loss(hm, vol, batch, cfg)
    assert set(parts) == {"hm2d", "hm3d", "integral", "total"}
    h1, p1 = c2f_loss(hm, vol, batch, LossConfig(variant="H1"))
    if variant == "I1":
        from pose.decode import soft_argmax

        coords = make_coords(batch["joints_2d"], batch["z_rel"], D, 4)
        li = integral_loss(soft_argmax(vol, 30.0), coords, batch["has_depth"], "l1", batch["visible"], W / D)
        assert loss.item() == pytest.approx(h1.item() + 0.5 * li.item(), rel=1e-5)
        assert parts["integral"] == pytest.approx(li.item(), rel=1e-5)
    else:
        assert parts["hm2d"] == pytest.approx(p1["hm2d"]) and math.isfinite(loss.item())
    loss.backward()
    assert torch.isfinite(vol.grad).all() and vol.grad.abs().sum() > 0
    # the 2D-only sample: its volume still gets gradient only through the integral x-y term
    assert vol.grad[1].abs().sum() > 0


def test_c2f_loss_adaptive_h1_value():
    gen = torch.Generator().manual_seed(13)
    B, J, D, H, W = 2, 3, 4, 8, 8
    batch = _batch(B, J, 32, gen)
    batch["visible"][:] = True
    hm = torch.randn(B, J, H, W, generator=gen, dtype=torch.float64)
    vol = torch.randn(B, J, D, H, W, generator=gen, dtype=torch.float64)
    loss, _ = c2f_loss(hm, vol, batch, LossConfig(variant="adaptive", integral_weight=0.0))
    t2 = heatmap_2d(px_to_hm(batch["joints_2d"].double(), 4), H, W, 2.0)
    t3 = volume_target(make_coords(batch["joints_2d"].double(), batch["z_rel"].double(), D, 4), D, H, W, 2.0,
                       sigma_z_for(D))
    want = adaptive_weighted_l2([(hm, t2), (vol, t3)])
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_c2f_loss_ignores_nan_in_masked_entries_and_rejects_visible_nan():
    gen = torch.Generator().manual_seed(14)
    B, J, D, H, W = 2, 3, 2, 8, 8
    batch = _batch(B, J, 32, gen, torch.tensor([True, False]))
    batch["visible"][:] = True
    batch["visible"][0, 1] = False
    batch["joints_2d"][0, 1] = float("nan")
    batch["z_rel"][1] = float("nan")  # 2D-only sample: depth unused
    hm, vol = torch.zeros(B, J, H, W), torch.zeros(B, J, D, H, W)
    loss, _ = c2f_loss(hm, vol, batch, LossConfig())
    assert math.isfinite(loss.item())
    batch["joints_2d"][1, 2] = float("nan")
    with pytest.raises(ValueError, match="joints_2d"):
        c2f_loss(hm, vol, batch, LossConfig())


def test_loss_config_from_dict_and_validation():
    cfg = LossConfig.from_dict({"variant": "I1", "depth_range": [-1000, 1000], "ratio_3d": 1.92})
    assert cfg.depth_range.lb == -1000 and cfg.to_dict()["depth_range"] == [-1000.0, 1000.0]
    assert cfg.sigma_z_for(64) == 3.25 and LossConfig(sigma_z=1.0).sigma_z_for(64) == 1.0
    for bad in ({"variant": "X"}, {"integral_kind": "l3"}, {"nope": 1}, {"ratio_3d": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            LossConfig.from_dict(bad)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: heatmap_l2(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 5)), "target"),
        (lambda: heatmap_l2(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), torch.ones(3, 3)), "mask"),
        (lambda: volume_l2_separable(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 3)), "pred_vol"),
        (lambda: volume_l2_separable(torch.zeros(2, 3, 2, 4, 4), torch.zeros(2, 4, 3)), "coords"),
        (lambda: volume_l2_separable(torch.zeros(2, 3, 2, 4, 4), torch.full((2, 3, 3), float("nan"))), "coords"),
        (lambda: volume_l2_separable(torch.zeros(2, 3, 2, 4, 4), torch.zeros(2, 3, 3), -1.0), "sigma_2d"),
        (lambda: integral_loss(torch.zeros(2, 3, 3), torch.zeros(2, 3, 3), torch.ones(3)), "has_depth"),
        (lambda: integral_loss(torch.zeros(2, 3, 3), torch.zeros(2, 3, 3), kind="l3"), "kind"),
        (lambda: c2f_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 2, 4, 5), {}), "vol"),
        (lambda: c2f_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 2, 4, 4), {"z_rel": torch.zeros(2, 3)}),
         "joints_2d"),
        (lambda: js_regularization(torch.zeros(2, 3), torch.zeros(2, 4)), "q"),
        (lambda: adaptive_weighted_l2([]), "pairs"),
    ],
)
def test_bad_input_raises_value_error_naming_argument(call, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()


def test_c2f_loss_d2_1_integral_has_no_depth_term():
    gen = torch.Generator().manual_seed(15)
    B, J, H, W = 2, 3, 8, 8
    batch = _batch(B, J, 32, gen)
    hm, vol = torch.randn(B, J, H, W, generator=gen), torch.randn(B, J, 1, H, W, generator=gen)
    _, parts = c2f_loss(hm, vol, batch, LossConfig(variant="I1"))
    from pose.decode import soft_argmax

    coords = make_coords(batch["joints_2d"], batch["z_rel"], 1, 4)
    xy_only = integral_loss(soft_argmax(vol, 30.0), coords, torch.zeros(B, dtype=torch.bool), "l1", batch["visible"])
    assert parts["integral"] == pytest.approx(xy_only.item(), rel=1e-5)
