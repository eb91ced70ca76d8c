"""pose.predict / pose predict / pose show on rendered samples with an untrained micro checkpoint.

Nothing is trained: a randomly initialised micro model (``heatmap2_std=1`` so that its volume is
not flat) is saved with ``save_checkpoint``; the data come from ``pose synth`` + ``pose prepare``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pose import viz
from pose.camera import apply_affine, project
from pose.decode import decode_batch
from pose.model import C2FPoseNet, ModelConfig, save_checkpoint
from pose.predict import Predictor, intrinsics_for_image, predict_loader
from pose.skeleton import JOINT_NAMES_17
from pose.tools.cli import main as pose_main

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
    """A tiny rendered dataset (seed layout) and its packed splits."""
    root = tmp_path_factory.mktemp("rendered")
    synth, packed = root / "synth", root / "packed"
    assert pose_main(["synth", "--out", str(synth), "--frames", "2", "--workers", "1", "--quiet"]) == 0
    assert pose_main(["prepare", str(synth), "--out", str(packed), "--workers", "1", "--quiet"]) == 0
    images = sorted((synth / "images").iterdir(), key=lambda p: int(p.stem) if p.stem.isdigit() else 0)
    return {"synth": synth, "packed": packed, "images": images, "root": root}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = C2FPoseNet(ModelConfig.preset("micro", d2=4, heatmap2_std=1.0))
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, model, bbox_enlarge=1.28, softmax_scale=30.0)
    return path


def _finite_numbers(obj) -> bool:
    if isinstance(obj, dict):
        return all(_finite_numbers(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite_numbers(v) for v in obj)
    if isinstance(obj, float):
        return math.isfinite(obj)
    return True


def _check_schema(d: dict, w: int, h: int, camera: bool, inside: tuple[float, float, float, float]):
    assert d["schema"] == "c2f-pose.prediction/1"
    assert d["joint_names"] == list(JOINT_NAMES_17)
    assert list(d["joints"]) == list(JOINT_NAMES_17)
    assert d["image_size"] == [w, h]
    assert _finite_numbers(d)
    uv = np.asarray(d["joints_2d"])
    assert uv.shape == (17, 2)
    x1, y1, x2, y2 = inside
    assert (uv[:, 0] >= x1).all() and (uv[:, 0] <= x2).all() and (uv[:, 1] >= y1).all() and (uv[:, 1] <= y2).all()
    xyz = np.asarray(d["joints_3d_mm"])
    assert xyz.shape == (17, 3) and np.allclose(xyz[0], 0.0)
    for name, j in d["joints"].items():
        k = j["index"]
        assert JOINT_NAMES_17[k] == name
        assert j["uv"] == d["joints_2d"][k] and j["xyz_mm"] == d["joints_3d_mm"][k]
    for m in ("argmax", "soft_argmax"):
        assert np.asarray(d["decodings"][m]["joints_2d"]).shape == (17, 2)
    if camera:
        cam = np.asarray(d["joints_3d_camera_mm"])
        assert cam.shape == (17, 3)  # (an untrained model may put joints behind the camera)
        K = np.asarray(d["camera"]["K"])
        np.testing.assert_allclose(project(cam, K), uv, atol=2e-3)
    else:
        assert d["joints_3d_camera_mm"] is None and d["camera"]["source"] == "assumed"


def test_predict_cli_json_schema_and_pngs(rendered, ckpt, tmp_path):
    imgs = rendered["images"][:3]
    out = tmp_path / "out"
    # a central bbox whose enlarged crop (x1.28) lies inside the 224 image: every joint is inside
    rc = pose_main(["predict", *map(str, imgs), "--checkpoint", str(ckpt), "--out", str(out),
                    "--bbox", "56,56,168,168", "--intrinsics", "600,600,111.5,111.5", "--heatmaps",
                    "--no-progress", "--height", "200"])
    assert rc == 0
    for p in imgs:
        d = json.loads((out / f"{p.stem}.json").read_text())
        _check_schema(d, 224, 224, camera=True, inside=(-0.5, -0.5, 223.5, 223.5))
        assert d["bbox_source"] == "given" and d["camera"]["source"] == "given"
        png = cv2.imread(str(out / f"{p.stem}.png"))
        assert png is not None and png.shape[:2] == viz.pose_panel_size((224, 224), 3, 200) == (200, 800)
        hm = cv2.imread(str(out / f"{p.stem}_heatmaps.png"))
        assert hm is not None and hm.shape[1] == 6 * 160


def test_predict_cli_full_image_joints_inside_crop_box(rendered, ckpt, tmp_path):
    img = rendered["images"][5]
    out = tmp_path / "o"
    assert pose_main(["predict", str(img), "--checkpoint", str(ckpt), "--out", str(out), "--no-progress",
                      "--no-detect"]) == 0
    d = json.loads((out / f"{img.stem}.json").read_text())
    half = 224 * 1.28 / 2  # crop box of the whole image, enlarged as in training
    _check_schema(d, 224, 224, camera=False, inside=(111.5 - half, 111.5 - half, 111.5 + half, 111.5 + half))
    assert d["bbox_source"] == "full_image" and d["root_depth_source"] == "bone_fit"
    assert cv2.imread(str(out / f"{img.stem}.png")).shape[:2] == (400, 400 + 3 * 400)


@pytest.mark.parametrize("method,root", [("argmax", "gt"), ("soft_argmax", "gt"), ("argmax", "fit")])
def test_api_equals_evaluation(rendered, ckpt, method, root):
    """Predictor.predict on the stored image with the stored bbox == evaluation's batch decode."""
    from pose.data import PackedDataset
    from pose.data.dataset import decode_image

    pred = Predictor.from_checkpoint(ckpt)
    ds = PackedDataset(rendered["packed"] / "test", input_size=pred.input_size)
    assert ds.bbox_enlarge == pred.bbox_enlarge
    rows = [0, min(3, len(ds) - 1)]
    batch = {k: torch.stack([ds[i][k] for i in rows]) for k in ds[0]}
    with torch.no_grad():
        _, vol = pred.model(batch["image"])
    ev = decode_batch(vol, batch, stride=pred.stride, depth_range=pred.depth_range, method=method, root=root,
                      softmax_scale=30.0).numpy()
    a = ds.arrays
    m = method
    for b, row in enumerate(rows):
        img = np.ascontiguousarray(decode_image(ds.images[row])[:, :, ::-1])
        K_img = intrinsics_for_image(a["K"][row], a["img_to_raw"][row])
        res = pred.predict(img, bbox=a["bbox"][row], K=K_img,
                           root_depth=float(batch["root_depth"][b]) if root == "gt" else None)
        got = res.decodings[m]
        np.testing.assert_allclose(got["joints_3d_camera"], ev[b], atol=0.05, rtol=1e-5)
        raw_uv = apply_affine(got["joints_2d"], a["img_to_raw"][row].astype(np.float64))
        np.testing.assert_allclose(raw_uv, project(ev[b], a["K"][row].astype(np.float64)), atol=1e-3)


