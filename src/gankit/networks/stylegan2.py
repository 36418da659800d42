"""StyleGAN2 (Karras et al. 2020), following NVlabs/stylegan2-ada-pytorch's networks.py, in plain PyTorch.

Generator: a mapping network z -> w (learning rate x 0.01, a tracked average of w for truncation),
a learned 4x4 constant, then one block per resolution of two modulated convolutions with noise, and
a skip architecture: every block's toRGB output is added to the upsampled image so far.
Discriminator: a residual network from RGB, a minibatch standard deviation channel, and a 4x4
epilogue. Conditional (`num_classes=K`): the label's embedding joins z in G's mapping network; D
projects its features onto a label embedding (the projection discriminator's inner product).
Channel widths: min(channel_base // resolution, channel_max) at each resolution.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gankit.networks.common import check_labels, check_pack, one_hot
from gankit.networks.stylegan2_layers import (
    EqualConv2d,
    EqualLinear,
    MinibatchStd,
    SynthesisLayer,
    ToRGB,
    normalize_2nd_moment,
    resample_filter,
    upsample2d,
)

RESOLUTIONS = (16, 32, 64, 128, 256, 512, 1024)


def channel_widths(resolution: int, channel_base: int, channel_max: int) -> dict[int, int]:
    """{4: width, 8: width, ..., resolution: width}, each min(channel_base // r, channel_max); checked."""
    if resolution not in RESOLUTIONS:
        raise ValueError(
            f"StyleGAN2 builds square images of side {', '.join(map(str, RESOLUTIONS))}; got resolution={resolution}. "
            "Set data.resolution to one of those."
        )
    for key, value in (("channel_base", channel_base), ("channel_max", channel_max)):
        if int(value) != value or value < 1 or value & (value - 1):
            raise ValueError(f"model.generator.{key} (and the discriminator's) must be a power of two, got {value}")
    if channel_base < resolution:
        raise ValueError(
            f"model.generator.channel_base={channel_base} leaves no channel at {resolution}x{resolution} "
            f"(width = channel_base // resolution): use channel_base >= {resolution}"
        )
    return {4 * 2**i: min(channel_base // (4 * 2**i), channel_max) for i in range(int(math.log2(resolution)) - 1)}


class MappingNetwork(nn.Module):
    """z [N, z_dim] (and labels [N]) -> w [N, w_dim]: normalised inputs, `layers` leaky-ReLU layers.

    Their learning rate is times lr_multiplier. In training mode each call moves `w_avg` towards the
    batch mean of w (beta 0.995): truncation's centre.
    """

    def __init__(
        self, z_dim: int, w_dim: int, layers: int = 8, num_classes: int | None = None, lr_multiplier: float = 0.01,
        w_avg_beta: float = 0.995,
    ) -> None:  # fmt: skip
        super().__init__()
        if int(layers) != layers or layers < 1:
            raise ValueError(f"model.generator.mapping_layers must be an integer >= 1, got {layers}")
        self.z_dim, self.w_dim, self.num_classes, self.w_avg_beta = z_dim, w_dim, num_classes, w_avg_beta
        self.embed = EqualLinear(num_classes, w_dim) if num_classes else None
        features = [z_dim + (w_dim if num_classes else 0)] + [w_dim] * layers
        self.net = nn.Sequential(
            *(
                EqualLinear(a, b, act=True, lr_multiplier=lr_multiplier)
                for a, b in zip(features, features[1:], strict=False)
            )
        )
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: Tensor, y: Tensor | None = None, update_w_avg: bool = True) -> Tensor:
        x = normalize_2nd_moment(z)
        if self.embed is not None:
            x = torch.cat([x, normalize_2nd_moment(self.embed(one_hot(y, self.num_classes, z)))], dim=1)
        w = self.net(x)  # [N, w_dim]
        if self.training and update_w_avg:
            self.w_avg.copy_(w.detach().float().mean(0).lerp(self.w_avg, self.w_avg_beta))
        return w


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: (constant | upsampling conv), conv, toRGB added to the upsampled image.

    Uses `num_ws` = num_conv + 1 consecutive w's: its convolutions' and its toRGB's (which the next block's
    first convolution shares, as in NVlabs).
    """

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, resolution: int, channels: int,
        conv_clamp: float | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.resolution = resolution
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
            self.convs = nn.ModuleList(
                [SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)]
            )
        else:
            self.const = None
            self.convs = nn.ModuleList([
                SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True, conv_clamp=conv_clamp),
                SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp),
            ])  # fmt: skip
        self.torgb = ToRGB(out_channels, channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = len(self.convs)
        self.register_buffer("resample_filter", resample_filter(), persistent=False)

    def forward(self, x: Tensor | None, img: Tensor | None, ws: Tensor, noise_mode: str) -> tuple[Tensor, Tensor]:
        if self.const is not None:
            x = self.const.to(ws.dtype).unsqueeze(0).repeat(len(ws), 1, 1, 1)  # a copy: a view trips FlopCounterMode
        for i, conv in enumerate(self.convs):
            x = conv(x, ws[:, i], noise_mode=noise_mode)
        y = self.torgb(x, ws[:, self.num_conv]).float()  # the image accumulates in float32, as NVlabs'
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img


class Generator(nn.Module):
    """z [N, latent_dim] (and labels y [N] when conditional) -> images [N, channels, resolution, resolution].

    `mapping(z, y, truncation_psi)` gives the per-layer styles ws [N, num_ws, w_dim]; `synthesis(ws)` the
    images. Truncation: w = w_avg + psi * (w - w_avg). Noise: drawn per pixel in training mode (the
    training stream); a fixed map per layer in eval mode, so that samples and metrics are functions of
    the latents alone (`noise_mode` overrides: "random", "const", "none"). The output has no tanh: D
    trains on it as it is (as NVlabs'); in eval mode it is clamped to [-1, 1], the range every sample
    consumer reads (NVlabs clamps when it converts to 8 bits).
    """

    def __init__(
        self,
        latent_dim: int = 512,
        w_dim: int = 512,
        resolution: int = 32,
        channels: int = 3,
        channel_base: int = 32768,
        channel_max: int = 512,
        mapping_layers: int = 8,
        num_classes: int | None = None,
        conv_clamp: float | None = None,
        mapping_lr: float = 0.01,
        w_avg_beta: float = 0.995,
    ) -> None:
        super().__init__()
        widths = channel_widths(resolution, channel_base, channel_max)
        self.latent_dim, self.w_dim, self.resolution, self.channels = latent_dim, w_dim, resolution, channels
        self.num_classes = num_classes
        self.mapping_net = MappingNetwork(latent_dim, w_dim, mapping_layers, num_classes, mapping_lr, w_avg_beta)
        self.blocks = nn.ModuleList()
        previous = 0
        for res, width in widths.items():
            self.blocks.append(SynthesisBlock(previous, width, w_dim, res, channels, conv_clamp))
            previous = width
        self.num_ws = sum(b.num_conv for b in self.blocks) + 1

    @property
    def w_avg(self) -> Tensor:
        return self.mapping_net.w_avg

    def mapping(
        self, z: Tensor, y: Tensor | None = None, truncation_psi: float = 1.0, update_w_avg: bool = True
    ) -> Tensor:
        """z [N, latent_dim] -> ws [N, num_ws, w_dim] (one w broadcast to every layer), truncated towards w_avg."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected z of shape [N, {self.latent_dim}], got {list(z.shape)}")
        check_labels(y, self.num_classes, len(z))
        w = self.mapping_net(z, y, update_w_avg=update_w_avg)
        if truncation_psi != 1:
            w = self.w_avg.to(w.dtype).lerp(w, truncation_psi)
        return w.unsqueeze(1).repeat(1, self.num_ws, 1)

    def synthesis(self, ws: Tensor, noise_mode: str | None = None, clamp: bool | None = None) -> Tensor:
        """ws [N, num_ws, w_dim] -> images [N, channels, resolution, resolution] (not squashed: as NVlabs'), clamped
        to [-1, 1] in eval mode unless `clamp` says otherwise."""
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"expected ws of shape [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        noise_mode = noise_mode or ("random" if self.training else "const")
        x = img = None
        index = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, index : index + block.num_conv + 1], noise_mode)
            index += block.num_conv
        return img.clamp(-1, 1) if (not self.training if clamp is None else clamp) else img

    def forward(self, z: Tensor, y: Tensor | None = None, truncation_psi: float = 1.0, noise_mode: str | None = None):
        return self.synthesis(self.mapping(z, y, truncation_psi), noise_mode)


