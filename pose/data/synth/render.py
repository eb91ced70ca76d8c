"""CPU renderer for ``pose synth``: cameras, crop boxes, and a shaded-capsule body drawn with OpenCV.

Only the 224×224 crop is rendered: camera-frame points are projected with the H36M-like
intrinsics into the (virtual) 1000×1000 frame and mapped into the crop with the crop affine
(``raw_to_crop``) before anything is drawn. Camera convention (contracts): X right, Y down,
Z forward, ``X_cam = R (X_world − T)``, T = camera centre (mm).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pose.data.synth.appearance import (
    CROP,
    HAIR,
    PATCH,
    SHIRT,
    SHOES,
    SKIN,
    TROUSERS,
    Look,
    background,
    finish,
    occlude,
)

FRAME = 1000  # the virtual raw frame (1000×1000)
_SHIFT = 4  # fixed-point bits for sub-pixel cv2 drawing
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class Camera:
    """R (3,3) world→camera rotation, T (3,) camera centre world mm, f (2,), c (2,) px."""

    R: np.ndarray
    T: np.ndarray
    f: np.ndarray
    c: np.ndarray

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.f[0], 0.0, self.c[0]], [0.0, self.f[1], self.c[1]], [0.0, 0.0, 1.0]])

    def to_camera(self, X: np.ndarray) -> np.ndarray:
        """(..., 3) world mm → (..., 3) camera mm."""
        return (X - self.T) @ self.R.T

    def project(self, Xc: np.ndarray) -> np.ndarray:
        """(..., 3) camera mm → (..., 2) raw-frame px (no distortion)."""
        return Xc[..., :2] / Xc[..., 2:3] * self.f + self.c


def look_at(target: np.ndarray, yaw: float, elevation: float, distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre at ``distance`` mm from ``target`` (world mm, z up) seen from azimuth ``yaw`` and
    ``elevation`` (radians) → (R (3,3), T (3,)), no roll."""
    d = np.array([np.cos(elevation) * np.cos(yaw), np.cos(elevation) * np.sin(yaw), np.sin(elevation)])
    T = target + distance * d
    fwd = -d
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    return np.stack([right, down, fwd]), T


def random_camera(rng: np.random.Generator, target: np.ndarray, yaw: float) -> Camera:
    """H36M-like camera: distance U(3.5, 5.5) m, elevation U(−5°, 30°), f ≈ 1145 px, c ≈ (500, 500)."""
    elev = np.deg2rad(rng.uniform(-5.0, 30.0))
    dist = rng.uniform(3500.0, 5500.0)
    R, T = look_at(target + rng.uniform(-150, 150, 3), yaw, elev, dist)
    fx = 1145.0 * rng.uniform(0.98, 1.02)
    f = np.array([fx, fx * rng.uniform(0.998, 1.002)])
    c = FRAME / 2 + rng.uniform(-15.0, 15.0, 2)
    return Camera(R, T, f, c)


#: joint extent as a fraction of the person box side, drawn per frame: the Human3.6M boxes of the
#: C2F data (side = 200·scale px) hold the 17 joints at 0.88–0.91 of the side (5th–95th percentile)
#: and centre them; a box drawn around the body's outline instead (× 1.08–1.2) held them at
#: 0.69–0.82, so the person filled less of the crop than in real data.
JOINT_FILL = (0.86, 0.93)


