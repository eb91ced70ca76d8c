"""Resuming, without Ray: the training order, the checkpoint store, a run's identity and lock, the
SIGTERM flag, and the training loop stopped and resumed in one process (bitwise the weights of an
uninterrupted run). The same machinery under real Ray with real kills: tests/test_fault_tolerance.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from pose.data.sampler import ShardedBatchSampler, epoch_order, shard_loss_scale, shard_sizes
from workflows.checkpoints import CheckpointStore
from workflows.config import ConfigError, make_profile, validate
from workflows.runs import fingerprint, run_identity, run_lock, run_name

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------
# order
def test_epoch_order_is_a_function_of_seed_and_epoch():
    a = epoch_order(50, seed=3, epoch=2)
    assert sorted(a.tolist()) == list(range(50))
    assert np.array_equal(a, epoch_order(50, seed=3, epoch=2))
    assert not np.array_equal(a, epoch_order(50, seed=3, epoch=1))
    assert not np.array_equal(a, epoch_order(50, seed=4, epoch=2))


def test_shards_cover_each_global_batch_whatever_the_world_size():
    n, batch = 37, 8
    order = epoch_order(n, seed=5, epoch=1)
    for world in (1, 2, 3, 8):
        samplers = [ShardedBatchSampler(n, batch, r, world, seed=5) for r in range(world)]
        for s in samplers:
            s.set_position(1, 0)
        per_rank = [list(s) for s in samplers]
        assert all(len(b) == n // batch for b in per_rank)
        for b in range(n // batch):
            got = [i for r in range(world) for i, e in per_rank[r][b]]
            assert got == order[b * batch:(b + 1) * batch].tolist()  # the same samples, in rank order
            assert {e for r in range(world) for _, e in per_rank[r][b]} == {1}
    assert shard_sizes(16, 3) == [6, 5, 5] and shard_sizes(16, 2) == [8, 8]
    with pytest.raises(ValueError, match="3 workers cannot share a global batch of 2"):
        shard_sizes(2, 3)


def test_a_position_resumes_the_epoch_where_it_stood():
    s = ShardedBatchSampler(40, 4, rank=1, world=2, seed=0)
    s.set_position(3, 0)
    full = list(s)
    s.set_position(3, 6)
    assert list(s) == full[6:] and len(s) == len(full) - 6


def test_uneven_shards_give_the_gradient_of_the_whole_batch():
    """DDP averages the ranks' gradients: with each rank's mean loss scaled by world * n_rank / n_batch,
    that average is the gradient of the mean over the global batch (here 7 samples over 3 ranks)."""
    torch.manual_seed(0)
    w = torch.randn(5, requires_grad=True)
    x, y = torch.randn(7, 5), torch.randn(7)

    def grad(xs, ys, scale=1.0):
        w.grad = None
        (((xs @ w - ys) ** 2).mean() * scale).backward()
        return w.grad.clone()

    whole = grad(x, y)
    world, lo, parts = 3, 0, []
    for n in shard_sizes(7, world):
        parts.append(grad(x[lo:lo + n], y[lo:lo + n], shard_loss_scale(n, 7, world)))
        lo += n
    torch.testing.assert_close(sum(parts) / world, whole, rtol=1e-6, atol=1e-7)
    assert shard_loss_scale(8, 16, 2) == 1.0


# --------------------------------------------------------------------------------------------
# the store
def _files(d: Path, tag: bytes) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name in ("model.pt", "train_state.pt", "curve.csv"):
        (d / name).write_bytes(tag * 100 + name.encode())
    return d


def test_store_keeps_the_newest_and_verifies_them(tmp_path):
    store = CheckpointStore(tmp_path / "run", keep=2)
    for it in (10, 20, 30):
        store.save(it, _files(tmp_path / f"src{it}", str(it).encode()), {"epoch": it // 10, "final": it == 30})
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["ckpt-000000020", "ckpt-000000030"]
    ckpt, damaged = store.scan()
    assert ckpt.iteration == 30 and ckpt.manifest["final"] and ckpt.manifest["epoch"] == 3 and damaged == []
    with store.open(ckpt) as d:
        assert (d / "model.pt").read_bytes() == b"30" * 100 + b"model.pt"


@pytest.mark.parametrize("damage, reason", [
    ("truncate", "model.pt has 1000 of 1208 bytes"),
    ("flip", "model.pt does not match its SHA-256"),
    ("manifest", "no manifest.json (the write never finished)"),
    ("missing", "train_state.pt is missing"),
])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, damage, reason):
    store = CheckpointStore(tmp_path / "run")
    for it in (10, 20):
        store.save(it, _files(tmp_path / f"src{it}", b"ab" * 6), {})
    newest = tmp_path / "run" / "checkpoints" / "ckpt-000000020"
    if damage == "truncate":
        (newest / "model.pt").write_bytes((newest / "model.pt").read_bytes()[:1000])
    elif damage == "flip":
        data = bytearray((newest / "model.pt").read_bytes())
        data[5] ^= 1
        (newest / "model.pt").write_bytes(bytes(data))
    elif damage == "manifest":
        (newest / "manifest.json").unlink()
    else:
        (newest / "train_state.pt").unlink()
    ckpt, damaged = store.scan()
    assert ckpt.iteration == 10
    assert damaged == [("ckpt-000000020", reason)]
    store.quarantine("ckpt-000000020")
    assert store.scan() == (ckpt, [])
    assert (tmp_path / "run" / "checkpoints" / "damaged-ckpt-000000020").is_dir()


# --------------------------------------------------------------------------------------------
# identity and lock
def _train_config(tmp_path: Path, packed: Path, cfg=None, key: str = "d2_02"):
    from workflows.stage import build_stage_run

    cfg = validate(cfg or make_profile("micro"))
    return build_stage_run(cfg, key, tmp_path, data_dir=packed)


def test_the_identity_covers_what_decides_the_result(tmp_path, micro_packed):
    base = _train_config(tmp_path, micro_packed)
    fp = fingerprint(run_identity(base, 2, False))
    assert fp == fingerprint(run_identity(_train_config(tmp_path, micro_packed), 2, False))
    assert run_name("d2_02", fp) == f"d2_02-{fp[:12]}"

    def changed(section, key, value):
        cfg = make_profile("micro")
        (cfg[section] if section != "train" else cfg["train"]["d2_02"])[key] = value
        return fingerprint(run_identity(_train_config(tmp_path, micro_packed, cfg), 2, False))

    for section, key, value in [("train", "lr", 0.001), ("train", "iterations", 3), ("model", "features", 16),
                                ("targets", "sigma_2d", 1.5), ("data", "val_size", 4), ("seed", None, None)]:
        if section == "seed":
            cfg = make_profile("micro")
            cfg["seed"] = 1
            other = fingerprint(run_identity(_train_config(tmp_path, micro_packed, cfg), 2, False))
        else:
            other = changed(section, key, value)
        assert other != fp, (section, key)
    # when things are printed or saved does not change the result, nor the identity
    assert changed("train", "log_every", 7) == fp and changed("train", "checkpoint_every", 3) == fp
    assert fingerprint(run_identity(base, 1, False)) != fp and fingerprint(run_identity(base, [1, 2], False)) != fp
    assert fingerprint(run_identity(base, 2, True)) != fp
    # the content of the init checkpoint and of the data's meta.json count, not their paths
    tc = _train_config(tmp_path, micro_packed, key="d2_04")
    init = Path(tc.init_checkpoint)
    init.parent.mkdir(parents=True)
    init.write_bytes(b"one")
    a = fingerprint(run_identity(tc, 2, False))
    init.write_bytes(b"two")
    assert fingerprint(run_identity(tc, 2, False)) != a
    copy = tmp_path / "copy"
    for split in ("train", "test"):
        (copy / split).mkdir(parents=True)
        (copy / split / "meta.json").write_bytes((micro_packed / split / "meta.json").read_bytes())
    assert fingerprint(run_identity(_train_config(tmp_path, copy), 2, False)) == fp
    (copy / "test" / "meta.json").write_text("{}")
    assert fingerprint(run_identity(_train_config(tmp_path, copy), 2, False)) != fp


def test_a_run_folder_has_one_driver(tmp_path):
    from workflows.runs import RunInUse

    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from workflows.runs import run_lock\n"
            f"with run_lock({str(tmp_path / 'run')!r}): print('locked')")
    with run_lock(tmp_path / "run"):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "RunInUse: run folder" in r.stderr and "is in use by pid " in r.stderr
        with pytest.raises(RunInUse):
            with run_lock(tmp_path / "run"):
                pass
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "locked"  # released with its holder


def test_sigterm_becomes_a_flag_even_from_a_thread(tmp_path):
    """The handler is installed from a non-main thread (as in a Ray worker); the first SIGTERM sets
    the flag and the process lives on, the second ends it as before."""
    code = f"""
