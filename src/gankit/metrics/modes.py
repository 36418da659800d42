"""Mode counts: how many modes the generator covers and how evenly.

Classifier features (digits, stacked digits) assign every sample a mode. For the 2D mixtures every
sample has a nearest mode, but only a high-quality one (within 3 std of it) counts towards
capturing that mode, as in VEEGAN and PacGAN.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class ClassModes(Metric):
    """Histograms of modes -> `modes` (covered), `mode_kl` = KL(generated histogram || uniform), and
    `high_quality` (the fraction of high-quality samples) when quality flags are given.

    KL is 0 for a generator that produces every mode equally often and log(num_classes) for one that
    produces a single mode. With quality flags it is computed over the high-quality samples only,
    the "reverse KL" of PacGAN's tables (NaN when there are none).
    """

    full_state_update = False

    def __init__(self, num_classes: int = 10, report_quality: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.report_quality = num_classes, report_quality
        self.add_state("counts", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("good_counts", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, modes: Tensor, quality: Tensor | None = None) -> None:
        """modes: [N] mode index of each sample; quality: [N] bool, True for high-quality samples."""
        modes = modes.flatten().long()
        self.counts += torch.bincount(modes, minlength=self.num_classes)
        good = modes if quality is None else modes[quality.flatten().bool()]
        self.good_counts += torch.bincount(good, minlength=self.num_classes)

    def compute(self) -> dict[str, Tensor]:
        self.histogram, self.good_histogram = self.counts.clone(), self.good_counts.clone()  # synced: for plots
        p = self.good_counts.double() / self.good_counts.sum()  # NaN when no sample counts
        nonzero = p > 0
        kl = (p[nonzero] * torch.log(p[nonzero] * self.num_classes)).sum() if nonzero.any() else p.sum()
        out = {"modes": (self.good_counts > 0).sum().double(), "mode_kl": kl}
        if self.report_quality:
            out["high_quality"] = self.good_counts.sum().double() / self.counts.sum()
        return out
