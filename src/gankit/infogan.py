"""InfoGAN (Chen et al. 2016): latent codes the generator must keep recoverable from its samples.

The latent is [noise ~ N(0, I), one-hot categorical code ~ U{0..K-1}, continuous codes ~ U(-1, 1)].
A Q head on the discriminator's trunk predicts the codes from a sample; the mutual-information
lower bound becomes cross-entropy for the categorical code and, for the continuous codes, a
fixed-variance Gaussian log-likelihood (a squared error), weighted as in the paper's MNIST setup
(1 and 0.1). The loss is added to D's step (training the trunk and Q) and to G's step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class InfoCodes(nn.Module):
    def __init__(
        self,
        latent_dim: int,
        feature_dim: int,
        categorical: int = 10,
        continuous: int = 2,
        weight: float = 1.0,
        continuous_weight: float = 0.1,
        hidden: int = 128,
    ) -> None:
        super().__init__()
        self.noise_dim = latent_dim - categorical - continuous
        if self.noise_dim < 1 or categorical < 0 or continuous < 0 or categorical + continuous == 0:
            raise ValueError(
                f"model.info: categorical={categorical} + continuous={continuous} codes must leave noise in "
                f"generator.latent_dim={latent_dim} (e.g. 62 noise + 10 + 2 = 74)"
            )
        self.categorical, self.continuous = categorical, continuous
        self.weight, self.continuous_weight = weight, continuous_weight
        self.q_head = nn.Sequential(
            nn.Linear(feature_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, categorical + continuous)
        )

    def sample(self, n: int, generator: torch.Generator | None = None, device=None) -> tuple[Tensor, Tensor, Tensor]:
        """(latents [n, latent_dim], categorical codes [n], continuous codes [n, continuous])."""
        noise = torch.randn(n, self.noise_dim, generator=generator)
        cat = torch.randint(max(self.categorical, 1), (n,), generator=generator)
        cont = torch.rand(n, self.continuous, generator=generator) * 2 - 1
        z = self.compose(noise, cat, cont)
        return z.to(device), cat.to(device), cont.to(device)

    def compose(self, noise: Tensor, cat: Tensor, cont: Tensor) -> Tensor:
        parts = [noise]
        if self.categorical:
            parts.append(F.one_hot(cat.long(), self.categorical).to(noise.dtype))
        return torch.cat([*parts, cont.to(noise.dtype)], 1)

    def split(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """The codes inside latents z: (categorical [n], continuous [n, continuous])."""
        start = self.noise_dim
        cat = z[:, start : start + self.categorical].argmax(1) if self.categorical else z.new_zeros(len(z)).long()
        return cat, z[:, start + self.categorical :]

    def loss(self, features: Tensor, cat: Tensor, cont: Tensor) -> Tensor:
        """Negative MI lower bound (up to constants) of the codes given D's trunk features."""
        q = self.q_head(features.float())
        total = features.new_zeros((), dtype=torch.float32)
        if self.categorical:
            total = total + F.cross_entropy(q[:, : self.categorical], cat.long())
        if self.continuous:
            total = total + self.continuous_weight * 0.5 * (q[:, self.categorical :] - cont).pow(2).sum(1).mean()
        return self.weight * total
