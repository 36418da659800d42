"""Every recipe trains a few steps through the real train(); recipes that cannot fit the data fail at start."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gankit.training import train
from tests.conftest import write_images
from tests.test_training import read_metrics

RECIPES = {
    "dcgan": [],
    "lsgan": [],
    "dcgan_minimax": [],
    "wgan_gp": [],
    "sngan": ["data.resolution=32"],
    "gan_mlp": ["data=ring"],
    "gan_mlp_r1": ["data=ring"],
    "dcgan+pack+r1+augment": [
        "model.pack=2",
        "model.r1_gamma=1.0",
        "model.r1_every=2",
        "model.augment=[color,translation,cutout]",
        "model.discriminator.spectral_norm=true",
    ],
    "gan_mlp+pack": ["data=ring", "model=gan_mlp", "model.pack=4"],
    "gan_mlp+top_k": ["data=ring", "model.top_k={decay:0.5,min_fraction:0.3}", "data.num_samples=80", "g_steps=30"],
    "cgan": ["data.resolution=32"],
    "cgan_dcgan": [],
    "cgan_mlp": ["data=ring"],
    "cgan_dcgan+wgan_gp_penalty": ["model.loss=wasserstein", "model.gp_weight=10", "model.r1_gamma=1"],
}


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_trains(cfg_factory, recipe):
    model = recipe.split("+")[0]
    cfg = cfg_factory(f"model={model}", "metrics=none", *RECIPES[recipe])
    train(cfg)
    rows = read_metrics(Path(cfg.paths.output_dir))
    losses = [float(r["train/d_loss"]) for r in rows if r.get("train/d_loss")]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    if "r1" in recipe:
        assert any(r.get("train/r1_penalty") for r in rows)
    if model == "gan_mlp_r1":  # the learning rates decay linearly to 0 over the run's g_steps
        ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
        assert [opt["param_groups"][0]["lr"] for opt in ckpt["optimizer_states"]] == [0.0, 0.0]
        assert any(r.get("train/r1_penalty") for r in rows)
    if "top_k" in recipe:  # 10 batches an epoch: the share halves every epoch, down to min_fraction
        fractions = [float(r["train/top_k_fraction"]) for r in rows if r.get("train/top_k_fraction")]
        assert fractions[0] == 1.0 and 0.5 in fractions and fractions[-1] == pytest.approx(0.3)
    if model == "wgan_gp":
        assert any(r.get("train/gradient_penalty") for r in rows)
        ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
        g_state, d_state = (opt["state"][0] for opt in ckpt["optimizer_states"])
        assert int(d_state["step"]) == 5 * int(g_state["step"])  # n_critic = 5


def assert_penalties_settle(rows: list[dict], model: str, recipe: str) -> None:
    """Under fp16 the first steps may overflow (a GradScaler skips them: non-finite loss); then all is finite."""
    d_loss = torch.tensor([float(r["train/d_loss"]) for r in rows if r.get("train/d_loss")])
    assert len(d_loss) >= 10 and torch.isfinite(d_loss[-5:]).all() and torch.isfinite(d_loss).float().mean() >= 0.5
    key = "train/gradient_penalty" if model == "wgan_gp" else "train/r1_penalty" if "r1" in recipe else None
    if key:
        values = torch.tensor([float(r[key]) for r in rows if r.get(key)])
        assert len(values) >= 5 and torch.isfinite(values[-5:]).all() and (values[-5:] > 0).all()


FP16_ON_CPU = (  # fp16 autocast + a GradScaler on the CPU: what 16-mixed does on a GPU (Lightning refuses it on CPU)
    "trainer.precision=null",
    "+trainer.plugins=[{_target_: lightning.pytorch.plugins.MixedPrecision, precision: 16-mixed, device: cpu, "
    "scaler: {_target_: torch.amp.GradScaler, device: cpu}}]",
)


@pytest.mark.parametrize("recipe", ["wgan_gp", "dcgan+r1"])
def test_penalty_recipes_train_in_fp16_with_a_grad_scaler(cfg_factory, recipe):
    """The penalties' scaled gradients overflow in the first steps (scale 2^16); the scaler skips those steps
    and lowers its scale, the guard lets them pass, and training goes on with finite penalties."""
    model = recipe.split("+")[0]
    extra = ["model.r1_gamma=1.0"] if "r1" in recipe else []
    cfg = cfg_factory(f"model={model}", "metrics=none", "g_steps=20", *FP16_ON_CPU, *extra)
    train(cfg)
    run = Path(cfg.paths.output_dir)
    assert_penalties_settle(read_metrics(run), model, recipe)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["MixedPrecision"]["scale"] < 2.0**16  # some steps overflowed and were skipped


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.pack=3"], "model.pack=3 does not divide data.batch_size=8"),
        (["model=sngan", "data.resolution=16"], "SNGAN ResNets are defined at resolutions 32, 64, 128; got 16"),
        (["data=ring", "model.augment=[translation]"], "DiffAugment\\) transforms images"),
        (["model.gp_weight=-1"], "model.gp_weight must be positive"),
        (["model.top_k={decay:2}"], "model.top_k takes decay .per epoch. and min_fraction, both in"),
        (["model.discriminator.pack=1", "model.pack=2"], "model.pack=2 but the discriminator takes 1"),
        (["model=cgan_dcgan", "model.pack=2"], "a conditional model takes pack=1"),
        (
            ["model=cgan_mlp", "data=ring", "model.num_classes=5"],
            "the model is conditioned on 5 classes, but the data has 8",
        ),
    ],
)
def test_recipes_that_cannot_work_fail_at_start(cfg_factory, overrides, message):
    cfg = cfg_factory("metrics=none", *overrides)
    with pytest.raises(SystemExit, match=message):
        train(cfg)
    assert not list(Path(cfg.paths.output_dir).glob("checkpoints/*"))


def test_conditional_evaluation_and_samples_use_balanced_labels(cfg_factory):
    cfg = cfg_factory("model=cgan_dcgan")  # the digits metrics, on class-balanced samples
    train(cfg)
    rows = [r for r in read_metrics(Path(cfg.paths.output_dir)) if r.get("val/modes")]
    assert len(rows) == 2


def trained_module(cfg):
    """The run's GANModule with its last checkpoint's weights."""
    from hydra.utils import instantiate

    module = instantiate(cfg.model)
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    module.load_state_dict(ckpt["state_dict"])
    return module


def test_conditional_generation_respects_the_requested_class(cfg_factory):
    """cgan_mlp on the ring, labels = modes: a sample asked for mode k lands nearest to mode k."""
    from gankit.data.mixtures import mixture_means
    from gankit.metrics.features import MixtureFeatures

    cfg = cfg_factory(
        "model=cgan_mlp",
        "data=ring",
        "metrics=none",
        "g_steps=300",
        "data.batch_size=100",
        "model.generator.width=64",
        "model.discriminator.width=64",
        "model.g_optimizer.lr=1e-3",
        "model.d_optimizer.lr=1e-3",
    )
    train(cfg)
    module = trained_module(cfg)
    labels = torch.arange(800) % 8
    points = module.sample(torch.randn(800, module.latent_dim), ema=False, labels=labels)
    features = MixtureFeatures()
    features.means, features.std = mixture_means("ring")
    assert (features(points).modes == labels).float().mean() > 0.5  # chance: 1/8


def test_a_conditional_model_on_unlabeled_images_fails_at_start(cfg_factory, tmp_path):
    write_images(tmp_path / "imgs", 8, size=(20, 20))
    cfg = cfg_factory("model=cgan_dcgan", "data=image_folder", f"data.root={tmp_path / 'imgs'}", "data.batch_size=4")
    with pytest.raises(SystemExit, match="this model is conditional, but the data has no labels"):
        train(cfg)


def test_infogan_q_loss_falls(cfg_factory):
    cfg = cfg_factory("model=infogan", "metrics=none", "g_steps=80", "data.batch_size=32")
    train(cfg)
    losses = [float(r["train/info_loss"]) for r in read_metrics(Path(cfg.paths.output_dir)) if r.get("train/info_loss")]
    assert len(losses) >= 70  # logged at (nearly) every step
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert first > 2.0  # ~ log(10) for the categorical code at the start
    assert last < 0.8 * first  # G and Q learn to keep the codes recoverable (about 2.3 -> 1.5 here)


@pytest.mark.slow
def test_conditional_dcgan_draws_the_requested_digit(cfg_factory):
    """cgan_dcgan on the embedded MNIST: the digits classifier reads the requested class (about 2 min on 2 cores)."""
    from gankit.metrics.digits import load_digits_net

    cfg = cfg_factory(
        "model=cgan_dcgan",
        "metrics=none",
        "g_steps=500",
        "data.resolution=32",
        "data.batch_size=64",
        "model.generator.base_width=32",
        "model.discriminator.base_width=32",
        "model.generator.latent_dim=64",
    )
    train(cfg)
    module = trained_module(cfg)
    labels = torch.arange(500) % 10
    predicted = load_digits_net().classify(module.sample(torch.randn(500, 64), ema=False, labels=labels)).argmax(1)
    assert (predicted == labels).float().mean() > 0.3  # chance: 0.1; measured 0.61


@pytest.mark.parametrize(
    ("experiment", "extra"),
    [
        ("ring", ["metrics.evaluation.num_samples=64"]),
        ("grid", ["metrics.evaluation.num_samples=64"]),
        ("stacked_mnist", ["metrics.evaluation.num_samples=64"]),
        ("dcgan_celeba64", []),
        ("sngan_celeba64", ["data.resolution=32"]),  # debug=fast shrinks images to 16, below SNGAN's 32
    ],
)
def test_experiments_compose_and_run_a_few_steps(cfg_factory, tmp_path, inception_weights, experiment, extra):
    if "celeba" in experiment:
        write_images(tmp_path / "data" / "celeba" / "img_align_celeba", 8)
        extra = [
            *extra,
            f"data.root={tmp_path / 'data'}",
            "data.batch_size=4",
            f"metrics.evaluation.features.weights_path={inception_weights}",
            "metrics.evaluation.num_samples=8",
        ]
    cfg = cfg_factory(f"experiment={experiment}", f"paths.cache_dir={tmp_path / 'cache'}", *extra)
    assert cfg.task_name == "debug"  # debug=fast comes last: a smoke run of the pinned recipe
    train(cfg)
    assert [r for r in read_metrics(Path(cfg.paths.output_dir)) if r.get("val/modes") or r.get("val/fid")]
