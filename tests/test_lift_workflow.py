"""Tests of workflows/lift.py: params, the training function (drawn poses, evaluated on a tiny packed
split of real poses), the Ray run."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pose import lifting as L
from pose.lifting import data as LD
from workflows import lift as W
from workflows.common import UserError

FIXTURE = LD.VALID_FIXTURE
pytestmark = pytest.mark.skipif(not FIXTURE.is_file(), reason="real H36M fixture not available")

TINY = {"width": 32, "blocks": 1, "eval_every": 0, "poses": 300}


def write_packed_split(out: Path, rows: slice) -> Path:
    """A packed split (``pose prepare`` format, arrays + meta.json only) from the H36M fixture."""
    from pose.data.packed import PACK_VERSION, file_entry

    d = np.load(FIXTURE)
    S, K = d["S"][rows].astype(np.float32), d["K"][rows].astype(np.float32)
    n = len(S)
    uv = np.einsum("nij,nkj->nki", K, S)
    j2 = uv[..., :2] / uv[..., 2:]
    A = np.tile(np.array([[1, 0, 0], [0, 1, 0]], np.float32), (n, 1, 1))
    out.mkdir(parents=True)
    arrays = {
        "joints_2d": j2.astype(np.float32), "joints_3d": S, "K": K, "R": np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)),
        "T": np.zeros((n, 3), np.float32), "dist": np.zeros((n, 5), np.float32), "bbox": np.zeros((n, 4), np.float32),
        "img_to_raw": A, "visible": np.ones((n, 17), bool), "has_depth": np.ones(n, bool),
        "subject": np.full(n, 9, np.int32), "action": np.where(np.arange(n) % 2 == 0, 5, 0).astype(np.int32),
        "subaction": np.ones(n, np.int32), "camera": np.ones(n, np.int32), "frame": np.arange(n, dtype=np.int32) * 5,
        "index": np.arange(n, dtype=np.int32),
    }
    for k, v in arrays.items():
        np.save(out / f"{k}.npy", v)
    from pose.skeleton import ACTIONS_H36M

    files = {f"{k}.npy": file_entry(out / f"{k}.npy") for k in arrays}
    (out / "meta.json").write_text(json.dumps({"version": PACK_VERSION, "count": n,
                                               "action_names": list(ACTIONS_H36M), "files": files}))
    return out


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lift") / "packed"
    write_packed_split(root / "train", slice(0, 197))
    write_packed_split(root / "test", slice(197, 394))
    return root


def test_resolve_params_defaults_and_errors():
    p = W.resolve_params("unsupervised", {"iterations": 10}, global_seed=3)
    assert p["iterations"] == 10 and p["seed"] == 3 and p["lr"] == 1e-3 and p["lr_disc"] == 1e-4
    assert p["w_2d"] == 10.0 and p["w_3d"] == 0.001 and p["w_t"] == 1.0 and p["cap"] == 0.9
    assert W.resolve_params("supervised", None)["output"] == "xyz"
    with pytest.raises(UserError, match="lift.unsupervised: params: unknown keys \\['iterationz'\\]"):
        W.resolve_params("unsupervised", {"iterationz": 3})
    q = W.resolve_params("supervised", {"epochs": 2, "width": 64})
    assert q["epochs"] == 2 and q["width"] == 64
    with pytest.raises(UserError, match="epochs"):
        W.resolve_params("supervised", {"epochs": -1})
    with pytest.raises(UserError, match="camera"):
        W.resolve_params("supervised", {"camera": "fisheye"})
    assert W.resolve_params("supervised", None)["poses"] == 200_000
    for key, bad in (("poses", 0), ("poses", 2.5), ("subjects", 0), ("limb_mix", 1.5), ("noise_px", -1), ("poses", True),
                     ("joint_jitter", "yes"), ("mirror", 1.5), ("limb_prior", -0.5), ("cpus", 0), ("cpus", 1.5)):
        with pytest.raises(UserError, match=f"lift.supervised.{key}: must be"):
            W.resolve_params("supervised", {key: bad})


def test_lift_cpus_default_to_a_training_worker_s():
    cfg = {"ray": {"cpus_per_worker": 1.0}}
    assert W.lift_cpus(W.resolve_params("supervised", None), cfg) == 1
    assert W.lift_cpus(W.resolve_params("supervised", {"cpus": 2}), cfg) == 2


def test_from_packed_reads_split(packed):
    ps = LD.from_packed(packed / "test")
    assert ps.joints_2d.shape == (197, 17, 2) and ps.joints_3d.shape == (197, 17, 3)
    assert set(np.unique(ps.action)) == {0, 5} and ps.action_names[5] == "Posing"  # indices into action_names, as the readers store them
    x, y, _ = LD.to_unit_space(ps)
    assert np.abs(x - y[..., :2]).mean() < 0.05


@pytest.mark.parametrize("mode", ["supervised", "unsupervised"])
def test_run_training_metrics(packed, mode):
    params = W.resolve_params(mode, {**TINY, "epochs": 0.25, "batch_size": 16})  # ceil(0.25·300/16) = 5 iterations
    splits = {"test": str(packed / "test"), "real": str(packed / "train")}
    lifter, metrics, hist = W.run_training({"mode": mode, "params": params, "splits": splits})
    for split in splits:
        m = metrics[split]
        for k in ("mpjpe_scaled", "pa_mpjpe", "sign_agnostic_pa_mpjpe", "flat_pa_mpjpe", "ratio_to_flat",
                  "n_ratio_to_flat"):
            assert np.isfinite(m[k]), k
        assert m["sign_agnostic_pa_mpjpe"] <= m["pa_mpjpe"] + 1e-9
        assert m["ratio_to_flat"] == pytest.approx(m["pa_mpjpe"] / m["flat_pa_mpjpe"])
        assert m["n_ratio_to_flat"] == pytest.approx(m["mpjpe_scaled"] / m["flat_mpjpe_scaled"])
        assert 50 < m["flat_pa_mpjpe"] < 200 and m["test_count"] == 197
        assert "Posing" in json.dumps(m["per_action"]["pa_mpjpe"])
    assert metrics["train_count"] == 300
    assert hist[-1]["iteration"] == 5
    if mode == "supervised":
        assert 300 < float(lifter.unit_mm) < 700


def test_run_training_rejects_bad_extra_2d(packed, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, joints_2d=np.zeros((3, 16, 2)))
    params = W.resolve_params("unsupervised", {**TINY, "iterations": 1, "extra_2d": [str(bad)]})
    with pytest.raises(ValueError, match="bad.npz: expected 17 joints"):
        W.run_training({"mode": "unsupervised", "params": params, "splits": {"test": str(packed / "test")}})


@pytest.mark.slow
def test_lift_workflow_under_ray(packed, tmp_path, monkeypatch):
    """End to end: stages.yaml → Ray Train (private local instance) → outputs/lift/<mode>/."""
    from workflows.config import make_profile, write_config

    cfg = make_profile("micro")
    cfg["data"]["real_test"] = None  # no real-pose split under tmp_path: the test split only
    cfg["lift"] = {"unsupervised": {**TINY, "iterations": 4, "batch_size": 16},
                   "supervised": {**TINY, "iterations": 4, "batch_size": 16}}
    cfg["ray"]["cpus_per_worker"] = 1.0
    conf = write_config(cfg, tmp_path / "stages.yaml")
    monkeypatch.setenv("RAY_ADDRESS", "local")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    extra = tmp_path / "extra2d.npz"
    np.savez(extra, joints_2d=LD.load_valid_fixture().joints_2d[:50])
    rc = W.main(["--mode", "unsupervised", "--config", str(conf), "--root", str(tmp_path), "--data", str(packed),
                 "--extra-2d", str(extra)])
    assert rc == 0
    out = tmp_path / "outputs" / "lift" / "unsupervised"
    m = json.loads((out / "metrics.json").read_text())
    assert m["mode"] == "unsupervised" and m["train_count"] == 300 + 50 and re.fullmatch(r"lift_unsupervised-[0-9a-f]{12}", m["run_name"])
    assert set(m) >= {"test"} and "real" not in m and m["test"]["test_count"] == 197
    assert (out / "curve.csv").read_text().startswith("iteration")
    ck = torch.load(out / "model.pt", weights_only=True)
    assert ck["mode"] == "unsupervised"
    lifter = L.load_lifter(out / "model.pt")
    assert L.lift_2d(lifter, LD.load_valid_fixture().joints_2d[:3]).shape == (3, 17, 3)
    assert not list((tmp_path / "outputs" / "ray").glob("lift_*"))  # run folder cleaned (keep_runs false)
    import ray

    assert not ray.is_initialized()
    assert os.environ["RAY_ADDRESS"] == "local"


@pytest.mark.slow
def test_a_killed_lift_resumes_from_its_last_checkpoint(packed, tmp_path, monkeypatch, capsys):
    """The lift stages keep their checkpoints in the training stages' store: a lift that died after
    its checkpoint at iteration 20 (its final checkpoint removed, as if killed before writing it)
    resumes there when the same command runs again, and ends with the uninterrupted run's figures."""
    from workflows.config import make_profile, write_config

    cfg = make_profile("micro")
    cfg["data"]["real_test"] = None
    cfg["lift"] = {"supervised": {**TINY, "iterations": 30, "batch_size": 16, "eval_every": 10}}
    cfg["ray"].update(cpus_per_worker=1.0, keep_runs=True)
    conf = write_config(cfg, tmp_path / "stages.yaml")
    monkeypatch.setenv("RAY_ADDRESS", "local")
    monkeypatch.setattr(W, "CHECKPOINT_EVERY", 10)
    argv = ["--mode", "supervised", "--config", str(conf), "--root", str(tmp_path), "--data", str(packed)]
    assert W.main(argv) == 0
    out = tmp_path / "outputs" / "lift" / "supervised"
    first = json.loads((out / "metrics.json").read_text())
    run = tmp_path / "outputs" / "ray" / first["run_name"] / "checkpoints"
    assert sorted(p.name for p in run.iterdir()) == ["ckpt-000000020", "ckpt-000000030"]  # keep=2
    shutil.rmtree(run / "ckpt-000000030")
    capsys.readouterr()
    assert W.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"[lift supervised] resuming from iteration 20 of run {first['run_name']}" in printed
    assert "[lift supervised] resumed at iteration 20" in printed
    again = json.loads((out / "metrics.json").read_text())
    assert again["run_name"] == first["run_name"] and again["test"] == first["test"]
    assert [r["iteration"] for r in csv_rows(out / "curve.csv")] == ["10", "20", "30"]


