"""workflows/tune.py: a real ASHA sweep of the micro profile on a private local Ray, wandb offline
runs read back, ``--apply`` into a copy of stages.yaml, and one-line errors on bad input."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest
import yaml

from workflows.config import make_profile, write_config

TUNE = Path(__file__).resolve().parent.parent / "workflows" / "tune.py"


def _root(tmp_path: Path, **tune_overrides) -> Path:
    """A project root holding a micro-profile stages.yaml (tune: section overridden as given, unvalidated)."""
    root = tmp_path / "proj"
    root.mkdir()
    cfg = make_profile("micro")
    header = "# micro profile for tests/test_tune.py\n"
    write_config(cfg, root / "stages.yaml", header=header)
    if tune_overrides:
        cfg["tune"].update(tune_overrides)
        (root / "stages.yaml").write_text(header + yaml.safe_dump(cfg, sort_keys=False))
    return root


def _previous_checkpoint(root: Path, key: str = "d2_02", d2: int = 2) -> Path:
    """The previous stage's model.pt: a freshly initialised micro model (what stage.py would publish)."""
    from pose.model import C2FPoseNet, ModelConfig, save_checkpoint

    model = C2FPoseNet(ModelConfig.preset("micro", d2=d2))
    return save_checkpoint(root / "outputs" / "stages" / key / "model.pt", model, stage=key, bbox_enlarge=1.28,
                           softmax_scale=30.0)


def _tune(run_cli, root: Path, *extra, timeout: float = 120):
    return run_cli([sys.executable, TUNE, "--config", root / "stages.yaml", "--root", root, *extra],
                   cwd=root, timeout=timeout, env={"RAY_ADDRESS": "local"})


def _one_error_line(r) -> str:
    assert r.returncode != 0, r.stdout[-2000:]
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


# --------------------------------------------------------------------------------------------
# fast: help and bad input (all fail before Ray starts)
def test_help_explains(run_cli):
    r = run_cli([sys.executable, TUNE, "--help"], timeout=120)
    assert r.returncode == 0, r.stderr
    for word in ("--d2", "--num-samples", "--max-concurrent", "--epochs", "--apply", "--best", "--stall-timeout", "ASHA", "wandb",
                 "best_params.json", "tune:", "loguniform", "offline-run-", "wandb sync", "dvc repro"):
        assert word in r.stdout, word


def test_empty_search_space(run_cli, tmp_path):
    root = _root(tmp_path, search={})
    line = _one_error_line(_tune(run_cli, root, "--d2", 4))
    assert "tune.search" in line and "non-empty" in line


def test_stage_not_in_stages_yaml(run_cli, tmp_path):
    root = _root(tmp_path)
    line = _one_error_line(_tune(run_cli, root, "--d2", 128))
    assert "no stage with d2=128" in line and "d2_04" in line
    line = _one_error_line(_tune(run_cli, root, "--d2", 128, "--apply"))
    assert "no stage with d2=128" in line


def test_missing_previous_checkpoint(run_cli, tmp_path, micro_packed):
    root = _root(tmp_path)
    line = _one_error_line(_tune(run_cli, root, "--d2", 4, "--data", micro_packed))
    assert "previous stage checkpoint not found" in line and "d2_02/model.pt" in line
    assert not (root / "outputs" / "tune").exists() and not (root / "outputs" / "ray").exists()


def test_trial_larger_than_this_machine(run_cli, tmp_path, micro_packed):
    root = _root(tmp_path)
    _previous_checkpoint(root)
    n = (os.cpu_count() or 1) + 1
    line = _one_error_line(_tune(run_cli, root, "--d2", 4, "--num-workers", n, "--data", micro_packed))
    assert f"a trial of d2_04 ({n} worker(s)) needs " in line and "CPU (this machine has" in line, line
    assert not (root / "outputs" / "ray").exists() and not (root / "outputs" / "tune").exists()


def test_bad_budget_and_apply_without_sweep(run_cli, tmp_path):
    root = _root(tmp_path)
    line = _one_error_line(_tune(run_cli, root, "--d2", 4, "--num-samples", 0))
    assert "--num-samples must be >= 1" in line
    line = _one_error_line(_tune(run_cli, root, "--d2", 4, "--stall-timeout", 0))
    assert "--stall-timeout must be >= 1" in line
    before = (root / "stages.yaml").read_text()
    line = _one_error_line(_tune(run_cli, root, "--d2", 4, "--apply"))
    assert "no sweep results" in line and "d2_04/best_params.json" in line
    best = root / "other.json"
    best.write_text(json.dumps({"stage": "d2_08", "best": {"params": {"ratio_3d": 2.0}}}))
    line = _one_error_line(_tune(run_cli, root, "--d2", 4, "--apply", "--best", best))
    assert "d2_08" in line and "not d2_04" in line
    assert (root / "stages.yaml").read_text() == before


