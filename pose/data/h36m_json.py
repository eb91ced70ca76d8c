"""Reader for the widely used Human3.6M annotation JSON layout (mks0601/3DMPPE).

Files (in ``ROOT/annotations/`` or ``ROOT/``), per subject S::

    Human36M_subject{S}_data.json      COCO-style {"images": [...], "annotations": [...]}
    Human36M_subject{S}_camera.json    {"cam_idx": {"R": 3×3, "t": 3 (camera centre, mm), "f": [fx, fy], "c": [cx, cy]}}
    Human36M_subject{S}_joint_3d.json  {"action_idx": {"subaction_idx": {"frame_idx": 17×3 world mm}}}

Images under ``ROOT/images/<file_name>`` (``file_name`` =
``s_SS_act_AA_subact_BB_ca_CC/s_SS_act_AA_subact_BB_ca_CC_FFFFFF.jpg``), or ``ROOT/<file_name>``.

Per sample: 3D joints world → camera with ``X_cam = R (X_w − t)``; 2D = pinhole projection with
K from f and c (the JSON cameras carry no distortion, ``dist`` = 0); bbox = the annotation's
``[xmin, ymin, w, h]`` (tight GT box ×1.2) as x1 y1 x2 y2; ``img_to_raw`` = identity (full frames);
``visible`` = ``keypoints_vis``. ``camera`` is ``cam_idx`` 1..4 (:data:`CAMERA_ID_TO_NAME` gives
the H36M camera names), ``action`` = ``action_idx − 2`` into ``skeleton.ACTIONS_H36M``.
The corrupt sequence ``s_11_act_02_subact_02_ca_01`` (S11 Directions sub 2 camera 1) is skipped.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from pose import skeleton
from pose.data.records import BadSample, RawSample
from pose.data.seed_txt import TEST_SUBJECTS, TRAIN_SUBJECTS

#: cam_idx (1-based, JSON layout and seed ``camera_id``) → H36M camera name (Martinez).
CAMERA_ID_TO_NAME: dict[int, str] = {1: "54138969", 2: "55011271", 3: "58860488", 4: "60457274"}
#: Sequences the reference implementations drop (corrupted video).
SKIP_SEQUENCES: frozenset[str] = frozenset({"s_11_act_02_subact_02_ca_01"})
_DATA_RE = re.compile(r"^Human36M_subject(\d+)_data\.json$")
IDENTITY_AFFINE = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def sequence_name(subject: int, action_idx: int, subaction_idx: int, cam_idx: int) -> str:
    """``s_SS_act_AA_subact_BB_ca_CC``."""
    return f"s_{subject:02d}_act_{action_idx:02d}_subact_{subaction_idx:02d}_ca_{cam_idx:02d}"


def annotation_dir(root: str | os.PathLike) -> Path | None:
    """The folder holding the ``Human36M_subject*_data.json`` files, or None."""
    root = Path(root)
    for folder in (root / "annotations", root):
        if folder.is_dir() and any(_DATA_RE.match(p.name) for p in folder.iterdir()):
            return folder
    return None


def _load_json(path: Path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file missing") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON: {exc}") from None


class H36MJsonReader:
    """Reads the JSON layout under ``root``; ``read(index)`` → :class:`RawSample` (index = image id).

    Subject files are loaded lazily (real ones are large) and kept in memory.
    """

    layout = "json"
    action_names: tuple[str, ...] = skeleton.ACTIONS_H36M

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        folder = annotation_dir(self.root)
        if folder is None:
            raise FileNotFoundError(f"{self.root}: no Human36M_subject*_data.json in it or in annotations/")
        self.ann_dir = folder
        self.subjects = sorted(int(_DATA_RE.match(p.name).group(1)) for p in folder.iterdir() if _DATA_RE.match(p.name))
        self._subject_data: dict[int, dict] = {}
        self._images: dict[int, tuple[int, dict, dict | None]] | None = None  # id → (subject, image, ann)
        self._skipped: list[int] = []

    @staticmethod
    def detect(root: str | os.PathLike) -> bool:
        return annotation_dir(root) is not None

    def _path(self, subject: int, kind: str) -> Path:
        return self.ann_dir / f"Human36M_subject{subject}_{kind}.json"

    def _load_subject(self, subject: int) -> dict:
        if subject not in self._subject_data:
            data = _load_json(self._path(subject, "data"))
            if not isinstance(data, dict) or "images" not in data:
                raise ValueError(f"{self._path(subject, 'data')}: no 'images' list")
            cams = _load_json(self._path(subject, "camera"))
            joints = _load_json(self._path(subject, "joint_3d"))
            anns = {a["image_id"]: a for a in data.get("annotations", [])}
            self._subject_data[subject] = {"images": data["images"], "anns": anns, "cams": cams, "joints": joints}
        return self._subject_data[subject]

    def _index(self) -> dict[int, tuple[int, dict, dict | None]]:
        if self._images is None:
            images: dict[int, tuple[int, dict, dict | None]] = {}
            skipped = []
            for subject in self.subjects:
                sd = self._load_subject(subject)
                for img in sd["images"]:
                    seq = str(img.get("file_name", "")).split("/")[0]
                    if seq in SKIP_SEQUENCES:
                        skipped.append(int(img["id"]))
                        continue
                    images[int(img["id"])] = (subject, img, sd["anns"].get(img["id"]))
            self._images = dict(sorted(images.items()))
            self._skipped = skipped
        return self._images

    @property
    def skipped_sequences(self) -> list[int]:
        """Image ids dropped because they belong to :data:`SKIP_SEQUENCES`."""
        self._index()
        return self._skipped

    def indices(self, split: str = "all") -> list[int]:
        """Image ids of ``split`` ("train": S1,5,6,7,8; "test": S9,S11; "all")."""
        if split not in ("train", "test", "all"):
            raise ValueError(f"split: expected train|test|all, got {split!r}")
        want = {"train": TRAIN_SUBJECTS, "test": TEST_SUBJECTS}.get(split)
        return [i for i, (s, _, _) in self._index().items() if want is None or s in want]

    def _camera(self, index: int, subject: int, sd: dict, cam_idx: int) -> tuple[np.ndarray, ...]:
        """(R (3, 3), t (3,) mm, f (2,) px, c (2,) px) of camera ``cam_idx``, checked; BadSample naming
        the camera file otherwise."""
        cam_file = self._path(subject, "camera")
        cam = sd["cams"].get(str(cam_idx))
        if cam is None:
            raise BadSample(index, cam_file, f"camera {cam_idx} missing")
        try:
            R = np.asarray(cam["R"], dtype=np.float64).reshape(3, 3)
            t = np.asarray(cam["t"], dtype=np.float64).reshape(3)
            f = np.asarray(cam["f"], dtype=np.float64).reshape(2)
            c = np.asarray(cam["c"], dtype=np.float64).reshape(2)
        except (KeyError, ValueError, TypeError) as exc:
            raise BadSample(index, cam_file, f"camera {cam_idx} does not parse: {exc}") from None
        if not (np.isfinite(R).all() and np.isfinite(t).all() and np.isfinite(f).all() and np.isfinite(c).all()):
            raise BadSample(index, cam_file, f"camera {cam_idx} contains NaN or inf")
        if not (f > 0).all():
            raise BadSample(index, cam_file, f"camera {cam_idx} focal length not positive")
        return R, t, f, c

    def _world_joints(self, index: int, subject: int, sd: dict, a_idx: int, s_idx: int, f_idx: int) -> np.ndarray:
        """The frame's (17, 3) world joints (mm), checked; BadSample naming the joint file otherwise."""
        joint_file = self._path(subject, "joint_3d")
        try:
            world = sd["joints"][str(a_idx)][str(s_idx)][str(f_idx)]
        except (KeyError, TypeError):
            raise BadSample(index, joint_file, f"no 3D joints for action {a_idx} subaction {s_idx} frame {f_idx}") from None
        try:
            world = np.asarray(world, dtype=np.float64)
        except (ValueError, TypeError):
            raise BadSample(index, joint_file, f"3D joints of frame {f_idx} do not parse") from None
        if world.shape != (17, 3):
            raise BadSample(index, joint_file, f"frame {f_idx}: expected 17×3 joints, got shape {world.shape}")
        if not np.isfinite(world).all():
            raise BadSample(index, joint_file, f"frame {f_idx}: 3D joints contain NaN or inf")
        return world

    def read(self, index: int) -> RawSample:
        from pose.camera import project, world_to_camera  # lazy: pose.camera imports torch

        index = int(index)
        entry = self._index().get(index)
        if entry is None:
            raise BadSample(index, self.ann_dir, "image id not found")
        subject, img, ann = entry
        data_file = self._path(subject, "data")
        sd = self._load_subject(subject)
        try:
            a_idx, s_idx = int(img["action_idx"]), int(img["subaction_idx"])
            cam_idx, f_idx = int(img["cam_idx"]), int(img["frame_idx"])
            width, height = int(img["width"]), int(img["height"])
            file_name = str(img["file_name"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BadSample(index, data_file, f"image entry incomplete: {exc}") from None
        if ann is None:
            raise BadSample(index, data_file, "no annotation for this image")
        R, t, f, c = self._camera(index, subject, sd, cam_idx)
        world = self._world_joints(index, subject, sd, a_idx, s_idx, f_idx)
        joint_file = self._path(subject, "joint_3d")
        K = np.array([[f[0], 0.0, c[0]], [0.0, f[1], c[1]], [0.0, 0.0, 1.0]])
        j3 = world_to_camera(world, R, t)
        if not (j3[:, 2] > 0).all():
            raise BadSample(index, joint_file, f"frame {f_idx}: joint depth not positive (min Z = {j3[:, 2].min():.1f} mm)")
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError):
            raise BadSample(index, data_file, "annotation bbox missing or malformed") from None
        if not (w > 0 and h > 0):
            raise BadSample(index, data_file, f"annotation bbox degenerate: {[x, y, w, h]}")
        vis = np.asarray(ann.get("keypoints_vis", [True] * 17), dtype=bool).reshape(-1)
        if vis.shape != (17,):
            raise BadSample(index, data_file, f"keypoints_vis has {vis.size} entries, expected 17")
        image = self.root / "images" / file_name
        if not image.is_file() and (self.root / file_name).is_file():
            image = self.root / file_name
        if not (1 <= a_idx - 1 <= len(self.action_names)):
            raise BadSample(index, data_file, f"action_idx {a_idx} outside 2..16")
        return RawSample(
            index=index,
            image_path=str(image),
            image_size=(width, height),
            joints_2d=project(j3, K),
            joints_3d=j3,
            K=K,
            R=R,
            T=t,
            dist=np.zeros(5),
            bbox=np.array([x, y, x + w, y + h]),
            img_to_raw=IDENTITY_AFFINE.copy(),
            subject=subject,
            action=a_idx - 2,
            action_name=self.action_names[a_idx - 2],
            subaction=s_idx,
            camera=cam_idx,
            frame=f_idx,
            has_depth=True,
            visible=vis,
        )
