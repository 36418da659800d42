"""What one evaluation costs against the training it interrupts, measured in one process (ratios, not times).

    python bench/eval_cost.py                          # CPU: digits features, the default run's settings
    python bench/eval_cost.py --device cuda --inception random   # GPU: Inception FID over 10,000 samples

Measures, on the default job's model and data (DCGAN on the embedded MNIST at 32x32, batch 64):
- training: seconds per generator step (one D and one G step), timed inside Lightning's fit loop;
- the real pass: computing the real features (uncached) against reading them from the cache;
- one evaluation of --num-samples generated samples with all digits metrics;
- with --inception (a weights file, or `random` for a random-weights file of the right architecture,
  fine for timing): Inception FID / KID / IS of --num-samples fakes against --num-samples real images.
It prints each as a ratio to the training time between two evaluations at the default
every_n_g_steps, so the numbers compare across machines.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gankit.callbacks.evaluation import Evaluation  # noqa: E402
from gankit.metrics import features as F  # noqa: E402


class StepTimer(L.Callback):
    """Wall time of the fit loop's batches after a warm-up (no start-up, no data set-up)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.batches = warmup, None, 0

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.batches += 1
        if self.batches == self.warmup:
            _sync(pl_module.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        _sync(pl_module.device)
        self.seconds = time.perf_counter() - self.start
        self.timed = self.batches - self.warmup


def fit_timed(module, datamodule, accelerator: str, batches: int, warmup: int) -> StepTimer:
    """Fit for warmup + batches batches (n_critic = 1: one D and one G step each) and time the last ones."""
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        max_steps=2 * (batches + warmup),
        logger=False,
        callbacks=[timer],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule)
    return timer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--train-steps", type=int, default=60, help="generator steps timed (after 10 warm-up)")
    parser.add_argument("--inception", default=None, help="weights file, or 'random'")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["logger=none", "callbacks=none", "metrics=digits"])
    every = cfg.metrics.evaluation.every_n_g_steps

    # ---- training speed ----------------------------------------------------------------------
    datamodule = instantiate(cfg.data)
    module = instantiate(cfg.model)
    timer = fit_timed(module, datamodule, device.type, args.train_steps, warmup=10)
    per_g_step = timer.seconds / timer.timed  # n_critic=1: one G step per batch
    between = per_g_step * every
    module.to(device).eval()

    rows = [("training: one generator step (D + G)", per_g_step, None)]
    rows.append((f"training between two evaluations ({every} G steps)", between, 1.0))

    # ---- digits evaluation: real pass uncached / cached, one evaluation -------------------------
    with tempfile.TemporaryDirectory() as cache:
        evaluation = Evaluation(
            F.DigitsFeatures(),
            cache,
            metrics=["fid", "precision_recall", "density_coverage", "modes"],
            num_samples=args.num_samples,
            num_real=len(datamodule.train_set),
        )
        t_uncached, _ = timed(lambda: evaluation.prepare(datamodule, device), device)
        t_cached, _ = timed(lambda: evaluation.prepare(datamodule, device), device)
        t_eval, values = timed(lambda: evaluation.evaluate(module), device)
    n_real = len(datamodule.train_set)
    rows += [
        (f"digits real pass, {n_real} images, uncached", t_uncached, t_uncached / between),
        (f"digits real pass, {n_real} images, from the cache", t_cached, t_cached / between),
        (f"digits evaluation, {args.num_samples} samples (FID, P/R, D/C, modes)", t_eval, t_eval / between),
    ]

    # ---- Inception FID / KID / IS ----------------------------------------------------------------
    if args.inception:
        with tempfile.TemporaryDirectory() as tmp:
            weights = args.inception
            if weights == "random":
                weights = str(F.write_random_inception_weights(Path(tmp) / F.INCEPTION_FILE))
            n = args.num_samples
            real = TensorDataset(torch.rand(n, 3, 32, 32) * 2 - 1)  # timing only: content does not matter
            fake_dm = type(
                "RealImages",
                (),
                {
                    "train_set": real,
                    "channels": 3,
                    "resolution": 32,
                    "decode": staticmethod(lambda x: x),
                    "identity": staticmethod(lambda: {"data": "random images", "num_samples": n}),  # cache key
                },
            )()
            module3 = instantiate(cfg.model, generator={"channels": 3}, discriminator={"channels": 3}).to(device)
            module3.trainer = None
            evaluation = Evaluation(
                F.InceptionFeatures(weights, download=False),
                tmp,
                metrics=["fid", "kid", "is"],
                num_samples=n,
                batch_size=250,
            )
            t_real, _ = timed(lambda: evaluation.prepare(fake_dm, device), device)
            t_incep, _ = timed(lambda: evaluation.evaluate(module3.eval()), device)
        rows += [
            (f"Inception real pass, {n} images (uncached)", t_real, t_real / between),
            (f"Inception evaluation, {n} samples (FID, KID, IS)", t_incep, t_incep / between),
        ]

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\neval_cost on {name}; ratios are to the training between two evaluations\n")
    width = max(len(r[0]) for r in rows)
    print(f"{'':<{width}}  {'seconds':>9}  {'ratio':>7}")
    for label, seconds, ratio in rows:
        print(f"{label:<{width}}  {seconds:>9.3f}  {'' if ratio is None else f'{ratio:>7.3f}'}")
    print(f"\ncache speed-up of the real pass: {t_uncached / t_cached:.0f}x")
    print("last digits values:", {k: round(v.item(), 4) for k, v in values.items()})


if __name__ == "__main__":
    main()
