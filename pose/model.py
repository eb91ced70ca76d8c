"""Two-stage coarse-to-fine stacked hourglass (C2F's "hg-stacked" network) and its checkpoints.

Topology (``f`` = ``ModelConfig.features``; the full size has f = 256 and reproduces the seed's
widths 64/128/256/384/512 as f/4, f/2, f, 3f/2, 2f):

- **Residual** (pre-activation bottleneck): norm → ReLU → 1×1 (in→out/2) → norm → ReLU → 3×3
  (out/2→out/2) → norm → ReLU → 1×1 (out/2→out); skip = identity, or a 1×1 conv when in ≠ out.
- **Stem**: 7×7/2 conv (3→f/4) → norm → ReLU → Res(f/4→f/2) → 2×2 max-pool (``pool``, f/2 ch,
  resolution S/4) → Res(f/2→f/2) → Res(f/2→f/2) → Res(f/2→f).
- **Hourglass(n, in, out)** (the C2F "hg-stacked" variant): upper = Res(in→f) → Res(f→f) →
  Res(f→out); lower = max-pool → Res(in→f) → Res(f→f) → Res(f→f) → [n > 1: Hourglass(n−1, f, out);
  n = 1: Res(f→out)] → Res(out→out) → nearest ×2 upsampling; output = upper + lower.
  ``hourglass_residuals`` = r sets the residuals of the upper branch and of the first part of the
  lower branch (3 above, C2F's; r = 1 is Newell et al.'s original single-module hourglass:
  upper = Res(in→out), lower = max-pool → Res(in→f) → …), 1.2–1.45× faster per CPU step at the
  tiny size (benchmarks/README.md).
- **Stage 1**: hg1 = Hourglass(depth, f, 2f) → lin(2f→2f) → lin(2f→f) (= ``l2``; lin = 1×1 conv →
  norm → ReLU) → ``heatmap1`` = 1×1 conv f → J·d1 (2D heatmaps, d1 = 1).
- **Merge**: 1×1 conv (J·d1 → 3f/2) on heatmap1 + 1×1 conv (3f/2 → 3f/2) on concat(l2, pool).
- **Stage 2**: hg2 = Hourglass(depth, 3f/2, 2f) → lin(2f→2f) → lin(2f→2f) → ``heatmap2`` = 1×1 conv
  2f → J·d2, reshaped joint-major to (B, J, d2, H, W): channel j·d2 + k is joint j, depth bin k.

Input (B, 3, S, S) with S = ``input_size`` (values pixel/255 − 0.5), output H = W = S/4 (stride 4).
``input_size`` must be divisible by 4·2**hourglass_depth so that every pooling level is exact.

Normalisation (``ModelConfig.norm``):

- ``"bn"``: ``nn.BatchNorm2d`` (running statistics in eval mode).
- ``"bn_batchstats"``: :class:`BatchStatsNorm2d`, a BatchNorm that normalises with the statistics of
  the current batch in train *and* eval mode (the Caffe seed's ``use_global_stats: false``). It keeps
  (and, in train mode, updates) running statistics, so its state dict is identical to ``"bn"``'s and
  a checkpoint can be evaluated either way.
- ``"gn"``: ``nn.GroupNorm`` with ``gcd(gn_groups, channels)`` groups (so any width works; the seed I1
  setting for batch size 1).

Initialisation: ``init="normal"`` (default, the seed's): every conv weight N(0, ``init_std``), bias 0;
``init="kaiming"``: He-normal (fan_out, ReLU) convs, bias 0. In both cases ``heatmap2`` is
N(0, ``heatmap2_std``) and norm layers have weight 1, bias 0. Both train with the pre-activation
residuals (every residual branch is re-normalised); "normal" is the seed's choice and keeps the
initial heatmap outputs small (≈0), which is what the MSE-to-gaussian objective starts from.

Checkpoints (``save_checkpoint`` / ``load_checkpoint``) are dicts of a state dict plus plain python
types only, loadable with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pose.skeleton import FLIP_PERM_17
from pose.targets import C2F_DEPTH_RANGE

__all__ = [
    "HEATMAP2_INITS",
    "NORMS",
    "PRESETS",
    "STRIDE",
    "BatchStatsNorm2d",
    "C2FPoseNet",
    "Hourglass",
    "ModelConfig",
    "Residual",
    "conv1x1_nchw",
    "expand_from",
    "flip_back",
    "forward_flip_test",
    "load_checkpoint",
    "reset_heatmap2",
    "save_checkpoint",
    "stage_key",
    "upsample_heatmap2",
]

#: Output stride of the network (input pixels per heatmap cell).
STRIDE = 4
NORMS = ("bn", "bn_batchstats", "gn")
INITS = ("normal", "kaiming")

#: Preset overrides of :class:`ModelConfig`. "tiny" was chosen from measured CPU step times
#: (see ``benchmarks/README.md``): about 0.25 s per training step (forward, losses, backward,
#: RMSprop) at batch 16, d2 = 64 on 2 idle cores; 0.33 s of CPU time with 1 thread.
PRESETS: dict[str, dict[str, Any]] = {
    "micro": {"features": 16, "input_size": 32, "hourglass_depth": 2, "gn_groups": 4},
    "tiny": {"features": 32, "input_size": 64, "hourglass_depth": 3, "gn_groups": 8},
    "full": {"features": 256, "input_size": 256, "hourglass_depth": 4, "gn_groups": 32},
}


@dataclass
class ModelConfig:
    """Architecture and initialisation of :class:`C2FPoseNet`.

    Attributes:
        num_joints: J, number of joints (17 for the H36M set).
        d1: depth bins of the stage-1 head (1 = plain 2D heatmaps).
        d2: depth bins of the stage-2 (3D) head, ≥ 1.
        features: base width f (full size 256); must be a multiple of 4.
        input_size: S, side of the square input crop in pixels; multiple of 4·2**hourglass_depth.
        hourglass_depth: number of pooling levels of each hourglass (the seed's: 4).
        hourglass_residuals: residual modules per hourglass branch (C2F: 3; Newell's original: 1).
        norm: "bn" | "bn_batchstats" | "gn" (see module docstring).
        gn_groups: GroupNorm groups (reduced to gcd(gn_groups, channels) per layer).
        heatmap2_std: std of the N(0, std) init of ``heatmap2`` weights.
        init_std: std of the N(0, std) init of all other convs (``init="normal"``).
        init: "normal" (seed) or "kaiming".
    """

    num_joints: int = 17
    d1: int = 1
    d2: int = 2
    features: int = 256
    input_size: int = 256
    hourglass_depth: int = 4
    hourglass_residuals: int = 3
    norm: str = "bn"
    gn_groups: int = 32
    heatmap2_std: float = 0.01
    init_std: float = 0.01
    init: str = "normal"

    def __post_init__(self) -> None:
        for name in ("num_joints", "d1", "d2", "features", "input_size", "hourglass_depth", "hourglass_residuals",
                     "gn_groups"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.features % 4:
            raise ValueError(f"features must be a multiple of 4, got {self.features}")
        multiple = STRIDE * 2**self.hourglass_depth
        if self.input_size % multiple:
            raise ValueError(
                f"input_size must be a multiple of 4*2**hourglass_depth = {multiple}, got {self.input_size}"
            )
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        for name in ("heatmap2_std", "init_std"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    @property
    def output_size(self) -> int:
        """Heatmap side H = W = input_size // 4."""
        return self.input_size // STRIDE

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """Config of a named size ("micro", "tiny", "full") with optional field overrides."""
        if name not in PRESETS:
            raise ValueError(f"name must be one of {tuple(PRESETS)}, got {name!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) in overrides: {unknown}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Plain-python dict (for checkpoints / JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s): {unknown}")
        return cls(**data)


class BatchStatsNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that always normalises with the current batch's statistics.

    Train mode is plain BatchNorm (running stats are updated); eval mode also uses batch statistics
    and leaves the running stats untouched. State dict = ``nn.BatchNorm2d``'s.
    """

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 (torch's name)
        self._check_input_dim(input)
        if self.training:
            return super().forward(input)
        return F.batch_norm(input, None, None, self.weight, self.bias, True, 0.0, self.eps)


def make_norm(cfg: ModelConfig, channels: int) -> nn.Module:
    """Normalisation layer for ``channels`` channels according to ``cfg.norm``."""
    if cfg.norm == "bn":
        return nn.BatchNorm2d(channels)
    if cfg.norm == "bn_batchstats":
        return BatchStatsNorm2d(channels)
    return nn.GroupNorm(math.gcd(cfg.gn_groups, channels), channels)


class Residual(nn.Module):
    """Pre-activation bottleneck residual (C2F's ``Residual``): (B, c_in, H, W) → (B, c_out, H, W)."""

    def __init__(self, cfg: ModelConfig, c_in: int, c_out: int) -> None:
        super().__init__()
        mid = max(c_out // 2, 1)
        self.body = nn.Sequential(
            make_norm(cfg, c_in), nn.ReLU(inplace=True), nn.Conv2d(c_in, mid, 1),
            make_norm(cfg, mid), nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, padding=1),
            make_norm(cfg, mid), nn.ReLU(inplace=True), nn.Conv2d(mid, c_out, 1),
        )  # fmt: skip
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.skip(x)


class Hourglass(nn.Module):
    """C2F "hg-stacked" hourglass: (B, c_in, H, W) → (B, c_out, H, W).

    ``depth`` pooling levels, internal width ``width``, nearest-neighbour ×2 upsampling.
    """

    def __init__(self, cfg: ModelConfig, depth: int, c_in: int, c_out: int, width: int) -> None:
        super().__init__()
        n = cfg.hourglass_residuals
        up = [c_in] + [width] * (n - 1) + [c_out]
        self.up = nn.Sequential(*(Residual(cfg, a, b) for a, b in zip(up[:-1], up[1:], strict=True)))
        self.pool = nn.MaxPool2d(2, 2)
        low = [c_in] + [width] * n
        self.low1 = nn.Sequential(*(Residual(cfg, a, b) for a, b in zip(low[:-1], low[1:], strict=True)))
        self.low2: nn.Module = (
            Hourglass(cfg, depth - 1, width, c_out, width) if depth > 1 else Residual(cfg, width, c_out)
        )
        self.low3 = Residual(cfg, c_out, c_out)

    def forward(self, x: Tensor) -> Tensor:
        low = self.low3(self.low2(self.low1(self.pool(x))))
        return self.up(x) + F.interpolate(low, scale_factor=2.0, mode="nearest")


def _lin(cfg: ModelConfig, c_in: int, c_out: int) -> nn.Sequential:
    """1×1 conv → norm → ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1), make_norm(cfg, c_out), nn.ReLU(inplace=True))


class C2FPoseNet(nn.Module):
    """Two-stage C2F stacked hourglass: image → (2D heatmaps, 3D volume).

    ``forward(x (B, 3, S, S)) -> (hm2d (B, J, H, W), vol (B, J, d2, H, W))`` with H = W = S/4.
    ``hm2d`` is the stage-1 output for d1 = 1; for d1 > 1 it is (B, J, d1, H, W).
    """

    stride = STRIDE

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else ModelConfig()
        self.cfg = cfg
        f, J = cfg.features, cfg.num_joints
        c_pool, c_merge, c_hg = f // 2, 3 * f // 2, 2 * f
        self.stem_conv = nn.Sequential(
            nn.Conv2d(3, f // 4, 7, stride=2, padding=3), make_norm(cfg, f // 4), nn.ReLU(inplace=True)
        )
        self.stem_res1 = Residual(cfg, f // 4, c_pool)
        self.stem_pool = nn.MaxPool2d(2, 2)
        self.stem_res2 = nn.Sequential(
            Residual(cfg, c_pool, c_pool), Residual(cfg, c_pool, c_pool), Residual(cfg, c_pool, f)
        )
        self.hg1 = Hourglass(cfg, cfg.hourglass_depth, f, c_hg, f)
        self.lin1 = nn.Sequential(_lin(cfg, c_hg, c_hg), _lin(cfg, c_hg, f))
        self.heatmap1 = nn.Conv2d(f, J * cfg.d1, 1)
        self.merge_heatmap = nn.Conv2d(J * cfg.d1, c_merge, 1)
        self.merge_features = nn.Conv2d(f + c_pool, c_merge, 1)
        self.hg2 = Hourglass(cfg, cfg.hourglass_depth, c_merge, c_hg, f)
        self.lin2 = nn.Sequential(_lin(cfg, c_hg, c_hg), _lin(cfg, c_hg, c_hg))
        self.heatmap2 = nn.Conv2d(c_hg, J * cfg.d2, 1)
        self.reset_parameters()

    @property
    def output_size(self) -> int:
        return self.cfg.output_size

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-initialise every layer as described in the module docstring."""
        cfg = self.cfg
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if cfg.init == "normal":
                    nn.init.normal_(m.weight, 0.0, cfg.init_std, generator=generator)
                else:
                    nn.init.kaiming_normal_(
                        m.weight, mode="fan_out", nonlinearity="relu", generator=generator
                    )
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        reset_heatmap2(self, cfg.heatmap2_std, generator)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        cfg = self.cfg
        S = cfg.input_size
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != S or x.shape[3] != S:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a tensor of shape (B, 3, {S}, {S}) (input_size={S}), got {shape}")
        if x.shape[0] < 1:
            raise ValueError("x must hold at least one image (B >= 1)")
        B, J, H = x.shape[0], cfg.num_joints, cfg.output_size
        y = self.stem_res1(self.stem_conv(x))
        pool = self.stem_pool(y)
        feat = self.stem_res2(pool)
        l2 = self.lin1(self.hg1(feat))
        out1 = self.heatmap1(l2)
        inter = self.merge_heatmap(out1) + self.merge_features(torch.cat([l2, pool], dim=1))
        out2 = conv1x1_nchw(self.heatmap2, self.lin2(self.hg2(inter)))
        hm2d = out1 if cfg.d1 == 1 else out1.reshape(B, J, cfg.d1, H, H)
        return hm2d, out2.reshape(B, J, cfg.d2, H, H)


def conv1x1_nchw(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``conv(x)`` for a 1×1 ``conv`` as one batched matmul whose output is contiguous NCHW, whatever
    ``x``'s memory format. (B, C, H, W) → (B, O, H, W).

    Used for ``heatmap2``, whose output (B, J·d2, H, W) is the largest tensor of the model (17·64
    channels at d2 = 64): a channels-last conv output would be copied to NCHW for the volume view
    and its gradient copied back; as a matmul the head's forward + backward costs less than half
    of the conv's on CPU (benchmarks/README.md).
    """
    if (conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups) != ((1, 1), (1, 1), (0, 0), (1, 1), 1):
        raise ValueError(f"conv: expected a plain 1x1 conv (stride 1, no padding, dilation 1, groups 1), got {conv}")
    if x.ndim != 4 or x.shape[1] != conv.in_channels:
        raise ValueError(f"x: expected shape (B, {conv.in_channels}, H, W), got {tuple(x.shape)}")
    B, C, H, W = x.shape
    w = conv.weight.reshape(conv.out_channels, C)
    x = x.reshape(B, C, H * W)  # a view in either memory format
    if conv.bias is not None:  # bias as an extra input channel of ones: no separate pass over the output
        w = torch.cat([w, conv.bias[:, None]], dim=1)
        x = torch.cat([x, x.new_ones(B, 1, H * W)], dim=1)
    out = torch.bmm(w.expand(B, -1, -1), x)  # (B, O, H·W)
    return out.reshape(B, conv.out_channels, H, W)


def flip_back(t: Tensor, flip_perm: tuple[int, ...] | list[int]) -> Tensor:
    """Map outputs of a horizontally mirrored input back to the original: mirror the last (W) axis
    and swap left/right joints (axis 1). (B, J, ..., W) → same shape. Exact on our grids: cell x of
    a mirrored S-px crop is cell W − 1 − x of the original (px = stride·x + (stride − 1)/2)."""
    perm = list(flip_perm)
    if sorted(perm) != list(range(t.shape[1])):
        raise ValueError(f"flip_perm: expected a permutation of the {t.shape[1]} joints of axis 1, got {perm}")
    return t[:, perm].flip(-1)


def forward_flip_test(model: C2FPoseNet, x: Tensor, flip_perm: tuple[int, ...] | list[int] | None = None
                      ) -> tuple[Tensor, Tensor]:
    """The C2F test-time flip: run ``x`` and its mirror image, flip the second output
    back (:func:`flip_back`) and average, before any decoding. Same shapes as ``model(x)``.

    flip_perm: left/right joint permutation; None → ``pose.skeleton.FLIP_PERM_17`` (17 joints).
    """
    if flip_perm is None:
        if model.cfg.num_joints != len(FLIP_PERM_17):
            raise ValueError(f"flip_perm: required for a {model.cfg.num_joints}-joint model")
        flip_perm = FLIP_PERM_17
    hm, vol = model(x)
    hm_f, vol_f = model(x.flip(-1))
    return 0.5 * (hm + flip_back(hm_f, flip_perm)), 0.5 * (vol + flip_back(vol_f, flip_perm))


def reset_heatmap2(model: C2FPoseNet, std: float, generator: torch.Generator | None = None) -> None:
    """Re-initialise ``model.heatmap2``: weight N(0, std), bias 0."""
    if not isinstance(std, int | float) or not math.isfinite(std) or std < 0:
        raise ValueError(f"heatmap2_std must be a finite number >= 0, got {std!r}")
    with torch.no_grad():
        nn.init.normal_(model.heatmap2.weight, 0.0, float(std), generator=generator)
        nn.init.zeros_(model.heatmap2.bias)


def _state_dict_of(obj: Any, what: str) -> dict[str, Tensor]:
    """Accept a state dict, or a checkpoint dict holding one under "model"."""
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{what} must be a state dict (name -> tensor) or a checkpoint dict with 'model'")
    return obj


HEATMAP2_INITS = ("normal", "upsample")


def upsample_heatmap2(weight: Tensor, bias: Tensor, num_joints: int, d2_new: int) -> tuple[Tensor, Tensor]:
    """The previous stage's ``heatmap2`` resampled to ``d2_new`` depth bins (nearest bin).

    weight (J·d_old, C, 1, 1), bias (J·d_old,) → (J·d2_new, C, 1, 1), (J·d2_new,): new bin i takes
    the weights of the old bin that holds its centre, floor((i + 0.5)·d_old / d2_new), so the new
    volume starts as the old one resampled along depth (the same depth in mm at every argmax).
    """
    rows = weight.shape[0]
    if rows % num_joints or bias.shape != (rows,):
        raise ValueError(
            f"heatmap2 of the previous stage has {rows} output channels (bias {tuple(bias.shape)}), "
            f"not a multiple of num_joints={num_joints}"
        )
    d_old = rows // num_joints
    idx = ((torch.arange(d2_new, dtype=torch.float64) + 0.5) * d_old / d2_new).floor().long()
    w = weight.reshape(num_joints, d_old, *weight.shape[1:])[:, idx].reshape(num_joints * d2_new, *weight.shape[1:])
    b = bias.reshape(num_joints, d_old)[:, idx].reshape(-1)
    return w.clone(), b.clone()


def expand_from(
    model_new: C2FPoseNet,
    prev_state_dict: dict[str, Any],
    heatmap2_std: float,
    generator: torch.Generator | None = None,
    heatmap2_init: str = "normal",
) -> C2FPoseNet:
    """Start a new d2 stage from the previous stage's weights.

    Copies every parameter and buffer of ``prev_state_dict`` into ``model_new`` except
    ``heatmap2.*`` (strict on all the others: any missing, unexpected or differently shaped key
    raises ValueError listing them, e.g. a checkpoint of another model size or norm). ``heatmap2``
    is then, for ``heatmap2_init="normal"`` (the seed), re-initialised from N(0, heatmap2_std) with
    bias 0; for ``"upsample"``, the previous ``heatmap2`` resampled along depth
    (:func:`upsample_heatmap2`; ``heatmap2_std`` unused), so the depth learned so far is kept.
    ``prev_state_dict`` may also be a checkpoint dict (its "model" entry is used). Returns
    ``model_new`` (modified in place).
    """
    if not isinstance(model_new, C2FPoseNet):
        raise ValueError(f"model_new must be a C2FPoseNet, got {type(model_new).__name__}")
    if heatmap2_init not in HEATMAP2_INITS:
        raise ValueError(f"heatmap2_init must be one of {HEATMAP2_INITS}, got {heatmap2_init!r}")
    prev = _state_dict_of(prev_state_dict, "prev_state_dict")
    own = model_new.state_dict()
    keep = {k: v for k, v in prev.items() if not k.startswith("heatmap2.")}
    wanted = [k for k in own if not k.startswith("heatmap2.")]  # model order
    missing = [k for k in wanted if k not in keep]
    unexpected = [k for k in keep if k not in own]
    mismatched = [
        f"{k}: checkpoint {tuple(keep[k].shape)} vs model {tuple(own[k].shape)}"
        for k in wanted
        if k in keep and keep[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise ValueError(
            "prev_state_dict does not fit model_new apart from heatmap2 (another model size, depth, "
            "norm or num_joints?); " + "; ".join(parts)
        )
    if heatmap2_init == "upsample":
        if "heatmap2.weight" not in prev or "heatmap2.bias" not in prev:
            raise ValueError("heatmap2_init='upsample' needs heatmap2.weight and heatmap2.bias in prev_state_dict")
        w, b = upsample_heatmap2(prev["heatmap2.weight"], prev["heatmap2.bias"], model_new.cfg.num_joints,
                                 model_new.cfg.d2)
        if w.shape != own["heatmap2.weight"].shape:
            raise ValueError(f"heatmap2 of the previous stage does not fit: resampled {tuple(w.shape)} vs "
                             f"model {tuple(own['heatmap2.weight'].shape)} (another model width?)")
    with torch.no_grad():
        for k in wanted:
            own[k].copy_(keep[k])
        if heatmap2_init == "upsample":
            model_new.heatmap2.weight.copy_(w)
            model_new.heatmap2.bias.copy_(b)
    if heatmap2_init == "normal":
        reset_heatmap2(model_new, heatmap2_std, generator)
    return model_new


def _check_plain(value: Any, key: str) -> None:
    """Raise ValueError unless ``value`` is made of plain python types (weights_only-loadable)."""
    if value is None or isinstance(value, bool | int | float | str):
        return
    if isinstance(value, list | tuple):
        for v in value:
            _check_plain(v, key)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str | int):
                raise ValueError(f"checkpoint entry {key!r} has a non-str/int dict key {k!r}")
            _check_plain(v, key)
        return
    raise ValueError(
        f"checkpoint entry {key!r} must hold plain python types (got {type(value).__name__}); "
        "convert tensors/arrays with .tolist() or float()"
    )


def _plain(value: Any) -> Any:
    """Convert common non-plain values (DepthRange, 0-d tensors, numpy scalars) to plain types."""
    if hasattr(value, "lb") and hasattr(value, "ub"):
        return [float(value.lb), float(value.ub)]
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def stage_key(d2: int) -> str:
    """``16 -> "d2_16"``: the name of the curriculum stage with ``d2`` depth bins (its key in
    stages.yaml's ``train``, its folder under outputs/stages, the ``stage`` of its checkpoint)."""
    if isinstance(d2, bool) or not isinstance(d2, int) or d2 < 1:
        raise ValueError(f"d2 must be an integer >= 1, got {d2!r}")
    return f"d2_{d2:02d}"


#: what prediction reads from a checkpoint besides the weights: the crop's box factor and the
#: soft-argmax scale the model was trained with (``pose.predict.Predictor``, ``workflows/evaluate.py``)
PREDICTION_KEYS = ("bbox_enlarge", "softmax_scale")


def save_checkpoint(path: str | os.PathLike, model: C2FPoseNet, *, bbox_enlarge: float, softmax_scale: float,
                    **extra: Any) -> Path:
    """Write ``{"model", "model_config", "depth_range", "stride", "stage", "d2", "metrics",
    "bbox_enlarge", "softmax_scale", **extra}``.

    ``bbox_enlarge`` (the crop's box side over the person box's longer side) and ``softmax_scale``
    (of the soft-argmax) are what the model was trained with; prediction reads them from here.
    Defaults: ``depth_range`` = C2F range ``[lb, ub]`` (mm), ``stride`` = 4, ``d2`` = the model's,
    ``stage`` = :func:`stage_key` of ``d2``, ``metrics`` = {}. ``extra`` values must be plain python types
    (a ``DepthRange``, numpy scalars and 1-element tensors are converted). Written atomically (temp
    file + rename); parent folders are created. Returns the path.
    """
    if not isinstance(model, C2FPoseNet):
        raise ValueError(f"model must be a C2FPoseNet, got {type(model).__name__}")
    for reserved in ("model", "model_config"):
        if reserved in extra:
            raise ValueError(f"extra must not contain {reserved!r} (set from the model)")
    ckpt: dict[str, Any] = {
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "model_config": model.cfg.to_dict(),
        "stride": STRIDE,
        "d2": model.cfg.d2,
        "stage": stage_key(model.cfg.d2),
        "metrics": {},
    }
    for key, value in (("bbox_enlarge", bbox_enlarge), ("softmax_scale", softmax_scale)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{key} must be a positive number, got {value!r}")
        ckpt[key] = float(value)
    if "depth_range" not in extra:
        extra["depth_range"] = C2F_DEPTH_RANGE
    for key, value in extra.items():
        value = _plain(value)
        _check_plain(value, key)
        ckpt[key] = value
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[C2FPoseNet, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint` (``torch.load(weights_only=True)``).

    Returns ``(model, ckpt)``: the model rebuilt from ``ckpt["model_config"]`` with its weights,
    on ``map_location`` and in **eval mode**; ``ckpt`` is the whole dict. Raises FileNotFoundError
    (missing file) or ValueError (not a checkpoint / weights do not fit), both naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle/zip errors come in many types
        raise ValueError(
            f"{path} is not a readable c2f-pose checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    if (
        not isinstance(ckpt, dict)
        or not isinstance(ckpt.get("model"), dict)
        or not isinstance(ckpt.get("model_config"), dict)
    ):
        raise ValueError(f"{path} is not a c2f-pose checkpoint (needs dict keys 'model' and 'model_config')")
    missing = [k for k in PREDICTION_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)} (written by an older c2f-pose: train the stage again)")
    try:
        model = C2FPoseNet(ModelConfig.from_dict(ckpt["model_config"]))
        model.load_state_dict(ckpt["model"], strict=True)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise ValueError(f"{path}: weights do not fit its model_config: {exc}") from exc
    model.to(map_location)
    model.eval()
    return model, ckpt
