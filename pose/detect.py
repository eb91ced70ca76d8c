"""Finding people in a photo: OpenCV's built-in HOG people detector (Dalal & Triggs' linear SVM,
shipped inside ``opencv-contrib-python-headless``; nothing is downloaded).

``pose predict`` calls :func:`detect_people` on an image given without ``--bbox``, so that a person
who fills only part of a photo is cropped the way the network was trained (person centred, filling
the crop) instead of the whole image being squeezed into the input.

How (all sizes in px of the original image unless said otherwise):

- the image is resized so that its longer side is ``work_side`` (480 by default: a person ≥ ~⅓ of
  the image height is 160+ px there, well above the detector's 128-px window) and padded by
  ``pad`` × that side on every side (edge pixels repeated), so that a person filling most of the
  image still fits a detection window, whose person occupies its central ~70 %;
- ``cv2.HOGDescriptor.detectMultiScale`` (window stride 8, scale step 1.05) returns windows and
  their SVM margins; windows below ``min_score`` are dropped;
- each window is shrunk to the person inside it (:data:`WINDOW_TO_PERSON`, measured on rendered
  people), clipped to the image, and overlapping boxes are merged (non-maximum suppression at
  IoU ``nms_iou``, the higher margin kept);
- people are returned largest box first.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["WINDOW_TO_PERSON", "Detection", "box_iou", "detect_people", "detector_available"]

#: where the person lies inside a detection window, as fractions of the window's width/height
#: (x1, y1, x2, y2): the median over rendered people that the default detector found (IoU > 0.4).
WINDOW_TO_PERSON = (0.18, 0.12, 0.84, 0.86)


@dataclass(frozen=True)
class Detection:
    """One person: ``bbox`` (4,) float ``x1 y1 x2 y2`` box edges in original-image px; ``score`` the
    detector's SVM margin (higher = more person-like; unitless)."""

    bbox: np.ndarray
    score: float

    @property
    def area(self) -> float:
        """Box area, px²."""
        x1, y1, x2, y2 = (float(v) for v in self.bbox)
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


def detector_available() -> bool:
    """Whether this OpenCV build has the HOG people detector (the contrib wheels do; OpenCV 5's
    main wheels do not)."""
    return hasattr(cv2, "HOGDescriptor") and hasattr(cv2, "HOGDescriptor_getDefaultPeopleDetector")


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``x1 y1 x2 y2`` boxes (0 when either is empty)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


_HOG: cv2.HOGDescriptor | None = None


def _hog() -> cv2.HOGDescriptor:
    global _HOG
    if _HOG is None:
        if not detector_available():
            raise RuntimeError(
                "person detection needs OpenCV's HOG people detector, which this OpenCV build lacks "
                "(install the project's opencv-contrib-python-headless: pip install -e .), or pass --bbox"
            )
        hog = cv2.HOGDescriptor()
        hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        _HOG = hog
    return _HOG


def detect_people(
    image: np.ndarray,
    *,
    max_people: int | None = None,
    min_score: float = 0.5,
    work_side: int = 480,
    pad: float = 0.25,
    nms_iou: float = 0.4,
) -> list[Detection]:
    """People in ``image`` (H, W, 3) uint8 (RGB or BGR; gray (H, W) works too), largest box first.

    Args:
        max_people: keep at most this many (the largest); None = all.
        min_score: drop windows whose SVM margin is below this.
        work_side: the longer image side, px, at which the detector runs.
        pad: border added on each side before detecting, as a fraction of ``work_side``.
        nms_iou: two boxes overlapping more than this are one person.
    Returns:
        list of :class:`Detection` (boxes in px of ``image``, inside the image).
    Raises:
        ValueError: not an image; RuntimeError: no HOG detector in this OpenCV build.
    """
    img = np.asarray(image)
    if img.ndim not in (2, 3) or img.shape[0] < 8 or img.shape[1] < 8:
        raise ValueError(f"image: expected (H, W, 3) or (H, W) px, got shape {img.shape}")
    if max_people is not None and max_people < 1:
        raise ValueError(f"max_people: expected >= 1 or None, got {max_people}")
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    h, w = img.shape[:2]
    k = work_side / max(h, w)
    small = cv2.resize(img, (max(1, round(w * k)), max(1, round(h * k))),
                       interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
    p = int(round(pad * work_side))
    padded = cv2.copyMakeBorder(small, p, p, p, p, cv2.BORDER_REPLICATE)
    rects, weights = _hog().detectMultiScale(padded, winStride=(8, 8), padding=(8, 8), scale=1.05)
    fx1, fy1, fx2, fy2 = WINDOW_TO_PERSON
    found: list[Detection] = []
    for (x, y, rw, rh), score in zip(np.asarray(rects).reshape(-1, 4), np.ravel(weights), strict=True):
        score = float(score)
        if score < min_score:
            continue
        box = np.array([x + fx1 * rw, y + fy1 * rh, x + fx2 * rw, y + fy2 * rh], np.float64)
        box = (box - p) / k  # → original image px
        box = np.clip(box, -0.5, [w - 0.5, h - 0.5, w - 0.5, h - 0.5])
        if box[2] - box[0] >= 4 and box[3] - box[1] >= 4:
            found.append(Detection(box, score))
    kept: list[Detection] = []
    for det in sorted(found, key=lambda d: -d.score):
        if all(box_iou(det.bbox, o.bbox) <= nms_iou for o in kept):
            kept.append(det)
    kept.sort(key=lambda d: -d.area)
    return kept if max_people is None else kept[:max_people]
