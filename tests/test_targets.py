"""C2F targets: depth encoding, unit conversions, sigma rule, 2D heatmaps, 3D volumes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pose.data import C2F_VOL_DEMO
from pose.targets import (
    C2F_DEPTH_RANGE,
    DepthRange,
    bin_to_depth,
    bin_to_norm,
    c2f_size_z,
    depth_to_bin,
    depth_to_norm,
    heatmap_2d,
    hm_to_px,
    make_coords,
    norm_to_bin,
    norm_to_depth,
    px_to_hm,
    separable_factors,
    sigma_z_for,
    volume_target,
)

D2S = [1, 2, 4, 8, 16, 32, 64]
LIMITS = C2F_VOL_DEMO / "voxel_limits.npz"


def _limits() -> np.ndarray:
    if LIMITS.exists():
        return np.load(LIMITS)["limits"]
    return np.linspace(C2F_DEPTH_RANGE.lb, C2F_DEPTH_RANGE.ub, 65)


# ----------------------------------------------------------------------------- depth
def test_default_range_is_c2f_voxel_limits():
    lim = _limits()
    assert C2F_DEPTH_RANGE.lb == pytest.approx(-1005.1859, abs=1e-4)
    assert C2F_DEPTH_RANGE.ub == pytest.approx(980.8599, abs=1e-4)
    np.testing.assert_allclose([lim[0], lim[-1]], [C2F_DEPTH_RANGE.lb, C2F_DEPTH_RANGE.ub], atol=1e-9)
    assert C2F_DEPTH_RANGE.bin_size(64) == pytest.approx(31.032, abs=1e-3)
    # C2F bin centres Zcen(k) land exactly on bin coordinate k at d2 = 64 and decode back
    zcen = (lim[:-1] + lim[1:]) / 2
    np.testing.assert_allclose(depth_to_bin(zcen, 64), np.arange(64), atol=1e-9)
    np.testing.assert_allclose(bin_to_depth(np.arange(64.0), 64), zcen, atol=1e-9)


@pytest.mark.parametrize("d2", D2S)
def test_encode_decode_error_at_most_half_a_bin(d2):
    rng = np.random.default_rng(d2)
    dr = C2F_DEPTH_RANGE
    z = np.concatenate([rng.uniform(dr.lb, dr.ub, 20000), [dr.lb, dr.ub - 1e-6, 0.0, -12.163]])
    zb = depth_to_bin(z, d2)
    k = np.clip(np.floor(zb + 0.5), 0, d2 - 1)  # the voxel an argmax would return
    err = np.abs(bin_to_depth(k, d2) - z)
    half = dr.width / d2 / 2
    assert err.max() <= half + 1e-9
    assert err.max() > 0.95 * half  # and the bound is tight (the test can fail)
    # continuous round trip is exact (one range both ways, not the seed's two ranges)
    np.testing.assert_allclose(bin_to_depth(zb, d2), z, atol=1e-9)


@pytest.mark.parametrize("d2", D2S)
def test_bin_matches_c2f_zind_rule(d2):
    """Our nearest bin is C2F's ``ceil(zind * D / 64)`` (1-based), zind the 64-bin index of z."""
    lim = _limits()
    rng = np.random.default_rng(7)
    z = rng.uniform(lim[0] + 1e-6, lim[-1] - 1e-6, 5000)
    zind = np.searchsorted(lim, z, side="right")  # 1..64: lim[zind-1] <= z < lim[zind]
    c2f = np.ceil(zind * d2 / 64)
    ours = np.floor(depth_to_bin(z, d2) + 0.5) + 1
    np.testing.assert_array_equal(ours, c2f)


