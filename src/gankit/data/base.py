"""What every gankit datamodule shares: loader settings and the checks that make bad sizes fail early."""

from __future__ import annotations

import os

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset
from torchdata.stateful_dataloader import StatefulDataLoader

from gankit.data.split import check_split, split_indices, subset


class EpochShards(DistributedSampler):
    """The order of one process's samples: each epoch a permutation drawn from (seed, epoch), cut to a
    multiple of the process count, of which rank r takes every world_size-th index.

    So the ranks' shards of an epoch are disjoint, every epoch is shuffled differently, and the
    order is reproducible from the seed (also after a restart: it depends on the epoch only).
    Lightning calls `set_epoch` and, as this is a DistributedSampler, keeps it under DDP. With
    `batch_size`, it yields lists of indices: the data set then reads a whole batch at once.
    """

    def __init__(self, dataset: Dataset, world_size: int, rank: int, seed: int, batch_size: int | None = None):
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size = batch_size

    def __iter__(self):
        return self._iterate()  # a generator: the order is drawn at the first batch, after `set_epoch`

    def _iterate(self):
        indices = list(super().__iter__())
        if self.batch_size is None:
            yield from indices
        else:
            for i in range(0, len(self) * self.batch_size, self.batch_size):
                yield indices[i : i + self.batch_size]

    def __len__(self) -> int:
        return super().__len__() if self.batch_size is None else super().__len__() // self.batch_size


def random_hflip(images: Tensor) -> Tensor:
    """Each image [N, C, H, W] mirrored left-right with probability 1/2 (global RNG, so seeded)."""
    mask = torch.rand(len(images), device=images.device) < 0.5
    if images.device.type == "cpu":  # numpy's reversed-stride copy is ~6x faster than torch.flip on CPU
        out, keep = images.numpy().copy(), mask.numpy()
        out[keep] = out[keep][..., ::-1]
        return torch.from_numpy(out)
    return torch.where(mask[:, None, None, None], images.flip(3), images)


class IndexSet(Dataset):
    """Indices as a data set: the device-resident path loads only these and gathers images on the device."""

    batched = True

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int | list[int]) -> Tensor:
        return torch.as_tensor(index)


