"""Value tests for pose.decode (argmax / soft-argmax, unit conversions, root-depth fit)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pose import decode as D
from pose.camera import project
from pose.data import C2F_VOL_DEMO
from pose.metrics import mpjpe
from pose.skeleton import LIMB_LENGTHS_TRAIN_MM, limb_lengths
from pose.targets import C2F_DEPTH_RANGE, DepthRange, make_coords, volume_target

FIXTURE = C2F_VOL_DEMO / "valid.npz"


def _gauss_volume(centres: torch.Tensor, d: int, h: int, w: int, sx: float, sz: float) -> torch.Tensor:
    """Independent reference: (B, J, D, H, W) gaussian with peak 1 at centres (B, J, 3) = (x, y, z)."""
    zz, yy, xx = torch.meshgrid(
        torch.arange(d, dtype=torch.float64), torch.arange(h, dtype=torch.float64),
        torch.arange(w, dtype=torch.float64), indexing="ij",
    )
    c = centres[..., None, None, None].to(torch.float64)
    r2 = ((xx - c[..., 0, :, :, :]) ** 2 + (yy - c[..., 1, :, :, :]) ** 2) / (2 * sx**2)
    return torch.exp(-r2 - (zz - c[..., 2, :, :, :]) ** 2 / (2 * sz**2))


def _random_voxels(gen, b, j, d, h, w) -> torch.Tensor:
    return torch.stack([
        torch.randint(0, w, (b, j), generator=gen), torch.randint(0, h, (b, j), generator=gen),
        torch.randint(0, d, (b, j), generator=gen),
    ], dim=-1)


# --- argmax ------------------------------------------------------------------------------------
def test_argmax_one_hot_axis_order():
    b, j, d, h, w = 2, 3, 3, 5, 7  # all sizes differ -> catches axis mix-ups
    gen = torch.Generator().manual_seed(0)
    vox = _random_voxels(gen, b, j, d, h, w)
    vol = torch.zeros(b, j, d, h, w)
    for bi in range(b):
        for ji in range(j):
            x, y, z = vox[bi, ji].tolist()
            vol[bi, ji, z, y, x] = 1.0
    out = D.argmax(vol)
    assert out.dtype == torch.int64 and out.shape == (b, j, 3)
    assert torch.equal(out, vox)
    # numpy in -> numpy out
    out_np = D.argmax(vol.numpy())
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.int64
    np.testing.assert_array_equal(out_np, vox.numpy())


@pytest.mark.parametrize("d2", [1, 2, 4, 8, 16, 32, 64])
def test_argmax_of_volume_target_recovers_encoded_voxel(d2):
    gen = torch.Generator().manual_seed(d2)
    b, j, h, w = 2, 17, 16, 16
    vox = _random_voxels(gen, b, j, d2, h, w)
    # through pose.targets (the training target) ...
    tgt = volume_target(vox.float(), d2, h, w, sigma_2d=2.0)
    assert torch.equal(D.argmax(tgt), vox)
    # ... and through the independent reference gaussian, with sub-cell offsets (< 0.5 cell)
    offs = (torch.rand(b, j, 3, generator=gen) - 0.5) * 0.9
    ref = _gauss_volume(vox + offs, d2, h, w, 2.0, 1.0)
    assert torch.equal(D.argmax(ref), vox)


def test_argmax_2d():
    hm = torch.zeros(1, 2, 4, 6)
    hm[0, 0, 3, 5] = 2.0
    hm[0, 1, 1, 2] = 0.5
    assert D.argmax_2d(hm).tolist() == [[[5, 3], [2, 1]]]


def test_argmax_local_recovers_sub_cell_centre_of_a_symmetric_peak():
    """A gaussian whose centre lies between cells: the plain argmax is off by up to half a cell per
    axis, the local centroid of a narrow symmetric peak lands within 0.01 cell of the true centre."""
    centres = torch.tensor([[[10.3, 5.6, 7.8], [20.45, 30.2, 3.25]]], dtype=torch.float64)
    vol = _gauss_volume(centres, 16, 40, 40, sx=0.7, sz=0.7)
    hard = D.argmax(vol).double()
    local = D.argmax_local(vol)
    assert local.dtype == torch.float64 and local.shape == (1, 2, 3)
    assert torch.equal(local.round(), hard)  # the refinement stays within the argmax cell here
    assert (local - centres).abs().max() < 0.01 < (hard - centres).abs().max()
    # numpy in, numpy out; radius 0 is the plain argmax
    np.testing.assert_allclose(D.argmax_local(vol.numpy()), local.numpy())
    assert torch.equal(D.argmax_local(vol, radius=0), hard)


def test_argmax_local_ignores_a_second_peak_and_the_volume_border():
    """The whole-volume soft-argmax averages two peaks; the local one stays on the stronger peak, at
    a border it averages only cells inside the volume, and a window without positive values keeps
    the argmax voxel."""
    vol = torch.full((1, 3, 8, 16, 16), -0.1)
    vol[0, 0, 2, 3, 4] = 1.0
    vol[0, 0, 6, 12, 13] = 0.9  # a second, weaker peak far away
    vol[0, 1, 0, 0, 0], vol[0, 1, 0, 0, 1] = 1.0, 1.0  # a corner: the centroid of (0,0,0) and (1,0,0)
    vol[0, 2, 5, 5, 5] = -0.01  # all values negative: the maximum, unrefined
    out = D.argmax_local(vol)
    assert out[0, 0].tolist() == [4.0, 3.0, 2.0]
    assert D.soft_argmax(vol, scale=30.0)[0, 0, 0] > 4.4  # the soft-argmax is pulled towards the second peak
    assert out[0, 1].tolist() == [0.5, 0.0, 0.0]
    assert out[0, 2].tolist() == [5.0, 5.0, 5.0]
    with pytest.raises(ValueError, match="radius"):
        D.argmax_local(vol, radius=-1)
    with pytest.raises(ValueError, match="volume"):
        D.argmax_local(torch.zeros(2, 3, 4, 4))


def test_argmax_local_is_a_pipeline_decoding():
    """``decode_outputs`` knows ``argmax_local`` and gives the same camera joints as decoding its grid
    coordinates by hand."""
    gen = torch.Generator().manual_seed(11)
    vol = torch.rand(2, 17, 8, 32, 32, generator=gen)
    K = torch.tensor([[1000.0, 0, 500], [0, 1000.0, 400], [0, 0, 1]], dtype=torch.float64)
    A = torch.tensor([[2.0, 0, 100], [0, 2.0, 50]], dtype=torch.float64)
    rd = torch.tensor([4000.0, 5000.0], dtype=torch.float64)
    dec = D.decode_outputs(vol, A, K, d2=8, stride=4, depth_range=C2F_DEPTH_RANGE, root_depth=rd,
                           methods=("argmax_local",))["argmax_local"]
    uv, z = D.decode_to_crop(D.argmax_local(vol), 8, 4, C2F_DEPTH_RANGE)
    ref = D.to_camera(uv @ A[:, :2].T + A[:, 2], z, rd, K)
    assert torch.allclose(dec.camera, ref)
    assert "argmax_local" in D.DECODINGS


# --- soft-argmax -------------------------------------------------------------------------------
def test_soft_argmax_sharp_target_within_005_cell():
    gen = torch.Generator().manual_seed(1)
    b, j, d2, h, w = 2, 17, 32, 16, 16
    vox = _random_voxels(gen, b, j, d2, h, w).float()
    tgt = volume_target(vox, d2, h, w, sigma_2d=2.0)
    out = D.soft_argmax(tgt, scale=50.0)  # the seed's x50 on a [0, 1] gaussian target
    assert out.shape == (b, j, 3) and out.dtype == torch.float32
    assert (out - vox).abs().max() < 0.05
    # corners/edges included: a target on the border cell is still recovered
    vox[0, 0] = torch.tensor([0.0, h - 1.0, d2 - 1.0])
    out = D.soft_argmax(volume_target(vox, d2, h, w, sigma_2d=2.0), scale=50.0)
    assert (out - vox).abs().max() < 0.05


def test_soft_argmax_sub_cell_expectation():
    # softmax(log g) = normalised gaussian, whose mean is the (interior, sub-cell) centre
    gen = torch.Generator().manual_seed(2)
    b, j, d, h, w = 2, 4, 24, 20, 18
    c = torch.rand(b, j, 3, generator=gen, dtype=torch.float64)
    c = c * torch.tensor([w - 12.0, h - 12.0, d - 12.0], dtype=torch.float64) + 6.0
    vol = torch.log(_gauss_volume(c, d, h, w, 1.5, 1.2))
    out = D.soft_argmax(vol)
    assert out.dtype == torch.float64
    assert (out - c).abs().max() < 1e-3


def test_soft_argmax_uniform_gives_grid_centre():
    b, j, d, h, w = 2, 3, 4, 6, 9
    out = D.soft_argmax(torch.full((b, j, d, h, w), 0.37), scale=30.0)
    expected = torch.tensor([(w - 1) / 2, (h - 1) / 2, (d - 1) / 2])
    assert torch.allclose(out, expected.expand(b, j, 3), atol=1e-5)
    out2 = D.soft_argmax_2d(torch.zeros(1, 2, h, w))
    assert torch.allclose(out2, expected[:2].expand(1, 2, 2), atol=1e-5)


def test_soft_argmax_matches_direct_expectation_and_has_gradient():
    gen = torch.Generator().manual_seed(3)
    vol = torch.randn(2, 3, 4, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    scale = 2.5
    out = D.soft_argmax(vol, scale=scale)
    p = torch.softmax(vol.detach().reshape(2, 3, -1) * scale, dim=-1).reshape(vol.shape).numpy()
    zz, yy, xx = np.meshgrid(np.arange(4), np.arange(5), np.arange(6), indexing="ij")
    ref = np.stack([(p * g).sum(axis=(2, 3, 4)) for g in (xx, yy, zz)], axis=-1)
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-12, atol=1e-12)
    out.sum().backward()
    assert vol.grad is not None and torch.isfinite(vol.grad).all() and vol.grad.abs().sum() > 0
    # 2D version vs the same formula
    hm = vol.detach()[:, :, 0]
    p2 = torch.softmax(hm.reshape(2, 3, -1), dim=-1).reshape(hm.shape).numpy()
    ref2 = np.stack([(p2 * g[0]).sum(axis=(2, 3)) for g in (xx, yy)], axis=-1)
    np.testing.assert_allclose(D.soft_argmax_2d(hm.numpy()), ref2, rtol=1e-12, atol=1e-12)


# --- unit conversions ------------------------------------------------------------------------------
def test_decode_to_crop_values_and_round_trip():
    xyz = torch.tensor([[[0.0, 0.0, 0.0], [63.0, 10.0, 1.0]]])
    uv, z = D.decode_to_crop(xyz, d2=2, stride=4)
    assert torch.allclose(uv, torch.tensor([[[1.5, 1.5], [253.5, 41.5]]]))
    lb, ub = C2F_DEPTH_RANGE.lb, C2F_DEPTH_RANGE.ub
    assert torch.allclose(z, torch.tensor([[lb + 0.25 * (ub - lb), lb + 0.75 * (ub - lb)]]).float())
    # round trip with the target encoder, any d2, custom range
    gen = torch.Generator().manual_seed(4)
    px = torch.rand(3, 17, 2, generator=gen, dtype=torch.float64) * 255
    zr = (torch.rand(3, 17, generator=gen, dtype=torch.float64) - 0.5) * 1800
    dr = DepthRange(-1000.0, 1000.0)
    for d2 in (1, 8, 64):
        uv, z = D.decode_to_crop(make_coords(px, zr, d2, 4, dr), d2, 4, dr)
        assert torch.allclose(uv, px, atol=1e-9) and torch.allclose(z, zr, atol=1e-9)
    # decoding the argmax voxel is off by at most half a bin / half a cell
    for d2 in (2, 16, 64):
        coords = make_coords(px, zr, d2, 4, C2F_DEPTH_RANGE)
        uv, z = D.decode_to_crop(coords.round(), d2, 4)
        assert (z - zr).abs().max() <= 0.5 * C2F_DEPTH_RANGE.bin_size(d2) + 1e-9
        assert (uv - px).abs().max() <= 2.0 + 1e-9


def _fixture():
    data = np.load(FIXTURE)
    s, k = data["S"].astype(np.float64), data["K"].astype(np.float64)
    uv = project(s, k)
    z_rel = s[..., 2] - s[:, :1, 2]
    return s, k, uv, z_rel


def test_to_camera_round_trip_on_real_fixture():
    s, k, uv, z_rel = _fixture()
    rec = D.to_camera(uv, z_rel, s[:, 0, 2], k)
    assert isinstance(rec, np.ndarray) and rec.shape == s.shape
    np.testing.assert_allclose(rec, s, atol=1e-6)
    rec_t = D.to_camera(torch.tensor(uv[:5]), torch.tensor(z_rel[:5]), torch.tensor(s[:5, 0, 2]),
                        torch.tensor(k[0]))  # one shared K
    np.testing.assert_allclose(rec_t.numpy(), s[:5], atol=1e-6)


def test_fit_root_depth_real_fixture():
    s, k, uv, z_rel = _fixture()
    true_root = s[:, 0, 2]
    # recType 2-like: the pose's own limb lengths -> exact root depth
    own = D.fit_root_depth(uv, z_rel, k, limb_lengths=limb_lengths(s))
    assert own.shape == (len(s),)
    assert np.abs(own - true_root).max() < 1.0
    # torch in -> torch out, same numbers
    own_t = D.fit_root_depth(torch.tensor(uv[:8]), torch.tensor(z_rel[:8]), torch.tensor(k[:8]),
                             limb_lengths=torch.tensor(limb_lengths(s[:8])))
    assert isinstance(own_t, torch.Tensor)
    assert np.abs(own_t.numpy() - true_root[:8]).max() < 1.0
    # recType 3: training-mean limb lengths (S1,S5-S8). S9 is larger than the training mean, so
    # the root is placed ~5 % too close: measured mean -277 mm, max |err| 327 mm (5.6 %), and the
    # root-aligned MPJPE of the reconstruction is 22.4 mm on average (GT 2D and GT relative depth).
    fit = D.fit_root_depth(uv, z_rel, k)
    rel_err = (fit - true_root) / true_root
    assert np.abs(rel_err).max() < 0.07
    assert -0.07 < rel_err.mean() < -0.03
    err = mpjpe(D.to_camera(uv, z_rel, fit, k), s)
    assert err.mean() < 30.0


def test_fit_root_depth_matches_nelder_mead_like_c2f():
    scipy_opt = pytest.importorskip("scipy.optimize")
    s, k, uv, z_rel = _fixture()
    idx = [0, 200, 393]
    fit = D.fit_root_depth(uv[idx], z_rel[idx], k[idx])
    target = np.asarray(LIMB_LENGTHS_TRAIN_MM)
    for n, i in enumerate(idx):
        def cost(zr, i=i):
            rec = D.to_camera(uv[i:i + 1], z_rel[i:i + 1], np.asarray([zr[0]]), k[i:i + 1])
            return np.linalg.norm(limb_lengths(rec[0]) - target)

        res = scipy_opt.minimize(cost, [2000.0], method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-9})
        assert abs(res.x[0] - fit[n]) < 1e-2


# --- bad input ----------------------------------------------------------------------------------------
def test_bad_input_raises_value_error_naming_argument():
    vol = torch.zeros(1, 2, 3, 4, 4)
    with pytest.raises(ValueError, match="volume"):
        D.argmax(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="volume"):
        D.soft_argmax(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="hm"):
        D.argmax_2d(vol)
    nan_vol = vol.clone()
    nan_vol[0, 1, 2, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="volume"):
        D.argmax(nan_vol)
    with pytest.raises(ValueError, match="volume"):
        D.soft_argmax(nan_vol)
    with pytest.raises(ValueError, match="scale"):
        D.soft_argmax(vol, scale=0.0)
    with pytest.raises(ValueError, match="xyz"):
        D.decode_to_crop(torch.zeros(1, 17, 2), 4, 4)
    with pytest.raises(ValueError, match="d2"):
        D.decode_to_crop(torch.zeros(1, 17, 3), 0, 4)
    with pytest.raises(ValueError, match="xyz"):
        D.decode_to_crop(torch.full((1, 17, 3), float("nan")), 4, 4)
    uv, z, k = torch.zeros(2, 17, 2), torch.zeros(2, 17), torch.eye(3).expand(2, 3, 3)
    with pytest.raises(ValueError, match="z_rel_mm"):
        D.to_camera(uv, torch.zeros(2, 16), torch.ones(2), k)
    with pytest.raises(ValueError, match="root_depth"):
        D.to_camera(uv, z, torch.ones(3), k)
    with pytest.raises(ValueError, match="K"):
        D.to_camera(uv, z, torch.ones(2), torch.eye(3).expand(3, 3, 3))
    bad_uv = uv.clone()
    bad_uv[1, 4, 0] = float("nan")
    with pytest.raises(ValueError, match="uv_img_px"):
        D.fit_root_depth(bad_uv, z, k)
    with pytest.raises(ValueError, match="limb_lengths"):
        D.fit_root_depth(uv, z, k, limb_lengths=[100.0] * 15)
    with pytest.raises(ValueError, match="bounds"):
        D.fit_root_depth(uv, z, k, bounds=(500.0, 100.0))
