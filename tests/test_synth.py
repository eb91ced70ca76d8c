"""Tests of ``pose synth`` (pose/data/synth): motion tracks, writer formats, determinism, geometry."""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose.data import C2F_VOL_DEMO
from pose.data.synth import appearance, generate, motion, render, writer
from pose.skeleton import H36M_17_FROM_32, LEFT_17, RIGHT_17, to17

TOY = Path(__file__).resolve().parent / "fixtures" / "caffe_toy"
REAL_POSES = C2F_VOL_DEMO / "valid.npz"

#: tiny config: 2 subjects (1 train, 1 test), 2 clips (1 train, 1 test), 2 cameras → 4 sequences
TINY = dict(frames=16, train_subjects=(1,), test_subjects=(9,), clips=("walk", "run"), test_clips=("run",),
            cameras=(1, 3), test_fraction=0.5)


@pytest.fixture(scope="module")
def tiny_a(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "a"
    generate.generate(str(out), generate.SynthConfig(seed=3, **TINY), progress=False)
    return out


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# --- motion ----------------------------------------------------------------------------------
def test_clips_bone_lengths_and_sides():
    clips = motion.load_clips()
    assert len(clips) == 15 and set(motion.ACTION_NAMES) == set(clips)
    walk = clips["walk"].points
    assert walk.shape[1:] == (21, 3) and np.isfinite(walk).all()
    thigh = np.linalg.norm(walk[:, 2] - walk[:, 1], axis=-1)
    shin = np.linalg.norm(walk[:, 3] - walk[:, 2], axis=-1)
    upper = np.linalg.norm(walk[:, 12] - walk[:, 11], axis=-1)
    np.testing.assert_allclose(thigh, 421.5, atol=1.0)  # DeepMimic thigh 0.42 m
    np.testing.assert_allclose(shin, 409.9, atol=1.0)  # shin 0.41 m
    np.testing.assert_allclose(upper, 274.8, atol=1.0)  # upper arm 0.27 m
    # world z up: head above pelvis above ankles while walking
    assert (walk[:, 10, 2] > walk[:, 0, 2]).all() and (walk[:, 0, 2] > walk[:, 3, 2]).all()
    # right side is on the right: (R hip − L hip) · (forward × up) > 0, forward = walking direction
    fwd = walk[-1, 0] - walk[0, 0]
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    assert ((walk[:, 1] - walk[:, 4]) @ right > 0).all() and ((walk[:, 14] - walk[:, 11]) @ right > 0).all()
    feet = walk[:, [18, 20]] - walk[:, [3, 6]]  # toes point forward most of the time
    assert (feet @ fwd > 0).mean() > 0.8


def test_interpolation_and_bone_rescaling():
    clip = motion.load_clips()["walk"]
    k = 5
    mid = motion.sample_clip(clip, 0.5 * (clip.times[k] + clip.times[k + 1]))
    np.testing.assert_allclose(mid, 0.5 * (clip.points[k] + clip.points[k + 1]), atol=1e-9)
    np.testing.assert_allclose(motion.sample_clip(clip, clip.times[k]), clip.points[k], atol=1e-9)
    lengths = motion.subject_bone_lengths(np.random.default_rng(0))
    P = motion.rescale_bones(mid, lengths)
    got = np.linalg.norm(P[1:] - P[list(motion.PARENTS_21[1:])], axis=-1)
    np.testing.assert_allclose(got, lengths[1:], rtol=1e-9)
    np.testing.assert_allclose(P[0], mid[0])
    assert lengths[2] == lengths[5] and lengths[12] == lengths[15]  # left/right symmetric


def test_to32_places_the_17_joints():
    P = np.random.default_rng(1).normal(size=(21, 3))
    j32 = motion.to32(P)
    np.testing.assert_array_equal(to17(j32), P[:17])
    np.testing.assert_array_equal(j32[[16, 24]], P[[8, 8]])  # clavicles = thorax, as in real H36M files
    assert [H36M_17_FROM_32[i] for i in range(17)] == list(H36M_17_FROM_32)


def _bones(P: np.ndarray) -> np.ndarray:
    return np.linalg.norm(P[1:] - P[list(motion.PARENTS_21[1:])], axis=-1)


def test_mix_limbs_moves_whole_limbs_in_the_body_frame():
    clips = motion.load_clips()
    a, b = motion.sample_clip(clips["walk"], 0.3), motion.sample_clip(clips["cartwheel"], 1.1)
    np.testing.assert_allclose(motion.mix_limbs(a, {k: a for k in motion.LIMBS}), a, atol=1e-9)  # own limbs
    m = motion.mix_limbs(a, {"right_leg": b, "left_arm": b})
    np.testing.assert_allclose(_bones(m), _bones(a), atol=0.05)  # one skeleton (float32, interpolated)
    moved = sorted(motion.LIMBS["right_leg"][0] + motion.LIMBS["left_arm"][0])
    still = [i for i in range(21) if i not in moved]
    np.testing.assert_array_equal(m[still], a[still])
    assert np.abs(m[moved] - a[moved]).max() > 100.0
    # the donor limb's shape relative to the body is kept: knee angle and the leg in the pelvis frame
    for P, Q in ((m, b),):
        for name in ("right_leg", "left_arm"):
            idx, anchor, frame = motion.LIMBS[name]
            ours = (P[list(idx)] - P[anchor]) @ motion.body_frame(P, frame)
            donor = (Q[list(idx)] - Q[anchor]) @ motion.body_frame(Q, frame)
            np.testing.assert_allclose(ours, donor, atol=1e-6)
    R = motion.body_frame(a, "pelvis")
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    assert (a[4] - a[1]) @ R[:, 0] > 0 and (a[7] - a[0]) @ R[:, 1] > 0  # x to the left, y up


def test_pose_diversity_touches_training_frames_only(tmp_path):
    """limb_mix / tilt / pose_prior / mirror / per-frame looks change training frames (new poses, bones kept, 2D still the
    projection of 3D) and leave the test split byte-identical."""
    cfg = dict(TINY, frames=32)
    plain, mixed = tmp_path / "plain", tmp_path / "mixed"
    generate.generate(str(plain), generate.SynthConfig(seed=3, **cfg), progress=False)
    generate.generate(str(mixed), generate.SynthConfig(seed=3, limb_mix=0.6, tilt=0.5, looks="frame",
                                                       pose_prior=0.5, mirror=0.5, **cfg), progress=False)
    seqs = generate.plan(generate.SynthConfig(seed=3, **cfg))
    train = [i for q in seqs if q.train for i in range(q.start_index, q.start_index + q.n_frames)]
    test = [i for q in seqs if not q.train for i in range(q.start_index, q.start_index + q.n_frames)]
    for i in test:
        for sub in ("images/{}.png", "gt_joint_3d_mono_raw/{}.txt", "gt_joint_2d_raw_new/{}.txt", "bbx_all_new/{}.txt"):
            assert (plain / sub.format(i)).read_bytes() == (mixed / sub.format(i)).read_bytes(), (sub, i)
    changed = 0
    for i in train:
        a = np.loadtxt(plain / f"gt_joint_3d_mono_raw/{i}.txt").reshape(32, 3)
        b = np.loadtxt(mixed / f"gt_joint_3d_mono_raw/{i}.txt").reshape(32, 3)
        ja, jb = to17(a) - to17(a)[:1], to17(b) - to17(b)[:1]
        bones = [(c, p) for c, p in enumerate(motion.PARENTS_21[1:17], start=1)]
        la = np.array([np.linalg.norm(ja[c] - ja[p]) for c, p in bones])
        lb = np.array([np.linalg.norm(jb[c] - jb[p]) for c, p in bones])
        np.testing.assert_allclose(lb, la, atol=0.05)  # same subject, same bone lengths (files hold 0.01 mm)
        changed += np.abs(ja - jb).max() > 50.0
    assert changed >= len(train) // 2
    with pytest.raises(ValueError, match="limb_mix"):
        generate.plan(generate.SynthConfig(limb_mix=1.5, **TINY))
    with pytest.raises(ValueError, match="looks"):
        generate.plan(generate.SynthConfig(looks="clip", **TINY))
    with pytest.raises(ValueError, match=r"pose_prior: must be in \[0, 1\], got -0.1"):
        generate.plan(generate.SynthConfig(pose_prior=-0.1, **TINY))


# --- writer formats (against the real toy files) ---------------------------------------------
@pytest.mark.skipif(not TOY.is_dir(), reason="reference toy example not available")
def test_formats_reproduce_real_files():
    def floats(path):
        return np.array(path.read_text().split(), float)

    j3 = floats(TOY / "gt_joint_3d_mono_raw/1000006.txt").reshape(32, 3)
    assert writer.format_joints_3d(j3) == (TOY / "gt_joint_3d_mono_raw/1000006.txt").read_text()
    j2 = floats(TOY / "gt_joint_2d_raw_new/1000.txt").reshape(32, 2)
    assert writer.format_joints_2d(j2) == (TOY / "gt_joint_2d_raw_new/1000.txt").read_text()
    cam = (TOY / "camera_all/100.txt").read_text().split()
    v = [float(x) for x in cam if not x.endswith(":")]
    text = writer.format_camera(np.reshape(v[:9], (3, 3)), v[9:12], v[12:14], v[14:16], v[16:19], v[19:21])
    assert text == (TOY / "camera_all/100.txt").read_text()
    assert writer.format_bbox([265, 264, 658, 657]) == (TOY / "bbx_all_new/9.txt").read_text()
    info = (TOY / "info_all/1000019.txt").read_text()
    ours = writer.format_info(7, 11, "Smoking", 2, 2, 2048)
    assert ours.splitlines()[1:6] == info.splitlines()[1:6]
    real_vn = info.splitlines()[0]
    assert ours.splitlines()[0][:16] == real_vn[:16] and len(ours.splitlines()[0]) == len(real_vn)
    rng_line = Path(TOY.parent / "full/index_range/S1_Directions_range.txt")
    if rng_line.is_file():
        assert writer.format_range(0, 11979) == rng_line.read_text()


# --- determinism -----------------------------------------------------------------------------
def test_same_seed_byte_identical_different_seed_differs(tiny_a, tmp_path):
    b = tmp_path / "b"
    generate.generate(str(b), generate.SynthConfig(seed=3, workers=2, **TINY), progress=False)
    files = _tree(tiny_a)
    assert files == _tree(b) and len(files) > 10 * 16
    match, mismatch, errors = filecmp.cmpfiles(tiny_a, b, files, shallow=False)
    assert mismatch == [] and errors == []
    c = tmp_path / "c"
    generate.generate(str(c), generate.SynthConfig(seed=4, **TINY), progress=False)
    assert (tiny_a / "images/0.png").read_bytes() != (c / "images/0.png").read_bytes()
    assert (tiny_a / "gt_joint_3d_mono_raw/0.txt").read_text() != (c / "gt_joint_3d_mono_raw/0.txt").read_text()


def test_layout_and_index_ranges(tiny_a):
    seqs = generate.plan(generate.SynthConfig(seed=3, **TINY))
    n = sum(q.n_frames for q in seqs)
    assert len(list((tiny_a / "images").iterdir())) == n
    for field in writer.FIELDS:
        assert len(list((tiny_a / field).iterdir())) == n, field
    ir = tiny_a / "index_range"
    assert (ir / "S1_Walk_range.txt").read_text() == writer.format_range(0, 7)
    assert (ir / "S9_Run_range.txt").read_text() == writer.format_range(8, 15)
    assert not (ir / "S9_Walk_range.txt").exists() and not (ir / "S1_Run_range.txt").exists()
    assert [int(x) for x in (ir / "train_index.txt").read_text().split()] == list(range(8))
    assert sorted(int(x) for x in (ir / "train_index_shuffle.txt").read_text().split()) == list(range(8))
    assert [int(x) for x in (ir / "Protocol2/Run_range.txt").read_text().split()] == [15]
    assert (ir / "Protocol2/all_id.txt").read_text() == writer.format_index_list([15])
    info = (tiny_a / "info_all/9.txt").read_text().splitlines()
    assert info[0].split() == ["video_name", "synth\\S9\\Run.54138969.mp4"]
    assert info[2].split() == ["action_name", "Run"] and info[1].split() == ["action_id", str(2 + 11)]
    assert info[4].split() == ["camera_id", "1"]
    img = cv2.imread(str(tiny_a / "images/9.png"), cv2.IMREAD_UNCHANGED)
    assert img.shape == (224, 224, 3) and img.dtype == np.uint8


# --- geometry --------------------------------------------------------------------------------
def _read_sample(root: Path, i: int):
    j2 = np.loadtxt(root / f"gt_joint_2d_raw_new/{i}.txt")
    j3 = np.loadtxt(root / f"gt_joint_3d_mono_raw/{i}.txt")
    tok = (root / f"camera_all/{i}.txt").read_text().split()
    blocks, cur = {}, None
    for t in tok:
        if t.endswith(":"):
            cur = t[:-1]
            blocks[cur] = []
        else:
            blocks[cur].append(float(t))
    bbox = np.array((root / f"bbx_all_new/{i}.txt").read_text().split(), float)
    return j2, j3, {k: np.array(v) for k, v in blocks.items()}, bbox


def test_2d_is_projection_of_3d_through_written_camera(tiny_a):
    n = len(list((tiny_a / "images").iterdir()))
    worst = 0.0
    for i in range(n):
        j2, j3, cam, bbox = _read_sample(tiny_a, i)
        assert j2.shape == (32, 2) and j3.shape == (32, 3) and (j3[:, 2] > 2000).all()
        raw = j3[:, :2] / j3[:, 2:] * cam["f"] + cam["c"]
        x1, y1, x2, y2 = bbox
        crop = np.stack([(raw[:, 0] - x1) * 224 / (x2 - x1) - 0.5, (raw[:, 1] - y1) * 224 / (y2 - y1) - 0.5], 1)
        worst = max(worst, float(np.abs(crop - j2).max()))
        # R orthonormal, T = camera centre: 3D camera coords consistent with a world pose
        R = cam["R"].reshape(3, 3)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-5)
        assert 2500 < np.linalg.norm(cam["T"]) < 8000
        assert np.all(cam["k"] == 0) and np.all(cam["p"] == 0)
        assert 1100 < cam["f"][0] < 1190 and abs(cam["c"][0] - 500) < 20
        assert x2 - x1 == y2 - y1 > 0
    assert worst < 0.01


