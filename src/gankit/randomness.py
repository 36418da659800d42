"""The run's three random streams, each with an owner (shared/DESIGN.md: "Randomness has owners").

- Training noise (latents, fake labels, DiffAugment, penalty mixing, flips): the global torch /
  numpy / Python generators, seeded per rank from (seed, rank) when training starts, so that k
  DDP processes draw k different batches of fakes. Checkpointed with the run.
- Data order: drawn from (seed, epoch) by `EpochShards`, the same plan on every rank.
- Evaluation: latents, fake labels and reference subsets from local generators seeded with the
  run's seed alone, so that metrics do not depend on the number of processes.

The helpers below draw from a generator they are handed, never from the global one.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch
from torch import Tensor


def training_seed(seed: int, rank: int) -> int:
    """The training stream's seed on `rank`: distinct per rank, and not the data order's `seed` itself."""
    digest = hashlib.sha256(f"gankit-training-noise/{seed}/{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**63


def seed_training_stream(seed: int, rank: int) -> None:
    """Seed torch (every device), numpy and Python's `random` for this rank's training noise."""
    value = training_seed(seed, rank)
    torch.manual_seed(value)
    np.random.seed(value % 2**32)
    random.seed(value)


def proportional_counts(weights: Tensor, n: int) -> Tensor:
    """n split over classes in proportion to `weights` [K] (largest remainders: the counts sum to n exactly)."""
    share = weights.double() / weights.double().sum() * n
    counts = share.floor().long()
    remainder = n - int(counts.sum())
    if remainder:
        counts[torch.argsort(share - counts, descending=True, stable=True)[:remainder]] += 1
    return counts


def labels_in_proportion(weights: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """n class labels [n], each class as often as its weight says (stratified, not sampled), in a shuffled order."""
    counts = proportional_counts(weights, n)
    labels = torch.repeat_interleave(torch.arange(len(weights)), counts)
    return labels[torch.randperm(n, generator=generator)]


def reference_indices(size: int, n: int, labels: Tensor | None, generator: torch.Generator) -> Tensor:
    """n indices of a set of `size` items, at random, stratified by class when `labels` [size] are given.

    Sorted, so the same subset reads the same way whatever drew it; the whole set when n == size.
    """
    if n >= size:
        return torch.arange(size)
    if labels is None:
        return torch.randperm(size, generator=generator)[:n].sort().values
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    take = proportional_counts(counts, n)
    order = torch.randperm(size, generator=generator)  # one shuffle; each class keeps its first take[c] members
    by_class, position = torch.sort(inverse[order], stable=True)  # positions in `order`, grouped by class
    rank_in_class = torch.arange(size) - (torch.cumsum(counts, 0) - counts)[by_class]
    return order[position[rank_in_class < take[by_class]]].sort().values


def training_stream_state() -> dict:
    """This process's training stream (torch CPU and CUDA, numpy, Python) as tensors and plain values,
    loadable with torch.load(weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "gauss": gauss,
        },  # fmt: skip
        "python": random.getstate(),
    }


def set_training_stream_state(state: dict) -> None:
    """Restore what `training_stream_state` returned (CUDA states only where the devices match)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(state["python"])
