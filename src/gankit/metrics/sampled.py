"""torchmetrics' KID and IS with random subsets that do not depend on the order of the samples.

Both metrics score random subsets (KID) or random splits (IS) of all samples. Under DDP the gathered
samples arrive rank by rank, a permutation of the single-process order, so the same seed would pick
other subsets and the values would differ. Sorting the gathered features into a canonical order
first makes N processes give exactly the value one process gives on the same samples.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.utilities import dim_zero_cat


def canonical_order(features: Tensor) -> Tensor:
    """Rows sorted by a fixed projection (row-wise, so independent of how the rows were ordered)."""
    weights = torch.linspace(1.0, 2.0, features.shape[1], device=features.device, dtype=features.dtype)
    return features[torch.argsort(features @ weights, stable=True)]


class OrderFreeKID(KernelInceptionDistance):
    def compute(self) -> tuple[Tensor, Tensor]:  # states are synced here; torchmetrics restores them after
        self.real_features = [canonical_order(dim_zero_cat(self.real_features))]
        self.fake_features = [canonical_order(dim_zero_cat(self.fake_features))]
        return super().compute()


class OrderFreeIS(InceptionScore):
    def compute(self) -> tuple[Tensor, Tensor]:
        self.features = [canonical_order(dim_zero_cat(self.features))]
        return super().compute()
