"""Metrics against independent references: prdc, scipy's Frechet distance, closed-form KL."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch
from prdc import compute_prdc
from torchmetrics.image.fid import FrechetInceptionDistance

from gankit.data.mnist import load_embedded_digits, to_unit_range
from gankit.metrics.digits import DigitsNet, load_digits_net
from gankit.metrics.manifold import DensityCoverage, PrecisionRecall
from gankit.metrics.modes import ClassModes


def features(n: int, d: int, shift: float, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(shift, 1.0, size=(n, d)).astype(np.float32))


@pytest.mark.parametrize("shift", [0.0, 0.5])
def test_manifold_metrics_match_prdc(shift):
    real, fake = features(600, 16, 0.0, 1), features(500, 16, shift, 2)
    pr, dc = PrecisionRecall(k=5), DensityCoverage(k=5)
    for metric in (pr, dc):
        metric.update(real[:300], real=True)
        metric.update(real[300:], real=True)  # several updates concatenate
        metric.update(fake, real=False)
    ours = {**pr.compute(), **dc.compute()}
    reference = compute_prdc(real.numpy(), fake.numpy(), nearest_k=5)
    for key in ("precision", "recall", "density", "coverage"):
        assert ours[key].item() == pytest.approx(reference[key], abs=1e-9), key


def test_collapsed_generator_scores_low_and_perfect_one_high():
    real = features(1000, 8, 0.0, 1)
    collapsed = real[:1].repeat(1000, 1) + 1e-4 * features(1000, 8, 0.0, 3)  # one output, repeated
    perfect = features(1000, 8, 0.0, 4)  # another draw from the real distribution
    scores = {}
    for name, fake in (("collapsed", collapsed), ("perfect", perfect)):
        pr, dc = PrecisionRecall(), DensityCoverage()
        for metric in (pr, dc):
            metric.update(real, real=True)
            metric.update(fake, real=False)
        scores[name] = {**pr.compute(), **dc.compute()}
    assert scores["collapsed"]["recall"] < 0.01 and scores["collapsed"]["coverage"] < 0.05
    assert scores["perfect"]["recall"] > 0.6 and scores["perfect"]["coverage"] > 0.9
    assert scores["perfect"]["precision"] > 0.6 and 0.8 < scores["perfect"]["density"] < 1.2


def scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def test_torchmetrics_fid_on_digit_features_matches_scipy():
    images, _ = load_embedded_digits()
    x = to_unit_range(images, 32)
    net = load_digits_net()
    fid = FrechetInceptionDistance(feature=net)
    real, fake = x[:2500], torch.flip(x[2500:], dims=[3])  # mirrored digits: a clearly different distribution
    fid.update(real, real=True)
    fid.update(fake, real=False)
    with torch.no_grad():
        reference = scipy_frechet(net(real).double().numpy(), net(fake).double().numpy())
    assert fid.compute().item() == pytest.approx(reference, rel=1e-3)
    assert reference > 1.0


def test_class_modes_against_scipy():
    predicted = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    metric = ClassModes(num_classes=10)
    metric.update(predicted[:40])
    metric.update(predicted[40:])
    result = metric.compute()
    p = np.array([0.5, 0.3, 0.2] + [0.0] * 7)
    assert result["modes"].item() == 3
    assert result["mode_kl"].item() == pytest.approx(scipy.stats.entropy(p, np.full(10, 0.1)), rel=1e-9)
    one = ClassModes(10)
    one.update(torch.full((100,), 7))
    assert one.compute()["mode_kl"].item() == pytest.approx(np.log(10))


def test_digits_classifier_accuracy_on_held_out_digits():
    """At least 97% on the 1,000 held-out digits (the last 100 of each class), at the training sizes."""
    images, labels = load_embedded_digits()
    held_out = torch.arange(len(labels)) % 500 >= 400
    net = load_digits_net()
    for resolution in (28, 32):
        with torch.no_grad():
            predicted = net.classify(to_unit_range(images[held_out], resolution)).argmax(1)
        assert (predicted == labels[held_out]).float().mean().item() >= 0.97


def test_digits_features_refuse_colour_images():
    with pytest.raises(ValueError, match="metrics=inception"):
        DigitsNet()(torch.zeros(2, 3, 32, 32))


@pytest.mark.slow
def test_digits_classifier_training_is_deterministic(tmp_path, monkeypatch):
    """Re-running the training script reproduces the shipped weights' accuracy (about 2 minutes)."""
    import scripts.train_digits_classifier as script

    monkeypatch.setattr(script, "WEIGHTS", tmp_path / "digits.pt")
    assert script.main() >= 0.97
