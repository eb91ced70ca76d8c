"""Motion tracks for ``pose synth``: load the committed clips, interpolate, rescale per subject.

Points (``NUM_POINTS = 21``): the 17 H36M joints of ``pose.skeleton.JOINT_NAMES_17`` then
17 R toe base, 18 R toe end, 19 L toe base, 20 L toe end (see ``make_clips.py``).
World frame: z up, millimetres (Human3.6M-like).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from pose.skeleton import PARENTS_17

CLIPS_PATH = Path(__file__).with_name("clips.npz")
NUM_POINTS = 21
#: parent of each of the 21 points (-1 = root)
PARENTS_21: tuple[int, ...] = tuple(PARENTS_17) + (3, 17, 6, 19)
#: Action names written to the dataset (CamelCase: no underscores, so ``S1_<Action>_range.txt``
#: parses unambiguously), in clip order; ``action_id`` = position + 2 like H36M's 2..16.
ACTION_NAMES: dict[str, str] = {
    "backflip": "Backflip", "cartwheel": "Cartwheel", "crawl": "Crawl", "dance_a": "DanceA",
    "dance_b": "DanceB", "getup_facedown": "GetupFacedown", "getup_faceup": "GetupFaceup",
    "jump": "Jump", "kick": "Kick", "punch": "Punch", "roll": "Roll", "run": "Run", "spin": "Spin",
    "spinkick": "Spinkick", "walk": "Walk",
}
#: Target bone lengths (mm) for each of the 21 points' incoming bone: the C2F/H36M training means
#: (``skeleton.LIMB_LENGTHS_TRAIN_MM``, left = right) for the 16 H36M bones, foot lengths for the toes.
_H36M_BONE_MM = {
    1: 134.05, 4: 134.05, 7: 238.38, 2: 449.20, 3: 445.58, 5: 449.20, 6: 445.58, 8: 255.34,
    9: 116.08, 11: 148.84, 14: 148.84, 10: 115.00, 12: 279.76, 13: 249.52, 15: 279.76, 16: 249.52,
    17: 110.0, 18: 45.0, 19: 110.0, 20: 45.0,
}
BASE_BONE_MM = np.array([0.0] + [_H36M_BONE_MM[i] for i in range(1, NUM_POINTS)])
#: bones that share one random factor (left and right kept symmetric)
_BONE_GROUPS: tuple[tuple[int, ...], ...] = (
    (1, 4), (7,), (8,), (9, 10), (11, 14), (12, 15), (13, 16), (2, 5), (3, 6), (17, 18, 19, 20),
)


@dataclass(frozen=True)
class Clip:
    """One motion clip: ``times`` (K,) s ascending from 0; ``points`` (K, 21, 3) world mm."""

    name: str
    times: np.ndarray
    points: np.ndarray

    @property
    def duration(self) -> float:
        return float(self.times[-1])


@lru_cache(maxsize=2)
def load_clips(path: str | None = None) -> dict[str, Clip]:
    """All clips of ``clips.npz`` keyed by clip name (in file order), horizontally centred:
    the mean root (x, y) of each clip is moved to the world origin."""
    data = np.load(path or CLIPS_PATH)
    out: dict[str, Clip] = {}
    for name in [str(n) for n in data["names"]]:
        pts = data[f"joints_{name}"].astype(np.float64)
        pts[..., :2] -= pts[:, 0, :2].mean(axis=0)
        out[name] = Clip(name, data[f"times_{name}"].astype(np.float64), pts)
    return out


def sample_clip(clip: Clip, t: float) -> np.ndarray:
    """Points at time ``t`` s (wrapped into the clip), linear interpolation between keyframes → (21, 3)."""
    if clip.duration <= 0:
        return clip.points[0].copy()
    t = float(t) % clip.duration
    k = int(np.searchsorted(clip.times, t, side="right")) - 1
    k = min(max(k, 0), len(clip.times) - 2)
    t0, t1 = clip.times[k], clip.times[k + 1]
    a = 0.0 if t1 <= t0 else (t - t0) / (t1 - t0)
    return (1.0 - a) * clip.points[k] + a * clip.points[k + 1]


def subject_bone_lengths(rng: np.random.Generator) -> np.ndarray:
    """Random body proportions of one synthetic subject → (21,) bone length per point, mm
    (0 for the root): H36M mean lengths × overall height factor U(0.9, 1.1) × per-group N(1, 0.04)."""
    lengths = BASE_BONE_MM * rng.uniform(0.9, 1.1)
    for group in _BONE_GROUPS:
        lengths[list(group)] *= float(np.clip(rng.normal(1.0, 0.04), 0.88, 1.12))
    return lengths


def rescale_bones(points: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Re-derive points along the tree: each bone keeps its direction and gets ``lengths[i]``.

    points (..., 21, 3), lengths (21,) → (..., 21, 3); the root stays where it is.
    """
    if points.shape[-2] != NUM_POINTS:
        raise ValueError(f"points: expected {NUM_POINTS} points on axis -2, got {points.shape}")
    out = np.empty_like(points)
    out[..., 0, :] = points[..., 0, :]
    for i in range(1, NUM_POINTS):
        p = PARENTS_21[i]
        v = points[..., i, :] - points[..., p, :]
        n = np.linalg.norm(v, axis=-1, keepdims=True)
        out[..., i, :] = out[..., p, :] + v / np.maximum(n, 1e-9) * lengths[i]
    return out


