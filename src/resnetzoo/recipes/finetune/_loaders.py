"""The data loaders of a run, on one process or many.

Each process trains on its share of a seeded shuffle (:func:`train_loader`) and
evaluates every ``world_size``-th image (:func:`eval_loader`), so each image is
evaluated exactly once over all processes.

Internal to the recipe (a private module): its names are for the recipe's modules.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from resnetzoo.recipes.finetune._distributed import Dist
from resnetzoo.recipes.finetune._seeding import SeededDataset, SeededSampler, seed_worker

__all__ = ["ShardSampler", "eval_loader", "train_loader"]


class ShardSampler(Sampler[int]):
    """Every ``world_size``-th index from ``rank``: each image is seen once, none padded."""

    def __init__(self, length: int, *, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _loader(dataset: Dataset, *, workers: int, seed: int, device: torch.device, batch_size: int,
            sampler: Sampler, drop_last: bool) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=seed_worker,
        # Its own generator, so creating a loader does not draw from the global RNG.
        generator=torch.Generator().manual_seed(seed),
    )


def train_loader(dataset: Dataset, *, dist: Dist, workers: int, seed: int, device: torch.device,
                 batch_size: int) -> tuple[SeededSampler, DataLoader]:
    """This process's share of a seeded shuffle, whole batches only; call ``sampler.set_epoch`` each epoch."""
    sampler = SeededSampler(
        DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=seed,
                           drop_last=True),
        seed=seed,
    )
    loader = _loader(SeededDataset(dataset), workers=workers, seed=seed, device=device, batch_size=batch_size,
                     sampler=sampler, drop_last=True)
    return sampler, loader


def eval_loader(dataset: Dataset, *, dist: Dist, workers: int, seed: int, device: torch.device,
                batch_size: int) -> DataLoader:
    """This process's shard of an evaluation set, in order, the last batch kept."""
    return _loader(dataset, workers=workers, seed=seed, device=device, batch_size=batch_size, drop_last=False,
                   sampler=ShardSampler(len(dataset), rank=dist.rank, world_size=dist.world_size))  # type: ignore[arg-type]
