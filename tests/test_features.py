"""Feature spaces and the data they score: Inception offline, Stacked MNIST, 2D mixtures, KID / IS order."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gankit.callbacks.evaluation import Identity
from gankit.data.mixtures import GaussianMixture, mixture_means
from gankit.data.mnist import load_embedded_digits
from gankit.data.stacked_mnist import StackedMNIST
from gankit.metrics import features as F
from gankit.metrics.modes import ClassModes
from gankit.metrics.sampled import OrderFreeIS, OrderFreeKID
from gankit.training import train
from tests.conftest import write_images
from tests.test_training import read_metrics


@pytest.fixture
def empty_torch_hub(tmp_path, monkeypatch) -> Path:
    """torch.hub's cache pointed at an empty folder: no Inception weights anywhere."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints" / F.INCEPTION_FILE


# ---- Inception: weights found, refused, or a clear way to get them ---------------------------------
def test_inception_features_from_a_local_weights_file(inception_weights):
    features = F.InceptionFeatures(str(inception_weights), download=False)
    images = torch.rand(6, 3, 40, 40) * 2 - 1
    out = features(images)
    assert out.features.shape == (6, 2048) and out.logits.shape == (6, 1008)
    assert out.features.std() > 1e-3  # random but not degenerate
    gray = features(images[:, :1])  # grayscale is repeated to RGB
    torch.testing.assert_close(gray.features, features(images[:, :1].expand(-1, 3, -1, -1)).features)
    assert features.key()["weights_sha256"] == F.weights_digest(inception_weights)


def test_missing_inception_weights_offline_name_the_file_and_the_option(empty_torch_hub):
    with pytest.raises(FileNotFoundError) as error:
        F.resolve_inception_weights(None, download=False)
    message = str(error.value)
    assert F.INCEPTION_URL in message and str(empty_torch_hub) in message
    assert "metrics.evaluation.features.weights_path=" in message and "metrics=none" in message


def test_failed_download_ends_quickly_with_the_same_message(empty_torch_hub, monkeypatch):
    monkeypatch.setattr(F, "INCEPTION_URL", "http://127.0.0.1:9/" + F.INCEPTION_FILE)  # a closed port
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match="cannot be downloaded here"):
        F.resolve_inception_weights(None, download=True, timeout_s=5)
    assert time.monotonic() - start < 10
    assert not empty_torch_hub.exists()  # no partial file left behind


def test_weights_in_torch_hub_cache_are_found(empty_torch_hub, inception_weights):
    empty_torch_hub.parent.mkdir(parents=True)
    empty_torch_hub.symlink_to(inception_weights)
    assert F.resolve_inception_weights(None, download=False) == empty_torch_hub


def test_wrong_weights_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "weights.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not a usable InceptionV3 weights file"):
        F.InceptionFeatures(str(bad))
    with pytest.raises(FileNotFoundError, match="weights_path=.*nope.pth is not a file"):
        F.InceptionFeatures(str(tmp_path / "nope.pth"))


def _image_folder_cfg(cfg_factory, tmp_path, *overrides):
    write_images(tmp_path / "imgs", 16, size=(20, 20))
    return cfg_factory(
        "data=image_folder",
        f"data.root={tmp_path / 'imgs'}",
        "data.batch_size=4",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "metrics.evaluation.num_samples=8",
        "metrics.evaluation.batch_size=8",
        *overrides,
    )


def test_image_data_is_scored_with_inception_while_training(cfg_factory, tmp_path, inception_weights):
    cfg = _image_folder_cfg(cfg_factory, tmp_path, f"metrics.evaluation.features.weights_path={inception_weights}")
    assert cfg.metrics.evaluation.features._target_.endswith("InceptionFeatures")  # the image data's default
    train(cfg)
    rows = [r for r in read_metrics(Path(cfg.paths.output_dir)) if r.get("val/fid")]
    assert len(rows) == 2 and all(float(r["val/is"]) >= 1 - 1e-5 and r["val/kid"] for r in rows)  # IS >= 1


def test_missing_inception_weights_fail_a_run_at_start(cfg_factory, tmp_path, empty_torch_hub):
    cfg = _image_folder_cfg(cfg_factory, tmp_path, "metrics.evaluation.features.download=false")
    start = time.monotonic()
    with pytest.raises(SystemExit, match=f"Inception weights .* Fetch {F.INCEPTION_URL}"):
        train(cfg)
    assert time.monotonic() - start < 30
    assert not list(Path(cfg.paths.output_dir).glob("checkpoints/*"))  # nothing trained


# ---- Stacked MNIST -----------------------------------------------------------------------------------
def test_stacked_mnist_stacks_three_digits_and_the_features_read_them():
    dm = StackedMNIST(resolution=28, num_samples=600, seed=1, batch_size=8)
    dm.setup("fit")
    images, labels = load_embedded_digits()
    x, y = dm.train_set[5]
    a, b, c = dm.train_set.index[5]
    assert x.shape == (3, 28, 28)
    assert y == labels[a] * 100 + labels[b] * 10 + labels[c]
    torch.testing.assert_close(x[1], images[b, 0].float() / 127.5 - 1)

    batch = torch.stack([dm.train_set[i][0] for i in range(600)])
    truth = torch.stack([dm.train_set[i][1] for i in range(600)])
    modes = F.StackedDigitsFeatures()(batch).modes
    assert (modes == truth).float().mean() > 0.9  # 3 digits right at ~98% each


