"""Discriminator regularisers and input transforms any recipe can switch on by config.

- `pack` (PacGAN, Lin et al. 2018): D judges m samples at once, concatenated along channels
  (images) or features (vectors); all m are real or all are fake.
- `gradient_penalty` (WGAN-GP, Gulrajani et al. 2017): (||grad D(x_hat)|| - 1)^2 at random
  interpolates of real and fake.
- `r1_penalty` (Mescheder et al. 2018): ||grad D(x_real)||^2, the gradient on real data only.

Penalties take the gradient with `create_graph=True` so that their own gradient reaches D's weights.
Under fp16 mixed precision the gradient is taken of the *scaled* output (so that small gradients do
not underflow in fp16) and unscaled before the norm, as in PyTorch's AMP recipe for gradient
penalties; the norm itself is computed in float32. When the scaled gradient overflows, the penalty is
inf: its backward gives D non-finite gradients, the scaler skips that step and lowers its scale
(the non-finite loss guard knows this; `gankit.callbacks.guard`).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.amp import GradScaler


def pack(x: Tensor, m: int) -> Tensor:
    """[N, C, ...] -> [N / m, m * C, ...]: consecutive groups of m samples become one D input."""
    if m == 1:
        return x
    n = x.shape[0]
    if n % m:
        raise ValueError(f"a batch of {n} cannot be packed in groups of model.pack={m}")
    return x.reshape(n // m, m * x.shape[1], *x.shape[2:])


def input_gradient(output: Tensor, inputs: Tensor, scaler: GradScaler | None = None) -> Tensor:
    """d(sum output)/d inputs, differentiable (create_graph), in float32, correct under a GradScaler."""
    if scaler is not None and scaler.is_enabled():
        scale = scaler.scale(torch.ones((), device=output.device))  # a tensor: no device sync (get_scale() syncs)
        (grad,) = torch.autograd.grad(output.sum() * scale, inputs, create_graph=True)
        return grad.float() / scale
    (grad,) = torch.autograd.grad(output.sum(), inputs, create_graph=True)
    return grad.float()


def gradient_penalty(
    discriminator, real: Tensor, fake: Tensor, scaler: GradScaler | None = None, generator=None
) -> Tensor:
    """E[(||grad_x D(x_hat)||_2 - 1)^2], x_hat = a * real + (1 - a) * fake, a ~ U(0, 1) per sample."""
    shape = (real.shape[0],) + (1,) * (real.ndim - 1)
    alpha = torch.rand(shape, device=real.device, generator=generator, dtype=real.dtype)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    grad = input_gradient(discriminator(mixed), mixed, scaler)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def r1_penalty(discriminator, real: Tensor, scaler: GradScaler | None = None, output: Tensor | None = None) -> Tensor:
    """E[||grad_x D(x_real)||_2^2] (multiply by gamma / 2 for the R1 term).

    `output`: D's logits on `real` (a tensor that requires grad) from a pass the caller already made,
    e.g. the D step's own; without it D is run once more here.
    """
    if output is None:
        real = real.detach().requires_grad_(True)
        output = discriminator(real)
    grad = input_gradient(output, real, scaler)
    return grad.flatten(1).pow(2).sum(1).mean()
