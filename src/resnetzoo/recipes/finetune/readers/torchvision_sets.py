"""FGVC-Aircraft, Stanford Cars, Flowers-102 and Oxford-IIIT Pets, in torchvision's layouts.

Stanford Cars and Flowers-102 keep their lists in MATLAB files, which
:class:`torchvision.datasets.StanfordCars` and :class:`~torchvision.datasets.Flowers102`
read (``loader=`` returns the path, so nothing is decoded); what they return is then
checked entry by entry, and when they fail the file at fault is found and named.
FGVC-Aircraft and Oxford-IIIT Pets keep theirs in text files, read here with the
shared :func:`~resnetzoo.recipes.finetune.readers.base.read_table` as torchvision reads
them (same classes, same order), because torchvision's parsers name no file and line
(an unknown variant is a bare ``KeyError: '747-400'``) and
:class:`~torchvision.datasets.OxfordIIITPet` has no ``loader=`` (it decodes every image
it is asked for).

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

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torchvision.datasets import Flowers102, StanfordCars

from resnetzoo.recipes.finetune.errors import DatasetError
from resnetzoo.recipes.finetune.readers.base import (
    ImageRecord,
    ImageSet,
    Reader,
    read_table,
    relative_key,
)

__all__ = ["FGVC_AIRCRAFT_READER", "FLOWERS102_READER", "OXFORD_PETS_READER", "STANFORD_CARS_READER"]


# --------------------------------------------------------------------- FGVC-Aircraft
def _read_aircraft(root: Path) -> ImageSet:
    data = root / "fgvc-aircraft-2013b" / "data"
    if not (data / "images").is_dir() or not (data / "variants.txt").is_file():
        raise DatasetError(f"no FGVC-Aircraft at {root / 'fgvc-aircraft-2013b'} (no data/images/ or "
                           f"data/variants.txt). {FGVC_AIRCRAFT_READER.obtain}")
    index: dict[str, int] = {}
    for number, (variant,) in read_table(data / "variants.txt", columns=1):
        if variant in index:
            raise DatasetError(f"variants.txt:{number}: {variant!r} is listed twice; re-extract the archive")
        index[variant] = len(index)
    records: list[ImageRecord] = []
    for tv_split, split in (("trainval", "train"), ("test", "test")):
        path = data / f"images_variant_{tv_split}.txt"
        for number, (image_id, variant) in read_table(path, columns=2, what=FGVC_AIRCRAFT_READER.obtain):
            where = f"{path.name}:{number}"
            if variant not in index:
                raise DatasetError(f"{where}: {variant!r} is not one of the {len(index)} variants in "
                                   f"{data / 'variants.txt'}; re-extract the archive")
            image = data / "images" / f"{image_id}.jpg"
            records.append(ImageRecord(key=relative_key(image, root), path=image, label=index[variant], split=split,
                                       source=where))
    return ImageSet(name="fgvc_aircraft", root=root, classes=tuple(index), records=tuple(records),
                    classes_source=str(data / "variants.txt"))


# ------------------------------------------------------------ Stanford Cars, Flowers-102
@dataclasses.dataclass(frozen=True)
class _MatLayout:
    """Where a torchvision data set keeps its lists in MATLAB files, to name them in messages.

    Attributes:
        folder: the data set's folder under ``--data-root``.
        make: the torchvision dataset class.
        splits: torchvision split -> (our split, the file listing its images, relative to
            ``folder``, and what one of its entries is called).
        files: every MATLAB file torchvision reads, relative to ``folder``, with the key
            it reads and its md5 where torchvision checks one.
        images: the image folders, relative to ``folder``.
    """

    folder: str
    make: Callable[..., Any]
    splits: dict[str, tuple[str, str, str]]
    files: tuple[tuple[str, str, str | None], ...]
    images: tuple[str, ...]


def _path_of(path: Any) -> str:
    """A ``loader=`` that returns the path it is given: the dataset lists its files, nothing is decoded."""
    return str(path)


def _official_md5(key: str) -> str | None:
    """The md5 torchvision checks Flowers-102's ``key`` file against (it keeps them in a private table)."""
    entry = getattr(Flowers102, "_file_dict", {}).get(key)
    return entry[1] if entry else None


