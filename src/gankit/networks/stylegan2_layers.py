"""StyleGAN2's building blocks in plain PyTorch (Karras et al. 2020; NVlabs/stylegan2-ada-pytorch, networks.py).

No custom CUDA kernels: resampling is a depthwise convolution with the [1, 3, 3, 1] filter (what
NVlabs' `upfirdn2d` reference path computes), bias + activation is two ops, so the same code runs on
CPU, under DDP, in bf16 / fp16 autocast and under torch.compile (which fuses what the kernels fused).

Equalised learning rate: every weight is stored ~ N(0, 1) / lr_multiplier and scaled at run time by
lr_multiplier / sqrt(fan_in), so Adam's per-parameter step is the same size for every layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SQRT2 = math.sqrt(2.0)  # the gain after leaky ReLU(0.2) that keeps unit variance (NVlabs' def_gain)


def resample_filter(taps: tuple[int, ...] = (1, 3, 3, 1)) -> Tensor:
    """The separable low-pass filter as a 2D kernel that sums to 1: [len, len]."""
    f = torch.tensor(taps, dtype=torch.float32)
    f = f[:, None] * f[None, :]
    return f / f.sum()


def filter2d(x: Tensor, f: Tensor, pad: tuple[int, int], gain: float = 1.0) -> Tensor:
    """Depthwise convolution of x [N, C, H, W] with f [k, k] (symmetric), padded (before, after) on both axes."""
    channels = x.shape[1]
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    weight = (f * gain).to(x.dtype)[None, None].expand(channels, 1, *f.shape)
    return F.conv2d(x, weight, groups=channels)


def upsample2d(x: Tensor, f: Tensor) -> Tensor:
    """[N, C, H, W] -> [N, C, 2H, 2W]: zeros between the pixels, then the filter (gain 4 keeps the mean)."""
    n, c, h, w = x.shape
    x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, 1, 0, 0, 0, 1]).reshape(n, c, 2 * h, 2 * w)
    k = f.shape[0]
    return filter2d(x, f, ((k + 1) // 2, (k - 2) // 2), gain=4.0)  # [1,3,3,1]: pad (2, 1), as NVlabs' upsample2d


def downsample2d(x: Tensor, f: Tensor) -> Tensor:
    """[N, C, H, W] -> [N, C, H/2, W/2]: the filter, then every second pixel."""
    k = f.shape[0]
    return filter2d(x, f, ((k - 1) // 2, (k - 2) // 2))[:, :, ::2, ::2]  # [1,3,3,1]: pad (1, 1)


def bias_act(x: Tensor, bias: Tensor | None, act: bool, gain: float = 1.0, clamp: float | None = None) -> Tensor:
    """x + bias, leaky ReLU(0.2) when `act`, times gain (sqrt(2) * gain with the activation), clamped to +-clamp."""
    if bias is not None:
        x = x + bias.to(x.dtype).reshape(1, -1, *([1] * (x.ndim - 2)))
    if act:
        x = F.leaky_relu(x, 0.2)
        gain = gain * SQRT2
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def normalize_2nd_moment(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Each row scaled to unit mean square (the mapping network's input normalisation)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class EqualLinear(nn.Module):
    """A fully connected layer with equalised learning rate: [N, in] -> [N, out]."""

    def __init__(
        self, in_features: int, out_features: int, act: bool = False, lr_multiplier: float = 1.0, bias_init: float = 0.0
    ) -> None:
        super().__init__()
        self.act = act
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain
        if not self.act:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=True)


class EqualConv2d(nn.Module):
    """A convolution with equalised learning rate, optionally halving the size (filter first, as NVlabs' down path).

    kernel 3 (padding 1) or 1; `down=True`: [N, in, H, W] -> [N, out, H/2, W/2]. Leaky ReLU when `act`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        act: bool = True,
        bias: bool = True,
        down: bool = False,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.act, self.down, self.kernel, self.conv_clamp = act, down, kernel, conv_clamp
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel * kernel)
        self.register_buffer("resample_filter", resample_filter(), persistent=False)

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        if self.down and self.kernel == 1:
            x = F.conv2d(downsample2d(x, self.resample_filter), w)
        elif self.down:  # filter with padding 2 (H + 1), then a stride-2 3x3 conv: H / 2
            x = F.conv2d(filter2d(x, self.resample_filter, (2, 2)), w, stride=2)
        else:
            x = F.conv2d(x, w, padding=self.kernel // 2)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, self.bias, self.act, gain=gain, clamp=clamp)


def modulated_conv2d(
    x: Tensor,
    weight: Tensor,
    styles: Tensor,
    demodulate: bool = True,
    padding: int = 0,
    up_filter: Tensor | None = None,
) -> Tensor:
    """StyleGAN2's modulated convolution: each sample's weights scaled per input channel by its style,
    w'_{n,o,i} = w_{o,i} * s_{n,i}, then (demodulate) per output channel by 1 / sqrt(sum_{i,k} w'^2 + 1e-8).

    x [N, I, H, W], weight [O, I, k, k], styles [N, I] -> [N, O, H', W']. Computed without per-sample
    weights (NVlabs' non-fused path, the one it trains with): scale the input by s, convolve with the
    shared weight, scale the output by the demodulation coefficients, whose squared sums are
    (s^2) @ (sum_k w^2)^T. On a CPU this is 9x faster than one grouped convolution with the batch in the groups.

    `up_filter` ([1, 3, 3, 1] as 2D, 3x3 weights): doubles the size as NVlabs' conv2d_resample(up=2): a
    stride-2 transposed convolution (a quarter of the multiply-adds of a convolution at 2H), then the filter
    with gain 4, padded once (1, 1), so the filtered values just outside the 2H grid still reach the border
    pixels. That equals zeros between the pixels, padding (3, 2), the filter, and a 3x3 convolution without
    padding with the flipped kernel (the parameterisation NVlabs' flip_weight=False picks on this path).
    """
    styles = styles.to(x.dtype)
    weight = weight.to(x.dtype)
    x = x * styles[:, :, None, None]
    if up_filter is None:
        x = F.conv2d(x, weight, padding=padding)
    else:
        x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)  # [N, O, 2H + 1, 2W + 1]
        x = filter2d(x, up_filter, (1, 1), gain=4.0)  # [N, O, 2H, 2W]
    if demodulate:
        squares = styles.square() @ weight.square().sum(dim=[2, 3]).t()  # [N, O]: sum_{i,k} (w_{o,i,k} s_{n,i})^2
        x = x * (squares + 1e-8).rsqrt()[:, :, None, None]
    return x


