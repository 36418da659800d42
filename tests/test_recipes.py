"""Every recipe trains a few steps through the real train(); recipes that cannot fit the data fail at start."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gankit.training import train
from tests.test_training import read_metrics

RECIPES = {
    "dcgan": [],
    "lsgan": [],
    "dcgan_minimax": [],
    "wgan_gp": [],
    "sngan": ["data.resolution=32"],
    "gan_mlp": ["data=ring"],
    "dcgan+pack+r1+augment": [
        "model.pack=2",
        "model.r1_gamma=1.0",
        "model.r1_every=2",
        "model.augment=[color,translation,cutout]",
        "model.discriminator.spectral_norm=true",
    ],
    "gan_mlp+pack": ["data=ring", "model=gan_mlp", "model.pack=4"],
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
    if model == "wgan_gp":
        assert any(r.get("train/gradient_penalty") for r in rows)
        ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=False)
        g_state, d_state = (opt["state"][0] for opt in ckpt["optimizer_states"])
        assert int(d_state["step"]) == 5 * int(g_state["step"])  # n_critic = 5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.pack=3"], "model.pack=3 does not divide data.batch_size=8"),
        (["model=sngan", "data.resolution=16"], "SNGAN ResNets are defined at resolutions 32, 64, 128; got 16"),
        (["data=ring", "model.augment=[translation]"], "DiffAugment\\) transforms images"),
        (["model.gp_weight=-1"], "model.gp_weight must be positive"),
        (["model.discriminator.pack=1", "model.pack=2"], "model.pack=2 but the discriminator takes 1"),
    ],
)
def test_recipes_that_cannot_work_fail_at_start(cfg_factory, overrides, message):
    cfg = cfg_factory("metrics=none", *overrides)
    with pytest.raises(SystemExit, match=message):
        train(cfg)
    assert not list(Path(cfg.paths.output_dir).glob("checkpoints/*"))
