"""scripts/fit_probe.py: the supervised probe of a generator alone (README, StyleGAN2)."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

import scripts.fit_probe as fit_probe
from gankit.networks.dcgan import Generator as DCGANGenerator
from gankit.networks.stylegan2 import Generator as StyleGAN2Generator


def test_digits_are_a_fixed_draw_in_the_unit_range() -> None:
    a, b = fit_probe.digits(8, 32, seed=0), fit_probe.digits(8, 32, seed=0)
    assert a.shape == (8, 1, 32, 32) and torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1 and a.std() > 0.3  # digits, not a blank image
    assert not torch.equal(a, fit_probe.digits(8, 32, seed=1))


def test_the_probe_fits_digits_with_either_kind_of_generator() -> None:
    """The MSE curve falls for a DCGAN G (called as G(z)) and a StyleGAN2 G (noise off): both paths run."""
    target = fit_probe.digits(8, 16, seed=0)
    adam = OmegaConf.create({"lr": 2e-3, "betas": [0.5, 0.99]})
    torch.manual_seed(0)
    dcgan = DCGANGenerator(latent_dim=16, resolution=16, channels=1, base_width=16)
    curve = fit_probe.probe("dcgan", dcgan, 16, target, adam, steps=50, seed=0)
    assert len(curve) == 2 and curve[1] < curve[0] / 3
    torch.manual_seed(0)
    style = StyleGAN2Generator(16, 16, resolution=16, channels=1, channel_base=64, channel_max=16, mapping_layers=1)
    curve = fit_probe.probe("stylegan2", style, 16, target, adam, steps=50, seed=0)
    assert curve[1] < curve[0] / 3
