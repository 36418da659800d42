"""The row a copying generator gets: training images plus tiny noise, scored like a trained run.

    python scripts/copier.py data.limit=500 metrics=digits_heldout                # FID, recall, C_T
    python scripts/copier.py data.limit=500 metrics=digits_heldout --critic-steps 500 --critic-width 32 --critic-lr 1e-3
    python scripts/copier.py data.limit=500 --critic-only --critic-steps 500 --critic-width 32 --critic-lr 1e-3

Its FID against held-out digits beats every trained generator (it *is* the data), which is the point of
Gulrajani, Raffel & Metz (2019): C_T (`copying`, strongly negative) and the critic (a large divergence
against held-out data, near 0 against the training images it replays) are the numbers that flag it.
D's gap is not defined for it (it has no discriminator of its own) and is left out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gankit.critic import dataset_images, judge_generator  # noqa: E402


class CopyingGenerator(nn.Module):
    """z -> one of the training images (chosen by z's first coordinate) plus noise of std `noise`."""

    def __init__(self, images: Tensor, latent_dim: int, noise: float = 0.01) -> None:
        super().__init__()
        self.register_buffer("images", images)
        self.latent_dim, self.noise = latent_dim, noise

    def forward(self, z: Tensor) -> Tensor:
        index = (torch.special.ndtr(z[:, 0]) * len(self.images)).long().clamp(0, len(self.images) - 1)
        jitter = self.noise * z[:, 1:2, None, None].expand(-1, self.images.shape[1], *self.images.shape[2:])
        return (self.images[index] + jitter).clamp(-1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--critic-steps", type=int, default=0, help="0: no critic")
    parser.add_argument("--critic-width", type=int, default=64)
    parser.add_argument("--critic-lr", type=float, default=2e-4)
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--critic-only", action="store_true", help="the critic alone, without the sample metrics")
    args = parser.parse_args()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*args.overrides, "logger=csv"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(ROOT / "logs" / "copier")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    module = instantiate(cfg.model)
    train = dataset_images(datamodule, datamodule.train_set, len(datamodule.train_set), 0, torch.device("cpu"))
    module.generator = CopyingGenerator(train, module.latent_dim, args.noise)
    module.generator_ema = None
    results = {}
    if not args.critic_only:
        evaluation = instantiate(cfg.metrics.evaluation)
        evaluation.metrics = tuple(m for m in evaluation.metrics if m != "d_gap")
        evaluation.prepare(datamodule, module.device)
        start = time.perf_counter()
        results = {k: round(v.item(), 4) for k, v in evaluation.evaluate(module).items()}
        results["evaluation_seconds"] = round(time.perf_counter() - start, 1)
    if args.critic_steps:
        critic = judge_generator(module, datamodule, 10000, cfg.seed, steps=args.critic_steps, batch_size=64,
                                 width=args.critic_width, lr=args.critic_lr)  # fmt: skip
        results.update({f"val/{k}": round(v, 4) for k, v in critic.items()})
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