def csv_rows(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def test_missing_data_is_one_line_error(tmp_path, capsys):
    from workflows.common import run_cli
    from workflows.config import make_profile, write_config

    conf = write_config(make_profile("micro"), tmp_path / "stages.yaml")
    rc = run_cli(W.main, ["--mode", "supervised", "--config", str(conf), "--root", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "prepared data not found:" in err[0] and "packed/test/meta.json" in err[0]
    # with the test split present, a missing real-pose split is named with the stage that makes it
    write_packed_split(tmp_path / "outputs" / "data" / "packed" / "test", slice(0, 20))
    rc = run_cli(W.main, ["--mode", "supervised", "--config", str(conf), "--root", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "outputs/data/real/packed/test/meta.json (run `dvc repro real_split`)" in err[0]


def test_incomplete_packed_copy_is_one_line_error(tmp_path, capsys):
    from workflows.common import run_cli
    from workflows.config import make_profile, write_config

    write_packed_split(tmp_path / "packed" / "train", slice(0, 20))
    write_packed_split(tmp_path / "packed" / "test", slice(20, 30))
    array = tmp_path / "packed" / "test" / "joints_3d.npy"
    n = array.stat().st_size
    array.write_bytes(array.read_bytes()[:-12])
    conf = write_config(make_profile("micro"), tmp_path / "stages.yaml")
    rc = run_cli(W.main, ["--mode", "supervised", "--config", str(conf), "--root", str(tmp_path),
                          "--data", str(tmp_path / "packed")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err == [f"error: {array}: {n - 12:,} bytes, meta.json records {n:,} (an incomplete copy of "
                               f"{tmp_path / 'packed' / 'test'}?)"]
