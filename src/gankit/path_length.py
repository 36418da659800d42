"""StyleGAN2's path-length regulariser and the lazy-regularisation correction of an optimizer.

Path length (Karras et al. 2020, NVlabs/stylegan2-ada-pytorch training/loss.py, phase Greg): for
images x = G(ws) and y ~ N(0, I) / sqrt(H * W), the length a_n = sqrt(mean over ws of
||d(x_n . y_n) / d w||^2); the penalty is weight * E[(a - mean)^2], with `mean` a running average
of E[a] (decay 0.01). It adds to G's loss, on its own optimizer step every `every` generator
steps, times `every`, on a batch `batch_shrink` times smaller. Under DDP the batch mean of a is
averaged over ranks before it moves the running mean, so every rank keeps the same one (NVlabs keeps
one per process); the running mean is a buffer, saved with the model.

Lazy regularisation (the same paper, Appendix B): a network whose regulariser runs as an extra step
every k steps takes k + 1 optimizer steps per k iterations; with c = k / (k + 1) its learning rate
times c and its Adam betas to the power c keep the optimizer's time scales those of k steps.
"""

from __future__ import annotations

import functools
import inspect
import math

import torch
from torch import Tensor, nn


class PathLength(nn.Module):
    """The path-length penalty and its running mean of path lengths."""

    def __init__(self, weight: float = 2.0, decay: float = 0.01, batch_shrink: int = 2, every: int = 4) -> None:
        super().__init__()
        for key, value in (("weight", weight), ("decay", decay), ("batch_shrink", batch_shrink), ("every", every)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"model.path_length.{key} must be a number, got {value!r}")
        for key, value, ok in (
            ("weight", weight, weight > 0),
            ("decay", decay, 0 < decay <= 1),
            ("batch_shrink", batch_shrink, int(batch_shrink) == batch_shrink and batch_shrink >= 1),
            ("every", every, int(every) == every and every >= 1),
        ):
            if not ok:
                raise ValueError(f"model.path_length.{key}={value} is out of range (weight > 0, 0 < decay <= 1, "
                                 "batch_shrink and every integers >= 1)")  # fmt: skip
        self.weight, self.decay, self.batch_shrink, self.every = (
            float(weight),
            float(decay),
            int(batch_shrink),
            int(every),
        )
        self.register_buffer("mean", torch.zeros([]))

    def due(self, g_step: int) -> bool:
        """On generator steps 0, every, 2 * every, ... (counted before the step's update, as NVlabs' phases)."""
        return g_step % self.every == 0

    def lengths(self, images: Tensor, ws: Tensor, noise: Tensor | None = None) -> Tensor:
        """a_n [N]: the Jacobian-vector lengths, differentiable (create_graph) so that the penalty trains G."""
        if noise is None:
            noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
        (grad,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)  # [N, num_ws, w_dim]
        return grad.float().square().sum(dim=2).mean(dim=1).sqrt()

    def forward(self, images: Tensor, ws: Tensor, noise: Tensor | None = None) -> Tensor:
        """weight * every * E[(a - mean)^2], after moving `mean` towards E[a] (the loss of the lazy G step)."""
        a = self.lengths(images, ws, noise)
        centre = self.mean.lerp(a.mean(), self.decay)  # NVlabs: the new mean, with its gradient, centres the penalty
        batch_mean = a.detach().mean()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(batch_mean)  # the stored mean: the same on every rank
            batch_mean /= torch.distributed.get_world_size()
        self.mean.copy_(self.mean.lerp(batch_mean, self.decay))
        return (a - centre).square().mean() * (self.weight * self.every)


def lazy_corrected(factory, every: int):
    """An optimizer factory (a partial) whose learning rate is times c and whose betas are to the power c,
    c = every / (every + 1): the correction for a regulariser stepped every `every` steps."""
    c = every / (every + 1)
    keywords = dict(getattr(factory, "keywords", {}))
    target = getattr(factory, "func", factory)
    defaults = {k: p.default for k, p in inspect.signature(target).parameters.items()}
    lr = keywords.get("lr", defaults.get("lr"))
    if not isinstance(lr, (int, float)):
        raise ValueError(f"the lazy regularisation correction needs a number for the optimizer's lr, got {lr!r}")
    keywords["lr"] = lr * c
    betas = keywords.get("betas", defaults.get("betas"))
    if betas is not None:
        keywords["betas"] = tuple(float(b) ** c for b in betas)
    return functools.partial(target, *getattr(factory, "args", ()), **keywords)
