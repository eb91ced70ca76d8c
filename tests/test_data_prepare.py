"""``pose prepare``: packed output equals the source, bad input gives one clear line, atomic output."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pose.data import C2F_VOL_DEMO, seed_txt
from pose.data import prepare as prep
from pose.data.packed import ImageStore, PackWriter, load_arrays, load_poses, read_meta
from pose.data.records import BadSample
from pose.data.seed_txt import SeedTxtReader
from pose.tools import cli

VALID = C2F_VOL_DEMO / "valid.npz"
N = 8  # samples 0-5 train (S1, S5), 6-7 test (S9)
BAD = 3


def make_layout(root: Path) -> Path:
    d = np.load(VALID)
    subjects = np.array([1, 1, 1, 5, 5, 5, 9, 9])
    actions = np.array(["Posing"] * N)
    seed_txt.write_layout_from_poses(root, d["S"][:N], d["K"][:N], subjects, actions)
    return root


def run_cli(argv, capsys):
    rc = cli.main(["prepare", *argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(name))


def test_pack_equals_source(tmp_path, capsys):
    src = make_layout(tmp_path / "src")
    rc, out, err = run_cli([str(src), "--out", str(tmp_path / "packed"), "--quiet", "--workers", "1"], capsys)
    assert rc == 0, err
    assert "train: 6 samples (0 skipped), test: 2 samples (0 skipped)" in out
    reader = SeedTxtReader(src)
    for split, idx in (("train", range(0, 6)), ("test", range(6, 8))):
        d = tmp_path / "packed" / split
        meta = read_meta(d)
        assert meta["count"] == len(idx) and meta["layout"] == "seed" and meta["split"] == split
        assert meta["image_size"] == [224, 224] and meta["action_names"][5] == "Posing"
        arr = load_arrays(d)
        assert arr["joints_2d"].dtype == np.float32 and arr["joints_2d"].shape == (len(idx), 17, 2)
        assert arr["image_index"].dtype == np.int64 and arr["image_index"].shape == (len(idx), 3)
        assert isinstance(arr["joints_3d"], np.memmap)
        store = ImageStore(d)
        for row, i in enumerate(idx):
            s = reader.read(i)
            np.testing.assert_allclose(arr["joints_2d"][row], s.joints_2d, rtol=1e-6)
            np.testing.assert_allclose(arr["joints_3d"][row], s.joints_3d, rtol=1e-6)
            np.testing.assert_allclose(arr["img_to_raw"][row], s.img_to_raw, rtol=1e-6)
            assert arr["index"][row] == i and arr["subject"][row] == s.subject and arr["has_depth"][row]
            assert store[row] == Path(s.image_path).read_bytes()  # bytes as stored, no re-encode
        report = json.loads((d / "report.json").read_text())
        assert report == {"count": len(idx), "skipped_count": 0, "skipped": []}
    assert leftovers(tmp_path, "packed") == ["packed"]


def test_load_poses_raw_pixels(tmp_path):
    src = make_layout(tmp_path / "src")
    prep.prepare(src, tmp_path / "p", split="train", progress=False)
    poses = load_poses(tmp_path / "p" / "train")
    from pose.camera import project

    np.testing.assert_allclose(project(poses["joints_3d"].astype(np.float64), poses["K"]), poses["joints_2d"], atol=1e-3)
    assert poses["action_names"][poses["action"][0]] == "Posing" and poses["subject"].tolist() == [1, 1, 1, 5, 5, 5]


def _missing_field(src):
    (src / "center_x" / f"{BAD}.txt").unlink()
    return src / "center_x" / f"{BAD}.txt", "file missing"


def _truncated(src):
    p = src / "gt_joint_3d_mono_raw" / f"{BAD}.txt"
    p.write_bytes(p.read_bytes()[:600])  # cut in the middle of a line
    return p, "joint line"


def _joints31(src):
    p = src / "gt_joint_2d_raw_new" / f"{BAD}.txt"
    p.write_text("".join(p.read_text().splitlines(keepends=True)[:31]))
    return p, "expected 32 joint lines, got 31"


def _nan(src):
    p = src / "gt_joint_3d_mono_raw" / f"{BAD}.txt"
    lines = p.read_text().splitlines(keepends=True)
    lines[4] = "         nan  -340.855113  4709.494331 \n"
    p.write_text("".join(lines))
    return p, "joint line 5: NaN or inf"


def _corrupt_image(src):
    p = src / "images" / f"{BAD}.png"
    p.write_bytes(p.read_bytes()[:100])
    return p, "image does not decode"


def _camera_without_f(src):
    p = src / "camera_all" / f"{BAD}.txt"
    text = p.read_text()
    start = text.index("f:")
    end = text.index("c:")
    p.write_text(text[:start] + text[end:])
    return p, "camera block 'f:' missing"


def _wrong_image_size(src):
    import cv2

    p = src / "images" / f"{BAD}.png"
    cv2.imwrite(str(p), np.zeros((200, 224, 3), np.uint8))
    return p, "image is 224x200, expected 224x224"


CASES = [_missing_field, _truncated, _joints31, _nan, _corrupt_image, _camera_without_f, _wrong_image_size]


@pytest.mark.parametrize("corrupt", CASES, ids=[c.__name__.strip("_") for c in CASES])
def test_bad_input_one_line_fail_and_skip(tmp_path, capsys, corrupt):
    src = make_layout(tmp_path / "src")
    bad_file, reason = corrupt(src)
    out = tmp_path / "packed"
    rc, stdout, err = run_cli([str(src), "--out", str(out), "--quiet", "--workers", "1", "--on-bad", "fail"], capsys)
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"pose prepare: error: sample {BAD}: {bad_file}: ")
    assert reason in lines[0]
    assert leftovers(tmp_path, "packed") == []  # nothing half-written
    # skip: the rest is packed, the report lists the bad one
    rc, stdout, err = run_cli([str(src), "--out", str(out), "--quiet", "--workers", "1", "--on-bad", "skip",
                               "--max-skip-fraction", "0.2"], capsys)  # 1 of 6 train samples
    assert rc == 0, err
    warnings = err.strip().splitlines()
    assert len(warnings) == 1 and f"sample {BAD}: {bad_file}: " in warnings[0] and reason in warnings[0]
    arr = load_arrays(out / "train")
    assert arr["index"].tolist() == [0, 1, 2, 4, 5]
    assert load_arrays(out / "test")["index"].tolist() == [6, 7]
    report = json.loads((out / "train" / "report.json").read_text())
    assert report["count"] == 5 and report["skipped_count"] == 1
    assert report["skipped"][0]["index"] == BAD and report["skipped"][0]["file"] == str(bad_file)
    assert reason in report["skipped"][0]["reason"]
    assert read_meta(out / "train")["skipped"] == 1


def test_fatal_errors_one_line(tmp_path, capsys):
    rc, _, err = run_cli([str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "does not exist" in err
    (tmp_path / "empty").mkdir()
    rc, _, err = run_cli([str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "neither the seed txt layout" in err
    assert leftovers(tmp_path, "o") == []


def test_refuses_overwrite_unless_force(tmp_path, capsys):
    src = make_layout(tmp_path / "src")
    out = tmp_path / "packed"
    assert run_cli([str(src), "--out", str(out), "--quiet", "--split", "test"], capsys)[0] == 0
    rc, _, err = run_cli([str(src), "--out", str(out), "--quiet", "--split", "train"], capsys)
    assert rc == 1 and "already exists" in err and "--force" in err
    assert sorted(p.name for p in out.iterdir()) == ["test"]  # untouched
    rc, _, err = run_cli([str(src), "--out", str(out), "--quiet", "--split", "train", "--force"], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["train"]
    assert leftovers(tmp_path, "packed") == ["packed"]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _interrupt_at_add(monkeypatch, n: int) -> None:
    """The n-th ``PackWriter.add`` raises KeyboardInterrupt (as Ctrl-C would)."""
    calls = []
    original = PackWriter.add

    def add(self, sample, data):
        calls.append(sample.index)
        if len(calls) == n:
            raise KeyboardInterrupt
        original(self, sample, data)

    monkeypatch.setattr(PackWriter, "add", add)


def _spy_checked(monkeypatch) -> list[int]:
    checked: list[int] = []
    work = prep._work
    monkeypatch.setattr(prep, "_work", lambda i: checked.append(i) or work(i))
    return checked


TINY_SHARDS = 1  # bytes: every image closes the shard before it, so each sample is one shard


def test_interrupted_run_resumes_after_its_complete_shards(tmp_path, monkeypatch):
    src = make_layout(tmp_path / "src")
    fresh = prep.prepare(src, tmp_path / "fresh", shard_bytes=TINY_SHARDS, progress=False)
    with monkeypatch.context() as m:
        _interrupt_at_add(m, 5)  # shards 0-2 closed with their records, shard 3 open
        with pytest.raises(KeyboardInterrupt):
            prep.prepare(src, tmp_path / "packed", shard_bytes=TINY_SHARDS, progress=False)
    assert leftovers(tmp_path, "packed") == ["packed.partial"]  # no final folder, the partial kept
    kept = sorted(p.name for p in (tmp_path / "packed.partial" / "train").iterdir())
    assert kept == ["images_000.bin", "images_001.bin", "images_002.bin", "images_003.bin",
                    "rows_000.npz", "rows_001.npz", "rows_002.npz"]
    checked = _spy_checked(monkeypatch)
    metas = prep.prepare(src, tmp_path / "packed", shard_bytes=TINY_SHARDS, progress=False)
    assert checked == [3, 4, 5, 6, 7]  # train resumed after its three shards; test from the start
    assert leftovers(tmp_path, "packed") == ["packed"]
    assert {k: m["count"] for k, m in metas.items()} == {k: m["count"] for k, m in fresh.items()} == {"train": 6, "test": 2}
    assert _files(tmp_path / "packed") == _files(tmp_path / "fresh")  # byte for byte


def test_resume_rechecks_a_damaged_shard_and_what_follows(tmp_path, monkeypatch, capsys):
    src = make_layout(tmp_path / "src")
    with monkeypatch.context() as m:
        _interrupt_at_add(m, 5)
        rc, _, err = run_cli([str(src), "--out", str(tmp_path / "packed"), "--quiet", "--shard-mb", "1e-9"], capsys)
    assert rc == 130 and err.strip().splitlines() == [
        f"pose prepare: error: interrupted; complete shards kept in {tmp_path / 'packed.partial'}: run the same command "
        "to resume"]
    shard = tmp_path / "packed.partial" / "train" / "images_001.bin"
    shard.write_bytes(shard.read_bytes()[:-1] + b"x")  # same size, other bytes
    checked = _spy_checked(monkeypatch)
    rc, _, err = run_cli([str(src), "--out", str(tmp_path / "packed"), "--quiet", "--shard-mb", "1e-9"], capsys)
    assert rc == 0, err
    assert checked == [1, 2, 3, 4, 5, 6, 7]  # only shard 0 kept
    assert "train: resuming after 1 complete shard(s) of an interrupted run (1 samples packed, 1 of 6 checked)" in err
    assert prep.verify(tmp_path / "packed", progress=False)[tmp_path / "packed" / "train"]["count"] == 6
    # a partial of other options is emptied, not mixed in
    with monkeypatch.context() as m:
        _interrupt_at_add(m, 3)
        with pytest.raises(KeyboardInterrupt):
            prep.prepare(src, tmp_path / "other", shard_bytes=TINY_SHARDS, progress=False)
    metas = prep.prepare(src, tmp_path / "other", every=2, shard_bytes=TINY_SHARDS, progress=False)
    assert load_arrays(tmp_path / "other" / "train")["index"].tolist() == [0, 2, 4] and metas["test"]["count"] == 1
    assert "starting afresh" in capsys.readouterr().err


def test_a_second_run_on_the_same_output_is_refused(tmp_path):
    import fcntl
    import os

    src = make_layout(tmp_path / "src")
    (tmp_path / "packed.partial").mkdir()
    fd = os.open(tmp_path / "packed.partial", os.O_RDONLY)  # as a running `pose prepare` holds it
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(FileExistsError, match=f"^{tmp_path / 'packed.partial'}: another `pose prepare` is writing it$"):
            prep.prepare(src, tmp_path / "packed", progress=False)
    finally:
        os.close(fd)
    assert prep.prepare(src, tmp_path / "packed", progress=False)["train"]["count"] == 6


def test_bad_input_after_an_interruption_removes_the_partial(tmp_path, monkeypatch):
    src = make_layout(tmp_path / "src")
    with monkeypatch.context() as m:
        _interrupt_at_add(m, 3)
        with pytest.raises(KeyboardInterrupt):
            prep.prepare(src, tmp_path / "packed", shard_bytes=TINY_SHARDS, progress=False)
    _nan(src)
    with pytest.raises(BadSample, match=f"sample {BAD}: .*NaN"):
        prep.prepare(src, tmp_path / "packed", shard_bytes=TINY_SHARDS, progress=False)
    assert leftovers(tmp_path, "packed") == []


def test_too_many_skipped_stops_with_count_and_reasons(tmp_path, capsys):
    src = make_layout(tmp_path / "src")
    for i in (0, 1):  # two of one kind, then one each of three others
        p = src / "gt_joint_3d_mono_raw" / f"{i}.txt"
        p.write_text(p.read_text().replace(p.read_text().splitlines()[4], "         nan  -340.855113  4709.494331 "))
    (src / "center_x" / "2.txt").unlink()
    import cv2

    cv2.imwrite(str(src / "images" / "3.png"), np.zeros((200, 224, 3), np.uint8))
    p = src / "gt_joint_2d_raw_new" / "4.txt"
    p.write_text("".join(p.read_text().splitlines(keepends=True)[:31]))
    out = tmp_path / "packed"
    rc, _, err = run_cli([str(src), "--out", str(out), "--quiet", "--on-bad", "skip", "--max-skip-fraction", "0.5"], capsys)
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 5 and all(ln.startswith("pose prepare: warning: skipped sample ") for ln in lines[:4])
    assert lines[-1] == (
        "pose prepare: error: train: 4 of the first 4 samples are bad, more than --max-skip-fraction "
        "(data.max_skip_fraction) 0.5 of the 6 allows; most common: 2 × gt_joint_3d_mono_raw: joint line #: NaN or "
        "inf; 1 × center_x: file missing; 1 × images: image is #x#, expected #x#")
    assert leftovers(tmp_path, "packed") == []
    # the default (1 %) stops at the first bad sample of 6; a larger fraction packs the rest
    rc, _, err = run_cli([str(src), "--out", str(out), "--quiet", "--on-bad", "skip"], capsys)
    assert rc == 1 and "1 of the first 1 samples are bad" in err and "0.01 of the 6" in err
    rc, _, err = run_cli([str(src), "--out", str(out), "--quiet", "--on-bad", "skip", "--max-skip-fraction", "1"], capsys)
    assert rc == 0 and load_arrays(out / "train")["index"].tolist() == [5]


# ----------------------------------------------------------------------------- a packed folder proves it is whole
@pytest.fixture
def packed_copy(tmp_path) -> Path:
    """A packed folder of one sample per shard (train: 6 shards, test: 2), copied as to a cluster volume."""
    src = make_layout(tmp_path / "src")
    prep.prepare(src, tmp_path / "packed", shard_bytes=TINY_SHARDS, progress=False)
    shutil.copytree(tmp_path / "packed", tmp_path / "copy")
    return tmp_path / "copy"


def test_meta_records_every_file_with_size_and_checksum(packed_copy):
    d = packed_copy / "train"
    meta = read_meta(d)
    on_disk = sorted(p.name for p in d.iterdir() if p.name not in ("meta.json", "report.json"))
    assert sorted(meta["files"]) == on_disk and len(on_disk) == 18 + 6 and meta["num_shards"] == 6
    for name, entry in meta["files"].items():
        data = (d / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}, name


def test_a_shard_also_closes_at_shard_rows_samples(tmp_path, monkeypatch):
    import pose.data.packed as packed

    monkeypatch.setattr(packed, "SHARD_ROWS", 4)
    metas = prep.prepare(make_layout(tmp_path / "src"), tmp_path / "p", progress=False)  # 1 GiB shards
    assert metas["train"]["num_shards"] == 2 and metas["test"]["num_shards"] == 1
    assert load_arrays(tmp_path / "p" / "train")["image_index"][:, 0].tolist() == [0, 0, 0, 0, 1, 1]


def test_incomplete_copy_fails_when_opened_naming_the_shard(packed_copy, capsys):
    shard = packed_copy / "train" / "images_004.bin"
    n = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[:-10])  # the copy stopped 10 bytes short
    want = f"{shard}: {n - 10:,} bytes, meta.json records {n:,} (an incomplete copy of {packed_copy / 'train'}?)"
    with pytest.raises(ValueError) as exc:
        read_meta(packed_copy / "train")
    assert str(exc.value) == want
    from pose.data.dataset import PackedDataset

    with pytest.raises(ValueError, match="images_004.bin: "):  # what a training stage opens
        PackedDataset(packed_copy / "train", input_size=64)
    rc, out, err = run_cli(["--verify", str(packed_copy), "--quiet"], capsys)
    assert rc == 1 and err.strip().splitlines() == [f"pose prepare: error: {want}"] and out == ""
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=f"^{shard}: missing, but meta.json lists it"):
        load_arrays(packed_copy / "train")


def test_verify_compares_every_checksum(packed_copy, capsys):
    rc, out, err = run_cli(["--verify", str(packed_copy), "--quiet"], capsys)
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert [ln.split(": ")[1] for ln in lines] == [str(packed_copy / "train"), str(packed_copy / "test")]
    assert lines[0].endswith("24 files, 0.00 GB, 6 samples: sizes and SHA-256 match meta.json")
    shard = packed_copy / "test" / "images_001.bin"
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0xFF  # same size, one byte changed: opening passes, --verify does not
    shard.write_bytes(bytes(data))
    assert read_meta(packed_copy / "test")["count"] == 2
    rc, out, err = run_cli(["--verify", str(packed_copy / "test"), "--quiet"], capsys)
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"pose prepare: error: {shard}: SHA-256 ") and "meta.json records" in err
    rc, _, err = run_cli(["--verify", str(packed_copy / "nope"), "--quiet"], capsys)
    assert rc == 1 and "not a packed folder" in err
    rc, _, err = run_cli(["--quiet"], capsys)
    assert rc == 2 and err.strip() == "pose prepare: error: give SRC and --out DIR (or --verify DIR)"


def test_subsampling_options_and_workers(tmp_path):
    src = make_layout(tmp_path / "src")
    (tmp_path / "keep.txt").write_text("0\n2\n3\n4\n7\n")
    metas = prep.prepare(src, tmp_path / "a", index_list=str(tmp_path / "keep.txt"), every=2, progress=False)
    assert load_arrays(tmp_path / "a" / "train")["index"].tolist() == [0, 3]
    assert metas["test"]["count"] == 1
    # a process pool gives the same result as the in-process path
    prep.prepare(src, tmp_path / "b", split="train", workers=2, progress=False)
    arr = load_arrays(tmp_path / "b" / "train")
    assert arr["index"].tolist() == list(range(6))


_ORIGINAL_WORK = prep._work
_STARTED = None  # a multiprocessing.Value shared with the forked workers


def _counting_work(index):
    with _STARTED.get_lock():
        _STARTED.value += 1
    return _ORIGINAL_WORK(index)


def test_workers_stay_a_bounded_window_ahead_of_a_slow_writer(tmp_path, monkeypatch):
    """Checked samples wait in memory for the writer; with a slow writer at most the window does."""
    import multiprocessing as mp
    import time

    global _STARTED
    _STARTED = mp.get_context("fork").Value("i", 0)
    src = make_layout(tmp_path / "src")
    monkeypatch.setattr(prep, "select_indices", lambda idx, *a, **k: list(idx) * 12)  # 72 > 64 → pool
    monkeypatch.setattr(prep, "_work", _counting_work)
    monkeypatch.setattr(prep, "_CHUNK", 1)
    monkeypatch.setattr(prep, "_IN_FLIGHT_PER_WORKER", 2)  # window: 2 workers x 2 samples
    ahead, original_add = [], PackWriter.add

    def slow_add(self, sample, data):
        time.sleep(0.01)
        ahead.append(_STARTED.value - len(self))  # checked or being checked, not yet written
        original_add(self, sample, data)

    monkeypatch.setattr(PackWriter, "add", slow_add)
    prep.prepare(src, tmp_path / "p", split="train", workers=2, progress=False)
    assert load_arrays(tmp_path / "p" / "train")["index"].tolist() == list(range(6)) * 12
    assert len(ahead) == 72 and max(ahead) <= 4 + 1  # the window, and the sample being written


def _one_mib(i: int) -> bytes:
    return bytes(1 << 20)  # larger than a pipe's buffer, like an image


def test_wind_down_after_an_error_takes_the_results_in_flight():
    """After an error the pool ends without terminate(): the results already handed out are read."""
    import multiprocessing as mp
    import threading

    pool = mp.get_context("fork").Pool(2)
    results = pool.imap(_one_mib, range(48), chunksize=1)
    assert len(next(results)) == 1 << 20  # the writer stopped after one result
    t = threading.Thread(target=prep._wind_down, args=(pool, results), daemon=True)
    t.start()
    t.join(120)
    assert not t.is_alive()
    assert all(not p.is_alive() for p in pool._pool)


def test_pool_workers_die_at_sigterm_and_leave_ctrl_c_to_the_parent():
    """Pool.terminate() must end a worker blocked on the task queue: the parent's Python SIGTERM
    handler (inherited at fork) is reset to the default in the workers."""
    import subprocess
    import sys

    code = ("import signal; from pose.data import prepare as p; signal.signal(signal.SIGTERM, p._sigterm); "
            "p._init_worker(); print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "
            "signal.getsignal(signal.SIGINT) is signal.SIG_IGN)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["True", "True"], r.stderr


def test_workers_pool_order_and_bad_samples(tmp_path, monkeypatch):
    src = make_layout(tmp_path / "src")
    _nan(src)  # BadSample results must cross the process boundary
    monkeypatch.setattr(prep, "select_indices", lambda idx, *a, **k: list(idx) * 12)  # 72 > 64 → pool
    metas = prep.prepare(src, tmp_path / "b", split="train", workers=2, progress=False, on_bad="skip",
                         max_skip_fraction=0.2)
    assert load_arrays(tmp_path / "b" / "train")["index"].tolist() == [0, 1, 2, 4, 5] * 12
    assert metas["train"]["skipped"] == 12
    with pytest.raises(BadSample, match=f"sample {BAD}: .*NaN"):
        prep.prepare(src, tmp_path / "c", split="train", workers=2, progress=False, on_bad="fail")
    assert leftovers(tmp_path, "c") == []
