"""Does the generator generalise or copy? D's train / held-out gap and Meehan et al.'s data-copying test C_T.

FID, precision / recall and mode counts all reward a generator that replays its training set
(Gulrajani, Raffel & Metz 2019). These two need held-out data (`data.limit` / `data.holdout`):

- `DGap`: D's mean logit on training images minus on held-out ones. A D that memorised its
  training set scores it higher than unseen images of the same distribution: the gap grows with
  D's overfitting (ADA's r_v heuristic watches the same thing).
- `DataCopying`: C_T (Meehan, Chaudhuri & Dasgupta, AISTATS 2020; casey-meehan/data-copying). The
  training set's features are cut into k cells by k-means; in each cell holding more than tau =
  20 / m of the m generated samples, a Mann-Whitney U test compares the distances to the nearest
  training sample (of that cell) of the generated samples against those of the held-out samples,
  z-scored: Z_U = (U - (n m / 2 - 0.5)) / sqrt(n m (n + m + 1) / 12), U counting the (generated,
  held-out) pairs where the generated sample is farther. C_T = the held-out mass-weighted mean of
  Z_U over the kept cells. Strongly negative: generated samples sit closer to training samples
  than fresh data does (copying); strongly positive: farther (underfitting); near 0: neither.
Both are torchmetrics Metrics: the states sum (or concatenate) across DDP ranks.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric


class DGap(Metric):
    """mean D(x_train) - mean D(x_heldout) over the logits added with `update(logits, heldout=...)`."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("sums", torch.zeros(2, dtype=torch.float64), dist_reduce_fx="sum")  # train, held-out
        self.add_state("counts", torch.zeros(2, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, heldout: bool) -> None:
        i = int(heldout)
        self.sums[i] += logits.detach().double().sum()
        self.counts[i] += logits.numel()

    def compute(self) -> Tensor:
        means = self.sums / self.counts
        return (means[0] - means[1]).float()


def kmeans(x: Tensor, k: int, generator: torch.Generator, iterations: int = 50) -> Tensor:
    """k centres [k, d] of the points x [N, d] (Lloyd's algorithm from a k-means++ start), drawn from `generator`."""
    x = x.double()
    first = torch.randint(len(x), (1,), generator=generator)
    centres = [x[first]]
    d2 = torch.cdist(x, centres[0]).squeeze(1).pow(2)
    for _ in range(1, k):
        pick = torch.multinomial(d2 / d2.sum() if d2.sum() > 0 else torch.ones_like(d2), 1, generator=generator)
        centres.append(x[pick])
        d2 = torch.minimum(d2, torch.cdist(x, x[pick]).squeeze(1).pow(2))
    centres = torch.cat(centres)
    for _ in range(iterations):
        cells = torch.cdist(x, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, cells, x)
        counts = torch.bincount(cells, minlength=k).double()
        moved = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
        if torch.equal(moved, centres):
            break
        centres = moved
    return centres


def mann_whitney_u(a: Tensor, b: Tensor) -> float:
    """U of sample a against b: the pairs (a_i, b_j) with a_i > b_j, ties counted 1/2 (as scipy's mannwhitneyu)."""
    both = torch.cat([a.double(), b.double()])
    order = both.argsort()
    ranks = torch.empty_like(both)
    ranks[order] = torch.arange(1, len(both) + 1, dtype=torch.float64)
    values, inverse, counts = both.unique(return_inverse=True, return_counts=True)
    mean_rank = torch.zeros(len(values), dtype=torch.float64).index_add_(0, inverse, ranks) / counts  # ties: mean
    return float(mean_rank[inverse[: len(a)]].sum() - len(a) * (len(a) + 1) / 2)


def z_u(generated: Tensor, heldout: Tensor) -> float:
    """Meehan et al.'s Z_U of the nearest-training distances: U(generated vs held-out), z-scored under H0."""
    m, n = len(generated), len(heldout)
    u = mann_whitney_u(generated, heldout)
    return (u - (n * m / 2 - 0.5)) / math.sqrt(n * m * (n + m + 1) / 12)


def copying_statistic(
    train: Tensor, heldout: Tensor, generated: Tensor, cells: int = 50, seed: int = 0
) -> tuple[float, dict]:
    """C_T of generated features against training and held-out features (all [N, d]); and what it was made of."""
    m = len(generated)
    k = max(1, min(cells, len(train)))
    centres = kmeans(train, k, torch.Generator().manual_seed(seed))

    def cell_of(x: Tensor) -> Tensor:
        return torch.cdist(x.double(), centres).argmin(1)

    t_cells, p_cells, q_cells = cell_of(train), cell_of(heldout), cell_of(generated)
    tau = 20 / m
    z, weights = [], []
    for c in range(k):
        q, p, t = generated[q_cells == c], heldout[p_cells == c], train[t_cells == c]
        if len(q) / m <= tau or len(p) == 0 or len(t) == 0:
            continue  # too few generated samples for a test (or nothing to compare with)
        to_train = [torch.cdist(x.double(), t.double()).min(1).values for x in (q, p)]  # to the cell's training set
        z.append(z_u(*to_train))
        weights.append(len(p) / len(heldout))
    if not z:
        return float("nan"), {"cells": k, "kept": 0}
    zs, ws = torch.tensor(z), torch.tensor(weights)
    return float((zs * ws).sum() / ws.sum()), {"cells": k, "kept": len(z), "kept_heldout_mass": float(ws.sum())}


class DataCopying(Metric):
    """C_T of the generated features added with `update` against fixed training and held-out features."""

    full_state_update = False

    def __init__(self, train: Tensor, heldout: Tensor, cells: int = 50, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.train_features, self.heldout_features = train, heldout
        self.cells, self.seed = cells, seed
        self.add_state("generated", [], dist_reduce_fx="cat")

    def update(self, features: Tensor) -> None:
        self.generated.append(features.detach().double())

    def compute(self) -> Tensor:
        generated = self.generated if isinstance(self.generated, Tensor) else torch.cat(self.generated)
        value, _ = copying_statistic(
            self.train_features.cpu(), self.heldout_features.cpu(), generated.cpu(), self.cells, self.seed
        )
        return torch.tensor(value, dtype=torch.float32)
