"""Exponential moving average of the generator's weights, for sampling and evaluation.

Written here rather than with `torch.optim.swa_utils.AveragedModel` because a GAN wants buffers
*copied* (batch-norm statistics follow the live generator, as in StyleGAN2-ADA), a warm-up so that
short runs are not dominated by the random initialisation, and no averaging of the discriminator.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class GeneratorEMA(nn.Module):
    """A frozen copy of the generator whose parameters track the live ones.

    After update t the decay is min(decay, (1 + t) / (10 + t)): the average starts short and grows
    to the configured horizon of about 1 / (1 - decay) generator steps.
    """

    def __init__(self, generator: nn.Module, decay: float = 0.999) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}; use ema_decay=null to turn EMA off")
        self.decay = decay
        self.module = copy.deepcopy(generator).requires_grad_(False)

    @torch.no_grad()
    def update(self, generator: nn.Module, step: int) -> None:
        """Move the average towards `generator` after its `step`-th update; copy its buffers."""
        decay = min(self.decay, (1 + step) / (10 + step))
        ema_params = list(self.module.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in generator.parameters()], 1.0 - decay)
        for ema_buffer, buffer in zip(self.module.buffers(), generator.buffers(), strict=True):
            ema_buffer.copy_(buffer)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
