"""Seed txt layout reader: values of the real toy files, index ranges, a synthetic layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose import skeleton
from pose.camera import project
from pose.data import C2F_VOL_DEMO, seed_txt
from pose.data.records import BadSample
from pose.data.seed_txt import SeedTxtReader

TOY = Path(__file__).parent / "fixtures" / "caffe_toy"
VALID = C2F_VOL_DEMO / "valid.npz"
PROTOCOL2_COUNTS = {
    "Directions": 499, "Discussion": 1004, "Eating": 614, "Greeting": 479, "Phoning": 876, "Posing": 427,
    "Purchases": 301, "Sitting": 629, "SittingDown": 520, "Smoking": 868, "TakingPhoto": 458,
    "Waiting": 592, "Walking": 458, "WalkingDog": 442, "WalkingTogether": 409,
}


def _file_numbers(path: Path) -> np.ndarray:
    return np.array([[float(t) for t in line.split()] for line in path.read_text().splitlines() if line.strip()])


# ----------------------------------------------------------------------------- real toy files
def test_toy_bbox_center_scale():
    assert seed_txt.parse_bbox(TOY / "bbx_all_new/9.txt").tolist() == [265, 264, 658, 657]
    assert seed_txt.parse_scalar(TOY / "center_x/18.txt") == 112.0
    assert seed_txt.parse_scalar(TOY / "center_y/13.txt") == 112.0
    assert seed_txt.parse_scalar(TOY / "scale/23.txt") == 224.0


def test_toy_joints_equal_file_numbers():
    j2 = seed_txt.parse_joints(TOY / "gt_joint_2d_raw_new/1000.txt", 2)
    j3 = seed_txt.parse_joints(TOY / "gt_joint_3d_mono_raw/1000006.txt", 3)
    assert j2.shape == (32, 2) and j3.shape == (32, 3)
    np.testing.assert_array_equal(j2, _file_numbers(TOY / "gt_joint_2d_raw_new/1000.txt"))
    np.testing.assert_array_equal(j3, _file_numbers(TOY / "gt_joint_3d_mono_raw/1000006.txt"))
    assert j2[0].tolist() == [121.927262, 100.361033]
    assert j2[31].tolist() == [96.413116, 46.675902]
    assert j3[0].tolist() == [-602.280594, -340.855113, 4709.494331]
    assert j3[29].tolist() == [-1016.002272, -529.000260, 4350.427787]
    # the 17-joint selection: pelvis, ..., head top (32-idx 15), right wrist (32-idx 27)
    j17 = skeleton.to17(j3)
    assert j17[10].tolist() == [-646.293649, -973.785478, 4603.264664]
    assert j17[16].tolist() == [-938.766629, -465.524079, 4347.953223]


def test_toy_camera_values():
    cam = seed_txt.parse_camera(TOY / "camera_all/100.txt")
    np.testing.assert_array_equal(cam["R"], [[-0.915362, 0.401808, 0.025748], [0.051548, 0.180374, -0.982246],
                                             [-0.399319, -0.897784, -0.185820]])
    assert cam["T"].tolist() == [1841.107028, 4955.284623, 1563.445396]
    assert cam["f"].tolist() == [1145.049405, 1143.781096]
    assert cam["c"].tolist() == [512.541505, 515.451487]
    assert cam["k"].tolist() == [-0.207099, 0.247775, -0.003075]
    assert cam["p"].tolist() == [-0.001424, -0.000976]
    K = seed_txt.intrinsics(cam["f"], cam["c"])
    np.testing.assert_array_equal(K, [[1145.049405, 0, 512.541505], [0, 1143.781096, 515.451487], [0, 0, 1]])


def test_toy_info_and_image_path():
    info = seed_txt.parse_info(TOY / "info_all/1000019.txt")
    assert info["video_name"] == r"D:\tmpwqf\human3.6m\Release-v1.1\S7\Smoking.55011271.mp4"
    assert (info["action_id"], info["action_name"], info["subaction_id"], info["camera_id"], info["frame_id"]) == (
        "11", "Smoking", "2", "2", "2048")
    assert skeleton.ACTIONS_H36M[int(info["action_id"]) - 2] == "Smoking"
    assert (TOY / "image_path_file/20.txt").read_text().strip() == r"E:\frame_images\frame_images\20.png"
    img = cv2.imread(str(TOY / "images/1000.png"))
    assert img.shape == (224, 224, 3)


def _toy_as_one_sample(root: Path, index: int = 5) -> Path:
    """The toy files (different indices in the seed repo) assembled as one sample ``index``."""
    src = {"bbx_all_new": "9", "center_x": "18", "center_y": "13", "scale": "23", "gt_joint_2d_raw_new": "1000",
           "gt_joint_3d_mono_raw": "1000006", "camera_all": "100", "info_all": "1000019"}
    for field, name in src.items():
        (root / field).mkdir(parents=True, exist_ok=True)
        shutil.copy(TOY / field / f"{name}.txt", root / field / f"{index}.txt")
    (root / "images").mkdir()
    shutil.copy(TOY / "images/1000.png", root / "images/1000.png")
    (root / "image_path_file").mkdir()  # absolute Windows path of the original machine
    (root / "image_path_file" / f"{index}.txt").write_text("E:\\frame_images\\frame_images\\1000.png\n")
    seed_txt.write_index_ranges(root, [seed_txt.RangeEntry(7, "Smoking", index, index)])
    return root


def test_reader_on_toy_files(tmp_path):
    root = _toy_as_one_sample(tmp_path)
    reader = SeedTxtReader(root)
    assert reader.indices("train") == [5] and reader.indices("test") == []
    s = reader.read(5)
    assert Path(s.image_path) == root / "images/1000.png"  # resolved by base name
    assert (s.subject, s.action_name, s.action, s.subaction, s.camera, s.frame) == (7, "Smoking", 9, 2, 2, 2048)
    np.testing.assert_array_equal(s.joints_2d, skeleton.to17(_file_numbers(TOY / "gt_joint_2d_raw_new/1000.txt")))
    np.testing.assert_array_equal(s.joints_3d, skeleton.to17(_file_numbers(TOY / "gt_joint_3d_mono_raw/1000006.txt")))
    assert s.dist.tolist() == [-0.207099, 0.247775, -0.003075, -0.001424, -0.000976]
    # crop → raw: the crop's edges (pixel-centre coords −0.5 and 223.5) → the box (bbx 265 264 658 657)
    corners = np.array([[-0.5, -0.5], [223.5, 223.5]]) @ s.img_to_raw[:, :2].T + s.img_to_raw[:, 2]
    np.testing.assert_allclose(corners, [[265, 264], [658, 657]])
    # and it is the inverse of the project's crop affine of that box
    from pose.camera import crop_affine, invert_affine

    np.testing.assert_allclose(s.img_to_raw, invert_affine(crop_affine([461.5, 460.5], 393.0, 0.0, 224)))
    assert s.bbox.tolist() == [-0.5, -0.5, 223.5, 223.5] and s.image_size == (224, 224)


def test_without_index_range_falls_back_to_info_all(tmp_path):
    root = _toy_as_one_sample(tmp_path)
    shutil.rmtree(root / "index_range")
    reader = SeedTxtReader(root)
    assert reader.entries() == [(5, 7, "Smoking")]  # subject from the video_name path
    assert reader.read(5).subject == 7


# ----------------------------------------------------------------------------- index ranges
def test_real_index_ranges_and_split_boundary():
    entries = seed_txt.read_index_ranges(TOY)
    assert len(entries) == 7 * 15
    assert (entries[0].subject, entries[0].action_name, entries[0].start, entries[0].end) == (1, "Directions", 0, 11979)
    assert (entries[-1].subject, entries[-1].action_name, entries[-1].end) == (11, "WalkingTogether", 2108570)
    assert all(b.start == a.end + 1 for a, b in zip(entries, entries[1:], strict=False))  # contiguous
    assert seed_txt.split_bounds(entries) == (1559751, 1559752)  # not the README's 1559571
    s9 = next(e for e in entries if e.subject == 9 and e.action_name == "Directions")
    assert (s9.start, s9.end) == (1559752, 1579971)
    n_train = sum(e.end - e.start + 1 for e in entries if e.subject in seed_txt.TRAIN_SUBJECTS)
    n_test = sum(e.end - e.start + 1 for e in entries if e.subject in seed_txt.TEST_SUBJECTS)
    assert (n_train, n_test) == (1559752, 548819)


def test_real_protocol2_lists():
    p2 = seed_txt.protocol2_indices(TOY)
    assert {k: len(v) for k, v in p2.items()} == PROTOCOL2_COUNTS
    all_id = seed_txt.parse_index_list(TOY / "index_range/Protocol2/all_id.txt")
    assert len(all_id) == 8576 and all_id[0] == 1559752 + 63
    assert all_id.min() >= 1559752
    assert sorted(np.concatenate(list(p2.values())).tolist()) == sorted(all_id.tolist())


# ----------------------------------------------------------------------------- synthetic layout
@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    d = np.load(VALID)
    n = 12
    root = tmp_path_factory.mktemp("seed") / "src"
    subjects = np.array([1] * 4 + [5] * 4 + [9] * 2 + [11] * 2)
    actions = np.array(["Posing", "Walking"] * 6)
    seed_txt.write_layout_from_poses(root, d["S"][:n], d["K"][:n], subjects, actions, frames=np.arange(n) * 5)
    return root, d["S"][:n], d["K"][:n]


def test_synthetic_layout_roundtrip(synthetic_root):
    root, S, K = synthetic_root
    reader = SeedTxtReader(root)
    assert len(reader.indices("train")) == 8 and len(reader.indices("test")) == 4
    assert reader.action_names == skeleton.ACTIONS_H36M
    for i in reader.indices("all"):
        s = reader.read(i)
        assert s.subject in (1, 5, 9, 11) and s.action_name in ("Posing", "Walking")
        assert s.action == skeleton.ACTIONS_H36M.index(s.action_name)
        raw = s.joints_2d_raw()
        np.testing.assert_allclose(project(s.joints_3d, s.K), raw, atol=1e-4)
    # the 3D numbers survive the text round trip to 1e-6 mm (sample order = grouped by subject/action)
    s0 = reader.read(0)
    np.testing.assert_allclose(s0.joints_3d, S[0], atol=1e-6)
    np.testing.assert_allclose(s0.K, K[0], atol=1e-6)


def test_joints17_to32_roundtrip():
    j = np.random.default_rng(0).normal(size=(4, 17, 3))
    np.testing.assert_array_equal(skeleton.to17(seed_txt.joints17_to32(j)), j)


def test_parse_errors_are_one_line(tmp_path):
    p = tmp_path / "cam.txt"
    p.write_text((TOY / "camera_all/100.txt").read_text().replace("f:\n 1145.049405 1143.781096\n", ""))
    with pytest.raises(BadSample, match=r"sample 3: .*cam.txt: camera block 'f:' missing") as exc:
        seed_txt.parse_camera(p, 3)
    assert "\n" not in str(exc.value)
    p.write_text("1 2\n3 x\n")
    with pytest.raises(BadSample, match="not a number"):
        seed_txt.parse_joints(p, 2, 4, num_joints=2)


# ----------------------------------------------------------------------------- fixed-width fields
# The seed writes each number right-aligned in 12 characters; one that needs all 12 touches its left
# neighbour. H36M camera 2's translation and a joint 1.04 m above the camera axis, as the seed writes them:
CAM2_T = " 1761.278564-5078.006836 1606.265015"
HEAD_3D = "  -22.241638-1041.121555 5311.463849 "


@pytest.mark.parametrize(("line", "count", "want"), [
    (" -602.280594  -340.855113  4709.494331 ", 3, ["-602.280594", "-340.855113", "4709.494331"]),  # whitespace
    ("-1016.002272  -529.000260  4350.427787 ", 3, ["-1016.002272", "-529.000260", "4350.427787"]),
    (CAM2_T, 3, ["1761.278564", "-5078.006836", "1606.265015"]),  # columns
    (HEAD_3D, 3, ["-22.241638", "-1041.121555", "5311.463849"]),
    (" 1761.27856412345.678901", None, ["1761.278564", "12345.678901"]),  # positive values touch too
    ("-1000.000000-2000.000000", 2, ["-1000.000000", "-2000.000000"]),  # every field full
    ("1.5 2.5", 3, ["1.5", "2.5"]),  # neither reading: the tokens, for the caller's count error
    ("-602.280594-340.855113", 2, ["-602.280594-340.855113"]),  # touching but not in columns
])
def test_split_fields(line, count, want):
    assert seed_txt.split_fields(line, count) == want


def _toy_with(tmp_path: Path, field: str, name: str, old: str, new: str) -> Path:
    p = tmp_path / f"{field}.txt"
    text = (TOY / field / f"{name}.txt").read_text()
    assert old in text
    p.write_text(text.replace(old, new, 1))
    return p


def test_camera_rows_with_touching_values(tmp_path):
    p = _toy_with(tmp_path, "camera_all", "100", " 1841.107028 4955.284623 1563.445396", CAM2_T)
    cam = seed_txt.parse_camera(p)
    assert cam["T"].tolist() == [1761.278564, -5078.006836, 1606.265015]
    assert cam["f"].tolist() == [1145.049405, 1143.781096]  # the other blocks unchanged
    # every field of a rotation row touching its neighbour
    p = _toy_with(tmp_path, "camera_all", "100", "   -0.915362    0.401808    0.025748",
                  "-1234.567890-2345.678901-3456.789012")
    assert seed_txt.parse_camera(p)["R"][0].tolist() == [-1234.56789, -2345.678901, -3456.789012]


def test_joint_files_with_touching_values(tmp_path):
    p = _toy_with(tmp_path, "gt_joint_3d_mono_raw", "1000006", " -646.293649  -973.785478  4603.264664 ", HEAD_3D)
    j3 = seed_txt.parse_joints(p, 3)
    assert j3[15].tolist() == [-22.241638, -1041.121555, 5311.463849]  # the head top line
    assert j3[0].tolist() == [-602.280594, -340.855113, 4709.494331]
    p = _toy_with(tmp_path, "gt_joint_2d_raw_new", "1000", "  121.927262   100.361033", "  121.927262-1000.361033")
    j2 = seed_txt.parse_joints(p, 2)
    assert j2[0].tolist() == [121.927262, -1000.361033] and j2[1].tolist() == [131.866302, 98.582725]
    # a line that is neither: one line naming the joint line, the count and the text
    p = _toy_with(tmp_path, "gt_joint_3d_mono_raw", "1000006", " -646.293649  -973.785478  4603.264664 ",
                  "-646.293649-973.785478 4603.264664")
    with pytest.raises(BadSample, match=r"sample 7: .*joint line 16: expected 3 numbers, got 2 \(neither") as exc:
        seed_txt.parse_joints(p, 3, 7)
    assert "\n" not in str(exc.value)


def test_bbox_with_touching_values(tmp_path):
    p = tmp_path / "bbox.txt"
    p.write_text("  -12.000000-1040.000000  658.000000  657.000000\n")
    assert seed_txt.parse_bbox(p).tolist() == [-12.0, -1040.0, 658.0, 657.0]
    p.write_text("-12-1040 658 657\n")  # touching without columns: rejected, not guessed
    with pytest.raises(BadSample, match="expected 4 numbers x1 y1 x2 y2, got 3"):
        seed_txt.parse_bbox(p, 2)


def test_reader_accepts_touching_values(tmp_path):
    """A whole sample whose camera is H36M camera 2 and whose head is above -1000 mm reads exactly."""
    root = _toy_as_one_sample(tmp_path)
    cam = root / "camera_all" / "5.txt"
    cam.write_text(cam.read_text().replace(" 1841.107028 4955.284623 1563.445396", CAM2_T))
    j3 = root / "gt_joint_3d_mono_raw" / "5.txt"
    j3.write_text(j3.read_text().replace(" -646.293649  -973.785478  4603.264664 ", HEAD_3D))
    s = SeedTxtReader(root).read(5)
    assert s.T.tolist() == [1761.278564, -5078.006836, 1606.265015]
    assert s.joints_3d[10].tolist() == [-22.241638, -1041.121555, 5311.463849]  # 17-joint head top