def _matlab_problem(layout: _MatLayout, reader: Reader, base: Path) -> str | None:
    """The first file of ``layout`` that is missing, not the official one, or unreadable; None if all read."""
    import scipy.io
    from torchvision.datasets.utils import check_integrity

    for folder in layout.images:
        if not (base / folder).is_dir():
            return f"no {reader.title} at {base} (no {folder}/). {reader.obtain}"
    for name, key, md5 in layout.files:
        path = base / name
        if not path.is_file():
            return f"{path}: missing. {reader.obtain}"
        if md5 is not None and not check_integrity(str(path), md5):
            return f"{path}: not the official file (its md5 is not {md5}); download it again. {reader.obtain}"
        try:
            content = scipy.io.loadmat(path, squeeze_me=True)
        except Exception as e:  # scipy raises ValueError, MatReadError, TypeError ... for a broken file
            return f"{path}: not a readable MATLAB file ({type(e).__name__}: {e}); download it again"
        if key not in content:
            return f"{path}: has no {key!r} table (it has {', '.join(k for k in content if not k.startswith('__'))})"
    return None


def _flowers_entry_problem(base: Path, tv_split: str) -> str | None:
    """The entry of setid.mat whose image id has no label in imagelabels.mat (torchvision: a bare KeyError)."""
    import scipy.io

    key = _FLOWERS_SPLITS[tv_split]
    ids = scipy.io.loadmat(base / "setid.mat", squeeze_me=True)[key].reshape(-1).tolist()
    labelled = scipy.io.loadmat(base / "imagelabels.mat", squeeze_me=True)["labels"].reshape(-1).size
    for number, image_id in enumerate(ids, start=1):
        if not 1 <= int(image_id) <= labelled:
            return (f"{base / 'setid.mat'} {key} entry {number}: image id {image_id} has no label in "
                    f"imagelabels.mat ({labelled:,} labels); download both files again")
    return None


def _read_matlab_layout(root: Path, layout: _MatLayout, reader: Reader) -> ImageSet:
    """Read every split with torchvision's class; name the file (and entry) of whatever is wrong."""
    try:
        import scipy.io  # noqa: F401  (torchvision reads the .mat files with it)
    except ImportError:
        raise DatasetError(
            f"{reader.title} keeps its labels in MATLAB files, which need scipy: pip install \"resnetzoo[recipe]\""
        ) from None
    base = root / layout.folder
    classes: list[str] = []
    records: list[ImageRecord] = []
    for tv_split, (split, listed_in, entry) in layout.splits.items():
        try:
            dataset = layout.make(str(root), split=tv_split, loader=_path_of)
        except Exception as e:  # "Dataset not found (or corrupted)", KeyError, ValueError ...: find the file
            problem = _matlab_problem(layout, reader, base)
            if problem is None and layout.make is Flowers102:
                problem = _flowers_entry_problem(base, tv_split)
            raise DatasetError(problem or (
                f"{base / listed_in}: torchvision cannot read the {tv_split} list ({type(e).__name__}: {e}); "
                f"download the files again. {reader.obtain}")) from None
        classes = [str(c) for c in dataset.classes]
        for index in range(len(dataset)):
            path, label = dataset[index]
            where = f"{listed_in} {entry} {index + 1}"
            if not 0 <= int(label) < len(classes):
                raise DatasetError(f"{base / listed_in} {entry} {index + 1}: class {int(label) + 1} is not one of "
                                   f"the {len(classes)} classes (1..{len(classes)}); download the files again")
            path = Path(path)
            records.append(ImageRecord(key=relative_key(path, root), path=path, label=int(label), split=split,
                                       source=where))
    return ImageSet(name=reader.name, root=root, classes=tuple(classes), records=tuple(records),
                    classes_source=f"{reader.title}'s class list under {base}")


_CARS = _MatLayout(
    folder="stanford_cars", make=StanfordCars,
    splits={"train": ("train", "devkit/cars_train_annos.mat", "annotation"),
            "test": ("test", "cars_test_annos_withlabels.mat", "annotation")},
    files=(("devkit/cars_meta.mat", "class_names", None), ("devkit/cars_train_annos.mat", "annotations", None),
           ("cars_test_annos_withlabels.mat", "annotations", None)),
    images=("devkit", "cars_train", "cars_test"),
)
_FLOWERS_SPLITS = {"train": "trnid", "val": "valid", "test": "tstid"}  # the tables of setid.mat
_FLOWERS = _MatLayout(
    folder="flowers-102", make=Flowers102,
    splits={tv: (tv, "setid.mat", f"{table} entry") for tv, table in _FLOWERS_SPLITS.items()},
    files=(("imagelabels.mat", "labels", _official_md5("label")), ("setid.mat", "trnid", _official_md5("setid"))),
    images=("jpg",),
)


def _read_cars(root: Path) -> ImageSet:
    return _read_matlab_layout(root, _CARS, STANFORD_CARS_READER)


def _read_flowers(root: Path) -> ImageSet:
    return _read_matlab_layout(root, _FLOWERS, FLOWERS102_READER)


# ----------------------------------------------------------------- Oxford-IIIT Pets
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
