"""DCGAN networks: shapes for every supported size, the paper's init, and clear errors."""

import pytest
import torch

from gankit.networks.dcgan import Discriminator, Generator, check_resolution


@pytest.mark.parametrize("resolution", [16, 32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes(resolution, channels):
    g = Generator(latent_dim=16, resolution=resolution, channels=channels, base_width=4)
    d = Discriminator(resolution=resolution, channels=channels, base_width=4)
    images = g(torch.randn(5, 16))
    assert images.shape == (5, channels, resolution, resolution)
    assert images.abs().max() <= 1.0  # tanh output
    assert d(images).shape == (5,)


def test_widths_follow_the_paper_at_64():
    g = Generator(latent_dim=100, resolution=64, channels=3, base_width=64)
    widths = [m.out_channels for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert widths == [512, 256, 128, 64, 3]
    d = Discriminator(resolution=64, channels=3, base_width=64)
    assert [m.out_channels for m in d.modules() if isinstance(m, torch.nn.Conv2d)] == [64, 128, 256, 512, 1]


def test_init_is_normal_with_std_002():
    torch.manual_seed(0)
    g = Generator(latent_dim=100, resolution=64, base_width=64)
    weights = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)])
    assert weights.mean().abs() < 1e-3
    assert weights.std().item() == pytest.approx(0.02, rel=0.02)


def test_critic_without_batch_norm():
    d = Discriminator(resolution=32, channels=3, base_width=8, batch_norm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())


@pytest.mark.parametrize("resolution", [8, 24, 28, 100])
def test_unbuildable_resolution_is_refused(resolution):
    with pytest.raises(ValueError, match=f"powers? of two from 16.*got resolution={resolution}"):
        check_resolution(resolution)
    with pytest.raises(ValueError, match="data.resolution"):
        Generator(resolution=resolution)


def test_shape_checks_at_the_boundaries():
    g, d = Generator(latent_dim=8, resolution=16, base_width=4), Discriminator(resolution=16, channels=3, base_width=4)
    with pytest.raises(ValueError, match=r"z of shape \[N, 8\]"):
        g(torch.randn(2, 9))
    with pytest.raises(ValueError, match=r"images of shape \[N, 3, 16, 16\]"):
        d(torch.randn(2, 1, 16, 16))
