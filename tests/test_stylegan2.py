"""StyleGAN2: its layers and training blocks against their definitions (shared/FIELD_NOTES.md, read from
NVlabs/stylegan2-ada-pytorch), and the recipe through the real entry points."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gankit.ema import GeneratorEMA, half_life_beta
from gankit.networks.stylegan2 import Discriminator, Generator
from gankit.networks.stylegan2_layers import MinibatchStd, downsample2d, modulated_conv2d, resample_filter, upsample2d
from gankit.path_length import PathLength, lazy_corrected
from gankit.style_mixing import check_style_mixing, mixed_styles
from gankit.training import train
from tests.conftest import make_cfg, run_cli


def tiny_g(**kwargs) -> Generator:
    torch.manual_seed(0)
    settings = dict(latent_dim=8, w_dim=8, resolution=16, channels=1, channel_base=64, channel_max=16, mapping_layers=2)
    return Generator(**{**settings, **kwargs})


# ---- layers ----------------------------------------------------------------------------------------
def test_modulated_conv_is_a_per_sample_conv_with_scaled_demodulated_weights():
    """w'_{n,o,i} = w_{o,i} s_{n,i}; demodulated: w' / sqrt(sum_{i,k} w'^2 + 1e-8); a conv per sample."""
    torch.manual_seed(0)
    x, weight, styles = torch.randn(3, 5, 7, 7), torch.randn(4, 5, 3, 3), torch.randn(3, 5)
    for demodulate in (True, False):
        out = modulated_conv2d(x, weight, styles, demodulate=demodulate, padding=1)
        for n in range(3):
            w = weight * styles[n][None, :, None, None]
            if demodulate:
                w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
            torch.testing.assert_close(out[n : n + 1], F.conv2d(x[n : n + 1], w, padding=1), rtol=1e-5, atol=1e-5)


def test_upsampling_modulated_conv_is_nvlabs_generic_path():
    """NVlabs' conv2d_resample(up=2) reference path: zeros between the pixels, padding (3, 2), the [1,3,3,1]
    filter with gain 4, then an unpadded 3x3 conv per sample (flipped kernel: flip_weight=False there).
    Padding once, before the filter, is what makes the border pixels see the values just outside the grid."""
    torch.manual_seed(0)
    x, weight, styles, f = torch.randn(3, 5, 6, 6), torch.randn(4, 5, 3, 3), torch.randn(3, 5), resample_filter()
    out = modulated_conv2d(x, weight, styles, demodulate=True, up_filter=f)
    assert out.shape == (3, 4, 12, 12)
    zeros_between = torch.zeros(3, 5, 12, 12)
    zeros_between[:, :, ::2, ::2] = x
    padded = F.pad(zeros_between, [3, 2, 3, 2])
    filtered = F.conv2d(padded, (f * 4).expand(5, 1, 4, 4), groups=5)  # [3, 5, 14, 14]
    for n in range(3):
        w = weight * styles[n][None, :, None, None]
        w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        expected = F.conv2d(filtered[n : n + 1], w.flip([2, 3]))
        torch.testing.assert_close(out[n : n + 1], expected, rtol=1e-5, atol=1e-5)
    # filtering first and zero-padding the 3x3 conv afterwards agrees inside and not on the border ring
    w = weight * styles[0][None, :, None, None]
    w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
    pad_after = F.conv2d(filtered[:1, :, 1:-1, 1:-1], w.flip([2, 3]), padding=1)
    torch.testing.assert_close(pad_after[..., 1:-1, 1:-1], out[:1, :, 1:-1, 1:-1], rtol=1e-5, atol=1e-5)
    assert (pad_after[..., 0, :] - out[:1, :, 0, :]).abs().max() > 1e-2


def test_demodulation_gives_unit_output_variance_for_unit_variance_input():
    torch.manual_seed(0)
    x = torch.randn(64, 32, 24, 24)  # i.i.d. unit variance
    out = modulated_conv2d(x, torch.randn(16, 32, 3, 3), torch.randn(64, 32) * 3 + 1, padding=0)
    per_channel = out.var(dim=[0, 2, 3])  # each output channel: sum_{i,k} w'^2 Var(x) = 1
    assert per_channel.sub(1).abs().max() < 0.05, per_channel


def test_resampling_filter_keeps_constants_and_halves_or_doubles_the_size():
    f = resample_filter()
    torch.testing.assert_close(f, torch.tensor([1.0, 3, 3, 1]).outer(torch.tensor([1.0, 3, 3, 1])) / 64)
    x = torch.full((1, 2, 8, 8), 3.0)
    up, down = upsample2d(x, f), downsample2d(x, f)
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    torch.testing.assert_close(up[:, :, 2:-2, 2:-2], torch.full_like(up[:, :, 2:-2, 2:-2], 3.0))  # mean kept (gain 4)
    torch.testing.assert_close(down[:, :, 1:-1, 1:-1], torch.full_like(down[:, :, 1:-1, 1:-1], 3.0))


def test_minibatch_std_is_the_within_group_std_averaged():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4)
    out = MinibatchStd(group_size=4)(x)
    assert out.shape == (8, 4, 4, 4)
    for member in range(2):  # NVlabs' grouping: sample i in group i % (N / G)
        group = x[member::2]
        expected = (group.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        torch.testing.assert_close(out[member::2, 3], expected.expand(4, 4, 4))
    odd = MinibatchStd(4).eval()(torch.randn(6, 3, 4, 4))  # eval (metrics): groups of 3, 6's largest divisor <= 4
    assert odd.shape == (6, 4, 4, 4) and odd[:, 3].unique().numel() == 2
    with pytest.raises(ValueError, match="mbstd_group=4, and this batch has 6"):
        MinibatchStd(4)(torch.randn(6, 3, 4, 4))  # training: a batch the group does not divide is refused
    three = MinibatchStd(4)(torch.randn(3, 3, 4, 4))  # fewer samples than the group: one group of all of them
    assert float(three[0, 3, 0, 0]) > 0.1
    with pytest.raises(ValueError, match="mbstd_group must be an integer >= 1"):
        MinibatchStd(-1)


def test_generator_and_discriminator_shapes_widths_and_the_equalised_learning_rate():
    g = Generator(
        latent_dim=16, w_dim=16, resolution=32, channels=3, channel_base=256, channel_max=32, mapping_layers=3
    )
    assert g(torch.randn(2, 16)).shape == (2, 3, 32, 32)
    assert g.num_ws == 2 * 4 - 1 + 1  # 4x4: one conv; 8, 16, 32: two each; plus the last toRGB
    assert [b.convs[-1].weight.shape[0] for b in g.blocks] == [32, 32, 16, 8]  # min(256 // res, 32)
    mapping = g.mapping_net.net[0]
    assert mapping.weight_gain == pytest.approx(0.01 / math.sqrt(16))  # lr multiplier 0.01 over the fan-in (z_dim)
    assert mapping.weight.std().item() == pytest.approx(100, rel=0.1)  # stored ~ N(0, 1) / 0.01
    assert all(float(layer.noise_strength) == 0 for b in g.blocks for layer in b.convs)  # noise starts off
    d = Discriminator(resolution=32, channels=3, channel_base=256, channel_max=32, pack=2)
    assert d(torch.randn(4, 6, 32, 32)).shape == (4,)
    conditional = Discriminator(resolution=16, channels=1, channel_base=64, channel_max=16, num_classes=3)
    assert conditional(torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 0])).shape == (4,)


