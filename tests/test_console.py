"""What a stage prints (workflows/console.py): our lines on the terminal, Ray's in the run's log file."""

from __future__ import annotations

import io
import re
import shutil
import sys
from pathlib import Path

import pytest

from workflows.config import make_profile, write_config
from workflows.console import RayLineFilter

RAY_LINES = ("TrainingReport(", "core_worker.cc", "pid=", "Started a local Ray instance", "dashboard")


def test_filter_shows_ours_and_logs_rays():
    term, log = io.StringIO(), io.StringIO()
    f = RayLineFilter(term, log)
    f.write("starting d2_02 fresh (run d2_02-0123456789ab)\n\x1b[36m(RayTrainWorker pid=11759)\x1b[0m [d2_02] epoch 1/1 ")
    f.write("it 1/2 loss 0.28609 lr 0.002 (7.3 it/s, ETA 0:01)\n")
    f.write("\x1b[36m(RayTrainWorker pid=11759)\x1b[0m Reporting training result 1: TrainingReport(checkpoint=None)\n")
    f.write("\x1b[36m(TrainController pid=11591)\x1b[0m [2026-12-05 06:10:12,506 E 11591 11670] core_worker.cc:2465: "
            "Actor with class name: 'PreemptionWatcher'\n")
    f.write("2026-12-05 06:12:20,771\tINFO worker.py:2029 -- Started a local Ray instance.\n")
    f.write("2026-12-05 06:12:20,771\tERROR worker.py:99 -- something broke\n")
    f.write("error: stage d2_02 failed")
    f.flush()
    assert term.getvalue().splitlines() == [
        "starting d2_02 fresh (run d2_02-0123456789ab)",
        "[d2_02] epoch 1/1 it 1/2 loss 0.28609 lr 0.002 (7.3 it/s, ETA 0:01)",
        "2026-12-05 06:12:20,771\tERROR worker.py:99 -- something broke",
        "error: stage d2_02 failed",
    ]
    logged = log.getvalue().splitlines()
    assert len(logged) == 3 and "TrainingReport(" in logged[0] and "core_worker.cc" in logged[1]
    assert "\x1b" not in log.getvalue() and (f.shown, f.hidden) == (4, 3)


def test_filter_shows_worker_tracebacks_and_error_records():
    """A training worker's traceback (followed per process, chained ones included) and its ERROR records
    reach the terminal with Ray's prefix; the lines around them, and other processes' errors, stay in the
    log."""
    term, log = io.StringIO(), io.StringIO()
    f = RayLineFilter(term, log)
    w1, w2 = "\x1b[36m(RayTrainWorker pid=11)\x1b[0m ", "(RayTrainWorker pid=22) "
    lines = [
        w1 + "Reporting training result 1: TrainingReport(checkpoint=None)",
        w1 + "Traceback (most recent call last):",
        w2 + "Reporting training result 1: TrainingReport(checkpoint=None)",
        w1 + '  File "/work/pose/data/packed.py", line 80, in _decode',
        w1 + "    raise ValueError(msg)",
        w1 + "ValueError: image does not decode",
        w1 + "",
        w1 + "The above exception was the direct cause of the following exception:",
        w1 + "",
        w1 + "Traceback (most recent call last):",
        w1 + '  File "/work/workflows/train_loop.py", line 500, in run_worker',
        w1 + "RuntimeError: batch 3 failed",
        w1 + "[2026-12-05 06:10:12,506 E 11 12] core_worker.cc:2465: Actor with class name: 'PreemptionWatcher'",
        w2 + "2026-12-05 06:12:20,771\tERROR train_loop.py:99 -- a worker's error record",
        w2 + "2026-12-05 06:12:20,772\tINFO train_loop.py:100 -- an info record",
        "(TrainController pid=45) Traceback (most recent call last):",  # the controller's copy: logged only
        "(TrainController pid=45) ray.train.WorkerGroupError: Training failed due to worker errors:",
        "(PlacementGroupCleaner pid=46) 2026-12-05 06:12:20,771\tERROR cleaner.py:9 -- not a worker",
    ]
    f.write("\n".join(lines) + "\n")
    shown = term.getvalue().splitlines()
    assert shown == [
        "(RayTrainWorker pid=11) Traceback (most recent call last):",
        '(RayTrainWorker pid=11)   File "/work/pose/data/packed.py", line 80, in _decode',
        "(RayTrainWorker pid=11)     raise ValueError(msg)",
        "(RayTrainWorker pid=11) ValueError: image does not decode",
        "(RayTrainWorker pid=11) ",
        "(RayTrainWorker pid=11) The above exception was the direct cause of the following exception:",
        "(RayTrainWorker pid=11) ",
        "(RayTrainWorker pid=11) Traceback (most recent call last):",
        '(RayTrainWorker pid=11)   File "/work/workflows/train_loop.py", line 500, in run_worker',
        "(RayTrainWorker pid=11) RuntimeError: batch 3 failed",
        "(RayTrainWorker pid=22) 2026-12-05 06:12:20,771\tERROR train_loop.py:99 -- a worker's error record",
    ]
    logged = log.getvalue().splitlines()
    assert len(logged) == len(lines) and "\x1b" not in log.getvalue()  # the log keeps every line
    assert (f.shown, f.hidden) == (len(shown), len(lines))


