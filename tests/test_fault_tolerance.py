"""Failures caused for real and survived: a stage (Ray Train, two DDP workers over gloo, micro
model) whose worker or driver is killed, terminated or left with a damaged checkpoint, a `dvc repro`
killed mid-curriculum, a Tune sweep whose trial loses a worker and whose driver is killed.

Every process a test starts runs in a session of its own (``start_new_session``), with the private
Ray instance it starts (gcs, raylet: same process group; workers: children of the raylet); the
tests signal only processes of that tree and kill what is left of it when they end.

Equality: the order of training is a function of (seed, epoch, batch) and a checkpoint holds the
optimiser, the position inside the epoch and the RNG states, so a resumed run of the same
configuration on the same machine ends with **bitwise** the weights of an uninterrupted one (the
same float operations in the same order); the tests assert ``torch.equal``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml

from workflows.config import make_profile, write_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
STAGE = REPO / "workflows" / "stage.py"
TUNE = REPO / "workflows" / "tune.py"
ITERATIONS, EVERY = 160, 16  # 5 epochs of 32 iterations (128 training frames, batch 4)


# --------------------------------------------------------------------------------------------
# processes
class Tree:
    """Processes started by one test, each in its own session; ``kill_all`` ends them and their
    descendants (the private Ray instance included)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env, self.procs, self.seen = env, [], set()

    def start(self, argv, cwd: Path, log: Path) -> subprocess.Popen:
        f = open(log, "w")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen([str(a) for a in argv], cwd=cwd, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                             start_new_session=True)
        p.log = f
        self.procs.append(p)
        return p

    def descendants(self, p: subprocess.Popen) -> list[psutil.Process]:
        try:
            kids = psutil.Process(p.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        self.seen.update(kids)
        return kids

    def workers(self, p: subprocess.Popen) -> list[psutil.Process]:
        out = []
        for k in self.descendants(p):
            with contextlib.suppress(psutil.Error):
                if "RayTrainWorker" in " ".join(k.cmdline()):
                    out.append(k)
        return out

    def signal(self, p: subprocess.Popen, sig: int, group: bool = False) -> None:
        """Send ``sig`` to ``p`` (or its whole process group), noting its descendants first so that
        what survives can be ended afterwards."""
        self.descendants(p)
        if group:
            os.killpg(p.pid, sig)
        else:
            p.send_signal(sig)

    def wait(self, p: subprocess.Popen, timeout: float = 600) -> int:
        try:
            rc = p.wait(timeout)
        finally:
            p.log.close()
        self.reap(p)
        return rc

    def reap(self, p: subprocess.Popen) -> None:
        """Kill what is left of ``p``'s tree: its process group, and descendants seen while it ran."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        for k in list(self.seen):
            with contextlib.suppress(psutil.Error):
                k.kill()
        psutil.wait_procs(list(self.seen), timeout=20)
        self.seen.clear()

    def kill_all(self) -> None:
        for p in self.procs:
            with contextlib.suppress(psutil.Error):
                self.descendants(p)
            if p.poll() is None:
                p.kill()
                p.wait(30)
            self.reap(p)


@pytest.fixture
def tree(cli_env):
    t = Tree({**cli_env, "RAY_ADDRESS": "local"})
    yield t
    t.kill_all()


def _wait_for(cond, timeout: float, what: str, poll: float = 0.05):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = cond()
        if v:
            return v
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


# --------------------------------------------------------------------------------------------
# a stage and its run folder
def _project(tmp_path: Path, packed: Path, name: str = "proj", **ray) -> Path:
    root = tmp_path / name
    (root / "outputs" / "data").mkdir(parents=True)
    (root / "outputs" / "data" / "packed").symlink_to(packed, target_is_directory=True)
    cfg = make_profile("micro")
    cfg["data"]["train_limit"] = 128
    cfg["train"]["d2_02"].update(iterations=ITERATIONS, batch_size=4, checkpoint_every=EVERY, log_every=1000)
    cfg["ray"].update({"num_workers": 2, **ray})
    write_config(cfg, root / "stages.yaml")
    return root


def _stage_argv(root: Path, *extra) -> list:
    return [sys.executable, STAGE, "--d2", 2, "--config", root / "stages.yaml", "--root", root, *extra]


def _checkpoints(root: Path) -> dict[int, Path]:
    """Verified-looking checkpoints (manifest written) of every run folder: iteration -> folder."""
    out = {}
    for m in (root / "outputs" / "ray").glob("*/checkpoints/ckpt-*/manifest.json"):
        out[int(m.parent.name.split("-")[1])] = m.parent
    return out


def _weights(root: Path) -> dict[str, torch.Tensor]:
    return torch.load(root / "outputs" / "stages" / "d2_02" / "model.pt", weights_only=True)["model"]


def _curve(root: Path) -> list[dict[str, str]]:
    with open(root / "outputs" / "stages" / "d2_02" / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]


def _assert_same_run(root: Path, ref: Path) -> None:
    a, b = _weights(root), _weights(ref)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"weights differ from the uninterrupted run: {different[:5]}"
    curve = _curve(root)
    assert [int(r["epoch"]) for r in curve] == list(range(1, ITERATIONS // 32 + 1))  # no duplicate rows
    assert curve == _curve(ref)


def _text(log: Path) -> str:
    return log.read_text(errors="replace")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, micro_packed, cli_env) -> Path:
    """The uninterrupted run of the configuration the tests interrupt."""
    root = _project(tmp_path_factory.mktemp("ref"), micro_packed)
    r = subprocess.run([str(a) for a in _stage_argv(root)], cwd=root, env={**cli_env, "RAY_ADDRESS": "local"},
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "starting d2_02 fresh" in r.stdout
    assert not list((root / "outputs" / "ray").iterdir()), "the run folder is removed after publishing"
    return root


def _signal_a_worker(tree: Tree, root: Path, log: Path, sig: int) -> subprocess.Popen:
    """Start the stage of ``root``, and send ``sig`` to one of its Ray Train workers once the run has
    a checkpoint; returns the stage's process."""
    p = tree.start(_stage_argv(root), root, log)
    _wait_for(lambda: _checkpoints(root), 600, "the first checkpoint")
    _wait_for(lambda: tree.workers(p)[-1:], 60, "a RayTrainWorker")[0].send_signal(sig)
    return p


# --------------------------------------------------------------------------------------------
# a lost worker
def test_worker_sigkill_is_survived(tree, tmp_path, micro_packed, reference):
    root = _project(tmp_path, micro_packed)
    log = tmp_path / "stage.log"
    p = _signal_a_worker(tree, root, log, signal.SIGKILL)
    assert tree.wait(p) == 0, _text(log)[-4000:]
    m = re.search(r"\[d2_02\] resumed at iteration (\d+) \(attempt 2 of 3\)", _text(log))
    assert m, _text(log)[-4000:]
    assert int(m.group(1)) % EVERY == 0 and 0 < int(m.group(1)) < ITERATIONS
    _assert_same_run(root, reference)


def test_exhausted_retries_fail_with_one_line(tree, tmp_path, micro_packed):
    root = _project(tmp_path, micro_packed, max_failures=0)
    log = tmp_path / "stage.log"
    p = _signal_a_worker(tree, root, log, signal.SIGKILL)
    assert tree.wait(p) == 1
    errors = [ln for ln in _text(log).splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, _text(log)[-3000:]
    assert errors[0].startswith("error: stage d2_02 failed during training: ")
    assert "ray.max_failures=0" in errors[0] and "the same command resumes it from iteration" in errors[0]
    assert not (root / "outputs" / "stages" / "d2_02").exists()
    assert _checkpoints(root), "the run keeps its checkpoints"


def test_elastic_workers_train_what_a_fixed_count_does(run_cli, tmp_path, micro_packed, reference):
    """ray.num_workers: [1, 2] (Ray Train's elastic ScalingConfig): with both CPUs free it trains with
    2 workers, so it ends with the fixed 2-worker run's weights."""
    root = _project(tmp_path, micro_packed, num_workers=[1, 2])
    r = run_cli(_stage_argv(root), cwd=root, timeout=600, env={"RAY_ADDRESS": "local"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "[d2_02] Ray Train: elastic 1-2 worker(s)" in r.stdout and "2 worker(s) x batch 2" in r.stdout + r.stderr
    assert json.loads((root / "outputs" / "stages" / "d2_02" / "metrics.json").read_text())["num_workers"] == [1, 2]
    _assert_same_run(root, reference)


# --------------------------------------------------------------------------------------------
# a killed driver
def test_driver_sigkill_then_rerun_resumes(tree, tmp_path, micro_packed, reference, run_cli):
    root = _project(tmp_path, micro_packed)
    cfg = yaml.safe_load((root / "stages.yaml").read_text())
    cfg["wandb"]["enabled"] = True  # offline: one wandb run for the stage run, continued after the kill
    write_config(cfg, root / "stages.yaml")
    log = tmp_path / "first.log"
    p = tree.start(_stage_argv(root), root, log)
    _wait_for(lambda: _checkpoints(root), 600, "the first checkpoint")
    tree.signal(p, signal.SIGKILL)
    tree.wait(p)
    last = max(_checkpoints(root))
    assert 0 < last < ITERATIONS
    name = re.search(r"starting d2_02 fresh \(run (d2_02-[0-9a-f]{12})\)", _text(log)).group(1)

    # one changed parameter is another run: it starts fresh and leaves the killed one alone
    changed = tmp_path / "changed"
    changed.mkdir()
    cfg2 = yaml.safe_load((root / "stages.yaml").read_text())
    cfg2["train"]["d2_02"]["lr"] = 0.001
    cfg2["train"]["d2_02"]["iterations"] = 4
    cfg2["wandb"]["enabled"] = False
    write_config(cfg2, changed / "stages.yaml")
    r = run_cli([sys.executable, STAGE, "--d2", 2, "--config", changed / "stages.yaml", "--root", root],
                cwd=root, timeout=600, env={"RAY_ADDRESS": "local"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "starting d2_02 fresh" in r.stdout and name not in r.stdout
    assert max(_checkpoints(root)) == last

    r = run_cli(_stage_argv(root), cwd=root, timeout=600, env={"RAY_ADDRESS": "local"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"resuming d2_02 from iteration {last} of run {name}" in r.stdout, r.stdout[-3000:]
    _assert_same_run(root, reference)
    assert not (root / "outputs" / "ray" / name).exists()

    from wandb_runs import offline_runs, read_offline_run

    runs = [read_offline_run(d) for d in offline_runs(root / "outputs" / "wandb")]
    # the SIGKILL may cut the first writer's log before its run record: such a fragment names no
    # run and holds no history (nothing `wandb sync` could upload); every other one is the same run
    assert all(not r["history"] for r in runs if r["run_id"] is None)
    assert {r["run_id"] for r in runs if r["run_id"] is not None} == {name}  # the same wandb run, continued
    epochs = [h["epoch"] for r in runs for h in r["history"] if "epoch" in h]
    assert sorted(epochs) == list(range(1, ITERATIONS // 32 + 1))  # every epoch logged once


# --------------------------------------------------------------------------------------------
# SIGTERM (preemption) and damaged checkpoints
def test_sigterm_to_the_driver_checkpoints_then_a_damaged_checkpoint_is_skipped(
        tree, tmp_path, micro_packed, reference, run_cli):
    root = _project(tmp_path, micro_packed)
    log = tmp_path / "first.log"
    p = tree.start(_stage_argv(root), root, log)
    _wait_for(lambda: _checkpoints(root), 600, "the first checkpoint")
    tree.signal(p, signal.SIGTERM)
    assert tree.wait(p) == 143, _text(log)[-3000:]
    last_line = [ln for ln in _text(log).splitlines() if ln.strip()][-1]
    m = re.fullmatch(r"\[d2_02\] stopped by SIGTERM at iteration (\d+); the same command resumes run "
                     r"(d2_02-[0-9a-f]{12}) from there", last_line)
    assert m, _text(log)[-3000:]
    stopped = int(m.group(1))
    ckpts = _checkpoints(root)
    assert max(ckpts) == stopped  # the checkpoint was written before the exit
    manifest = json.loads((ckpts[stopped] / "manifest.json").read_text())
    assert manifest["iteration"] == stopped and not manifest["final"]
    assert not (root / "outputs" / "stages" / "d2_02").exists()

    # a crash while writing: the newest checkpoint's model.pt is cut short
    previous = max(i for i in ckpts if i < stopped)
    model = ckpts[stopped] / "model.pt"
    model.write_bytes(model.read_bytes()[:1000])
    r = run_cli(_stage_argv(root), cwd=root, timeout=600, env={"RAY_ADDRESS": "local"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    warn = [ln for ln in r.stdout.splitlines() if "warning" in ln]
    assert len(warn) == 1 and f"ckpt-{stopped:09d}" in warn[0] and "model.pt has 1000 of " in warn[0], warn
    assert f"resuming d2_02 from iteration {previous} of run {m.group(2)}" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr
    _assert_same_run(root, reference)


def test_sigterm_to_a_worker_checkpoints_and_loses_nothing(tree, tmp_path, micro_packed, reference):
    root = _project(tmp_path, micro_packed)
    log = tmp_path / "stage.log"
    p = _signal_a_worker(tree, root, log, signal.SIGTERM)
    assert tree.wait(p) == 0, _text(log)[-4000:]
    text = _text(log)
    assert re.search(r"\[d2_02\] rank \d got SIGTERM: checkpoint after this iteration, then stop", text), text[-3000:]
    stopped = int(re.search(r"\[d2_02\] stopped at iteration (\d+): a worker got SIGTERM; checkpoint saved",
                            text).group(1))
    assert f"[d2_02] resumed at iteration {stopped} (attempt 2 of 3)" in text  # not one iteration lost
    _assert_same_run(root, reference)


# --------------------------------------------------------------------------------------------
# the DAG: `dvc repro` killed in d2_16, then run again
def test_killed_dvc_repro_resumes_the_stage_it_was_in(tree, scratch_repo, run_cli):
    repo = scratch_repo()
    cfg = make_profile("micro")
    cfg["train"]["d2_16"].update(iterations=ITERATIONS, checkpoint_every=EVERY, log_every=1000)
    write_config(cfg, repo / "stages.yaml")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "commit", "-qam", "micro profile, a longer d2_16"], cwd=repo, check=True)
    dvc = Path(sys.executable).parent / "dvc"
    log = repo.parent / "repro1.log"
    p = tree.start([dvc, "repro"], repo, log)
    _wait_for(lambda: list((repo / "outputs" / "ray").glob("d2_16-*/checkpoints/ckpt-*/manifest.json")), 900,
              "a checkpoint of d2_16")
    tree.signal(p, signal.SIGKILL, group=True)  # dvc, the stage driver and its Ray: a closed laptop
    tree.wait(p)
    done = [k for k in ("d2_02", "d2_04", "d2_08") if (repo / "outputs" / "stages" / k / "model.pt").is_file()]
    assert done == ["d2_02", "d2_04", "d2_08"] and not (repo / "outputs" / "stages" / "d2_16").exists()
    last = max(int(m.parent.name.split("-")[1])
               for m in (repo / "outputs" / "ray").glob("d2_16-*/checkpoints/ckpt-*/manifest.json"))

    r = run_cli([dvc, "repro"], cwd=repo, timeout=1800)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    assert not ran & {"synth", "prepare", "train@d2_02", "train@d2_04", "train@d2_08"}, ran
    assert "train@d2_16" in ran and "evaluate" in ran
    assert re.search(rf"resuming d2_16 from iteration {last} of run d2_16-[0-9a-f]{{12}}", out), out[-4000:]
    st = run_cli([dvc, "status"], cwd=repo, timeout=300)
    assert "up to date" in st.stdout, st.stdout


# --------------------------------------------------------------------------------------------
# sweeps
def test_sweep_survives_a_lost_worker_and_a_killed_driver(tree, tmp_path, micro_packed, run_cli):
    from wandb_runs import offline_runs, read_offline_run

    root = tmp_path / "proj"
    (root / "outputs" / "data").mkdir(parents=True)
    (root / "outputs" / "data" / "packed").symlink_to(micro_packed, target_is_directory=True)
    cfg = make_profile("micro")
    cfg["data"]["train_limit"] = 128
    cfg["train"]["d2_04"].update(batch_size=4, checkpoint_every=EVERY, log_every=1000)
    write_config(cfg, root / "stages.yaml")
    prev = root / "outputs" / "stages" / "d2_02"  # the stage the tuned one starts from
    prev.mkdir(parents=True)
    from pose.model import C2FPoseNet, ModelConfig, save_checkpoint

    save_checkpoint(prev / "model.pt", C2FPoseNet(ModelConfig.preset("micro", d2=2)), stage="d2_02",
                    bbox_enlarge=1.28, softmax_scale=30.0)
    samples, epochs = 2, 3
    argv = [sys.executable, TUNE, "--d2", 4, "--config", root / "stages.yaml", "--root", root, "--num-samples",
            samples, "--epochs", epochs, "--max-concurrent", 1, "--stall-timeout", 660]

    def trial_checkpoints() -> dict[str, list[Path]]:
        out: dict[str, list[Path]] = {}
        for m in (root / "outputs" / "ray").glob("tune-d2_04-*/runs/*/checkpoints/ckpt-*/manifest.json"):
            out.setdefault(m.parents[2].name, []).append(m.parent)
        return out

    log = tmp_path / "sweep1.log"
    p = tree.start(argv, root, log)
    first = _wait_for(lambda: list(trial_checkpoints()), 600, "a checkpoint of the first trial")[0]
    _wait_for(lambda: tree.workers(p)[-1:], 60, "a RayTrainWorker")[0].send_signal(signal.SIGKILL)
    # the first trial resumes in a new worker group, then the second trial starts: kill the driver
    _wait_for(lambda: len(trial_checkpoints()) >= 2, 600, "a checkpoint of the second trial", poll=0.1)
    text = _text(log)
    assert re.search(r"\[d2_04\] resumed at iteration \d+ \(attempt 2 of 3\)", text), text[-4000:]
    tree.signal(p, signal.SIGKILL)
    tree.wait(p)

    r = run_cli([*argv, "--resume"], cwd=root, timeout=1200, env={"RAY_ADDRESS": "local"})
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "resuming sweep tune-d2_04-" in r.stdout
    summary = json.loads((root / "outputs" / "tune" / "d2_04" / "best_params.json").read_text())
    trials = {t["trial_id"]: t for t in summary["trials"]}
    assert len(trials) == samples and first in trials  # the first trial is kept, not sampled again
    assert all(t["error"] is None for t in trials.values()), trials
    runs: dict[str, list[dict]] = {}
    for d in offline_runs(root / "outputs" / "wandb"):
        run = read_offline_run(d)
        if run["run_id"] is None:  # a log cut by the SIGKILL before its run record (see above)
            assert not run["history"]
            continue
        runs.setdefault(run["run_id"], []).append(run)
    assert set(runs) == set(trials)  # a resumed trial continues its wandb run, no second one
    for tid, t in trials.items():
        logged = sorted(h["epoch"] for run in runs[tid] for h in run["history"] if "val_mpjpe" in h)
        assert logged == list(range(1, t["epochs_run"] + 1)), (tid, logged)  # each epoch once
