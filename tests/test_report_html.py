"""workflows/evaluate.py's report.html: one self-contained page, read back by a real headless Chromium
(the DOM it builds, and a screenshot). The checkpoints are untrained micro models (nothing is trained);
the data are the session's micro packed split."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pose.model import C2FPoseNet, ModelConfig, save_checkpoint
from workflows.config import make_profile, write_config

pytestmark = pytest.mark.timeout(600)

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browser() -> str | None:
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, micro_packed) -> Path:
    """A project root with untrained micro checkpoints for every stage, two-epoch curves, evaluated."""
    from workflows.evaluate import main

    root = tmp_path_factory.mktemp("proj")
    cfg = make_profile("micro")
    cfg["data"]["real_test"] = None  # the embedded split only (tests/test_dvc_pipeline.py runs both)
    write_config(cfg, root / "stages.yaml")
    (root / "outputs" / "data").mkdir(parents=True)
    (root / "outputs" / "data" / "packed").symlink_to(micro_packed, target_is_directory=True)
    for k, (key, st) in enumerate(cfg["train"].items()):
        torch.manual_seed(k)
        model = C2FPoseNet(ModelConfig.preset("micro", d2=st["d2"], heatmap2_std=1.0))
        save_checkpoint(root / "outputs" / "stages" / key / "model.pt", model, bbox_enlarge=1.28,
                        softmax_scale=30.0)
        (root / "outputs" / "stages" / key / "curve.csv").write_text(
            f"epoch,loss,val_mpjpe,val_mpjpe_soft\n1,1.0,{500 - 40 * k},{520 - 40 * k}\n2,0.9,{480 - 40 * k},{510 - 40 * k}\n")
    assert main(["--config", str(root / "stages.yaml"), "--root", str(root)]) == 0
    return root / "outputs" / "eval"


def test_report_html_is_self_contained(evaluated):
    page = (evaluated / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    # nothing is fetched: no http(s) or file references, every image inline
    assert not re.search(r"(src|href)=\"(?!data:)", page)
    assert "| d2_64 |" in (evaluated / "report.md").read_text()
    # per stage (with the mean pose), per action final, per action every stage, per joint group
    assert page.count("<table>") == 4
    assert page.count('class="gallery best"') == 4 and page.count('class="gallery worst"') == 4
    errs = [float(v) for v in re.findall(r"test frame \d+, \w+: ([\d.]+) mm</figcaption>", page)]
    assert len(errs) == 8 and max(errs[:4]) <= min(errs[4:])  # the best are better than the worst


def test_report_html_in_headless_chromium(evaluated, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip(f"no headless browser found ({', '.join(BROWSERS)}); .ci/run installs Debian's chromium")
    url = (evaluated / "report.html").resolve().as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    tables = re.findall(r"<table>(.*?)</table>", html, re.S)
    assert len(tables) == 4  # per stage, per action final, per action every stage, per joint group
    stage_rows = re.findall(r"<tr>(.*?)</tr>", tables[0], re.S)
    assert len(stage_rows) == 1 + 6 + 1  # header, six stages, mean pose
    assert "mean pose" in stage_rows[-1] and re.search(r"<td class=\"num\">\d+\.\d</td>", stage_rows[1])
    assert len(re.findall(r"<img alt=\"[^\"]+\" src=\"data:image/png;base64,", html)) == 2 + 8
    shot = tmp_path / "report.png"
    r = subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1280,3000", url],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    img = cv2.imread(str(shot))
    assert img.shape[:2] == (3000, 1280)  # tall enough for the tables and the first plots
    # the page is drawn: not blank, and the inline plots/pictures add colour (not only black text on white)
    assert img.std() > 20
    sat = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)[..., 1]
    assert (sat > 80).mean() > 0.01
    if (out := _keep_dir()) is not None:
        shutil.copyfile(shot, out / "report.png")


def _keep_dir() -> Path | None:
    """$REPORT_SCREENSHOT_DIR, when set: where the screenshot is also kept (for docs/)."""
    import os

    d = os.environ.get("REPORT_SCREENSHOT_DIR")
    return Path(d) if d else None


def test_gallery_picks_best_and_worst():
    from workflows.gallery import pick_frames

    err = np.array([5.0, 1.0, 9.0, 3.0, 7.0])
    assert pick_frames(err, 2) == ([1, 3], [2, 4])
    assert pick_frames(err, 9) == ([1, 3], [2, 4])  # never the same frame twice
