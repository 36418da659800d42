"""The second-stage critic (gankit.critic) against closed forms on 2D Gaussians.

For P = N(0, I) and Q = N(mu, I), the WGAN-GP objective E_P[f] - E_Q[f] - lambda E[(|grad f| - 1)^2] is
maximised by a linear f of slope s along mu: |mu| s - lambda (s - 1)^2, at s = 1 + |mu| / (2 lambda), where
it is |mu| + |mu|^2 / (4 lambda). The critic's divergence estimate must land there after a few hundred
steps, and near 0 when Q = P.
"""

from __future__ import annotations

import pytest
import torch

from gankit import critic


def gaussians(shift: float):
    torch.manual_seed(0)
    heldout, train = torch.randn(4000, 2), torch.randn(500, 2)
    mean = torch.tensor([shift, 0.0])

    def sample(n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, 2, generator=generator) + mean

    return sample, heldout, train


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_divergence_estimate_is_the_wgan_gp_optimum_for_shifted_gaussians(shift):
    sample, heldout, train = gaussians(shift)
    result = critic.critic_divergence(sample, heldout, train, steps=300, batch_size=64, gp_weight=10.0)
    optimum = shift + shift**2 / 40
    assert result["critic"] == pytest.approx(optimum, abs=0.1)
    assert result["critic_train"] == pytest.approx(optimum, abs=0.15)  # training points: the same distribution


def test_divergence_is_near_zero_when_the_generator_is_the_data():
    sample, heldout, train = gaussians(0.0)
    result = critic.critic_divergence(sample, heldout, train, steps=300, batch_size=64)
    assert abs(result["critic"]) < 0.15 and abs(result["critic_train"]) < 0.15


@pytest.mark.parametrize("train_size", [300, 5000])
def test_both_estimates_read_the_same_number_of_images(monkeypatch, train_size):
    """critic and critic_train are means over equally many real images (the smaller of the read half of the
    held-out set and the training set), each against as many fresh samples."""
    sample, heldout, _ = gaussians(1.0)
    read_sizes = []
    divergence = critic._divergence

    def counting(net, real, *args):
        read_sizes.append(len(real))
        return divergence(net, real, *args)

    monkeypatch.setattr(critic, "_divergence", counting)
    critic.critic_divergence(sample, heldout, torch.randn(train_size, 2), steps=5, batch_size=64)
    assert read_sizes == [min(2000, train_size)] * 2


def test_the_average_forgets_the_untrained_critic_at_short_budgets(monkeypatch):
    """A plain 0.999 average after 300 steps is still 74% the initial weights: its estimate reads the untrained
    critic, far below the optimum (the warm-up is what makes short budgets meaningful)."""
    assert critic.ema_decay_at(0, 0.999) == pytest.approx(0.1)
    assert critic.ema_decay_at(300, 0.999) == pytest.approx(301 / 310)
    assert critic.ema_decay_at(20000, 0.999) == 0.999  # the reference's constant decay once warm
    sample, heldout, train = gaussians(3.0)
    monkeypatch.setattr(critic, "ema_decay_at", lambda step, decay: decay)
    plain = critic.critic_divergence(sample, heldout, train, steps=300, batch_size=64)
    assert plain["critic"] < 3.225 - 1.0


def test_reference_initialisation_scales():
    """He (variance scaling: std sqrt(2 / fan_in) after truncation) for hidden layers, Glorot for the output."""
    torch.manual_seed(0)
    net = critic.make_critic(torch.zeros(2, 1, 32, 32), width=64)
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    for layer in convs[:-1]:
        fan_in = layer.weight[0].numel()
        assert layer.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.1)
        assert layer.bias.abs().max() == 0
    last = convs[-1].weight
    assert last.abs().max() <= (6 / (last.shape[0] + last.shape[1])) ** 0.5
