"""Building blocks against hand-computed values: gradient penalty, R1, packing, spectral norm, DiffAugment."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gankit.augment import DiffAugment, cutout, translation
from gankit.networks.common import apply_spectral_norm
from gankit.networks.dcgan import Discriminator, Generator
from gankit.regularizers import gradient_penalty, pack, r1_penalty


class Linear(nn.Module):
    """D(x) = w . x: its input gradient is w everywhere."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return x.flatten(1) @ self.w


def square(x):
    """D(x) = sum x^2: input gradient 2x."""
    return x.flatten(1).pow(2).sum(1)


def test_gradient_penalty_of_a_linear_critic_is_closed_form():
    w = torch.tensor([3.0, 4.0])  # ||w|| = 5
    penalty = gradient_penalty(Linear(w), torch.randn(8, 2), torch.randn(8, 2))
    assert penalty.item() == pytest.approx((5 - 1) ** 2)


def test_gradient_penalty_at_the_interpolates():
    real, fake = torch.randn(6, 1, 2, 2), torch.randn(6, 1, 2, 2)
    alpha = torch.rand(6, 1, 1, 1, generator=torch.Generator().manual_seed(3))
    mixed = alpha * real + (1 - alpha) * fake
    expected = ((2 * mixed).flatten(1).norm(dim=1) - 1).pow(2).mean()
    got = gradient_penalty(square, real, fake, generator=torch.Generator().manual_seed(3))
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_penalties_reach_the_weights_and_are_correct_under_a_grad_scaler():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    critic = Linear(w.data.clone())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    scaled = gradient_penalty(critic, torch.randn(4, 2), torch.randn(4, 2), scaler)
    assert scaled.item() == pytest.approx(16.0, rel=1e-6)  # the scale is taken out again
    scaled.backward()  # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    torch.testing.assert_close(critic.w.grad, 2 * 4 * w.data / 5)


def test_r1_penalty_is_closed_form():
    real = torch.randn(5, 3)
    assert r1_penalty(square, real).item() == pytest.approx((4 * real.pow(2).sum(1)).mean().item(), rel=1e-6)


def test_packing_groups_consecutive_samples_along_channels():
    x = torch.arange(4 * 2 * 3 * 3, dtype=torch.float32).reshape(4, 2, 3, 3)
    packed = pack(x, 2)
    assert packed.shape == (2, 4, 3, 3)
    torch.testing.assert_close(packed[1], torch.cat([x[2], x[3]]))
    torch.testing.assert_close(pack(torch.arange(6.0).reshape(3, 2), 3), torch.arange(6.0).reshape(1, 6))
    with pytest.raises(ValueError, match="cannot be packed in groups of model.pack=3"):
        pack(x, 3)
    d = Discriminator(16, channels=2, base_width=4, pack=2)
    assert d(pack(torch.randn(4, 2, 16, 16), 2)).shape == (2,)  # one logit per pack
    with pytest.raises(ValueError, match="expected images of shape"):
        d(torch.randn(4, 2, 16, 16))  # unpacked


def test_spectral_norm_bounds_the_largest_singular_value():
    torch.manual_seed(0)
    d = apply_spectral_norm(Discriminator(32, channels=3, base_width=8))
    for layer in (m for m in d.modules() if isinstance(m, nn.Conv2d)):
        nn.init.normal_(layer.parametrizations.weight.original, std=1.0)  # far from norm 1 before SN
    for _ in range(30):  # one power iteration per training forward
        d(torch.randn(4, 3, 32, 32))
    for layer in (m for m in d.modules() if isinstance(m, nn.Conv2d)):
        sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=0.05)


def test_diffaugment_keeps_gradients_flowing_to_the_generator():
    torch.manual_seed(0)
    g, d = Generator(8, 16, 1, 4), Discriminator(16, 1, 4)
    d(DiffAugment()(g(torch.randn(4, 8)))).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters() if p.requires_grad)


def test_translation_and_cutout_move_or_blank_pixels_only():
    x = torch.arange(1.0, 2 * 1 * 8 * 8 + 1).reshape(2, 1, 8, 8)  # every pixel distinct, none zero
    moved = translation(x, generator=torch.Generator().manual_seed(1))
    for i in range(2):  # each output pixel is a pixel of the same image, or the zero border
        assert set(moved[i].unique().tolist()) - {0.0} <= set(x[i].unique().tolist())
    cut = cutout(x, generator=torch.Generator().manual_seed(2))
    blank = cut == 0
    assert ((cut == x) | blank).all() and 0 < blank[0].sum() <= 16  # a 4x4 square, clipped at the border
    assert torch.equal(DiffAugment("")(x), x)
    with pytest.raises(ValueError, match="unknown DiffAugment policies"):
        DiffAugment("colour")


def test_r1_from_the_d_steps_own_pass_equals_a_separate_pass():
    """The module hands R1 the D step's logits on the real batch: same penalty, same D gradient, one pass less."""
    torch.manual_seed(0)
    critic = Discriminator(16, channels=1, base_width=4, batch_norm=False)
    real = torch.randn(8, 1, 16, 16)
    separate = r1_penalty(critic, real)
    (grads_separate,) = [torch.autograd.grad(separate, list(critic.parameters()))]
    leaf = real.clone().requires_grad_(True)
    shared = r1_penalty(critic, leaf, output=critic(leaf))
    (grads_shared,) = [torch.autograd.grad(shared, list(critic.parameters()))]
    torch.testing.assert_close(shared, separate)
    for a, b in zip(grads_shared, grads_separate, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("penalty", ["r1", "gp"])
def test_penalties_through_in_place_activations_equal_out_of_place_ones(penalty):
    """D's LeakyReLUs work in place (MLP and DCGAN); a penalty's double backward through them gives the
    same parameter gradients as through out-of-place ones."""
    from gankit.networks.mlp import Discriminator as MLPDiscriminator

    torch.manual_seed(0)
    real, fake = torch.randn(16, 2), torch.randn(16, 2)
    in_place = MLPDiscriminator(dim=2, width=32, depth=3)
    assert [m.inplace for m in in_place.modules() if isinstance(m, nn.LeakyReLU)] == [True] * 3
    out_of_place = MLPDiscriminator(dim=2, width=32, depth=3)
    out_of_place.load_state_dict(in_place.state_dict())
    for module in out_of_place.modules():
        if isinstance(module, nn.LeakyReLU):
            module.inplace = False
    grads = []
    for d in (in_place, out_of_place):
        if penalty == "r1":
            value = r1_penalty(d, real)
        else:
            value = gradient_penalty(d, real, fake, generator=torch.Generator().manual_seed(1))
        weights = [p for name, p in d.named_parameters() if name.endswith("weight")]  # biases: no input gradient
        grads.append(torch.autograd.grad(value, weights))
    for a, b in zip(*grads, strict=True):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=0, atol=0)
