"""Pose sets for 2D→3D lifting (``pose.lifting``): packed splits, 2D-only ``.npz`` files, fixtures.

A :class:`PoseSet` holds 2D poses (any pixel-like frame with square pixels: raw camera px or
normalised camera coordinates) and, for evaluation only, 3D camera-frame poses in mm. The lifting
code works in *unit space* (root-centred, divided by a per-pose scale; ``pose.lifting.normalize_2d``);
:func:`to_unit_space` gives the training inputs and the matching 3D targets.

Sources:
- :func:`from_packed` — a ``pose prepare`` split (``pose.data.load_poses``): 2D mapped to raw camera
  px, then to normalised camera coordinates with ``K`` (removes fx ≠ fy), 3D camera mm, actions.
- :func:`load_2d_npz` — a 2D-only set: an ``.npz`` with an ``(N, 17, 2)`` array (key ``joints_2d``,
  ``poses_2d``, ``poses`` or the only array). Unsupervised training never needs more.
- :func:`load_valid_fixture` — the real H36M fixture ``c2f-vol-demo/valid.npz`` (S9 Posing).
- :func:`clip_poses` — 17-joint mocap poses of the embedded clips (``pose/data/synth/clips.npz``).
- :func:`render_views` — 3D poses seen by random cameras (azimuth/elevation), orthographic or
  perspective: synthetic 2D inputs plus their 3D ground truth.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pose.data import C2F_VOL_DEMO
from pose.data.packed import load_poses
from pose.data.synth.motion import load_clips
from pose.data.synth.real import load_real_poses
from pose.lifting.geometry import normalize_2d, pose_scale
from pose.skeleton import ACTIONS_H36M

__all__ = [
    "PoseSet",
    "check_2d",
    "clip_poses",
    "from_packed",
    "load_2d_npz",
    "load_valid_fixture",
    "neighbour_index",
    "render_views",
    "to_unit_space",
]

NUM_JOINTS = 17
#: 394 real H36M frames (S9 Posing) shipped with the package (c2f-vol-demo, see its LICENSE).
VALID_FIXTURE = C2F_VOL_DEMO / "valid.npz"


@dataclass
class PoseSet:
    """2D poses ``joints_2d (N, 17, 2)`` and optional 3D ``joints_3d (N, 17, 3)`` camera mm.

    ``action (N,)`` int indexes ``action_names``; ``sequence (N,)`` and ``frame (N,)`` int identify
    video frames (for the temporal discriminator); ``source`` names where the poses came from.
    """

    joints_2d: np.ndarray
    joints_3d: np.ndarray | None = None
    action: np.ndarray | None = None
    action_names: list[str] = field(default_factory=list)
    sequence: np.ndarray | None = None
    frame: np.ndarray | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.joints_2d)

    def subset(self, idx) -> PoseSet:
        """Rows ``idx`` (index array, slice or boolean mask) as a new set."""
        def take(a):
            return None if a is None else a[idx]
        return PoseSet(self.joints_2d[idx], take(self.joints_3d), take(self.action), list(self.action_names),
                       take(self.sequence), take(self.frame), self.source)


def check_2d(arr, source: str) -> np.ndarray:
    """Validate 2D poses from ``source`` (a file name): ``(N, 17, 2)``, N > 0, finite → float32.

    Raises one ``ValueError`` line naming ``source`` for a wrong shape or joint count, an empty set
    or NaN/inf values.
    """
    a = np.asarray(arr)
    if a.ndim != 3 or a.shape[-1] != 2:
        raise ValueError(f"{source}: expected 2D poses of shape (N, {NUM_JOINTS}, 2), got {a.shape}")
    if a.shape[1] != NUM_JOINTS:
        raise ValueError(f"{source}: expected {NUM_JOINTS} joints per pose, got {a.shape[1]} (shape {a.shape})")
    if a.shape[0] == 0:
        raise ValueError(f"{source}: contains no poses (shape {a.shape})")
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{source}: expected numeric 2D poses, got dtype {a.dtype}")
    bad = ~np.isfinite(a).all(axis=(1, 2))
    if bad.any():
        raise ValueError(f"{source}: {int(bad.sum())} of {len(a)} poses contain NaN or inf (first: pose {int(np.argmax(bad))})")
    return a.astype(np.float32)


def load_2d_npz(path: str | os.PathLike) -> PoseSet:
    """A 2D-only pose set from an ``.npz`` (or ``.npy``) holding an ``(N, 17, 2)`` array.

    Keys tried: ``joints_2d``, ``poses_2d``, ``poses``, else the only array in the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: 2D pose file does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file, expected an .npz with an (N, {NUM_JOINTS}, 2) array")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise ValueError(f"{path}: not a readable .npz/.npy file ({type(exc).__name__}: {exc})") from None
    if isinstance(data, np.ndarray):
        arr = data
    else:
        with data:
            keys = list(data.files)
            key = next((k for k in ("joints_2d", "poses_2d", "poses") if k in keys), None)
            if key is None:
                if len(keys) != 1:
                    raise ValueError(f"{path}: no 'joints_2d'/'poses_2d'/'poses' array (keys: {keys})")
                key = keys[0]
            arr = data[key]
    return PoseSet(check_2d(arr, str(path)), source=str(path))


