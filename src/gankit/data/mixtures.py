"""2D Gaussian mixtures, the mode-collapse test bed of VEEGAN (Srivastava et al. 2017) and PacGAN (Lin et al. 2018).

- ring: 8 Gaussians evenly spaced on a circle of radius 1, std 0.01;
- grid: 25 Gaussians at {-4, -2, 0, 2, 4}^2, std 0.05.

Every mode has the same weight. The points are drawn once from `seed` (a fixed training set, so a
run is reproducible and the real-feature cache is meaningful); a sample is "high quality" when it
lies within 3 std of its nearest mean (see gankit.metrics.features.MixtureFeatures).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from gankit.data.base import GANDataModule


def mixture_means(kind: str) -> tuple[Tensor, float]:
    """The means [modes, 2] and the std of the named mixture."""
    if kind == "ring":
        angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        return torch.stack([angles.cos(), angles.sin()], 1).float(), 0.01
    if kind == "grid":
        axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
        return torch.cartesian_prod(axis, axis), 0.05
    raise ValueError(f"data.kind={kind!r} is not a known mixture: choose ring or grid")


def sample_mixture(means: Tensor, std: float, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """n points [n, 2] with equal mode weights, and the mode each came from [n]."""
    modes = torch.randint(len(means), (n,), generator=generator)
    return means[modes] + std * torch.randn(n, 2, generator=generator), modes


class GaussianMixture(GANDataModule):
    """Points of a 2D Gaussian mixture with their mode labels; `points = True` tells the metrics and models."""

    points = True
    holdout_advice = "set data.holdout=M (M fresh draws from the mixture)"
    resolution = None  # not images
    channels = None
    dim = 2

    def __init__(
        self,
        kind: str = "ring",
        num_classes: int | None = None,
        num_samples: int = 100_000,
        seed: int = 0,
        batch_size: int = 500,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        limit: int | None = None,
        holdout: int | None = None,
    ) -> None:
        if limit is not None:
            raise ValueError("data.limit is for image sets: a mixture draws data.num_samples points, set that instead")
        super().__init__(batch_size, num_workers, pin_memory, None, holdout, seed)
        self.kind = kind
        self.means, self.std = mixture_means(kind)
        self.num_classes = len(self.means)
        self.check_num_classes(num_classes)
        self.num_samples, self.seed = num_samples, seed
        self.check_size(num_samples)

    def source(self) -> dict:
        return {
            "source": "gaussian mixture",
            "kind": self.kind,
            "std": self.std,
            "num_samples": self.num_samples,
            "seed": self.seed,
        }

    def build_train_set(self) -> TensorDataset:
        points, modes = sample_mixture(self.means, self.std, self.num_samples, torch.Generator().manual_seed(self.seed))
        return TensorDataset(points, modes)

    def split(self, full: TensorDataset) -> tuple[TensorDataset, TensorDataset | None]:
        """The held-out set of a mixture (`data.holdout=M`): M fresh draws from it, none of them trained on."""
        if self.holdout is None:
            return full, None
        generator = torch.Generator().manual_seed(self.seed + 1_000_003)  # another stream than the training points
        return full, TensorDataset(*sample_mixture(self.means, self.std, self.holdout, generator))
