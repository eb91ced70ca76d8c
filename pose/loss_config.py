"""The settings of the C2F training objective (:func:`pose.losses.c2f_loss`), apart from the loss code.

A small module of its own so that reading or validating a configuration (``workflows/config.py``,
which every pipeline stage imports) does not import the losses, torch's autograd code or the decoder.
``DEFAULT_SOFTMAX_SCALE`` is stated here once: the integral loss's soft-argmax and every decoding of a
trained model must use the same scale, which a checkpoint records (``pose.model.save_checkpoint``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from pose.targets import C2F_DEPTH_RANGE, DepthRange, sigma_z_for

__all__ = ["DEFAULT_SOFTMAX_SCALE", "LOSS_VARIANTS", "LossConfig"]

#: multiplier of the volume before the soft-argmax's softmax (the seed's x30)
DEFAULT_SOFTMAX_SCALE = 30.0
#: the objectives :func:`pose.losses.c2f_loss` implements
LOSS_VARIANTS = ("H1", "I1", "adaptive")


@dataclass
class LossConfig:
    """Configuration of :func:`pose.losses.c2f_loss`.

    variant: "H1" (2D heatmap L2 + ratio_3d * 3D heatmap L2), "I1" (H1 + integral_weight *
        integral loss on soft-argmax(softmax_scale * vol)), "adaptive" (:func:`pose.losses.adaptive_weighted_l2`
        over (2D HM, 3D HM) and, if integral_weight > 0, the integral x-y and z pairs: the seed's
        Adaptive I1; ratio_3d and the value of integral_weight are then unused).
    ratio_3d: 3D:2D weight under the mean-per-element reduction (``pose.losses``' module docstring: the seed's ratio × D).
    sigma_2d: 2D gaussian std (heatmap cells, true std).  sigma_z: depth std in bins (None ->
        ``sigma_z_for(D, sigma_2d, sigma_z_rule)``, 0 -> one-hot bin).
    depth_range: shared encode/decode range (DepthRange or [lb, ub]).  stride: input px per cell.
    """

    variant: str = "H1"
    ratio_3d: float = 1.0
    integral_weight: float = 1.0
    integral_kind: str = "l1"
    softmax_scale: float = DEFAULT_SOFTMAX_SCALE
    sigma_2d: float = 2.0
    sigma_z: float | None = None
    sigma_z_rule: str = "c2f"
    depth_range: DepthRange = C2F_DEPTH_RANGE
    stride: int = 4
    adaptive_eps: float = 1e-8

    def __post_init__(self) -> None:
        self.depth_range = DepthRange.coerce(self.depth_range)
        if self.variant not in LOSS_VARIANTS:
            raise ValueError(f"variant must be one of {LOSS_VARIANTS}, got {self.variant!r}")
        if self.integral_kind not in ("l1", "l2"):
            raise ValueError(f"integral_kind must be 'l1' or 'l2', got {self.integral_kind!r}")
        for name in ("ratio_3d", "integral_weight"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not float(self.softmax_scale) > 0:
            raise ValueError(f"softmax_scale must be > 0, got {self.softmax_scale!r}")
        if not float(self.sigma_2d) > 0:
            raise ValueError(f"sigma_2d must be > 0, got {self.sigma_2d!r}")
        if self.sigma_z is not None and not float(self.sigma_z) >= 0:
            raise ValueError(f"sigma_z must be >= 0 or None, got {self.sigma_z!r}")
        if not float(self.stride) > 0:
            raise ValueError(f"stride must be > 0, got {self.stride!r}")
        sigma_z_for(8, float(self.sigma_2d), self.sigma_z_rule)  # validates the rule name

    @classmethod
    def from_dict(cls, d: dict | None) -> LossConfig:
        """Build from a plain dict (e.g. a stages.yaml section); unknown keys raise ValueError."""
        d = dict(d or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown LossConfig keys: {unknown}")
        return cls(**d)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["depth_range"] = [self.depth_range.lb, self.depth_range.ub]
        return out

    def sigma_z_for(self, d2: int) -> float:
        """Depth std (bins) used at resolution d2."""
        if self.sigma_z is not None:
            return float(self.sigma_z)
        return sigma_z_for(d2, float(self.sigma_2d), self.sigma_z_rule)
