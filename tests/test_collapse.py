"""The collapse monitor: fires on collapse signals (once each, after `patience`), quiet on healthy runs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gankit.callbacks.collapse import CollapseMonitor
from gankit.training import train
from tests.test_training import read_metrics


def _values(recall, coverage, modes):
    return {"val/recall": recall, "val/coverage": coverage, "val/modes": modes}


def _feed(monitor, sequence):
    return [alert for step, values in enumerate(sequence) for alert in monitor.observe(step * 100, values)]


def test_quiet_on_a_healthy_noisy_history():
    healthy = [(0.02, 0.01, 4), (0.30, 0.20, 9), (0.50, 0.35, 10), (0.42, 0.31, 9), (0.55, 0.40, 10), (0.52, 0.38, 10)]
    assert _feed(CollapseMonitor(), [_values(*v) for v in healthy]) == []


def test_untrained_noise_below_min_best_does_not_alarm():
    assert _feed(CollapseMonitor(), [_values(0.08, 0.05, 3), _values(0.01, 0.0, 3), _values(0.0, 0.0, 3)]) == []


def test_fires_once_per_signal_on_collapse_and_again_after_recovery():
    monitor = CollapseMonitor(patience=2)
    history = [(0.6, 0.5, 10), (0.25, 0.2, 7), (0.2, 0.15, 6), (0.1, 0.1, 5)]  # collapse from step 100 on
    alerts = _feed(monitor, [_values(*v) for v in history])
    assert [(a["signal"], a["g_step"]) for a in alerts] == [("recall", 200), ("coverage", 200), ("modes", 200)]
    assert "recall fell to 0.200 from its best 0.600 at generator step 0" in alerts[0]["message"]
    # recovery clears the signals; a second collapse alerts again
    assert monitor.observe(400, _values(0.6, 0.5, 10)) == []
    again = monitor.observe(500, _values(0.1, 0.1, 10)) + monitor.observe(600, _values(0.1, 0.1, 10))
    assert {a["signal"] for a in again} == {"recall", "coverage"}


def test_modes_lost_among_too_few_good_samples_are_chance():
    monitor = CollapseMonitor(patience=1, min_per_mode=5)
    history = [{"val/modes": 8.0, "val/high_quality": 0.02}, {"val/modes": 4.0, "val/high_quality": 0.02}]
    assert [a for step, v in enumerate(history) for a in monitor.observe(step, v, num_samples=1000)] == []  # 20/8 each
    assert monitor.observe(2, {"val/modes": 4.0, "val/high_quality": 0.9}, num_samples=1000)[0]["signal"] == "modes"


def test_one_bad_evaluation_is_not_enough():
    monitor = CollapseMonitor(patience=2)
    assert _feed(monitor, [_values(0.6, 0.5, 10), _values(0.1, 0.1, 8), _values(0.55, 0.45, 10)]) == []


def test_a_discriminator_winning_outright_alerts_and_can_stop_the_run(cfg_factory, caplog):
    # the generator cannot learn (lr 0): the discriminator soon separates every fake from every real
    cfg = cfg_factory(
        "g_steps=200",
        "model.g_optimizer.lr=0",
        "metrics.collapse.d_window=5",
        "metrics.collapse.warmup_g_steps=10",
        "metrics.collapse.stop=true",
        "metrics.evaluation.every_n_g_steps=100",
    )
    with caplog.at_level(logging.WARNING, logger="gankit"):
        train(cfg)
    warnings = [r.getMessage() for r in caplog.records if "possible mode collapse" in r.getMessage()]
    assert len(warnings) == 1 and "the discriminator wins outright" in warnings[0] and "Stopping the run" in warnings[0]
    rows = read_metrics(Path(cfg.paths.output_dir))
    steps = max(int(r["step"]) for r in rows if r["step"])
    assert steps < 100  # stopped long before the 400 optimizer steps of g_steps=200
    assert any(r.get("collapse/alerts") == "1.0" for r in rows)
    assert (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").is_file()


def test_quiet_on_a_healthy_run(cfg_factory, caplog):
    cfg = cfg_factory(
        "data=ring",
        "data.batch_size=128",
        "model.generator.width=128",
        "model.generator.depth=3",
        "model.discriminator.width=128",
        "model.g_optimizer.lr=1e-3",
        "model.d_optimizer.lr=1e-3",
        "model.g_optimizer.betas=[0.5,0.999]",
        "model.d_optimizer.betas=[0.5,0.999]",
        "g_steps=300",
        "metrics.evaluation.every_n_g_steps=50",
        "metrics.evaluation.num_samples=1000",
        "metrics.collapse.d_window=50",
        "metrics.collapse.warmup_g_steps=50",
    )
    with caplog.at_level(logging.WARNING, logger="gankit"):
        train(cfg)
    assert not [r for r in caplog.records if "possible mode collapse" in r.getMessage()]
    evaluations = [r for r in read_metrics(Path(cfg.paths.output_dir)) if r.get("val/modes")]
    assert len(evaluations) == 6 and float(evaluations[-1]["val/recall"]) > 0.3  # it did learn


def test_a_discriminator_hovering_at_the_threshold_alerts_once():
    monitor = CollapseMonitor(d_auc=0.999, d_auc_clear=0.99)
    flapping = [0.9995, 0.9985, 0.9993, 0.995, 0.9999]  # crosses 0.999 three times, never falls below 0.99
    alerts = [a for i, auc in enumerate(flapping) for a in monitor.observe_auc(auc, g_step=100 * i)]
    assert [a["g_step"] for a in alerts] == [0]
    assert monitor.observe_auc(0.95, g_step=600) == []  # clears
    assert [a["g_step"] for a in monitor.observe_auc(0.9999, g_step=700)] == [700]  # and can alert again


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_drop and max_modes_lost in"):
        CollapseMonitor(max_drop=1.5)
    with pytest.raises(ValueError, match="d_auc_clear <= d_auc"):
        CollapseMonitor(d_auc=0.99, d_auc_clear=0.995)
