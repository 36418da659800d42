"""Adversarial losses as small pure functions of discriminator logits.

Each loss is a pair: `d(real, fake)` for the discriminator and `g(fake)` for the generator, where
`real` and `fake` are D's raw outputs (logits, shape [N]) on real and generated samples. With
sigmoid cross-entropy, -log(sigmoid(x)) = softplus(-x) and -log(1 - sigmoid(x)) = softplus(x).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor


def bce_d(real: Tensor, fake: Tensor) -> Tensor:
    """D maximises log D(x) + log(1 - D(G(z))) (Goodfellow et al. 2014)."""
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def minimax_g(fake: Tensor) -> Tensor:
    """The original saturating objective: G minimises E[log(1 - D(G(z)))]."""
    return -F.softplus(fake).mean()


def non_saturating_g(fake: Tensor) -> Tensor:
    """G maximises E[log D(G(z))] instead: strong gradients while D rejects the fakes."""
    return F.softplus(-fake).mean()


def hinge_d(real: Tensor, fake: Tensor) -> Tensor:
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018)."""
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def wasserstein_d(real: Tensor, fake: Tensor) -> Tensor:
    """The critic maximises E[D(x)] - E[D(G(z))] (Arjovsky et al. 2017): pair it with a Lipschitz constraint."""
    return fake.mean() - real.mean()


def wasserstein_g(fake: Tensor) -> Tensor:
    """G maximises the critic's score of its samples; shared by the hinge and Wasserstein losses."""
    return -fake.mean()


def least_squares_d(real: Tensor, fake: Tensor) -> Tensor:
    """LSGAN (Mao et al. 2017) with targets a=0 (fake), b=1 (real)."""
    return 0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake**2).mean()


def least_squares_g(fake: Tensor) -> Tensor:
    """LSGAN generator target c=1."""
    return 0.5 * ((fake - 1) ** 2).mean()


class AdversarialLoss(NamedTuple):
    """The discriminator's and the generator's halves of one adversarial objective."""

    d: Callable[[Tensor, Tensor], Tensor]
    g: Callable[[Tensor], Tensor]


LOSSES: dict[str, AdversarialLoss] = {
    "minimax": AdversarialLoss(bce_d, minimax_g),
    "non_saturating": AdversarialLoss(bce_d, non_saturating_g),
    "hinge": AdversarialLoss(hinge_d, wasserstein_g),
    "wasserstein": AdversarialLoss(wasserstein_d, wasserstein_g),
    "least_squares": AdversarialLoss(least_squares_d, least_squares_g),
}


def get_loss(name: str) -> AdversarialLoss:
    """The loss pair called `name`; a clear error lists the choices for a typo."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss '{name}': choose model.loss from {', '.join(LOSSES)}")
    return LOSSES[name]


def top_k(fake: Tensor, fraction: float) -> Tensor:
    """The ceil(fraction * N) fakes D rates most real (Top-k training, Sinha et al. 2020).

    The generator's loss is then taken over these alone: the samples D already rejects (in 2D
    mixtures, the ones between modes) stop pulling G, whose gradient comes from its best samples.
    For every loss here a larger logit means "more real", so the top k logits are the best fakes.
    """
    if fraction >= 1:
        return fake
    k = max(1, math.ceil(fraction * fake.shape[0]))
    return fake.topk(k, sorted=False).values
