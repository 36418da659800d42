"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to real and fake images alike.

D sees augmented images in both the D and the G step, so G's gradient flows back through the
augmentation; every operation here is differentiable in the images. Policies (a list, e.g.
`model.augment=[color,translation,cutout]`):
- `color`: brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5), per image;
- `translation`: shift by up to 1/8 of the size in each direction, zero padding;
- `cutout`: zero a square of half the size at a random place.
Written here rather than taken from a package: the reference code is a script, not a library, and
this version draws from an optional torch.Generator so runs are reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

POLICIES = ("color", "translation", "cutout")


def _uniform(n: int, low: float, high: float, like: Tensor, generator: torch.Generator | None) -> Tensor:
    u = torch.rand(n, 1, 1, 1, generator=generator, device=like.device if generator is None else "cpu")
    return (low + (high - low) * u).to(like.device, like.dtype)


def color(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    n = x.shape[0]
    x = x + _uniform(n, -0.5, 0.5, x, generator)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * _uniform(n, 0.0, 2.0, x, generator) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _uniform(n, 0.5, 1.5, x, generator) + mean


def _offsets(n: int, limit: int, generator: torch.Generator | None, device) -> Tensor:
    return torch.randint(-limit, limit + 1, (n, 1, 1), generator=generator).to(device)


def translation(x: Tensor, ratio: float = 0.125, generator: torch.Generator | None = None) -> Tensor:
    n, _, h, w = x.shape
    dy, dx = (
        _offsets(n, int(h * ratio + 0.5), generator, x.device),
        _offsets(n, int(w * ratio + 0.5), generator, x.device),
    )
    rows = (torch.arange(h, device=x.device)[None, :, None] + dy + 1).clamp(0, h + 1)  # [n, h, 1] in padded coords
    cols = (torch.arange(w, device=x.device)[None, None, :] + dx + 1).clamp(0, w + 1)  # [n, 1, w]
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)  # [n, h + 2, w + 2, c], border of zeros
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: Tensor, ratio: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h, (n, 1, 1), generator=generator).to(x.device) - ch // 2  # centre anywhere
    left = torch.randint(0, w, (n, 1, 1), generator=generator).to(x.device) - cw // 2
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)  # [n, h, w]
    return x * (~inside).unsqueeze(1).to(x.dtype)


class DiffAugment(nn.Module):
    """Apply the policies in order (a list, or one comma-separated string); empty is the identity."""

    def __init__(self, policy: str | Sequence[str] = ("color", "translation", "cutout")) -> None:
        super().__init__()
        names = policy.split(",") if isinstance(policy, str) else list(policy)
        self.policies = [p.strip() for p in names if p.strip()]
        unknown = set(self.policies) - set(POLICIES)
        if unknown:
            raise ValueError(f"unknown DiffAugment policies {sorted(unknown)}: choose from {', '.join(POLICIES)}")

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"DiffAugment takes images [N, C, H, W]; got {list(x.shape)} (2D data: leave it off)")
        for policy in self.policies:
            x = {"color": color, "translation": translation, "cutout": cutout}[policy](x, generator=generator)
        return x
