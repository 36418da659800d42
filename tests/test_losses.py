"""Adversarial losses against closed forms and an independent reference (torch's BCE)."""

import math

import pytest
import torch
import torch.nn.functional as F

from gankit import losses

REAL = torch.tensor([2.0, -0.5, 0.3])
FAKE = torch.tensor([-1.0, 0.7, -3.0])


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def test_bce_discriminator_matches_log_likelihood_and_torch_bce():
    expected = -mean(math.log(sigmoid(r)) for r in REAL.tolist()) - mean(
        math.log(1 - sigmoid(f)) for f in FAKE.tolist()
    )
    reference = F.binary_cross_entropy_with_logits(REAL, torch.ones(3)) + F.binary_cross_entropy_with_logits(
        FAKE, torch.zeros(3)
    )
    assert losses.bce_d(REAL, FAKE).item() == pytest.approx(expected, rel=1e-6)
    assert losses.bce_d(REAL, FAKE).item() == pytest.approx(reference.item(), rel=1e-6)


def test_minimax_generator_is_log_one_minus_d():
    expected = mean(math.log(1 - sigmoid(f)) for f in FAKE.tolist())
    assert losses.minimax_g(FAKE).item() == pytest.approx(expected, rel=1e-6)


def test_non_saturating_generator_is_minus_log_d():
    expected = -mean(math.log(sigmoid(f)) for f in FAKE.tolist())
    assert losses.non_saturating_g(FAKE).item() == pytest.approx(expected, rel=1e-6)


def test_minimax_saturates_where_non_saturating_does_not():
    """When D confidently rejects fakes (logit -10), the minimax gradient vanishes (Goodfellow 2014, sec. 3)."""
    fake = torch.tensor([-10.0], requires_grad=True)
    (minimax,) = torch.autograd.grad(losses.minimax_g(fake), fake)
    (non_saturating,) = torch.autograd.grad(losses.non_saturating_g(fake), fake)
    assert abs(minimax.item()) == pytest.approx(sigmoid(-10.0), rel=1e-4)  # about 4.5e-5
    assert non_saturating.item() == pytest.approx(-(1 - sigmoid(-10.0)), rel=1e-4)  # about -1


def test_hinge():
    expected = mean(max(0.0, 1 - r) for r in REAL.tolist()) + mean(max(0.0, 1 + f) for f in FAKE.tolist())
    assert losses.hinge_d(REAL, FAKE).item() == pytest.approx(expected, rel=1e-6)
    assert losses.wasserstein_g(FAKE).item() == pytest.approx(-mean(FAKE.tolist()), rel=1e-6)


def test_wasserstein_critic_is_negative_score_gap():
    assert losses.wasserstein_d(REAL, FAKE).item() == pytest.approx(mean(FAKE.tolist()) - mean(REAL.tolist()), rel=1e-6)


def test_least_squares():
    d = 0.5 * mean((r - 1) ** 2 for r in REAL.tolist()) + 0.5 * mean(f**2 for f in FAKE.tolist())
    g = 0.5 * mean((f - 1) ** 2 for f in FAKE.tolist())
    assert losses.least_squares_d(REAL, FAKE).item() == pytest.approx(d, rel=1e-6)
    assert losses.least_squares_g(FAKE).item() == pytest.approx(g, rel=1e-6)


def test_optimal_discriminator_of_bce_is_density_ratio():
    """For one point with real density p and fake density q, D's loss is minimised at D = p / (p + q)."""
    p, q = 0.7, 0.2
    logit = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([logit], lr=1.0)
    for _ in range(2000):
        loss = p * F.softplus(-logit) + q * F.softplus(logit)  # weighted bce_d at one point
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
    assert torch.sigmoid(logit).item() == pytest.approx(p / (p + q), abs=1e-4)


def test_unknown_loss_names_the_choices():
    with pytest.raises(ValueError, match="unknown loss 'hnge'.*hinge"):
        losses.get_loss("hnge")


def test_top_k_keeps_the_fakes_d_rates_most_real_and_only_they_get_gradient():
    fake = torch.tensor([0.3, -2.0, 1.5, 0.0, -0.5], requires_grad=True)
    kept = losses.top_k(fake, 0.5)  # ceil(2.5) = 3 of 5
    assert sorted(kept.tolist()) == pytest.approx([0.0, 0.3, 1.5])
    losses.non_saturating_g(kept).backward()
    assert (fake.grad != 0).tolist() == [True, False, True, True, False]
    assert losses.top_k(fake, 1.0) is fake
    assert losses.top_k(fake, 0.01).tolist() == pytest.approx([1.5])  # at least one


@pytest.mark.parametrize("n", [1, 7, 64, 513])
def test_pairwise_auc_counts_the_pairs_d_ranks_correctly(n):
    """Against the N x N comparison, ties included (a tie is not a correct ranking)."""
    from gankit.module import pairwise_auc

    g = torch.Generator().manual_seed(n)
    real, fake = torch.randn(n, generator=g), torch.randn(n + 3, generator=g)
    fake[: n // 2] = real[: n // 2]  # ties
    expected = (real[:, None] > fake[None, :]).double().mean().item()
    assert pairwise_auc(real, fake).item() == pytest.approx(expected, abs=1e-7)
    assert pairwise_auc(real + 100, fake).item() == 1.0 and pairwise_auc(real - 100, fake).item() == 0.0