def test_depth_torch_and_range_objects():
    z = torch.tensor([-1005.1859029814127, 980.8598618317474, 0.0], dtype=torch.float64)
    n = depth_to_norm(z)
    torch.testing.assert_close(n[:2], torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(norm_to_depth(n), z)
    dr = DepthRange(-1000, 1000)
    assert depth_to_norm(0.0, dr) == 0.5 and norm_to_bin(0.5, 64) == 31.5 and bin_to_norm(31.5, 64) == 0.5
    assert DepthRange.coerce([-1000, 1000]) == dr and DepthRange.coerce(None) is C2F_DEPTH_RANGE
    with pytest.raises(ValueError, match="depth_range"):
        DepthRange(5, 1)


def test_px_hm_conversion_hand_values():
    # stride 4: cell k covers input px [4k-0.5, 4k+3.5) (pixel-centre coords), centred at 4k+1.5
    assert px_to_hm(1.5, 4) == 0.0 and px_to_hm(5.5, 4) == 1.0 and px_to_hm(-0.5, 4) == -0.5
    assert hm_to_px(63.0, 4) == 253.5 and hm_to_px(63.5, 4) == 255.5
    x = torch.rand(5, 17, 2, dtype=torch.float64) * 256
    torch.testing.assert_close(hm_to_px(px_to_hm(x, 4), 4), x)
    assert px_to_hm(3.0, 1) == 3.0


# ----------------------------------------------------------------------------- sigma rule
def test_sigma_z_rule_table():
    assert [c2f_size_z(d) for d in D2S] == [1, 1, 1, 3, 5, 7, 13]
    assert [sigma_z_for(d) for d in D2S] == [0.0, 0.0, 0.0, 0.75, 1.25, 1.75, 3.25]
    caffe = [sigma_z_for(d, rule="caffe") for d in D2S]
    np.testing.assert_allclose(caffe, [0, 0, 0, 0.5, 5 / 6, 7 / 6, 13 / 6])
    assert sigma_z_for(64, rule="linear") == 2.0
    assert sigma_z_for(64, sigma_2d=1.0) == 0.25 * 7  # size_z = 2*floor((6*64/64+1)/2)+1 = 7
    with pytest.raises(ValueError, match="rule"):
        sigma_z_for(8, rule="nope")
    with pytest.raises(ValueError, match="d2"):
        sigma_z_for(0)


# ----------------------------------------------------------------------------- heatmaps
def test_heatmap_2d_values():
    c = torch.tensor([[[10.0, 20.0], [3.5, 0.0]]], dtype=torch.float64)
    hm = heatmap_2d(c, 32, 24, sigma=2.0)
    assert hm.shape == (1, 2, 32, 24)
    assert hm[0, 0, 20, 10] == 1.0 and hm.max() == 1.0
    assert hm[0, 0, 20, 11].item() == pytest.approx(math.exp(-1 / 8))
    assert hm[0, 0, 22, 12].item() == pytest.approx(math.exp(-8 / 8))
    # sub-pixel centre: two equal maxima either side, below 1
    assert hm[0, 1, 0, 3].item() == pytest.approx(hm[0, 1, 0, 4].item()) == pytest.approx(math.exp(-0.25 / 8))


@pytest.mark.parametrize("d2", D2S)
def test_volume_target_peak_at_encoded_voxel(d2):
    torch.manual_seed(d2)
    B, J, H, W = 3, 17, 16, 16
    px = torch.rand(B, J, 2) * 63  # crop-input px of a 64-px input at stride 4
    z = (torch.rand(B, J) * 2 - 1) * 970  # inside the C2F range (-1005.2, 980.9)
    coords = make_coords(px, z, d2, stride=4)
    vol = volume_target(coords, d2, H, W, 2.0)
    assert vol.shape == (B, J, d2, H, W)
    flat = vol.reshape(B, J, -1).argmax(-1)
    zi, yi, xi = flat // (H * W), (flat // W) % H, flat % W
    want = torch.floor(coords + 0.5).long()
    torch.testing.assert_close(torch.stack([xi, yi, zi], -1), want)
    # depth voxel of the peak is the C2F bin of the depth; peak 1 on integer coordinates
    torch.testing.assert_close(zi, torch.floor(depth_to_norm(z) * d2).long())
    c_int = want.double()
    v = volume_target(c_int, d2, H, W, 2.0)
    assert torch.allclose(v.amax((2, 3, 4)), torch.ones(B, J, dtype=torch.float64))


def test_volume_target_is_separable_product_and_reduces_to_2d():
    c = torch.tensor([[[5.2, 7.9, 3.3]]], dtype=torch.float64)
    v = volume_target(c, 8, 12, 14, 2.0, 0.75)
    gz, gy, gx = separable_factors(c, 8, 12, 14, 2.0, 0.75)
    k, h, w = 4, 6, 9
    want = math.exp(-((k - 3.3) ** 2) / (2 * 0.75**2)) * math.exp(-((h - 7.9) ** 2 + (w - 5.2) ** 2) / 8)
    assert v[0, 0, k, h, w].item() == pytest.approx(want, rel=1e-12)
    assert gz[0, 0, k] * gy[0, 0, h] * gx[0, 0, w] == pytest.approx(want)
    # d2 = 1 (single bin, sigma_z = 0): the volume is the 2D heatmap
    c1 = torch.tensor([[[5.2, 7.9, 0.2]]], dtype=torch.float64)
    torch.testing.assert_close(volume_target(c1, 1, 12, 14, 2.0)[:, :, 0], heatmap_2d(c1[..., :2], 12, 14, 2.0))


def test_single_bin_profile_is_one_hot_on_nearest_bin():
    c = torch.tensor([[[1.0, 1.0, 1.49], [1.0, 1.0, 1.5], [1.0, 1.0, 3.6]]], dtype=torch.float64)
    gz = separable_factors(c, 4, 3, 3, 2.0, 0.0)[0][0]
    torch.testing.assert_close(gz, torch.tensor([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]], dtype=torch.float64))


