"""ADA (Karras et al. 2020): adaptive discriminator augmentation, as in NVlabs' stylegan2-ada-pytorch.

Every image D sees, real or fake, in D's step and in G's, goes through the `bgc` pipeline: blit
(x-flip, 90-degree rotations, integer translation), geometry (isotropic scaling, rotation,
anisotropic scaling, fractional translation) and colour (brightness, contrast, luma flip, hue,
saturation), each transform applied to each sample with probability p. The pipeline is
differentiable, so G learns through it; with p < 0.8 or so the augmentations do not leak into G's
samples. p adapts to D's overfitting: every `interval` D steps, r_t = E[sign(D(aug(x_real)))] over
those steps (all processes), and p <- clamp(p + sign(r_t - target) * batch * interval / (kimg * 1000), 0, 1).

Differences from the reference, each said: geometric transforms resample bilinearly with reflection
padding (`grid_sample`), where the reference first upsamples 2x with a 12-tap wavelet filter to
reduce aliasing; integer translations and 90-degree rotations are exact either way. p has an upper
clamp at 1 (the reference has none; p > 1 means nothing). p and r_t's running sums are buffers: in
the checkpoint, so a resumed run goes on with the same p (the reference restarts from the saved p
with a faster kimg because it forgets the sums).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# the `bgc` pipeline's strengths (stylegan2-ada-pytorch, training/augment.py defaults)
XINT_MAX, SCALE_STD, ROTATE_MAX, ANISO_STD, XFRAC_STD = 0.125, 0.2, 1.0, 0.2, 0.125
BRIGHTNESS_STD, CONTRAST_STD, HUE_MAX, SATURATION_STD = 0.2, 0.5, 1.0, 1.0


def _eye(n: int, size: int, device) -> Tensor:
    return torch.eye(size, device=device).repeat(n, 1, 1)


def _matrix(rows, device) -> Tensor:
    """Rows of per-sample values ([N] tensors or numbers) -> [N, R, C]."""
    n = next(v.shape[0] for row in rows for v in row if isinstance(v, Tensor))
    cells = [[v if isinstance(v, Tensor) else torch.full((n,), float(v), device=device) for v in row] for row in rows]
    return torch.stack([torch.stack(row, dim=-1) for row in cells], dim=-2)


def translate2d(tx: Tensor, ty: Tensor) -> Tensor:
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], tx.device)


def scale2d(sx: Tensor, sy: Tensor) -> Tensor:
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], sx.device)


def rotate2d(theta: Tensor) -> Tensor:
    c, s = torch.cos(theta), torch.sin(theta)
    return _matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]], theta.device)


def translate3d(t: Tensor) -> Tensor:
    return _matrix([[1, 0, 0, t], [0, 1, 0, t], [0, 0, 1, t], [0, 0, 0, 1]], t.device)


def scale3d(s: Tensor) -> Tensor:
    return _matrix([[s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1]], s.device)


def rotate3d(v: Tensor, theta: Tensor) -> Tensor:
    """Rotation by theta [N] about the unit axis v [3] (Rodrigues), as a 4x4 homogeneous matrix."""
    vx, vy, vz = v
    c, s = torch.cos(theta), torch.sin(theta)
    cc = 1 - c
    return _matrix(
        [
            [vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
            [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
            [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
            [0, 0, 0, 1],
        ],
        theta.device,
    )


def _where(chosen: Tensor, value: Tensor, default: float) -> Tensor:
    return torch.where(chosen, value, torch.full_like(value, default))


def geometric_matrix(n: int, p: Tensor | float, width: int, height: int, device) -> Tensor:
    """[N, 3, 3]: for each output pixel (centred coordinates) the input pixel it samples; identity rows where
    no transform was drawn. Each transform is chosen per sample with probability p (rotations: 1 - sqrt(1 - p)
    before and after the scaling, so that some rotation happens with probability p)."""

    p = torch.as_tensor(p, device=device)

    def chosen(prob: Tensor) -> Tensor:
        return torch.rand(n, device=device) < prob  # a tensor p: no device read

    G = _eye(n, 3, device)
    i = torch.floor(torch.rand(n, device=device) * 2)  # x-flip
    G = G @ scale2d(1 - 2 * _where(chosen(p), i, 0), torch.ones(n, device=device))
    i = torch.floor(torch.rand(n, device=device) * 4)  # rotate 90 degrees, i times
    G = G @ rotate2d(-math.pi / 2 * _where(chosen(p), i, 0))
    t = (torch.rand(n, 2, device=device) * 2 - 1) * XINT_MAX  # integer translation
    t = torch.where(chosen(p)[:, None], t, torch.zeros_like(t))
    G = G @ translate2d(-torch.round(t[:, 0] * width), -torch.round(t[:, 1] * height))
    s = torch.exp2(torch.randn(n, device=device) * SCALE_STD)  # isotropic scaling
    s = _where(chosen(p), s, 1)
    G = G @ scale2d(1 / s, 1 / s)
    p_rot = 1 - torch.sqrt((1 - p).clamp(0, 1))
    theta = (torch.rand(n, device=device) * 2 - 1) * math.pi * ROTATE_MAX  # rotation, before
    G = G @ rotate2d(-_where(chosen(p_rot), theta, 0))
    s = torch.exp2(torch.randn(n, device=device) * ANISO_STD)  # anisotropic scaling
    s = _where(chosen(p), s, 1)
    G = G @ scale2d(1 / s, s)
    theta = (torch.rand(n, device=device) * 2 - 1) * math.pi * ROTATE_MAX  # rotation, after
    G = G @ rotate2d(-_where(chosen(p_rot), theta, 0))
    t = torch.randn(n, 2, device=device) * XFRAC_STD  # fractional translation
    t = torch.where(chosen(p)[:, None], t, torch.zeros_like(t))
    return G @ translate2d(-t[:, 0] * width, -t[:, 1] * height)


def color_matrix(n: int, p: Tensor | float, device) -> Tensor:
    """[N, 4, 4] acting on (r, g, b, 1): brightness, contrast, luma flip, hue rotation, saturation, each with
    probability p per sample."""

    p = torch.as_tensor(p, device=device)

    def chosen() -> Tensor:
        return torch.rand(n, device=device) < p

    v = torch.tensor([1.0, 1.0, 1.0, 0.0], device=device) / math.sqrt(3)  # the luma axis
    vv = torch.outer(v, v)
    C = _eye(n, 4, device)
    b = torch.randn(n, device=device) * BRIGHTNESS_STD
    C = translate3d(_where(chosen(), b, 0)) @ C
    c = torch.exp2(torch.randn(n, device=device) * CONTRAST_STD)
    C = scale3d(_where(chosen(), c, 1)) @ C
    i = torch.floor(torch.rand(n, device=device) * 2)  # luma flip
    C = (torch.eye(4, device=device) - 2 * vv * _where(chosen(), i, 0)[:, None, None]) @ C
    theta = (torch.rand(n, device=device) * 2 - 1) * math.pi * HUE_MAX  # hue rotation
    C = rotate3d(v[:3], _where(chosen(), theta, 0)) @ C
    s = torch.exp2(torch.randn(n, device=device) * SATURATION_STD)
    C = (vv + (torch.eye(4, device=device) - vv) * _where(chosen(), s, 1)[:, None, None]) @ C
    return C


def apply_geometric(images: Tensor, G: Tensor) -> Tensor:
    """Resample images [N, C, H, W] through G (centred pixel coordinates, output -> input), reflecting at the
    borders; rows that are the identity come out unchanged."""
    n, _, h, w = images.shape
    to_unit = torch.diag(torch.tensor([2.0 / w, 2.0 / h, 1.0], device=images.device))  # pixels -> [-1, 1]
    theta = (to_unit @ G.to(images.dtype) @ torch.linalg.inv(to_unit))[:, :2, :]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def apply_color(images: Tensor, C: Tensor) -> Tensor:
    """images [N, 3 or 1, H, W] through the colour matrices C [N, 4, 4] (grey images: the mean of the RGB rows)."""
    n, channels, h, w = images.shape
    flat = images.reshape(n, channels, h * w)
    C = C.to(images.dtype)
    if channels == 3:
        flat = C[:, :3, :3] @ flat + C[:, :3, 3:]
    elif channels == 1:
        C = C[:, :3, :].mean(dim=1, keepdim=True)  # [N, 1, 4]
        flat = flat * C[:, :, :3].sum(dim=2, keepdim=True) + C[:, :, 3:]
    else:
        raise ValueError(f"ADA's colour transforms take 1 or 3 channels; got {channels}")
    return flat.reshape(n, channels, h, w)


def _keep_fixed_p(p: float):
    def hook(module: nn.Module, incompatible_keys) -> None:
        module.p.fill_(p)

    return hook


class AdaptiveAugment(nn.Module):
    """The bgc pipeline with its probability p, adapted to D's overfitting (p null: from 0) or fixed (`p`).

    Args:
        target: r_t the controller steers to (0.6).
        interval: D steps between adjustments (4).
        kimg: thousands of real images for p to go from 0 to 1 at the fastest (500).
        p: null: adaptive, starting at 0; a number: that p throughout, no adaptation (ablations).
    """

    def __init__(self, target: float = 0.6, interval: int = 4, kimg: float = 500, p: float | None = None) -> None:
        super().__init__()
        if not 0 < target < 1:
            raise ValueError(f"model.ada.target must be in (0, 1) (the reference: 0.6), got {target}")
        if int(interval) != interval or interval < 1:
            raise ValueError(f"model.ada.interval (D steps between updates of p) must be an integer >= 1: {interval}")
        if not kimg > 0:
            raise ValueError(f"model.ada.kimg must be positive (the reference: 500), got {kimg}")
        if p is not None and not 0 <= p <= 1:
            raise ValueError(f"model.ada.p must be in [0, 1] (a fixed p), or null (adaptive); got {p}")
        self.target, self.interval, self.kimg = target, int(interval), float(kimg)
        self.adaptive = p is None
        self.off = p == 0  # a fixed p of 0: the identity, known without reading the device
        self.register_buffer("p", torch.tensor(0.0 if p is None else float(p)))
        self.register_buffer("signs", torch.zeros(2))  # sum of sign(D(aug(x_real))), number of logits
        self.register_buffer("rt", torch.tensor(0.0))  # the last r_t (logged)
        if not self.adaptive:  # a fixed p is the config's, also after loading a checkpoint that had another
            self.register_load_state_dict_post_hook(_keep_fixed_p(float(p)))

    def forward(self, images: Tensor) -> Tensor:
        """Augment each image of [N, C, H, W] with probability p per transform; differentiable in the images."""
        if images.ndim != 4:
            raise ValueError(f"ADA takes images [N, C, H, W]; got {list(images.shape)} (2D data: leave model.ada off)")
        if self.off:
            return images
        n, _, h, w = images.shape  # p stays a tensor: the draws compare against it on the device, no sync
        images = apply_geometric(images, geometric_matrix(n, self.p, w, h, images.device))
        return apply_color(images, color_matrix(n, self.p, images.device))

    @torch.no_grad()
    def accumulate(self, real_logits: Tensor) -> None:
        """Count sign(D(aug(x_real))) of this D step (no device read); with a fixed p too, where r_t is logged
        but moves nothing (the reference reports the signs whatever p is)."""
        count = torch.tensor(float(real_logits.numel()), device=self.signs.device)
        self.signs += torch.stack([real_logits.detach().sign().sum().float(), count])

    @torch.no_grad()
    def adjust(self, d_steps: int, batch: int) -> None:
        """After D step `d_steps` (counted from 1): every `interval` steps, move p by sign(r_t - target) *
        batch * interval / (kimg * 1000), `batch` the real images of one D step over all processes. A fixed p
        stays; r_t is measured all the same."""
        if d_steps % self.interval:
            return
        signs = self.signs.clone()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(signs)
        self.rt.copy_(signs[0] / signs[1].clamp(min=1))  # no device read: p moves on the device
        if self.adaptive:
            step = torch.sign(self.rt - self.target) * batch * self.interval / (self.kimg * 1000)
            self.p.copy_((self.p + step).clamp(0, 1))
        self.signs.zero_()