def test_predict_batch_equals_single_and_uses_root_depth(rendered, ckpt):
    pred = Predictor.from_checkpoint(ckpt, batch_size=2)
    imgs = [str(p) for p in rendered["images"][:3]]
    many = pred.predict_batch(imgs)
    for p, r in zip(imgs, many, strict=True):
        one = pred.predict(p)
        np.testing.assert_allclose(one.joints_3d, r.joints_3d, atol=1e-6)
        np.testing.assert_allclose(one.confidence, r.confidence, atol=1e-6)
        assert one.joints_2d.shape == (17, 2) and one.confidence.shape == (17,)
    r = pred.predict(imgs[0], K=(600, 600, 111.5, 111.5), root_depth=4321.0)
    assert r.root_depth_source == "given" and r.root_depth == 4321.0
    np.testing.assert_allclose(r.joints_3d_camera[:, 2] - r.z_rel, 4321.0, atol=1e-6)  # Z = root depth + z_rel


def test_bad_inputs_api(rendered, ckpt, tmp_path):
    pred = Predictor.from_checkpoint(ckpt)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"):
        pred.predict(bad)
    with pytest.raises(ValueError, match="bbox.*outside the image"):
        pred.predict(rendered["images"][0], bbox=(300, 300, 400, 400))
    with pytest.raises(ValueError, match="bbox"):
        pred.predict(rendered["images"][0], bbox=(50, 50, 40, 60))
    with pytest.raises(ValueError, match="K"):
        pred.predict(rendered["images"][0], K=(0, 600, 1, 1))


