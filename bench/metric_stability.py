"""How much do the metrics move when only the evaluation's randomness changes?

For one trained generator (default: the newest `logs/train/runs/*/checkpoints/last.ckpt`, i.e. the
default job's), score it with the run's metrics under 5 evaluation seeds (latents, fake labels and
the reference subset) for 1,000 / 2,000 / 5,000 samples, and print mean +- std per metric: a
difference between two runs smaller than a few of these stds is noise.

    python bench/metric_stability.py [--ckpt PATH] [--seeds 5] [--sizes 1000 2000 5000] [--device cpu]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gankit.checkpoints import load_module, pick_device

KEYS = ("val/fid", "val/precision", "val/recall", "val/coverage", "val/modes", "val/mode_kl")


def newest_default_checkpoint() -> Path:
    found = sorted(Path("logs/train/runs").glob("*/checkpoints/last.ckpt"))
    if not found:
        raise SystemExit("no logs/train/runs/*/checkpoints/last.ckpt: run `python train.py` first, or pass --ckpt")
    return found[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, default=None)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ckpt = args.ckpt or newest_default_checkpoint()
    device = pick_device(args.device)
    paths = OmegaConf.create({"output_dir": "/tmp/gankit-metric-stability", "cache_dir": "~/.cache/gankit"})
    train_cfg, module, g_step = load_module(ckpt, paths, device)
    datamodule = instantiate(train_cfg.data)
    print(f"{ckpt} (generator step {g_step}), {args.seeds} evaluation seeds per size, device {device}\n")
    rows = []
    for size in args.sizes:
        values: dict[str, list[float]] = {}
        start = time.perf_counter()
        for seed in range(args.seeds):
            node = train_cfg.metrics.evaluation  # edited in place: its interpolations need the whole config
            node.num_samples, node.num_real, node.seed, node.best_metric, node.dirpath = size, None, seed, None, None
            evaluation = instantiate(node)
            evaluation.prepare(datamodule, device)
            with torch.no_grad():
                for key, value in evaluation.evaluate(module).items():
                    values.setdefault(key, []).append(value.item())
        seconds = (time.perf_counter() - start) / args.seeds
        rows.append((size, evaluation.num_real, values, seconds))
    keys = [k for k in KEYS if k in rows[0][2]]
    header = "| samples (fake / real) | " + " | ".join(k.removeprefix("val/") for k in keys) + " | s per evaluation |"
    print(header)
    print("|" + "---|" * (len(keys) + 2))
    for size, num_real, values, seconds in rows:
        cells = [f"{statistics.mean(values[k]):.4g} +- {statistics.stdev(values[k]):.2g}" for k in keys]
        print(f"| {size:,} / {num_real:,} | " + " | ".join(cells) + f" | {seconds:.1f} |")


if __name__ == "__main__":
    main()