# ---- the latent space ------------------------------------------------------------------------------
def test_mapping_tracks_w_avg_and_truncation_psi_0_returns_it():
    g = tiny_g()
    z = torch.randn(32, 8)
    w = g.mapping_net(z, update_w_avg=False)
    g.mapping(z)  # training mode: w_avg <- lerp(mean w, w_avg, 0.995)
    torch.testing.assert_close(g.w_avg, w.mean(0) * 0.005)
    g.eval()
    ws = g.mapping(torch.randn(5, 8), truncation_psi=0.0)
    torch.testing.assert_close(ws, g.w_avg.expand(5, g.num_ws, -1))
    half = g.mapping(z[:5], truncation_psi=0.5)[:, 0]
    torch.testing.assert_close(half, g.w_avg + 0.5 * (w[:5] - g.w_avg))
    images = g(torch.randn(3, 8), truncation_psi=0.0)  # eval: fixed noise, so one image for every z
    torch.testing.assert_close(images, images[:1].expand(3, -1, -1, -1))


def test_style_mixing_changes_exactly_the_layers_after_the_crossover():
    g = tiny_g()
    z = torch.randn(4, 8)
    plain = g.mapping(z, update_w_avg=False)
    torch.manual_seed(3)
    mixed = mixed_styles(g, z, None, probability=1.0)
    same = [torch.equal(mixed[:, i], plain[:, i]) for i in range(g.num_ws)]
    cutoff = same.index(False)
    assert 1 <= cutoff < g.num_ws and all(same[:cutoff]) and not any(same[cutoff:])
    # in the synthesis network, the layers reading ws[:, < cutoff] compute the same activations
    g.eval()
    outputs = {}
    layers = [layer for block in g.blocks for layer in (*block.convs,)]
    hooks = [
        m.register_forward_hook(lambda m, i, o, k=k: outputs.setdefault(k, []).append(o)) for k, m in enumerate(layers)
    ]
    g.synthesis(plain), g.synthesis(mixed)
    for hook in hooks:
        hook.remove()
    for k in range(len(layers)):
        assert torch.equal(*outputs[k]) == (k < cutoff), k  # conv k reads ws[:, k]
    assert torch.equal(mixed_styles(g, z, None, probability=0.0), g.mapping(z, update_w_avg=False))


