"""Tests of pose.lifting.poses: lifting poses drawn from the embedded training clips."""

from __future__ import annotations

import numpy as np
import pytest

from pose.data.synth import motion
from pose.data.synth.generate import DEFAULT_TEST_CLIPS
from pose.lifting import data as LD
from pose.lifting import poses as LP


@pytest.fixture(scope="module")
def drawn() -> LD.PoseSet:
    return LP.draw_poses(4000, seed=3)


def test_draw_is_seeded_and_uses_training_clips_only(drawn):
    again = LP.draw_poses(4000, seed=3)
    assert np.array_equal(drawn.joints_2d, again.joints_2d) and np.array_equal(drawn.joints_3d, again.joints_3d)
    other = LP.draw_poses(4000, seed=4)
    assert not np.allclose(drawn.joints_3d, other.joints_3d)
    assert drawn.joints_2d.shape == (4000, 17, 2) and drawn.joints_3d.shape == (4000, 17, 3)
    assert not set(drawn.action_names) & set(DEFAULT_TEST_CLIPS)
    assert len(drawn.action_names) == len(motion.load_clips()) - len(DEFAULT_TEST_CLIPS)
    # every training clip is drawn, in proportion to its duration
    counts = np.bincount(drawn.action, minlength=len(drawn.action_names))
    assert (counts > 0).all()


def test_2d_is_the_perspective_projection_of_the_3d(drawn):
    X = drawn.joints_3d.astype(np.float64)
    assert np.abs(drawn.joints_2d - X[..., :2] / X[..., 2:]).max() < 1e-5
    depth = X[:, 0, 2]
    assert LP.DEPTH_MM[0] - 1 <= depth.min() and depth.max() <= LP.DEPTH_MM[1] + 1
    off = np.degrees(np.arctan(np.abs(X[:, 0, :2] / X[:, :1, 2])))
    assert off.max() <= LP.OFF_AXIS_DEG + 1e-3 and off.max() > LP.OFF_AXIS_DEG - 1
    noisy = LP.draw_poses(500, seed=3, noise_px=2.0)
    clean = LP.draw_poses(500, seed=3)
    err_px = (noisy.joints_2d - clean.joints_2d) * LP.FOCAL_PX
    assert 1.8 < err_px.std() < 2.2 and np.array_equal(noisy.joints_3d, clean.joints_3d)


def test_cameras_look_down_on_the_body_with_every_yaw(drawn):
    X = drawn.joints_3d.astype(np.float64)
    # hips to thorax: up in the world; in the camera frame (y down) mostly −y, leaning towards the
    # camera (−z) as the camera is pitched down by 0–25°
    up = X[:, 8] - X[:, 0]
    up /= np.linalg.norm(up, axis=-1, keepdims=True)
    upright = np.abs(up[:, 1]) > 0.9  # the standing poses
    assert upright.sum() > 1000
    assert np.median(-up[upright, 2]) > np.sin(np.radians(5))
    # the facing direction (hips R→L) covers all azimuths
    side = X[:, 4] - X[:, 1]
    az = np.degrees(np.arctan2(side[:, 2], side[:, 0]))
    hist = np.histogram(az, bins=8, range=(-180, 180))[0]
    assert hist.min() > 0.5 * hist.mean()


def test_subjects_have_their_own_bone_lengths(drawn):
    thigh = np.linalg.norm(drawn.joints_3d[:, 2] - drawn.joints_3d[:, 1], axis=-1)
    base = motion.BASE_BONE_MM[2]
    assert 0.97 * base < thigh.mean() < 1.03 * base
    assert thigh.min() > 0.9 * 0.88 * base - 1 and thigh.max() < 1.1 * 1.12 * base + 1
    assert thigh.std() > 0.03 * base
    one = LP.draw_poses(500, seed=3, subjects=1)
    t1 = np.linalg.norm(one.joints_3d[:, 2] - one.joints_3d[:, 1], axis=-1)
    assert t1.std() < 0.01  # one subject: one thigh length


def test_batched_limb_mixing_matches_the_per_pose_function():
    clips = list(motion.load_clips().values())
    rng = np.random.default_rng(0)
    P = np.stack([motion.sample_clip(clips[i % 5], rng.uniform(0, 1)) for i in range(6)])
    D = np.stack([motion.sample_clip(clips[5 + i % 4], rng.uniform(0, 1)) for i in range(6)])
    mask = np.array([True, False, True, True, False, True])
    out = LP.mix_limbs_batch(P, {"left_arm": (mask, D), "right_leg": (mask, D)})
    for i in range(6):
        ref = motion.mix_limbs(P[i], {"left_arm": D[i], "right_leg": D[i]}) if mask[i] else P[i]
        np.testing.assert_allclose(out[i], ref, atol=1e-9)


