"""MLP generator and discriminator for low-dimensional data (the 2D mixtures of VEEGAN / PacGAN).

Sizes follow PacGAN's toy experiments: G has 4 hidden layers of 400 units with batch norm, D 3
hidden layers of 200 units.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from gankit.networks.common import apply_spectral_norm, check_labels, check_pack, one_hot


def mlp(sizes: list[int], batch_norm: bool, activation: Callable[[], nn.Module]) -> nn.Sequential:
    """Linear layers between consecutive `sizes`, each hidden one followed by [BN and] the activation."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers += [nn.BatchNorm1d(fan_out)] if batch_norm else []
            layers.append(activation())
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """z [N, latent_dim] -> points [N, dim] (unbounded); conditional on labels y [N] with `num_classes` (one-hot)."""

    def __init__(
        self,
        latent_dim: int = 2,
        dim: int = 2,
        width: int = 400,
        depth: int = 4,
        batch_norm: bool = True,
        num_classes: int | None = None,
    ):
        super().__init__()
        self.latent_dim, self.dim, self.num_classes = latent_dim, dim, num_classes
        self.net = mlp([latent_dim + (num_classes or 0), *[width] * depth, dim], batch_norm, nn.ReLU)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if check_labels(y, self.num_classes, len(z)) is not None:
            z = torch.cat([z, one_hot(y, self.num_classes, z)], 1)
        return self.net(z)


class Discriminator(nn.Module):
    """points [N, pack * dim] -> logits [N] (`pack=m`: m points side by side, PacGAN)."""

    def __init__(
        self,
        dim: int = 2,
        width: int = 200,
        depth: int = 3,
        pack: int = 1,
        spectral_norm: bool = False,
        num_classes: int | None = None,
    ):
        super().__init__()
        self.dim, self.pack, self.num_classes = dim, check_pack(pack), num_classes
        # in place: its backward then reads the output, which the next layer keeps anyway, where a
        # compiled out-of-place LeakyReLU stores an `x > 0` mask (a bool write, slow on CPU: bench/compile_parts.py)
        activation = partial(nn.LeakyReLU, 0.2, inplace=True)
        self.net = mlp([dim * self.pack + (num_classes or 0), *[width] * depth, 1], False, activation)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        x = x.flatten(1)
        if check_labels(y, self.num_classes, len(x)) is not None:
            x = torch.cat([x, one_hot(y, self.num_classes, x)], 1)
        return self.net(x).squeeze(1)
