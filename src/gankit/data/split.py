"""Limited training sets and held-out data: `data.limit`, `data.holdout`, `data.seed`.

`data.limit=N` trains on a fixed subset of N images, drawn from `data.seed` and stratified
by class where there are labels; the images left over are the held-out set, which no training
step shows D and which the generalisation metrics (d_gap, copying, the critic) and, by default,
FID / precision / recall compare against. `data.holdout=M` sets how many are held out (default:
all the rest when a limit is set, none otherwise; with no limit, M images are held out of the set
and the rest trained on).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from gankit.randomness import reference_indices


def check_split(limit: int | None, holdout: int | None) -> None:
    """Refuse a limit or hold-out size that is not a positive whole number (the data's size is checked later)."""
    for key, value in (("limit", limit), ("holdout", holdout)):
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
            raise ValueError(f"data.{key} must be a whole number of images >= 1, or null; got {value!r}")


def split_indices(
    size: int, limit: int | None, holdout: int | None, labels: Tensor | None, seed: int
) -> tuple[Tensor, Tensor]:
    """(training indices, held-out indices) into a set of `size` samples: disjoint, each sorted.

    Drawn from `seed` alone. With labels, both parts keep the classes' shares (`reference_indices`), so a
    limit of 500 of the label-sorted embedded digits takes 50 of each class.
    """
    if limit is not None and limit > size:
        raise ValueError(f"data.limit={limit} is more than the {size} images of this data set: lower it, or null")
    train_size = size if limit is None else limit
    rest = size - train_size
    if holdout is None:
        held = rest
    elif limit is None:
        if holdout >= size:
            raise ValueError(f"data.holdout={holdout} leaves no image to train on ({size} in the set): lower it")
        held, train_size = holdout, size - holdout
    elif holdout > rest:
        raise ValueError(
            f"data.holdout={holdout} is more than the {rest} images data.limit={limit} leaves of {size}: lower it"
        )
    else:
        held = holdout
    generator = torch.Generator().manual_seed(seed)
    train = reference_indices(size, train_size, labels, generator)  # stratified when there are labels
    rest = torch.ones(size, dtype=torch.bool)
    rest[train] = False
    rest = rest.nonzero().squeeze(1)
    held_out = rest[reference_indices(len(rest), held, None if labels is None else labels[rest], generator)]
    return train, held_out


class IndexedView(Dataset):
    """Samples `indices` of `dataset`, as the data set itself reads them: whole batches at once where it does."""

    def __init__(self, dataset: Dataset, indices: Tensor) -> None:
        self.dataset, self.indices = dataset, indices
        self.batched = getattr(dataset, "batched", False)
        labels = getattr(dataset, "labels", None)
        self.labels = None if labels is None else labels[indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index):
        if isinstance(index, int):
            return self.dataset[int(self.indices[index])]
        return self.dataset[self.indices[torch.as_tensor(index)].tolist()]

    def tensors(self) -> tuple[Tensor, ...]:
        return tuple(t[self.indices] for t in self.dataset.tensors())


def subset(dataset: Dataset, indices: Tensor) -> Dataset:
    """The samples `indices` of a data set: a smaller TensorDataset for one, an IndexedView otherwise."""
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[indices] for t in dataset.tensors))
    return IndexedView(dataset, indices)
