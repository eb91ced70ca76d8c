"""Drawing helpers shared by the whole project (matplotlib Agg + OpenCV, no display needed).

Images are ``uint8`` RGB arrays of shape (H, W, 3) everywhere in this module; :func:`save_png`
and :func:`read_image` convert to/from OpenCV's BGR on disk. Joints are the 17 H36M joints of
:mod:`pose.skeleton`; 2D joints are pixel coordinates (pixel-centre convention, x right, y down),
3D joints are camera-frame millimetres (X right, Y down, Z forward).

Colour code (the same in 2D and 3D): **left** limbs blue, **right** limbs red/orange, the
spine/head green. "Left" is the person's left (``skeleton.LEFT_17``), so on a person facing the
camera the blue limbs appear on the right-hand side of the picture.

Main entry points:
- :func:`draw_skeleton_2d` — skeleton on an image (OpenCV, anti-aliased, sub-pixel).
- :func:`render_3d_views` — one or more 3D skeletons seen from given azimuths (one row of panels).
- :func:`pose_panel` — the picture written by ``pose predict``: image with 2D skeleton beside
  the 3D skeleton from several azimuths (default 0°, 15°, 165°, as in the chen-cvpr2019 demo).
- :func:`heatmap_grid` — every joint's 2D heatmap (on the input crop) and depth profile.
- :func:`plot_curves` — training curves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from pose.skeleton import BONES_17, JOINT_NAMES_17, LEFT_17, RIGHT_17  # noqa: E402

#: RGB colours per body side.
LEFT_COLOR: tuple[int, int, int] = (40, 110, 255)
RIGHT_COLOR: tuple[int, int, int] = (255, 70, 40)
CENTER_COLOR: tuple[int, int, int] = (40, 200, 70)
GT_COLOR: tuple[int, int, int] = (30, 30, 30)

#: Azimuths (degrees) of the chen-cvpr2019 demo views.
DEMO_AZIMUTHS: tuple[float, ...] = (0.0, 15.0, 165.0)


def joint_side(j: int) -> str:
    """``"left"``, ``"right"`` or ``"center"`` for a 17-joint index."""
    if j in LEFT_17:
        return "left"
    if j in RIGHT_17:
        return "right"
    return "center"


_SIDE_COLOR = {"left": LEFT_COLOR, "right": RIGHT_COLOR, "center": CENTER_COLOR}


def bone_color(parent: int, child: int) -> tuple[int, int, int]:
    """RGB colour of a bone: the side of its child joint (hip and shoulder bones take the limb's side)."""
    return _SIDE_COLOR[joint_side(child)]


def joint_color(j: int) -> tuple[int, int, int]:
    """RGB colour of a joint marker."""
    return _SIDE_COLOR[joint_side(j)]


def _check_joints(joints: np.ndarray, dim: int, name: str) -> np.ndarray:
    arr = np.asarray(joints, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != len(JOINT_NAMES_17) or arr.shape[1] < dim:
        raise ValueError(f"{name}: expected shape (17, {dim}), got {arr.shape}")
    return arr[:, :dim]


def _check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4) or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"{name}: expected an (H, W, 3) RGB image, got shape {img.shape}")
    img = img[:, :, :3]
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


# ----------------------------------------------------------------------------------------------
# image I/O
# ----------------------------------------------------------------------------------------------
def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3); ``ValueError`` naming the path if unreadable."""
    path = os.fspath(path)
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"image {path!r}: cannot be read (missing, not an image, or corrupt)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG (creates the parent directory)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img = _check_image(image)
    if not cv2.imwrite(path, cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
        raise ValueError(f"path {path!r}: could not write PNG")


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a matplotlib figure to an RGB uint8 array (H, W, 3) and close it."""
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    out = np.ascontiguousarray(rgba[:, :, :3])
    plt.close(fig)
    return out


