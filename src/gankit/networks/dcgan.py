"""DCGAN generator and discriminator (Radford et al. 2015) for square images of any power-of-two size."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gankit.networks.common import apply_spectral_norm, check_labels, check_pack, one_hot


def check_resolution(resolution: int) -> int:
    """Number of stride-2 stages between 4x4 and `resolution`; raises for sizes DCGAN cannot build."""
    if resolution < 16 or resolution & (resolution - 1):
        raise ValueError(
            f"DCGAN builds square images whose side is a power of two from 16 up "
            f"(16, 32, 64, 128, ...); got resolution={resolution}. Set data.resolution to one of those."
        )
    return int(math.log2(resolution)) - 2


def dcgan_init(module: nn.Module) -> None:
    """The paper's initialisation: conv weights ~ N(0, 0.02), batch-norm scales ~ N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """z [N, latent_dim] -> images [N, channels, resolution, resolution] in [-1, 1].

    A 4x4 projection, then stride-2 transposed convolutions that halve the width as they double
    the size: at resolution 64 and base_width 64 the widths are 512, 256, 128, 64.
    `num_classes=K` makes it conditional the classic way (Mirza & Osindero 2014): the one-hot label
    is concatenated to z, and forward takes labels y [N].
    """

    def __init__(
        self,
        latent_dim: int = 100,
        resolution: int = 64,
        channels: int = 3,
        base_width: int = 64,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        stages = check_resolution(resolution)
        self.latent_dim, self.resolution, self.channels = latent_dim, resolution, channels
        self.num_classes = num_classes
        width = base_width * 2 ** (stages - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim + (num_classes or 0), width, 4, 1, 0, bias=False),  # [N, nz, 1, 1] -> 4x4
            nn.BatchNorm2d(width),
            nn.ReLU(True),
        ]
        for _ in range(stages - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),  # doubles H and W
                nn.BatchNorm2d(width // 2),
                nn.ReLU(True),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected z of shape [N, {self.latent_dim}], got {list(z.shape)}")
        if check_labels(y, self.num_classes, len(z)) is not None:
            z = torch.cat([z, one_hot(y, self.num_classes, z)], 1)
        return self.net(z[:, :, None, None])  # [N, nz] -> [N, C, R, R]


class Discriminator(nn.Module):
    """images [N, channels, resolution, resolution] -> logits [N] (no sigmoid: losses take logits).

    Stride-2 convolutions with LeakyReLU(0.2) down to 4x4, batch norm on all but the first;
    `batch_norm=False` gives the critic WGAN-GP needs (its penalty is per sample).
    `pack=m` (PacGAN) takes m images stacked along channels, [N, m * channels, R, R];
    `spectral_norm=True` normalises every layer (Miyato et al. 2018); `num_classes=K` makes it
    conditional by concatenating one-hot label maps to the image channels.
    """

    def __init__(
        self,
        resolution: int = 64,
        channels: int = 3,
        base_width: int = 64,
        batch_norm: bool = True,
        pack: int = 1,
        spectral_norm: bool = False,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        stages = check_resolution(resolution)
        self.resolution, self.channels, self.pack = resolution, channels, check_pack(pack)
        self.num_classes = num_classes
        width = base_width
        layers: list[nn.Module] = [
            nn.Conv2d(channels * self.pack + (num_classes or 0), width, 4, 2, 1, bias=False),  # halves H and W
            nn.LeakyReLU(0.2, True),
        ]
        for _ in range(stages - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=not batch_norm)]
            layers += [nn.BatchNorm2d(width * 2)] if batch_norm else []
            layers += [nn.LeakyReLU(0.2, True)]
            width *= 2
        layers += [nn.Conv2d(width, 1, 4, 1, 0, bias=False)]  # 4x4 -> 1x1
        self.net = nn.Sequential(*layers)
        self.feature_dim = width * 4 * 4  # the trunk's output before the last conv (InfoGAN's Q head reads it)
        self.apply(dcgan_init)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: Tensor, y: Tensor | None = None, features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Logits [N]; with `features=True` also the trunk's features [N, feature_dim]."""
        expected = (self.channels * self.pack, self.resolution, self.resolution)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected images of shape [N, {', '.join(map(str, expected))}], got {list(x.shape)}")
        if check_labels(y, self.num_classes, len(x)) is not None:
            maps = one_hot(y, self.num_classes, x)[:, :, None, None].expand(-1, -1, *x.shape[2:])
            x = torch.cat([x, maps], 1)
        if not features:
            return self.net(x).flatten()  # [N, C, R, R] -> [N]
        h = self.net[:-1](x)
        return self.net[-1](h).flatten(), h.flatten(1)