def from_packed(split_dir: str | os.PathLike, normalized_camera: bool = True) -> PoseSet:
    """Poses of a packed split (``pose prepare`` output) via ``pose.data.load_poses``.

    2D: raw camera px, or with ``normalized_camera`` ``K⁻¹·(u, v, 1)`` (unit focal length).
    3D: camera-frame mm (evaluation only). ``sequence`` = (subject, action, subaction, camera) id.
    """
    d = load_poses(split_dir)
    j2 = check_2d(d["joints_2d"], str(split_dir))
    if normalized_camera:
        K = np.asarray(d["K"], np.float64)
        j2 = np.stack([(j2[..., 0] - K[:, None, 0, 2]) / K[:, None, 0, 0],
                       (j2[..., 1] - K[:, None, 1, 2]) / K[:, None, 1, 1]], -1).astype(np.float32)
    names = [str(n) for n in d.get("action_names", [])] or list(ACTIONS_H36M)
    keys = np.stack([np.asarray(d[k], np.int64) for k in ("subject", "action", "subaction", "camera")], -1)
    _, seq = np.unique(keys, axis=0, return_inverse=True)
    action = np.asarray(d["action"], np.int64)
    # the readers store ``action`` as an index into ``action_names`` (0-based; JSON action_idx − 2)
    action = np.where((action >= 0) & (action < len(names)), action, -1) if len(names) else action
    j3 = np.asarray(d["joints_3d"], np.float32)
    has = np.asarray(d.get("has_depth", np.ones(len(j3), bool)), bool)
    return PoseSet(j2, j3 if has.all() else None, action, names, seq.reshape(-1).astype(np.int64),
                   np.asarray(d["frame"], np.int64), str(split_dir))


def load_valid_fixture(path: str | os.PathLike = VALID_FIXTURE) -> PoseSet:
    """The real H36M fixture (394 frames of S9 Posing): 3D camera mm and its 2D projection (px),
    read and checked by ``pose.data.synth.real.load_real_poses``."""
    d = load_real_poses(path)
    S = d.S.astype(np.float64)
    uv = np.einsum("nij,nkj->nki", d.K.astype(np.float64), S)
    j2 = (uv[..., :2] / uv[..., 2:]).astype(np.float32)
    n = len(S)
    return PoseSet(check_2d(j2, str(path)), S.astype(np.float32), np.full(n, ACTIONS_H36M.index("Posing")),
                   list(ACTIONS_H36M), np.zeros(n, np.int64), np.arange(n) * 5, str(path))


