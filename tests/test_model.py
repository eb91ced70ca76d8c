"""Tests for pose/model.py: shapes, d2 expansion, checkpoints, norms, bad input, overfitting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pose.model import (
    PRESETS,
    BatchStatsNorm2d,
    C2FPoseNet,
    ModelConfig,
    Residual,
    conv1x1_nchw,
    expand_from,
    load_checkpoint,
    save_checkpoint,
    upsample_heatmap2,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The test machine is shared: run this module's tiny models on one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def micro(**kw) -> C2FPoseNet:
    torch.manual_seed(0)
    return C2FPoseNet(ModelConfig.preset("micro", **kw))


@pytest.mark.parametrize("d2", [1, 2, 4, 8, 16, 32, 64])
def test_output_shapes(d2: int) -> None:
    model = micro(d2=d2)
    S, H = model.cfg.input_size, model.cfg.output_size
    assert H == S // 4
    hm, vol = model(torch.randn(2, 3, S, S))
    assert hm.shape == (2, 17, H, H)
    assert vol.shape == (2, 17, d2, H, H)
    assert model.heatmap2.out_channels == 17 * d2
    assert torch.isfinite(vol).all() and torch.isfinite(hm).all()


def test_volume_channel_layout_is_joint_major() -> None:
    """Channel j*d2 + k of heatmap2 is joint j, depth bin k."""
    model = micro(d2=4).eval()
    with torch.no_grad():
        model.heatmap2.weight.zero_()
        model.heatmap2.bias.copy_(torch.arange(17 * 4, dtype=torch.float32))
        _, vol = model(torch.randn(2, 3, 32, 32))
    assert vol[1, 5, 3, 0, 0].item() == 5 * 4 + 3
    assert vol[0, 16, 0, 7, 7].item() == 16 * 4


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_conv1x1_nchw_matches_conv_and_its_gradients(fmt) -> None:
    """heatmap2 as a batched matmul: same values and gradients as the conv, NCHW-contiguous output."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 12, 1).double()
    x = torch.randn(3, 8, 5, 5, dtype=torch.float64).to(memory_format=fmt).requires_grad_()
    g = torch.randn(3, 12, 5, 5, dtype=torch.float64)
    out = conv1x1_nchw(conv, x)
    assert out.is_contiguous()
    ref = conv(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    grads = torch.autograd.grad((out * g).sum(), (x, conv.weight, conv.bias))
    refs = torch.autograd.grad((ref * g).sum(), (x, conv.weight, conv.bias))
    for a, b in zip(grads, refs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert grads[2][4].item() == pytest.approx(g[:, 4].sum().item())


def test_conv1x1_nchw_rejects_other_convs_and_shapes() -> None:
    with pytest.raises(ValueError, match="plain 1x1 conv"):
        conv1x1_nchw(torch.nn.Conv2d(8, 12, 3, padding=1), torch.randn(1, 8, 5, 5))
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 8, H, W\), got \(1, 7, 5, 5\)"):
        conv1x1_nchw(torch.nn.Conv2d(8, 12, 1), torch.randn(1, 7, 5, 5))


def test_full_preset_widths_match_spec() -> None:
    cfg = ModelConfig.preset("full")
    assert (cfg.features, cfg.input_size, cfg.hourglass_depth, cfg.output_size) == (256, 256, 4, 64)
    model = C2FPoseNet(ModelConfig.preset("full", d2=64))
    assert model.stem_conv[0].out_channels == 64
    assert model.stem_res1.skip.out_channels == 128
    assert model.hg1.up[2].skip.out_channels == 512
    assert model.merge_features.in_channels == 384 and model.merge_features.out_channels == 384
    assert model.merge_heatmap.in_channels == 17
    assert model.heatmap1.in_channels == 256 and model.heatmap1.out_channels == 17
    assert model.heatmap2.in_channels == 512 and model.heatmap2.out_channels == 17 * 64
    depth, hg = 0, model.hg2
    while hasattr(hg, "low2"):
        depth, hg = depth + 1, hg.low2
    assert depth == 4


def test_hourglass_residuals() -> None:
    """r residuals per branch: C2F's 3 (the default, state-dict keys unchanged) or Newell's 1."""
    def count(m):
        return sum(isinstance(x, Residual) for x in m.modules())

    c2f = C2FPoseNet(ModelConfig.preset("micro", d2=4))
    one = C2FPoseNet(ModelConfig.preset("micro", d2=4, hourglass_residuals=1))
    assert c2f.cfg.hourglass_residuals == 3 and len(c2f.hg1.up) == 3 and len(c2f.hg1.low1) == 3
    assert "hg1.up.2.skip.weight" in c2f.state_dict()
    # per level: up r + low1 r + low3 1, plus the innermost Res; depth 2 -> 2·(2r + 1) + 1 per hourglass
    assert count(c2f.hg1) == 2 * (2 * 3 + 1) + 1 and count(one.hg1) == 2 * (2 * 1 + 1) + 1
    assert len(one.hg1.up) == 1 and one.hg1.up[0].skip.in_channels == 16 and one.hg1.up[0].skip.out_channels == 32
    x = torch.randn(2, 3, 32, 32)
    hm, vol = one.eval()(x)
    assert hm.shape == (2, 17, 8, 8) and vol.shape == (2, 17, 4, 8, 8)
    assert sum(p.numel() for p in one.parameters()) < 0.8 * sum(p.numel() for p in c2f.parameters())
    with pytest.raises(ValueError, match="hourglass_residuals"):
        ModelConfig.preset("micro", hourglass_residuals=0)


def test_expand_from_keeps_all_but_heatmap2() -> None:
    prev = micro(d2=8)
    # make the running stats non-trivial so buffers are really compared
    prev.train()
    prev(torch.randn(4, 3, 32, 32))
    prev_sd = {k: v.clone() for k, v in prev.state_dict().items()}
    torch.manual_seed(123)
    new = C2FPoseNet(ModelConfig.preset("micro", d2=64, features=16))
    std = 0.002
    out = expand_from(new, prev_sd, heatmap2_std=std, generator=torch.Generator().manual_seed(1))
    assert out is new
    new_sd = new.state_dict()
    assert set(new_sd) == set(prev_sd)
    for k, v in prev_sd.items():
        if k.startswith("heatmap2."):
            continue
        assert torch.equal(new_sd[k], v), k
    w = new.heatmap2.weight
    assert w.shape == (17 * 64, 32, 1, 1)
    assert abs(w.std().item() - std) < 0.05 * std
    assert abs(w.mean().item()) < 0.05 * std
    assert torch.count_nonzero(new.heatmap2.bias) == 0
    # the previous stage's state dict was not modified
    assert torch.equal(prev.state_dict()["heatmap2.weight"], prev_sd["heatmap2.weight"])


def test_expand_from_is_reproducible_with_generator() -> None:
    prev_sd = micro(d2=2).state_dict()
    a = expand_from(micro(d2=4), prev_sd, 0.01, generator=torch.Generator().manual_seed(5))
    b = expand_from(micro(d2=4), prev_sd, 0.01, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.heatmap2.weight, b.heatmap2.weight)


def test_expand_from_accepts_checkpoint_dict(tmp_path) -> None:
    prev = micro(d2=2)
    save_checkpoint(tmp_path / "m.pt", prev, depth_range=[-1000.0, 1000.0], bbox_enlarge=1.28,
                    softmax_scale=30.0)
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    new = expand_from(micro(d2=4), ckpt, 0.01)
    assert torch.equal(new.hg2.low3.body[2].weight, prev.hg2.low3.body[2].weight)


def test_expand_from_wrong_size_lists_keys() -> None:
    prev_sd = C2FPoseNet(ModelConfig.preset("micro", features=20, d2=2)).state_dict()
    with pytest.raises(ValueError, match="prev_state_dict") as err:
        expand_from(micro(d2=4), prev_sd, 0.01)
    assert "shape mismatch" in str(err.value) and "stem_conv.0.weight" in str(err.value)
    deeper = C2FPoseNet(ModelConfig.preset("micro", hourglass_depth=1, d2=2)).state_dict()
    with pytest.raises(ValueError, match="missing"):
        expand_from(micro(d2=4), deeper, 0.01)
    with pytest.raises(ValueError, match="heatmap2_std"):
        expand_from(micro(d2=4), micro(d2=2).state_dict(), -1.0)


def test_expand_from_upsample_keeps_the_depth_of_the_previous_stage() -> None:
    prev = micro(d2=4, heatmap2_std=0.5).eval()
    with torch.no_grad():
        prev.heatmap2.bias.copy_(torch.randn(17 * 4))
    x = torch.randn(2, 3, 32, 32)
    new = expand_from(micro(d2=16).eval(), prev.state_dict(), 0.01, heatmap2_init="upsample")
    with torch.no_grad():
        _, v_old = prev(x)  # (2, 17, 4, 8, 8)
        _, v_new = new(x)  # (2, 17, 16, 8, 8)
    # new bin i holds old bin floor((i + 0.5) * 4 / 16) = i // 4: the same depth in mm at every bin
    assert torch.allclose(v_new, v_old.repeat_interleave(4, dim=2), atol=1e-5)
    # an uneven ratio (4 → 6 bins, 3 joints): the old bin that holds each new bin's centre
    w, b = upsample_heatmap2(torch.arange(3 * 4.0).reshape(12, 1, 1, 1), torch.arange(12.0), 3, 6)
    assert b.tolist() == [0, 1, 1, 2, 3, 3, 4, 5, 5, 6, 7, 7, 8, 9, 9, 10, 11, 11]
    assert torch.equal(w.flatten(), b)
    with pytest.raises(ValueError, match="heatmap2_init"):
        expand_from(micro(d2=16), prev.state_dict(), 0.01, heatmap2_init="copy")
    with pytest.raises(ValueError, match="another model width"):
        expand_from(micro(d2=8), micro(d2=4, features=16).state_dict() | {
            "heatmap2.weight": torch.zeros(68, 8, 1, 1)}, 0.01, heatmap2_init="upsample")


def test_checkpoint_round_trip(tmp_path) -> None:
    model = micro(d2=16, norm="bn_batchstats")
    model.train()
    model(torch.randn(3, 3, 32, 32))  # non-trivial running stats
    path = save_checkpoint(
        tmp_path / "sub" / "model.pt",
        model,
        depth_range=[-1005.1859, 980.8599],
        stage="d2_16",
        metrics={"mpjpe": 71.5, "per_action": {"Walk": 60.0}},
        epoch=3,
        bbox_enlarge=1.25,
        softmax_scale=20.0,
    )
    raw = torch.load(path, weights_only=True)
    assert set(raw) >= {"model", "model_config", "depth_range", "stride", "stage", "d2", "metrics"}
    assert raw["bbox_enlarge"] == 1.25 and raw["softmax_scale"] == 20.0  # what prediction reads
    assert raw["d2"] == 16 and raw["stride"] == 4 and raw["stage"] == "d2_16" and raw["epoch"] == 3
    assert raw["model_config"]["norm"] == "bn_batchstats"
    loaded, ckpt = load_checkpoint(path)
    assert not loaded.training
    assert loaded.cfg == model.cfg
    assert ckpt["metrics"]["per_action"]["Walk"] == 60.0
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x)[1], loaded(x)[1])
    assert not list(tmp_path.glob("sub/*.tmp"))


