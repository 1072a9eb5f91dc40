"""The datasets and data loaders of one CUB-200-2011 run, on one rank or many.

Rank 0 downloads, generates or caches the tree and checks every image while the other
ranks wait, then they read the checked tree (:func:`_prepare_data`). Each rank trains on
its share of a seeded shuffle (:func:`_train_loader`) and tests on every
``world_size``-th image (:func:`_test_loader`).

Internal to the recipe: nothing here is public API.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from resnetzoo.recipes.cub200.config import ConfigError, CUB200Config
from resnetzoo.recipes.cub200.data import (
    CUB200,
    CUB200Tree,
    CUB200TreeError,
    build_transforms,
    download_cub200,
    make_synthetic_tree,
    read_tree,
)
from resnetzoo.recipes.cub200.distributed import _Dist, _main_process_first, _show_progress
from resnetzoo.recipes.cub200.seeding import _seed_worker, _SeededDataset, _SeededSampler

__all__: list[str] = []


class _ShardSampler(Sampler[int]):
    """Every ``world_size``-th index from ``rank``: each test image is seen once, none padded."""

    def __init__(self, length: int, *, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _tree_root(config: CUB200Config) -> Path:
    return Path(config.output_dir) / "synthetic_data" if config.synthetic else Path(config.data_root)


def _make_datasets(config: CUB200Config, tree: CUB200Tree, *, splits: tuple[str, ...]) -> dict[str, CUB200]:
    for split in splits:
        if not tree.split(split):  # type: ignore[arg-type]
            raise CUB200TreeError(
                f"{tree.root / 'train_test_split.txt'}: the {split} split is empty (no image is marked "
                f"{int(split == 'train')}); an accuracy over no images would read as 0 %"
            )
    return {
        split: CUB200(
            tree,
            split=split,  # type: ignore[arg-type]
            transform=build_transforms(train=split == "train", img_size=config.img_size, crop_padding=config.crop_padding),
            bbox_crop=config.bbox_crop,
            resize=config.resize,
            resize_mode=config.resize_mode,  # type: ignore[arg-type]
            cache_dir=config.cache_dir,
        )
        for split in splits
    }


def _prepare_data(config: CUB200Config, dist: _Dist, *, splits: tuple[str, ...]) -> dict[str, CUB200]:
    """Rank 0 downloads / generates / caches and checks the tree; the others then read it."""
    root = _tree_root(config)
    show = _show_progress(config, dist)

    def prepare() -> dict[str, CUB200]:
        if config.synthetic:
            make_synthetic_tree(root, seed=config.seed)
        elif config.download:
            download_cub200(root, progress=show)
        datasets = _make_datasets(config, read_tree(root, check_images=True), splits=splits)
        if config.cache_dir is not None:
            for dataset in datasets.values():
                dataset.build_cache(num_threads=max(1, config.workers), progress=show)
        return datasets

    def read() -> dict[str, CUB200]:
        return _make_datasets(config, read_tree(root, check_images=False), splits=splits)

    return _main_process_first(dist, prepare, others=read)


def _micro_batch_size(config: CUB200Config, dist: _Dist) -> int:
    parts = dist.world_size * config.grad_accum
    if config.batch_size % parts:
        raise ConfigError(
            f"--batch-size {config.batch_size} must be divisible by processes x --grad-accum "
            f"({dist.world_size} x {config.grad_accum} = {parts}): it is the global batch per optimizer step"
        )
    return config.batch_size // parts


def _loader(
    dataset: Dataset, *, config: CUB200Config, device: torch.device, batch_size: int, sampler: Sampler, drop_last: bool
) -> DataLoader:
    workers = config.workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_seed_worker,
        # Its own generator, so creating a loader does not draw from the global RNG.
        generator=torch.Generator().manual_seed(config.seed),
    )


def _train_loader(
    train_set: CUB200, *, config: CUB200Config, dist: _Dist, device: torch.device, batch_size: int
) -> tuple[_SeededSampler, DataLoader]:
    """This rank's share of a seeded shuffle, whole batches only; call ``sampler.set_epoch`` each epoch."""
    sampler = _SeededSampler(
        DistributedSampler(train_set, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
                           seed=config.seed, drop_last=True),
        seed=config.seed,
    )
    loader = _loader(_SeededDataset(train_set), config=config, device=device, batch_size=batch_size,
                     sampler=sampler, drop_last=True)
    return sampler, loader


def _test_loader(
    test_set: CUB200, *, config: CUB200Config, dist: _Dist, device: torch.device, batch_size: int
) -> DataLoader:
    """This rank's shard of the test set, in order, the last batch kept."""
    return _loader(test_set, config=config, device=device, batch_size=batch_size, drop_last=False,
                   sampler=_ShardSampler(len(test_set), rank=dist.rank, world_size=dist.world_size))