class GANDataModule(L.LightningDataModule):
    """Base class: subclasses set `self.train_set` in `setup` and describe their images.

    `batch_size` is per process: under DDP with k processes, one optimizer step sees k * batch_size
    real images. Batches are shuffled each epoch and the last incomplete one is dropped, so every
    discriminator step sees a full batch. `limit` / `holdout` / `seed`: train on a fixed subset and keep
    the rest as `heldout_set`, never shown to D (gankit.data.split).
    """

    resolution: int
    channels: int
    num_classes: int | None = None  # None: unlabeled
    holdout_advice = "set data.limit=N (train on N, hold out the rest) or data.holdout=M"  # where none is held out
    flip: bool = False  # uint8 data sets: random horizontal flips, done on the batch on its device
    on_device: bool = False  # uint8 data sets: the whole set kept on the accelerator

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        limit: int | None = None,
        holdout: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be at least 1, got {batch_size}")
        check_split(limit, holdout)
        self.limit, self.holdout, self.seed = limit, holdout, seed
        self.heldout_set: Dataset | None = None  # images never shown to D (data.limit / data.holdout)
        if limit is not None and limit < batch_size:
            raise ValueError(f"data.limit={limit} is smaller than data.batch_size={batch_size}: lower the batch size")
        self.batch_size, self.num_workers = batch_size, num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.train_set: Dataset | None = None
        self._resident: list[Tensor] | None = None  # on_device: the whole set on the accelerator

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
            self.train_set, self.heldout_set = self.split(self.build_train_set())
        world_size = self.trainer.world_size if self.trainer is not None else 1
        self.check_size(len(self.train_set), world_size)

    def build_train_set(self) -> Dataset:
        """The whole training set (before `data.limit`); called once per process."""
        raise NotImplementedError

    def split(self, full: Dataset) -> tuple[Dataset, Dataset | None]:
        """(the training subset, the held-out set or None) of the whole set, as data.limit / data.holdout say."""
        if self.limit is None and self.holdout is None:
            return full, None
        labels = _labels_of(full) if self.num_classes is not None else None
        train, held = split_indices(len(full), self.limit, self.holdout, labels, self.seed)
        return subset(full, train), (subset(full, held) if len(held) else None)

    def identity(self) -> dict:
        """Everything the training images depend on: the key of every cache built from them (prepared
        data, real features). What is common here; what the images are made from is `source()`."""
        return {
            "data": type(self).__qualname__,
            "split": "train",
            "resolution": getattr(self, "resolution", None),
            "channels": getattr(self, "channels", None),
            **self.source(),
        }

    def split_identity(self, split: str = "train") -> dict:
        """What the training subset (`split="train"`) or the held-out set (`"heldout"`) depends on: the whole
        set's identity and how it was cut (the key of real-feature caches; the prepared cache of the whole
        set keys on `identity()` alone, so a new limit does not prepare the images again)."""
        identity = {**self.identity(), "split": split}
        if self.limit is not None or self.holdout is not None:  # unlimited sets keep their earlier keys
            identity["subset"] = {"limit": self.limit, "holdout": self.holdout, "seed": self.seed}
        return identity

    def split_settings(self) -> dict:
        """data.limit / data.holdout / data.seed as this data module applies them (saved in checkpoints)."""
        return {"limit": self.limit, "holdout": self.holdout, "seed": self.seed}

    def source(self) -> dict:
        """What the images are made from and how: set name, files (with sizes and times), preprocessing."""
        raise NotImplementedError(f"{type(self).__name__}.source() must say what its images are made from")

    def train_labels(self) -> Tensor | None:
        """The class label of every training sample [N] (None for unlabeled data), without reading images."""
        if self.num_classes is None:
            return None
        if self.train_set is None:
            self.setup("fit")
        return _labels_of(self.train_set)

    def class_weights(self) -> Tensor | None:
        """The share of each class among the training samples [K] (None for unlabeled data)."""
        labels = self.train_labels()
        if labels is None:
            return None
        return torch.bincount(labels, minlength=self.num_classes).double() / len(labels)

    def train_dataloader(self) -> DataLoader:
        """Batches in the order EpochShards draws from (seed, epoch). The loader is stateful: a checkpoint
        saved mid-epoch holds its position, and a resumed run goes on from the next batch."""
        trainer = self.trainer
        world_size, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))  # the run's `seed` (set by seed_everything)
        data = IndexSet(len(self.train_set)) if self.on_device else self.train_set
        batched = isinstance(data, TensorDataset) or getattr(data, "batched", False)
        sampler = EpochShards(data, world_size, rank, seed, self.batch_size if batched else None)
        sampler.set_epoch(trainer.current_epoch if trainer is not None else 0)  # a resumed run's epoch, already
        return StatefulDataLoader(
            data,
            generator=torch.Generator().manual_seed(seed),  # workers' seeds: the data stream's, not training's
            batch_size=None if batched else self.batch_size,  # batched: the sampler yields whole batches
            sampler=sampler,
            drop_last=not batched,
            num_workers=0 if self.on_device else self.num_workers,
            pin_memory=self.pin_memory and not self.on_device,
            persistent_workers=self.num_workers > 0 and not self.on_device,
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """On the batch's device: gather it (device-resident sets), uint8 -> [-1, 1], random flips."""
        if self.on_device:
            batch = self._gather(batch)
        images, *rest = batch if isinstance(batch, (list, tuple)) else (batch,)
        images = self.decode(random_hflip(images) if self.flip else images)  # flips on uint8: 4x less to move
        return [images, *rest] if rest else images

    @staticmethod
    def decode(images: Tensor) -> Tensor:
        """Images as the model wants them: uint8 [N, C, H, W] -> float in [-1, 1]; float ones pass."""
        return images.float().div_(127.5).sub_(1.0) if images.dtype == torch.uint8 else images

    def _gather(self, index: Tensor):
        """index [N] on the device -> the batch, from the whole set copied there once."""
        if self._resident is None or self._resident[0].device != index.device:
            data = self.train_set
            tensors = data.tensors if isinstance(data, TensorDataset) else data.tensors()
            self._resident = [t.to(index.device) for t in tensors]
        parts = [t[index] for t in self._resident]
        return parts if len(parts) > 1 else parts[0]


def _labels_of(data: Dataset) -> Tensor | None:
    """The labels of a whole data set, without reading its images."""
    if isinstance(data, TensorDataset):
        return data.tensors[1] if len(data.tensors) > 1 else None
    return getattr(data, "labels", None)