def test_style_mixing_on_another_generator_is_refused():
    from gankit.networks.dcgan import Generator as DCGAN

    with pytest.raises(ValueError, match="model.style_mixing=0.9 needs a style-based generator"):
        check_style_mixing(DCGAN(resolution=16, channels=1, base_width=4), 0.9)
    with pytest.raises(ValueError, match=r"model.style_mixing is a probability in \[0, 1\]"):
        check_style_mixing(tiny_g(), 1.5)


# ---- training blocks -------------------------------------------------------------------------------
def test_path_length_penalty_equals_a_direct_jacobian_computation():
    """a_n = sqrt(mean_layers ||J_n^T y_n||^2), J_n = d x_n / d ws_n; penalty = weight * every * E[(a - mean)^2]
    with mean moved first: mean <- mean + decay * (E[a] - mean)."""
    g = tiny_g().eval()
    ws = g.mapping(torch.randn(3, 8)).detach().requires_grad_(True)
    images = g.synthesis(ws, noise_mode="const")
    noise = torch.randn_like(images) / 16
    pl = PathLength(weight=2.0, decay=0.01, every=4)
    pl.mean.fill_(0.3)
    penalty = pl(images, ws, noise)
    lengths = []
    for n in range(3):
        jac = torch.autograd.functional.jacobian(lambda w: g.synthesis(w[None], noise_mode="const")[0], ws[n].detach())
        jty = (jac * noise[n][..., None, None]).sum(dim=[0, 1, 2])  # [num_ws, w_dim]
        lengths.append(jty.square().sum(1).mean().sqrt())
    a = torch.stack(lengths)
    mean = 0.3 + 0.01 * (a.mean() - 0.3)
    torch.testing.assert_close(pl.mean, mean.detach())
    torch.testing.assert_close(penalty, (a - mean).square().mean() * 2.0 * 4, rtol=1e-4, atol=1e-6)
    penalty.backward()  # differentiable: it trains G
    assert g.blocks[0].convs[0].weight.grad is not None


def test_lazy_correction_of_learning_rate_and_betas():
    from functools import partial

    corrected = lazy_corrected(partial(torch.optim.Adam, lr=0.0025, betas=(0.0, 0.99), eps=1e-8), every=4)
    opt = corrected([torch.nn.Parameter(torch.zeros(1))])
    group = opt.param_groups[0]
    assert group["lr"] == pytest.approx(0.0025 * 4 / 5) and group["eps"] == 1e-8
    assert group["betas"] == pytest.approx((0.0, 0.99 ** (4 / 5)))
    default_betas = lazy_corrected(partial(torch.optim.Adam, lr=1e-3), every=16)([torch.nn.Parameter(torch.zeros(1))])
    assert default_betas.param_groups[0]["betas"] == pytest.approx((0.9 ** (16 / 17), 0.999 ** (16 / 17)))