def test_checkpoint_default_depth_range(tmp_path) -> None:
    pytest.importorskip("pose.targets")
    from pose.targets import C2F_DEPTH_RANGE

    save_checkpoint(tmp_path / "m.pt", micro(d2=2), bbox_enlarge=1.28, softmax_scale=30.0)
    _, ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt["depth_range"] == pytest.approx([C2F_DEPTH_RANGE.lb, C2F_DEPTH_RANGE.ub])
    assert ckpt["stage"] == "d2_02" and ckpt["metrics"] == {}


def test_checkpoint_errors(tmp_path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(missing)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="other.pt"):
        load_checkpoint(other)
    with pytest.raises(ValueError, match="extra_obj"):
        save_checkpoint(tmp_path / "x.pt", micro(), extra_obj=object(), depth_range=[0.0, 1.0], bbox_enlarge=1.28,
                        softmax_scale=30.0)


def test_bn_batchstats_uses_batch_statistics_in_eval() -> None:
    torch.manual_seed(0)
    norm = BatchStatsNorm2d(3).eval()
    x = torch.randn(4, 3, 5, 5) * 3.0 + 7.0
    y = norm(x)
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    assert torch.allclose(y, (x - mean) / torch.sqrt(var + norm.eps), atol=1e-5)
    # eval mode leaves the running stats alone; train mode updates them
    assert torch.equal(norm.running_mean, torch.zeros(3))
    norm.train()
    norm(x)
    assert torch.allclose(norm.running_mean, 0.1 * mean.flatten(), atol=1e-5)

    # whole network: in eval, a sample's output depends on the other samples of the batch,
    # and a "bn" model with the same weights (fresh running stats) gives different values
    model = micro(norm="bn_batchstats").eval()
    a, b = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32) * 2
    with torch.no_grad():
        out_ab = model(torch.cat([a, b]))[1][:2]
        out_aa = model(torch.cat([a, a]))[1][:2]
        assert not torch.allclose(out_ab, out_aa)
        bn = micro(norm="bn")
        bn.load_state_dict(model.state_dict())  # same state dict layout as "bn"
        bn.eval()
        assert not torch.allclose(bn(a)[1], model(a)[1])
        bn.train()
        assert torch.allclose(bn(a)[1], model(a)[1], atol=1e-6)


