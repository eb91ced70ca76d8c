"""workflows/stage.py: bad input handling, checkpoint hand-over between stages (Ray Train)."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from workflows.config import make_profile, write_config

STAGE = Path(__file__).resolve().parent.parent / "workflows" / "stage.py"


def _root(tmp_path: Path, packed: Path | None, stages: list[str] | None = None, wandb: bool = False,
          **stage_overrides) -> Path:
    """A project root with a micro stages.yaml (only ``stages`` of its curriculum when given; wandb
    offline when ``wandb``) and (optionally) the packed data linked in."""
    root = tmp_path / "proj"
    root.mkdir()
    cfg = make_profile("micro")
    if stages:
        cfg["train"] = {k: v for k, v in cfg["train"].items() if k in stages}
    cfg["wandb"]["enabled"] = wandb
    cfg["data"]["real_test"] = None  # no real-pose split here (tests/test_real_split.py, the micro dvc repro)
    for key, over in stage_overrides.items():
        cfg["train"][key].update(over)
    write_config(cfg, root / "stages.yaml")
    if packed is not None:
        (root / "outputs" / "data").mkdir(parents=True)
        (root / "outputs" / "data" / "packed").symlink_to(packed, target_is_directory=True)
    return root


def _stage(run_cli, root: Path, d2: int, *extra):
    return run_cli([sys.executable, STAGE, "--d2", d2, "--config", root / "stages.yaml", "--root", root, *extra],
                   cwd=root)


def _one_error_line(r) -> str:
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_broken_stages_yaml(run_cli, tmp_path):
    root = _root(tmp_path, None)
    head, _, train = (root / "stages.yaml").read_text().partition("\ntrain:")
    (root / "stages.yaml").write_text(head + "\ntrain:" + train.replace("lr: 0.002", "lr: -0.002", 1))
    line = _one_error_line(_stage(run_cli, root, 2))
    assert "train.d2_02.lr: must be > 0" in line
    assert not (root / "outputs" / "stages").exists()
    (root / "stages.yaml").write_text("train: {d2_02: [\n")
    assert "not valid YAML" in _one_error_line(_stage(run_cli, root, 2))


def test_unknown_stage(run_cli, tmp_path):
    root = _root(tmp_path, None)
    line = _one_error_line(_stage(run_cli, root, 128))
    assert "no stage with d2=128" in line


def test_missing_data(run_cli, tmp_path):
    root = _root(tmp_path, None)
    line = _one_error_line(_stage(run_cli, root, 2))
    assert "prepared data not found" in line and str(root) in line
    assert not (root / "outputs" / "stages").exists()
    line = _one_error_line(_stage(run_cli, root, 2, "--data", tmp_path / "does-not-exist"))
    assert "does-not-exist" in line


def test_missing_previous_checkpoint(run_cli, tmp_path, micro_packed):
    root = _root(tmp_path, micro_packed)
    line = _one_error_line(_stage(run_cli, root, 16))
    assert "previous stage checkpoint not found" in line and "d2_08/model.pt" in line
    assert not (root / "outputs" / "stages" / "d2_16").exists()


def test_more_than_this_machine_has(run_cli, tmp_path, micro_packed):
    """A private local Ray cannot grow: asking for more CPUs/GPUs than the machine has is one line
    before Ray starts (Ray Train would wait for them for ever)."""
    root = _root(tmp_path, micro_packed)
    n = (os.cpu_count() or 1) + 1
    line = _one_error_line(_stage(run_cli, root, 2, "--num-workers", n))
    assert f"stage d2_02 ({n} worker(s)) needs {n} CPU (this machine has {n - 1})" in line, line
    assert "--num-workers" in line and "RAY_ADDRESS" in line
    if not torch.cuda.is_available():
        line = _one_error_line(_stage(run_cli, root, 2, "--use-gpu"))
        assert "needs 1 GPU (this machine has 0): drop --use-gpu" in line, line
    assert not (root / "outputs" / "stages").exists() and not (root / "outputs" / "ray").exists()


def test_a_partial_copy_of_the_data_stops_before_ray(run_cli, tmp_path, micro_packed):
    """A packed folder copied only in part (a shard cut short) is one line naming the shard, before
    Ray starts, not a decode error in the middle of an epoch."""
    import shutil

    copy = tmp_path / "packed"
    shutil.copytree(micro_packed, copy)
    shard = copy / "train" / "images_000.bin"
    shard.write_bytes(shard.read_bytes()[:1000])
    root = _root(tmp_path, copy)
    r = _stage(run_cli, root, 2)
    line = _one_error_line(r)
    assert "packed/train/images_000.bin: 1,000 bytes, meta.json records " in line and "incomplete copy" in line, line
    assert "Started a local Ray instance" not in r.stdout + r.stderr
    assert not (root / "outputs" / "stages").exists() and not (root / "outputs" / "ray").exists()


def test_make_model_starts_from_previous_weights(tmp_path):
    """Unit level: the hand-over copies every layer but heatmap2, which gets N(0, std) or, with
    heatmap2_init: upsample, the previous head resampled to the new depth bins."""
    from pose.model import C2FPoseNet, ModelConfig, save_checkpoint
    from workflows.config import validate
    from workflows.stage import build_stage_run
    from workflows.stage_run import StageRun
    from workflows.train_loop import make_model

    prev = C2FPoseNet(ModelConfig.preset("micro", d2=4))
    with torch.no_grad():
        for p in prev.parameters():
            p.add_(torch.randn_like(p))
    path = save_checkpoint(tmp_path / "model.pt", prev, bbox_enlarge=1.28, softmax_scale=30.0)
    cfg = validate({**make_profile("micro"), "model": {"preset": "micro"}})
    cfg["train"]["d2_08"].update(heatmap2_std=0.05, heatmap2_init="normal")
    run = build_stage_run(cfg, "d2_08", tmp_path).replace(init_checkpoint=str(path))
    new = make_model(run, seed=3)
    old = dict(prev.named_parameters())
    for name, p in new.named_parameters():
        if name.startswith("heatmap2."):
            continue
        torch.testing.assert_close(p, old[name], rtol=0, atol=0)
    assert new.heatmap2.weight.shape[0] == 17 * 8
    assert float(new.heatmap2.weight.detach().std()) == pytest.approx(0.05, rel=0.1)
    assert float(new.heatmap2.bias.detach().abs().max()) == 0.0
    # heatmap2_init: upsample (the default profile): each of the 8 new bins per joint takes the
    # weights of the old bin (of 4) that holds its centre, i.e. old bin k // 2
    up_settings = run.settings.__class__(**{**run.settings.as_dict(), "heatmap2_init": "upsample"})
    up = make_model(run.replace(settings=up_settings), seed=3)
    w_old = prev.heatmap2.weight.detach().reshape(17, 4, -1)
    torch.testing.assert_close(up.heatmap2.weight.detach().reshape(17, 8, -1), w_old.repeat_interleave(2, 1),
                               rtol=0, atol=0)
    torch.testing.assert_close(up.heatmap2.bias.detach().reshape(17, 8),
                               prev.heatmap2.bias.detach().reshape(17, 4).repeat_interleave(2, 1), rtol=0, atol=0)
    # a Tune trial that samples heatmap2_std re-initialises the head with it (never a silent no-op)
    tuned = make_model(StageRun.from_loop_config({**run.replace(settings=up_settings).loop_config(),
                                                  "heatmap2_std": 0.03}), seed=3)
    assert float(tuned.heatmap2.weight.detach().std()) == pytest.approx(0.03, rel=0.1)
    assert float(tuned.heatmap2.bias.detach().abs().max()) == 0.0


@pytest.mark.slow
def test_checkpoint_handover_between_stages(run_cli, tmp_path, micro_packed):
    """Two real stages under Ray Train: d2_04 starts from d2_02's final weights.

    d2_04 trains with a negligible learning rate, so its final weights must equal d2_02's final
    weights, heatmap2 resampled from 2 to 4 depth bins (the micro profile's ``heatmap2_init:
    upsample``, as the default's). BN running statistics are buffers and do move; they are not
    compared.
    """
    root = _root(tmp_path, micro_packed, stages=["d2_02", "d2_04"], wandb=True, d2_04={"lr": 1e-12})
    r1 = _stage(run_cli, root, 2)
    assert r1.returncode == 0, r1.stdout[-3000:] + r1.stderr[-3000:]
    r2 = _stage(run_cli, root, 4, "--num-workers", "1")
    assert r2.returncode == 0, r2.stdout[-3000:] + r2.stderr[-3000:]
    out = root / "outputs" / "stages"
    for key in ("d2_02", "d2_04"):
        assert sorted(p.name for p in (out / key).iterdir()) == ["curve.csv", "metrics.json", "model.pt"]
    a = torch.load(out / "d2_02" / "model.pt", weights_only=True)
    b = torch.load(out / "d2_04" / "model.pt", weights_only=True)
    assert (a["d2"], b["d2"]) == (2, 4) and b["stage"] == "d2_04"
    assert b["init_checkpoint"].endswith("d2_02/model.pt")
    # what prediction needs travels with the weights: the training data's crop factor and the stage's scale
    meta = json.loads((micro_packed / "train" / "meta.json").read_text())
    assert b["bbox_enlarge"] == meta["bbox_enlarge"] and b["softmax_scale"] == b["train"]["softmax_scale"] == 30.0
    params = [k for k in a["model"] if "running_" not in k and "num_batches" not in k]
    compared = 0
    for k in params:
        want = a["model"][k]
        if k.startswith("heatmap2."):  # (17·2, ...) → (17·4, ...): old bin k // 2 for new bin k
            want = want.reshape(17, 2, -1).repeat_interleave(2, 1).reshape(b["model"][k].shape)
        torch.testing.assert_close(b["model"][k], want, rtol=0, atol=1e-8)
        compared += 1
    assert compared > 20
    assert b["model"]["heatmap2.weight"].shape[0] == 17 * 4
    m = json.loads((out / "d2_04" / "metrics.json").read_text())
    assert m["stage"] == "d2_04" and m["init"] == "d2_02" and m["val_mpjpe"] > 0
    curve = (out / "d2_04" / "curve.csv").read_text().splitlines()
    assert curve[0].startswith("epoch,iteration,loss,val_mpjpe") and len(curve) >= 2
    # the run is named by its identity; its folder went with the publish, so a rerun trains again
    # from the start (no silent resume of anything), ends where the first run did, republishes atomically
    r3 = _stage(run_cli, root, 4)
    assert r3.returncode == 0
    m2 = json.loads((out / "d2_04" / "metrics.json").read_text())
    assert m2["run_name"] == m["run_name"] and re.fullmatch(r"d2_04-[0-9a-f]{12}", m["run_name"])
    assert f"starting d2_04 fresh (run {m['run_name']})" in r3.stdout
    assert "A run snapshot was found" not in r3.stdout + r3.stderr
    assert m2["val_mpjpe"] == m["val_mpjpe"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging leftovers
    cfg = yaml.safe_load((root / "stages.yaml").read_text())
    assert cfg["train"]["d2_04"]["lr"] == pytest.approx(1e-12)

    # ---- one curriculum, one wandb view (wandb.enabled, offline): the evaluation joins the stages' group
    r4 = run_cli([sys.executable, "-m", "workflows.evaluate", "--config", root / "stages.yaml", "--root", root],
                 cwd=root)
    assert r4.returncode == 0, r4.stdout[-3000:] + r4.stderr[-3000:]
    _assert_one_wandb_view(root, {"d2_02": 2, "d2_04": 2}, m["run_name"])


def _assert_one_wandb_view(root: Path, iterations: dict[str, int], d2_04_run: str) -> None:
    """The offline runs of the curriculum: one group; each stage a run (job_type stage) with its config,
    per-epoch metrics on the curriculum's step axis and its model artifact; the
    evaluation a run (job_type evaluate) with its tables and plots."""
    from wandb_runs import offline_runs, read_offline_run

    from workflows.wandb_log import CURRICULUM_STEP

    runs = [read_offline_run(d) for d in offline_runs(root / "outputs" / "wandb")]
    groups = {r["group"] for r in runs}
    assert len(groups) == 1 and next(iter(groups)).startswith("curriculum-"), groups
    stages = [r for r in runs if r["job_type"] == "stage"]
    evals = [r for r in runs if r["job_type"] == "evaluate"]
    assert len(evals) == 1 and len(runs) == len(stages) + 1
    assert {r["name"] for r in stages} == set(iterations)
    assert d2_04_run in {r["run_id"] for r in stages}  # the stage run's name is its wandb id
    offset = 0
    for key, its in iterations.items():
        for run in (r for r in stages if r["name"] == key):  # d2_04 ran twice (same id: the same run)
            assert run["config"]["stage"] == key and run["config"]["settings"]["d2"] == int(key[3:])
            hist = [h for h in run["history"] if "val_mpjpe" in h]
            assert [h[CURRICULUM_STEP] for h in hist] == [offset + its]  # one epoch, after the stages before
            assert not [f for f in run["media"] if f.startswith("media/images")]  # stages draw nothing
            assert run["artifacts"] == [{"name": f"model-{key}", "type": "model", "files": ["model.pt"]}]
        offset += its
    ev = evals[0]
    logged = ev["history"][0]
    assert logged["eval/per_stage._type"] == "table-file" and logged["eval/per_action._type"] == "table-file"
    assert logged["eval/per_stage.nrows"] == len(iterations)
    assert {"eval/mpjpe_per_stage._type", "eval/training_curves._type"} <= set(logged)
    assert ev["summary"]["final/stage"] == "d2_04" and ev["summary"]["final/mpjpe_argmax"] > 0


def _local_run(root: Path, key: str, out: Path, **overrides):
    """Run stage ``key`` of ``root``'s stages.yaml in this process (no Ray); returns the context."""
    from workflows.config import load_config
    from workflows.stage import build_stage_run
    from workflows.train_loop import local_context, run_worker

    cfg = load_config(root / "stages.yaml")
    cfg["train"][key].update(overrides)
    wc = local_context("cpu", out)
    run_worker(build_stage_run(cfg, key, root, run_name=f"local-{key}"), wc)
    return wc


@pytest.mark.slow
def test_local_worker_reproduces_the_ray_stage(run_cli, tmp_path, micro_packed):
    """The same loop runs under Ray Train and in one plain process: same seeds, same weights."""
    root = _root(tmp_path, micro_packed)
    r = _stage(run_cli, root, 2)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    wc = _local_run(root, "d2_02", tmp_path / "local")
    a = torch.load(root / "outputs" / "stages" / "d2_02" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "local" / "model.pt", weights_only=True)
    assert sorted(p.name for p in (tmp_path / "local").iterdir()) == ["curve.csv", "model.pt", "train_state.pt"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=0, atol=1e-6)
    m = json.loads((root / "outputs" / "stages" / "d2_02" / "metrics.json").read_text())
    assert [r["iteration"] for r in wc.reports][-1] == 2
    assert wc.reports[-1]["val_mpjpe"] == pytest.approx(m["val_mpjpe"], rel=1e-5)
    # where the time went: every part reported, the step and set-up non-zero, together within the wall time
    from workflows.train_loop import TIME_PARTS

    parts = {k: m[f"time_{k}_s"] for k in TIME_PARTS}
    assert all(v >= 0 for v in parts.values()) and parts["step"] > 0 and parts["setup"] > 0
    assert sum(parts.values()) < m["wall_s"]
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("[d2_02] time: "))
    assert "outside the loop (Ray start-up and shutdown, publishing)" in line and "validation" in line