def test_crops_contain_the_body(tiny_a):
    """Joints lie inside the crop, and the pixels at the joints differ from a re-rendered
    background (same rng stream up to the body) — i.e. the body is drawn where the labels are."""
    n = len(list((tiny_a / "images").iterdir()))
    inside = []
    for i in range(n):
        j2 = to17(np.loadtxt(tiny_a / f"gt_joint_2d_raw_new/{i}.txt"))
        inside.append(((j2 > 0) & (j2 < 223)).all(1).mean())
    assert np.mean(inside) > 0.97
    # body vs background: render a frame, then the same frame without the body
    rng = np.random.default_rng(0)
    clip = motion.load_clips()["walk"]
    P = motion.rescale_bones(motion.sample_clip(clip, 0.3), motion.subject_bone_lengths(rng))
    cam = render.random_camera(rng, np.array([0.0, 0.0, 900.0]), 0.7)
    look = appearance.random_look(rng)
    img, bbox, A, P_cam = render.render_frame(np.random.default_rng(5), P, cam, look)
    r2 = np.random.default_rng(5)
    render.square_box(cam.project(P_cam[:17]), r2)
    bg = appearance.background(r2)
    if r2.random() < 0.5:
        bg = cv2.GaussianBlur(bg, (3, 3), 0)
    uv = cam.project(P_cam[:17]) @ A[:, :2].T + A[:, 2]
    diff = np.abs(img.astype(int) - bg.astype(int)).sum(-1)
    at_joints = diff[np.clip(np.round(uv[:, 1]).astype(int), 0, 223), np.clip(np.round(uv[:, 0]).astype(int), 0, 223)]
    assert (at_joints > 30).mean() > 0.8
    corners = diff[[2, 2, 221, 221], [2, 221, 2, 221]]
    assert (corners < 30).mean() >= 0.5  # the body does not cover the whole crop


