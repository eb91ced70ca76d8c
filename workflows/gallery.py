"""The evaluation's gallery: the best and the worst test frames of a stage, drawn for the HTML report.

A frame's picture is the network's input crop with the ground-truth skeleton (white) and the
predicted one (left blue / right red) drawn over it, then the two 3D skeletons seen from 0° and 90°
(prediction coloured, ground truth grey), and a title with the frame's MPJPE (mm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pose import viz
from pose.camera import apply_affine, invert_affine, project

#: frames per end of the gallery (the best ``GALLERY_FRAMES`` and the worst ``GALLERY_FRAMES``)
GALLERY_FRAMES = 4


@dataclass(frozen=True)
class GalleryFrame:
    """One drawn frame: ``picture`` (H, W, 3) uint8 RGB, ``index`` its row in the evaluated split,
    ``error_mm`` its MPJPE (mm), ``action`` its action name, ``kind`` "best" or "worst"."""

    picture: np.ndarray
    index: int
    error_mm: float
    action: str
    kind: str


def pick_frames(errors: np.ndarray, k: int = GALLERY_FRAMES) -> tuple[list[int], list[int]]:
    """Positions of the ``k`` lowest and the ``k`` highest ``errors`` (N,) (best first, worst first);
    with fewer than 2k frames the two lists share none and split them."""
    err = np.asarray(errors, dtype=np.float64).reshape(-1)
    order = np.argsort(err, kind="stable")
    k = max(0, min(int(k), len(order) // 2))
    return order[:k].tolist(), order[::-1][:k].tolist()


def crop_joints(joints_3d_cam: np.ndarray, K: np.ndarray, crop_to_raw: np.ndarray) -> np.ndarray:
    """Camera-frame joints (17, 3) mm → (17, 2) px in the crop (``K`` (3, 3) of the raw image,
    ``crop_to_raw`` (2, 3) the crop → raw-image affine)."""
    return apply_affine(project(np.asarray(joints_3d_cam, np.float64), np.asarray(K, np.float64)),
                        invert_affine(np.asarray(crop_to_raw, np.float64)))


def frame_picture(crop: np.ndarray, pred_3d: np.ndarray, gt_3d: np.ndarray, K: np.ndarray,
                  crop_to_raw: np.ndarray, title: str, size: int = 200) -> np.ndarray:
    """The gallery picture of one frame: (size, 3·size, 3) uint8 RGB.

    crop (S, S, 3) uint8 RGB; pred_3d, gt_3d (17, 3) camera-frame mm.
    """
    s = size / crop.shape[0]
    img = viz.resize_to_height(crop, size)
    img = viz.draw_skeleton_2d(img, crop_joints(gt_3d, K, crop_to_raw), color=(255, 255, 255), scale=s)
    img = viz.draw_skeleton_2d(img, crop_joints(pred_3d, K, crop_to_raw), scale=s)
    img = viz.put_text(img, title)
    views = viz.render_3d_views(
        [viz.Pose3D(np.asarray(pred_3d, np.float64)), viz.Pose3D(np.asarray(gt_3d, np.float64), color=(150, 150, 150))],
        azimuths=(0.0, 90.0), size=size, titles=("0 deg (grey: truth)", "90 deg"))
    return np.concatenate([img, views], axis=1)


def collect(dataset, pred_3d: np.ndarray, gt_3d: np.ndarray, errors: np.ndarray, actions: np.ndarray,
            action_names: list[str], k: int = GALLERY_FRAMES, size: int = 200) -> list[GalleryFrame]:
    """Draw the best and the worst ``k`` frames of one evaluated stage.

    dataset: the evaluated ``PackedDataset`` (item ``i`` ↔ row ``i`` of the arrays); pred_3d, gt_3d
    (N, 17, 3) camera-frame mm; errors (N,) MPJPE mm; actions (N,) indices into ``action_names``.
    """
    best, worst = pick_frames(errors, k)
    frames = []
    for kind, rows in (("best", best), ("worst", worst)):
        for i in rows:
            item = dataset[i]
            crop = ((item["image"].numpy().transpose(1, 2, 0) + 0.5) * 255.0).round().clip(0, 255).astype(np.uint8)
            action = action_names[int(actions[i])]
            title = f"#{i} {action} {float(errors[i]):.0f} mm"
            pic = frame_picture(crop, pred_3d[i], gt_3d[i], item["K"].numpy(), item["crop_to_raw"].numpy(), title, size)
            frames.append(GalleryFrame(pic, int(i), float(errors[i]), action, kind))
    return frames
