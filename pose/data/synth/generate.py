"""Plan and render the synthetic dataset (``pose synth``) in the seed's txt layout.

Layout of the data set (all choices documented here):

- Subjects as in H36M: train S1, S5, S6, S7, S8; test S9, S11. Each subject has its own random
  body proportions (``motion.subject_bone_lengths``).
- Actions = the 15 DeepMimic clips (``motion.ACTION_NAMES``, CamelCase), ``action_id`` = clip
  position + 2 (like H36M's 2..16). Split by clip so test motions are unseen in training:
  test clips ``DEFAULT_TEST_CLIPS`` (dance_b, getup_faceup, run, spinkick: each has a relative in
  training — dance_a, getup_facedown, walk, kick/spin — but is itself never seen); train subjects
  perform the other 11 clips, test subjects only the 4 test clips.
- One subaction (1) per action; 4 cameras per (subject, action), placed around the body like the
  H36M rig (yaw = random base + 90°·(camera_id − 1) ± 20°), each with its own random elevation,
  distance and intrinsics (``render.random_camera``); appearance (clothes, girth, light) random
  per (subject, action), or per training frame with ``looks="frame"``, drawn from the look family
  ``appearance`` for the training split (``pose.data.synth.appearance``: ``classic``, ``varied``,
  the appearance randomisation, or ``mixed``: each look varied with probability ``varied_share``, else classic) and always from ``classic`` for the test split, so
  the embedded test figures do not move with the training looks.
- Training-pose diversity (training subjects only; the test split does not depend on these
  settings): ``limb_mix`` = probability that each limb (legs, arms, head; ``motion.LIMBS``) of a
  training frame is replaced by the same limb of a random moment of a random *training* clip,
  kept in its donor's body frame (``motion.mix_limbs``: bone lengths and bends kept) — new limb
  combinations of the training motions, the "MoCap-guided" augmentation of Rogez & Schmid (2016);
  ``tilt`` = probability that the whole training pose is rotated about the pelvis by U(0°, 90°)
  about a random horizontal axis (leaning, lying, upside-down versions of the training poses);
  ``pose_prior`` = probability that each arm and leg is re-posed at joint angles drawn uniformly
  within human joint-angle limits (``motion.ANGLE_LIMITS_DEG``, ``motion.sample_limb``: poses the
  clips never reach, e.g. arms raised sideways), the feet kept on the floor where the clip frame
  touches it; ``mirror`` = probability that the training pose is replaced by its left/right mirror
  image (``motion.mirror``). Applied in the order mixing, prior, mirror, tilt.
  Each draws from its own per-frame generator, so the frames' crops, backgrounds and cameras are
  the same with and without them.
- Frames of a sequence: a virtual 50 Hz video of the (looping) clip; ``frame_id`` = start +
  step·i with step = ⌊duration·50 / n⌋ (≥ 1) and a random start < step, so the frames cover the
  clip evenly; the pose is linearly interpolated between the DeepMimic keyframes. When a
  sequence asks for more frames than the clip has at 50 Hz (large ``--frames``) the video loops
  the clip (same poses again, new crop jitter and background).
- Global indices ordered like the seed: subject (S1, S5, S6, S7, S8, S9, S11) → action (clip
  order) → subaction → camera → frame.
- ``index_range/train_index.txt`` lists *every* training index (the seed lists every 5th 50 Hz
  frame; our frames are already ~5 video frames apart), ``train_index_shuffle.txt`` the same
  shuffled with the seed. ``Protocol2`` lists: every 8th test sample at offset 7 within each
  test subject/action range (the seed's every-64th-at-offset-63, scaled by our ≈8× sparser
  sampling); ``Protocol2/{Action}_range.txt`` exists only for the test actions.
- Determinism: every random draw comes from ``np.random.default_rng([seed, ...])`` keyed by the
  subject/clip/camera/global index, never by time, process or hash, so the files are
  byte-identical for a given ``--seed`` and ``--frames`` whatever the number of workers.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import asdict, dataclass

import cv2
import numpy as np
from tqdm import tqdm

from pose.data.synth import appearance, motion, render, writer

TRAIN_SUBJECTS: tuple[int, ...] = (1, 5, 6, 7, 8)
TEST_SUBJECTS: tuple[int, ...] = (9, 11)
DEFAULT_TEST_CLIPS: tuple[str, ...] = ("dance_b", "getup_faceup", "run", "spinkick")
FPS = 50.0
PROTOCOL2_STEP = 8


@dataclass(frozen=True)
class SynthConfig:
    """frames: approximate total number of frames (train share ``1 − test_fraction``), at least one
    per sequence; seed: all randomness; workers: processes (output does not depend on it)."""

    frames: int = 4000
    seed: int = 0
    train_subjects: tuple[int, ...] = TRAIN_SUBJECTS
    test_subjects: tuple[int, ...] = TEST_SUBJECTS
    test_clips: tuple[str, ...] = DEFAULT_TEST_CLIPS
    cameras: tuple[int, ...] = (1, 2, 3, 4)
    test_fraction: float = 0.17
    clips: tuple[str, ...] | None = None  # restrict to these clip names (tests); None = all
    workers: int = 1
    png_compression: int = 1
    limb_mix: float = 0.0
    tilt: float = 0.0
    looks: str = "sequence"
    pose_prior: float = 0.0
    mirror: float = 0.0
    appearance: str = "classic"
    varied_share: float = 0.5


LOOKS = ("sequence", "frame")
#: look families a data set may be rendered in (``appearance.FAMILIES`` less ``heldout``, which only
#: the held-out-looks test split draws; ``mixed``: each look varied with probability ``varied_share``
#: (default half), else classic)
TRAIN_FAMILIES = ("classic", "varied", "mixed")


@dataclass(frozen=True)
class Sequence:
    subject: int
    clip: str
    action: str
    action_id: int
    subaction: int
    camera_id: int
    start_index: int
    n_frames: int
    train: bool
    seed: int = 0
    limb_mix: float = 0.0
    donor_clips: tuple[str, ...] = ()
    frame_looks: bool = False
    tilt: float = 0.0
    pose_prior: float = 0.0
    mirror: float = 0.0
    appearance: str = "classic"
    varied_share: float = 0.5


def clear_out(out: str | os.PathLike, force: bool) -> str:
    """Absolute ``out``, removed if it exists (a non-empty one only with ``force``: FileExistsError)."""
    out = os.path.abspath(out)
    if os.path.exists(out):
        if not force and (not os.path.isdir(out) or os.listdir(out)):
            raise FileExistsError(f"out: {out} exists and is not empty (use --force to replace it)")
        shutil.rmtree(out) if os.path.isdir(out) else os.remove(out)
    return out

def plan(cfg: SynthConfig) -> list[Sequence]:
    """The sequences of the data set in global-index order."""
    if cfg.frames < 1:
        raise ValueError(f"frames: must be >= 1, got {cfg.frames}")
    if not 0.0 < cfg.test_fraction < 1.0:
        raise ValueError(f"test_fraction: must be in (0, 1), got {cfg.test_fraction}")
    for name in ("limb_mix", "tilt", "pose_prior", "mirror", "varied_share"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ValueError(f"{name}: must be in [0, 1], got {getattr(cfg, name)}")
    if cfg.appearance not in TRAIN_FAMILIES:
        raise ValueError(f"appearance: must be one of {TRAIN_FAMILIES}, got {cfg.appearance!r}")
    if cfg.looks not in LOOKS:
        raise ValueError(f"looks: must be one of {LOOKS}, got {cfg.looks!r}")
    if not set(cfg.cameras) <= {1, 2, 3, 4}:
        raise ValueError(f"cameras: ids must be in 1..4, got {cfg.cameras}")
    names = list(motion.load_clips())
    unknown = set(cfg.test_clips) - set(names)
    if unknown:
        raise ValueError(f"test_clips: unknown clips {sorted(unknown)}; known: {names}")
    use = [n for n in names if cfg.clips is None or n in cfg.clips]
    train_clips = [n for n in use if n not in cfg.test_clips]
    test_clips = [n for n in use if n in cfg.test_clips]
    subjects = sorted(set(cfg.train_subjects) | set(cfg.test_subjects))
    n_train_seq = len(cfg.train_subjects) * len(train_clips) * len(cfg.cameras)
    n_test_seq = len(cfg.test_subjects) * len(test_clips) * len(cfg.cameras)
    f_train = max(1, round(cfg.frames * (1 - cfg.test_fraction) / max(n_train_seq, 1)))
    f_test = max(1, round(cfg.frames * cfg.test_fraction / max(n_test_seq, 1)))
    seqs: list[Sequence] = []
    index = 0
    for s in subjects:
        is_train = s in cfg.train_subjects
        for clip in train_clips if is_train else test_clips:
            for cam in sorted(cfg.cameras):
                n = f_train if is_train else f_test
                mix = cfg.limb_mix if is_train else 0.0
                seqs.append(Sequence(s, clip, motion.ACTION_NAMES[clip], names.index(clip) + 2, 1, cam,
                                     index, n, is_train, cfg.seed, mix, tuple(train_clips) if mix else (),
                                     is_train and cfg.looks == "frame", cfg.tilt if is_train else 0.0,
                                     cfg.pose_prior if is_train else 0.0, cfg.mirror if is_train else 0.0,
                                     cfg.appearance if is_train else "classic", cfg.varied_share))
                index += n
    return seqs


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def render_sequence(seq: Sequence, root: str, png_compression: int = 1) -> int:
    """Render and write all frames of one sequence; returns the number written."""
    cv2.setNumThreads(1)
    clips = motion.load_clips()
    clip = clips[seq.clip]
    ci = list(clips).index(seq.clip)
    lengths = motion.subject_bone_lengths(_rng(seq.seed, seq.subject, 1000))
    base_yaw = _rng(seq.seed, seq.subject, ci, 2000).uniform(0, 2 * np.pi)
    r = _rng(seq.seed, seq.subject, ci, seq.camera_id, 3000)
    target = np.array([0.0, 0.0, float(clip.points[:, 0, 2].mean())])
    yaw = base_yaw + np.pi / 2 * (seq.camera_id - 1) + np.deg2rad(r.uniform(-20, 20))
    cam = render.random_camera(r, target, yaw)
    family = _family(seq.appearance, _rng(seq.seed, seq.subject, ci, 4100), seq.varied_share)
    look = appearance.random_look(_rng(seq.seed, seq.subject, ci, 4000), family)
    n_video = max(int(np.floor(clip.duration * FPS)), 1)
    step = max(n_video // seq.n_frames, 1)
    start = int(r.integers(step))
    flags = png_flags(png_compression)
    for i in range(seq.n_frames):
        index = seq.start_index + i
        frame_id = start + step * i
        P = motion.sample_clip(clip, frame_id / FPS)
        if seq.limb_mix:
            P = _mix(P, seq, clips, _rng(seq.seed, index, 7000))
        if seq.pose_prior:
            P = _prior(P, seq.pose_prior, _rng(seq.seed, index, 7200))
        if seq.mirror and _rng(seq.seed, index, 7300).random() < seq.mirror:
            P = motion.mirror(P)
        if seq.tilt:
            P = _tilt(P, seq.tilt, _rng(seq.seed, index, 7500))
        P = motion.rescale_bones(P, lengths)
        if seq.frame_looks:
            family = _family(seq.appearance, _rng(seq.seed, index, 8100), seq.varied_share)
            look = appearance.random_look(_rng(seq.seed, index, 8000), family)
        img, bbox, A, P_cam = render.render_frame(_rng(seq.seed, index, 5000), P, cam, look, family=family)
        info = writer.format_info(seq.subject, seq.action_id, seq.action, seq.subaction, seq.camera_id, frame_id)
        write_frame(root, index, img, bbox, A, P_cam, cam, info, flags)
    return seq.n_frames


def _family(appearance_: str, rng: np.random.Generator, varied_share: float = 0.5) -> str:
    """The look family of one look: ``appearance_`` itself, or for ``mixed`` varied with probability
    ``varied_share``, else classic."""
    if appearance_ != "mixed":
        return appearance_
    return "varied" if rng.random() < varied_share else "classic"


def png_flags(level: int = 1) -> list[int]:
    """``cv2.imencode`` flags: zlib ``level`` + RLE strategy + the "up" filter (~2× faster than
    OpenCV's default, about the same size)."""
    return [cv2.IMWRITE_PNG_COMPRESSION, level, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
            cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]


def write_frame(root: str, index: int, img: np.ndarray, bbox: np.ndarray, A: np.ndarray, P_cam: np.ndarray,
                cam: render.Camera, info: str, flags: list[int]) -> None:
    """Write one rendered frame (``render.render_frame``'s outputs) as seed-layout sample ``index``:
    the 32 joints of P_cam (21,3) camera mm, their crop-px projection through A (2,3), the camera."""
    X32 = motion.to32(P_cam)
    uv32 = cam.project(X32) @ A[:, :2].T + A[:, 2]
    ok, png = cv2.imencode(".png", img, flags)
    if not ok:
        raise RuntimeError(f"PNG encoding failed for sample {index}")
    writer.write_sample(root, index, png.tobytes(), bbox, uv32, X32, cam.R, cam.T, cam.f, cam.c, info)


def _mix(P: np.ndarray, seq: Sequence, clips: dict, rng: np.random.Generator) -> np.ndarray:
    """Each limb of ``motion.LIMBS`` replaced with probability ``seq.limb_mix`` by the same limb of a
    random moment of a random training clip (new poses from the training motions only)."""
    donors = {}
    for name in motion.LIMBS:
        if rng.random() < seq.limb_mix:
            donor = clips[seq.donor_clips[int(rng.integers(len(seq.donor_clips)))]]
            donors[name] = motion.sample_clip(donor, rng.uniform(0.0, donor.duration))
    return motion.mix_limbs(P, donors) if donors else P


def _prior(P: np.ndarray, prob: float, rng: np.random.Generator) -> np.ndarray:
    """Each limb of ``motion.PRIOR_LIMBS`` re-posed with probability ``prob`` at joint angles drawn
    within ``motion.ANGLE_LIMITS_DEG``; when a leg moved, the pose keeps the clip frame's ground
    contact (``motion.keep_ground_contact``)."""
    out = P
    for limb in motion.PRIOR_LIMBS:
        if rng.random() < prob:
            out = motion.sample_limb(out, limb, rng)
    if any(not np.array_equal(out[i], P[i]) for i in (3, 6)):
        out = motion.keep_ground_contact(out, P)
    return out


def _tilt(P: np.ndarray, prob: float, rng: np.random.Generator) -> np.ndarray:
    """With probability ``prob``, the whole body rotated about the pelvis by U(0°, 90°) about a random
    horizontal axis (leaning, lying and upside-down versions of the training poses)."""
    if rng.random() >= prob:
        return P
    a = rng.uniform(0.0, 2.0 * np.pi)
    axis = np.array([np.cos(a), np.sin(a), 0.0])
    ang = rng.uniform(0.0, np.pi / 2)
    K = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    R = np.eye(3) + np.sin(ang) * K + (1.0 - np.cos(ang)) * K @ K
    return (P - P[0]) @ R.T + P[0]


def _render_job(job: tuple[Sequence, str, int]) -> int:
    return render_sequence(*job)


def index_files(seqs: list[Sequence], seed: int) -> tuple[dict, list[int], np.ndarray, dict[str, list[int]]]:
    """(ranges {(subject, action): (start, end)}, train indices, shuffle permutation, Protocol2 lists)."""
    ranges: dict[tuple[int, str], tuple[int, int]] = {}
    for q in seqs:
        a, b = ranges.get((q.subject, q.action), (q.start_index, q.start_index))
        ranges[(q.subject, q.action)] = (min(a, q.start_index), max(b, q.start_index + q.n_frames - 1))
    train = [i for q in seqs if q.train for i in range(q.start_index, q.start_index + q.n_frames)]
    perm = _rng(seed, 6000).permutation(len(train))
    protocol2: dict[str, list[int]] = {}
    test_actions = {q.action for q in seqs if not q.train}
    for (_s, action), (a, b) in ranges.items():
        if action in test_actions:
            protocol2.setdefault(action, []).extend(range(a + PROTOCOL2_STEP - 1, b + 1, PROTOCOL2_STEP))
    order = [motion.ACTION_NAMES[n] for n in motion.ACTION_NAMES]
    protocol2 = {k: sorted(protocol2[k]) for k in order if k in protocol2}
    return ranges, train, perm, protocol2


def generate(out: str, cfg: SynthConfig, force: bool = False, progress: bool = True) -> dict:
    """Write the data set to ``out`` atomically (rendered into ``out.tmp-synth``, renamed at the end).

    Returns a summary dict (frames, train/test counts, seconds, frames/s).
    """
    out = clear_out(out, force)
    tmp = out + ".tmp-synth"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    seqs = plan(cfg)
    total = sum(q.n_frames for q in seqs)
    jobs = [(q, tmp, cfg.png_compression) for q in seqs]

    t0 = time.perf_counter()
    try:
        writer.make_dirs(tmp)
        with tqdm(total=total, desc="pose synth", unit="frame", disable=not progress, mininterval=1.0) as bar:
            if cfg.workers > 1:
                with mp.get_context("fork").Pool(cfg.workers) as pool:
                    for n in pool.imap_unordered(_render_job, jobs):
                        bar.update(n)
            else:
                for job in jobs:
                    bar.update(_render_job(job))
        seconds = time.perf_counter() - t0
        ranges, train, perm, protocol2 = index_files(seqs, cfg.seed)
        writer.write_index_range(tmp, ranges, train, perm, protocol2)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a half-written data set behind
        raise
    summary = {
        "frames": total, "train_frames": len(train), "test_frames": total - len(train),
        "train_subjects": [f"S{s}" for s in cfg.train_subjects],
        "test_subjects": [f"S{s}" for s in cfg.test_subjects],
        "train_actions": sorted({q.action for q in seqs if q.train}),
        "test_actions": sorted({q.action for q in seqs if not q.train}),
    }
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items() if k != "workers"}
    with open(os.path.join(tmp, "synth_config.json"), "w") as f:
        json.dump({"config": config, **summary}, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, out)
    summary["seconds"] = seconds
    summary["frames_per_s"] = total / max(seconds, 1e-9)
    return summary
