"""The evaluation callback: metrics logged while training, the real-feature cache, DDP equality, bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gankit.callbacks.evaluation import Evaluation
from gankit.metrics.features import DigitsFeatures
from gankit.networks.dcgan import Generator
from gankit.training import train
from tests.conftest import write_images
from tests.test_training import read_metrics

VAL = {"val/fid", "val/precision", "val/recall", "val/density", "val/coverage", "val/modes", "val/mode_kl"}


def test_metrics_are_logged_at_each_evaluation_only(cfg_factory, tmp_path):
    cfg = cfg_factory(
        f"paths.cache_dir={tmp_path / 'cache'}",
        "metrics.evaluation.metrics=[fid,kid,precision_recall,density_coverage,modes]",
    )
    train(cfg)
    rows = [r for r in read_metrics(Path(cfg.paths.output_dir)) if r["val/fid"]]
    assert len(rows) == 2  # generator steps 2 and 4 (every_n_g_steps=2 in debug=fast)
    assert all(r[k] for r in rows for k in VAL | {"val/kid"})
    assert all(0 <= float(r["val/recall"]) <= 1 and 1 <= float(r["val/modes"]) <= 10 for r in rows)


def test_real_features_are_cached_and_a_corrupt_cache_is_rebuilt(cfg_factory, tmp_path):
    cache = tmp_path / "cache"
    train(cfg_factory(f"paths.cache_dir={cache}"))
    (path,) = cache.glob("real_digits_*.pt")
    cached = torch.load(path, weights_only=True)
    assert cached["features"].shape == (64, 128) and cached["key"]["reference"]["num_real"] == 64
    stamp = path.stat().st_mtime_ns
    train(cfg_factory(f"paths.cache_dir={cache}"))
    assert path.stat().st_mtime_ns == stamp  # read, not rewritten
    train(cfg_factory(f"paths.cache_dir={cache}", "data.resolution=32"))
    assert len(list(cache.glob("real_digits_*.pt"))) == 2  # another resolution, another key
    path.write_bytes(b"truncated")
    train(cfg_factory(f"paths.cache_dir={cache}"))
    torch.testing.assert_close(torch.load(path, weights_only=True)["features"], cached["features"])


def test_more_real_samples_than_the_data_has_fails_at_start(cfg_factory):
    cfg = cfg_factory("metrics.evaluation.num_real=6000")
    with pytest.raises(SystemExit, match="metrics.evaluation.num_real=6000 is more than the 5000 real samples"):
        train(cfg)
    assert not list(Path(cfg.paths.output_dir).glob("checkpoints/*.ckpt"))


def test_more_fakes_than_real_images_compare_against_the_whole_set(cfg_factory):
    """num_real=null means num_samples, at most the data's size (eval.py num_samples=10000 on 5,000 digits)."""
    cfg = cfg_factory("metrics.evaluation.num_samples=6000", "metrics.evaluation.batch_size=1000", "g_steps=1")
    train(cfg)
    rows = [r for r in read_metrics(Path(cfg.paths.output_dir)) if r.get("val/fid")]
    assert len(rows) == 1
    cached = [torch.load(p, weights_only=True) for p in Path(os.environ["GANKIT_CACHE_DIR"]).glob("real_digits_*.pt")]
    assert any(c["key"]["reference"]["num_real"] == 5000 and len(c["features"]) == 5000 for c in cached)


def test_digits_features_on_colour_images_fail_at_start(cfg_factory, tmp_path):
    write_images(tmp_path / "imgs", 8, size=(20, 20))
    cfg = cfg_factory(
        "data=image_folder",
        f"data.root={tmp_path / 'imgs'}",
        "data.batch_size=4",
        "data.num_workers=0",
        "metrics=digits",
    )
    with pytest.raises(SystemExit, match="digits features take grayscale digits, but the data has 3 channels"):
        train(cfg)


# ---- DDP: two processes give the values one process gives on the same samples ----------------
class _Module:
    """What Evaluation needs of a GANModule: a fixed generator and latents."""

    device = torch.device("cpu")
    g_steps = 0

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.generator = Generator(latent_dim=8, resolution=16, channels=1, base_width=4).eval()

    def sample_latent(self, n, generator=None):
        return torch.randn(n, 8, generator=generator)

    @torch.no_grad()
    def sample(self, z, ema=True):
        return self.generator(z)

    def broadcast_buffers(self):  # built alike on every rank: nothing to share
        pass


