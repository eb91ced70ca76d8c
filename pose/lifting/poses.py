"""Lifting poses at scale: 2D/3D pose pairs drawn from the embedded training clips, no rendering.

A lifter needs many 2D poses, and a 2D pose costs no pixels. :func:`draw_poses` draws ``n`` of them
(hundreds of thousands in seconds, seeded) the way ``pose synth`` builds its training frames, minus
the images:

- **Motions**: a uniformly random moment of a uniformly random *training* clip of
  ``pose/data/synth/clips.npz`` (every clip except the test clips, so the test split's motions stay
  unseen), linearly interpolated between keyframes.
- **Limb mixing**: each limb (legs, arms, head; ``motion.LIMBS``) is replaced with probability
  ``limb_mix`` by the same limb of a random moment of a random training clip, kept in its donor's
  body frame (the batched form of ``motion.mix_limbs``).
- **Mirroring**: with probability ``mirror`` a pose is replaced by its left/right mirror image
  (``motion.mirror``: a right-arm motion becomes a left-arm one), after limb mixing.
- **Joint-angle prior**: each limb (arms, legs) is re-posed with probability ``limb_prior`` at
  joint angles drawn uniformly within adult ranges of motion (``motion.sample_limb``): limb poses
  no clip holds.
- **Bodies**: ``subjects`` synthetic subjects with their own bone lengths
  (``motion.subject_bone_lengths``: height ×U(0.9, 1.1), each bone group ×N(1, 0.04)); each pose is
  worn by a random one (``motion.rescale_bones``). With ``joint_jitter`` each subject also gets its
  own *joint placement* (:func:`place_joints`): datasets put the shoulder joints in different places
  (the embedded clips' model ~15 mm above the thorax joint, Human3.6M's markers ~60 mm below it in
  a real training-subject frame, S7) and bodies differ in shoulder width (126–173 mm from the
  thorax in real Human3.6M frames), so a subject's shoulders (with the arms) drop by
  U(:data:`SHOULDER_DROP_MM`) mm along the body's up axis and its shoulder width is scaled by
  U(:data:`SHOULDER_WIDTH`).
- **Cameras**, following Human3.6M's four (1000×1000 px, f ≈ 1145–1150 px, principal point within
  ~10 px of the centre, mounted above the subjects and pitched down on them: in a real
  training-subject frame, S7, the feet→pelvis line leans 16° towards the camera and the spine 8°;
  pelvis 4.5–6.5 m away): the body turned by a uniform yaw about the vertical; the camera pitched
  down by U(:data:`PITCH_DEG`) degrees; the pelvis at depth U(:data:`DEPTH_MM`) mm and up to
  :data:`OFF_AXIS_DEG` degrees off the optical axis in x and y; focal length :data:`FOCAL_PX` ×
  U(0.995, 1.005), principal point 500 ± 10 px. ``noise_px`` adds Gaussian 2D noise in pixels (a
  detector's error); 0 by default.

Output: a :class:`pose.lifting.data.PoseSet` with 2D in *normalised camera coordinates* (pixels
mapped through K⁻¹, as ``from_packed`` gives the packed splits) and 3D in camera mm (for evaluation
and supervised training; the unsupervised lifter never reads it). ``sequence``/``frame`` pair each
pose with its 40 ms successor in the same clip (same subject, camera and mixed limbs), for the
temporal discriminator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pose.data.synth import motion
from pose.data.synth.generate import DEFAULT_TEST_CLIPS
from pose.lifting.data import NUM_JOINTS, PoseSet

__all__ = ["DEPTH_MM", "FOCAL_PX", "OFF_AXIS_DEG", "PITCH_DEG", "SHOULDER_DROP_MM", "SHOULDER_WIDTH", "draw_poses",
           "mirror_batch", "mix_limbs_batch", "place_joints",
           "sample_limb_batch"]

#: pelvis depth range (mm) of the drawn cameras
DEPTH_MM = (4000.0, 7000.0)
#: camera pitch (degrees down from horizontal) range
PITCH_DEG = (5.0, 25.0)
#: largest angle (degrees) of the pelvis off the optical axis, in x and in y
OFF_AXIS_DEG = 10.0
#: Human3.6M's focal length (px, 1000×1000 frames)
FOCAL_PX = 1147.5
#: range (mm) of a subject's shoulder drop along the thorax's up axis (:func:`place_joints`)
SHOULDER_DROP_MM = (0.0, 90.0)
#: range of a subject's shoulder-width factor (:func:`place_joints`)
SHOULDER_WIDTH = (0.85, 1.2)
#: time (s) between a pose and its temporal successor (two 25 Hz frames)
NEXT_S = 0.04


def _sample_times(clip: motion.Clip, t: np.ndarray) -> np.ndarray:
    """Points of ``clip`` at times ``t (M,)`` s (wrapped), linear between keyframes → (M, 21, 3);
    the batched ``motion.sample_clip``."""
    K = len(clip.times)
    if K < 2 or clip.duration <= 0:
        return np.repeat(clip.points[:1], len(t), 0)
    t = np.mod(t, clip.duration)
    k = np.clip(np.searchsorted(clip.times, t, side="right") - 1, 0, K - 2)
    t0, t1 = clip.times[k], clip.times[k + 1]
    a = np.where(t1 > t0, (t - t0) / np.maximum(t1 - t0, 1e-12), 0.0)[:, None, None]
    return (1.0 - a) * clip.points[k] + a * clip.points[k + 1]


def _draw_moments(clips: list[motion.Clip], n: int, rng: np.random.Generator,
                  dt: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` moments of the clips, a clip chosen with probability ∝ its duration (every moment equally
    likely), each taken ``dt`` s after the drawn time → (points (n, 21, 3) world mm, clip index (n,));
    the same ``rng`` state with another ``dt`` gives the same moments shifted (:func:`draw_poses`)."""
    dur = np.array([c.duration for c in clips])
    which = rng.choice(len(clips), n, p=dur / dur.sum())
    t = rng.uniform(0.0, 1.0, n) * dur[which]
    out = np.empty((n, motion.NUM_POINTS, 3))
    for i, c in enumerate(clips):
        m = which == i
        if m.any():
            out[m] = _sample_times(c, t[m] + dt)
    return out, which


