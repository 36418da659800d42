"""Mode counts from class predictions: how many classes the generator covers and how evenly."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class ClassModes(Metric):
    """Histogram of predicted classes -> modes covered and KL(generated histogram || uniform).

    KL is 0 for a generator that produces every class equally often and log(num_classes) for one
    that produces a single class.
    """

    full_state_update = False

    def __init__(self, num_classes: int = 10, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.add_state("counts", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predicted: Tensor) -> None:
        self.counts += torch.bincount(predicted.flatten().long(), minlength=self.num_classes)

    def compute(self) -> dict[str, Tensor]:
        p = self.counts.double() / self.counts.sum()
        nonzero = p > 0
        kl = (p[nonzero] * torch.log(p[nonzero] * self.num_classes)).sum()
        return {"modes": nonzero.sum().double(), "mode_kl": kl}
