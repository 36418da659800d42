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


def test_fused_adam_under_fp16_clips_unscaled_gradients(cfg_factory):
    """On CUDA Adam is fused; Lightning then skips unscale_, so gankit unscales before clipping and logging:
    the logged gradient norms match a bf16 run's (no scaler) in size, not 2^16 times larger."""
    norms = {}
    for precision in ("16-mixed", "bf16-mixed"):
        cfg = cfg_factory("trainer.accelerator=gpu", f"trainer.precision={precision}", "g_steps=6",
                          "model.d_clip_norm=1000.0", "metrics=none")  # fmt: skip
        train(cfg)
        rows = [r for r in read_metrics(Path(cfg.paths.output_dir)) if r.get("train/d_grad_norm")]
        norms[precision] = max(float(r["train/d_grad_norm"]) for r in rows)
    assert norms["16-mixed"] < 20 * norms["bf16-mixed"]


def test_resume_on_the_gpu_with_deterministic_kernels(cfg_factory):
    """What holds on a GPU: an epoch-boundary resume with trainer.deterministic=true ends at the same weights."""
    from tests.test_exact_resume import _assert_same_run, _final

    common = ["trainer.accelerator=gpu", "trainer.deterministic=true", "g_steps=null", "metrics=none",
              "data=ring", "model=gan_mlp", "data.num_samples=256", "data.batch_size=64"]  # fmt: skip
    straight = cfg_factory(*common, "trainer.max_epochs=4")
    train(straight)
    first = cfg_factory(*common, "trainer.max_epochs=2")
    train(first)
    resumed = cfg_factory(
        *common, "trainer.max_epochs=4", f"ckpt_path={Path(first.paths.output_dir) / 'checkpoints/last.ckpt'}"
    )
    train(resumed)
    _assert_same_run(_final(straight), _final(resumed))


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_ada_and_lecam_train_on_cuda_in_mixed_precision(cfg_factory, precision):
    """ADA's grid_sample and colour matrices and LeCam's averages on the GPU under autocast: finite losses, p moves
    (it is read on the device, no sync), the averages are finite."""
    cfg = cfg_factory("trainer.accelerator=gpu", f"trainer.precision={precision}", "g_steps=8", "metrics=none",
                      "data.limit=256", "model=dcgan_ada_lecam", "model.ada.interval=1", "model.ada.kimg=0.05",
                      "model.lecam.start=1")  # fmt: skip
    train(cfg)
    state = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert float(state["augment_pipe.p"]) > 0
    assert torch.isfinite(state["lecam.ema_real"]) and torch.isfinite(state["lecam.ema_fake"])
    rows = read_metrics(Path(cfg.paths.output_dir))
    assert all(torch.isfinite(torch.tensor(float(r["train/d_loss"]))) for r in rows if r.get("train/d_loss"))


@pytest.mark.parametrize(
    ("precision", "extra"),
    [("16-mixed", ["model.generator.conv_clamp=256", "model.discriminator.conv_clamp=256"]), ("bf16-mixed", []),
     ("32-true", ["model.compile=true"])],
    ids=["fp16_clamped", "bf16", "compiled"],
)  # fmt: skip
def test_stylegan2_trains_on_cuda(cfg_factory, precision, extra):
    """StyleGAN2's pure-PyTorch layers under fp16 (activations clamped), bf16 and torch.compile, with style mixing,
    lazy R1 and the path-length step: finite losses, and the path-length mean and w_avg move."""
    cfg = cfg_factory("trainer.accelerator=gpu", f"trainer.precision={precision}", "model=stylegan2", "g_steps=8",
                      "metrics=none", "data.resolution=32", "model.path_length.every=2", "model.r1_every=2",
                      *extra)  # fmt: skip
    train(cfg)
    state = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert float(state["path_length.mean"]) > 0 and torch.isfinite(state["path_length.mean"])
    assert (
        torch.isfinite(state["generator.mapping_net.w_avg"]).all()
        and state["generator.mapping_net.w_avg"].abs().sum() > 0
    )
    rows = read_metrics(Path(cfg.paths.output_dir))
    assert all(torch.isfinite(torch.tensor(float(r["train/g_loss"]))) for r in rows if r.get("train/g_loss"))
