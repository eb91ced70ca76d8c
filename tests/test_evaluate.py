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
    # quantisation only: half a 31 mm depth bin and half a heatmap cell (~1-2 raw px at ~4 m)
    assert float(err.max()) < 20.0, err
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