def _body_frames(P: np.ndarray, which: str) -> np.ndarray:
    """Batched ``motion.body_frame``: (n, 21, 3) → (n, 3, 3), columns = body left, up, forward."""
    if which == "pelvis":
        side, up = P[:, 4] - P[:, 1], P[:, 7] - P[:, 0]
    else:
        side, up = P[:, 11] - P[:, 14], P[:, 8] - P[:, 7]
    x = side / np.maximum(np.linalg.norm(side, axis=-1, keepdims=True), 1e-9)
    y = up - (up * x).sum(-1, keepdims=True) * x
    y /= np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), 1e-9)
    return np.stack([x, y, np.cross(x, y)], axis=-1)


def mix_limbs_batch(P: np.ndarray, donors: dict[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Batched ``motion.mix_limbs``: ``P (n, 21, 3)``; ``donors`` = {limb of ``motion.LIMBS``:
    (mask (n,) bool, donor poses (n, 21, 3))}. Where ``mask``, the limb is the donor's, kept in the
    donor's body frame (bone lengths and bends kept) → new (n, 21, 3)."""
    out = P.copy()
    frames = {w: _body_frames(P, w) for w in ("pelvis", "thorax")}
    for name, (mask, D) in donors.items():
        if not mask.any():
            continue
        idx, anchor, which = motion.LIMBS[name]
        idx = list(idx)
        Rd = _body_frames(D[mask], which)
        local = np.einsum("nkc,ncd->nkd", D[mask][:, idx] - D[mask][:, anchor:anchor + 1], Rd)
        out[np.flatnonzero(mask)[:, None], idx] = (P[mask][:, anchor:anchor + 1]
                                                   + np.einsum("nkd,ncd->nkc", local, frames[which][mask]))
    return out


def mirror_batch(P: np.ndarray) -> np.ndarray:
    """Batched ``motion.mirror``: (n, 21, 3) world mm → their left/right mirror images."""
    side = P[:, 4] - P[:, 1]
    nrm = np.concatenate([side[:, :2], np.zeros((len(P), 1))], -1)
    flat = np.linalg.norm(nrm, axis=-1) < 1e-6  # hips vertical: the plane normal to the hip axis
    nrm[flat] = side[flat]
    nrm /= np.maximum(np.linalg.norm(nrm, axis=-1, keepdims=True), 1e-9)
    reflected = P - 2.0 * np.einsum("nkc,nc->nk", P - P[:, :1], nrm)[..., None] * nrm[:, None]
    perm = np.arange(motion.NUM_POINTS)
    for a, b in motion.MIRROR_PAIRS:
        perm[a], perm[b] = b, a
    return reflected[:, perm]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def sample_limb_batch(P: np.ndarray, limb: str, rng: np.random.Generator) -> np.ndarray:
    """Batched ``motion.sample_limb``: limb ``limb`` of every pose ``P (n, 21, 3)`` re-posed at joint
    angles drawn uniformly within ``motion.ANGLE_LIMITS_DEG`` (bone lengths kept) → new (n, 21, 3).
    The same ``rng`` state draws the same angles as n calls of ``motion.sample_limb``; the foot's
    points follow the ankle by translation only (lifting reads the 17 joints)."""
    root, mid, end, follow, side, which = motion.PRIOR_LIMBS[limb]
    F = _body_frames(P, which)  # columns: left, up, forward
    out_ax, up, fwd = side * F[..., 0], F[..., 1], F[..., 2]
    kind = "arm" if which == "thorax" else "leg"
    lims = motion.ANGLE_LIMITS_DEG[kind]
    lo, hi = np.array([v[0] for v in lims.values()]), np.array([v[1] for v in lims.values()])
    ang = dict(zip(lims, np.radians(rng.uniform(lo, hi, (len(P), len(lims)))).T, strict=True))

    def dot(a, b):
        return (a * b).sum(-1, keepdims=True)

    if kind == "arm":
        el, pl = ang["elevation"][:, None], ang["plane"][:, None]
        d = np.sin(el) * (np.cos(pl) * out_ax + np.sin(pl) * fwd) - np.cos(el) * up
        ref = np.where(np.abs(dot(fwd, d)) < 0.99, fwd - dot(fwd, d) * d, up - dot(up, d) * d)  # elbow bends forward
        bend, rot = ang["flexion"], ang["rotation"]
    else:
        fl, ab = ang["flexion"][:, None], ang["abduction"][:, None]
        sag = np.cos(fl) * -up + np.sin(fl) * fwd
        d = _unit(np.cos(ab) * sag + np.sin(ab) * out_ax)
        left = F[..., 0]
        ref = np.cross(_unit(left - dot(left, d) * d), d)  # the knee folds back: about the lateral axis
        bend, rot = ang["knee"], ang["rotation"]
    r, c, s = _unit(ref), np.cos(rot)[:, None], np.sin(rot)[:, None]
    a = r * c + np.cross(d, r) * s + d * dot(d, r) * (1.0 - c)  # Rodrigues: r about d by rot
    lower = np.cos(bend)[:, None] * d + np.sin(bend)[:, None] * a
    out = P.copy()
    l1 = np.linalg.norm(P[:, mid] - P[:, root], axis=-1, keepdims=True)
    l2 = np.linalg.norm(P[:, end] - P[:, mid], axis=-1, keepdims=True)
    out[:, mid] = P[:, root] + l1 * d
    out[:, end] = out[:, mid] + l2 * lower
    if follow:
        out[:, list(follow)] += (out[:, end] - P[:, end])[:, None]
    return out


def place_joints(P: np.ndarray, drop_mm: float, width: float) -> np.ndarray:
    """One subject's joint placement (module docstring) on poses ``P (n, 21, 3)`` mm: each shoulder
    and its arm moved by ``−drop_mm`` along the thorax frame's up axis and by ``(width − 1)`` times
    the shoulder's lateral offset from the thorax along its side axis → new (n, 21, 3)."""
    out = P.copy()
    T = _body_frames(P, "thorax")  # columns: left, up, forward
    for shoulder, arm in ((11, (11, 12, 13)), (14, (14, 15, 16))):
        lateral = ((P[:, shoulder] - P[:, 8]) * T[..., 0]).sum(-1, keepdims=True) * T[..., 0]
        shift = -drop_mm * T[..., 1] + (width - 1.0) * lateral
        out[:, list(arm)] += shift[:, None]
    return out


def _cameras(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """World (z up) → camera (x right, y down, z forward) rotations (n, 3, 3), pelvis positions in the
    camera frame (n, 3) mm, focal lengths (n,) px and principal points (n, 2) px (module docstring)."""
    yaw = rng.uniform(0.0, 2.0 * math.pi, n)
    pitch = np.radians(rng.uniform(*PITCH_DEG, n))
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    o, z = np.ones(n), np.zeros(n)
    # turn the body about the vertical, look along world +y (x right, y = −world z, z = world y),
    # then pitch the camera down by `pitch` (the body seen from above)
    turn = np.stack([cy, -sy, z, sy, cy, z, z, z, o], -1).reshape(n, 3, 3)
    look = np.broadcast_to(np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), (n, 3, 3))
    tilt = np.stack([o, z, z, z, cp, -sp, z, sp, cp], -1).reshape(n, 3, 3)
    R = tilt @ look @ turn
    depth = rng.uniform(*DEPTH_MM, n)
    off = np.tan(np.radians(rng.uniform(-OFF_AXIS_DEG, OFF_AXIS_DEG, (n, 2))))
    root = np.stack([off[:, 0] * depth, off[:, 1] * depth, depth], -1)
    f = FOCAL_PX * rng.uniform(0.995, 1.005, n)
    c = 500.0 + rng.uniform(-10.0, 10.0, (n, 2))
    return R, root, f, c


def draw_poses(n: int, seed: int = 0, limb_mix: float = 0.5, subjects: int = 200, noise_px: float = 0.0,
               joint_jitter: bool = True, test_clips: Sequence[str] = DEFAULT_TEST_CLIPS,
               temporal: bool = False, mirror: float = 0.0, limb_prior: float = 0.0) -> PoseSet:
    """``n`` 2D/3D pose pairs from the embedded training clips seen by Human3.6M-like cameras
    (module docstring). Deterministic for a given ``seed``.

    With ``temporal`` the set holds ``2n`` poses: pose ``n + i`` is pose ``i`` :data:`NEXT_S` s later
    (same subject, camera and limb donors), and ``sequence``/``frame`` say so
    (``pose.lifting.data.neighbour_index`` pairs them).
    """
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    if not 0.0 <= limb_mix <= 1.0:
        raise ValueError(f"limb_mix: must be in [0, 1], got {limb_mix}")
    if subjects < 1:
        raise ValueError(f"subjects: must be >= 1, got {subjects}")
    if noise_px < 0:
        raise ValueError(f"noise_px: must be >= 0, got {noise_px}")
    for name, v in (("mirror", mirror), ("limb_prior", limb_prior)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name}: must be in [0, 1], got {v}")
    all_clips = motion.load_clips()
    bad = sorted(set(test_clips) - set(all_clips))
    if bad:
        raise ValueError(f"test_clips: unknown clip names {bad} (have {list(all_clips)})")
    names = [c for c in all_clips if c not in test_clips]
    if not names:
        raise ValueError("test_clips: every clip is held out; nothing left to draw training poses from")
    clips = [all_clips[c] for c in names]
    rng = np.random.default_rng([seed, 25])
    shifts = (0.0, NEXT_S) if temporal else (0.0,)
    base = [_draw_moments(clips, n, np.random.default_rng([seed, 1]), dt) for dt in shifts]
    which = base[0][1]
    P = [b[0] for b in base]
    for li, limb in enumerate(motion.LIMBS):
        mask = rng.random(n) < limb_mix
        donors = [_draw_moments(clips, n, np.random.default_rng([seed, 100 + li]), dt)[0] for dt in shifts]
        P = [mix_limbs_batch(p, {limb: (mask, d)}) for p, d in zip(P, donors, strict=True)]
    if mirror > 0:
        flip = np.random.default_rng([seed, 3000]).random(n) < mirror
        P = [np.where(flip[:, None, None], mirror_batch(p), p) for p in P]
    if limb_prior > 0:
        for li, limb in enumerate(motion.PRIOR_LIMBS):
            pick = np.random.default_rng([seed, 3100 + li]).random(n) < limb_prior
            for p in P:  # the same angles for a pose and its temporal successor (the same rng draws)
                p[pick] = sample_limb_batch(p[pick], limb, np.random.default_rng([seed, 3200 + li]))
    subj = rng.integers(0, subjects, n)
    lengths = np.stack([motion.subject_bone_lengths(np.random.default_rng([seed, 1000, s])) for s in range(subjects)])
    placement = np.random.default_rng([seed, 2000]).uniform(
        (SHOULDER_DROP_MM[0], SHOULDER_WIDTH[0]), (SHOULDER_DROP_MM[1], SHOULDER_WIDTH[1]), (subjects, 2))
    R, root, f, c = _cameras(n, rng)
    noise = rng.normal(0.0, 1.0, (len(shifts), n, NUM_JOINTS, 2)) * noise_px
    j2, j3 = [], []
    for k, p in enumerate(P):
        for s in np.unique(subj):
            m = subj == s
            p[m] = motion.rescale_bones(p[m], lengths[s])
            if joint_jitter:
                p[m] = place_joints(p[m], *placement[s])
        rel = p[:, :NUM_JOINTS] - p[:, :1]
        Xc = np.einsum("nij,nkj->nki", R, rel) + root[:, None]
        if (Xc[..., 2] < 500.0).any():
            raise ValueError("draw_poses: a joint came within 0.5 m of the camera; DEPTH_MM is too small")
        px = Xc[..., :2] / Xc[..., 2:] * f[:, None, None] + c[:, None] + noise[k]
        j2.append((px - c[:, None]) / f[:, None, None])
        j3.append(Xc)
    j2a, j3a = np.concatenate(j2).astype(np.float32), np.concatenate(j3).astype(np.float32)
    reps = len(shifts)
    return PoseSet(j2a, j3a, np.tile(which, reps).astype(np.int64), names,
                   np.tile(np.arange(n), reps).astype(np.int64), np.repeat(np.arange(reps), n).astype(np.int64),
                   source=f"draw_poses(n={n}, seed={seed})")