def clip_poses(path: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """17-joint poses of all embedded mocap clips, root-relative, in a camera-like frame (mm).

    Returns (poses (M, 17, 3) with x right, y down, z away from a camera looking along world +y,
    clip id (M,), clip names). Uses ``pose.data.synth.motion.load_clips``.
    """
    clips = load_clips(None if path is None else str(path))
    poses, ids = [], []
    for i, clip in enumerate(clips.values()):
        p = clip.points[:, :NUM_JOINTS].astype(np.float64)
        p = p - p[:, :1]
        poses.append(np.stack([p[..., 0], -p[..., 2], p[..., 1]], -1))  # world z-up → camera y-down
        ids.append(np.full(len(p), i))
    return np.concatenate(poses).astype(np.float32), np.concatenate(ids), list(clips)


def render_views(poses_3d, n: int, rng: np.random.Generator, azim_deg: float = 180.0, elev_deg: float = 20.0,
                 camera: str = "orthographic", distance_mm: tuple[float, float] = (4000.0, 6000.0),
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` random views of root-relative camera-frame poses ``(M, 17, 3)`` mm.

    Each view picks a pose, rotates it about the root by azimuth θ ~ U[−azim, azim] (vertical axis)
    then elevation φ ~ U[−elev, elev] (camera x axis). Orthographic: 2D = (x, y) mm. Perspective:
    root placed at depth U(distance_mm) on the optical axis, 2D = unit-focal projection.
    Returns (joints_2d (n, 17, 2) float32, joints_3d (n, 17, 3) root-relative mm float32, pose index (n,)).
    """
    P = np.asarray(poses_3d, np.float64)
    if P.ndim != 3 or P.shape[1:] != (NUM_JOINTS, 3) or len(P) == 0:
        raise ValueError(f"poses_3d: expected shape (M, {NUM_JOINTS}, 3) with M > 0, got {P.shape}")
    if camera not in ("orthographic", "perspective"):
        raise ValueError(f"camera: expected 'orthographic' or 'perspective', got {camera!r}")
    P = P - P[:, :1]
    src = rng.integers(0, len(P), n)
    th = rng.uniform(-1, 1, n) * math.radians(azim_deg)
    ph = rng.uniform(-1, 1, n) * math.radians(elev_deg)
    ct, st, cp, sp = np.cos(th), np.sin(th), np.cos(ph), np.sin(ph)
    o, z = np.ones(n), np.zeros(n)
    ra = np.stack([ct, z, st, z, o, z, -st, z, ct], -1).reshape(n, 3, 3)
    re = np.stack([o, z, z, z, cp, -sp, z, sp, cp], -1).reshape(n, 3, 3)
    X = np.einsum("nij,nkj->nki", re @ ra, P[src])
    if camera == "orthographic":
        x2 = X[..., :2]
    else:
        dist = rng.uniform(distance_mm[0], distance_mm[1], n)
        Z = X[..., 2] + dist[:, None]
        if (Z <= 1.0).any():
            raise ValueError("distance_mm: some joints fall behind the camera; increase the distance")
        x2 = X[..., :2] / Z[..., None]
    return x2.astype(np.float32), X.astype(np.float32), src


def to_unit_space(ps: PoseSet, norm: str = "y_rms") -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Unit-space inputs and targets of a pose set.

    Returns (x_unit (N, 17, 2), y_unit (N, 17, 3) or None, s3 (N,) mm): ``y_unit`` is the root-relative
    3D divided by its own 3D scale ``s3`` (``pose.lifting.pose_scale`` of the 3D x/y, the same measure
    as the 2D normalisation), so that under weak perspective ``y_unit[..., :2] ≈ x_unit``.
    """
    x, _ = normalize_2d(np.asarray(ps.joints_2d, np.float32), norm)
    if ps.joints_3d is None:
        return x, None, np.ones(len(x), np.float32)
    j3 = np.asarray(ps.joints_3d, np.float32)
    rel = j3 - j3[:, :1]
    s3 = pose_scale(torch.as_tensor(rel), norm).clamp_min(1e-6).numpy()
    return x, rel / s3[:, None, None], s3


def neighbour_index(ps: PoseSet, gap: int = 1) -> np.ndarray:
    """For each pose, the index of the pose ``gap`` positions later in the same sequence (sorted by
    frame), or −1 (for the temporal discriminator)."""
    n = len(ps)
    out = np.full(n, -1, np.int64)
    if ps.sequence is None or ps.frame is None:
        return out
    order = np.lexsort((ps.frame, ps.sequence))
    seq = ps.sequence[order]
    same = seq[gap:] == seq[:-gap] if n > gap else np.zeros(0, bool)
    out[order[:-gap][same]] = order[gap:][same]
    return out