def test_bn_running_stats_in_eval() -> None:
    model = micro(norm="bn").eval()
    a, b = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(torch.cat([a, b]))[1][:2], model(a)[1], atol=1e-5)


def test_gn_batch_one() -> None:
    model = micro(norm="gn", d2=4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    model.train()
    hm, vol = model(torch.randn(1, 3, 32, 32))
    (hm.square().mean() + vol.square().mean()).backward()
    assert vol.shape == (1, 17, 4, 8, 8)
    assert model.heatmap2.weight.grad is not None and torch.isfinite(model.heatmap2.weight.grad).all()
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # per-sample normalisation: batch composition does not matter
        assert torch.allclose(model(x)[1][:1], model(x[:1])[1], atol=1e-5)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="d2"):
        ModelConfig.preset("micro", d2=0)
    with pytest.raises(ValueError, match="d2"):
        ModelConfig(d2=-3)
    with pytest.raises(ValueError, match="input_size"):
        ModelConfig.preset("micro", input_size=36)
    with pytest.raises(ValueError, match="features"):
        ModelConfig.preset("micro", features=18)
    with pytest.raises(ValueError, match="norm"):
        ModelConfig.preset("micro", norm="ln")
    with pytest.raises(ValueError, match="name"):
        ModelConfig.preset("huge")
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.preset("micro", width=3)
    model = micro()
    for bad in (torch.randn(2, 3, 64, 64), torch.randn(2, 1, 32, 32), torch.randn(3, 32, 32),
                torch.randn(2, 3, 32, 33)):  # fmt: skip
        with pytest.raises(ValueError, match="x must"):
            model(bad)