def to32(points: np.ndarray) -> np.ndarray:
    """21 points → the 32 H36M joints of ``skeleton.JOINT_NAMES_32`` (..., 32, C).

    The 17 H36M joints land on their 32-joint slots (``skeleton.H36M_17_FROM_32``); the others are
    filled the way the real H36M files fill them: Spine (11) = Hips, Left/RightShoulder (16, 24) =
    Neck (thorax), HandThumb (20, 28) = Hand (wrist); toe base / toe end (4, 5, 9, 10) = the foot
    points; hand "Site" (21, 29) = wrist + 0.25·(wrist − elbow); Wrist_End and its Site
    (22, 23, 30, 31) = wrist + 0.35·(wrist − elbow).
    """
    if points.shape[-2] != NUM_POINTS:
        raise ValueError(f"points: expected {NUM_POINTS} points on axis -2, got {points.shape}")
    p = points
    src = {0: 0, 1: 1, 2: 2, 3: 3, 4: 17, 5: 18, 6: 4, 7: 5, 8: 6, 9: 19, 10: 20, 11: 0, 12: 7,
           13: 8, 14: 9, 15: 10, 16: 8, 17: 11, 18: 12, 19: 13, 20: 13, 24: 8, 25: 14, 26: 15,
           27: 16, 28: 16}
    out = np.empty(p.shape[:-2] + (32, p.shape[-1]), dtype=p.dtype)
    for j32, j21 in src.items():
        out[..., j32, :] = p[..., j21, :]
    for (elbow, wrist), (site, end, end_site) in (((12, 13), (21, 22, 23)), ((15, 16), (29, 30, 31))):
        fa = p[..., wrist, :] - p[..., elbow, :]
        out[..., site, :] = p[..., wrist, :] + 0.25 * fa
        out[..., end, :] = p[..., wrist, :] + 0.35 * fa
        out[..., end_site, :] = out[..., end, :]
    return out


#: Limbs that :func:`mix_limbs` exchanges: (points moved, attachment point, body frame) with the
#: frame "pelvis" (hips + spine) or "thorax" (shoulders + spine→thorax); 21-point indices.
LIMBS: dict[str, tuple[tuple[int, ...], int, str]] = {
    "right_leg": ((2, 3, 17, 18), 1, "pelvis"),
    "left_leg": ((5, 6, 19, 20), 4, "pelvis"),
    "right_arm": ((15, 16), 14, "thorax"),
    "left_arm": ((12, 13), 11, "thorax"),
    "head": ((9, 10), 8, "thorax"),
}