def test_make_coords_hand_values_and_clamp():
    px = torch.tensor([[[1.5, 253.5], [129.5, 0.0]]])
    z = torch.tensor([[C2F_DEPTH_RANGE.lb + 3 * C2F_DEPTH_RANGE.bin_size(64) / 2, 5000.0]])
    c = make_coords(px, z, 64, stride=4)
    torch.testing.assert_close(c[0, 0], torch.tensor([0.0, 63.0, 1.0]), atol=1e-4, rtol=0)
    assert c[0, 1, 0].item() == 32.0 and c[0, 1, 2].item() == pytest.approx(63.5 - 1e-4, abs=1e-5)
    assert torch.floor(c[0, 1, 2] + 0.5).item() == 63  # clamped depth stays in the last bin
    c2 = make_coords(px, z, 64, stride=4, clamp_depth=False)
    assert c2[0, 1, 2].item() > 63.5


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: volume_target(torch.zeros(2, 17, 3), 0, 8, 8), "d2"),
        (lambda: volume_target(torch.zeros(2, 17, 2), 4, 8, 8), "coords"),
        (lambda: volume_target(torch.full((2, 17, 3), float("nan")), 4, 8, 8), "coords"),
        (lambda: heatmap_2d(torch.zeros(2, 17, 3), 8, 8), "coords"),
        (lambda: heatmap_2d(torch.zeros(2, 17, 2), 8, 8, sigma=-1.0), "sigma"),
        (lambda: make_coords(torch.zeros(2, 17, 2), torch.zeros(2, 16), 4), "z_rel_mm"),
        (lambda: make_coords(torch.zeros(2, 17, 2), torch.full((2, 17), float("nan")), 4), "z_rel_mm"),
        (lambda: make_coords(torch.zeros(2, 17, 2), torch.zeros(2, 17), 0), "d2"),
        (lambda: make_coords(torch.zeros(2, 17, 2), torch.zeros(2, 17), 4, stride=0), "stride"),
        (lambda: norm_to_bin(0.5, 0), "d2"),
        (lambda: volume_target(torch.zeros(2, 17, 3), 4, 0, 8), "H"),
    ],
)
def test_bad_input_raises_value_error_naming_argument(call, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()
