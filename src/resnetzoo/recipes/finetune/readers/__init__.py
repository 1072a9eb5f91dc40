"""Data-set readers: every supported layout behind one small interface.

``--dataset`` names a reader; each reads its layout into an
:class:`~resnetzoo.recipes.finetune.readers.base.ImageSet` (classes and one record per
image), and :func:`read_dataset` checks the result the same way for all of them.

- ``cub200``: CUB-200-2011, 5,994 train / 5,794 test images, 200 classes, boxes;
- ``nabirds``: NABirds in CUB's layout, 555 classes (image counts not checked), boxes;
- ``fgvc_aircraft``: FGVC-Aircraft, 6,667 trainval / 3,333 test images, 100 classes;
- ``stanford_cars``: Stanford Cars, 8,144 train / 8,041 test images, 196 classes;
- ``flowers102``: Flowers-102, 1,020 train / 1,020 validation / 6,149 test images, 102 classes;
- ``oxford_pets``: Oxford-IIIT Pets, 3,680 trainval / 3,669 test images, 37 classes;
- ``imagefolder:PATH``: your own class folders (nothing to count against).
"""

from __future__ import annotations

import os
from pathlib import Path

from resnetzoo.recipes.finetune.errors import DatasetError
from resnetzoo.recipes.finetune.readers.base import (
    ImageRecord,
    ImageSet,
    Reader,
    check_counts,
    check_images,
    match_class_order,
)
from resnetzoo.recipes.finetune.readers.cub import CUB200_READER, NABIRDS_READER
from resnetzoo.recipes.finetune.readers.imagefolder import IMAGEFOLDER_READER
from resnetzoo.recipes.finetune.readers.torchvision_sets import (
    FGVC_AIRCRAFT_READER,
    FLOWERS102_READER,
    OXFORD_PETS_READER,
    STANFORD_CARS_READER,
)

__all__ = [
    "READERS",
    "ImageRecord",
    "ImageSet",
    "Reader",
    "match_class_order",
    "read_dataset",
    "resolve_reader",
]

READERS: dict[str, Reader] = {
    reader.name: reader
    for reader in (
        CUB200_READER,
        NABIRDS_READER,
        FGVC_AIRCRAFT_READER,
        STANFORD_CARS_READER,
        FLOWERS102_READER,
        OXFORD_PETS_READER,
        IMAGEFOLDER_READER,
    )
}
"""Every reader by its ``--dataset`` name (``imagefolder`` is given as ``imagefolder:PATH``)."""

_IMAGEFOLDER = "imagefolder:"


def resolve_reader(dataset: str, data_root: str | os.PathLike[str]) -> tuple[Reader, Path]:
    """The reader a ``--dataset`` value names, and the folder it reads.

    Args:
        dataset: a name of :data:`READERS`, or ``"imagefolder:PATH"``.
        data_root: ``--data-root``; the folder for every reader but ``imagefolder``.

    Raises:
        DatasetError: an unknown name (the message lists the known ones).
    """
    if dataset.startswith(_IMAGEFOLDER):
        path = dataset[len(_IMAGEFOLDER):]
        if not path:
            raise DatasetError("--dataset imagefolder:PATH needs the folder, e.g. imagefolder:data/my_birds")
        return READERS["imagefolder"], Path(path).expanduser()
    if dataset not in READERS or dataset == "imagefolder":
        names = [n for n in READERS if n != "imagefolder"] + ["imagefolder:PATH"]
        raise DatasetError(f"--dataset {dataset!r} is not a known data set; choose one of {', '.join(names)}")
    return READERS[dataset], Path(data_root)


def read_dataset(
    dataset: str,
    *,
    data_root: str | os.PathLike[str] = "data",
    check_files: bool = True,
    official_counts: bool = True,
    num_threads: int = 8,
) -> ImageSet:
    """Read and check a data set.

    Args:
        dataset: a name of :data:`READERS` or ``"imagefolder:PATH"``.
        data_root: the folder holding the data set (ignored for ``imagefolder:PATH``).
        check_files: check that every image exists and PIL recognises it.
        official_counts: compare the images per split and the classes with the
            official numbers, where they are known.
        num_threads: threads for the file check.

    Returns:
        The :class:`~resnetzoo.recipes.finetune.readers.base.ImageSet`.

    Raises:
        DatasetError: the data set is missing, an index file is malformed, an image
            is missing or unreadable, or a count differs from the official one; the
            message names the file (and line) and what to do.
    """
    reader, root = resolve_reader(dataset, data_root)
    image_set = reader.read(root)
    if official_counts:
        check_counts(image_set, title=reader.title, counts=reader.counts, num_classes=reader.num_classes,
                     hint="; if that is deliberate (a subset), pass --no-official-counts")
    if check_files:
        check_images(image_set.records, num_threads=num_threads)
    return image_set