class DiscriminatorBlock(nn.Module):
    """Two 3x3 convolutions (the second halving the size) with a 1x1 residual path, each branch times sqrt(1/2)."""

    def __init__(self, in_channels: int, out_channels: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, conv_clamp=conv_clamp)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, down=True, conv_clamp=conv_clamp)
        self.skip = EqualConv2d(in_channels, out_channels, 1, act=False, bias=False, down=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.skip(x, gain=math.sqrt(0.5))
        return y + self.conv1(self.conv0(x), gain=math.sqrt(0.5))


class Discriminator(nn.Module):
    """images [N, channels * pack, R, R] (and labels [N]) -> logits [N]: StyleGAN2's residual D.

    fromRGB, residual blocks down to 4x4, then a minibatch-std channel (groups of `mbstd_group`),
    a 3x3 conv, a fully connected layer, and the output layer; conditional: the output is the
    projection of the features on the label's embedding (cmap), divided by sqrt(cmap_dim).
    """

    def __init__(
        self,
        resolution: int = 32,
        channels: int = 3,
        channel_base: int = 32768,
        channel_max: int = 512,
        mbstd_group: int = 4,
        pack: int = 1,
        num_classes: int | None = None,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        widths = channel_widths(resolution, channel_base, channel_max)
        self.resolution, self.channels, self.pack, self.num_classes = (
            resolution,
            channels,
            check_pack(pack),
            num_classes,
        )
        self.fromrgb = EqualConv2d(channels * self.pack, widths[resolution], 1, conv_clamp=conv_clamp)
        self.blocks = nn.Sequential(*(
            DiscriminatorBlock(widths[res], widths[res // 2], conv_clamp) for res in sorted(widths, reverse=True)[:-1]
        ))  # fmt: skip
        width = widths[4]
        self.mbstd = MinibatchStd(mbstd_group)
        self.conv = EqualConv2d(width + 1, width, 3, conv_clamp=conv_clamp)
        self.fc = EqualLinear(width * 16, width, act=True)
        self.cmap_dim = width if num_classes else 1
        self.out = EqualLinear(width, self.cmap_dim)
        self.embed = EqualLinear(num_classes, self.cmap_dim) if num_classes else None  # NVlabs: a mapping net
        self.feature_dim = width

    def forward(self, x: Tensor, y: Tensor | None = None, features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        expected = (self.channels * self.pack, self.resolution, self.resolution)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected images of shape [N, {', '.join(map(str, expected))}], got {list(x.shape)}")
        check_labels(y, self.num_classes, len(x))
        h = self.blocks(self.fromrgb(x))  # [N, width, 4, 4]
        h = self.fc(self.conv(self.mbstd(h)).flatten(1))  # [N, width]
        out = self.out(h)
        if self.embed is not None:
            cmap = normalize_2nd_moment(self.embed(one_hot(y, self.num_classes, h)))
            out = (out * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)
        logits = out.flatten()
        return (logits, h) if features else logits