def _other_size_checkpoint(path: Path) -> Path:
    """A checkpoint whose weights are the tiny model's but whose config says micro."""
    tiny = C2FPoseNet(ModelConfig.preset("tiny", d2=4))
    save_checkpoint(path, tiny, bbox_enlarge=1.28, softmax_scale=30.0)
    ck = torch.load(path, weights_only=True)
    ck["model_config"] = ModelConfig.preset("micro", d2=4).to_dict()
    torch.save(ck, path)
    return path


def test_bad_inputs_cli_one_line_each_others_processed(rendered, ckpt, tmp_path, capsys):
    good = rendered["images"][:2]
    bad_img = tmp_path / "broken.jpg"
    bad_img.write_bytes(b"\x00\x01 not a jpeg")
    bad_vid = tmp_path / "broken.mp4"
    bad_vid.write_bytes(b"not a video")
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((40, 40, 3), np.uint8))
    out = tmp_path / "out"
    rc = pose_main(["predict", str(good[0]), str(bad_img), str(bad_vid), str(good[1]), str(small),
                    "--checkpoint", str(ckpt), "--out", str(out), "--bbox", "60,60,160,160", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 3, err
    assert any("broken.jpg" in ln and "cannot be read" in ln for ln in lines)
    assert any("broken.mp4" in ln and "cannot be opened" in ln for ln in lines)
    assert any("small.png" in ln and "outside the image" in ln for ln in lines)
    for p in good:
        assert (out / f"{p.stem}.json").is_file() and (out / f"{p.stem}.png").is_file()
    # a checkpoint from another model size: one line, exit 2
    other = _other_size_checkpoint(tmp_path / "other.pt")
    rc = pose_main(["predict", str(good[0]), "--checkpoint", str(other), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "other.pt" in lines[0] and "do not fit" in lines[0]
    with pytest.raises(ValueError, match="do not fit"):
        Predictor.from_checkpoint(other)


def test_predict_cli_video(rendered, ckpt, tmp_path):
    vid = tmp_path / "clip.mp4"
    w = cv2.VideoWriter(str(vid), cv2.VideoWriter_fourcc(*"mp4v"), 10, (224, 224))
    assert w.isOpened()
    for p in rendered["images"][:3]:
        w.write(cv2.imread(str(p)))
    w.release()
    out = tmp_path / "out"
    assert pose_main(["predict", str(vid), "--checkpoint", str(ckpt), "--out", str(out), "--no-progress",
                      "--height", "120", "--batch-size", "2"]) == 0
    frames = sorted((out / "clip").glob("frame_*.json"))
    assert len(frames) == 3
    d = json.loads(frames[-1].read_text())
    assert d["frame"] == 2 and d["joint_names"] == list(JOINT_NAMES_17)
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    n = 0
    while True:
        ok, f = cap.read()
        if not ok:
            break
        n += 1
        assert f.shape[:2] == (120, 480)
    cap.release()
    assert n == 3


def test_predict_cli_lifter(rendered, ckpt, tmp_path):
    lifting = pytest.importorskip("pose.lifting")
    torch.manual_seed(0)
    lifter = lifting.Lifter(lifting.LifterConfig(width=64, blocks=1))
    lifter.eval()
    lpath = tmp_path / "lifter.pt"
    lifting.save_lifter(lpath, lifter)
    out = tmp_path / "out"
    img = rendered["images"][0]
    assert pose_main(["predict", str(img), "--checkpoint", str(ckpt), "--lifter", str(lpath), "--out", str(out),
                      "--no-progress", "--height", "100", "--no-detect"]) == 0
    d = json.loads((out / f"{img.stem}.json").read_text())
    lifted = np.asarray(d["lifted_3d_mm"])
    assert lifted.shape == (17, 3) and np.isfinite(lifted).all()
    # the lifter keeps the stage-1 2D shape: x, y of the lifted pose follow the 2D joints' layout
    assert cv2.imread(str(out / f"{img.stem}.png")).shape[:2] == (200, 400)


def test_show_writes_png(rendered, ckpt, tmp_path, capsys):
    out = tmp_path / "show.png"
    assert pose_main(["show", "--checkpoint", str(ckpt), "--data", str(rendered["packed"] / "test"), "-n", "2",
                      "--out", str(out), "--height", "100"]) == 0
    png = cv2.imread(str(out))
    assert png is not None and png.shape == (2 * (22 + 100), 4 * 100, 3)
    assert "mean MPJPE" in capsys.readouterr().err
    rc = pose_main(["show", "--checkpoint", str(tmp_path / "missing.pt"), "--data",
                    str(rendered["packed"] / "test"), "--out", str(out)])
    assert rc == 1


def test_api_flip_test_equals_evaluation(rendered, tmp_path):
    """Predictor(flip_test=True) decodes the same flip-averaged outputs as the evaluation (predict_loader)."""
    from pose.data import PackedDataset
    from pose.data.dataset import decode_image

    torch.manual_seed(0)  # kaiming init: outputs far from 0, so the mirrored pass really differs
    model = C2FPoseNet(ModelConfig.preset("micro", d2=4, init="kaiming", heatmap2_std=1.0))
    save_checkpoint(tmp_path / "model.pt", model, bbox_enlarge=1.28, softmax_scale=30.0)
    pred = Predictor.from_checkpoint(tmp_path / "model.pt", flip_test=True)
    rows = [0, 1]
    ds = PackedDataset(rendered["packed"] / "test", input_size=pred.input_size, indices=rows)
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    soft = {"mpjpe_soft": ("soft_argmax", "gt")}
    ev = predict_loader(pred.model, loader, depth_range=pred.depth_range, device="cpu", decodings=soft, flip_test=True)
    plain = predict_loader(pred.model, loader, depth_range=pred.depth_range, device="cpu", decodings=soft)
    a = ds.arrays
    for b, row in enumerate(rows):
        img = np.ascontiguousarray(decode_image(ds.images[row])[:, :, ::-1])
        res = pred.predict(img, bbox=a["bbox"][row], K=intrinsics_for_image(a["K"][row], a["img_to_raw"][row]),
                           root_depth=float(ev["gt"][b, 0, 2]))
        np.testing.assert_allclose(res.decodings["soft_argmax"]["joints_3d_camera"], ev["mpjpe_soft"][b],
                                   atol=0.05, rtol=1e-5)
    assert np.abs(ev["mpjpe_soft"] - plain["mpjpe_soft"]).max() > 1e-3  # flip averaging changed the outputs


def test_prediction_settings_come_from_the_checkpoint(tmp_path):
    """A checkpoint carries the crop factor and soft-argmax scale its stage trained with (JSON-layout
    data crops at 1.25, the seed layout at 1.28): the Predictor uses them; one without them is refused
    by name."""
    path = save_checkpoint(tmp_path / "json.pt", C2FPoseNet(ModelConfig.preset("micro", d2=4)), bbox_enlarge=1.25,
                           softmax_scale=12.5)
    pred = Predictor.from_checkpoint(path)
    assert (pred.bbox_enlarge, pred.softmax_scale) == (1.25, 12.5)
    assert Predictor.from_checkpoint(path, bbox_enlarge=1.4).bbox_enlarge == 1.4  # an explicit choice wins
    ck = torch.load(path, weights_only=True)
    del ck["bbox_enlarge"]
    torch.save(ck, tmp_path / "old.pt")
    with pytest.raises(ValueError, match=r"old\.pt lacks bbox_enlarge"):
        Predictor.from_checkpoint(tmp_path / "old.pt")
    with pytest.raises(ValueError, match="bbox_enlarge must be a positive number"):
        save_checkpoint(tmp_path / "x.pt", C2FPoseNet(ModelConfig.preset("micro", d2=4)), bbox_enlarge=0,
                        softmax_scale=30.0)
