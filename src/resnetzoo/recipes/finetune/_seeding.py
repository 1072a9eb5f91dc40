"""Seeds of the recipe: every random stream derived from ``(seed, epoch, ...)``.

Every random stream is derived from ``(seed, epoch, rank)`` at the start of each
epoch, and each training image's augmentation from ``(seed, epoch, image index)``, so
a run resumed from its checkpoint repeats an uninterrupted run exactly (bit for bit on
CPU), whatever the number of data workers. That is why checkpoints hold no RNG states:
the epoch number restores them, on every rank and not only on rank 0, which alone
writes checkpoints.

Internal to the recipe (a private module): its names are for the recipe's modules.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

__all__ = ["SeededDataset", "SeededSampler", "derive_seed", "seed_everything", "seed_worker"]


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that depends on every part and on nothing else (not PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also every CUDA device


def seed_worker(worker_id: int) -> None:
    # For user transforms that draw from numpy or random: torch already seeds each worker.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(sample seed, index)``: augmentation then depends on (seed, epoch, index) only."""

    def __init__(self, sampler: DistributedSampler, *, seed: int) -> None:
        self.sampler = sampler
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.sampler:
            yield derive_seed(self.seed, self.epoch, index), index

    def __len__(self) -> int:
        return len(self.sampler)


class SeededDataset(Dataset):
    """Runs the wrapped dataset's random transforms under the seed the sampler chose."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        sample_seed, index = key
        # fork_rng: with workers=0 this runs in the training process, whose RNG must not move.
        # Only the CPU generator draws the augmentation, and seeding it alone costs 1 us where
        # torch.manual_seed, which also seeds every CUDA device, costs 200 us per image.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(sample_seed)
            return self.dataset[index]
