"""Limited data and generalisation: the subset / held-out split, ADA, LeCam, D's gap, C_T and the critic,
against the reference formulas (../shared/FIELD_NOTES.md: stylegan2-ada-pytorch, google/lecam-gan,
casey-meehan/data-copying, towards_gan_benchmarks) and scipy."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from gankit import ada
from gankit.ada import AdaptiveAugment
from gankit.data.split import split_indices
from gankit.lecam import LeCam, lecam_penalty
from gankit.metrics.generalization import DGap, copying_statistic, mann_whitney_u, z_u
from gankit.training import train

# ---- the split ----------------------------------------------------------------------------------


def test_a_limit_is_a_fixed_stratified_subset_and_the_rest_is_held_out():
    labels = torch.arange(10).repeat_interleave(500)  # the embedded digits: sorted by label
    train_idx, held = split_indices(5000, 500, None, labels, seed=0)
    assert len(train_idx) == 500 and len(held) == 4500
    assert not set(train_idx.tolist()) & set(held.tolist())
    assert torch.bincount(labels[train_idx]).tolist() == [50] * 10  # stratified
    again, _ = split_indices(5000, 500, None, labels, seed=0)
    other, _ = split_indices(5000, 500, None, labels, seed=1)
    assert torch.equal(train_idx, again) and not torch.equal(train_idx, other)
    small, held = split_indices(5000, 250, 1000, labels, seed=0)
    assert torch.bincount(labels[small]).tolist() == [25] * 10 and len(held) == 1000
    assert torch.bincount(labels[held]).tolist() == [100] * 10
    rest, held = split_indices(5000, None, 1000, None, seed=0)  # no limit: 1,000 held out, 4,000 trained on
    assert len(rest) == 4000 and len(held) == 1000


@pytest.mark.parametrize(
    ("limit", "holdout", "says"),
    [(6000, None, "data.limit=6000 is more than"), (500, 4600, "data.holdout=4600 is more than"),
     (None, 5000, "data.holdout=5000 leaves no image")],
)  # fmt: skip
def test_split_sizes_that_cannot_be_refuse_with_the_key(limit, holdout, says):
    with pytest.raises(ValueError, match=says):
        split_indices(5000, limit, holdout, None, seed=0)


def test_the_mnist_datamodule_trains_on_the_subset_and_holds_out_the_rest(cfg_factory):
    dm = instantiate(cfg_factory("data.limit=500").data)
    dm.setup("fit")
    assert len(dm.train_set) == 500 and len(dm.heldout_set) == 4500
    assert torch.bincount(dm.train_labels()).tolist() == [50] * 10
    full = instantiate(cfg_factory().data)
    assert full.identity() == dm.identity()  # the whole set's (prepared caches): a new limit prepares nothing again
    assert full.split_identity() != dm.split_identity() != dm.split_identity("heldout")  # real-feature caches
    assert dm.split_identity() == instantiate(cfg_factory("data.limit=500").data).split_identity()


# ---- ADA ----------------------------------------------------------------------------------------


def test_ada_with_p_zero_is_the_identity_and_p_one_augments_every_image():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 16, 16) * 2 - 1
    assert torch.allclose(AdaptiveAugment(target=0.6)(x), x, atol=1e-5)  # p starts at 0
    out = AdaptiveAugment(p=1.0)(x)
    assert out.shape == x.shape and (out - x).flatten(1).abs().amax(1).min() > 1e-3


def test_ada_blit_transforms_are_exact_pixel_moves():
    """x-flip, 90-degree rotation and integer translation resample exactly (sampling points on pixel centres)."""
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    n = len(x)
    flip = ada.scale2d(-torch.ones(n), torch.ones(n))
    assert torch.allclose(ada.apply_geometric(x, flip), x.flip(3), atol=1e-4)
    quarter = ada.rotate2d(torch.full((n,), math.pi / 2))
    assert torch.allclose(ada.apply_geometric(x, quarter), torch.rot90(x, 1, (2, 3)), atol=1e-4) or torch.allclose(
        ada.apply_geometric(x, quarter), torch.rot90(x, -1, (2, 3)), atol=1e-4
    )
    shift = ada.translate2d(torch.full((n,), 2.0), torch.zeros(n))  # output pixel (i, j) reads input (i, j + 2)
    assert torch.allclose(ada.apply_geometric(x, shift)[..., :6], x[..., 2:], atol=1e-4)


def test_ada_colour_matrix_matches_the_reference_constructions():
    """Brightness adds b to each channel; luma flip negates the part along the grey axis (I - 2 v v^T); saturation
    s scales the part off the grey axis; hue rotates about it (the reference's 4x4 matrices)."""
    rgb = torch.tensor([[0.2, -0.4, 0.6]])
    v = torch.ones(3) / math.sqrt(3)
    grey = (rgb @ v)[:, None] * v
    x = rgb[:, :, None, None]
    b = ada.translate3d(torch.tensor([0.3]))
    assert torch.allclose(ada.apply_color(x, b).flatten(), rgb.flatten() + 0.3)
    vv = torch.outer(F.pad(v, (0, 1)), F.pad(v, (0, 1)))
    flip = (torch.eye(4) - 2 * vv)[None]
    assert torch.allclose(ada.apply_color(x, flip).flatten(), (rgb - 2 * grey).flatten(), atol=1e-6)
    saturate = (vv + (torch.eye(4) - vv) * 2.0)[None]
    assert torch.allclose(ada.apply_color(x, saturate).flatten(), (grey + 2 * (rgb - grey)).flatten(), atol=1e-6)
    hue = ada.rotate3d(v, torch.tensor([2 * math.pi / 3]))  # a third of a turn about grey permutes r, g, b
    out = ada.apply_color(x, hue).flatten()
    assert torch.allclose(out.sort().values, rgb.flatten().sort().values, atol=1e-5)


def test_a_fixed_p_is_the_configs_after_loading_a_checkpoint():
    adaptive = AdaptiveAugment()
    adaptive.p.fill_(0.48)
    fixed = AdaptiveAugment(p=0.9)
    fixed.load_state_dict(adaptive.state_dict())
    assert float(fixed.p) == pytest.approx(0.9)
    resumed = AdaptiveAugment()
    resumed.load_state_dict(adaptive.state_dict())
    assert float(resumed.p) == pytest.approx(0.48)  # an adaptive p goes on from the checkpoint's


def test_ada_is_differentiable_in_the_images():
    x = torch.rand(4, 1, 16, 16, requires_grad=True)
    AdaptiveAugment(p=0.8)(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_ada_controller_follows_the_reference_update():
    """r_t = mean sign(D(aug(x_real))) over `interval` steps; p += sign(r_t - target) * batch * interval /
    (kimg * 1000), clamped to [0, 1]."""
    augment = AdaptiveAugment(target=0.6, interval=4, kimg=0.5)
    for step in range(1, 5):
        augment.accumulate(torch.tensor([1.0, 1.0, 1.0, -1.0]))  # r_t = 0.5 < 0.6: p goes down, clamped at 0
        augment.adjust(step, batch=4)
    assert float(augment.rt) == pytest.approx(0.5) and float(augment.p) == 0.0
    for step in range(5, 9):
        augment.accumulate(torch.tensor([1.0, 1.0, 1.0, 1.0]))  # r_t = 1: up by 4 * 4 / 500
        augment.adjust(step, batch=4)
    assert float(augment.p) == pytest.approx(4 * 4 / 500)
    assert {"p", "signs", "rt"} <= set(augment.state_dict())  # in the checkpoint
    fixed = AdaptiveAugment(interval=2, p=0.3)  # an ablation: r_t measured and logged, p untouched
    for step in (1, 2):
        fixed.accumulate(torch.tensor([1.0, -1.0, 1.0, 1.0]))
        fixed.adjust(step, batch=4)
    assert float(fixed.rt) == pytest.approx(0.5) and float(fixed.p) == pytest.approx(0.3)


# ---- LeCam --------------------------------------------------------------------------------------


def test_lecam_penalty_and_averages_follow_the_authors_code():
    d_real, d_fake = torch.tensor([1.0, 3.0]), torch.tensor([-2.0, 0.5])
    assert float(lecam_penalty(d_real, d_fake, torch.tensor(0.5), torch.tensor(1.0))) == pytest.approx(
        (0 + 4) / 2 + (2.5**2 + 0) / 2
    )
    lecam = LeCam(weight=0.3, decay=0.9, start=2)
    assert lecam(d_real, d_fake, g_steps=0) is None  # before start: the averages track the means, no term
    assert float(lecam.ema_real) == 2.0 and float(lecam.ema_fake) == -0.75
    term = lecam(d_real, d_fake, g_steps=2)
    assert float(lecam.ema_real) == pytest.approx(2.0) and float(lecam.ema_fake) == pytest.approx(-0.75)
    expected = 0.3 * lecam_penalty(d_real, d_fake, torch.tensor(2.0), torch.tensor(-0.75))
    assert float(term) == pytest.approx(float(expected))
    lecam(d_real + 1, d_fake, g_steps=3)
    assert float(lecam.ema_real) == pytest.approx(0.9 * 2.0 + 0.1 * 3.0)


# ---- generalisation metrics ---------------------------------------------------------------------


def test_mann_whitney_u_and_z_match_scipy():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(40, generator=g).round(decimals=1), torch.randn(55, generator=g).round(decimals=1)
    assert mann_whitney_u(a, b) == pytest.approx(scipy.stats.mannwhitneyu(a.numpy(), b.numpy()).statistic)
    m, n = len(a), len(b)
    u = scipy.stats.mannwhitneyu(a.numpy(), b.numpy()).statistic
    assert z_u(a, b) == pytest.approx((u - (n * m / 2 - 0.5)) / math.sqrt(n * m * (n + m + 1) / 12))


def _mixture(n: int, g: torch.Generator) -> torch.Tensor:
    centres = torch.randn(10, 8, generator=torch.Generator().manual_seed(1)) * 4
    return centres[torch.randint(10, (n,), generator=g)] + torch.randn(n, 8, generator=g)


def test_copying_statistic_flags_a_copier_and_not_fresh_samples():
    g = torch.Generator().manual_seed(0)
    train, heldout, fresh = _mixture(500, g), _mixture(2000, g), _mixture(2000, g)
    copier = train[torch.randint(500, (2000,), generator=g)] + 1e-3 * torch.randn(2000, 8, generator=g)
    fresh_ct, _ = copying_statistic(train, heldout, fresh, cells=20)
    copier_ct, _ = copying_statistic(train, heldout, copier, cells=20)
    assert abs(fresh_ct) < 2 and copier_ct < -5


def test_d_gap_is_the_difference_of_means():
    gap = DGap()
    gap.update(torch.tensor([1.0, 3.0]), heldout=False)
    gap.update(torch.tensor([0.0, 1.0, 2.0]), heldout=True)
    assert float(gap.compute()) == pytest.approx(1.0)


# ---- through train() ----------------------------------------------------------------------------


def test_ada_and_lecam_train_log_and_resume_with_their_state(cfg_factory):
    cfg = cfg_factory(
        "g_steps=4", "metrics=none", "data.limit=200", "model.ada={interval: 1, kimg: 0.1}",
        "model.lecam={weight: 0.3, decay: 0.9, start: 1}", "trainer.log_every_n_steps=1",
    )  # fmt: skip
    train(cfg)
    state = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert {"augment_pipe.p", "augment_pipe.signs", "lecam.ema_real", "lecam.ema_fake"} <= set(state)
    assert float(state["augment_pipe.p"]) > 0  # D wins early on 200 digits: p rose


def test_generalisation_metrics_and_the_critic_through_a_run(cfg_factory):
    """data.limit holds out the rest; d_gap, copying and (at the end) the critic are logged as val/<name>, FID
    compares against the held-out digits (the protocol says so), and the critic's numbers repeat for a seed."""
    from tests.test_training import read_metrics

    cfg = cfg_factory(
        "g_steps=4", "data.limit=300", "data.holdout=400", "metrics.evaluation.num_samples=200",
        "metrics.evaluation.metrics=[fid,d_gap,copying]", "metrics.evaluation.copying_cells=5",
        "metrics.critic.enabled=true", "metrics.critic.steps=5", "metrics.critic.batch_size=32",
    )  # fmt: skip
    train(cfg)
    rows = read_metrics(Path(cfg.paths.output_dir))
    last = {k: v for row in rows for k, v in row.items() if v not in ("", None)}
    for key in ("val/fid", "val/d_gap", "val/copying", "val/critic", "val/critic_train"):
        assert key in last and math.isfinite(float(last[key])), key

    from gankit.checkpoints import load_module

    _, module, _ = load_module(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt",
                               cfg.paths, torch.device("cpu"))  # fmt: skip
    from gankit.critic import judge_generator

    dm = instantiate(cfg.data)
    dm.setup("fit")
    first = judge_generator(module, dm, 1000, 0, steps=3, batch_size=32)
    again = judge_generator(module, dm, 1000, 0, steps=3, batch_size=32)
    assert first["critic"] == again["critic"] and first["critic_train"] == again["critic_train"]

    # eval.py critic=only: the run's critic settings (steps from critic_steps) on the checkpoint, nothing else
    from hydra import compose, initialize_config_dir

    from gankit.evaluate import evaluate
    from tests.conftest import ROOT

    out = Path(cfg.paths.output_dir) / "eval"
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        overrides = [f"ckpt_path={Path(cfg.paths.output_dir) / 'checkpoints' / 'last.ckpt'}", "critic=only"]
        overrides += ["critic_steps=3", f"paths.output_dir={out}", f"paths.cache_dir={cfg.paths.cache_dir}"]
        evaluate(compose("eval", overrides=overrides))
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["metrics"]) == {"val/critic", "val/critic_train", "val/critic_seconds"}
    expected = judge_generator(module, dm, 10000, cfg.seed, steps=3, batch_size=32)
    assert report["metrics"]["val/critic"] == pytest.approx(expected["critic"], rel=1e-5)


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["data.limit=0"], "data.limit must be a whole number"),
        (["data.limit=9000"], "data.limit=9000 is more than the 5000"),
        (["data.limit=500", "data.holdout=4600"], "data.holdout=4600 is more than"),
        (["metrics.evaluation.metrics=[fid,copying]"], "compare against held-out data"),
        (["data.limit=4950", "metrics.evaluation.metrics=[fid,d_gap]"], "at least 100 images"),
        (["model.ada={target: 1.5}"], "model.ada.target must be in (0, 1)"),
        (["data=ring", "model.ada={target: 0.6}", "metrics=none"], "model.ada (adaptive augmentation)"),
        (["data=ring", "data.limit=100"], "data.limit is for image sets"),
        (["metrics.critic.enabled=true"], "metrics.critic trains on held-out data"),
        (["data=ring", "metrics.evaluation.metrics=[modes,copying]"], "set data.holdout=M (M fresh draws"),
    ],
)
def test_bad_limited_data_input_is_one_message_naming_the_key(cfg_factory, overrides, says):
    cfg = cfg_factory("g_steps=2", *overrides)
    with pytest.raises(SystemExit, match="gankit: error: .*" + re.escape(says)):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()  # nothing trained