def resize_to_height(image: np.ndarray, height: int) -> np.ndarray:
    """Resize an RGB image to ``height`` rows keeping the aspect ratio (width ≥ 1)."""
    img = _check_image(image)
    h, w = img.shape[:2]
    new_w = max(1, int(round(w * height / h)))
    if (h, w) == (height, new_w):
        return img.copy()
    interp = cv2.INTER_AREA if height < h else cv2.INTER_LINEAR
    return cv2.resize(img, (new_w, height), interpolation=interp)


def vstack_panels(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Stack RGB rows vertically, padding narrower rows with white on the right."""
    if not rows:
        raise ValueError("rows: need at least one row")
    width = max(r.shape[1] for r in rows)
    out = []
    for r in rows:
        r = _check_image(r)
        if r.shape[1] < width:
            r = np.concatenate([r, np.full((r.shape[0], width - r.shape[1], 3), 255, np.uint8)], axis=1)
        out.append(r)
    return np.concatenate(out, axis=0)


# ----------------------------------------------------------------------------------------------
# 2D
# ----------------------------------------------------------------------------------------------
def draw_skeleton_2d(
    image: np.ndarray,
    joints_2d: np.ndarray,
    *,
    color: tuple[int, int, int] | None = None,
    thickness: int | None = None,
    radius: int | None = None,
    confidence: np.ndarray | None = None,
    min_confidence: float | None = None,
    scale: float = 1.0,
) -> np.ndarray:
    """Draw the 17-joint skeleton on a copy of ``image``.

    Args:
        image: (H, W, 3) uint8 RGB.
        joints_2d: (17, 2) pixel coordinates in ``image`` (pixel-centre convention); multiplied by
            ``scale`` first (use it when drawing on a resized image).
        color: one RGB colour for everything (e.g. ground truth); default: left/right/centre colours.
        thickness, radius: line width / joint radius in px (default: from the image size).
        confidence: optional (17,) per-joint scores; with ``min_confidence``, bones touching a joint
            below it are drawn thin and grey.
    Returns:
        (H, W, 3) uint8 RGB copy with the skeleton drawn.
    """
    img = _check_image(image).copy()
    pts = _check_joints(joints_2d, 2, "joints_2d") * float(scale)
    h, w = img.shape[:2]
    size = max(h, w)
    thickness = thickness or max(1, int(round(size / 150)))
    radius = radius or max(2, int(round(size / 110)))
    low = np.zeros(len(pts), bool)
    if confidence is not None and min_confidence is not None:
        low = np.asarray(confidence, dtype=np.float64).reshape(-1)[: len(pts)] < min_confidence
    shift = 4  # sub-pixel drawing: coordinates in 1/16 px
    mul = 1 << shift
    finite = np.isfinite(pts).all(axis=1)

    def fix(p: np.ndarray) -> tuple[int, int]:
        return int(round(p[0] * mul)), int(round(p[1] * mul))

    for p, c in BONES_17:
        if not (finite[p] and finite[c]):
            continue
        col = color or bone_color(p, c)
        t = thickness
        if low[p] or low[c]:
            col, t = (150, 150, 150), max(1, thickness // 2)
        cv2.line(img, fix(pts[p]), fix(pts[c]), col, t, cv2.LINE_AA, shift)
    for j, q in enumerate(pts):
        if not finite[j]:
            continue
        col = color or joint_color(j)
        cv2.circle(img, fix(q), radius * mul, col, -1, cv2.LINE_AA, shift)
        cv2.circle(img, fix(q), radius * mul, (255, 255, 255), 1, cv2.LINE_AA, shift)
    return img


def put_text(image: np.ndarray, text: str, org: tuple[int, int] = (4, 4), scale: float | None = None) -> np.ndarray:
    """Write ``text`` (white on a dark box) at the top-left corner ``org`` of a copy of ``image``."""
    img = _check_image(image).copy()
    scale = scale or max(0.35, img.shape[0] / 900)
    th = max(1, int(round(scale * 1.5)))
    (tw, tht), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, th)
    x, y = org
    cv2.rectangle(img, (x, y), (x + tw + 6, y + tht + base + 6), (0, 0, 0), -1)
    cv2.putText(img, text, (x + 3, y + tht + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), th, cv2.LINE_AA)
    return img


def draw_bbox(image: np.ndarray, bbox: Sequence[float], color=(255, 220, 0), thickness: int = 1) -> np.ndarray:
    """Draw an ``x1 y1 x2 y2`` box (pixel coordinates) on a copy of ``image``."""
    img = _check_image(image).copy()
    x1, y1, x2, y2 = (int(round(float(v))) for v in bbox)
    cv2.rectangle(img, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
    return img


# ----------------------------------------------------------------------------------------------
# 3D
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pose3D:
    """One skeleton to draw in a 3D view.

    joints: (17, 3) camera-frame mm (X right, Y down, Z forward); root-relative or absolute.
    color: one RGB colour, or ``None`` for left/right/centre colours.
    linestyle: ``"-"`` solid (prediction) or anything else for dashed (``"--"``, ground truth).
    label: legend text (optional).
    """

    joints: np.ndarray
    color: tuple[int, int, int] | None = None
    linestyle: str = "-"
    label: str | None = None
    linewidth: float = 2.0


def view_rotation(azimuth: float, elevation: float = 0.0) -> np.ndarray:
    """(3, 3) rotation applied to camera-frame points for a view at ``azimuth``/``elevation`` degrees.

    The skeleton is turned by ``azimuth`` about the vertical (Y) axis through its root
    (x' = x cos θ + z sin θ, z' = −x sin θ + z cos θ, the chen-cvpr2019 convention) and then
    tilted by ``elevation`` about the horizontal X axis (positive = seen from above); the result is
    looked at from the camera (screen x = x', screen y = y'). Azimuth 0, elevation 0 is exactly the
    input image's view.
    """
    t, e = np.deg2rad(float(azimuth)), np.deg2rad(float(elevation))
    ry = np.array([[np.cos(t), 0.0, np.sin(t)], [0.0, 1.0, 0.0], [-np.sin(t), 0.0, np.cos(t)]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(e), -np.sin(e)], [0.0, np.sin(e), np.cos(e)]])
    return rx @ ry


def _pose_list(poses) -> list[Pose3D]:
    if isinstance(poses, Pose3D):
        return [poses]
    if isinstance(poses, np.ndarray) or not isinstance(poses, Sequence) or (
        len(poses) and not isinstance(poses[0], Pose3D)
    ):
        return [Pose3D(np.asarray(poses, dtype=np.float64))]
    if not poses:
        raise ValueError("poses: need at least one pose")
    return list(poses)


def _view_frame(poses: list[Pose3D]) -> tuple[np.ndarray, float]:
    """(centre (3,), radius mm) of the views: the first pose's root horizontally, the middle of all
    poses' vertical extent vertically; radius = farthest joint from the centre × 1.1 (≥ 300 mm)."""
    root = _check_joints(poses[0].joints, 3, "poses[0].joints")[0]
    pts = np.concatenate([_check_joints(p.joints, 3, "joints") for p in poses])
    pts = pts[np.isfinite(pts).all(axis=1)]
    centre = root.copy()
    if not np.isfinite(centre).all():
        centre = pts.mean(axis=0) if pts.size else np.zeros(3)
    if pts.size:
        centre[1] = 0.5 * (pts[:, 1].min() + pts[:, 1].max())
        radius = max(float(np.linalg.norm(pts - centre, axis=1).max()) * 1.1, 300.0)
    else:
        radius = 1000.0
    return centre, radius


def _render_view_cv2(poses: list[Pose3D], azimuth: float, elevation: float, size: int, centre3: np.ndarray,
                     radius: float, title: str) -> np.ndarray:
    """One ``size``×``size`` RGB panel: floor grid, skeletons far-to-near, title (orthographic)."""
    img = np.full((size, size, 3), 250, np.uint8)
    R = view_rotation(azimuth, elevation)
    root = np.asarray(centre3, dtype=np.float64)
    scale = 0.47 * size / radius  # px per mm
    centre = np.array([size / 2.0, size / 2.0])
    mul = 16

    def to_px(p3: np.ndarray) -> np.ndarray:
        q = (p3 - root) @ R.T
        return q[..., :2] * scale + centre, q[..., 2]

    # floor: a square grid at the lowest joint's height (largest Y), centred under the root
    allj = np.concatenate([_check_joints(p.joints, 3, "joints") for p in poses])
    allj = allj[np.isfinite(allj).all(axis=1)]
    floor_y = float(allj[:, 1].max()) if allj.size else root[1]
    half = 0.75 * radius
    ticks = np.linspace(-half, half, 9)
    for k, t in enumerate(ticks):
        for a, b in (((t, -half), (t, half)), ((-half, t), (half, t))):
            seg = np.array([[root[0] + a[0], floor_y, root[2] + a[1]], [root[0] + b[0], floor_y, root[2] + b[1]]])
            uv, _ = to_px(seg)
            col = (200, 200, 200) if k not in (0, len(ticks) - 1) else (170, 170, 170)
            cv2.line(img, tuple(np.round(uv[0] * mul).astype(int)), tuple(np.round(uv[1] * mul).astype(int)),
                     col, 1, cv2.LINE_AA, 4)
    # camera direction marker: where the camera (−Z from the root) appears
    cam_uv, _ = to_px(root[None] + np.array([[0.0, floor_y - root[1], -half]]))
    cv2.circle(img, tuple(np.round(cam_uv[0] * mul).astype(int)), 4 * mul, (120, 120, 120), -1, cv2.LINE_AA, 4)
    thick = max(2, size // 130)
    segs = []  # (depth, p0, p1, colour, thickness, dashed)
    for pose in poses:
        j = _check_joints(pose.joints, 3, "pose.joints")
        uv, z = to_px(j)
        for a, b in BONES_17:
            if not (np.isfinite(uv[a]).all() and np.isfinite(uv[b]).all()):
                continue
            col = pose.color or bone_color(a, b)
            segs.append((0.5 * (z[a] + z[b]), uv[a], uv[b], col, max(1, int(round(thick * pose.linewidth / 2))),
                         pose.linestyle != "-"))
    for _, p0, p1, col, t, dashed in sorted(segs, key=lambda s: -s[0]):  # far first
        if dashed:
            n = max(2, int(np.linalg.norm(p1 - p0) / (3 * t + 4)))
            for k in range(0, n, 2):
                q0 = p0 + (p1 - p0) * k / n
                q1 = p0 + (p1 - p0) * min(k + 1, n) / n
                cv2.line(img, tuple(np.round(q0 * mul).astype(int)), tuple(np.round(q1 * mul).astype(int)),
                         col, t, cv2.LINE_AA, 4)
        else:
            cv2.line(img, tuple(np.round(p0 * mul).astype(int)), tuple(np.round(p1 * mul).astype(int)),
                     col, t, cv2.LINE_AA, 4)
    for pose in poses:
        j = _check_joints(pose.joints, 3, "pose.joints")
        uv, _ = to_px(j)
        for k in range(len(uv)):
            if np.isfinite(uv[k]).all():
                cv2.circle(img, tuple(np.round(uv[k] * mul).astype(int)), max(2, thick) * mul,
                           pose.color or joint_color(k), -1, cv2.LINE_AA, 4)
    fs = max(0.4, size / 800)
    cv2.putText(img, title, (6, int(22 * fs / 0.5)), cv2.FONT_HERSHEY_SIMPLEX, fs, (40, 40, 40), 1, cv2.LINE_AA)
    cv2.rectangle(img, (0, 0), (size - 1, size - 1), (210, 210, 210), 1)
    return img


def render_3d_views(
    poses: Sequence[Pose3D] | np.ndarray,
    azimuths: Sequence[float] = DEMO_AZIMUTHS,
    size: int = 400,
    elevation: float = 10.0,
    titles: Sequence[str] | None = None,
) -> np.ndarray:
    """Render skeletons from several azimuths into one RGB row of ``size``×``size`` panels
    (orthographic, with a floor grid; a grey dot marks the camera's side).

    Args:
        poses: a (17, 3) array (camera mm) or a list of :class:`Pose3D` (drawn on top of each other,
            all translated by the first pose's root).
        azimuths: view azimuths in degrees (0 = the camera's view, see :func:`view_rotation`).
        size: panel side in pixels.
        elevation: degrees, positive = seen slightly from above.
    Returns:
        (size, len(azimuths)·size, 3) uint8 RGB.
    """
    plist = _pose_list(poses)
    if not azimuths:
        raise ValueError("azimuths: need at least one view")
    if int(size) < 16:
        raise ValueError(f"size: expected >= 16 px, got {size}")
    size = int(size)
    centre3, radius = _view_frame(plist)
    names = list(titles) if titles else [f"{az:g} deg" for az in azimuths]
    return np.concatenate([_render_view_cv2(plist, az, elevation, size, centre3, radius, names[i])
                           for i, az in enumerate(azimuths)], axis=1)


def pose_panel(
    image: np.ndarray,
    joints_2d: np.ndarray,
    joints_3d: np.ndarray | None,
    *,
    azimuths: Sequence[float] = DEMO_AZIMUTHS,
    height: int = 400,
    title: str | None = None,
    confidence: np.ndarray | None = None,
    bbox: Sequence[float] | None = None,
) -> np.ndarray:
    """The ``pose predict`` picture: the image with its 2D skeleton beside the 3D views.

    Args:
        image: (H, W, 3) uint8 RGB, the original image.
        joints_2d: (17, 2) px in ``image``.
        joints_3d: (17, 3) mm (root-relative or camera frame) or ``None`` (2D panel only).
        azimuths: 3D view azimuths in degrees.
        height: output height in px; the image panel is resized to it (aspect kept).
        title: text written at the top-left of the image panel.
        bbox: optional ``x1 y1 x2 y2`` box drawn on the image.
    Returns:
        uint8 RGB of shape (height, round(W·height/H) + len(azimuths)·height, 3)
        (see :func:`pose_panel_size`).
    """
    img = _check_image(image)
    s = height / img.shape[0]
    small = resize_to_height(img, height)
    if bbox is not None:
        small = draw_bbox(small, [float(v) * s for v in bbox])
    small = draw_skeleton_2d(small, joints_2d, scale=s, confidence=confidence)
    if title:
        small = put_text(small, title)
    if joints_3d is None:
        return small
    views = render_3d_views(np.asarray(joints_3d), azimuths=azimuths, size=height)
    return np.concatenate([small, views], axis=1)


def pose_panel_size(image_hw: tuple[int, int], n_views: int = 3, height: int = 400) -> tuple[int, int]:
    """(H, W) of :func:`pose_panel`'s output for an image of size ``image_hw``."""
    h, w = image_hw
    return height, max(1, int(round(w * height / h))) + n_views * height


# ----------------------------------------------------------------------------------------------
# heatmaps
# ----------------------------------------------------------------------------------------------
def _heatmap_tile(base: np.ndarray, h: np.ndarray, label: str, marker: tuple[int, int] | None,
                  color: tuple[int, int, int], fs: float) -> np.ndarray:
    """One joint's 2D heatmap ``h`` (H, W), min-max normalised, in the JET colour map over ``base`` (the
    crop resized to the tile), its decoded joint ``marker`` (tile px) crossed and ``label`` on top."""
    tile = base.shape[0]
    rng = float(h.max() - h.min())
    hn = (h - h.min()) / rng if rng > 0 else np.zeros_like(h)
    # heatmap cell k is centred at crop px stride*k + (stride-1)/2: resize maps edges to edges
    col = cv2.applyColorMap(cv2.resize((hn * 255).astype(np.uint8), (tile, tile), interpolation=cv2.INTER_LINEAR),
                            cv2.COLORMAP_JET)
    t_img = cv2.addWeighted(base, 0.45, cv2.cvtColor(col, cv2.COLOR_BGR2RGB), 0.55, 0.0)
    if marker is not None:
        cv2.drawMarker(t_img, marker, (255, 255, 255), cv2.MARKER_CROSS, max(8, tile // 12), 2, cv2.LINE_AA)
    cv2.rectangle(t_img, (0, 0), (tile - 1, int(16 * fs / 0.33)), (0, 0, 0), -1)
    cv2.putText(t_img, label, (3, int(12 * fs / 0.33)), cv2.FONT_HERSHEY_SIMPLEX, fs, color, 1, cv2.LINE_AA)
    cv2.rectangle(t_img, (0, 0), (tile - 1, tile - 1), (255, 255, 255), 1)
    return t_img


def _depth_profile(out: np.ndarray, vol: np.ndarray, x0: int, y0: int, tile: int, strip: int,
                   color: tuple[int, int, int], fs: float, depth_centers_mm: np.ndarray | None) -> None:
    """Draw into ``out`` the depth profile of one joint's volume (D, H, W) — its maximum over (H, W)
    per bin, near at the left — in the strip at (``x0``, ``y0``), its peak bin marked (and its depth)."""
    prof = vol.reshape(vol.shape[0], -1).max(axis=1)
    D = len(prof)
    pr = float(prof.max() - prof.min())
    pn = (prof - prof.min()) / pr if pr > 0 else np.zeros_like(prof)
    xs = x0 + 6 + (np.arange(D) + 0.5) / D * (tile - 12)
    ys = y0 + strip - 4 - pn * (strip - 8)
    pts = np.round(np.stack([xs, ys], 1) * 16).astype(np.int32)
    cv2.polylines(out, [pts], False, color, 1, cv2.LINE_AA, 4)
    k = int(np.argmax(prof))
    cv2.line(out, (int(xs[k]), y0 + 2), (int(xs[k]), y0 + strip - 2), (120, 120, 120), 1)
    if depth_centers_mm is not None:
        zc = float(np.asarray(depth_centers_mm, dtype=np.float64)[k])
        cv2.putText(out, f"z {zc:+.0f}mm", (x0 + 4, y0 + int(12 * fs / 0.33)), cv2.FONT_HERSHEY_SIMPLEX, fs * 0.9,
                    (60, 60, 60), 1, cv2.LINE_AA)


def heatmap_grid(
    crop: np.ndarray,
    hm2d: np.ndarray,
    volume: np.ndarray | None = None,
    *,
    joints_crop: np.ndarray | None = None,
    depth_centers_mm: np.ndarray | None = None,
    names: Sequence[str] = JOINT_NAMES_17,
    cols: int = 6,
    tile: int = 160,
    title: str | None = None,
) -> np.ndarray:
    """Grid of every joint's 2D heatmap over the input crop, with its depth profile underneath.

    Args:
        crop: (S, S, 3) uint8 RGB, the network input crop.
        hm2d: (J, H, W) 2D heatmaps (stage 1), H = S / stride; each is min-max normalised and shown
            in the JET colour map over the crop (red = high), with its peak value in the label.
        volume: optional (J, D, H, W) final 3D heatmaps: the strip under each tile is the joint's
            depth profile ``volume[j].max over (H, W)`` per depth bin (near at the left, far at the
            right), its peak bin marked.
        joints_crop: optional (J, 2) decoded joints in crop px, marked with a white cross.
        depth_centers_mm: optional (D,) bin centres (root-relative mm), the peak's value is printed.
        tile: side of each heatmap tile in px.
    Returns:
        uint8 RGB image: ``ceil((J + 1) / cols)`` rows of tiles (the last tile is the crop with the
        decoded skeleton), width ``cols · tile``, each tile ``tile`` (+ a ``tile // 4`` strip with volume)
        tall, + a 24 px title bar when ``title`` is given.
    """
    crop = _check_image(crop, "crop")
    hm = np.asarray(hm2d, dtype=np.float32)
    if hm.ndim != 3:
        raise ValueError(f"hm2d: expected (J, H, W), got shape {hm.shape}")
    J = hm.shape[0]
    vol = None
    if volume is not None:
        vol = np.asarray(volume, dtype=np.float32)
        if vol.ndim != 4 or vol.shape[0] != J:
            raise ValueError(f"volume: expected (J={J}, D, H, W), got shape {vol.shape}")
    S = crop.shape[0]
    tile = int(tile)
    strip = tile // 4 if vol is not None else 0
    cell_h = tile + strip
    rows = int(np.ceil((J + 1) / cols))
    top = 24 if title else 0
    out = np.full((top + rows * cell_h, cols * tile, 3), 255, np.uint8)
    base = cv2.resize(crop, (tile, tile), interpolation=cv2.INTER_LINEAR)
    s = tile / S
    jc = None if joints_crop is None else np.asarray(joints_crop, dtype=np.float64)
    fs = max(0.33, tile / 420)
    for j in range(J):
        r, c = divmod(j, cols)
        y0, x0 = top + r * cell_h, c * tile
        marker = None
        if jc is not None and np.isfinite(jc[j]).all():
            marker = (int(round((jc[j, 0] + 0.5) * s - 0.5)), int(round((jc[j, 1] + 0.5) * s - 0.5)))
        name = names[j] if j < len(names) else str(j)
        color = joint_color(j) if J == 17 else None
        out[y0:y0 + tile, x0:x0 + tile] = _heatmap_tile(base, hm[j], f"{j} {name} {float(hm[j].max()):.2f}", marker,
                                                        color or (255, 255, 255), fs)
        if vol is not None:
            _depth_profile(out, vol[j], x0, y0 + tile, tile, strip, color or (0, 0, 0), fs, depth_centers_mm)
    r, c = divmod(J, cols)
    y0, x0 = top + r * cell_h, c * tile
    last = base
    if jc is not None and J == 17:
        last = draw_skeleton_2d(base, (jc + 0.5) * s - 0.5, thickness=2, radius=3)
    last = put_text(last, "input crop", scale=fs)
    out[y0:y0 + tile, x0:x0 + tile] = last
    if title:
        cv2.putText(out, title, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return out


# ----------------------------------------------------------------------------------------------
# curves and metrics
# ----------------------------------------------------------------------------------------------
def plot_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str = "step",
    ylabel: str = "",
    title: str | None = None,
    logy: bool = False,
    size: tuple[float, float] = (6.0, 4.0),
    dpi: int = 100,
    path: str | os.PathLike | None = None,
) -> np.ndarray:
    """Line plot of named (x, y) series (training curves, metric vs. stage); optional PNG ``path``."""
    if not curves:
        raise ValueError("curves: need at least one series")
    fig = plt.figure(figsize=size, dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    for name, (x, y) in curves.items():
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.shape != y.shape:
            raise ValueError(f"curves[{name!r}]: x and y shapes differ: {x.shape} vs {y.shape}")
        ax.plot(x, y, marker="o" if len(x) < 30 else None, markersize=3, label=name)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    img = figure_to_array(fig)
    if path is not None:
        save_png(path, img)
    return img
