"""Pose coverage levers of ``pose synth``: left/right mirroring and the joint-angle-limit prior
(pose.data.synth.motion), checked on known geometry."""

from __future__ import annotations

import numpy as np
import pytest

from pose.data.synth import motion


def _bones(P: np.ndarray) -> np.ndarray:
    return np.array([np.linalg.norm(P[i] - P[p]) for i, p in enumerate(motion.PARENTS_21) if p >= 0])


@pytest.fixture(scope="module")
def walk() -> np.ndarray:
    return motion.rescale_bones(motion.sample_clip(motion.load_clips()["walk"], 0.37),
                                motion.subject_bone_lengths(np.random.default_rng(1)))


def limb_angles(upper: np.ndarray, lower: np.ndarray, kind: str, side: float) -> dict[str, float]:
    """The angles (degrees) of ``motion.ANGLE_LIMITS_DEG`` of one limb, from its upper and lower bone
    directions in its body frame (x left, y up, z forward; ``side`` +1 left, -1 right): the
    inverse of ``motion.sample_limb``'s construction, used to check it."""
    u = motion._unit(upper * np.array([side, 1.0, 1.0]))  # as a left limb: +x = outward
    low = motion._unit(lower * np.array([side, 1.0, 1.0]))
    bend = float(np.degrees(np.arccos(np.clip(u @ low, -1.0, 1.0))))
    if kind == "arm":
        elev = float(np.degrees(np.arccos(np.clip(-u[1], -1.0, 1.0))))
        plane = float(np.degrees(np.arctan2(u[2], u[0]))) if np.hypot(u[0], u[2]) > 1e-6 else 0.0
        return {"elevation": elev, "plane": plane, "flexion": bend}
    return {"flexion": float(np.degrees(np.arctan2(u[2], -u[1]))),
            "abduction": float(np.degrees(np.arcsin(np.clip(u[0], -1.0, 1.0)))), "knee": bend}


def test_mirror_reflects_in_the_sagittal_plane_and_swaps_sides(walk):
    M = motion.mirror(walk)
    side = walk[4] - walk[1]
    n = np.array([side[0], side[1], 0.0]) / np.hypot(side[0], side[1])
    reflect = lambda p: p - 2.0 * ((p - walk[0]) @ n) * n  # noqa: E731
    for right, left in motion.MIRROR_PAIRS:  # the new left point is the old right one, reflected
        np.testing.assert_allclose(M[left], reflect(walk[right]), atol=1e-9)
        np.testing.assert_allclose(M[right], reflect(walk[left]), atol=1e-9)
    for centre in (0, 7, 8, 9, 10):  # pelvis, spine, thorax, neck, head stay in the plane's image
        np.testing.assert_allclose(M[centre], reflect(walk[centre]), atol=1e-9)
    np.testing.assert_allclose(M[:, 2], walk[motion._SWAP, 2], atol=1e-9)  # heights kept: ground contact stays
    np.testing.assert_allclose(motion.mirror(M), walk, atol=1e-9)  # an involution
    lengths = _bones(walk)  # symmetric subject: every bone keeps its length
    np.testing.assert_allclose(_bones(M), lengths, atol=1e-9)
    # the step changes feet: the foot ahead is now the other one, by the same distance
    fwd = np.cross([0.0, 0.0, 1.0], n)  # horizontal, in the mirror plane
    np.testing.assert_allclose((M[6] - M[3]) @ fwd, (walk[3] - walk[6]) @ fwd, atol=1e-9)
    assert abs((walk[3] - walk[6]) @ fwd) > 100.0  # mid-stride


class _Fixed:
    """An rng whose ``uniform(lo, hi)`` returns the value given for that range (else its midpoint)."""

    def __init__(self, values: dict[tuple[float, float], float]):
        self.values = values

    def uniform(self, lo, hi):
        return self.values.get((lo, hi), (lo + hi) / 2.0)