def test_a_resume_with_another_split_is_refused(cfg_factory):
    """A checkpoint knows the subset it was trained on: resumed with another data.limit / data.seed, the held-out
    set would hold images D trained on, so the run stops at start with one message."""
    first = cfg_factory("g_steps=2", "metrics=none", "data.limit=200")
    train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    other = cfg_factory("g_steps=4", "metrics=none", "data.limit=200", "data.seed=1", f"ckpt_path={last}")
    with pytest.raises(SystemExit, match="gankit: error: the checkpoint was trained on data.limit"):
        train(other)
    same = cfg_factory("g_steps=4", "metrics=none", "data.limit=200", f"ckpt_path={last}")
    train(same)  # the same split resumes


def test_d_gap_packs_whole_groups(cfg_factory):
    """PacGAN's D judges groups of `pack`: d_gap scores whole groups only (a remainder would not pack)."""
    cfg = cfg_factory("data=ring", "data.holdout=150", "model.pack=4", "metrics.evaluation.metrics=[modes,d_gap]",
                      "metrics.evaluation.num_samples=200", "g_steps=2")  # fmt: skip
    train(cfg)


def test_ada_and_lecam_state_resumes_bit_exactly(cfg_factory):
    """p, the r_t sums (saved mid-interval) and LeCam's averages are in the checkpoint: 2 + 3 generator steps
    resumed from last.ckpt give the same weights and state as 5 straight."""
    common = ("metrics=none", "data.limit=64", "model=dcgan_ada_lecam", "model.ada.interval=3", "model.ada.kimg=0.05",
              "model.lecam.start=1")  # fmt: skip
    straight = cfg_factory("g_steps=5", *common)
    train(straight)
    first = cfg_factory("g_steps=2", *common)
    train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    resumed = cfg_factory("g_steps=5", *common, f"ckpt_path={last}")
    train(resumed)

    def state(cfg):
        return torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]

    a, b = state(straight), state(resumed)
    assert a.keys() == b.keys() and float(a["augment_pipe.p"]) > 0
    for key in a:
        assert torch.equal(a[key], b[key]), key
