"""Pieces the network families share."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) on every conv, linear and embedding layer, in place.

    Each weight is divided by its largest singular value, estimated by one power iteration per
    forward pass in training mode (the estimate's vectors are buffers: they travel in checkpoints).
    """
    for name, child in module.named_children():
        if isinstance(child, (nn.Conv2d, nn.Linear, nn.Embedding)):
            setattr(module, name, spectral_norm(child))
        else:
            apply_spectral_norm(child)
    return module


def check_pack(pack: int) -> int:
    if int(pack) != pack or pack < 1:
        raise ValueError(f"model.pack (samples per discriminator input, PacGAN) must be an integer >= 1, got {pack}")
    return int(pack)


def check_labels(y: Tensor | None, num_classes: int | None, n: int) -> Tensor | None:
    """Labels [n] in 0..num_classes-1 for a conditional network, None for an unconditional one."""
    if num_classes is None:
        if y is not None:
            raise ValueError("this network is unconditional but was given labels (set num_classes to condition it)")
        return None
    if y is None or y.shape != (n,):
        raise ValueError(
            f"this conditional network needs labels of shape [{n}], got {None if y is None else list(y.shape)}"
        )
    return y


def one_hot(y: Tensor, num_classes: int, like: Tensor) -> Tensor:
    return F.one_hot(y.long(), num_classes).to(like.dtype)
