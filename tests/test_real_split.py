"""The real-pose test split: real Human3.6M poses (pose/data/c2f_vol_demo/valid.npz) drawn by the
synthetic renderer with their own camera and person box (pose.data.synth.real), packed by
``python -m workflows.data real`` and evaluated per joint group (workflows/evaluate.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from pose.data import C2F_VOL_DEMO
from pose.data.synth import real

VALID = C2F_VOL_DEMO / "valid.npz"


def _subset(tmp_path: Path, rows=(0, 97, 201, 393), name: str = "few.npz", **override) -> Path:
    with np.load(VALID) as d:
        arrays = {k: d[k][list(rows)] for k in d.files}
    arrays.update(override)
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


def test_real_split_packs_the_real_poses_camera_and_box(tmp_path):
    """Packed 3D = the npz's S, K = its K, the box = side round(200·scale) around its centre, the 2D
    = the projection of S by K; two runs write the same bytes."""
    from pose.camera import project
    from pose.data import load_arrays
    from workflows.config import make_profile
    from workflows.data import real as real_step

    rows = (0, 97, 201, 393)
    cfg = make_profile("micro")
    cfg["data"]["real_test"] = str(_subset(tmp_path, rows))
    out = real_step(cfg, tmp_path / "a")
    a = load_arrays(out / "packed" / "test")
    with np.load(VALID) as d:
        S, K, center, scale = (d[k][list(rows)].astype(np.float64) for k in ("S", "K", "center", "scale"))
    np.testing.assert_allclose(a["joints_3d"], S, atol=0.01)  # files hold 0.01 mm
    np.testing.assert_allclose(a["K"], K, rtol=1e-6)
    # stored crop box → raw px through img_to_raw: the real person box
    M = a["img_to_raw"].astype(np.float64)
    box = a["bbox"].astype(np.float64)
    corners = np.stack([box[:, :2], box[:, 2:]], axis=1)  # (N, 2, 2) crop px, pixel-edge convention
    raw = np.einsum("nij,nkj->nki", M[:, :, :2], corners) + M[:, None, :, 2]
    side = np.round(200.0 * scale)
    np.testing.assert_allclose(raw[:, 1] - raw[:, 0], np.stack([side, side], 1), atol=0.01)
    np.testing.assert_allclose(raw.mean(1), center, atol=0.51)  # integer box corners
    uv = np.einsum("nij,nkj->nki", M[:, :, :2], a["joints_2d"].astype(np.float64)) + M[:, None, :, 2]
    np.testing.assert_allclose(uv, project(S, K), atol=0.05)
    assert set(a["subject"].tolist()) == {9}
    # evaluate's per-group view reads the same geometry: K and the raw box side
    from workflows.evaluate import limb_groups, split_geometry

    Kg, box_side = split_geometry(out / "packed" / "test", np.arange(len(rows)))
    np.testing.assert_allclose(box_side, side, atol=0.01)
    np.testing.assert_allclose(Kg, K, rtol=1e-6)
    exact = limb_groups(S, S, Kg, box_side)
    assert all(g["mpjpe"] == 0.0 and g["pck2d"] == 1.0 for g in exact.values())
    moved = S.copy()
    moved[:, 13, 0] += 0.2 * box_side * S[:, 13, 2] / K[:, 0, 0]  # the left wrist 0.2 box sides to the side
    g = limb_groups(moved, S, Kg, box_side)
    assert g["arms"]["pck2d"] == pytest.approx(0.75) and g["legs"]["pck2d"] == 1.0
    assert g["arms"]["mpjpe"] == pytest.approx(np.mean(0.2 * box_side * S[:, 13, 2] / K[:, 0, 0]) / 4)
    first = _digest(out)
    assert _digest(real_step(cfg, tmp_path / "a")) == first  # a rerun writes the same bytes


def test_heldout_split_holds_the_same_poses_drawn_in_other_looks(tmp_path):
    """The held-out-looks split packs exactly the real-pose split's joints, cameras and boxes; only
    the pixels differ (and differ a lot); a rerun writes the same bytes."""
    from pose.data import load_arrays
    from workflows.config import make_profile
    from workflows.data import heldout as heldout_step
    from workflows.data import real as real_step

    cfg = make_profile("micro")
    cfg["data"]["real_test"] = str(_subset(tmp_path))
    r = load_arrays(real_step(cfg, tmp_path / "r") / "packed" / "test")
    out = heldout_step(cfg, tmp_path / "h")
    assert out == tmp_path / "h" / "outputs" / "data" / "heldout"
    h = load_arrays(out / "packed" / "test")
    for key in ("joints_3d", "joints_2d", "K", "bbox", "img_to_raw", "subject"):
        np.testing.assert_array_equal(np.asarray(h[key]), np.asarray(r[key]), err_msg=key)
    import cv2

    for i in range(4):
        a = cv2.imread(str(tmp_path / "r/outputs/data/real/raw/images" / f"{i}.png")).astype(int)
        b = cv2.imread(str(out / "raw" / "images" / f"{i}.png")).astype(int)
        assert np.abs(a - b).mean() > 20  # another look, not a small perturbation
    first = _digest(out)
    assert _digest(heldout_step(cfg, tmp_path / "h")) == first


def test_real_split_off_and_bad_input_are_one_line(tmp_path):
    from workflows.common import UserError
    from workflows.config import make_profile
    from workflows.data import real as real_step

    cfg = make_profile("micro")
    cfg["data"]["real_test"] = None
    out = real_step(cfg, tmp_path)
    assert [p.name for p in out.iterdir()] == ["NONE.txt"]
    cfg["data"]["real_test"] = str(tmp_path / "missing.npz")
    with pytest.raises(UserError, match=r"^data.real_test: file not found: .*missing.npz$"):
        real_step(cfg, tmp_path)
    cfg["data"]["real_test"] = str(_subset(tmp_path, name="bad.npz", scale=np.zeros(4)))
    with pytest.raises(UserError, match=r"^data.real_test: .*bad.npz: need N > 0 poses .* and scale > 0$"):
        real_step(cfg, tmp_path)
    bad = tmp_path / "nos.npz"
    np.savez(bad, K=np.eye(3)[None])
    with pytest.raises(ValueError, match=r"nos.npz: missing array\(s\) \['S', 'center', 'scale', 'imgname'\]"):
        real.load_real_poses(bad)
    with pytest.raises(ValueError, match="imgname: expected 'S<subject>_<Action>_<sub>.<H36M camera serial>_<frame>'"):
        real.parse_imgname("S9_Posing_1.12345678_000001")
    assert real.parse_imgname("S9_Posing_1.55011271_000006") == (9, "Posing", 1, 2, 6)


def test_toes_at_their_stated_offsets_and_the_box_rounding():
    with np.load(VALID) as d:
        S = d["S"][:5].astype(np.float64)
    P = real.add_toes(S)
    np.testing.assert_array_equal(P[:, :17], S)
    for side, ankle, (base, tip) in (("right", 3, (17, 18)), ("left", 6, (19, 20))):
        for point, off in zip((base, tip), real.TOE_OFFSETS[side], strict=True):
            np.testing.assert_allclose(np.linalg.norm(P[:, point] - S[:, ankle], axis=1), np.linalg.norm(off), atol=1e-9)
        # the toes point forward, away from the heel: in front of the ankle along body forward
        fwd = np.cross(S[:, 8] - S[:, 0], S[:, 1] - S[:, 4])
        assert (np.einsum("nj,nj->n", P[:, tip] - S[:, ankle], fwd) > 0).all()
    np.testing.assert_array_equal(real.real_box(np.array([500.2, 400.7]), 1.905), [310, 210, 691, 591])


def test_real_poses_are_in_human36m_order_and_the_c2f_order_is_refused(tmp_path):
    """Human3.6M's 17-joint order puts the right leg first (joints 1-3) and the left arm first
    (11-13): across the body the hip line L−R runs the way the shoulder line does. A real Human3.6M
    frame in its own order (the Caffe seed's toy sample, S7) and every shipped valid.npz pose say so;
    the same poses in C2F's order (left leg first, as c2f-vol-demo's valid.mat) are refused."""
    from pose import skeleton

    toy = np.loadtxt(Path(__file__).parent / "fixtures" / "caffe_toy" / "gt_joint_3d_mono_raw" / "1000006.txt")
    assert not skeleton.legs_reversed(skeleton.to17(toy))
    S = real.load_real_poses(VALID).S
    assert not skeleton.legs_reversed(S).any()
    assert skeleton.legs_reversed(S[:, list(skeleton.SWAP_LEGS_17)]).all()
    # the subject faces the camera (nose nearer than the neck) in most frames, so its right hip and
    # right shoulder are both on the image's left of the pelvis (camera x right)
    rel = S - S[:, :1]
    facing = rel[:, 9, 2] < rel[:, 8, 2]
    assert facing.mean() > 0.9
    assert (rel[facing, 1, 0] < 0).mean() > 0.8 and (rel[facing, 14, 0] < 0).mean() > 0.8
    with np.load(VALID) as d:
        arrays = {k: d[k] for k in d.files}
    arrays["S"] = arrays["S"][:, list(skeleton.SWAP_LEGS_17)]
    bad = tmp_path / "c2f_order.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ValueError, match=r"c2f_order\.npz: S: in 394 of 394 poses .*SWAP_LEGS_17"):
        real.load_real_poses(bad)
