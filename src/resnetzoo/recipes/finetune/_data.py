"""The data of one run: read and checked once, split into train, validation and test.

The main process generates (``--synthetic``) or downloads (``--download``) the data
set, reads and checks it (every index line, every image file, the official counts),
carves the validation split, and builds the decoded-image cache while the other
processes wait; they then read the checked data set without checking it again.

Which split chooses the model is the run's *protocol*:

- ``validation split``: a stratified, seeded share of the training images
  (``--val-fraction``); the test images are read once, at the end.
- ``official validation split``: the data set ships one (Flowers-102, or ``val/``
  beside ``test/`` in an image folder).
- ``test-set selection``: ``--val-fraction 0``, the published protocol: every training
  image trains (a shipped validation split joins the training set, as published
  Flowers-102 results train on train + val) and the test set chooses the epoch; every
  output says so, since the test accuracy of the chosen epoch is then optimistic.

Internal to the recipe (a private module): its names are for the recipe's modules.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from resnetzoo.recipes.finetune._distributed import Dist, main_process_first
from resnetzoo.recipes.finetune._splits import carve_validation, drop_excluded
from resnetzoo.recipes.finetune.config import FinetuneConfig
from resnetzoo.recipes.finetune.errors import DatasetError
from resnetzoo.recipes.finetune.images import ImageDataset, build_transforms
from resnetzoo.recipes.finetune.readers import ImageSet, read_dataset
from resnetzoo.recipes.finetune.readers.base import ImageRecord
from resnetzoo.recipes.finetune.readers.cub import download_cub200
from resnetzoo.recipes.finetune.synthetic import make_synthetic_tree

__all__ = ["PROTOCOLS", "RunData", "data_root", "prepare_data"]

logger = logging.getLogger(__name__)

PROTOCOLS = ("validation split", "official validation split", "test-set selection")


@dataclasses.dataclass
class RunData:
    """The datasets of a run.

    Attributes:
        image_set: the data set as read.
        train: the training images (without the validation share; with the official
            validation images under test-set selection).
        val: the validation images, or None under test-set selection.
        test: the test images, without ``--exclude-test-list``.
        protocol: one of :data:`PROTOCOLS`.
        test_excluded: how many test images ``--exclude-test-list`` left out.
        val_trained: how many official validation images joined the training set
            (test-set selection on a data set that ships a validation split).
    """

    image_set: ImageSet
    train: ImageDataset | None
    val: ImageDataset | None
    test: ImageDataset
    protocol: str
    test_excluded: int = 0
    val_trained: int = 0

    @property
    def selection(self) -> ImageDataset:
        """The split each epoch is evaluated on and the best epoch chosen by."""
        return self.val if self.val is not None else self.test

    @property
    def selection_split(self) -> str:
        """``"val"`` or ``"test"``: the prefix of the per-epoch metrics."""
        return "val" if self.val is not None else "test"


def data_root(config: FinetuneConfig) -> Path:
    """Where the data set is: the generated tree for ``--synthetic``, else ``--data-root``."""
    return Path(config.output_dir) / "synthetic_data" if config.synthetic else Path(config.data_root)


def _split(image_set: ImageSet, config: FinetuneConfig, *, training: bool) -> tuple[
        list[ImageRecord], list[ImageRecord] | None, list[ImageRecord], str, int]:
    test = image_set.split("test")
    excluded = 0
    if config.exclude_test_list is not None:
        test, excluded = drop_excluded(test, image_set=image_set, path=Path(config.exclude_test_list))
    if not test:
        raise DatasetError(
            f"{image_set.name} at {image_set.root}: the test split is empty"
            f"{' after --exclude-test-list' if excluded else ''}; an accuracy over no images would read as 0 %"
        )
    if not training:
        return [], None, test, "test-set selection", excluded
    train, official_val = image_set.split("train"), image_set.split("val")
    if config.val_fraction == 0:  # the published protocol: every labelled training image trains
        train, val, protocol = train + official_val, None, "test-set selection"
    elif official_val:
        val, protocol = official_val, "official validation split"
    else:
        train, val = carve_validation(train, classes=image_set.classes, fraction=config.val_fraction,
                                      seed=config.seed)
        protocol = "validation split"
    for name, records in (("train", train), ("validation", val)):
        if records is not None and not records:
            raise DatasetError(
                f"{image_set.name} at {image_set.root}: the {name} split is empty; "
                + ("no class has two training images to hold one out; pass --val-fraction 0 to choose on the "
                   "test set" if name == "validation" else "the data set lists no training images")
            )
    return train, val, test, protocol, excluded


def _datasets(image_set: ImageSet, config: FinetuneConfig, *, training: bool) -> RunData:
    train, val, test, protocol, excluded = _split(image_set, config, training=training)
    val_trained = sum(r.split == "val" for r in train)

    def dataset(records: list[ImageRecord], *, augment: bool) -> ImageDataset:
        transform = build_transforms(train=augment, img_size=config.img_size, crop_padding=config.crop_padding or 0)
        return ImageDataset(image_set, records, transform=transform, bbox_crop=config.bbox_crop,
                            resize=config.resize, resize_mode=config.resize_mode,  # type: ignore[arg-type]
                            cache_dir=config.cache_dir)

    return RunData(
        image_set=image_set,
        train=dataset(train, augment=True) if training else None,
        val=dataset(val, augment=False) if val is not None else None,
        test=dataset(test, augment=False),
        protocol=protocol,
        test_excluded=excluded,
        val_trained=val_trained,
    )


def prepare_data(config: FinetuneConfig, dist: Dist, *, training: bool, progress: bool) -> RunData:
    """Generate / download, read, check, split and cache the data set (the main process first).

    Args:
        config: the run's resolved settings.
        dist: this process's place in the group.
        training: a training run (train, validation and test) or an evaluation (test only).
        progress: show progress bars.

    Raises:
        DatasetError: a missing or broken data set, wrong counts, an empty split.
        ConfigError: an ``--exclude-test-list`` entry that names no test image.
    """
    root = data_root(config)
    dataset = "cub200" if config.synthetic else config.dataset

    def prepare() -> RunData:
        if config.synthetic:
            make_synthetic_tree(root, seed=config.seed)
        elif config.download:
            download_cub200(root, progress=progress)
        image_set = read_dataset(dataset, data_root=root, check_files=True, num_threads=max(1, config.workers or 1),
                                 official_counts=config.official_counts and not config.synthetic)
        data = _datasets(image_set, config, training=training)
        if config.cache_dir is not None and training:
            # The test images are cached when they are first read, at the end, unless the
            # test split chooses the model and is read every epoch.
            for part in (data.train, data.val, data.test if data.val is None else None):
                if part is not None:
                    part.build_cache(num_threads=max(1, config.workers or 1), progress=progress)
        return data

    def read() -> RunData:
        image_set = read_dataset(dataset, data_root=root, check_files=False, official_counts=False)
        return _datasets(image_set, config, training=training)

    data = main_process_first(dist, prepare, others=read)
    if dist.is_main and data.protocol == "test-set selection" and training:
        joined = (f"the {data.val_trained:,} official validation images train too, and " if data.val_trained else "")
        logger.warning("--val-fraction 0: %sthe best epoch is chosen on the test set, as the published results do; "
                       "its test accuracy is optimistic (reported as test-set selection)", joined)
    return data
