"""The record every dataset reader yields, and the per-sample error they raise.

``RawSample`` is layout independent: the seed txt reader (:mod:`pose.data.seed_txt`) and the
H36M JSON reader (:mod:`pose.data.h36m_json`) both produce it, ``pose prepare`` packs it.

Coordinates: ``joints_2d`` and ``bbox`` are in pixels of the *stored* image (the 224×224 crop of
the seed layout, the full frame of the JSON layout), pixel-centre convention (pixel i centred at
i). ``img_to_raw`` maps stored-image pixels to raw camera pixels, the frame in which
``K @ joints_3d`` is measured, so ``project(joints_3d, K) ≈ apply_affine(joints_2d, img_to_raw)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Per-joint array fields with their shapes (used for validation and packing).
ARRAY_FIELDS: dict[str, tuple[tuple[int, ...], type]] = {
    "joints_2d": ((17, 2), np.float32),
    "joints_3d": ((17, 3), np.float32),
    "K": ((3, 3), np.float32),
    "R": ((3, 3), np.float32),
    "T": ((3,), np.float32),
    "dist": ((5,), np.float32),
    "bbox": ((4,), np.float32),
    "img_to_raw": ((2, 3), np.float32),
    "visible": ((17,), np.bool_),
}
#: Scalar integer fields (packed as int32 arrays).
INT_FIELDS: tuple[str, ...] = ("subject", "action", "subaction", "camera", "frame", "index")


class BadSample(ValueError):
    """A sample that fails validation. ``str()`` is one line naming the file and sample index."""

    def __init__(self, index: int, file: str, reason: str):
        self.index = int(index)
        self.file = str(file)
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(f"sample {self.index}: {self.file}: {self.reason}")

    def __reduce__(self):  # picklable across process pools
        return (BadSample, (self.index, self.file, self.reason))

    def as_dict(self) -> dict:
        return {"index": self.index, "file": self.file, "reason": self.reason}


@dataclass
class RawSample:
    """One annotated image as read from disk (numpy, float64 until packed).

    index: the dataset's own global sample index.
    image_path: file of the stored image (png/jpg), encoded bytes are packed as they are.
    image_size: (width, height) of the stored image, px.
    joints_2d: (17, 2) px in the stored image.
    joints_3d: (17, 3) camera frame, mm (zeros when ``has_depth`` is False).
    K: (3, 3) intrinsics of the raw camera image. R (3, 3), T (3,) extrinsics, X_cam = R (X_w − T).
    dist: (5,) [k1, k2, k3, p1, p2] (H36M/Martinez order), zeros when unknown.
    bbox: (4,) x1, y1, x2, y2 in the stored image, px (box edges, side = x2 − x1).
    img_to_raw: (2, 3) affine stored-image px → raw camera px.
    visible: (17,) bool, joint annotated / inside the image.
    subject, action (index into ``action_names`` of the dataset), subaction, camera (1..4), frame.
    """

    index: int
    image_path: str
    image_size: tuple[int, int]
    joints_2d: np.ndarray
    joints_3d: np.ndarray
    K: np.ndarray
    R: np.ndarray
    T: np.ndarray
    dist: np.ndarray
    bbox: np.ndarray
    img_to_raw: np.ndarray
    subject: int
    action: int
    action_name: str
    subaction: int = 1
    camera: int = 0
    frame: int = 0
    has_depth: bool = True
    visible: np.ndarray = field(default_factory=lambda: np.ones(17, dtype=bool))

    def joints_2d_raw(self) -> np.ndarray:
        """(17, 2) joints in raw camera px (``img_to_raw`` applied)."""
        A = np.asarray(self.img_to_raw, dtype=np.float64)
        return np.asarray(self.joints_2d, dtype=np.float64) @ A[:, :2].T + A[:, 2]

    def validate(self, file: str | None = None) -> None:
        """Raise :class:`BadSample` on wrong shapes, non-finite numbers or non-positive depth."""
        where = file or self.image_path
        for name, (shape, _) in ARRAY_FIELDS.items():
            value = np.asarray(getattr(self, name))
            if value.shape != shape:
                raise BadSample(self.index, where, f"{name} has shape {value.shape}, expected {shape}")
            if value.dtype != np.bool_ and not np.all(np.isfinite(value)):
                raise BadSample(self.index, where, f"{name} contains NaN or inf")
        if self.has_depth:
            z = np.asarray(self.joints_3d)[:, 2]
            if not np.all(z > 0):
                raise BadSample(self.index, where, f"joint depth not positive (min Z = {z.min():.3f} mm)")
            k = np.asarray(self.K)
            if not (k[0, 0] > 0 and k[1, 1] > 0):
                raise BadSample(self.index, where, "focal length not positive")