def _evaluation(cache: str) -> Evaluation:
    from gankit.data.mnist import load_embedded_digits, to_unit_range

    evaluation = Evaluation(
        DigitsFeatures(),
        cache,
        num_samples=96,
        batch_size=20,
        metrics=["fid", "kid", "is", "precision_recall", "density_coverage", "modes"],
    )
    images, _ = load_embedded_digits()
    evaluation.real = evaluation.features(to_unit_range(images[::50][:96], 16)).features
    return evaluation


def _ddp_worker(rank: int, world: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    results = _evaluation(out).evaluate(_Module(), rank, world)
    torch.save({k: v.item() for k, v in results.items()}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_ddp_metrics_equal_single_process(tmp_path):
    single = {k: v.item() for k, v in _evaluation(str(tmp_path)).evaluate(_Module()).items()}
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        values = torch.load(tmp_path / f"rank{rank}.pt")
        assert values.keys() == single.keys()
        for key, value in single.items():
            assert values[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (rank, key)
    assert os.path.exists(tmp_path / "rank1.pt")


def test_training_does_not_depend_on_whether_the_cache_exists(cfg_factory, tmp_path):
    """The real pass must not consume the training's random numbers: cold and warm cache train alike."""
    weights = []
    for _ in range(2):  # the first run writes the cache, the second reads it
        cfg = cfg_factory(f"paths.cache_dir={tmp_path / 'cache'}")
        train(cfg)
        ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
        weights.append(ckpt["state_dict"])
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, rtol=0, atol=0, msg=key)


def test_best_checkpoint_holds_the_weights_of_the_best_evaluation(cfg_factory, tmp_path):
    cfg = cfg_factory(f"paths.cache_dir={tmp_path / 'cache'}", "g_steps=8")  # digits: best_metric=val/fid, min
    train(cfg)
    fids = [float(r["val/fid"]) for r in read_metrics(Path(cfg.paths.output_dir)) if r["val/fid"]]
    assert len(fids) == 4 and len(set(fids)) == 4  # generator steps 2, 4, 6, 8
    best = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt", weights_only=True)
    best_step = best["global_step"] // 2  # n_critic=1: two optimizer steps per generator step
    assert best_step == 2 * (1 + fids.index(min(fids)))
    evaluation_state = next(v for k, v in best["callbacks"].items() if k.startswith("Evaluation"))
    assert evaluation_state["best"] == (pytest.approx(min(fids)), best_step)


def test_best_metric_must_be_logged(cfg_factory):
    cfg = cfg_factory("metrics.evaluation.metrics=[modes]")  # best_metric stays val/fid
    with pytest.raises(SystemExit, match="best_metric=val/fid is not logged by these metrics"):
        train(cfg)


def test_evaluation_cadence_in_kimg_follows_images_seen_not_steps(cfg_factory, tmp_path):
    """every_n_kimg counts real images shown to D: with n_critic=2 and batch 8 a G step is 16 images,
    so 0.048 kimg is every 3 G steps (every_n_g_steps would say nothing about images)."""
    cfg = cfg_factory(
        f"paths.cache_dir={tmp_path / 'cache'}",
        "model.n_critic=2",
        "g_steps=7",
        "metrics.evaluation.every_n_kimg=0.048",
        "metrics.evaluation.every_n_g_steps=1",  # ignored when every_n_kimg is set
    )
    train(cfg)
    rows = [r for r in read_metrics(Path(cfg.paths.output_dir)) if r["val/fid"]]
    assert [int(float(r["g_step"])) for r in rows] == [3, 6, 7]  # 48 and 96 images crossed, then the end
    assert [float(r["kimg"]) for r in rows] == pytest.approx([0.048, 0.096, 0.112])


def test_every_n_kimg_must_be_positive(cfg_factory):
    with pytest.raises(SystemExit, match="every_n_kimg must be positive"):
        train(cfg_factory("metrics.evaluation.every_n_kimg=0"))


def test_every_n_kimg_must_be_finite(cfg_factory):
    with pytest.raises(SystemExit, match="every_n_kimg must be positive"):
        train(cfg_factory("metrics.evaluation.every_n_kimg=inf"))
