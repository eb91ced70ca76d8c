"""People found in photos: ``pose.detect`` (OpenCV's HOG people detector) on rendered people placed in
larger photos (``pose.data.synth.photo``), and ``pose predict`` without ``--bbox``."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pose.data.synth.photo import PersonSpec, render_photo
from pose.detect import box_iou, detect_people, detector_available
from pose.model import C2FPoseNet, ModelConfig, save_checkpoint
from pose.tools.cli import main as pose_main

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(not detector_available(), reason="this OpenCV build has no HOG detector")]

TWO = [PersonSpec("walk", 0.7, 0.45, 0.3, 0.5, 1.0), PersonSpec("punch", 0.3, 0.6, 0.72, 0.55, 2.0)]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, C2FPoseNet(ModelConfig.preset("micro", d2=4, heatmap2_std=1.0)),
                    bbox_enlarge=1.28, softmax_scale=30.0)
    return path


def test_person_filling_a_third_of_the_photo_is_found():
    img, gt = render_photo([PersonSpec("walk", 0.7, 1 / 3, 0.5, 0.5, 1.0)], seed=0)
    dets = detect_people(img)
    assert len(dets) == 1
    assert box_iou(dets[0].bbox, gt[0]) > 0.85  # measured 0.937
    assert dets[0].score > 0.5


def test_two_people_largest_first_and_max_people():
    img, gt = render_photo(TWO, seed=1)
    dets = detect_people(img)
    assert len(dets) == 2
    assert dets[0].area > dets[1].area
    assert box_iou(dets[0].bbox, gt[1]) > 0.75 and box_iou(dets[1].bbox, gt[0]) > 0.75
    one = detect_people(img, max_people=1)
    assert len(one) == 1 and np.allclose(one[0].bbox, dets[0].bbox)


def test_empty_photo_and_bad_input():
    img, gt = render_photo([], seed=2)
    assert gt.shape == (0, 4) and detect_people(img) == []
    with pytest.raises(ValueError, match="image"):
        detect_people(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="max_people"):
        detect_people(img, max_people=0)


def test_predict_cli_finds_people_draws_boxes_and_falls_back(ckpt, tmp_path, capsys):
    photos = tmp_path / "in"
    photos.mkdir()
    img, gt = render_photo(TWO, seed=1)
    cv2.imwrite(str(photos / "two.jpg"), img)
    cv2.imwrite(str(photos / "empty.png"), render_photo([], seed=2)[0])
    out = tmp_path / "out"
    rc = pose_main(["predict", str(photos), "--checkpoint", str(ckpt), "--out", str(out), "--no-progress",
                    "--height", "100", "--max-people", "2"])
    assert rc == 0
    err = capsys.readouterr().err
    # one line for the photo without a person, and it was still predicted from the whole image
    assert [ln for ln in err.splitlines() if "no person found" in ln] == [
        f"pose predict: {photos / 'empty.png'}: no person found; using the whole image"]
    empty = json.loads((out / "empty.json").read_text())
    assert empty["bbox_source"] == "full_image" and empty["person"] == 1 and empty["detection_score"] is None
    first, second = (json.loads((out / n).read_text()) for n in ("two.json", "two_person2.json"))
    assert first["bbox_source"] == second["bbox_source"] == "detected"
    assert (first["person"], second["person"], first["people"]) == (1, 2, 2)
    assert box_iou(np.array(first["bbox"]), gt[1]) > 0.75 and box_iou(np.array(second["bbox"]), gt[0]) > 0.75
    assert first["detection_score"] > 0.5
    # each person's joints lie in its own (enlarged) box, not spread over the photo
    for d in (first, second):
        x1, y1, x2, y2 = d["bbox"]
        side = max(x2 - x1, y2 - y1) * 1.28
        uv = np.asarray(d["joints_2d"])
        assert (np.abs(uv - [(x1 + x2) / 2, (y1 + y2) / 2]) <= side / 2 + 1).all()
    png = cv2.imread(str(out / "two.png"))
    assert png.shape[:2] == (200, 150 + 3 * 100)  # one row per person
    assert not (out / "two_person3.json").exists()
    # --bbox overrides the detector
    out2 = tmp_path / "given"
    assert pose_main(["predict", str(photos / "two.jpg"), "--checkpoint", str(ckpt), "--out", str(out2),
                      "--no-progress", "--bbox", "100,100,400,500"]) == 0
    d = json.loads((out2 / "two.json").read_text())
    assert d["bbox_source"] == "given" and d["bbox"] == [100, 100, 400, 500] and d["people"] == 1
    assert not (out2 / "two_person2.json").exists()