def test_bf16_autocast_trains_in_fp32_weights(tmp_path, micro_packed):
    """precision: bf16 runs the forward under autocast (here on CPU); weights stay fp32 and end
    close to, but not equal to, the fp32 run's."""
    root = _root(tmp_path, micro_packed)
    ref = _local_run(root, "d2_02", tmp_path / "fp32")
    low = _local_run(root, "d2_02", tmp_path / "bf16", precision="bf16")
    a = torch.load(tmp_path / "fp32" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "bf16" / "model.pt", weights_only=True)
    assert b["train"]["precision"] == "bf16"
    diffs = [float((b["model"][k] - a[k]).abs().max()) for k in a if a[k].is_floating_point()]
    assert all(b["model"][k].dtype == a[k].dtype for k in a)
    assert 0 < max(diffs) < 2e-2  # two Adam steps of lr 2e-3: each weight moves at most ~4e-3 per run
    assert all(np.isfinite(r["loss"]) for r in low.reports + ref.reports)


def test_accuracy_budget_benchmark_runs(run_cli, tmp_path, micro_packed):
    """benchmarks/accuracy_budget.py trains variants with the same loop and reports their curves;
    a bad variant is one line before any work."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "accuracy_budget.py"
    base = [sys.executable, script, "--profile", "micro", "--stage", "d2_04", "--iterations", "3", "--val-size", "8",
            "--data", micro_packed, "--out", tmp_path / "runs"]
    r = run_cli([*base, "--variant", "a", "--variant", "b lr=0.01 targets.sigma_2d=1", "--parallel", "2",
                 "--json", tmp_path / "out.json"], cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = {x["name"]: x for x in json.loads((tmp_path / "out.json").read_text())["results"]}
    assert set(res) == {"a", "b"}
    assert res["b"]["stage"]["lr"] == 0.01 and res["b"]["sigma_2d"] == 1.0 and res["a"]["stage"]["lr"] == 0.002
    for x in res.values():
        assert x["final"]["iteration"] == 3 and 0 < x["final"]["val_mpjpe"] < 5000
        assert (tmp_path / "runs" / x["name"] / "model.pt").is_file()
    bad = run_cli([*base, "--variant", "c optimizer=lbfgs"], cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: --variant c: train.d2_04.optimizer: must be one of ['rmsprop', 'adam', 'sgd'], got 'lbfgs'"]


@pytest.mark.slow
def test_two_ddp_workers_hold_one_model(run_cli, tmp_path, micro_packed):
    """``--num-workers 2`` (the default profile's DDP over gloo): each worker trains on half of every
    batch and validates half of the frames; the reported validation MPJPE (summed over both workers)
    equals the saved rank-0 model evaluated alone on all of them, so both workers held one model."""
    from pose.data import PackedDataset
    from pose.model import load_checkpoint
    from pose.targets import DepthRange
    from workflows.train_loop import evaluate_mpjpe, memory_format_for, val_indices

    root = _root(tmp_path, micro_packed, d2_02={"iterations": 4, "batch_size": 4})
    r = _stage(run_cli, root, 2, "--num-workers", "2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 worker(s) x batch 2" in r.stdout + r.stderr
    m = json.loads((root / "outputs" / "stages" / "d2_02" / "metrics.json").read_text())
    assert m["num_workers"] == 2 and m["iteration"] == 4
    model, ck = load_checkpoint(root / "outputs" / "stages" / "d2_02" / "model.pt")
    model = model.to(memory_format=memory_format_for(torch.device("cpu")))  # as the workers ran it
    cfg = make_profile("micro")
    test_dir = micro_packed / "test"
    n = len(PackedDataset(test_dir, input_size=model.cfg.input_size))
    idx = val_indices(n, cfg["data"]["val_size"], cfg["seed"] * 1000 + 2)
    loader = torch.utils.data.DataLoader(PackedDataset(test_dir, input_size=model.cfg.input_size, indices=idx),
                                         batch_size=16)
    s_arg, s_soft, count = evaluate_mpjpe(model, loader, DepthRange(*cfg["targets"]["depth_range"]),
                                          torch.device("cpu"), float(cfg["train"]["d2_02"]["softmax_scale"]))
    assert count == len(idx) == cfg["data"]["val_size"]
    assert m["val_mpjpe"] == pytest.approx(s_arg / count, abs=1e-3)
    assert m["val_mpjpe_soft"] == pytest.approx(s_soft / count, abs=1e-3)


def test_a_head_only_stage_trains_heatmap2_alone(tmp_path, micro_packed):
    """``trainable: head``: d2_04 starts from d2_02 and only its heatmap2 moves; every other weight
    and every batch-norm statistic stays bitwise d2_02's (the trunk runs in eval mode)."""
    from workflows.config import load_config
    from workflows.stage import build_stage_run
    from workflows.train_loop import make_model

    root = _root(tmp_path, micro_packed)
    _local_run(root, "d2_02", root / "outputs" / "stages" / "d2_02")
    prev = torch.load(root / "outputs" / "stages" / "d2_02" / "model.pt", weights_only=True)["model"]
    over = {"trainable": "head", "lr": 1e-2, "iterations": 4, "ema_decay": None}
    _local_run(root, "d2_04", tmp_path / "head", **over)
    got = torch.load(tmp_path / "head" / "model.pt", weights_only=True)
    assert got["train"]["trainable"] == "head"
    cfg = load_config(root / "stages.yaml")
    cfg["train"]["d2_04"].update(over)
    start = make_model(build_stage_run(cfg, "d2_04", root), 0).state_dict()  # the head as d2_04 starts it
    trunk = [k for k in prev if not k.startswith("heatmap2.")]
    assert any(k.endswith("running_mean") for k in trunk)
    assert all(torch.equal(got["model"][k], prev[k]) for k in trunk)
    assert not torch.equal(got["model"]["heatmap2.weight"], start["heatmap2.weight"])
    # the same stage with every layer trainable moves the trunk too
    _local_run(root, "d2_04", tmp_path / "all", **{**over, "trainable": "all"})
    full = torch.load(tmp_path / "all" / "model.pt", weights_only=True)["model"]
    assert not torch.equal(full["stem_conv.0.weight"], prev["stem_conv.0.weight"])
    assert not torch.equal(full["stem_conv.1.running_mean"], prev["stem_conv.1.running_mean"])
