"""pose.ema.WeightEMA: the running weight average that a stage with ``ema_decay`` validates and saves."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pose.ema import WeightEMA


def _net(value: float) -> nn.Module:
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.fill_(value)
    return net


def test_the_average_follows_the_warmed_up_decay_and_copies_integer_buffers():
    net = _net(1.0)
    ema = WeightEMA(net, decay=0.95)
    assert ema.rate() == pytest.approx(0.1)  # (1 + 0) / (10 + 0): the first update mostly takes the weights
    expected = 1.0
    for t, value in enumerate([3.0, -2.0, 5.0]):
        with torch.no_grad():
            for p in net.state_dict().values():
                p.fill_(value) if p.is_floating_point() else p.add_(1)
        d = min(0.95, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * value
        ema.update(net)
    avg = ema.model.state_dict()
    for name in ("0.weight", "0.bias", "1.weight", "1.running_mean", "1.running_var"):
        assert torch.allclose(avg[name], torch.full_like(avg[name], expected)), name
    assert avg["1.num_batches_tracked"].item() == net.state_dict()["1.num_batches_tracked"].item() == 3
    assert ema.updates == 3 and not ema.model.training
    assert not any(p.requires_grad for p in ema.model.parameters())
    # the trained model is untouched, and a restored average continues identically
    assert torch.equal(net[0].weight, torch.full((2, 2), 5.0))
    again = WeightEMA(_net(0.0), decay=0.95)
    again.load_state_dict(ema.state_dict())
    ema.update(net)
    again.update(net)
    b = again.model.state_dict()
    assert all(torch.equal(v, b[k]) for k, v in ema.model.state_dict().items())


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 1.5])
def test_a_decay_outside_the_open_unit_interval_is_refused(decay):
    with pytest.raises(ValueError, match="decay must be in"):
        WeightEMA(_net(1.0), decay)