# ---- 2D mixtures -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ring", "grid"])
def test_mixture_data_and_its_scores_on_real_samples(kind):
    dm = GaussianMixture(kind=kind, num_samples=40_000, seed=0)
    dm.setup("fit")
    points, modes = dm.train_set.tensors
    means, std = mixture_means(kind)
    assert (points - means[modes]).std().item() == pytest.approx(std, rel=0.02)
    features = F.MixtureFeatures()
    features.check(dm)
    emb = features(points)
    assert (emb.modes == modes).all()  # modes are far apart against their std
    metric = ClassModes(len(means), report_quality=True)
    metric.update(emb.modes, emb.quality)
    scores = metric.compute()
    # a 2D Gaussian lies within 3 std of its mean with probability 1 - exp(-9/2)
    assert scores["high_quality"].item() == pytest.approx(1 - math.exp(-4.5), abs=0.003)
    assert scores["modes"].item() == len(means)
    assert scores["mode_kl"].item() < 2 * len(means) / len(points)  # ~ (K - 1) / 2N for uniform draws


def test_mixture_scores_of_a_collapsed_and_a_lost_generator():
    means, std = mixture_means("ring")
    features = F.MixtureFeatures()
    features.means, features.std = means, std
    metric = ClassModes(8, report_quality=True)
    metric.update(*_modes_and_quality(features(means[3].repeat(100, 1))))  # one mode, every time
    scores = metric.compute()
    assert scores["modes"] == 1 and scores["high_quality"] == 1
    assert scores["mode_kl"].item() == pytest.approx(math.log(8))
    far = ClassModes(8, report_quality=True)
    far.update(*_modes_and_quality(features(torch.zeros(100, 2))))  # the ring's centre: no mode
    assert far.compute()["modes"] == 0 and far.compute()["high_quality"] == 0
    assert math.isnan(far.compute()["mode_kl"])  # no high-quality sample: no histogram to compare
    half = ClassModes(8, report_quality=True)  # 2 modes, good samples split 3:1, plus junk that KL ignores
    half.update(torch.tensor([0, 0, 0, 1, 2, 3]), torch.tensor([True, True, True, True, False, False]))
    p = torch.tensor([0.75, 0.25], dtype=torch.float64)
    assert half.compute()["mode_kl"].item() == pytest.approx((p * (p * 8).log()).sum().item())
    assert half.compute()["modes"] == 2


def _modes_and_quality(embedding):
    return embedding.modes, embedding.quality


def test_points_and_images_do_not_mix(cfg_factory):
    with pytest.raises(SystemExit, match="data=ring gives 2D points, but model=dcgan makes images"):
        train(cfg_factory("data=ring", "model=dcgan"))
    with pytest.raises(SystemExit, match="metrics=mixture scores 2D Gaussian mixtures"):
        train(cfg_factory("metrics=mixture"))


# ---- KID and IS under any sample order ---------------------------------------------------------------
def test_kid_and_is_do_not_depend_on_sample_order():
    torch.manual_seed(0)
    real, fake, logits = torch.randn(200, 16), torch.randn(200, 16) + 0.3, torch.randn(200, 10)
    order = torch.randperm(200)
    values = []
    for perm in (torch.arange(200), order):
        kid = OrderFreeKID(feature=Identity(16), subset_size=50, subsets=20)
        kid.update(real[perm], real=True)
        kid.update(fake[perm], real=False)
        inception = OrderFreeIS(feature=Identity(10), splits=4)
        inception.update(logits[perm])
        torch.manual_seed(1)
        values.append((kid.compute()[0].item(), inception.compute()[0].item()))
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    assert values[0][0] > 0 and values[0][1] > 1


# ---- pictures ----------------------------------------------------------------------------------------
def _has_red(picture: torch.Tensor) -> bool:
    """tab:red (214, 39, 40) somewhere in a [3, H, W] picture."""
    rgb = (picture * 255).round()
    return bool((((rgb[0] - 214).abs() < 8) & ((rgb[1] - 39).abs() < 8) & ((rgb[2] - 40).abs() < 8)).any())


def test_mode_histogram_marks_missing_modes_and_writes_a_png(tmp_path):
    from gankit import plots

    covered = plots.mode_histogram(torch.tensor([5, 3, 4, 6]), "all", tmp_path / "all.png")
    assert covered.shape[0] == 3 and covered.min() >= 0 and covered.max() <= 1
    assert (tmp_path / "all.png").stat().st_size > 1000 and not _has_red(covered)
    missing = plots.mode_histogram(torch.tensor([5, 3, 4, 6]), "one lost", None, captured=torch.tensor([5, 0, 4, 6]))
    assert _has_red(missing)


def test_mixture_scatter_draws_the_modes(tmp_path):
    from gankit import plots

    means, std = mixture_means("grid")
    picture = plots.mixture_scatter(torch.randn(500, 2), means, std, "grid", tmp_path / "s.png")
    assert picture.shape[0] == 3 and (tmp_path / "s.png").is_file() and _has_red(picture)
    # the file holds the very pixels the loggers get (one render for both)
    saved = torch.from_numpy(np.asarray(Image.open(tmp_path / "s.png").convert("RGB")).copy()).permute(2, 0, 1)
    assert torch.equal(saved, (picture * 255).round().to(torch.uint8))
