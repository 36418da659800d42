"""What only a CUDA device can check: the penalties and the recipes under mixed precision.

Deselected by default (pyproject: `-m 'not slow and not gpu'`); on a machine with a GPU:
    python -m pytest -m gpu tests/test_gpu.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from gankit.networks.dcgan import Discriminator
from gankit.regularizers import gradient_penalty, input_gradient, r1_penalty
from gankit.training import train
from tests.test_recipes import assert_penalties_settle
from tests.test_training import read_metrics

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _needs_cuda():
    if not torch.cuda.is_available():
        pytest.fail("the gpu tests need a CUDA device (run them with -m gpu on a machine that has one)")


class Quiet(nn.Module):
    """A DCGAN critic whose logits are scaled down, so that its input gradients underflow in fp16."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.net = Discriminator(32, channels=3, base_width=16, batch_norm=False)
        self.scale = scale

    def forward(self, x):
        return self.net(x) * self.scale


def test_input_gradients_under_fp16_autocast_need_and_get_the_loss_scale():
    """The penalties' input gradient under fp16 autocast + GradScaler equals fp32; unscaled it underflows."""
    torch.manual_seed(0)
    critic = Quiet(scale=1e-4).cuda()  # input gradients ~1e-9: below fp16's smallest subnormal
    x = torch.randn(16, 3, 32, 32, device="cuda")

    def gradient(scaler=None):
        inputs = x.clone().requires_grad_(True)
        return input_gradient(critic(inputs), inputs, scaler)

    reference = gradient()  # fp32
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**12)
    with torch.autocast("cuda", dtype=torch.float16):
        scaled, unscaled = gradient(scaler), gradient()
    error = lambda g: ((g - reference).norm() / reference.norm()).item()  # noqa: E731
    assert scaled.dtype == torch.float32
    assert error(scaled) < 0.05  # fp16 arithmetic, so not to fp32's precision
    assert error(unscaled) > 0.3

    with torch.autocast("cuda", dtype=torch.float16):
        penalties = [r1_penalty(critic, x, scaler), gradient_penalty(critic, x, x.flip(0), scaler)]
    torch.testing.assert_close(penalties[0], r1_penalty(critic, x), rtol=0.1, atol=0)
    critic.zero_grad()
    scaler.scale(sum(penalties)).backward()  # the penalties' own gradient reaches the weights, finite
    grads = [p.grad for p in critic.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


RECIPES = {
    "wgan_gp": [],
    "gan_mlp_r1": ["data=ring"],
    "dcgan+r1": ["model.r1_gamma=1.0", "model.r1_every=2"],
    "sngan": ["data.resolution=32"],
}


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipes_train_in_mixed_precision_on_cuda(cfg_factory, recipe, precision):
    model = recipe.split("+")[0]
    cfg = cfg_factory(
        f"model={model}", "trainer.accelerator=gpu", f"trainer.precision={precision}", "g_steps=20", *RECIPES[recipe]
    )
    torch.cuda.reset_peak_memory_stats()
    train(cfg)
    assert torch.cuda.max_memory_allocated() > 0  # it ran on the GPU (debug=fast alone would pick the CPU)
    rows = read_metrics(Path(cfg.paths.output_dir))
    assert_penalties_settle(rows, model, recipe)
    # The evaluation ran on the GPU and produced a number.
    assert any(r.get("val/modes") or r.get("val/fid") for r in rows)
