"""A real local Ray cluster: `ray start --head` on loopback, `ray job submit` of one micro stage, stop.

The head runs with its own ports and temp dir. It is started with ``--block`` in its own process
group so that the test can stop exactly the cluster it started; a machine-wide ``ray stop`` (which
would also end unrelated Ray instances on a shared machine) is run in addition only under CI
(``CI`` set, as ``.ci/run`` does).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from workflows.config import make_profile, write_config


def _ray(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "ray"), *args]


def _stop(head: subprocess.Popen, env: dict[str, str]) -> None:
    if head.poll() is None:
        os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` then terminates what it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(head.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if os.environ.get("CI"):
        subprocess.run(_ray("stop", "--force"), env=env, capture_output=True, timeout=120)


@pytest.mark.slow
def test_ray_job_submit_one_micro_stage(scratch_repo, micro_packed, cli_env, free_port):
    repo = scratch_repo()
    write_config(make_profile("micro"), repo / "stages.yaml")
    (repo / "outputs" / "data").mkdir(parents=True)
    (repo / "outputs" / "data" / "packed").symlink_to(micro_packed, target_is_directory=True)
    env = dict(cli_env)
    env["RAY_AUTH_MODE"] = "disabled"  # the same mode for `ray start`, `ray job submit` and the script
    tmp = tempfile.mkdtemp(prefix="ray_t", dir="/tmp")  # short: Ray's socket paths have a length limit
    gcs, dash = free_port(), free_port()
    ports = {
        "--port": gcs, "--dashboard-port": dash, "--ray-client-server-port": free_port(),
        "--node-manager-port": free_port(), "--object-manager-port": free_port(),
        "--metrics-export-port": free_port(), "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(), "--runtime-env-agent-port": free_port(),
    }
    start = _ray("start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
                 "--include-dashboard", "true", "--num-cpus", "2", "--temp-dir", tmp, "--disable-usage-stats",
                 *[str(x) for kv in ports.items() for x in kv])
    head = subprocess.Popen(start, env=env, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 180
        while True:  # wait for the job API
            r = subprocess.run(_ray("job", "list", "--address", address), env=env, capture_output=True, text=True,
                               timeout=60)
            if r.returncode == 0:
                break
            assert head.poll() is None, f"ray start exited: {head.stdout.read()[-3000:]}"
            assert time.time() < deadline, f"job API did not come up: {r.stderr[-2000:]}"
            time.sleep(2)
        submit = _ray("job", "submit", "--address", address, "--working-dir", str(repo), "--",
                      "python", "-m", "workflows.stage", "--d2", "2", "--root", str(repo))
        r = subprocess.run(submit, env=env, cwd=repo, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-3000:]
        assert "[d2_02] done" in r.stdout
        out = repo / "outputs" / "stages" / "d2_02"
        assert sorted(p.name for p in out.iterdir()) == ["curve.csv", "metrics.json", "model.pt"]
        m = json.loads((out / "metrics.json").read_text())
        assert m["stage"] == "d2_02" and m["val_mpjpe"] > 0
        # the job ran inside the cluster, not in a private local Ray (Ray's own line: in the stage's log)
        ray_log = (repo / "outputs" / "logs" / "d2_02.log").read_text()
        assert "Connecting to existing Ray cluster" in ray_log, ray_log[-3000:]
        assert "Connecting to existing Ray cluster" not in r.stdout  # the terminal shows our lines only

        # a failing job (missing previous checkpoint) makes `ray job submit` fail, writing nothing
        bad = submit[:-4] + ["--d2", "8", "--root", str(repo)]
        r = subprocess.run(bad, env=env, cwd=repo, capture_output=True, text=True, timeout=600)
        assert r.returncode != 0
        assert "previous stage checkpoint not found" in r.stdout + r.stderr
        assert not (repo / "outputs" / "stages" / "d2_08").exists()
    finally:
        _stop(head, env)