def test_stylegan_ema_beta_and_update():
    """beta = 0.5 ** (batch / min(ema_kimg * 1000, images_seen * rampup)) (NVlabs' training_loop.py)."""
    assert half_life_beta(64, 100_000, kimg=20, rampup=0.05) == pytest.approx(0.5 ** (64 / 5000))  # ramp-up binds
    assert half_life_beta(64, 1_000_000, kimg=20, rampup=0.05) == pytest.approx(0.5 ** (64 / 20000))
    assert half_life_beta(64, 100, kimg=20, rampup=None) == pytest.approx(0.5 ** (64 / 20000))
    assert half_life_beta(64, 0, kimg=20, rampup=0.05) == 0.0  # the first update (0 images before it): a copy
    live = torch.nn.Linear(2, 2)
    ema = GeneratorEMA(live, decay=None, kimg=20, rampup=0.05)
    before = ema.module.weight.clone()
    with torch.no_grad():
        live.weight.add_(1.0)
    ema.update(live, step=1, batch=64, images_seen=100_000)
    beta = 0.5 ** (64 / 5000)
    torch.testing.assert_close(ema.module.weight, beta * before + (1 - beta) * live.weight.detach())


# ---- through train() ---------------------------------------------------------------------------------
def test_stylegan2_trains_with_every_block_and_optimizer_correction(cfg_factory):
    cfg = cfg_factory("model=stylegan2", "metrics=none", "g_steps=5", "model.path_length.every=2")
    train(cfg)
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 10  # 5 G + 5 D steps: the path-length steps are not counted
    state = ckpt["state_dict"]
    assert float(state["path_length.mean"]) > 0 and state["generator.mapping_net.w_avg"].abs().sum() > 0
    g_group = ckpt["optimizer_states"][0]["param_groups"][0]
    assert g_group["lr"] == pytest.approx(0.0025 * 2 / 3) and g_group["betas"][1] == pytest.approx(0.99 ** (2 / 3))
    assert ckpt["optimizer_states"][1]["param_groups"][0]["lr"] == pytest.approx(0.0025)  # D: R1 fused, no correction
    g_state = ckpt["optimizer_states"][0]["state"]
    assert int(next(iter(g_state.values()))["step"]) == 5 + 3  # + path length on G steps 0, 2, 4
    assert "generator_ema.module.mapping_net.w_avg" in state