import os, signal, sys, threading, time
sys.path.insert(0, {str(REPO)!r})
from workflows.runs import install_sigterm_flag
flag, out = threading.Event(), {{}}
t = threading.Thread(target=lambda: out.update(ok=install_sigterm_flag(flag)))
t.start(); t.join()
print("installed", out["ok"], flush=True)
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.2)
print("alive, flag", flag.is_set(), flush=True)
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(2)
print("still alive", flush=True)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.splitlines() == ["installed True", "alive, flag True"]
    assert r.returncode == -15


# --------------------------------------------------------------------------------------------
# the loop, stopped and resumed in one process
class _StopAfter(threading.Event):
    """A SIGTERM flag that reads as set from the ``n``-th look on (the loop looks once per iteration)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.looks = n, 0

    def is_set(self) -> bool:
        self.looks += 1
        return self.looks >= self.n


def _loop_config(tmp_path: Path, packed: Path, run: str, ema_decay: float | None = None) -> dict:
    cfg = make_profile("micro")
    cfg["data"]["train_limit"] = 32
    cfg["data"]["aug"] = True  # augmentation drawn per (seed, epoch, row): part of what must match
    cfg["train"]["d2_02"].update(iterations=20, batch_size=4, checkpoint_every=3, log_every=1000,
                                 ema_decay=ema_decay)
    tc = _train_config(tmp_path, packed, cfg)
    return tc.replace(run_name=run, run_dir=str(tmp_path / run))


def _run(tc, out: Path, stop_after: int | None = None):
    from workflows.train_loop import local_context, run_worker

    wc = local_context("cpu", out)
    wc.sigterm = _StopAfter(stop_after) if stop_after else None
    return run_worker(tc, wc), wc


@pytest.mark.parametrize("ema_decay", [None, 0.9], ids=["trained", "weight_average"])
def test_the_loop_resumes_exactly_where_it_stopped(tmp_path, micro_packed, capsys, ema_decay):
    """Also with a weight average (``ema_decay``): model.pt then holds the average, and the trained
    weights and the average both resume bitwise."""
    from workflows.train_loop import WorkerStopped

    status, ref = _run(_loop_config(tmp_path, micro_packed, "ref", ema_decay), tmp_path / "ref_out")
    assert status == "done" and [r["iteration"] for r in ref.reports] == [8, 16, 20]

    tc = _loop_config(tmp_path, micro_packed, "run", ema_decay)
    with pytest.raises(WorkerStopped, match="stopped on SIGTERM at iteration 11 after a checkpoint"):
        _run(tc, tmp_path / "out", stop_after=11)
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["ckpt-000000009", "ckpt-000000011"]  # checkpoint_every 3, then the stop
    state = torch.load(tmp_path / "run" / "checkpoints" / "ckpt-000000011" / "train_state.pt", weights_only=False)
    assert (state["epoch"], state["batch"], state["iteration"], len(state["curve"])) == (1, 3, 11, 1)

    # a crash while writing the newest checkpoint: the resume falls back to the one before
    model = tmp_path / "run" / "checkpoints" / "ckpt-000000011" / "model.pt"
    model.write_bytes(model.read_bytes()[:500])
    capsys.readouterr()
    status, wc = _run(tc, tmp_path / "out")
    printed = capsys.readouterr().out
    assert status == "done"
    assert "[d2_02] warning: checkpoint ckpt-000000011 is damaged (model.pt has 500 of " in printed
    assert "[d2_02] resumed at iteration 9" in printed
    assert [r["epoch"] for r in wc.reports] == [2, 3]  # epoch 1 was reported before the stop, once
    a = torch.load(tmp_path / "ref_out" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "out" / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    ref_rows = [ln.rsplit(",", 1)[0] for ln in (tmp_path / "ref_out" / "curve.csv").read_text().splitlines()]
    rows = [ln.rsplit(",", 1)[0] for ln in (tmp_path / "out" / "curve.csv").read_text().splitlines()]
    assert rows == ref_rows  # every column but epoch_time_s
    final = json.loads((tmp_path / "run" / "checkpoints" / "ckpt-000000020" / "manifest.json").read_text())
    assert final["final"] and final["iteration"] == 20
    state = torch.load(tmp_path / "run" / "checkpoints" / "ckpt-000000020" / "train_state.pt", weights_only=False)
    if ema_decay is None:
        assert "trained_model" not in state
    else:
        ref_state = torch.load(tmp_path / "ref" / "checkpoints" / "ckpt-000000020" / "train_state.pt",
                               weights_only=False)
        trained = state["trained_model"]
        assert state["ema_updates"] == 20 and all(torch.equal(trained[k], ref_state["trained_model"][k]) for k in a)
        assert not torch.equal(trained["heatmap2.weight"], b["heatmap2.weight"])  # saved: the average


# --------------------------------------------------------------------------------------------
# configuration
def test_ray_section_validates_workers_failures_and_cadence():
    cfg = make_profile("micro")
    for value, ok in [(2, True), ([1, 4], True), ([2, 2], True), ([3, 1], False), ([0, 2], False), (0, False),
                      ("2", False), ([1, 2, 3], False)]:
        cfg["ray"]["num_workers"] = value
        if ok:
            assert validate(cfg)["ray"]["num_workers"] == value
        else:
            with pytest.raises(ConfigError, match=r"^stages.yaml: ray.num_workers: must be a worker count >= 1 or "
                               r"\[min, max\]"):
                validate(cfg)
    cfg["ray"]["num_workers"] = 1
    cfg["ray"]["max_failures"] = -1
    with pytest.raises(ConfigError, match="ray.max_failures: must be >= 0, got -1"):
        validate(cfg)
    cfg["ray"]["max_failures"] = 0
    cfg["train"]["d2_16"]["checkpoint_every"] = 0
    with pytest.raises(ConfigError, match="train.d2_16.checkpoint_every: must be >= 1, got 0"):
        validate(cfg)
    for name in ("default", "full", "micro"):
        assert make_profile(name)["ray"]["max_failures"] > 0, name
    assert make_profile("default")["ray"]["checkpoint_every"] == 100
