"""Regenerate ``clips.npz``: 17 H36M-style joint tracks of the DeepMimic motion-capture clips.

Needs ``pybullet==3.2.7`` (``pip install -e .[motion]``), only to run this script; the committed
``clips.npz`` is all ``pose synth`` needs at run time.

Source: the 15 ``pybullet_data/data/motions/humanoid3d_<name>.txt`` clips (DeepMimic, Peng et al.
2018) on ``pybullet_data/humanoid/humanoid.urdf`` loaded with ``globalScaling=0.25`` (the scale
DeepMimic uses; thigh 0.42 m, shin 0.41 m).

Motion row layout (44 numbers), verified against the URDF's joint order (the non-fixed joints
chest, neck, right_hip, right_knee, right_ankle, right_shoulder, right_elbow, left_hip,
left_knee, left_ankle, left_shoulder, left_elbow; the wrists are fixed joints) and against
``pybullet_envs/deep_mimic/env/humanoid_pose_interpolator.py``::

    [0] keyframe duration s | [1:4] root position (m, y-up) | [4:8] root quaternion (w,x,y,z)
    [8:12] chest q | [12:16] neck q | [16:20] right hip q | [20] right knee angle
    [21:25] right ankle q | [25:29] right shoulder q | [29] right elbow angle
    [30:34] left hip q | [34] left knee angle | [35:39] left ankle q | [39:43] left shoulder q
    [43] left elbow angle                                                   (sum 1+3+4+36 = 44)

Model frame: y up, the body faces +x, +z is the body's right (the right hip sits at +z).
Joint positions are the URDF link frames (``getLinkState(...)[4]``), i.e. the joint centres.

Mapping to the 17 H36M joints (``pose.skeleton.JOINT_NAMES_17``):
Pelvis = root link, R/L Hip/Knee/Ankle = the hip/knee/ankle joints, Torso = chest joint
(0.236 m above the pelvis; H36M's pelvis→torso is 0.238 m), Neck = neck joint (thorax level),
Nose and Head (top) from the neck link's head sphere (centre 0.175 m above the neck joint,
radius 0.1025 m): nose = centre + r·(0.95 forward, −0.15 up), head top = centre + r·up;
L/R Shoulder/Elbow/Wrist = the shoulder/elbow/wrist joints.
Four extra points (indices 17-20: R toe base, R toe end, L toe base, L toe end) come from the
ankle link's foot box (toe base = ankle + (0.10 fwd, −0.045 up) m, toe end = ankle +
(0.133 fwd, −0.045 up) m in the ankle frame); they give the feet of the rendered body and the
toe joints of the 32-joint files.

World frame written: Human3.6M-like, z up, millimetres: (X, Y, Z) = 1000·(x, −z, y) of the
y-up model frame (a proper rotation, so left/right are kept).

Output ``clips.npz`` (compressed): ``names`` (15,) str; per clip ``times_<name>`` (K,) float32
keyframe times in s (t_0 = 0) and ``joints_<name>`` (K, 21, 3) float32 world mm.

Run: ``python -m pose.data.synth.make_clips [--out pose/data/synth/clips.npz] [--check]``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

CLIP_NAMES: tuple[str, ...] = (
    "backflip", "cartwheel", "crawl", "dance_a", "dance_b", "getup_facedown", "getup_faceup",
    "jump", "kick", "punch", "roll", "run", "spin", "spinkick", "walk",
)
SCALE = 0.25
#: spherical joints (quaternion w,x,y,z in the row) and revolute joints (one angle), row order
ROW_JOINTS: tuple[tuple[str, int], ...] = (
    ("chest", 4), ("neck", 4), ("right_hip", 4), ("right_knee", 1), ("right_ankle", 4),
    ("right_shoulder", 4), ("right_elbow", 1), ("left_hip", 4), ("left_knee", 1),
    ("left_ankle", 4), ("left_shoulder", 4), ("left_elbow", 1),
)
#: link whose frame gives each of the 17 joints (None = special: root / nose / head top)
LINK_OF_17: tuple[str | None, ...] = (
    "root", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "chest", "neck", None, None, "left_shoulder", "left_elbow", "left_wrist",
    "right_shoulder", "right_elbow", "right_wrist",
)
HEAD_CENTRE = np.array([0.0, 0.7 * SCALE, 0.0])  # in the neck link frame, m
HEAD_R = 0.41 * SCALE
NOSE_LOCAL = HEAD_CENTRE + HEAD_R * np.array([0.95, -0.15, 0.0])
HEADTOP_LOCAL = HEAD_CENTRE + HEAD_R * np.array([0.0, 1.0, 0.0])
TOE_BASE_LOCAL = np.array([0.10, -0.045, 0.0])  # in the ankle link frame, m
TOE_END_LOCAL = np.array([0.133, -0.045, 0.0])
#: y-up model frame (m) → z-up world (mm)
Y_UP_TO_WORLD = 1000.0 * np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def parse_row(row) -> tuple[np.ndarray, np.ndarray, dict[str, list[float]]]:
    """One 44-number motion row → (root pos (3,) m, root quat (x,y,z,w), {joint: q xyzw | [angle]})."""
    if len(row) != 44:
        raise ValueError(f"row: expected 44 numbers, got {len(row)}")
    pos = np.asarray(row[1:4], float)
    w, x, y, z = row[4:8]
    out: dict[str, list[float]] = {}
    i = 8
    for name, n in ROW_JOINTS:
        if n == 4:
            qw, qx, qy, qz = row[i:i + 4]
            out[name] = [qx, qy, qz, qw]
        else:
            out[name] = [row[i]]
        i += n
    assert i == 44
    return pos, np.array([x, y, z, w]), out


def _quat_to_mat(q) -> np.ndarray:
    x, y, z, w = q
    n = np.sqrt(x * x + y * y + z * z + w * w)
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def fk_pybullet(frames, p, body: int, link_index: dict[str, int]) -> np.ndarray:
    """Keyframes → (K, 21, 3) points in the y-up model frame, metres, via pybullet."""
    out = np.zeros((len(frames), 21, 3))
    for k, row in enumerate(frames):
        pos, orn, joints = parse_row(row)
        p.resetBasePositionAndOrientation(body, pos.tolist(), orn.tolist())
        for name, q in joints.items():
            p.resetJointStateMultiDof(body, link_index[name], q)
        frames_ = {}
        for name, li in link_index.items():
            st = p.getLinkState(body, li, computeForwardKinematics=True)
            frames_[name] = (np.array(st[4]), _quat_to_mat(st[5]))
        frames_["root"] = (pos, _quat_to_mat(orn))
        for j, name in enumerate(LINK_OF_17):
            if name is not None:
                out[k, j] = frames_[name][0]
        npos, nrot = frames_["neck"]
        out[k, 9] = npos + nrot @ NOSE_LOCAL
        out[k, 10] = npos + nrot @ HEADTOP_LOCAL
        for j, side in ((17, "right_ankle"), (19, "left_ankle")):
            apos, arot = frames_[side]
            out[k, j] = apos + arot @ TOE_BASE_LOCAL
            out[k, j + 1] = apos + arot @ TOE_END_LOCAL
    return out


#: URDF joint origins (already scaled by SCALE) and parents, for the independent numpy check
_URDF_OFFSETS = {
    "chest": ("root", (0.0, 0.944604, 0.0)), "neck": ("chest", (0.0, 0.895576, 0.0)),
    "right_hip": ("root", (0.0, 0.0, 0.339548)), "right_knee": ("right_hip", (0.0, -1.686184, 0.0)),
    "right_ankle": ("right_knee", (0.0, -1.639480, 0.0)),
    "right_shoulder": ("chest", (-0.0962, 0.974, 0.73244)),
    "right_elbow": ("right_shoulder", (0.0, -1.099152, 0.0)),
    "right_wrist": ("right_elbow", (0.0, -1.035788, 0.0)),
    "left_hip": ("root", (0.0, 0.0, -0.339548)), "left_knee": ("left_hip", (0.0, -1.686184, 0.0)),
    "left_ankle": ("left_knee", (0.0, -1.639480, 0.0)),
    "left_shoulder": ("chest", (-0.0962, 0.974, -0.73244)),
    "left_elbow": ("left_shoulder", (0.0, -1.099152, 0.0)),
    "left_wrist": ("left_elbow", (0.0, -1.035788, 0.0)),
}


def fk_numpy(row) -> dict[str, np.ndarray]:
    """Independent forward kinematics of one row (joint centres, model frame, m)."""
    pos, orn, joints = parse_row(row)
    frames = {"root": (pos, _quat_to_mat(orn))}
    for name, (parent, off) in _URDF_OFFSETS.items():
        ppos, prot = frames[parent]
        q = joints.get(name)
        if q is None:
            local = np.eye(3)
        elif len(q) == 4:
            local = _quat_to_mat(q)
        else:  # revolute about z
            c, s = np.cos(q[0]), np.sin(q[0])
            local = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        frames[name] = (ppos + prot @ (SCALE * np.asarray(off)), prot @ local)
    return {k: v[0] for k, v in frames.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).with_name("clips.npz")))
    ap.add_argument("--check", action="store_true", help="compare pybullet FK with numpy FK, print bones")
    args = ap.parse_args(argv)
    import pybullet as p  # noqa: PLC0415 (optional dependency)
    import pybullet_data  # noqa: PLC0415

    root = pybullet_data.getDataPath()
    cid = p.connect(p.DIRECT)
    try:
        body = p.loadURDF(os.path.join(root, "humanoid/humanoid.urdf"), [0, 0, 0],
                          globalScaling=SCALE, useFixedBase=False, flags=p.URDF_MAINTAIN_LINK_ORDER)
        link_index = {p.getJointInfo(body, i)[1].decode(): i for i in range(p.getNumJoints(body))}
        link_index.pop("root", None)  # the fixed root joint: its link frame equals the base
        arrays: dict[str, np.ndarray] = {"names": np.array(CLIP_NAMES)}
        for name in CLIP_NAMES:
            with open(os.path.join(root, f"data/motions/humanoid3d_{name}.txt")) as f:
                frames = json.load(f)["Frames"]
            pts = fk_pybullet(frames, p, body, link_index)
            if args.check:
                ref = fk_numpy(frames[len(frames) // 2])
                got = pts[len(frames) // 2]
                err = max(np.abs(ref[n] - got[j]).max() for j, n in enumerate(LINK_OF_17) if n)
                print(f"{name:15s} K={len(frames):4d} pybullet-vs-numpy FK max diff {err * 1000:.4f} mm")
            times = np.concatenate([[0.0], np.cumsum([r[0] for r in frames[:-1]])])
            arrays[f"times_{name}"] = times.astype(np.float32)
            arrays[f"joints_{name}"] = (pts @ Y_UP_TO_WORLD.T).astype(np.float32)
    finally:
        p.disconnect(cid)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