def _suggestions(searcher: str, seed: int, n: int, max_concurrent: int = 1) -> list[dict]:
    """What the sweep's searcher (workflows.tune.make_searcher) proposes for the micro search space, without
    training: each trial's result (a made-up val_mpjpe, best at ratio_3d = 1) told back before the next one
    when ``max_concurrent`` is 1, else ``max_concurrent`` proposals at once (as at a sweep's start)."""
    from workflows.tune import make_searcher, search_space

    space = search_space(make_profile("micro")["tune"]["search"])
    out: list[dict] = []
    if searcher == "random":  # Tune's generator of trials: the configs of the trials it makes (all at once)
        alg = make_searcher(searcher, seed, n, n)
        alg.add_configurations({"sweep": {"run": lambda config: None, "config": space, "num_samples": n}})
        while (trial := alg.next_trial()) is not None:
            out.append(trial.config)
        return out
    alg = make_searcher(searcher, seed, max_concurrent, n)
    alg.set_search_properties("val_mpjpe", "min", space)
    for i in range(n):
        config = alg.suggest(f"t{i}")
        if config is None:  # the concurrency limit: as many as max_concurrent before any result
            break
        out.append(config)
        if max_concurrent == 1:
            alg.on_trial_complete(f"t{i}", {"val_mpjpe": 100.0 * abs(math.log(config["ratio_3d"]))})
    return out


@pytest.mark.parametrize("searcher", ["random", "optuna"])
def test_a_seeded_searcher_samples_the_same_trials(searcher):
    """tune.searcher + tune.seed: the same sweep twice samples the same trials (Optuna's TPE too, given the
    same results in the same order); another seed samples others; every value lies in its range."""
    from workflows.tune import tpe_startup_trials

    first, again, other = (_suggestions(searcher, seed, 6) for seed in (5, 5, 6))
    assert len(first) == 6 and first == again and first != other
    search = make_profile("micro")["tune"]["search"]
    for config in first + other:
        assert set(config) == set(search)
        for name, sp in search.items():
            assert sp["lo"] <= config[name] <= sp["hi"], (name, config)
    assert len({c["ratio_3d"] for c in first}) == 6
    if searcher == "optuna":
        assert tpe_startup_trials(6) == 3 and tpe_startup_trials(8) == 4 and tpe_startup_trials(100) == 10
        # two at once (a sweep's start): the limiter stops at two, both drawn from the seed alone
        assert _suggestions("optuna", 5, 6, max_concurrent=2) == first[:2]


