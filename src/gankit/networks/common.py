"""Pieces the network families share."""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) on every conv and linear layer of `module`, in place.

    Each weight is divided by its largest singular value, estimated by one power iteration per
    forward pass in training mode (the estimate's vectors are buffers: they travel in checkpoints).
    """
    for name, child in module.named_children():
        if isinstance(child, (nn.Conv2d, nn.Linear)):
            setattr(module, name, spectral_norm(child))
        else:
            apply_spectral_norm(child)
    return module


def check_pack(pack: int) -> int:
    if int(pack) != pack or pack < 1:
        raise ValueError(f"model.pack (samples per discriminator input, PacGAN) must be an integer >= 1, got {pack}")
    return int(pack)