def test_stylegan2_resumes_bit_exactly_with_every_statistic(cfg_factory):
    """w_avg, the path-length mean, StyleGAN's EMA and the optimizers' extra steps: 2 + 3 generator steps
    resumed from last.ckpt equal 5 straight."""
    common = ("model=stylegan2", "metrics=none", "model.path_length.every=2", "model.r1_every=3")
    straight = cfg_factory("g_steps=5", *common)
    train(straight)
    first = cfg_factory("g_steps=2", *common)
    train(first)
    resumed = cfg_factory(
        "g_steps=5", *common, f"ckpt_path={Path(first.paths.output_dir) / 'checkpoints' / 'last.ckpt'}"
    )
    train(resumed)

    def state(cfg):
        return torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]

    a, b = state(straight), state(resumed)
    assert a.keys() == b.keys() and "path_length.mean" in a
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.generator.mapping_layers=0"], "model.generator.mapping_layers must be an integer >= 1"),
        (["model.generator.channel_base=96"], "channel_base (and the discriminator's) must be a power of two"),
        (["model.generator.channel_max=48"], "channel_max (and the discriminator's) must be a power of two"),
        (["model.generator.channel_base=8"], "model.generator.channel_base=8 leaves no channel at 16x16"),
        (["data.resolution=24"], "StyleGAN2 builds square images of side 16, 32"),
        (["model=dcgan_ema", "model.style_mixing=0.9"], "model.style_mixing=0.9 needs a style-based generator"),
        (
            ["model=dcgan_ema", "model.path_length={weight:2}"],
            "of a style-based generator (model=stylegan2); Generator",
        ),
        (["model.ema_kimg=-1"], "model.ema_kimg (-1) and model.ema_rampup (0.05) must be positive"),
        (["model.ema_decay=0.999"], "model.ema_decay=0.999 and model.ema_kimg=20 are two ways to set the generator"),
        (["model=dcgan_ema", "model.ema_rampup=0.05"], "model.ema_rampup=0.05 ramps up StyleGAN's EMA"),
        (["model.style_mixing=abc"], "model.style_mixing is a probability in [0, 1], got 'abc'"),
        (["model.path_length.weight=abc"], "model.path_length.weight must be a number, got 'abc'"),
        (["model.discriminator.mbstd_group=3"], "mbstd_group=3, and this batch has 8"),
        (["model.path_length.decay=0"], "model.path_length.decay=0 is out of range"),
    ],
)
def test_bad_stylegan2_settings_are_one_message_before_training(tmp_path, overrides, message):
    base = [] if overrides[0].startswith("model=") else ["model=stylegan2"]
    cfg = make_cfg(tmp_path / "run", *base, *overrides)
    with pytest.raises(SystemExit, match=re.escape(message)):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_bad_setting_from_the_command_line_is_one_line(tmp_path):
    result = run_cli("debug=fast", "model=stylegan2", "model.generator.mapping_layers=0", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "model.generator.mapping_layers must be an integer >= 1" in result.stderr.strip().splitlines()[-1]


def test_generate_writes_the_truncation_row_style_mixing_grid_and_w_interpolation(tmp_path):
    from tests.test_generate import train_then_generate

    args = ["num_samples=4", "interpolation.rows=3", "interpolation.steps=5", "nrow=4", "truncation_psi=0.7"]
    conditional = ["model=stylegan2", "model.num_classes=10", "model.conditional=true"]  # label embedding + projection
    out = train_then_generate(tmp_path, conditional, args)
    assert (out / "classes.png").is_file()
    tile = 18  # 16 px images, 2 px padding
    assert Image.open(out / "truncation.png").size == (5 * tile + 2, 3 * tile + 2)  # psi 1 .. 0, one row per latent
    assert Image.open(out / "style_mixing.png").size == (5 * tile + 2, 4 * tile + 2)  # sources + 4 x 3 cells
    assert Image.open(out / "interpolation_w.png").size == (5 * tile + 2, 3 * tile + 2)
    truncation = np.asarray(Image.open(out / "truncation.png").convert("L"))
    last = [truncation[2 + r * tile : (r + 1) * tile, 2 + 4 * tile : 5 * tile] for r in range(3)]
    assert np.array_equal(last[0], last[1]) and np.array_equal(last[0], last[2])  # psi = 0: every row is w_avg's image
    mixing = np.asarray(Image.open(out / "style_mixing.png").convert("L"))
    assert mixing[2:tile, 2:tile].max() == 0  # the corner above the row sources is empty (black), as NVlabs' canvas
    samples = np.load(out / "samples.npy")
    assert samples.shape == (4, 1, 16, 16) and samples.min() >= -1 and samples.max() <= 1
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    for cutoff in ("0", "abc"):
        bad = run_cli(f"ckpt_path={ckpt}", f"style_mixing_cutoff={cutoff}", f"hydra.run.dir={tmp_path / 'bad'}",
                      script="generate.py", env={"GANKIT_LOG_DIR": str(tmp_path / "logs")})  # fmt: skip
        assert bad.returncode == 1 and "Traceback" not in bad.stderr
        assert "style_mixing_cutoff must be a whole number in 1..5" in bad.stderr.strip().splitlines()[-1]


def test_truncation_psi_is_checked(cfg_factory):
    from hydra.utils import instantiate

    stylegan = instantiate(cfg_factory("model=stylegan2").model)
    for bad in (1.5, -0.1, "half", True):
        with pytest.raises(ValueError, match="truncation_psi must be a number in"):
            stylegan.set_truncation(bad)
    stylegan.set_truncation(0.5)
    z = torch.randn(3, stylegan.latent_dim)
    torch.testing.assert_close(stylegan.sample(z, ema=False), stylegan.generator.eval()(z, truncation_psi=0.5))
    dcgan = instantiate(cfg_factory("model=dcgan_ema").model)
    with pytest.raises(ValueError, match="truncation_psi=0.5 needs a style-based generator"):
        dcgan.set_truncation(0.5)
    dcgan.set_truncation(1.0)


# ---- perceptual path length ------------------------------------------------------------------------
def test_ppl_slerp_follows_the_great_circle_and_scores_drop_the_outer_percentiles():
    from gankit.generate import slerp as reference_slerp
    from gankit.metrics.ppl import PathLengthScores, slerp

    a, b = torch.randn(5, 8), torch.randn(5, 8)
    t = torch.rand(5, 1)
    expected = torch.stack([reference_slerp(a[i : i + 1], b[i : i + 1], t[i])[0, 0] for i in range(5)])
    torch.testing.assert_close(slerp(a, b, t), expected / expected.norm(dim=1, keepdim=True), rtol=1e-4, atol=1e-5)
    scores = torch.rand(1000).double() * 10
    metric = PathLengthScores()
    metric.update(scores[:600].float())
    metric.update(scores[600:].float())
    values = scores.float().double().numpy()
    lo, hi = np.percentile(values, 1, method="lower"), np.percentile(values, 99, method="higher")
    assert float(metric.compute()) == pytest.approx(values[(values >= lo) & (values <= hi)].mean(), rel=1e-6)


def test_ppl_is_the_squared_directional_derivative_in_feature_space():
    """d / eps^2 converges as eps shrinks (a derivative, not noise); a G that ignores w has path length 0."""
    from gankit.metrics.ppl import feature_distance, path_lengths

    g = tiny_g().eval()
    with torch.no_grad():
        for block in g.blocks:
            for layer in block.convs:
                layer.noise_strength.fill_(0.5)  # fixed noise maps: still deterministic in eval mode
    distance = feature_distance(lambda images: images.flatten(1))
    z0, z1, t = torch.randn(6, 8), torch.randn(6, 8), torch.rand(6)
    for space in ("w", "z"):
        coarse = path_lengths(g, distance, z0, z1, t, None, space, epsilon=1e-2)
        fine = path_lengths(g, distance, z0, z1, t, None, space, epsilon=1e-3)
        assert (coarse > 0).all()
        torch.testing.assert_close(fine, coarse, rtol=0.1, atol=0)

    class Constant(torch.nn.Module):  # mapping and synthesis that ignore the latent
        def mapping(self, z, y=None):
            return z[:, None, :]

        def synthesis(self, ws, noise_mode=None, clamp=None):
            return torch.ones(len(ws), 1, 4, 4)

    zero = path_lengths(Constant(), distance, z0, z1, t, None, "w", epsilon=1e-4)
    assert torch.equal(zero, torch.zeros(6))


def test_ppl_through_training_and_refused_for_another_generator(cfg_factory, tmp_path):
    ppl = ("metrics.evaluation.metrics=[fid,ppl]", "metrics.evaluation.ppl.num_samples=16")
    cfg = cfg_factory("model=stylegan2", "g_steps=2", *ppl, "metrics.evaluation.ppl.sampling=full")
    train(cfg)
    from tests.test_training import read_metrics

    rows = [r for r in read_metrics(Path(cfg.paths.output_dir)) if r.get("val/ppl")]
    assert rows and all(float(r["val/ppl"]) > 0 for r in rows)
    with pytest.raises(SystemExit, match="has ppl .perceptual path length., which needs a style-based generator"):
        train(make_cfg(tmp_path / "dcgan", "model=dcgan_ema", *ppl))
    for i, bad in enumerate(("space=x", "num_samples=0", "epsilon=abc", "+metrics.evaluation.ppl.bogus=1")):
        override = bad if bad.startswith("+") else f"metrics.evaluation.ppl.{bad}"
        with pytest.raises(SystemExit, match="metrics.evaluation.ppl takes space in"):
            train(make_cfg(tmp_path / f"bad{i}", "model=stylegan2", *ppl, override))
