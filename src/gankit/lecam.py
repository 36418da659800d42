"""LeCam regularisation (Tseng et al. 2021), in the form of the authors' code (google/lecam-gan, biggan_cifar).

D's loss adds weight * R with R = E[relu(D(x_real) - a_F)^2] + E[relu(a_R - D(G(z)))^2], where a_R and
a_F are exponential moving averages of D's mean logits on reals and fakes: D's outputs are held
near the averages of the other side, which bounds how far D can separate a few training images
from everything else. The averages are updated before R is taken, at every D step, with decay 0
before generator step `start` (they track the current means) and `decay` after; R is added from
`start` on. The averages are buffers (in the checkpoint), and under DDP the means are averaged over
the processes first, so every rank holds the same a_R, a_F.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def lecam_penalty(d_real: Tensor, d_fake: Tensor, ema_real: Tensor, ema_fake: Tensor) -> Tensor:
    """R = E[relu(D(x_real) - a_F)^2] + E[relu(a_R - D(G(z)))^2]."""
    return F.relu(d_real - ema_fake).pow(2).mean() + F.relu(ema_real - d_fake).pow(2).mean()


class LeCam(nn.Module):
    """The LeCam term with its two averages. `weight` (BigGAN CIFAR: 0.3), `decay` (0.9), `start` (generator
    steps before the term is added; the averages run from the first step)."""

    def __init__(self, weight: float = 0.3, decay: float = 0.9, start: int = 1000) -> None:
        super().__init__()
        if not weight > 0:
            raise ValueError(f"model.lecam.weight must be positive (BigGAN CIFAR: 0.3), or model.lecam=null: {weight}")
        if not 0 <= decay < 1:
            raise ValueError(f"model.lecam.decay must be in [0, 1) (the authors': 0.9 or 0.99), got {decay}")
        if int(start) != start or start < 0:
            raise ValueError(f"model.lecam.start (the generator step it starts at) must be an integer >= 0: {start}")
        self.weight, self.decay, self.start = float(weight), float(decay), int(start)
        self.register_buffer("ema_real", torch.tensor(0.0))
        self.register_buffer("ema_fake", torch.tensor(0.0))

    def forward(self, d_real: Tensor, d_fake: Tensor, g_steps: int) -> Tensor | None:
        """Update the averages with this D step's logits; weight * R from generator step `start` on, else None."""
        with torch.no_grad():
            means = torch.stack([d_real.detach().float().mean(), d_fake.detach().float().mean()])
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(means)
                means /= torch.distributed.get_world_size()
            decay = self.decay if g_steps >= self.start else 0.0
            self.ema_real.mul_(decay).add_(means[0] * (1 - decay))
            self.ema_fake.mul_(decay).add_(means[1] * (1 - decay))
        if g_steps < self.start:
            return None
        return self.weight * lecam_penalty(d_real, d_fake, self.ema_real, self.ema_fake)
