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


def half_life_beta(batch: int, images_seen: int, kimg: float, rampup: float | None) -> float:
    """StyleGAN's EMA decay per update: 0.5 ** (batch / half-life), the half-life `kimg` thousand images, during the
    ramp-up at most `rampup` times the images seen so far (NVlabs' training_loop.py: ema_nimg, ema_beta)."""
    half_life = kimg * 1000
    if rampup is not None:
        half_life = min(half_life, images_seen * rampup)
    return 0.5 ** (batch / max(half_life, 1e-8))


class GeneratorEMA(nn.Module):
    """A frozen copy of the generator whose parameters track the live ones.

    With `decay`: after update t the decay is min(decay, (1 + t) / (10 + t)): the average starts short
    and grows to the configured horizon of about 1 / (1 - decay) generator steps. With `kimg` (StyleGAN):
    a half-life in images, `half_life_beta` of the batch and the images seen.
    """

    def __init__(
        self, generator: nn.Module, decay: float | None = 0.999, kimg: float | None = None, rampup: float | None = None
    ) -> None:
        super().__init__()
        if kimg is None and (decay is None or not 0.0 < decay < 1.0):
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}; use ema_decay=null to turn EMA off")
        if kimg is not None and (not kimg > 0 or (rampup is not None and not rampup > 0)):
            raise ValueError(
                f"model.ema_kimg ({kimg}) and model.ema_rampup ({rampup}) must be positive (ema_rampup may be null)"
            )
        self.decay, self.kimg, self.rampup = decay, kimg, rampup
        self.module = copy.deepcopy(generator).requires_grad_(False)
        self.stale = True  # batch-norm statistics not yet estimated for the current weights (not saved)

    def beta(self, step: int, batch: int = 0, images_seen: int = 0) -> float:
        """This update's decay: after generator update `step`, with `batch` images per update, `images_seen` so far."""
        if self.kimg is not None:
            return half_life_beta(batch, images_seen, self.kimg, self.rampup)
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, generator: nn.Module, step: int, batch: int = 0, images_seen: int = 0) -> None:
        """Move the average towards `generator` after its `step`-th update; copy its buffers."""
        decay = self.beta(step, batch, images_seen)
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