class SynthesisLayer(nn.Module):
    """A modulated, demodulated 3x3 convolution (doubling the size when `up`, as NVlabs), per-pixel noise times a
    learned strength (0 at the start), bias and leaky ReLU: [N, in, H, W], w [N, w_dim] -> [N, out, R, R]."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool = False,
        conv_clamp: float | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.up, self.resolution, self.conv_clamp = up, resolution, conv_clamp
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)  # styles start at 1
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))  # noise_mode="const"
        self.register_buffer("resample_filter", resample_filter(), persistent=False)

    def forward(self, x: Tensor, w: Tensor, noise_mode: str = "random", gain: float = 1.0) -> Tensor:
        styles = self.affine(w)
        up_filter = self.resample_filter if self.up else None
        x = modulated_conv2d(x, self.weight, styles, demodulate=True, padding=1, up_filter=up_filter)
        if noise_mode == "random":
            x = x + torch.randn(len(x), 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype) * (
                self.noise_strength.to(x.dtype)
            )
        elif noise_mode == "const":
            x = x + self.noise_const.to(x.dtype) * self.noise_strength.to(x.dtype)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, self.bias, act=True, gain=gain, clamp=clamp)


class ToRGB(nn.Module):
    """A modulated (not demodulated) 1x1 convolution to image channels, plus bias: [N, in, R, R] -> [N, C, R, R]."""

    def __init__(self, in_channels: int, channels: int, w_dim: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias, act=False, clamp=self.conv_clamp)


class MinibatchStd(nn.Module):
    """Appends the standard deviation over groups of min(group_size, N) samples (averaged over features and pixels)
    as one more channel: [N, C, H, W] -> [N, C + 1, H, W]. In training N must be a multiple of the group (as
    NVlabs asserts); in eval mode (metrics score batches of any size) the group is N's largest divisor up to it."""

    def __init__(self, group_size: int = 4) -> None:
        super().__init__()
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"model.discriminator.mbstd_group must be an integer >= 1, got {group_size!r}")
        self.group_size = group_size

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        if n % g and self.training:
            raise ValueError(
                f"StyleGAN2's D takes batches in groups of model.discriminator.mbstd_group={self.group_size}, and "
                f"this batch has {n} (data.batch_size / model.pack): make the batch a multiple of the group"
            )
        g = max(d for d in range(1, g + 1) if n % d == 0)
        y = x.reshape(g, n // g, c, h, w).float()  # sample i is in group i % (n // g), as NVlabs'
        y = (y - y.mean(dim=0)).square().mean(dim=0)  # [n/g, C, H, W]: variance within each group
        y = (y + 1e-8).sqrt().mean(dim=[1, 2, 3])  # [n/g]
        y = y.to(x.dtype).reshape(-1, 1, 1, 1).repeat(g, 1, h, w)  # [N, 1, H, W]
        return torch.cat([x, y], dim=1)