def body_frame(points: np.ndarray, which: str) -> np.ndarray:
    """(21,3) → (3,3) rotation whose columns are the body's left, up and forward axes at the pelvis
    (hips R→L, pelvis→spine) or the thorax (shoulders R→L, spine→thorax), orthonormalised."""
    if which == "pelvis":
        side, up = points[4] - points[1], points[7] - points[0]
    else:
        side, up = points[11] - points[14], points[8] - points[7]
    x = side / max(float(np.linalg.norm(side)), 1e-9)
    y = up - (up @ x) * x
    y /= max(float(np.linalg.norm(y)), 1e-9)
    return np.stack([x, y, np.cross(x, y)], axis=1)


def mix_limbs(points: np.ndarray, donors: dict[str, np.ndarray]) -> np.ndarray:
    """Replace limbs of ``points`` (21,3) by those of donor poses, each limb keeping its donor's
    shape relative to the donor's body frame (so bone lengths and the limb's own bends are kept).

    donors: {limb name of :data:`LIMBS`: donor points (21,3)} → new (21,3).
    """
    out = points.copy()
    frames = {w: body_frame(points, w) for w in ("pelvis", "thorax")}
    for name, donor in donors.items():
        idx, anchor, which = LIMBS[name]
        Rd = body_frame(donor, which)
        local = (donor[list(idx)] - donor[anchor]) @ Rd  # donor offsets in the donor's body frame
        out[list(idx)] = points[anchor] + local @ frames[which].T
    return out


# --- pose coverage beyond the clips: mirroring and a joint-angle-limit prior ---------------------
#: left/right pairs of the 21 points (hips, knees, ankles, shoulders, elbows, wrists, toe base, toe end)
MIRROR_PAIRS: tuple[tuple[int, int], ...] = ((1, 4), (2, 5), (3, 6), (11, 14), (12, 15), (13, 16), (17, 19), (18, 20))
_SWAP = np.arange(NUM_POINTS)
for _a, _b in MIRROR_PAIRS:
    _SWAP[_a], _SWAP[_b] = _b, _a


def mirror(points: np.ndarray) -> np.ndarray:
    """The left/right mirror image of a pose (21,3): reflected in the body's sagittal plane (through
    the pelvis, normal = the horizontal part of the hips' R→L axis) and its left and right points
    exchanged, so "right wrist" is again the right one. An isometry: bone lengths swap sides, the
    heights (z) and so the ground contact stay."""
    side = points[4] - points[1]
    n = np.array([side[0], side[1], 0.0])
    if np.linalg.norm(n) < 1e-6:  # hips vertical (lying on a side): the plane normal to the hip axis
        n = side
    n = n / max(float(np.linalg.norm(n)), 1e-9)
    reflected = points - 2.0 * ((points - points[0]) @ n)[:, None] * n
    return reflected[_SWAP]


#: Joint-angle limits of :func:`sample_limb` (degrees), a simple kinematic model of each limb in its
#: body frame (``body_frame``: x = the body's left, y = up, z = forward; a right limb uses the same
#: numbers mirrored): ranges of the ordinary active motion of an adult (clinical range-of-motion
#: tables, rounded):
#: - shoulder: elevation 0..170 (angle of the upper arm from hanging straight down) in a plane of
#:   elevation -40..130 (0 = sideways abduction, 90 = forward flexion, > 90 = across the chest,
#:   < 0 = behind the body); humeral rotation -90..90 sets the elbow's hinge axis;
#: - elbow flexion 0..150 (0 = straight);
#: - hip flexion -20..120 (forward; negative = extension behind), abduction -30..45 (outward;
#:   negative = across the other leg); hip rotation -40..40 sets the knee's hinge axis;
#: - knee flexion 0..150 (0 = straight; the shin folds backwards).
#: Angles are drawn uniformly within the ranges (each limb independently); the foot (toe points) turns
#: with the shin, the head and torso stay those of the clip.
ANGLE_LIMITS_DEG: dict[str, dict[str, tuple[float, float]]] = {
    "arm": {"elevation": (0.0, 170.0), "plane": (-40.0, 130.0), "rotation": (-90.0, 90.0), "flexion": (0.0, 150.0)},
    "leg": {"flexion": (-20.0, 120.0), "abduction": (-30.0, 45.0), "rotation": (-40.0, 40.0),
            "knee": (0.0, 150.0)},
}
#: (root joint, middle joint, end joint, following points, side sign, frame) of each limb, 21-point indices;
#: side +1 = the body's left (+x of the body frame)
PRIOR_LIMBS: dict[str, tuple[int, int, int, tuple[int, ...], float, str]] = {
    "right_arm": (14, 15, 16, (), -1.0, "thorax"),
    "left_arm": (11, 12, 13, (), 1.0, "thorax"),
    "right_leg": (1, 2, 3, (17, 18), -1.0, "pelvis"),
    "left_leg": (4, 5, 6, (19, 20), 1.0, "pelvis"),
}


