"""workflows/evaluate.py and the decoding path it shares with training and prediction (pose.decode)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pose.decode import decode_batch
from pose.metrics import mpjpe
from pose.targets import C2F_DEPTH_RANGE, make_coords


def _oracle_volume(batch: dict, d2: int, size: int) -> torch.Tensor:
    """A volume whose maximum sits in the ground-truth cell of every joint."""
    coords = make_coords(batch["joints_2d"], batch["z_rel"], d2, 4, C2F_DEPTH_RANGE)  # (B, J, 3) x, y, z
    idx = coords.round().long()
    idx[..., 0].clamp_(0, size - 1)
    idx[..., 1].clamp_(0, size - 1)
    idx[..., 2].clamp_(0, d2 - 1)
    b, j = idx.shape[:2]
    vol = torch.zeros(b, j, d2, size, size)
    bi, ji = torch.meshgrid(torch.arange(b), torch.arange(j), indexing="ij")
    vol[bi, ji, idx[..., 2], idx[..., 1], idx[..., 0]] = 1.0
    return vol


@pytest.mark.parametrize("method", ["argmax", "soft_argmax"])
def test_decode_batch_oracle_volume_recovers_ground_truth(micro_packed, method):
    from pose.data import PackedDataset

    ds = PackedDataset(micro_packed / "test", input_size=256, train=False)
    batch = torch.utils.data.default_collate([ds[i] for i in range(min(8, len(ds)))])
    vol = _oracle_volume(batch, 64, 64)
    pred = decode_batch(vol, batch, depth_range=C2F_DEPTH_RANGE, method=method, root="gt", softmax_scale=50.0)
    err = mpjpe(pred.double(), batch["joints_3d"].double())
    # quantisation only: up to half a 31 mm depth bin and half a heatmap cell per axis (a cell is
    # ~40 mm at ~4 m for a person filling 0.7 of the input), and the root alignment adds the root
    # joint's own rounding: 15.1 mm on average here; a crop-to-raw map 10 % too large gives 40.4
    assert float(err.mean()) < 20.0 and float(err.max()) < 30.0, err
    fit = decode_batch(vol, batch, depth_range=C2F_DEPTH_RANGE, method="argmax", root="fit")
    assert np.isfinite(fit.numpy()).all()


def test_mean_pose_baseline_is_the_training_mean(micro_packed):
    from pose.data import load_arrays
    from workflows.evaluate import mean_pose

    mp = mean_pose(micro_packed / "train")
    j3 = np.asarray(load_arrays(micro_packed / "train")["joints_3d"], dtype=np.float64)
    assert mp.shape == (17, 3)
    np.testing.assert_allclose(mp[0], 0.0, atol=1e-9)
    np.testing.assert_allclose(mp, (j3 - j3[:, :1]).mean(0), atol=1e-9)


def test_incomplete_packed_copy_is_one_line_before_any_model(micro_packed, tmp_path):
    """A shard cut short (a partial copy) stops evaluate with one line naming it, before any checkpoint is read."""
    import shutil

    from workflows.common import UserError
    from workflows.config import make_profile
    from workflows.evaluate import evaluate

    packed = tmp_path / "outputs" / "data" / "packed"
    shutil.copytree(micro_packed, packed)
    shard = packed / "test" / "images_000.bin"
    n = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[: n // 2])
    with pytest.raises(UserError) as exc:
        evaluate(make_profile("micro"), tmp_path)
    assert str(exc.value) == (f"{shard}: {n // 2:,} bytes, meta.json records {n:,} (an incomplete copy of "
                              f"{packed / 'test'}?)")


def test_real_split_and_group_tables_from_metrics():
    """final_summary / extra_markdown / group_markdown on hand-made figures: reduction, monotonicity
    (strict, and within FLAT_MM), one table row per stage and split."""
    from workflows.evaluate import FLAT_MM, final_summary, group_markdown
    from workflows.evaluate import extra_markdown as _extra

    def real_markdown(m):
        return _extra(m, "real")

    groups = {g: {"mpjpe": 100.0, "pa_mpjpe": 80.0, "pck2d": 0.5} for g in ("torso", "arms", "legs")}

    def split(values, base):
        stages = {f"d2_{d:02d}": {"d2": d, "mpjpe_argmax": {"full": v}, "mpjpe_soft": {"full": v + 1},
                                  "pa_mpjpe": {"full": v / 2}, "groups": groups} for d, v in values}
        return {"stages": stages, "baseline_mean_pose": {"mpjpe": {"full": base}, "pa_mpjpe": {"full": base / 2},
                                                         "groups": groups}}

    real = split([(2, 400.0), (4, 250.0)], 300.0)
    real.update(num_test=394, source="pose/data/c2f_vol_demo/valid.npz")
    real["final"] = final_summary(real)
    assert real["final"]["reduction_vs_baseline"] == pytest.approx(1 / 6)
    assert real["final"]["monotone_decrease"] and real["final"]["baseline_pa_mpjpe"] == 150.0
    assert not final_summary(split([(2, 200.0), (4, 250.0)], 300.0))["monotone_decrease"]
    assert real["final"]["never_rises"] and not final_summary(split([(2, 200.0), (4, 250.0)], 300.0))["never_rises"]
    rise = final_summary(split([(2, 200.0), (4, 200.0 + FLAT_MM)], 300.0))
    assert rise["never_rises"] and not rise["monotone_decrease"]
    flat = {**split([(2, 200.0), (4, 200.0 + FLAT_MM)], 300.0), "num_test": 394, "source": "x.npz", "final": rise}
    assert any("falls at every stage: no, but never rises by more than 2 mm." in ln
               for ln in _extra({"heldout": flat}, "heldout"))
    assert not final_summary(split([(2, 200.0), (4, 200.0 + FLAT_MM + 0.01)], 300.0))["never_rises"]
    m = {**split([(2, 500.0), (4, 300.0)], 400.0), "real": real}
    lines = real_markdown(m)
    assert "| d2_04 | 4 | 250.0 | – | 251.0 | – | 125.0 | 16.7 % |" in lines
    assert "| mean pose | – | 300.0 | – | – | – | 150.0 | – |" in lines
    assert "mpjpe_local" not in real["final"]
    # with the locally refined argmax at every stage: its own reduction and trend, one more sentence
    for key, v in (("d2_02", 390.0), ("d2_04", 255.0)):
        real["stages"][key]["mpjpe_local"] = {"full": v}
    f = final_summary(real)
    assert f["mpjpe_local"] == 255.0 and f["reduction_local"] == pytest.approx(0.15) and f["monotone_local"]
    real["final"] = f
    lines = real_markdown(m)
    assert "| d2_04 | 4 | 250.0 | 255.0 | 251.0 | – | 125.0 | 16.7 % |" in lines
    assert lines[-1] == "With the argmax refined locally: 255.0 mm (reduction 15.0 %); falls at every stage: yes."
    table = group_markdown(m)
    assert sum(ln.startswith("| embedded |") for ln in table) == 3 and sum(ln.startswith("| real poses |") for ln in table) == 3
    assert "| real poses | d2_04 | 100.0 | 80.0 | 50.0 % | 100.0 | 80.0 | 50.0 % | 100.0 | 80.0 | 50.0 % |" in table
    assert real_markdown({"stages": {}}) == []
    # the held-out-looks split: its own heading and title, its own rows in the group table
    m["heldout"] = {**real, "final": final_summary(real)}
    lines = _extra(m, "heldout")
    assert lines[1].startswith("## Held-out-looks split (the same 394 real poses")
    assert "| d2_04 | 4 | 250.0 | 255.0 | 251.0 | – | 125.0 | 16.7 % |" in lines
    assert any(ln.startswith("Final stage d2_04 on held-out looks: 250.0 mm") for ln in lines)
    assert sum(ln.startswith("| held-out looks |") for ln in group_markdown(m)) == 3


def test_lifters_fed_with_the_networks_2d(tmp_path):
    """evaluate's photo pipeline (lift_c2f): the final stage's 2D lifted, beside its 3D and flat depth."""
    import json

    from pose import lifting
    from pose.lifting import data as LD
    from workflows.evaluate import lift_c2f, lift_markdown

    real = LD.load_valid_fixture()
    gt = real.joints_3d.astype(np.float64)
    assert lift_c2f(tmp_path, {"real poses": (gt, gt)}, log=lambda *_: None) == {}  # no lifters: no table
    # an "oracle" lifter: trained on these very poses (2000 steps), so it must beat flat depth by far
    x, y, s3 = LD.to_unit_space(real)
    cfg = lifting.SupervisedConfig(lifter=lifting.LifterConfig(output="depth", width=128, blocks=1, dropout=0.0),
                                   iterations=1500, max_norm=False)
    G, _ = lifting.train_supervised(x, y, cfg, unit_mm=float(s3.mean()))
    lifting.save_lifter(tmp_path / "outputs" / "lift" / "supervised" / "model.pt", G)
    (tmp_path / "outputs" / "lift" / "supervised" / "metrics.json").write_text(
        json.dumps({"real": {"pa_mpjpe": 12.5, "mpjpe_scaled": 20.5}}))
    # the network's 3D: the ground truth with each joint 20 mm off in depth, alternately nearer and
    # farther; its 2D (the projection) is then the ground truth's up to that depth change
    off = np.where(np.arange(17) % 2 == 0, 20.0, -20.0)
    pred = gt + np.stack([np.zeros(17), np.zeros(17), off], -1)
    pred[..., :2] = gt[..., :2] / gt[..., 2:] * pred[..., 2:]  # same image position
    rows = lift_c2f(tmp_path, {"real poses": (pred, gt)}, log=lambda *_: None)["real poses"]
    assert set(rows) == {"c2f", "flat", "supervised", "supervised (GT 2D)"}
    assert rows["supervised (GT 2D)"] == {"pa_mpjpe": 12.5, "mpjpe_scaled": 20.5}
    assert 5.0 < rows["c2f"]["pa_mpjpe"] < 25.0  # 20 mm depth noise after alignment
    assert rows["flat"]["pa_mpjpe"] > 60.0  # real poses at flat depth: ~77 mm
    assert rows["supervised"]["pa_mpjpe"] < 0.6 * rows["flat"]["pa_mpjpe"]
    lines = lift_markdown({"lifters": {"real poses": rows}, "final": {"stage": "d2_64"}})
    table = [ln for ln in lines if ln.startswith("| ")]
    assert table[0].startswith("| input → 3D | real poses P-MPJPE | real poses N-MPJPE")
    assert [ln.split(" | ")[0] for ln in table[1:]] == [
        "| C2F network, 3D of d2_64 (argmax)", "| its 2D at flat depth", "| its 2D → supervised lifter",
        "| ground-truth 2D → supervised lifter"]
    assert f"{rows['supervised']['pa_mpjpe']:.1f}" in table[3]


def test_a_truncated_lifter_is_one_line_naming_it(tmp_path):
    """evaluate reads the lifters before any stage: a cut-short model.pt is one UserError naming it."""
    from pose import lifting
    from workflows.common import UserError
    from workflows.evaluate import load_lifters

    path = tmp_path / "outputs" / "lift" / "unsupervised" / "model.pt"
    lifting.save_lifter(path, lifting.Lifter(lifting.LifterConfig(width=16, blocks=1)))
    assert set(load_lifters(tmp_path)) == {"unsupervised"}
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(UserError, match=f"{path} is not a readable lifter checkpoint .*dvc repro lift_unsupervised"):
        load_lifters(tmp_path)
