"""FGVC-Aircraft, Stanford Cars, Flowers-102 and Oxford-IIIT Pets, in torchvision's layouts.

Each is read by torchvision's own dataset class where it can tell where its images are
without decoding them (``loader=`` returns the path): :class:`torchvision.datasets.FGVCAircraft`,
:class:`~torchvision.datasets.StanfordCars` and :class:`~torchvision.datasets.Flowers102`.
:class:`~torchvision.datasets.OxfordIIITPet` has no ``loader=`` and decodes every image
it is asked for, so its two index files are read here, as torchvision reads them
(same classes, same order).

The files go under ``--data-root`` exactly where torchvision puts them (its
``root``); downloading is left to the user, since several official links are dead:

============== ======================================================================
data set       files under ``--data-root``
============== ======================================================================
fgvc_aircraft  ``fgvc-aircraft-2013b/data/{images/, variants.txt, images_variant_*.txt}``
stanford_cars  ``stanford_cars/{devkit/, cars_train/, cars_test/, cars_test_annos_withlabels.mat}``
flowers102     ``flowers-102/{jpg/, imagelabels.mat, setid.mat}``
oxford_pets    ``oxford-iiit-pet/{images/, annotations/trainval.txt, annotations/test.txt}``
============== ======================================================================

Stanford Cars and Flowers-102 keep their labels in MATLAB files, which torchvision
reads with scipy (``pip install "resnetzoo[recipe]"``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torchvision.datasets import FGVCAircraft, Flowers102, StanfordCars

from resnetzoo.recipes.finetune.errors import DatasetError
from resnetzoo.recipes.finetune.readers.base import (
    ImageRecord,
    ImageSet,
    Reader,
    read_table,
    relative_key,
)

__all__ = ["FGVC_AIRCRAFT_READER", "FLOWERS102_READER", "OXFORD_PETS_READER", "STANFORD_CARS_READER"]


def _path_of(path: Any) -> str:
    """A ``loader=`` that returns the path it is given: the dataset lists its files, nothing is decoded."""
    return str(path)


def _from_torchvision(
    root: Path, *, name: str, title: str, make: Callable[..., Any], splits: dict[str, str], folder: str,
    obtain: str, needs_scipy: bool = False,
) -> ImageSet:
    """Read the ``splits`` (torchvision split -> our split) of a torchvision dataset class."""
    if needs_scipy:
        try:
            import scipy.io  # noqa: F401  (torchvision reads the .mat files with it)
        except ImportError:
            raise DatasetError(
                f"{title} keeps its labels in MATLAB files, which need scipy: pip install \"resnetzoo[recipe]\""
            ) from None
    classes: list[str] = []
    records: list[ImageRecord] = []
    for tv_split, split in splits.items():
        try:
            dataset = make(str(root), split=tv_split, loader=_path_of)
        except RuntimeError as e:  # torchvision's "Dataset not found (or corrupted). You can use download=True ..."
            said = str(e).split(".")[0]  # its advice to download does not apply: downloads are the user's
            raise DatasetError(f"no {title} at {root / folder} (torchvision: {said}). {obtain}") from None
        except Exception as e:  # a malformed index file: torchvision raises KeyError, ValueError ...
            raise DatasetError(
                f"{title} at {root / folder}: cannot read the {tv_split} index ({type(e).__name__}: {e}); "
                f"re-extract the archive"
            ) from None
        classes = [str(c) for c in dataset.classes]
        for index in range(len(dataset)):
            path, label = dataset[index]
            path = Path(path)
            records.append(ImageRecord(key=relative_key(path, root), path=path, label=int(label), split=split,
                                       source=f"{title} {tv_split} image {index + 1}"))
    return ImageSet(name=name, root=root, classes=tuple(classes), records=tuple(records),
                    classes_source=f"{title}'s class list under {root / folder}")


def _read_aircraft(root: Path) -> ImageSet:
    return _from_torchvision(root, name="fgvc_aircraft", title="FGVC-Aircraft", make=FGVCAircraft,
                             splits={"trainval": "train", "test": "test"}, folder="fgvc-aircraft-2013b",
                             obtain=FGVC_AIRCRAFT_READER.obtain)


def _read_cars(root: Path) -> ImageSet:
    return _from_torchvision(root, name="stanford_cars", title="Stanford Cars", make=StanfordCars,
                             splits={"train": "train", "test": "test"}, folder="stanford_cars",
                             obtain=STANFORD_CARS_READER.obtain, needs_scipy=True)


def _read_flowers(root: Path) -> ImageSet:
    return _from_torchvision(root, name="flowers102", title="Flowers-102", make=Flowers102,
                             splits={"train": "train", "val": "val", "test": "test"}, folder="flowers-102",
                             obtain=FLOWERS102_READER.obtain, needs_scipy=True)


def _pet_class(image_id: str) -> str:
    # torchvision's class names: "american_pit_bull_terrier_12" -> "American Pit Bull Terrier".
    return " ".join(part.title() for part in image_id.rsplit("_", 1)[0].split("_"))


def _read_pets(root: Path) -> ImageSet:
    base = root / "oxford-iiit-pet"
    if not (base / "images").is_dir() or not (base / "annotations").is_dir():
        raise DatasetError(f"no Oxford-IIIT Pets at {base} (no images/ or annotations/). {OXFORD_PETS_READER.obtain}")
    names: dict[int, str] = {}
    records: list[ImageRecord] = []
    for file_name, split in (("trainval.txt", "train"), ("test.txt", "test")):
        path = base / "annotations" / file_name
        for number, fields in read_table(path, columns=None, what=OXFORD_PETS_READER.obtain):
            if fields[0].startswith("#"):
                continue
            where = f"{file_name}:{number}"
            if len(fields) != 4 or not fields[1].isdigit():
                raise DatasetError(f"{where}: expected '<image> <class id> <species> <breed id>', got {' '.join(fields)!r}")
            class_id, name = int(fields[1]), _pet_class(fields[0])
            if names.setdefault(class_id, name) != name:
                raise DatasetError(f"{where}: class id {class_id} is {name!r} here but {names[class_id]!r} before")
            image = base / "images" / f"{fields[0]}.jpg"
            records.append(ImageRecord(key=relative_key(image, root), path=image, label=class_id, split=split,
                                       source=where))
    ids = sorted(names)
    if ids != list(range(1, len(ids) + 1)):
        raise DatasetError(f"{base / 'annotations'}: class ids must run 1..{len(ids)} without gaps")
    records = [ImageRecord(r.key, r.path, r.label - 1, r.split, None, r.source) for r in records]
    return ImageSet(name="oxford_pets", root=root, classes=tuple(names[i] for i in ids), records=tuple(records),
                    classes_source=f"the image names in {base / 'annotations'}")


FGVC_AIRCRAFT_READER = Reader(
    name="fgvc_aircraft",
    title="FGVC-Aircraft",
    read=_read_aircraft,
    layout="--data-root/fgvc-aircraft-2013b/data/{images/, variants.txt, images_variant_trainval.txt, "
           "images_variant_test.txt}",
    counts={"train": 6_667, "test": 3_333},
    num_classes=100,
    obtain=("Download fgvc-aircraft-2013b.tar.gz from www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/ and "
            "extract it into --data-root"),
)
"""FGVC-Aircraft (``--dataset fgvc_aircraft``): trainval / test, 100 variants."""
STANFORD_CARS_READER = Reader(
    name="stanford_cars",
    title="Stanford Cars",
    read=_read_cars,
    layout="--data-root/stanford_cars/{devkit/, cars_train/, cars_test/, cars_test_annos_withlabels.mat}",
    counts={"train": 8_144, "test": 8_041},
    num_classes=196,
    obtain=("The original download has been offline since 2023: put a copy in torchvision's layout under "
            "--data-root/stanford_cars, or use a copy in folder layout with --dataset imagefolder:PATH"),
)
"""Stanford Cars (``--dataset stanford_cars``): 196 models."""
FLOWERS102_READER = Reader(
    name="flowers102",
    title="Flowers-102",
    read=_read_flowers,
    layout="--data-root/flowers-102/{jpg/, imagelabels.mat, setid.mat}",
    counts={"train": 1_020, "val": 1_020, "test": 6_149},
    num_classes=102,
    obtain=("Download 102flowers.tgz, imagelabels.mat and setid.mat from www.robots.ox.ac.uk/~vgg/data/flowers/102/ "
            "into --data-root/flowers-102 and extract the archive there"),
)
"""Flowers-102 (``--dataset flowers102``): train / val / test, 102 species."""
OXFORD_PETS_READER = Reader(
    name="oxford_pets",
    title="Oxford-IIIT Pets",
    read=_read_pets,
    layout="--data-root/oxford-iiit-pet/{images/, annotations/trainval.txt, annotations/test.txt}",
    counts={"train": 3_680, "test": 3_669},
    num_classes=37,
    obtain=("Download images.tar.gz and annotations.tar.gz from www.robots.ox.ac.uk/~vgg/data/pets/ and "
            "extract both into --data-root/oxford-iiit-pet"),
)
"""Oxford-IIIT Pets (``--dataset oxford_pets``): trainval / test, 37 breeds."""