def test_person_boxes_fit_the_joints_as_human36m_boxes(tiny_a):
    """The rendered crops hold the 17 joints as the real Human3.6M boxes do: the joints' longer
    extent is a JOINT_FILL fraction of the box side (real fixture: 0.88-0.91), centred ± 2 %."""
    lo_fill, hi_fill = render.JOINT_FILL
    from pose.camera import project
    from pose.data.synth.real import real_box

    real = np.load(REAL_POSES)
    uv = project(real["S"], real["K"])
    side = np.array([np.ptp(real_box(c, s)[::2]) for c, s in zip(real["center"], real["scale"], strict=True)])
    real_fill = (uv.max(1) - uv.min(1)).max(1) / side
    assert lo_fill < np.percentile(real_fill, 5) and np.percentile(real_fill, 95) < hi_fill
    fills, offsets = [], []
    for f in sorted((tiny_a / "gt_joint_2d_raw_new").iterdir()):
        j2 = to17(np.loadtxt(f))  # crop px: the box is the 224-px crop
        lo, hi = j2.min(0), j2.max(0)
        fills.append((hi - lo).max() / render.CROP)
        offsets.append(np.abs((lo + hi) / 2 - (render.CROP - 1) / 2).max() / render.CROP)
    assert lo_fill - 0.01 < min(fills) and max(fills) < hi_fill + 0.01  # integer box corners
    assert max(offsets) < 0.02 + 0.01
    assert np.ptp(fills) > 0.03  # drawn per frame, not one fixed fill