def test_t_pose_arm_and_straight_leg_at_known_angles(walk):
    arm, leg = motion.ANGLE_LIMITS_DEG["arm"], motion.ANGLE_LIMITS_DEG["leg"]
    # arm: elevation 90 in the frontal plane (plane 0), straight elbow → horizontal, pointing outwards
    rng = _Fixed({arm["elevation"]: 90.0, arm["plane"]: 0.0, arm["flexion"]: 0.0, arm["rotation"]: 0.0})
    P = motion.sample_limb(walk, "left_arm", rng)
    F = motion.body_frame(walk, "thorax")
    reach = np.linalg.norm(walk[12] - walk[11]) + np.linalg.norm(walk[13] - walk[12])
    np.testing.assert_allclose(P[13], walk[11] + reach * F[:, 0], atol=1e-6)
    Q = motion.sample_limb(walk, "right_arm", rng)
    np.testing.assert_allclose(Q[16], walk[14] - (np.linalg.norm(walk[15] - walk[14])
                                                  + np.linalg.norm(walk[16] - walk[15])) * F[:, 0], atol=1e-6)
    # elbow flexed 90 with no humeral rotation: the forearm points forward
    rng = _Fixed({arm["elevation"]: 0.0, arm["plane"]: 0.0, arm["flexion"]: 90.0, arm["rotation"]: 0.0})
    P = motion.sample_limb(walk, "left_arm", rng)
    np.testing.assert_allclose(P[12], walk[11] - np.linalg.norm(walk[12] - walk[11]) * F[:, 1], atol=1e-6)
    np.testing.assert_allclose(P[13], P[12] + np.linalg.norm(walk[13] - walk[12]) * F[:, 2], atol=1e-6)
    # leg: hip flexed 90, knee 90 → thigh forward, shin straight down (sitting)
    rng = _Fixed({leg["flexion"]: 90.0, leg["abduction"]: 0.0, leg["knee"]: 90.0, leg["rotation"]: 0.0})
    P = motion.sample_limb(walk, "right_leg", rng)
    G = motion.body_frame(walk, "pelvis")
    np.testing.assert_allclose(P[2], walk[1] + np.linalg.norm(walk[2] - walk[1]) * G[:, 2], atol=1e-6)
    np.testing.assert_allclose(P[3], P[2] - np.linalg.norm(walk[3] - walk[2]) * G[:, 1], atol=1e-6)
    np.testing.assert_allclose(_bones(P), _bones(walk), atol=1e-6)  # the foot turned with the shin, rigidly
    np.testing.assert_array_equal(np.delete(P, [2, 3, 17, 18], axis=0), np.delete(walk, [2, 3, 17, 18], axis=0))


def test_sampled_limbs_stay_within_the_stated_limits_and_reach_them(walk):
    rng = np.random.default_rng(0)
    for limb, (root, mid, end, follow, side, which) in motion.PRIOR_LIMBS.items():
        kind = "arm" if which == "thorax" else "leg"
        lim = motion.ANGLE_LIMITS_DEG[kind]
        seen: dict[str, list[float]] = {}
        for _ in range(300):
            P = motion.sample_limb(walk, limb, rng)
            np.testing.assert_allclose(_bones(P), _bones(walk), atol=1e-6)
            moved = [mid, end, *follow]
            np.testing.assert_array_equal(np.delete(P, moved, axis=0), np.delete(walk, moved, axis=0))
            F = motion.body_frame(P, which)
            angles = limb_angles((P[mid] - P[root]) @ F, (P[end] - P[mid]) @ F, kind, side)
            for k, v in angles.items():
                seen.setdefault(k, []).append(v)
        for k, vals in seen.items():
            lo, hi = lim[k]
            assert lo - 1e-6 <= min(vals) and max(vals) <= hi + 1e-6, (limb, k, min(vals), max(vals))
            assert min(vals) < lo + 0.15 * (hi - lo) and max(vals) > hi - 0.15 * (hi - lo), (limb, k)  # spread


def test_ground_contact_kept_only_for_poses_on_the_ground():
    walk = motion.sample_clip(motion.load_clips()["walk"], 0.37)  # a clip frame: the floor is z = 0
    low = float(walk[:, 2].min())
    assert abs(low) <= motion.GROUND_CONTACT_MM  # a walking frame touches the floor
    raised = walk + np.array([0.0, 0.0, 300.0])
    np.testing.assert_allclose(motion.keep_ground_contact(raised, walk)[:, 2].min(), low, atol=1e-9)
    airborne = walk + np.array([0.0, 0.0, 400.0])
    np.testing.assert_array_equal(motion.keep_ground_contact(raised, airborne), raised)
