"""H36M JSON layout reader on a small file set written here (cameras, world→camera, skip list)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose import skeleton
from pose.camera import apply_affine, project
from pose.data import C2F_VOL_DEMO, AugParams, PackedDataset
from pose.data import prepare as prep
from pose.data.h36m_json import CAMERA_ID_TO_NAME, H36MJsonReader, sequence_name
from pose.data.packed import load_arrays
from pose.data.records import BadSample

VALID = C2F_VOL_DEMO / "valid.npz"
W, H = 160, 120


def rot(yaw: float, pitch: float) -> np.ndarray:
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return Rx @ Ry


def write_json_layout(root: Path) -> dict:
    """Subjects 1 and 11, cameras 1-2, 3 frames per sequence; includes the corrupt sequence."""
    S = np.load(VALID)["S"]
    cams = {}
    for cam_idx in (1, 2):
        R = rot(0.3 * cam_idx, 0.1)
        cams[str(cam_idx)] = {"R": R.tolist(), "t": [100.0 * cam_idx, -200.0, 1500.0],
                              "f": [180.0 + cam_idx, 181.0], "c": [80.0, 60.0 + cam_idx]}
    truth = {}
    for subject, seqs in ((1, [(2, 1), (8, 2)]), (11, [(2, 2), (3, 1)])):
        images, anns, joints = [], [], {}
        for a_idx, s_idx in seqs:
            for f_idx in range(3):
                # world joints = camera-1 pose of a real frame mapped back with camera 1
                cam_pts = S[(subject * 7 + a_idx * 3 + f_idx) % len(S)]
                c1 = cams["1"]
                world = cam_pts @ np.asarray(c1["R"]) + np.asarray(c1["t"])
                joints.setdefault(str(a_idx), {}).setdefault(str(s_idx), {})[str(f_idx)] = world.tolist()
                for cam_idx in (1, 2):
                    img_id = len(truth) + 1000 * subject
                    seq = sequence_name(subject, a_idx, s_idx, cam_idx)
                    file_name = f"{seq}/{seq}_{f_idx + 1:06d}.jpg"
                    images.append({"id": img_id, "file_name": file_name, "width": W, "height": H,
                                   "subject": subject, "action_name": "x", "action_idx": a_idx,
                                   "subaction_idx": s_idx, "cam_idx": cam_idx, "frame_idx": f_idx})
                    anns.append({"id": img_id, "image_id": img_id, "keypoints_vis": [True] * 17,
                                 "bbox": [30.0 + f_idx, 10.0, 90.0, 100.0]})
                    (root / "images" / seq).mkdir(parents=True, exist_ok=True)
                    img = np.full((H, W, 3), 40 * cam_idx, np.uint8)
                    cv2.imwrite(str(root / "images" / file_name), img)
                    truth[img_id] = (subject, a_idx, s_idx, cam_idx, f_idx, world, seq)
        ann_dir = root / "annotations"
        ann_dir.mkdir(parents=True, exist_ok=True)
        (ann_dir / f"Human36M_subject{subject}_data.json").write_text(json.dumps({"images": images, "annotations": anns}))
        (ann_dir / f"Human36M_subject{subject}_camera.json").write_text(json.dumps(cams))
        (ann_dir / f"Human36M_subject{subject}_joint_3d.json").write_text(json.dumps(joints))
    return {"cams": cams, "truth": truth}


@pytest.fixture()
def layout(tmp_path):
    root = tmp_path / "h36m"
    return root, write_json_layout(root)


def test_reader_values(layout):
    root, info = layout
    reader = H36MJsonReader(root)
    assert H36MJsonReader.detect(root) and reader.subjects == [1, 11]
    truth = info["truth"]
    skipped = sorted(i for i, t in truth.items() if t[6] == "s_11_act_02_subact_02_ca_01")
    assert len(skipped) == 3 and sorted(reader.skipped_sequences) == skipped
    assert len(reader.indices("all")) == len(truth) - 3
    assert len(reader.indices("train")) == 12 and len(reader.indices("test")) == 9
    for i in reader.indices("all"):
        subject, a_idx, s_idx, cam_idx, f_idx, world, seq = truth[i]
        s = reader.read(i)
        cam = info["cams"][str(cam_idx)]
        R, t = np.asarray(cam["R"]), np.asarray(cam["t"])
        np.testing.assert_allclose(s.joints_3d, (world - t) @ R.T, atol=1e-9)  # X_cam = R (X_w − t)
        K = np.array([[cam["f"][0], 0, cam["c"][0]], [0, cam["f"][1], cam["c"][1]], [0, 0, 1]])
        np.testing.assert_allclose(s.K, K)
        np.testing.assert_allclose(s.joints_2d, project(s.joints_3d, K), atol=1e-9)
        assert (s.subject, s.action, s.subaction, s.camera, s.frame) == (subject, a_idx - 2, s_idx, cam_idx, f_idx)
        assert s.action_name == skeleton.ACTIONS_H36M[a_idx - 2]
        assert s.bbox.tolist() == [30.0 + f_idx, 10.0, 120.0 + f_idx, 110.0]  # xywh → x1 y1 x2 y2
        np.testing.assert_array_equal(s.img_to_raw, [[1, 0, 0], [0, 1, 0]])
        assert s.image_path.endswith(f"{seq}_{f_idx + 1:06d}.jpg") and s.image_size == (W, H)
    assert CAMERA_ID_TO_NAME[2] == "55011271"


def test_missing_frame_is_bad_sample(layout):
    root, info = layout
    path = root / "annotations" / "Human36M_subject1_joint_3d.json"
    joints = json.loads(path.read_text())
    del joints["2"]["1"]["1"]
    path.write_text(json.dumps(joints))
    reader = H36MJsonReader(root)
    bad = [i for i, t in info["truth"].items() if t[:3] == (1, 2, 1) and t[4] == 1]
    with pytest.raises(BadSample, match=f"sample {bad[0]}: .*subject1_joint_3d.json: no 3D joints for action 2 subaction 1 frame 1"):
        reader.read(bad[0])


def test_prepare_and_dataset_json(layout, tmp_path):
    root, info = layout
    metas = prep.prepare(root, tmp_path / "packed", progress=False)
    assert metas["train"]["layout"] == "json" and metas["train"]["count"] == 12 and metas["test"]["count"] == 9
    assert load_arrays(tmp_path / "packed" / "test")["camera"].tolist().count(1) == 3  # skipped seq gone
    assert metas["test"]["excluded_corrupt_sequence_images"] == 3
    ds = PackedDataset(tmp_path / "packed" / "train", input_size=64)
    assert ds.bbox_enlarge == 1.25
    for params in (AugParams(), AugParams(scale=1.1, rot=20.0, flip=True)):
        s = ds.get(5, params)
        raw = apply_affine(s["joints_2d"].double(), s["crop_to_raw"].double())
        np.testing.assert_allclose(project(s["joints_3d"].double(), s["K"].double()), raw, atol=1e-3)
