"""What every gankit datamodule shares: loader settings and the checks that make bad sizes fail early."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset


class GANDataModule(L.LightningDataModule):
    """Base class: subclasses set `self.train_set` in `setup` and describe their images.

    `batch_size` is per process: under DDP with k processes, one optimizer step sees k * batch_size
    real images. Batches are shuffled each epoch and the last incomplete one is dropped, so every
    discriminator step sees a full batch.
    """

    resolution: int
    channels: int
    num_classes: int | None = None  # None: unlabeled

    def __init__(self, batch_size: int = 64, num_workers: int = 0, pin_memory: bool | None = None) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be at least 1, got {batch_size}")
        self.batch_size, self.num_workers = batch_size, num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.train_set: Dataset | None = None

    def check_size(self, num_images: int, world_size: int = 1) -> None:
        """Fail with a clear message when one process's share of the data cannot fill a batch."""
        share = num_images // world_size
        if share < self.batch_size:
            where = f" split over {world_size} processes ({share} each)" if world_size > 1 else ""
            raise ValueError(
                f"data.batch_size={self.batch_size} is larger than the data set: {num_images} images{where}. "
                f"Lower data.batch_size to at most {max(share, 1)}."
            )

    def check_num_classes(self, given: int | None) -> None:
        """`data.num_classes` is read by conditional models; it must say what the data has."""
        if given is not None and given != self.num_classes:
            have = "no labels" if self.num_classes is None else f"{self.num_classes} classes"
            raise ValueError(f"data.num_classes={given}, but this data set has {have}; leave it at its default")

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self.build_train_set()
        world_size = self.trainer.world_size if self.trainer is not None else 1
        self.check_size(len(self.train_set), world_size)

    def build_train_set(self) -> Dataset:
        """The training set; called once per process."""
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,  # under DDP Lightning swaps in a DistributedSampler that keeps this
            drop_last=True,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )
