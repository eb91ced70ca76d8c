"""The real-pose test split: real Human3.6M poses drawn by ``pose synth``'s renderer in the seed layout.

Input: an npz in the c2f-vol-demo format (``pose/data/c2f_vol_demo/valid.npz``: 394 frames of
S9 Posing) — ``S`` (N, 17, 3) camera-frame joints mm, ``K`` (N, 3, 3), ``center`` (N, 2) and
``scale`` (N,) of the person box (side = 200·scale px), ``imgname`` (N,)
``S9_Posing_1.55011271_000001`` (subject, action, subaction, camera serial, frame).

The joints are in Human3.6M's 17-joint order (``pose.skeleton``: right leg first); a file in C2F's
order (left leg first, as c2f-vol-demo's ``valid.mat``) is refused (``pose.skeleton.legs_reversed``).
Each pose is drawn as it is (its own bone lengths, no retargeting), seen by its own camera (R = I,
T = 0: the joints are already in the camera frame; f and c from K; no distortion), inside its own
person box (square, side 200·scale centred on ``center``, rounded to integer px as the seed's
``bbx_all_new``). The body model needs 4 toe points the 17 joints lack: they are placed from each
ankle at the median offsets of the committed clips (:data:`TOE_OFFSETS`, in the shin / body-forward
frame of that leg). Looks, background and blur come from a fixed seed (:data:`REAL_SEED`), so the
split never changes with the training-data settings; the files are byte-identical run to run.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pose import skeleton
from pose.data.synth import appearance, render, writer
from pose.data.synth.generate import PROTOCOL2_STEP, clear_out, png_flags, write_frame

#: seed of the looks/backgrounds of the real split (independent of ``data.synth_seed``)
REAL_SEED = 19
#: seed of the held-out-looks split: the same poses, cameras and boxes drawn in the ``heldout``
#: look family (``pose.data.synth.appearance``), which no training set draws
HELDOUT_SEED = 23
#: toe base / toe end offsets from the ankle, mm, as (along the shin, forward, sideways) — the
#: medians of the committed clips' toe points in that frame (sideways = shin × forward; right foot
#: first, its toes turned out to +sideways, the left foot's to −sideways)
TOE_OFFSETS = {"right": ((29.0, 96.7, 10.7), (24.1, 125.9, 16.4)),
               "left": ((33.9, 91.5, -21.5), (30.5, 120.2, -29.1))}
_IMGNAME = re.compile(r"^S(\d+)_([A-Za-z]+)(?:[ _](\d+))?\.(\d+)_(\d+)$")


@dataclass(frozen=True)
class RealPoses:
    """S (N,17,3) camera mm; K (N,3,3); center (N,2) px; scale (N,) (box side 200·scale px); imgname (N,)."""

    S: np.ndarray
    K: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    imgname: np.ndarray


def load_real_poses(path: str | os.PathLike) -> RealPoses:
    """Read and check an npz of real poses (module docstring); ValueError with one line naming the array."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    with np.load(path) as d:
        missing = [k for k in ("S", "K", "center", "scale", "imgname") if k not in d.files]
        if missing:
            raise ValueError(f"{path}: missing array(s) {missing} (need S, K, center, scale, imgname)")
        poses = RealPoses(*(np.asarray(d[k]) for k in ("S", "K", "center", "scale")), np.asarray(d["imgname"]))
    n = len(poses.S)
    shapes = {"S": (n, 17, 3), "K": (n, 3, 3), "center": (n, 2), "scale": (n,), "imgname": (n,)}
    for name, shape in shapes.items():
        arr = getattr(poses, name)
        if arr.shape != shape:
            raise ValueError(f"{path}: {name}: expected shape {shape}, got {arr.shape}")
        if name != "imgname" and not np.isfinite(arr).all():
            raise ValueError(f"{path}: {name}: NaN or inf")
    if n == 0 or (poses.S[:, :, 2] <= 0).any() or (poses.scale <= 0).any():
        raise ValueError(f"{path}: need N > 0 poses in front of the camera (S z > 0) and scale > 0")
    reversed_ = skeleton.legs_reversed(poses.S)
    if reversed_.mean() > 0.5:
        raise ValueError(f"{path}: S: in {int(reversed_.sum())} of {n} poses (first: pose {int(np.argmax(reversed_))}) "
                         "the hips run opposite to the shoulders: joints 1-3 are the left leg (C2F's order); "
                         "Human3.6M's order puts the right leg first: reorder with S[:, pose.skeleton.SWAP_LEGS_17]")
    return poses


def parse_imgname(name: str) -> tuple[int, str, int, int, int]:
    """``S9_Posing_1.55011271_000001`` → (subject 9, action "Posing", subaction 1, camera_id 2, frame 1)."""
    m = _IMGNAME.match(str(name))
    if not m or m.group(4) not in writer.CAMERA_SERIALS:
        raise ValueError(f"imgname: expected 'S<subject>_<Action>_<sub>.<H36M camera serial>_<frame>', got {name!r}")
    return (int(m.group(1)), m.group(2), int(m.group(3) or 1), writer.CAMERA_SERIALS.index(m.group(4)) + 1,
            int(m.group(5)))


def add_toes(S17: np.ndarray) -> np.ndarray:
    """(N,17,3) → (N,21,3) points of ``motion`` (17 joints + R toe base/end, L toe base/end),
    the toes at :data:`TOE_OFFSETS` from each ankle in its (shin, forward, sideways) frame."""
    S17 = np.asarray(S17, dtype=np.float64)
    up = S17[:, 8] - S17[:, 0]
    fwd = np.cross(up, S17[:, 1] - S17[:, 4])  # body forward: spine × hips (R − L)
    toes = []
    for side, (knee, ankle) in (("right", (2, 3)), ("left", (5, 6))):
        a = S17[:, ankle] - S17[:, knee]
        a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-9)
        b = fwd - (fwd * a).sum(1, keepdims=True) * a
        b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-9)
        c = np.cross(a, b)
        for off in TOE_OFFSETS[side]:
            toes.append(S17[:, ankle] + off[0] * a + off[1] * b + off[2] * c)
    return np.concatenate([S17, np.stack(toes, axis=1)], axis=1)


def real_box(center: np.ndarray, scale: float) -> np.ndarray:
    """Square person box (4,) int ``x1 y1 x2 y2`` raw px: side round(200·scale) centred on ``center``."""
    side = int(round(200.0 * float(scale)))
    x1, y1 = np.round(np.asarray(center, dtype=np.float64) - side / 2.0).astype(np.int64)
    return np.array([x1, y1, x1 + side, y1 + side], dtype=np.int64)


def camera_from_K(K: np.ndarray) -> render.Camera:
    """The identity-pose camera (R = I, T = 0) of intrinsics K (3,3): camera-frame points stay put."""
    return render.Camera(np.eye(3), np.zeros(3), np.array([K[0, 0], K[1, 1]], dtype=np.float64),
                         np.array([K[0, 2], K[1, 2]], dtype=np.float64))


def render_real(src: str | os.PathLike, out: str | os.PathLike, seed: int = REAL_SEED, force: bool = False,
                png_compression: int = 1, family: str = "classic") -> dict:
    """Render every pose of ``src`` into ``out`` (seed layout; written into ``out.tmp-real`` and renamed)
    in the look family ``family`` (``appearance.FAMILIES``; the real-pose split: ``classic``, the
    held-out-looks split: ``heldout`` with :data:`HELDOUT_SEED`).

    Global index = position in ``src`` after a stable sort by (subject, action); one
    ``index_range`` file per (subject, action), Protocol2 every 8th frame (as ``pose synth``).
    Returns {frames, subjects, actions}.
    """
    poses = load_real_poses(src)
    out = clear_out(out, force)
    tmp = out + ".tmp-real"
    shutil.rmtree(tmp, ignore_errors=True)
    meta = [parse_imgname(n) for n in poses.imgname]
    order = sorted(range(len(meta)), key=lambda i: (meta[i][0], meta[i][1]))
    P21 = add_toes(poses.S)
    flags = png_flags(png_compression)
    ranges: dict[tuple[int, str], tuple[int, int]] = {}
    try:
        writer.make_dirs(tmp)
        for index, i in enumerate(order):
            subject, action, sub, cam_id, frame = meta[i]
            a, _ = ranges.get((subject, action), (index, index))
            ranges[(subject, action)] = (a, index)
            cam = camera_from_K(poses.K[i])
            look = appearance.random_look(np.random.default_rng([seed, index, 8000]), family)
            img, bbox, A, P_cam = render.render_frame(np.random.default_rng([seed, index, 5000]), P21[i], cam, look,
                                                      bbox=real_box(poses.center[i], poses.scale[i]), family=family)
            action_id = skeleton.ACTIONS_H36M.index(action) + 2 if action in skeleton.ACTIONS_H36M else 1
            info = writer.format_info(subject, action_id, action, sub, cam_id, frame)
            write_frame(tmp, index, img, bbox, A, P_cam, cam, info, flags)
        protocol2: dict[str, list[int]] = {}
        for (_s, action), (a, b) in ranges.items():
            protocol2.setdefault(action, []).extend(range(a + PROTOCOL2_STEP - 1, b + 1, PROTOCOL2_STEP))
        writer.write_index_range(tmp, ranges, [], np.zeros(0, dtype=np.int64), protocol2)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(tmp, out)
    return {"frames": len(order), "subjects": sorted({f"S{m[0]}" for m in meta}),
            "actions": sorted({m[1] for m in meta})}
