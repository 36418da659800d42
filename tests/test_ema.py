"""Generator EMA: the closed-form average with warm-up, buffers copied, no gradients."""

import pytest
import torch
from torch import nn

from gankit.ema import GeneratorEMA


def test_average_follows_closed_form_and_copies_buffers():
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = GeneratorEMA(net, decay=0.9)
    start = [p.detach().clone() for p in net.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net(torch.randn(8, 3))  # updates batch-norm running statistics
    ema.update(net, step=100)  # warm-up factor (1 + 100) / (10 + 100) > 0.9: decay is 0.9
    for avg, old, new in zip(ema.module.parameters(), start, net.parameters(), strict=True):
        torch.testing.assert_close(avg, 0.9 * old + 0.1 * new.detach())
    torch.testing.assert_close(ema.module[1].running_mean, net[1].running_mean)
    assert ema.module[1].num_batches_tracked == net[1].num_batches_tracked
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_warm_up_shortens_the_average_early():
    net = nn.Linear(2, 2)
    ema = GeneratorEMA(net, decay=0.999)
    start = ema.module.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net, step=0)  # decay min(0.999, 1/10) = 0.1
    torch.testing.assert_close(ema.module.weight, 0.1 * start + 0.9 * net.weight.detach())


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5])
def test_bad_decay(decay):
    with pytest.raises(ValueError, match="ema_decay=null"):
        GeneratorEMA(nn.Linear(1, 1), decay)


def test_standing_statistics_fit_the_averaged_weights():
    """After an update the EMA's BN statistics are the live generator's; standing statistics replace
    them by those of the averaged weights (the mean of the first layer's outputs over the passes)."""
    from gankit.networks.mlp import Generator as MLPGenerator

    torch.manual_seed(0)
    live = MLPGenerator(latent_dim=4, dim=2, width=8, depth=2)
    ema = GeneratorEMA(live, decay=0.5)
    with torch.no_grad():
        for p in live.parameters():
            p.add_(torch.randn_like(p))  # the live weights move away from the average
        live.train()(torch.randn(64, 4) * 3)  # and collect statistics of their own
    ema.update(live, step=1000)
    assert ema.stale
    torch.testing.assert_close(ema.module.net[1].running_mean, live.net[1].running_mean)  # copied
    inputs = [torch.randn(32, 4) for _ in range(3)]
    ema.standing_statistics(lambda i: (inputs[i],), batches=3)
    first_layer = ema.module.net[0](torch.cat(inputs))
    torch.testing.assert_close(ema.module.net[1].running_mean, first_layer.mean(0), rtol=1e-5, atol=1e-6)
    assert not ema.stale and ema.module.net[1].momentum == live.net[1].momentum  # restored
