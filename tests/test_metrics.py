"""Value tests for pose.metrics (MPJPE, PA-MPJPE, rigid, PCK/AUC, action tables)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pose import metrics as M
from pose.skeleton import ACTIONS_H36M

RNG = np.random.default_rng(0)


def _random_poses(n: int, j: int = 17, rng=RNG) -> np.ndarray:
    return rng.normal(scale=300.0, size=(n, j, 3))


def _random_rotation(rng=RNG) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def _vp3d_p_mpjpe_one(predicted: np.ndarray, target: np.ndarray) -> float:
    """Independent, straightforward per-frame port of VideoPose3D common/loss.py p_mpjpe."""
    mu_x = target.mean(axis=0)
    mu_y = predicted.mean(axis=0)
    x0 = target - mu_x
    y0 = predicted - mu_y
    norm_x = np.sqrt((x0**2).sum())
    norm_y = np.sqrt((y0**2).sum())
    x0 = x0 / norm_x
    y0 = y0 / norm_y
    h = x0.T @ y0
    u, s, vt = np.linalg.svd(h)
    v = vt.T
    r = v @ u.T
    if np.linalg.det(r) < 0:
        v[:, -1] *= -1
        s[-1] *= -1
        r = v @ u.T
    a = s.sum() * norm_x / norm_y
    t = mu_x - a * (mu_y @ r)
    aligned = a * (predicted @ r) + t
    return float(np.linalg.norm(aligned - target, axis=-1).mean())


def _mks_rigid_one(a_pose: np.ndarray, b_pose: np.ndarray) -> float:
    """Independent per-frame port of mks0601 rigid_transform_3D + rigid_align (A=pred, B=gt)."""
    ca, cb = a_pose.mean(0), b_pose.mean(0)
    h = (a_pose - ca).T @ (b_pose - cb)
    u, s, vt = np.linalg.svd(h)
    r = vt.T @ u.T
    if np.linalg.det(r) < 0:
        vt[2] = -vt[2]
        r = vt.T @ u.T
    t = -r @ ca + cb
    aligned = (r @ a_pose.T).T + t
    return float(np.linalg.norm(aligned - b_pose, axis=-1).mean())


# --- MPJPE ----------------------------------------------------------------------------------------
def test_mpjpe_by_hand():
    gt = np.zeros((1, 3, 3))
    gt[0, 1] = [100, 0, 0]
    gt[0, 2] = [0, 100, 0]
    pred = gt.copy()
    pred[0, 1] += [3, 4, 0]  # error 5
    pred[0, 2] += [0, 0, 12]  # error 12
    # root (joint 0) unchanged -> root alignment is a no-op: (0 + 5 + 12) / 3
    np.testing.assert_allclose(M.mpjpe(pred, gt), [17 / 3])
    # move the predicted root by (0, 0, 30): root-aligned error unchanged, absolute error grows
    pred2 = pred + np.array([0, 0, 30.0])
    np.testing.assert_allclose(M.mpjpe(pred2, gt), [17 / 3])
    expected_abs = (30 + np.linalg.norm([3, 4, 30]) + 42) / 3
    np.testing.assert_allclose(M.mpjpe(pred2, gt, root=None), [expected_abs])


def test_mpjpe_batch_torch_and_single_pose():
    gt = _random_poses(5)
    pred = gt + RNG.normal(scale=10, size=gt.shape)
    ref = np.array([
        np.linalg.norm((p - p[0]) - (g - g[0]), axis=-1).mean() for p, g in zip(pred, gt, strict=True)
    ])
    out = M.mpjpe(pred, gt)
    assert out.shape == (5,) and out.dtype == np.float64
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    np.testing.assert_allclose(M.mpjpe(torch.tensor(pred, dtype=torch.float32), torch.tensor(gt)), ref,
                               rtol=1e-5)
    np.testing.assert_allclose(M.mpjpe(pred[2], gt[2]), ref[2:3], rtol=1e-12)


def test_root_align():
    x = _random_poses(4)
    out = M.root_align(torch.tensor(x))
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out[:, 0], 0.0)
    np.testing.assert_allclose(out[:, 5] - out[:, 3], x[:, 5] - x[:, 3])


# --- Procrustes -----------------------------------------------------------------------------------
def test_pa_mpjpe_zero_for_similarity_copy_and_invariant():
    gt = _random_poses(6)
    pred = gt + RNG.normal(scale=20, size=gt.shape)
    base = M.pa_mpjpe(pred, gt)
    assert (base > 1.0).all()
    for _ in range(3):
        r = _random_rotation()
        scale = RNG.uniform(0.3, 3.0)
        t = RNG.normal(scale=1000, size=3)
        # similarity-transformed copy of the ground truth -> exactly aligned
        copy = scale * gt @ r.T + t
        np.testing.assert_allclose(M.pa_mpjpe(copy, gt), 0.0, atol=1e-8)
        # the error is invariant to a similarity transform of the prediction
        np.testing.assert_allclose(M.pa_mpjpe(scale * pred @ r.T + t, gt), base, rtol=1e-9, atol=1e-9)
    # rigid: zero for a rotated/translated copy, but not for a scaled one
    r = _random_rotation()
    np.testing.assert_allclose(M.rigid_mpjpe(gt @ r.T + 50.0, gt), 0.0, atol=1e-8)
    assert (M.rigid_mpjpe(1.5 * gt @ r.T, gt) > 1.0).all()


def test_pa_mpjpe_reflection_safe():
    gt = _random_poses(4)
    mirrored = gt * np.array([-1.0, 1.0, 1.0])  # a reflection is not a similarity transform
    err = M.pa_mpjpe(mirrored, gt)
    assert (err > 10.0).all()  # a reflection-unsafe Procrustes would give ~0 here
    # it equals the reference with its determinant fix
    ref = [_vp3d_p_mpjpe_one(p, g) for p, g in zip(mirrored, gt, strict=True)]
    np.testing.assert_allclose(err, ref, rtol=1e-9)
    # aligned prediction is a proper rotation of the mirrored pose (det > 0 of the fitted map)
    aligned = M.procrustes_align(mirrored, gt)
    for a, m in zip(aligned, mirrored, strict=True):
        a0, m0 = a - a.mean(0), m - m.mean(0)
        fit, *_ = np.linalg.lstsq(m0, a0, rcond=None)
        assert np.linalg.det(fit) > 0


def test_pa_mpjpe_matches_vp3d_reference_on_random_poses():
    rng = np.random.default_rng(1)
    gt = _random_poses(64, rng=rng)
    pred = 0.8 * gt @ _random_rotation(rng).T + rng.normal(scale=80, size=gt.shape) + 100.0
    pred[::4] = rng.normal(scale=300, size=pred[::4].shape)  # unrelated poses too (reflection cases)
    ours = M.pa_mpjpe(pred, gt)
    ref = np.array([_vp3d_p_mpjpe_one(p, g) for p, g in zip(pred, gt, strict=True)])
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)
    rigid = M.rigid_mpjpe(pred, gt)
    ref_rigid = np.array([_mks_rigid_one(p, g) for p, g in zip(pred, gt, strict=True)])
    np.testing.assert_allclose(rigid, ref_rigid, rtol=1e-9, atol=1e-9)
    # optimal similarity <= optimal rigid (+ translation) <= root-aligned only
    assert (ours <= rigid + 1e-9).all()
    assert (rigid <= M.mpjpe(pred, gt) + 1e-9).all()


# --- PCK / AUC --------------------------------------------------------------------------------------
def test_pck3d_and_auc_by_hand():
    gt = np.zeros((1, 4, 3))
    pred = gt.copy()
    pred[0, 1, 0] = 100.0
    pred[0, 2, 1] = 150.0
    pred[0, 3, 2] = 151.0
    np.testing.assert_allclose(M.pck3d(pred, gt), [0.75])  # 0, 100, 150 within; 151 out
    np.testing.assert_allclose(M.pck3d(pred, gt, threshold=100.0), [0.5])
    # AUC over 0,5,...,150: joint 0 counts 31/31, joint1 11/31 (100..150), joint2 1/31, joint3 0
    np.testing.assert_allclose(M.auc3d(pred, gt), [(31 + 11 + 1 + 0) / (4 * 31)])
    perfect = M.auc3d(torch.tensor(gt), torch.tensor(gt))
    np.testing.assert_allclose(perfect, [1.0])


# --- action tables ----------------------------------------------------------------------------------
def test_action_table_frame_weighted_vs_action_wise():
    names = ["Walking", "Eating", "Posing"]
    errors = np.array([10.0, 20.0, 30.0, 100.0])  # Walking x3 (mean 20), Eating x1 (100)
    actions = np.array([0, 0, 0, 1])
    tab = M.action_table(errors, actions, names)
    assert tab["per_action"] == {"Walking": 20.0, "Eating": 100.0}
    assert tab["counts"] == {"Walking": 3, "Eating": 1}
    assert tab["frame_weighted"] == pytest.approx(160.0 / 4)
    assert tab["action_wise"] == pytest.approx((20.0 + 100.0) / 2)
    assert tab["num_frames"] == 4 and tab["num_actions"] == 2
    tab_t = M.action_table(torch.tensor(errors), torch.tensor(actions), names)
    assert tab_t["action_wise"] == pytest.approx(60.0)


def test_format_action_table_standard_order():
    names = list(ACTIONS_H36M)  # skeleton order (Posing before TakingPhoto, WalkingDog ...)
    errors = np.arange(len(names), dtype=float) * 10
    tab = M.action_table(errors, np.arange(len(names)), names)
    md = M.format_action_table({"MPJPE": tab, "PA-MPJPE": tab})
    header = md.splitlines()[0]
    cols = [c.strip() for c in header.strip("|").split("|")][1:]
    assert cols[:15] == [
        "Directions", "Discussion", "Eating", "Greeting", "Phoning", "TakingPhoto", "Posing",
        "Purchases", "Sitting", "SittingDown", "Smoking", "Waiting", "WalkingDog", "Walking",
        "WalkingTogether",
    ]
    assert cols[15:] == ["Avg (action-wise)", "Avg (frame-weighted)", "Frames"]
    row = [c.strip() for c in md.splitlines()[2].strip("|").split("|")]
    assert row[0] == "MPJPE" and row[6] == "100.0"  # TakingPhoto = index 10 -> 100.0
    assert len(md.splitlines()) == 4
    # non-H36M names keep their given order
    md2 = M.format_action_table(M.action_table([1.0, 2.0], [0, 1], ["zeta", "alpha"]))
    assert md2.splitlines()[0].startswith("|  | zeta | alpha |")


# --- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "pred, gt, match",
    [
        (np.zeros((2, 17, 2)), np.zeros((2, 17, 2)), "pred"),
        (np.zeros((2, 17, 3)), np.zeros((3, 17, 3)), "pred"),
        (np.zeros((2, 17, 3)), np.full((2, 17, 3), np.nan), "gt"),
        (np.zeros((17,)), np.zeros((17,)), "pred"),
    ],
)
def test_bad_input_raises_value_error(pred, gt, match):
    for fn in (M.mpjpe, M.pa_mpjpe, M.rigid_mpjpe, M.pck3d, M.auc3d):
        with pytest.raises(ValueError, match=match):
            fn(pred, gt)


def test_bad_input_other_arguments():
    with pytest.raises(ValueError, match="threshold"):
        M.pck3d(np.zeros((1, 3, 3)), np.zeros((1, 3, 3)), threshold=float("nan"))
    with pytest.raises(ValueError, match="root"):
        M.mpjpe(np.zeros((1, 3, 3)), np.zeros((1, 3, 3)), root=5)
    with pytest.raises(ValueError, match="actions"):
        M.action_table([1.0, 2.0], [0, 3], ["a", "b"])
    with pytest.raises(ValueError, match="actions"):
        M.action_table([1.0, 2.0], [0], ["a", "b"])
    with pytest.raises(ValueError, match="errors"):
        M.action_table([1.0, np.nan], [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="tables"):
        M.format_action_table({})


def test_group_errors_by_hand():
    """Per-group 3D MPJPE / PA-MPJPE and 2D PCK on poses whose errors are known joint by joint."""
    from pose.skeleton import JOINT_GROUPS_17

    rng = np.random.default_rng(5)
    gt = rng.normal(0.0, 300.0, (4, 17, 3))
    pred = gt.copy()
    arms, legs = list(JOINT_GROUPS_17["arms"]), list(JOINT_GROUPS_17["legs"])
    pred[:, arms, 0] += 60.0  # every arm joint 60 mm off, the rest exact
    uv_gt = rng.uniform(0.0, 1000.0, (4, 17, 2))
    uv_pred = uv_gt.copy()
    uv_pred[:, legs, 1] += 25.0  # 25 px: beyond 0.1 × a 200 px box, within 0.1 × a 300 px box
    side = np.array([200.0, 200.0, 300.0, 300.0])
    g = M.group_errors(pred, gt, uv_pred, uv_gt, side, JOINT_GROUPS_17)
    assert set(g) == {"torso", "arms", "legs"}
    assert g["arms"]["mpjpe"] == pytest.approx(60.0) and g["torso"]["mpjpe"] == pytest.approx(0.0, abs=1e-9)
    assert g["legs"]["mpjpe"] == pytest.approx(0.0, abs=1e-9)
    pa = M.procrustes_align(pred, gt, scale=True)
    e = np.linalg.norm(pa - gt, axis=-1)
    assert g["arms"]["pa_mpjpe"] == pytest.approx(e[:, arms].mean()) and 0 < g["torso"]["pa_mpjpe"] < 60.0
    assert (g["torso"]["pck2d"], g["arms"]["pck2d"], g["legs"]["pck2d"]) == (1.0, 1.0, 0.5)
    with pytest.raises(ValueError, match="box_side: expected 4 positive sides"):
        M.group_errors(pred, gt, uv_pred, uv_gt, side[:3], JOINT_GROUPS_17)
    # the groups cover the 17 joints once each
    assert sorted(i for idx in JOINT_GROUPS_17.values() for i in idx) == list(range(17))