# --------------------------------------------------------------------------------------------
# slow: the real sweep
@pytest.mark.slow
def test_micro_sweep_end_to_end(run_cli, tmp_path, micro_packed):
    from wandb_runs import offline_runs, read_offline_run

    root = _root(tmp_path, searcher="optuna", seed=5)  # the default, random search, runs in the other sweeps
    _previous_checkpoint(root)
    epochs, samples = 2, 3
    t0 = time.time()
    # --stall-timeout: a sweep that hangs fails with what it waits for (over twice a trial's
    # worker-group start-up limit, 300 s, so a retried start-up can still finish)
    r = _tune(run_cli, root, "--d2", 4, "--num-samples", samples, "--epochs", epochs, "--max-concurrent", 2,
              "--data", micro_packed, "--stall-timeout", 660, timeout=1200)
    wall = time.time() - t0
    assert r.returncode == 0, f"{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    print(f"sweep of {samples} trials x {epochs} epochs: {wall:.0f} s")

    # ---- best_params.json / trials.csv / trials.png
    out = root / "outputs" / "tune" / "d2_04"
    summary = json.loads((out / "best_params.json").read_text())
    assert summary["stage"] == "d2_04" and summary["metric"] == "val_mpjpe" and summary["epochs"] == epochs
    trials = summary["trials"]
    assert summary["num_trials"] == len(trials) == samples
    ok = [t for t in trials if t["error"] is None and math.isfinite(t["metric"])]
    assert len(ok) >= 2, trials
    assert all(1 <= t["epochs_run"] <= epochs for t in ok)
    completed = [t for t in ok if t["epochs_run"] == epochs]
    stopped = [t for t in ok if t["epochs_run"] < epochs]
    assert summary["num_completed"] == len(completed) and summary["num_stopped_early"] == len(stopped)
    assert summary["num_stopped_early"] >= 1 or summary["num_completed"] == samples
    best = summary["best"]
    assert math.isfinite(best["metric"]) and 0 < best["metric"] < 5000  # mm
    assert best["metric"] == min(t["metric"] for t in ok)
    search = make_profile("micro")["tune"]["search"]
    assert set(best["params"]) == set(search)
    for name, sp in search.items():
        for t in ok:
            assert sp["lo"] <= t["params"][name] <= sp["hi"], (name, t)
    lines = (out / "trials.csv").read_text().strip().splitlines()
    assert len(lines) == samples + 1 and lines[0].startswith("trial,")
    assert (out / "trials.png").stat().st_size > 1000
    # ---- the searcher and its seed: named in the results; the first two trials (started together,
    # before any result) are exactly what the seeded TPE proposes offline
    assert (summary["searcher"], summary["search_seed"]) == ("optuna", 5)
    assert "optuna search (seed 5)" in r.stdout
    # trial folders are <stage>_<trial id>_<counter>_<params>_<time>: the counter is the start order
    by_start = sorted(trials, key=lambda t: int(re.match(r"d2_04_[0-9a-f]+_(\d+)_", t["trial"]).group(1)))
    offline = _suggestions("optuna", 5, samples, max_concurrent=2)
    assert len(offline) == 2
    for t, want in zip(by_start[:2], offline, strict=True):
        assert t["params"] == pytest.approx(want, rel=1e-12), (t, want)

    # ---- wandb: one offline run per trial, each with its config and per-epoch val_mpjpe, one group
    runs = {}
    for d in offline_runs(root / "outputs" / "wandb"):
        run = read_offline_run(d)
        runs[run["run_id"]] = run
    assert set(runs) == {t["trial_id"] for t in trials}, (list(runs), [t["trial_id"] for t in trials])
    assert {run["group"] for run in runs.values()} == {summary["wandb_group"]}
    assert {run["project"] for run in runs.values()} == {"c2f-pose"}
    for t in ok:
        run = runs[t["trial_id"]]
        for name, value in t["params"].items():
            assert run["config"][name] == pytest.approx(value, rel=1e-12), name
        hist = [h for h in run["history"] if "val_mpjpe" in h]
        assert [h["training_iteration"] for h in hist] == list(range(1, t["epochs_run"] + 1))
        assert [h["epoch"] for h in hist] == list(range(1, t["epochs_run"] + 1))
        assert all(math.isfinite(h["val_mpjpe"]) and h["val_mpjpe"] > 0 for h in hist)
        assert hist[-1]["val_mpjpe"] == pytest.approx(t["metric"], rel=1e-9)
        assert min(h["val_mpjpe"] for h in hist) == pytest.approx(t["best_metric"], rel=1e-9)

    # ---- --apply on a copy: exactly train.d2_04's ratio_3d / heatmap2_std change
    copy = root / "stages_copy.yaml"
    shutil.copyfile(root / "stages.yaml", copy)
    original_text = (root / "stages.yaml").read_text()
    r = run_cli([sys.executable, TUNE, "--d2", 4, "--apply", "--config", copy, "--root", root], cwd=root, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "train.d2_04.ratio_3d=" in r.stdout
    assert (root / "stages.yaml").read_text() == original_text
    before, after = yaml.safe_load(original_text), yaml.safe_load(copy.read_text())
    assert copy.read_text().startswith("# micro profile for tests/test_tune.py")  # comments kept
    assert set(before) == set(after)
    for k in before:
        if k != "train":
            assert after[k] == before[k], k
    assert list(after["train"]) == list(before["train"])
    for key in before["train"]:
        if key != "d2_04":
            assert after["train"][key] == before["train"][key], key
    changed = {k for k in before["train"]["d2_04"] if after["train"]["d2_04"][k] != before["train"]["d2_04"][k]}
    # the micro profile resamples heatmap2 (heatmap2_init: upsample); the trials that sampled
    # heatmap2_std re-initialised it, and so does the applied stage
    assert before["train"]["d2_04"]["heatmap2_init"] == "upsample"
    assert after["train"]["d2_04"]["heatmap2_init"] == ("normal" if "heatmap2_std" in search else "upsample")
    assert "train.d2_04.heatmap2_init=normal" in r.stdout
    assert changed <= set(search) | {"heatmap2_init"}
    assert set(after["train"]["d2_04"]) == set(before["train"]["d2_04"])
    for name, value in best["params"].items():
        assert after["train"]["d2_04"][name] == pytest.approx(value, rel=1e-5), name
    from workflows.config import load_config

    assert load_config(copy)["train"]["d2_04"]["ratio_3d"] == pytest.approx(best["params"]["ratio_3d"], rel=1e-5)


@pytest.mark.slow
def test_stalled_sweep_stops_with_one_line(run_cli, tmp_path, micro_packed):
    """--stall-timeout shorter than a trial's start-up: the sweep aborts (without waiting out Ray's 30-min
    wait for the trials' wandb writers) with one line naming the unfinished trials and the cluster
    state; no results written."""
    root = _root(tmp_path)
    _previous_checkpoint(root)
    r = _tune(run_cli, root, "--d2", 4, "--num-samples", 2, "--epochs", 1, "--max-concurrent", 2,
              "--data", micro_packed, "--stall-timeout", 5, timeout=600)
    assert r.returncode == 1, r.stdout[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: tune d2_04: no trial started, reported or ended for "), last
    # each unfinished trial named with its state (RUNNING once its actor started; PENDING on a loaded machine)
    assert "(--stall-timeout 5)" in last and re.search(r"unfinished: \w+_0000\d (RUNNING|PENDING)", last), last
    assert "cluster: CPU " in last and "placement groups: " in last, last
    assert not (root / "outputs" / "tune").exists()
