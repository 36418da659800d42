"""Exponential moving average of the generator's weights, for sampling and evaluation.

Written here rather than with `torch.optim.swa_utils.AveragedModel` because a GAN wants a warm-up so
that short runs are not dominated by the random initialisation, no averaging of the discriminator,
and batch-norm statistics that fit the averaged weights: buffers are copied from the live generator
at each update (as in StyleGAN2-ADA, whose generator has none that matter), and re-estimated for the
averaged weights before sampling (`standing_statistics`, as in BigGAN).
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
        self.stale = True  # batch-norm statistics not yet estimated for the current weights (not saved)

    @torch.no_grad()
    def update(self, generator: nn.Module, step: int) -> None:
        """Move the average towards `generator` after its `step`-th update; copy its buffers."""
        decay = min(self.decay, (1 + step) / (10 + step))
        ema_params = list(self.module.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in generator.parameters()], 1.0 - decay)
        buffers = list(generator.buffers())  # batch-norm statistics
        if buffers:
            torch._foreach_copy_(list(self.module.buffers()), buffers)
        self.stale = True

    @torch.no_grad()
    def standing_statistics(self, draw_inputs, batches: int = 8) -> None:
        """Re-estimate the batch-norm statistics of the averaged weights (BigGAN's "standing statistics").

        The live generator's running statistics, copied at each update, belong to the live weights,
        not to their average: an EMA generator with batch norm samples badly with them. This resets
        them and averages the batch statistics over `batches` forward passes in training mode;
        `draw_inputs(i)` gives the arguments of pass i (latents, and labels for a conditional G).
        """
        norms = [m for m in self.module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if norms:
            momenta = [m.momentum for m in norms]
            was_training = self.module.training
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the passes
            self.module.train()
            try:
                for i in range(batches):
                    self.module(*draw_inputs(i))
            finally:
                for m, momentum in zip(norms, momenta, strict=True):
                    m.momentum = momentum
                self.module.train(was_training)
        self.stale = False

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
