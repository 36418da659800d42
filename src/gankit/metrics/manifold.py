"""k-nearest-neighbour manifold metrics over features: precision / recall and density / coverage.

Precision and recall (Kynkaanniemi et al. 2019): each set's manifold is the union of balls around
its points, radius the distance to the k-th nearest neighbour in the same set (itself excluded).
Precision: fraction of fakes inside the real manifold; recall: fraction of reals inside the fake one.
Density and coverage (Naeem et al. 2020) use only real balls: density counts, per fake, how many real
balls hold it (divided by k, averaged); coverage is the fraction of real balls holding any fake.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

CHUNK = 2048  # rows of the distance matrix held at once


def kth_neighbour_radii(x: Tensor, k: int) -> Tensor:
    """Distance from each row of x to its k-th nearest other row: [N]."""
    if len(x) <= k:
        raise ValueError(f"need more than k={k} samples for k-nearest-neighbour radii, got {len(x)}")
    radii = [torch.cdist(chunk, x).kthvalue(k + 1, dim=1).values for chunk in x.split(CHUNK)]  # +1: self at 0
    return torch.cat(radii)


def ball_counts(points: Tensor, centres: Tensor, radii: Tensor, strict: bool) -> Tensor:
    """For each point, how many balls (centres[i], radii[i]) contain it: [len(points)]."""
    counts = []
    for chunk in points.split(CHUNK):
        d = torch.cdist(chunk, centres)  # [chunk, centres]
        inside = d < radii[None] if strict else d <= radii[None]
        counts.append(inside.sum(dim=1))
    return torch.cat(counts)


class _FeatureSets(Metric):
    """Keeps real and fake feature rows; states are concatenated across DDP ranks."""

    full_state_update = False

    def __init__(self, k: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.k = k
        self.add_state("real", default=[], dist_reduce_fx="cat")
        self.add_state("fake", default=[], dist_reduce_fx="cat")

    def update(self, features: Tensor, real: bool) -> None:
        (self.real if real else self.fake).append(features.detach().double().flatten(1))

    def _sets(self) -> tuple[Tensor, Tensor]:
        return dim_zero_cat(self.real), dim_zero_cat(self.fake)


class PrecisionRecall(_FeatureSets):
    """Improved precision and recall, k=3 by default (a point on a ball's surface counts as inside)."""

    def __init__(self, k: int = 3, **kwargs) -> None:
        super().__init__(k, **kwargs)

    def compute(self) -> dict[str, Tensor]:
        real, fake = self._sets()
        precision = (ball_counts(fake, real, kth_neighbour_radii(real, self.k), strict=False) > 0).double().mean()
        recall = (ball_counts(real, fake, kth_neighbour_radii(fake, self.k), strict=False) > 0).double().mean()
        return {"precision": precision, "recall": recall}


class DensityCoverage(_FeatureSets):
    """Density and coverage, k=5 by default, strict inequality as in the reference `prdc` package."""

    def __init__(self, k: int = 5, **kwargs) -> None:
        super().__init__(k, **kwargs)

    def compute(self) -> dict[str, Tensor]:
        real, fake = self._sets()
        radii = kth_neighbour_radii(real, self.k)
        density = ball_counts(fake, real, radii, strict=True).double().sum() / (self.k * len(fake))
        nearest_fake = torch.cat([torch.cdist(chunk, fake).min(dim=1).values for chunk in real.split(CHUNK)])
        coverage = (nearest_fake < radii).double().mean()
        return {"density": density, "coverage": coverage}
