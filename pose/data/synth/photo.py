"""Rendered people placed in a larger "photo", with their true boxes: test and demo input for person
detection (``pose.detect``) and ``pose predict`` without ``--bbox``.

Each person is a pose of an embedded motion clip drawn by :func:`pose.data.synth.render.draw_body`
(the same shaded-capsule body as the training data), scaled so that its drawn outline is
``height_frac`` of the photo's height and centred at ``(cx, cy)`` (fractions of the photo's width and
height). The background is a smooth two-colour vertical gradient with fine grain, or the training
data's procedural background (clutter included) stretched to the photo.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pose.data.synth import appearance, motion, render


@dataclass(frozen=True)
class PersonSpec:
    """One person: motion ``clip`` name at time ``t`` s, outline height as a fraction of the photo's,
    centre (``cx``, ``cy``) as fractions of the photo's width/height, camera azimuth ``yaw`` (rad)."""

    clip: str = "walk"
    t: float = 0.7
    height_frac: float = 0.5
    cx: float = 0.5
    cy: float = 0.5
    yaw: float = 1.0


def render_photo(
    people: list[PersonSpec], *, width: int = 900, height: int = 600, seed: int = 0, cluttered: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``people`` (far to near in list order) into a ``height`` × ``width`` photo.

    Returns:
        (image (height, width, 3) uint8 BGR, boxes (N, 4) float64 ``x1 y1 x2 y2`` px: each person's
        drawn outline, the extent of its capsules and spheres).
    """
    rng = np.random.default_rng(seed)
    if cluttered:
        img = cv2.resize(appearance.background(rng), (width, height), interpolation=cv2.INTER_LINEAR)
    else:
        top, bottom = rng.uniform(60, 220, 3), rng.uniform(60, 220, 3)
        a = np.linspace(0.0, 1.0, height)[:, None, None]
        img = np.broadcast_to(top * (1 - a) + bottom * a, (height, width, 3)).astype(np.uint8)
        img = cv2.add(img, rng.integers(0, 8, (height, width, 3), dtype=np.uint8))
    clips = motion.load_clips()
    boxes = []
    for spec in people:
        if spec.clip not in clips:
            raise ValueError(f"clip: {spec.clip!r} is not one of {', '.join(clips)}")
        clip = clips[spec.clip]
        P = motion.sample_clip(clip, spec.t)
        target = np.array([0.0, 0.0, float(clip.points[:, 0, 2].mean())])
        R, T = render.look_at(target, spec.yaw, np.deg2rad(5.0), 4500.0)
        cam = render.Camera(R, T, np.array([1145.0, 1145.0]), np.array([500.0, 500.0]))
        look = appearance.random_look(rng)
        P_cam = cam.to_camera(P)
        E = render.extended_points(P_cam)
        uv = cam.project(E)
        r = render._POINT_R * look.girth * cam.f[0] / np.maximum(E[:, 2], 1.0)
        lo, hi = (uv - r[:, None]).min(axis=0), (uv + r[:, None]).max(axis=0)
        s = spec.height_frac * height / (hi[1] - lo[1])
        c = (lo + hi) / 2
        A = np.array([[s, 0.0, spec.cx * width - s * c[0]], [0.0, s, spec.cy * height - s * c[1]]])
        render.draw_body(img, P_cam, A, cam, look)
        boxes.append(np.concatenate([lo * s + A[:, 2], hi * s + A[:, 2]]))
    return img, np.asarray(boxes, np.float64).reshape(-1, 4)
