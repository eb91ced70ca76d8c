"""Camera geometry: projection, back-projection, world<->camera, H36M distortion, crop affines."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from pose.camera import (
    apply_affine,
    backproject,
    camera_to_world,
    crop_affine,
    distort,
    distort_normalized,
    invert_affine,
    project,
    project_distorted,
    world_to_camera,
)
from pose.data import C2F_VOL_DEMO

FIXTURE = C2F_VOL_DEMO / "valid.npz"

# H36M S1 camera 54138969 (the seed's camera_all example), p in H36M metadata order
F = np.array([1145.049405, 1143.781096])
C = np.array([512.541505, 515.451487])
KD = np.array([-0.207099, 0.247775, -0.003075])
PD = np.array([-0.001424, -0.000976])
K_S1 = np.array([[F[0], 0, C[0]], [0, F[1], C[1]], [0, 0, 1.0]])


def _rot(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rx @ ry @ rz


def martinez_project_point_radial(P, R, T, f, c, k, p):
    """Direct transcription of the formula of 3d-pose-baseline src/cameras.py::project_point_radial."""
    X = R.dot(P.T - T)
    XX = X[:2, :] / X[2, :]
    r2 = XX[0, :] ** 2 + XX[1, :] ** 2
    radial = 1 + k[0] * r2 + k[1] * r2**2 + k[2] * r2**3
    tan = p[0] * XX[1, :] + p[1] * XX[0, :]
    XXX = XX * (radial + tan) + np.outer(np.array([p[1], p[0]]), r2)
    return (f.reshape(2, 1) * XXX + c.reshape(2, 1)).T


@pytest.fixture(scope="module")
def valid():
    return np.load(FIXTURE)


# ----------------------------------------------------------------------------- pinhole
def test_project_hand_values():
    K = np.array([[1000.0, 0, 500], [0, 1100, 400], [0, 0, 1]])
    pts = np.array([[100.0, -200.0, 2000.0], [0.0, 0.0, 5000.0]])
    uv = project(pts, K)
    np.testing.assert_allclose(uv, [[550.0, 290.0], [500.0, 400.0]], atol=1e-9)
    assert isinstance(uv, np.ndarray)


def test_project_real_fixture_matches_pinhole_formula_and_crop(valid):
    S, K = valid["S"], valid["K"]  # (N,17,3) camera mm, (N,3,3)
    uv = project(S, K)
    assert uv.shape == (len(S), 17, 2)
    fx, fy, cx, cy = K[0, 0, 0], K[0, 1, 1], K[0, 0, 2], K[0, 1, 2]
    np.testing.assert_allclose(uv[..., 0], fx * S[..., 0] / S[..., 2] + cx, rtol=0, atol=1e-9)
    np.testing.assert_allclose(uv[..., 1], fy * S[..., 1] / S[..., 2] + cy, rtol=0, atol=1e-9)
    # C2F's crop centre is the middle of the joints' 2D box (within ~1.3 px for all 394 frames) and
    # the box is ~0.9 of the 200*scale crop: the projection agrees with the real annotations.
    mid = (uv.min(1) + uv.max(1)) / 2
    assert np.abs(mid - valid["center"]).max() < 1.5
    ratio = (uv.max(1) - uv.min(1)).max(1) / (200 * valid["scale"])
    assert 0.85 < ratio.min() and ratio.max() < 0.93


def test_project_backproject_round_trip_numpy_and_torch(valid):
    S, K = valid["S"], valid["K"]
    uv = project(S, K)
    back = backproject(uv, S[..., 2], K)
    np.testing.assert_allclose(back, S, atol=1e-6)
    St, Kt = torch.as_tensor(S), torch.as_tensor(K)
    uvt = project(St, Kt)
    assert isinstance(uvt, torch.Tensor) and uvt.dtype == torch.float64
    np.testing.assert_allclose(uvt.numpy(), uv, atol=1e-9)
    backt = backproject(uvt, St[..., 2], Kt[0])  # single K broadcast over the batch
    torch.testing.assert_close(backt, St, atol=1e-6, rtol=0)


def test_backproject_with_skew_and_float32():
    K = torch.tensor([[900.0, 3.0, 320.0], [0.0, 950.0, 240.0], [0.0, 0.0, 1.0]])
    pts = torch.tensor([[[150.0, -80.0, 3000.0], [-400.0, 300.0, 4500.0]]])
    uv = project(pts, K)
    assert uv.dtype == torch.float32
    torch.testing.assert_close(backproject(uv, pts[..., 2], K), pts, atol=1e-3, rtol=1e-6)


def test_world_camera_round_trip_and_formula():
    rng = np.random.default_rng(0)
    R = _rot(0.3, -1.1, 2.0)
    T = np.array([1841.1, 4955.3, 1563.4])
    Xw = rng.normal(size=(5, 17, 3)) * 500
    Xc = world_to_camera(Xw, R, T)
    np.testing.assert_allclose(Xc[2, 4], R @ (Xw[2, 4] - T), atol=1e-9)
    np.testing.assert_allclose(camera_to_world(Xc, R, T), Xw, atol=1e-9)
    # Martinez stores T as a (3, 1) column; batched R/T also broadcast
    np.testing.assert_allclose(world_to_camera(Xw, R, T.reshape(3, 1)), Xc, atol=1e-9)
    Rb, Tb = np.stack([R] * 5), np.stack([T] * 5)
    Xct = world_to_camera(torch.as_tensor(Xw), torch.as_tensor(Rb), torch.as_tensor(Tb))
    np.testing.assert_allclose(Xct.numpy(), Xc, atol=1e-9)


# ----------------------------------------------------------------------------- distortion
def test_distortion_matches_martinez_project_point_radial():
    rng = np.random.default_rng(1)
    R = _rot(-1.7, 0.2, 0.05)
    T = np.array([[-346.0], [546.9], [1628.0]])
    Xc = np.c_[rng.uniform(-900, 900, (40, 2)), rng.uniform(2500, 6000, 40)]
    Pw = camera_to_world(Xc, R, T)
    ref = martinez_project_point_radial(Pw, R, T, F, C, KD, PD)
    np.testing.assert_allclose(project_distorted(Pw, K_S1, KD, PD, R=R, T=T), ref, atol=1e-8)
    np.testing.assert_allclose(distort(Xc, K_S1, KD, PD), ref, atol=1e-8)
    # torch in -> torch out, same numbers
    out = distort(torch.as_tensor(Xc), torch.as_tensor(K_S1), torch.as_tensor(KD), torch.as_tensor(PD))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-8)
    # distortion actually matters at the image border (not a no-op), and k = p = 0 is the pinhole
    assert np.abs(ref - project(Xc, K_S1)).max() > 1.0
    np.testing.assert_allclose(distort(Xc, K_S1, np.zeros(3), np.zeros(2)), project(Xc, K_S1), atol=1e-9)


def test_distort_normalized_hand_value():
    xy = np.array([[0.2, -0.1]])
    k, p = np.array([0.1, 0.01, 0.001]), np.array([0.002, 0.003])
    r2 = 0.05
    radial = 1 + 0.1 * r2 + 0.01 * r2**2 + 0.001 * r2**3
    tan = 0.002 * -0.1 + 0.003 * 0.2
    want = [[0.2 * (radial + tan) + 0.003 * r2, -0.1 * (radial + tan) + 0.002 * r2]]
    np.testing.assert_allclose(distort_normalized(xy, k, p), want, atol=1e-12)


# ----------------------------------------------------------------------------- crop affine
def test_crop_affine_centre_and_edges():
    M = crop_affine(np.array([509.05, 409.58]), 381.27, 0.0, 256)
    assert M.shape == (2, 3)
    c = np.array([509.05, 409.58])
    h = 381.27 / 2
    pts = np.array([c, c - h, c + h])
    np.testing.assert_allclose(apply_affine(pts, M), [[127.5, 127.5], [-0.5, -0.5], [255.5, 255.5]], atol=1e-9)


def test_crop_affine_rotation_sense_and_cv2():
    c, size, res = np.array([100.0, 80.0]), 50.0, 64
    M = crop_affine(c, size, 90.0, res)
    # CCW as displayed (y down): a point above the centre ends up left of the crop centre
    p = apply_affine(np.array([[100.0, 70.0]]), M)
    np.testing.assert_allclose(p, [[31.5 - 10 * res / size, 31.5]], atol=1e-9)
    # equals cv2.getRotationMatrix2D about the centre, scaled, then translated to the crop centre
    for rot in (0.0, 17.0, -123.0):
        G = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), rot, res / size)
        G[:, 2] += (res - 1) / 2 - c
        np.testing.assert_allclose(crop_affine(c, size, rot, res), G, atol=1e-9)


def test_crop_affine_with_warpaffine_pixel_centres():
    img = np.zeros((120, 160), np.float32)
    img[50, 70] = 1.0  # pixel centre at (x=70, y=50)
    M = crop_affine(np.array([79.5, 59.5]), 64.0, 0.0, 64)  # scale 1: integer translation
    crop = cv2.warpAffine(img, M, (64, 64), flags=cv2.INTER_LINEAR)
    y, x = np.unravel_index(np.argmax(crop), crop.shape)
    np.testing.assert_allclose(apply_affine(np.array([[70.0, 50.0]]), M), [[x, y]], atol=1e-9)
    assert crop[y, x] == pytest.approx(1.0)


def test_invert_affine_round_trip_batched_torch():
    center = torch.tensor([[500.0, 400.0], [300.0, 250.0]], dtype=torch.float64)
    size = torch.tensor([380.0, 200.0], dtype=torch.float64)
    rot = torch.tensor([25.0, -40.0], dtype=torch.float64)
    M = crop_affine(center, size, rot, 256)
    assert isinstance(M, torch.Tensor) and M.shape == (2, 2, 3)
    Mi = invert_affine(M)
    pts = torch.rand(2, 17, 2, dtype=torch.float64) * 600
    torch.testing.assert_close(apply_affine(apply_affine(pts, M), Mi), pts, atol=1e-9, rtol=0)
    torch.testing.assert_close(apply_affine(center[:, None], M), torch.full((2, 1, 2), 127.5, dtype=torch.float64))
    # numpy result of the same call agrees
    Mn = crop_affine(center.numpy(), size.numpy(), rot.numpy(), 256)
    np.testing.assert_allclose(Mn, M.numpy(), atol=1e-12)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: project(np.ones((17, 2)), np.eye(3)), "points"),
        (lambda: project(np.ones((17, 3)), np.eye(2)), "K"),
        (lambda: project(np.full((17, 3), np.nan), np.eye(3)), "points"),
        (lambda: backproject(np.ones((17, 2)), np.ones(16), np.eye(3)), "depth"),
        (lambda: backproject(np.ones((17, 2)), np.full(17, np.nan), np.eye(3)), "depth"),
        (lambda: world_to_camera(np.ones((17, 3)), np.eye(3), np.ones(2)), "T"),
        (lambda: distort(np.ones((17, 3)), np.eye(3), np.ones(2), np.ones(2)), "k"),
        (lambda: crop_affine(np.array([1.0, 2.0]), -5.0, 0.0, 64), "size"),
        (lambda: apply_affine(np.ones((4, 2)), np.eye(3)), "M"),
    ],
)
def test_bad_input_raises_value_error_naming_argument(call, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()