def test_presets_valid() -> None:
    for name in PRESETS:
        cfg = ModelConfig.preset(name, d2=8)
        assert cfg.output_size * 4 == cfg.input_size
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def _blobs(centres: torch.Tensor, size: int, sigma: float = 1.0) -> torch.Tensor:
    """Gaussian heatmaps (B, J, size, size) peaked at ``centres`` (B, J, 2) (x, y) cells."""
    r = torch.arange(size, dtype=torch.float32)
    gx = torch.exp(-((r - centres[..., 0, None]) ** 2) / (2 * sigma**2))
    gy = torch.exp(-((r - centres[..., 1, None]) ** 2) / (2 * sigma**2))
    return gy[..., :, None] * gx[..., None, :]


def test_micro_overfits_one_batch() -> None:
    """Random per-sample gaussian targets: the loss must fall well below that of the best
    input-independent prediction (the batch mean), i.e. the net really fits each sample."""
    torch.manual_seed(0)
    model = C2FPoseNet(ModelConfig.preset("micro", d2=2)).train()
    x = torch.randn(4, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    t_hm = _blobs(torch.rand(4, 17, 2, generator=g) * 7, 8)
    t_vol = torch.stack([t_hm, t_hm.flip(-1)], dim=2)  # (4, 17, 2, 8, 8)
    best_constant = ((t_hm - t_hm.mean(0)) ** 2).mean() + ((t_vol - t_vol.mean(0)) ** 2).mean()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        hm, vol = model(x)
        loss = torch.nn.functional.mse_loss(hm, t_hm) + torch.nn.functional.mse_loss(vol, t_vol)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.4 * losses[0], losses
    assert losses[-1] < 0.7 * best_constant.item(), (losses, best_constant.item())


def test_kaiming_init_trains() -> None:
    torch.manual_seed(0)
    model = C2FPoseNet(ModelConfig.preset("micro", d2=2, init="kaiming")).train()
    conv = model.hg1.up[0].body[2]
    fan_out = conv.out_channels
    assert abs(conv.weight.std().item() - (2.0 / fan_out) ** 0.5) < 0.3 * (2.0 / fan_out) ** 0.5
    x, target = torch.randn(2, 3, 32, 32), torch.rand(2, 17, 2, 8, 8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        loss = torch.nn.functional.mse_loss(model(x)[1], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.slow
def test_train_step_benchmark_runs(tmp_path) -> None:
    """benchmarks/train_step.py end to end on the micro size (3 python processes)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "train_step.py"
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(script), "--size", "micro", "--d2", "4", "--batch", "2", "--repeats", "1",
           "--threads", "1", "--json", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "ours/baseline" in proc.stdout
    data = json.loads(out.read_text())
    assert set(data["results"]) == {"ours", "baseline"}
    ours, base = data["results"]["ours"], data["results"]["baseline"]
    assert ours["samples_per_s"] > 0 and base["peak_mem_mib"] >= 0
    # same data, same seed, same objective: the two variants give the same loss
    assert ours["final_loss"] == pytest.approx(base["final_loss"], rel=1e-4)
    assert data["ratio_ours_over_baseline"]["samples_per_s"] > 0


def test_flip_back_maps_mirrored_cells_and_swaps_joints() -> None:
    """A peak at cell (x, y) of joint j in the mirrored output is a peak at (W−1−x, y) of joint
    perm[j] after flip_back, and flip_back is an involution."""
    from pose.decode import argmax, decode_to_crop
    from pose.model import flip_back
    from pose.skeleton import FLIP_PERM_17

    W = 8
    vol = torch.zeros(1, 17, 4, W, W)
    vol[0, 1, 2, 3, 1] = 1.0  # R_Hip, depth bin 2, row 3, column 1
    back = flip_back(vol, FLIP_PERM_17)
    assert back[0, 4, 2, 3, W - 1 - 1] == 1.0 and back.sum() == 1.0  # -> L_Hip, column 6
    assert torch.equal(flip_back(back, FLIP_PERM_17), vol)
    # in crop pixels the mirrored column is exactly S - 1 - px (S = 4 W)
    uv, _ = decode_to_crop(argmax(vol)[:, 1:2].float(), 4, 4)
    uv_b, _ = decode_to_crop(argmax(back)[:, 4:5].float(), 4, 4)
    assert float(uv_b[0, 0, 0]) == 4 * W - 1 - float(uv[0, 0, 0])


def test_flip_back_rejects_a_permutation_of_the_wrong_joints() -> None:
    from pose.model import flip_back
    from pose.skeleton import FLIP_PERM_17

    with pytest.raises(ValueError, match="flip_perm: expected a permutation of the 16 joints"):
        flip_back(torch.zeros(1, 16, 4, 4), FLIP_PERM_17)
    with pytest.raises(ValueError, match="flip_perm"):
        flip_back(torch.zeros(1, 17, 4, 4), list(range(16)))  # would silently drop a joint


def test_forward_flip_test_is_mirror_symmetric() -> None:
    """The flip-averaged output of a mirrored image is the flip_back of the image's own output."""
    from pose.model import flip_back, forward_flip_test
    from pose.skeleton import FLIP_PERM_17

    torch.manual_seed(0)
    model = C2FPoseNet(ModelConfig.preset("micro", d2=4, init="kaiming", heatmap2_std=0.5)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        hm, vol = forward_flip_test(model, x)
        hm_m, vol_m = forward_flip_test(model, x.flip(-1))
        plain_hm, plain_vol = model(x)
    torch.testing.assert_close(vol_m, flip_back(vol, FLIP_PERM_17), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(hm_m, flip_back(hm, FLIP_PERM_17), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(vol, plain_vol)  # it really averages two different outputs
    assert hm.shape == plain_hm.shape and vol.shape == plain_vol.shape
