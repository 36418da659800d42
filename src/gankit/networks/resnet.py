"""ResNet generator and discriminator of SNGAN (Miyato et al. 2018) at 32, 64 and 128.

At 32x32 the widths are the paper's CIFAR-10 ones (G 256, D 128 throughout); at 64 and 128 they
double per stage as in the paper's ImageNet models and mimicry's CelebA-64 SNGAN (G from
16 x base_width down to base_width, D the reverse). G: residual up-blocks (BN, ReLU, nearest
upsampling, 3x3 convs); D: residual down-blocks (ReLU, 3x3 convs, average pooling), spectral norm
on every layer, ReLU and a global sum pool before the linear output.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from gankit.networks.common import apply_spectral_norm, check_labels, check_pack

SUPPORTED = (32, 64, 128)


def check_resolution(resolution: int) -> None:
    if resolution not in SUPPORTED:
        raise ValueError(
            f"the SNGAN ResNets are defined at resolutions {', '.join(map(str, SUPPORTED))}; "
            f"got {resolution}. Set data.resolution to one of those."
        )


def generator_widths(resolution: int, base_width: int) -> list[int]:
    """Widths from the 4x4 projection up, one more than the number of up-blocks."""
    check_resolution(resolution)
    factors = {32: [1, 1, 1, 1], 64: [16, 8, 4, 2, 1], 128: [16, 16, 8, 4, 2, 1]}[resolution]
    return [base_width * f for f in factors]


def discriminator_plan(resolution: int, base_width: int) -> list[tuple[int, bool]]:
    """(width, downsample) of each down-block, the first one taking the image."""
    check_resolution(resolution)
    if resolution == 32:  # Miyato's CIFAR-10 D: 32 -> 16 -> 8, then two blocks at 8x8
        return [(base_width, True), (base_width, True), (base_width, False), (base_width, False)]
    factors = [1, 2, 4, 8, 16] + ([16] if resolution == 128 else [])
    return [(base_width * f, i < 5) for i, f in enumerate(factors)]


def _init(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose scale and shift are looked up per class (de Vries et al. 2017; SNGAN-projection's G)."""

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gain, self.bias = nn.Embedding(num_classes, num_features), nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.gain(y)[:, :, None, None] * self.bn(x) + self.bias(y)[:, :, None, None]


class GBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, num_classes: int | None = None) -> None:
        super().__init__()
        if num_classes:
            self.bn1, self.bn2 = ConditionalBatchNorm2d(c_in, num_classes), ConditionalBatchNorm2d(c_out, num_classes)
        else:
            self.bn1, self.bn2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conditional = bool(num_classes)
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, 1, 1), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1)

    def _bn(self, bn: nn.Module, x: Tensor, y: Tensor | None) -> Tensor:
        return bn(x, y) if self.conditional else bn(x)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = F.interpolate(F.relu(self._bn(self.bn1, x, y)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self._bn(self.bn2, self.conv1(h), y)))
        return h + self.skip(F.interpolate(x, scale_factor=2, mode="nearest"))


class DBlock(nn.Module):
    """Residual down-block; `first=True` is the "optimized" first block (no ReLU before the first conv)."""

    def __init__(self, c_in: int, c_out: int, downsample: bool = True, first: bool = False) -> None:
        super().__init__()
        self.first, self.downsample = first, downsample
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, 1, 1), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if (c_in != c_out or downsample) else None

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        if self.skip is None:
            return h + x
        if self.first:  # pool, then project (cheaper, as in the paper)
            return h + self.skip(F.avg_pool2d(x, 2))
        s = self.skip(x)
        return h + (F.avg_pool2d(s, 2) if self.downsample else s)


class Generator(nn.Module):
    """z [N, latent_dim] -> images [N, channels, resolution, resolution] in [-1, 1].

    `num_classes=K`: conditional batch norm in every residual block; forward takes labels y [N].
    """

    def __init__(
        self,
        latent_dim: int = 128,
        resolution: int = 32,
        channels: int = 3,
        base_width: int | None = None,
        num_classes: int | None = None,
    ):
        super().__init__()
        base_width = base_width or (256 if resolution == 32 else 64)
        w = generator_widths(resolution, base_width)
        self.latent_dim, self.resolution, self.channels = latent_dim, resolution, channels
        self.num_classes = num_classes
        self.project = nn.Linear(latent_dim, 4 * 4 * w[0])
        self.blocks = nn.ModuleList(GBlock(a, b, num_classes) for a, b in zip(w[:-1], w[1:], strict=True))
        self.out = nn.Sequential(nn.BatchNorm2d(w[-1]), nn.ReLU(), nn.Conv2d(w[-1], channels, 3, 1, 1), nn.Tanh())
        self.apply(_init)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        y = check_labels(y, self.num_classes, len(z))
        h = self.project(z).reshape(z.shape[0], -1, 4, 4)
        for block in self.blocks:
            h = block(h, y)
        return self.out(h)


class Discriminator(nn.Module):
    """images [N, pack * channels, R, R] -> logits [N]; spectral norm on every layer unless switched off.

    `num_classes=K`: the projection discriminator (Miyato & Koyama 2018): the logit gains the inner
    product of a learned class embedding with the pooled features; forward takes labels y [N].
    """

    def __init__(
        self,
        resolution: int = 32,
        channels: int = 3,
        base_width: int | None = None,
        pack: int = 1,
        spectral_norm: bool = True,
        num_classes: int | None = None,
    ):
        super().__init__()
        self.num_classes = num_classes
        base_width = base_width or (128 if resolution == 32 else 64)
        plan = discriminator_plan(resolution, base_width)
        self.resolution, self.channels, self.pack = resolution, channels, check_pack(pack)
        c_in = channels * self.pack
        blocks = []
        for i, (c_out, down) in enumerate(plan):
            blocks.append(DBlock(c_in, c_out, downsample=down, first=i == 0))
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(c_in, 1)
        self.embed = nn.Embedding(num_classes, c_in) if num_classes else None
        self.apply(_init)
        if self.embed is not None:
            nn.init.xavier_uniform_(self.embed.weight)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        y = check_labels(y, self.num_classes, len(x))
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))  # global sum pool [N, C]
        out = self.linear(h).flatten()
        if y is not None:
            out = out + (self.embed(y) * h).sum(1)
        return out