def _rotate(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """v rotated by ``angle`` rad about the unit ``axis`` (Rodrigues)."""
    return v * np.cos(angle) + np.cross(axis, v) * np.sin(angle) + axis * (axis @ v) * (1.0 - np.cos(angle))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def sample_limb(points: np.ndarray, limb: str, rng: np.random.Generator) -> np.ndarray:
    """``points`` (21,3) with one limb of :data:`PRIOR_LIMBS` re-posed at angles drawn uniformly
    within :data:`ANGLE_LIMITS_DEG` (bone lengths kept; the foot's points turn with the shin)."""
    root, mid, end, follow, side, which = PRIOR_LIMBS[limb]
    F = body_frame(points, which)  # columns: left, up, forward (world)
    out_ax, up, fwd = side * F[:, 0], F[:, 1], F[:, 2]
    kind = "arm" if which == "thorax" else "leg"
    lim = {k: np.radians(rng.uniform(*v)) for k, v in ANGLE_LIMITS_DEG[kind].items()}
    if kind == "arm":
        d = np.sin(lim["elevation"]) * (np.cos(lim["plane"]) * out_ax + np.sin(lim["plane"]) * fwd) \
            - np.cos(lim["elevation"]) * up
        ref = fwd - (fwd @ d) * d if abs(fwd @ d) < 0.99 else up - (up @ d) * d  # the elbow bends forward
        bend, rot = lim["flexion"], lim["rotation"]
    else:
        s = np.cos(lim["flexion"]) * -up + np.sin(lim["flexion"]) * fwd
        d = _unit(np.cos(lim["abduction"]) * s + np.sin(lim["abduction"]) * out_ax)
        ref = np.cross(_unit(F[:, 0] - (F[:, 0] @ d) * d), d)  # the knee folds back: about the lateral axis
        bend, rot = lim["knee"], lim["rotation"]
    a = _rotate(_unit(ref), d, rot)
    lower = np.cos(bend) * d + np.sin(bend) * a
    out = points.copy()
    l1 = float(np.linalg.norm(points[mid] - points[root]))
    l2 = float(np.linalg.norm(points[end] - points[mid]))
    out[mid] = points[root] + l1 * d
    out[end] = out[mid] + l2 * lower
    if follow:  # the foot turns with the shin: the rotation that takes the old shin to the new one
        R = _align(_unit(points[end] - points[mid]), lower)
        out[list(follow)] = out[end] + (points[list(follow)] - points[end]) @ R.T
    return out


def _align(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation (3,3) taking unit vector a to unit vector b."""
    v, c = np.cross(a, b), float(a @ b)
    if c < -1.0 + 1e-9:  # opposite: half a turn about any axis normal to a
        n = _unit(np.cross(a, [1.0, 0.0, 0.0]) if abs(a[0]) < 0.9 else np.cross(a, [0.0, 1.0, 0.0]))
        return 2.0 * np.outer(n, n) - np.eye(3)
    K = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + K + K @ K / (1.0 + c)


#: a pose whose lowest point is within this height of the floor (z = 0) touches the ground
GROUND_CONTACT_MM = 50.0


def keep_ground_contact(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """``new`` (21,3) moved vertically so that its lowest point is as high as ``old``'s, when ``old``
    touches the ground (lowest point within :data:`GROUND_CONTACT_MM` of z = 0): re-posed legs then
    stand on the floor instead of sinking into it or floating; airborne poses keep their height."""
    low = float(old[:, 2].min())
    if abs(low) > GROUND_CONTACT_MM:
        return new
    return new + np.array([0.0, 0.0, low - float(new[:, 2].min())])