def square_box(uv: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Integer square person box ``x1 y1 x2 y2`` (raw px) around the 17 joints uv (17,2), as the
    Human3.6M boxes are drawn: side = longer joint extent / U(:data:`JOINT_FILL`), centred on the
    joints' extent ± 2 % of the side (the outline of head, hands and feet may cross its border)."""
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    side = max(float((hi - lo).max()) / rng.uniform(*JOINT_FILL), 32.0)
    ctr = (lo + hi) / 2 + rng.uniform(-0.02, 0.02, 2) * side
    x1, y1 = np.round(ctr - side / 2).astype(np.int64)
    s = int(round(side))
    return np.array([x1, y1, x1 + s, y1 + s], dtype=np.int64)


def raw_to_crop(bbox: np.ndarray, out_res: int = CROP) -> np.ndarray:
    """2×3 affine raw px → crop px for box ``x1 y1 x2 y2``: the same map as
    ``pose.camera.crop_affine(center=((x1+x2)/2, (y1+y2)/2), size=x2−x1, rot_deg=0, out_res)``
    (pixel-centre convention: box edge → −0.5, box centre → (out_res−1)/2)."""
    x1, y1, x2, y2 = (float(v) for v in bbox)
    s = out_res / (x2 - x1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    h = (out_res - 1) / 2
    return np.array([[s, 0.0, h - s * cx], [0.0, s, h - s * cy]])


# ---------------------------------------------------------------------------------------------
# body model: capsules and spheres on the 21-point track (see motion.py) plus derived points
# ---------------------------------------------------------------------------------------------
#: capsules (a, b, radius mm, part); point indices into ``extended_points``; the first
#: :data:`_N_LIMB` are limbs (``Look.girth``), the rest torso and neck (``Look.torso``)
_CAPSULES: tuple[tuple[int, int, float, int], ...] = (
    (1, 2, 75.0, TROUSERS), (2, 3, 55.0, TROUSERS), (4, 5, 75.0, TROUSERS), (5, 6, 55.0, TROUSERS),
    (3, 18, 42.0, SHOES), (6, 20, 42.0, SHOES),
    (11, 12, 48.0, SHIRT), (12, 13, 38.0, SKIN), (14, 15, 48.0, SHIRT), (15, 16, 38.0, SKIN),
    (1, 4, 95.0, TROUSERS), (0, 7, 125.0, SHIRT), (7, 8, 135.0, SHIRT), (11, 14, 70.0, SHIRT),
    (8, 21, 50.0, SKIN),  # neck → head centre
)
_N_LIMB = 10
#: spheres (point, radius mm, part): head, hair cap, nose, hands, chest patch
_SPHERES: tuple[tuple[int, float, int], ...] = (
    (21, 105.0, SKIN), (22, 92.0, HAIR), (9, 28.0, SKIN), (23, 45.0, SKIN), (24, 45.0, SKIN),
    (25, 45.0, PATCH),
)
_CAP_A = np.array([c[0] for c in _CAPSULES])
_CAP_B = np.array([c[1] for c in _CAPSULES])
_CAP_R = np.array([c[2] for c in _CAPSULES])
_SPH_P = np.array([c[0] for c in _SPHERES])
_SPH_R = np.array([c[1] for c in _SPHERES])
#: largest drawn radius (mm, before girth) around each of the 26 extended points (the outline
#: boxes of ``photo``)
_POINT_R = np.zeros(26)
for _a, _b, _r, _ in _CAPSULES:
    _POINT_R[_a], _POINT_R[_b] = max(_POINT_R[_a], _r), max(_POINT_R[_b], _r)
for _p, _r, _ in _SPHERES:
    _POINT_R[_p] = max(_POINT_R[_p], _r * 1.1)


def extended_points(P: np.ndarray) -> np.ndarray:
    """(21,3) → (26,3): adds 21 head centre, 22 hair-cap centre, 23/24 left/right hand, 25 chest
    patch (a front-of-shirt mark, so front and back differ). Works in any frame (mm)."""
    head = P[10] + 0.55 * (P[9] - P[10])
    hair = head + 0.3 * (P[10] - head) - 0.25 * (P[9] - head)
    hands = P[[13, 16]] + 0.3 * (P[[13, 16]] - P[[12, 15]])
    up = P[8] - P[0]
    right = P[1] - P[4]
    fwd = np.cross(up, right)
    fwd /= max(float(np.linalg.norm(fwd)), 1e-9)
    patch = P[7] + 0.6 * (P[8] - P[7]) + 110.0 * fwd
    return np.concatenate([P, head[None], hair[None], hands, patch[None]])


def _girths(look: Look) -> tuple[np.ndarray, np.ndarray]:
    """Thickness factors (capsules (C,), spheres (S,)) of ``look``; the classic look scales every
    part by ``girth`` and the head by ``(1 + girth) / 2``."""
    g = look.girth
    cap = np.full(len(_CAPSULES), g)
    sph = np.full(len(_SPHERES), g)
    if look.torso is not None:
        cap[_N_LIMB:] = look.torso
        sph[5] = look.torso
    return cap, sph


def _texture(img: np.ndarray, a: np.ndarray, b: np.ndarray, r: float, texture: tuple) -> None:
    """Stripes across, or dots along, the capsule a→b (crop px) of radius r px, in place."""
    kind, col = texture
    d = b - a
    length = float(np.hypot(*d))
    if length < 1e-6 or r < 2.0:
        return
    n = np.array([-d[1], d[0]]) / length
    period = max(2.2 * r if kind == "dots" else 1.2 * r, 3.0)
    for t in np.arange(period / 2, length, period) / length:
        c = a + t * d
        if kind == "dots":
            cv2.circle(img, np.round(c * _ONE).astype(int).tolist(), max(int(round(0.45 * r * _ONE)), 1), col, -1,
                       cv2.LINE_AA, _SHIFT)
        else:
            p, q = np.round((c - 0.85 * r * n) * _ONE).astype(int), np.round((c + 0.85 * r * n) * _ONE).astype(int)
            cv2.line(img, p.tolist(), q.tolist(), col, max(int(round(0.3 * r)), 1), cv2.LINE_AA, _SHIFT)


def draw_body(img: np.ndarray, P_cam: np.ndarray, A: np.ndarray, cam: Camera, look: Look) -> None:
    """Draw the body into ``img`` (crop, uint8 H×W×3 BGR) in place, far-to-near (painter's order
    by the mean camera depth of each primitive), each primitive as ``look.layers`` (outermost first)
    shifted toward ``look.light``, then its texture (shirt and trousers).

    P_cam (21,3) camera mm; A (2,3) raw px → crop px affine.
    """
    E = extended_points(P_cam)
    uv = cam.project(E) @ A[:, :2].T + A[:, 2]  # (26,2) crop px
    pxmm = cam.f[0] * A[0, 0] / np.maximum(E[:, 2], 1.0)  # crop px per mm at each point's depth
    lay = look.layers
    nl = len(lay)
    gc, gs = _girths(look)
    # capsules
    za, zb = E[_CAP_A, 2], E[_CAP_B, 2]
    cr = _CAP_R * gc * 0.5 * (pxmm[_CAP_A] + pxmm[_CAP_B])  # (C,) px
    d = uv[_CAP_B] - uv[_CAP_A]
    n = np.stack([-d[:, 1], d[:, 0]], 1)
    nn = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.where(nn > 1e-6, n / np.maximum(nn, 1e-6), look.light)
    n *= np.sign(n @ look.light + 1e-12)[:, None]
    off = (lay[None, :, 1, None] * cr[:, None, None]) * n[:, None, :]  # (C,L,2)
    pa = np.round((uv[_CAP_A][:, None] + off) * _ONE).astype(np.int64).tolist()
    pb = np.round((uv[_CAP_B][:, None] + off) * _ONE).astype(np.int64).tolist()
    th = np.maximum(np.round(2 * lay[None, :, 0] * cr[:, None]), 1).astype(np.int64).tolist()
    # spheres
    sr = _SPH_R * gs * pxmm[_SPH_P]
    if look.head is None:
        sr[0] = _SPH_R[0] * (0.5 + 0.5 * look.girth) * pxmm[_SPH_P[0]]
    else:
        sr[:3] = _SPH_R[:3] * look.head * pxmm[_SPH_P[:3]]  # head, hair cap, nose
    sc = uv[_SPH_P][:, None] + (lay[None, :, 1, None] * sr[:, None, None]) * look.light
    sc = np.round(sc * _ONE).astype(np.int64).tolist()
    srad = np.maximum(np.round(lay[None, :, 0] * sr[:, None] * _ONE), 1).astype(np.int64).tolist()
    # torso quad (flat, slightly darker)
    quad = np.round(uv[[1, 4, 11, 14]] * _ONE).astype(np.int32)
    depth = np.concatenate([0.5 * (za + zb), E[_SPH_P, 2], [E[[1, 4, 11, 14], 2].mean() + 60.0]])
    nc = len(_CAPSULES)
    for i in np.argsort(-depth, kind="stable").tolist():
        if i < nc:
            part = _CAPSULES[i][3]
            cols = look.shades[part]
            for k in range(nl):
                cv2.line(img, pa[i][k], pb[i][k], cols[k], th[i][k], cv2.LINE_AA, _SHIFT)
            if look.texture is not None and part in (SHIRT, TROUSERS):
                _texture(img, uv[_CAP_A[i]], uv[_CAP_B[i]], float(cr[i]), look.texture)
        elif i < nc + len(_SPHERES):
            j = i - nc
            cols = look.shades[_SPHERES[j][2]]
            for k in range(nl):
                cv2.circle(img, sc[j][k], srad[j][k], cols[k], -1, cv2.LINE_AA, _SHIFT)
        else:
            cv2.fillConvexPoly(img, quad, look.shades[SHIRT][min(1, nl - 1)], cv2.LINE_AA, _SHIFT)


def render_frame(rng: np.random.Generator, P_world: np.ndarray, cam: Camera, look: Look,
                 bbox: np.ndarray | None = None, family: str = "classic"
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Render one crop: a ``family`` background (``appearance.background``), the body, occluders
    in front of it (``varied`` only) and the family's finish (``appearance.finish``).

    P_world (21,3) world mm → (image (224,224,3) uint8 BGR, bbox (4,) int raw px,
    A (2,3) raw→crop affine, P_cam (21,3) camera mm). ``bbox``: a given square box ``x1 y1 x2 y2``
    (raw px, e.g. a real dataset's person box) instead of one drawn around the joints (``square_box``).
    """
    P_cam = cam.to_camera(P_world)
    if bbox is None:
        bbox = square_box(cam.project(P_cam[:17]), rng)
    A = raw_to_crop(bbox)
    img = background(rng, family)
    draw_body(img, P_cam, A, cam, look)
    if family == "varied":
        occlude(img, rng, cam.project(P_cam[:17]) @ A[:, :2].T + A[:, 2])
    return finish(img, rng, family), bbox, A, P_cam