def _root(tmp_path: Path, packed: Path, name: str, **ray) -> Path:
    root = tmp_path / name
    (root / "outputs" / "data").mkdir(parents=True)
    cfg = make_profile("micro")
    cfg["ray"].update(ray)
    write_config(cfg, root / "stages.yaml")
    shutil.copytree(packed, root / "outputs" / "data" / "packed")
    return root


def _stage(run_cli, root: Path, *extra, env=None):
    return run_cli([sys.executable, "-m", "workflows.stage", "--d2", "2", "--config", root / "stages.yaml",
                    "--root", root, *extra], env=env)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_stage_output_quiet_verbose_and_errors(run_cli, tmp_path, micro_packed):
    root = _root(tmp_path, micro_packed, "ok")
    r = _stage(run_cli, root)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    shown = (r.stdout + r.stderr).splitlines()
    assert [ln for ln in shown if any(s in ln for s in RAY_LINES)] == [], shown
    log = root / "outputs" / "logs" / "d2_02.log"
    assert f"Ray's messages in {log}" in r.stdout
    assert re.search(r"^\[d2_02\] d2=2 from scratch; \d+ train / \d+ val samples, 1 worker\(s\)", r.stdout, re.M)
    assert re.search(r"^\[d2_02\] epoch 1/1 it \d+/\d+ loss [\d.]+ lr \S+ \([\d.]+ it/s, ETA \d+:\d\d\)$", r.stdout, re.M)
    assert re.search(r"^\[d2_02\] epoch 1/1 done: loss [\d.]+  val MPJPE argmax [\d.]+ mm", r.stdout, re.M)
    assert re.search(r"^\[d2_02\] done in \d+ s: val MPJPE [\d.]+ mm", r.stdout, re.M)
    assert len(shown) <= 8, shown  # run line, Ray Train line, header, 2 progress lines, epoch, summary
    text = log.read_text()
    assert "TrainingReport(" in text and "Started a local Ray instance" in text
    # --verbose (or POSE_VERBOSE=1): Ray's own lines are back on the terminal
    v = _stage(run_cli, root, "--fresh", env={"POSE_VERBOSE": "1"})
    assert v.returncode == 0, v.stdout[-3000:] + v.stderr[-3000:]
    assert "TrainingReport(" in v.stdout + v.stderr and "[d2_02] done in" in v.stdout
    # a stage failing inside its workers (every training image zeroed): the error line still reaches the terminal
    bad = _root(tmp_path, micro_packed, "bad", max_failures=0)
    shard = bad / "outputs" / "data" / "packed" / "train" / "images_000.bin"
    shard.write_bytes(bytes(shard.stat().st_size))
    e = _stage(run_cli, bad)
    assert e.returncode == 1
    errors = [ln for ln in e.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "stage d2_02 failed during training" in errors[0], e.stderr[-3000:]
    assert "image does not decode" in errors[0]
    assert f"worker logs in {bad / 'outputs' / 'logs' / 'd2_02.log'}" in errors[0]
    # the worker's traceback reaches the terminal in full (with Ray's prefix); Ray's other lines do not
    terminal = (e.stdout + e.stderr).splitlines()
    assert [ln for ln in terminal if "TrainingReport(" in ln] == []
    tb = [ln for ln in terminal if "pid=" in ln]
    assert any(ln.endswith(") Traceback (most recent call last):") for ln in tb), e.stderr[-3000:]
    assert any(re.search(r"\) ValueError: .*image does not decode", ln) for ln in tb), e.stderr[-3000:]
    bad_log = (bad / "outputs" / "logs" / "d2_02.log").read_text()
    assert all(ln in bad_log for ln in tb)  # and they are in the log file too



def test_a_lost_nodes_state_dump_goes_to_the_log_with_one_line_on_the_terminal():
    """After a lost node Ray forwards the dead raylet's state dump (~40 ``[state-dump]`` lines, the
    first with the raylet's log prefix): all of it goes to the log, one line on the terminal says so."""
    term, log = io.StringIO(), io.StringIO()
    f = RayLineFilter(term, log)
    raylet = "\x1b[33m(raylet, ip=127.0.0.2)\x1b[0m "
    f.write(raylet + "[2026-12-07 14:12:05,450 I 2812 2812] (raylet) node_manager.cc:492: [state-dump] NodeManager:\n")
    for i in range(39):
        f.write(raylet + f"[state-dump] ClusterLeaseManager: line {i}\n")
    f.write("[state-dump] Event stats: (continued without a prefix)\n")
    f.write("(RayTrainWorker pid=7) [d2_02] resumed at iteration 300 (attempt 2 of 3)\n")
    f.write(raylet + "[state-dump] one more\n")  # the same raylet again soon: no second announcement
    f.flush()
    shown = term.getvalue().splitlines()
    assert len(shown) == 2 and shown[1] == "[d2_02] resumed at iteration 300 (attempt 2 of 3)"
    assert shown[0].startswith("[ray] the raylet, ip=127.0.0.2 printed its own messages") and "state-dump" not in shown[0]
    assert len(log.getvalue().splitlines()) == 42 and (f.shown, f.hidden) == (2, 42)
