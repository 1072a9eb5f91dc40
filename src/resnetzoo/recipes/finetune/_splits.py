"""Which images train, which choose the model, which measure it.

Choosing the best epoch on the test set (as most published fine-grained results do,
since CUB-200 ships no validation split) inflates the reported accuracy: the test set
then takes part in training decisions. :func:`carve_validation` holds out a stratified,
seeded share of each class's training images instead; the test set is evaluated once,
at the end. :func:`read_exclusions` reads the test images to leave out (CUB's test
images that also appear in ImageNet).

Internal to the recipe (a private module): its names are for the recipe's modules.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from resnetzoo.recipes.finetune._seeding import derive_seed
from resnetzoo.recipes.finetune.errors import ConfigError, DatasetError
from resnetzoo.recipes.finetune.readers.base import ImageRecord, ImageSet, read_table

__all__ = ["carve_validation", "drop_excluded", "read_exclusions"]


def carve_validation(
    records: Sequence[ImageRecord], *, classes: Sequence[str], fraction: float, seed: int
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Split training records into (train, validation), stratified by class and seeded.

    Each class gives ``round(fraction x its images)`` images to validation, at least one
    when it has two or more and ``fraction > 0``. Which ones depends only on the seed,
    the class name and the image keys: not on the order of the records or of the class
    list, so a resumed run, or one whose ``classes.txt`` lists the classes in another
    order, holds out the same images.

    Args:
        records: the training split.
        classes: class names by label.
        fraction: the share held out, in ``[0, 1)``.
        seed: the run's seed.

    Returns:
        ``(train, validation)``, each in the order of ``records``.
    """
    by_class: dict[int, list[ImageRecord]] = defaultdict(list)
    for record in records:
        by_class[record.label].append(record)
    held_out: set[str] = set()
    for label, members in by_class.items():
        count = round(fraction * len(members))
        if fraction > 0 and len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)  # every class keeps a training image
        keys = sorted(r.key for r in members)
        random.Random(derive_seed(seed, "validation", classes[label])).shuffle(keys)
        held_out.update(keys[:count])
    return [r for r in records if r.key not in held_out], [r for r in records if r.key in held_out]


def read_exclusions(path: Path) -> list[tuple[int, str]]:
    """The entries of an ``--exclude-test-list`` file: ``(line, entry)``; ``#`` starts a comment."""
    entries = []
    try:
        rows = read_table(path, columns=None)
    except DatasetError as e:  # not UTF-8: say which flag the file came from
        raise ConfigError(f"--exclude-test-list: {e}") from None
    for line, fields in rows:
        text = " ".join(fields).split("#", 1)[0].strip()
        if text:
            entries.append((line, text))
    return entries


def _names(record: ImageRecord, root: Path) -> set[str]:
    """What an exclusion entry may call a record: its key, or its path under the root or ``images/``."""
    names = {record.key}
    for base in (root, root / "images"):
        if record.path.is_relative_to(base):
            names.add(record.path.relative_to(base).as_posix())
    return names


def drop_excluded(test: Sequence[ImageRecord], *, image_set: ImageSet, path: Path) -> tuple[list[ImageRecord], int]:
    """Leave out the test images listed in ``path``.

    Returns:
        The remaining test records and how many were dropped.

    Raises:
        ConfigError: an entry that names no test image (file and line named): a typo
            or a list for another data set would otherwise drop nothing, silently.
    """
    entries = read_exclusions(path)
    index: dict[str, str] = {}
    for record in test:
        for name in _names(record, image_set.root):
            index[name] = record.key
    dropped: set[str] = set()
    for line, entry in entries:
        key = index.get(entry)
        if key is None:
            raise ConfigError(
                f"{path.name}:{line}: {entry!r} is not a test image of {image_set.root} (give image ids or "
                f"paths relative to the data set's folder)"
            )
        dropped.add(key)
    return [r for r in test if r.key not in dropped], len(dropped)