def test_left_right_in_the_image():
    """A person facing the camera has the right hip on the image left (H36M: 1-3 right leg)."""
    clip = motion.load_clips()["walk"]
    P = clip.points[0]
    fwd = clip.points[-1, 0] - clip.points[0, 0]  # walking direction
    yaw = np.arctan2(fwd[1], fwd[0])  # camera in front of the person, looking back at it
    R, T = render.look_at(np.array([0.0, 0.0, 900.0]), yaw, 0.1, 4000.0)
    cam = render.Camera(R, T, np.array([1145.0, 1145.0]), np.array([500.0, 500.0]))
    uv = cam.project(cam.to_camera(P))
    assert uv[list(RIGHT_17), 0].mean() < uv[list(LEFT_17), 0].mean()
    assert uv[10, 1] < uv[0, 1] < uv[3, 1]  # head above pelvis above ankle (y down)


def test_preview_and_reader(tiny_a, tmp_path):
    from pose.data.synth.cli import write_preview

    out = write_preview(str(tiny_a), str(tmp_path / "p.png"), n=4, cols=2)
    img = cv2.imread(out)
    assert img.shape == (2 * 224, 2 * 2 * 224, 3)
    seed_txt = pytest.importorskip("pose.data.seed_txt")
    from pose.camera import apply_affine, project

    reader = seed_txt.SeedTxtReader(tiny_a)
    assert reader.indices("train") == list(range(8)) and reader.indices("test") == list(range(8, 16))
    assert set(reader.action_names) == {"Walk", "Run"}
    for i in (0, 9):
        s = reader.read(i)
        assert s.subject == (1 if i < 8 else 9) and s.action_name == ("Walk" if i < 8 else "Run")
        err = np.abs(np.asarray(project(s.joints_3d, s.K)) - apply_affine(s.joints_2d, s.img_to_raw)).max()
        assert err < 0.5 * (s.img_to_raw[0, 0])  # < half a crop pixel, in raw px
        assert os.path.samefile(s.image_path, tiny_a / f"images/{i}.png")


def test_cli_diversity_flags_and_bad_values(run_cli, tmp_path):
    import json
    import sys

    out = tmp_path / "d"
    r = run_cli([sys.executable, "-m", "pose.tools.cli", "synth", "--out", out, "--frames", "60", "--limb-mix", "0.5",
                 "--looks", "frame", "--quiet"])
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out / "synth_config.json").read_text())["config"]
    assert (cfg["limb_mix"], cfg["tilt"], cfg["looks"]) == (0.5, 0.0, "frame")
    bad = tmp_path / "bad"
    r = run_cli([sys.executable, "-m", "pose.tools.cli", "synth", "--out", bad, "--frames", "60", "--tilt", "1.5"])
    assert r.returncode == 2 and r.stderr.strip() == "pose synth: error: tilt: must be in [0, 1], got 1.5"
    assert not bad.exists() and not list(tmp_path.glob("bad*"))  # nothing half-written