def test_batched_mirror_and_joint_angle_prior_match_the_per_pose_functions():
    clips = list(motion.load_clips().values())
    rng = np.random.default_rng(2)
    P = np.stack([motion.sample_clip(clips[i % 7], rng.uniform(0, 1)) for i in range(12)])
    np.testing.assert_allclose(LP.mirror_batch(P), np.stack([motion.mirror(p) for p in P]), atol=1e-9)
    for limb in motion.PRIOR_LIMBS:
        out = LP.sample_limb_batch(P, limb, np.random.default_rng(5))
        one = np.random.default_rng(5)
        ref = np.stack([motion.sample_limb(p, limb, one) for p in P])
        np.testing.assert_allclose(out[:, :17], ref[:, :17], atol=1e-9)  # the same angles from the same draws


def test_mirrored_draws_swap_the_sides_of_a_motion():
    """Mirroring keeps every bone length and flips the body's handedness: the hips still run the way
    the shoulders do, and the right and left wrists trade their heights' distribution."""
    from pose import skeleton

    plain, mirrored = LP.draw_poses(4000, seed=4), LP.draw_poses(4000, seed=4, mirror=1.0)
    assert not skeleton.legs_reversed(mirrored.joints_3d).any()
    rel = lambda ps, j: (ps.joints_3d[:, j] - ps.joints_3d[:, 0])[:, 1]  # noqa: E731 camera y (down)
    # a mirrored set's right wrist moves as the plain set's left wrist does, and vice versa
    assert abs(np.median(rel(mirrored, 16)) - np.median(rel(plain, 13))) < 15.0
    assert abs(np.median(rel(mirrored, 13)) - np.median(rel(plain, 16))) < 15.0
    assert abs(np.median(rel(plain, 16)) - np.median(rel(plain, 13))) > 30.0


def test_joint_placement_moves_the_shoulders_and_arms_only():
    clip = motion.load_clips()["walk"]
    P = np.stack([motion.sample_clip(clip, t) for t in (0.1, 0.5, 0.9)])
    Q = LP.place_joints(P, drop_mm=60.0, width=1.0)
    F = LP._body_frames(P, "thorax")
    moved = [11, 12, 13, 14, 15, 16]
    still = [i for i in range(motion.NUM_POINTS) if i not in moved]
    np.testing.assert_array_equal(Q[:, still], P[:, still])
    np.testing.assert_allclose(np.einsum("nkc,nc->nk", Q[:, moved] - P[:, moved], F[..., 1]), -60.0, atol=1e-9)
    W = LP.place_joints(P, drop_mm=0.0, width=1.2)
    lat = lambda A, j: np.einsum("nc,nc->n", A[:, j] - A[:, 8], F[..., 0])  # noqa: E731
    np.testing.assert_allclose(lat(W, 11), 1.2 * lat(P, 11), atol=1e-9)
    np.testing.assert_allclose(lat(W, 14), 1.2 * lat(P, 14), atol=1e-9)
    # the arms keep their shape
    np.testing.assert_allclose(W[:, 13] - W[:, 11], P[:, 13] - P[:, 11], atol=1e-9)


def test_temporal_pairs_are_the_same_pose_40_ms_later():
    ps = LP.draw_poses(1000, seed=1, temporal=True)
    assert len(ps) == 2000
    nxt = LD.neighbour_index(ps)
    np.testing.assert_array_equal(nxt[:1000], np.arange(1000, 2000))
    assert (nxt[1000:] == -1).all()
    step = np.linalg.norm(ps.joints_3d[1000:] - ps.joints_3d[:1000], axis=-1).mean()
    far = np.linalg.norm(ps.joints_3d[1000:] - ps.joints_3d[np.roll(np.arange(1000), 1)], axis=-1).mean()
    assert step < 60.0 and far > 5 * step


@pytest.mark.parametrize("kw, msg", [({"n": 0}, "n: must be >= 1"), ({"limb_mix": 1.5}, "limb_mix"),
                                      ({"subjects": 0}, "subjects"), ({"noise_px": -1}, "noise_px"),
                                      ({"mirror": 2.0}, "mirror"), ({"limb_prior": -0.1}, "limb_prior"),
                                      ({"test_clips": ("nope",)}, "unknown clip names")])
def test_bad_arguments_are_named(kw, msg):
    args = {"n": 10, **kw}
    with pytest.raises(ValueError, match=msg):
        LP.draw_poses(**args)
