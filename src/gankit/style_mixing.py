"""Style mixing regularisation (Karras et al. 2019; NVlabs/stylegan2-ada-pytorch training/loss.py, run_G).

With probability p a training batch's styles switch, at a crossover layer drawn uniformly from
1..num_ws-1, from one latent's w to a second latent's: the layers after the crossover take the
second. G cannot then rely on neighbouring layers' styles being correlated. Randomness: the
training stream (the crossover from the global generator, the second latents from the device's).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def style_based(generator: nn.Module) -> bool:
    """Whether G has per-layer styles: `mapping` (z -> ws) and `synthesis` (ws -> images), as StyleGAN2's."""
    return hasattr(generator, "mapping") and hasattr(generator, "synthesis")


def check_style_mixing(generator: nn.Module, probability: float | None) -> float:
    """The mixing probability, checked: in [0, 1], and only for a style-based generator (mapping + synthesis)."""
    if probability is None or probability == 0:
        return 0.0
    if isinstance(probability, bool) or not isinstance(probability, (int, float)) or not 0 <= probability <= 1:
        raise ValueError(f"model.style_mixing is a probability in [0, 1], got {probability!r}")
    if not style_based(generator):
        raise ValueError(
            f"model.style_mixing={probability} needs a style-based generator (model=stylegan2); "
            f"{type(generator).__module__}.{type(generator).__name__} has no per-layer styles: "
            "set model.style_mixing=null"
        )
    return float(probability)


def mixed_styles(generator: nn.Module, z: Tensor, y: Tensor | None, probability: float) -> Tensor:
    """ws [N, num_ws, w_dim] for latents z: G's mapping, with the layers from a random crossover on taken from
    fresh latents' w (one crossover for the batch) with the given probability."""
    ws = generator.mapping(z, y)
    num_ws = ws.shape[1]
    if probability > 0 and num_ws > 1 and float(torch.rand(())) < probability:
        cutoff = int(torch.randint(1, num_ws, ()))
        second = generator.mapping(torch.randn_like(z), y, update_w_avg=False)
        ws = torch.cat([ws[:, :cutoff], second[:, cutoff:]], dim=1)
    return ws
