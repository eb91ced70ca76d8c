"""Exponential moving average of a model's weights (Polyak averaging), the copy that is evaluated.

After each optimiser step, every floating-point tensor of the state dict (parameters and
batch-norm running statistics) moves towards the trained model's: ``ema ← d·ema + (1 − d)·w``
with ``d = min(decay, (1 + t) / (10 + t))`` at the t-th update (t from 0), so a stage that
starts from another's weights is not pulled back to them for long (d ≈ 0.1 at the first update,
0.9 after 80, 0.99 after 890). Integer buffers (``num_batches_tracked``) are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["WeightEMA"]


class WeightEMA:
    """An averaged copy (``.model``, eval mode) of ``model``; :meth:`update` after each step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def rate(self) -> float:
        """The decay the next update uses."""
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.rate()
        src = model.state_dict()
        for name, avg in self.model.state_dict().items():
            if avg.is_floating_point():
                avg.lerp_(src[name].detach(), 1.0 - d)
            else:
                avg.copy_(src[name])
        self.updates += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
