"""CUB-200-2011 data: the official tree, its download, a synthetic stand-in, a decoded-image cache.

The official tree (Wah et al., 2011, CaltechDATA record 65de6-vp158) is::

    CUB_200_2011/
      images/NNN.Class_Name/*.jpg
      images.txt               <image id> <path under images/>
      train_test_split.txt     <image id> <1 = train, 0 = test>
      image_class_labels.txt   <image id> <class id, 1-based>
      classes.txt              <class id> <NNN.Class_Name>
      bounding_boxes.txt       <image id> <x> <y> <width> <height>   (pixels)

Every table is joined on the image id. Ids are not in file-name order within a class,
so a sorted folder listing must never be paired with the split file.

:func:`read_tree` parses and checks a tree once (every id in every table, labels in
range, every image present and recognisable) and raises :class:`CUB200TreeError`
naming the file and line of the first problem. :class:`CUB200` is the dataset; it
returns ``uint8`` image tensors resized to the pre-crop size, optionally from a cache
of images decoded once (:meth:`CUB200.build_cache`). :func:`download_cub200` fetches
and verifies the official archive, resuming an interrupted download, and extracts it
with :func:`safe_extract`. :func:`make_synthetic_tree` writes a small tree of real
JPEG files in the same layout, for trying the pipeline without the 1.1 GB download.
"""

from __future__ import annotations

import colorsys
import dataclasses
import hashlib
import logging
import math
import os
import random
import shutil
import tarfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from resnetzoo._io import (
    atomic_path,
    http_download,
    remove_orphans,
    remove_orphans_in,
    sha256_file,
    temporary_name,
)
from resnetzoo.errors import ChecksumError, DownloadError, ResNetZooError

__all__ = [
    "CUB200",
    "CUB200_SHA256",
    "CUB200_SIZE",
    "CUB200_URL",
    "CUB200Record",
    "CUB200Tree",
    "CUB200TreeError",
    "ClassListMismatchError",
    "UnsafeArchiveError",
    "build_transforms",
    "download_cub200",
    "find_tree",
    "make_synthetic_tree",
    "match_class_order",
    "normalize_batch",
    "read_tree",
    "safe_extract",
]

CUB200_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1"
CUB200_SIZE = 1_150_585_339
CUB200_SHA256 = "0c685df5597a8b24909f6a7c9db6d11e008733779a671760afef78feb49bf081"

TREE_DIRNAME = "CUB_200_2011"
ARCHIVE_NAME = "CUB_200_2011.tgz"
_SYNTHETIC_MARKER = "SYNTHETIC_CUB200_TREE.txt"
_INDEX_FILES = (
    "images.txt",
    "classes.txt",
    "image_class_labels.txt",
    "train_test_split.txt",
    "bounding_boxes.txt",
)

logger = logging.getLogger(__name__)

Split = Literal["train", "test"]
ResizeMode = Literal["square", "shorter"]


class CUB200TreeError(ResNetZooError, ValueError):
    """A CUB-200-2011 tree is missing, incomplete or inconsistent.

    The message names the file (and line) at fault and what to do about it.
    """


class UnsafeArchiveError(ResNetZooError, ValueError):
    """An archive member would land outside the extraction folder, or is a device or fifo."""


# ----------------------------------------------------------------------------------- the tree
@dataclasses.dataclass(frozen=True)
class CUB200Record:
    """One image of the tree, joined across the index files by its id.

    Attributes:
        image_id: the 1-based id used by every index file.
        path: path under ``images/`` as written in ``images.txt``.
        label: 0-based class index (the file's class id minus one).
        is_train: True for the train split, False for the test split.
        bbox: bird bounding box ``(x, y, width, height)`` in pixels.
        line: line of ``images.txt`` that names the image, for error messages.
    """

    image_id: int
    path: str
    label: int
    is_train: bool
    bbox: tuple[float, float, float, float]
    line: int


@dataclasses.dataclass(frozen=True)
class CUB200Tree:
    """A parsed and checked CUB-200-2011 tree (see :func:`read_tree`).

    Attributes:
        root: the folder holding ``images.txt`` and ``images/``.
        classes: class names in label order, without the ``NNN.`` prefix
            (``"Black_footed_Albatross"``).
        records: every image, in ``images.txt`` order.
        fingerprint: sha256 of the index files, so caches notice a changed tree.
    """

    root: Path
    classes: tuple[str, ...]
    records: tuple[CUB200Record, ...]
    fingerprint: str

    def split(self, split: Split) -> list[CUB200Record]:
        """The records of one split, ``"train"`` or ``"test"``, in ``images.txt`` order."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return [r for r in self.records if r.is_train == (split == "train")]


def find_tree(root: str | os.PathLike[str]) -> Path | None:
    """Locate a tree at ``root`` itself or at ``root/CUB_200_2011``; None if neither has ``images.txt``."""
    root = Path(root)
    for candidate in (root, root / TREE_DIRNAME):
        if (candidate / "images.txt").is_file():
            return candidate
    return None


def _read_table(path: Path, *, columns: int) -> list[tuple[int, list[str]]]:
    """Rows of a whitespace-separated index file as ``(line number, fields)``; blank lines skipped."""
    if not path.is_file():
        raise CUB200TreeError(
            f"{path}: missing; a CUB-200-2011 tree needs {', '.join(_INDEX_FILES)} and images/ "
            f"(re-extract the archive, or download it again with download=True / --download)"
        )
    rows = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CUB200TreeError(
                    f"{path.name}:{number}: not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1}); "
                    f"the index files are plain UTF-8: re-extract the archive or save {path} as UTF-8"
                ) from None
            if not text.strip():
                continue
            # maxsplit keeps a path with spaces in one field.
            fields = text.strip().split(maxsplit=columns - 1)
            if len(fields) != columns:
                raise CUB200TreeError(
                    f"{path.name}:{number}: expected {columns} fields, found {len(fields)} in {text.strip()!r}"
                )
            rows.append((number, fields))
    return rows


def _parse_number(value: str, kind: type, *, where: str, what: str) -> int | float:
    try:
        return kind(value)
    except ValueError:
        raise CUB200TreeError(f"{where}: {what} must be a{'n integer' if kind is int else ' number'}, got {value!r}") from None


def _id_table(
    path: Path, *, columns: int, parse: Callable[[str, list[str]], object]
) -> dict[int, tuple[int, object]]:
    """Map id -> (line, parsed value) for a table whose first column is an id."""
    table: dict[int, tuple[int, object]] = {}
    for number, fields in _read_table(path, columns=columns):
        where = f"{path.name}:{number}"
        key = _parse_number(fields[0], int, where=where, what="the id")
        if key < 1:
            raise CUB200TreeError(f"{where}: ids are 1-based, got {key}")
        if key in table:
            raise CUB200TreeError(f"{where}: id {key} is listed twice (first on line {table[key][0]})")
        table[key] = (number, parse(where, fields[1:]))
    return table


def _parse_split(where: str, fields: list[str]) -> bool:
    if fields[0] not in ("0", "1"):
        raise CUB200TreeError(f"{where}: the split must be 1 (train) or 0 (test), got {fields[0]!r}")
    return fields[0] == "1"


def _parse_bbox(where: str, fields: list[str]) -> tuple[float, float, float, float]:
    x, y, w, h = (_parse_number(v, float, where=where, what="a bounding-box value") for v in fields)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise CUB200TreeError(f"{where}: bounding box (x={x}, y={y}, w={w}, h={h}) has a value that is not a finite number")
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise CUB200TreeError(f"{where}: bounding box (x={x}, y={y}, w={w}, h={h}) needs x, y >= 0 and w, h > 0")
    return (x, y, w, h)


def _check_same_ids(images: dict[int, tuple[int, object]], other: dict[int, tuple[int, object]], name: str) -> None:
    for image_id, (line, _) in images.items():
        if image_id not in other:
            raise CUB200TreeError(f"images.txt:{line}: image id {image_id} has no line in {name}")
    for image_id, (line, _) in other.items():
        if image_id not in images:
            raise CUB200TreeError(f"{name}:{line}: image id {image_id} is not in images.txt")


def _check_image(root: Path, record: CUB200Record) -> str | None:
    """Return a problem description, or None when the file exists and PIL recognises it."""
    path = root / "images" / record.path
    if not path.is_file():
        return f"images.txt:{record.line}: image file {path} does not exist"
    try:
        # Reads the header only: cheap enough for every image at start-up.
        with Image.open(path):
            pass
    except Image.DecompressionBombError as e:
        return f"images.txt:{record.line}: {path} {_too_large(e)}"
    except (UnidentifiedImageError, OSError) as e:
        return f"images.txt:{record.line}: {path} is not a readable image ({e})"
    return None


def _too_large(error: Exception) -> str:
    # PIL refuses images over twice Image.MAX_IMAGE_PIXELS: decoding one could take
    # gigabytes (a "decompression bomb"). No photograph of a data set comes near it.
    return (
        f"is too large to decode safely ({error}); remove or shrink it, or raise "
        f"PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
    )


def _fingerprint(root: Path) -> str:
    digest = hashlib.sha256()
    for name in _INDEX_FILES:
        digest.update((root / name).read_bytes())
    return digest.hexdigest()


def read_tree(root: str | os.PathLike[str], *, check_images: bool = True, num_threads: int = 8) -> CUB200Tree:
    """Parse and check a CUB-200-2011 tree.

    Args:
        root: the tree (the folder with ``images.txt``) or its parent holding ``CUB_200_2011/``.
        check_images: check that every image exists and PIL recognises its header
            (a few seconds for the 11,788 images); the full decode is checked when the
            cache is built (:meth:`CUB200.build_cache`) or the image is first read.
        num_threads: threads for the image check.

    Returns:
        The parsed :class:`CUB200Tree`.

    Raises:
        CUB200TreeError: no tree at ``root``, a missing index file, a malformed line, an
            id missing from or extra in a table, a class id out of range, or a missing
            or unrecognisable image; the message names the file and line.
    """
    found = find_tree(root)
    if found is None:
        raise CUB200TreeError(
            f"no CUB-200-2011 tree at {Path(root)}: expected {Path(root) / 'images.txt'} or "
            f"{Path(root) / TREE_DIRNAME / 'images.txt'}. Download it (download=True / --download, "
            f"1.1 GB) or try the pipeline on generated data (--synthetic)"
        )
    classes_path = found / "classes.txt"
    classes = _id_table(classes_path, columns=2, parse=lambda where, f: f[0])
    if sorted(classes) != list(range(1, len(classes) + 1)):
        missing = sorted(set(range(1, max(classes, default=0) + 1)) - set(classes))
        raise CUB200TreeError(f"classes.txt: class ids must run 1..{len(classes)} without gaps; missing {missing[:5]}")
    class_names = tuple(str(classes[i][1]).partition(".")[2] or str(classes[i][1]) for i in sorted(classes))

    def parse_label(where: str, fields: list[str]) -> int:
        label = _parse_number(fields[0], int, where=where, what="the class id")
        if not 1 <= label <= len(class_names):
            raise CUB200TreeError(
                f"{where}: class id {label} is out of range 1..{len(class_names)} "
                f"(classes.txt lists {len(class_names)} classes)"
            )
        return label - 1

    images = _id_table(found / "images.txt", columns=2, parse=lambda where, f: f[0])
    tables = {
        "image_class_labels.txt": _id_table(found / "image_class_labels.txt", columns=2, parse=parse_label),
        "train_test_split.txt": _id_table(found / "train_test_split.txt", columns=2, parse=_parse_split),
        "bounding_boxes.txt": _id_table(found / "bounding_boxes.txt", columns=5, parse=_parse_bbox),
    }
    for name, table in tables.items():
        _check_same_ids(images, table, name)
    if not images:
        raise CUB200TreeError(f"{found / 'images.txt'}: lists no images")

    records = tuple(
        CUB200Record(
            image_id=image_id,
            path=str(rel),
            label=int(tables["image_class_labels.txt"][image_id][1]),
            is_train=bool(tables["train_test_split.txt"][image_id][1]),
            bbox=tables["bounding_boxes.txt"][image_id][1],  # type: ignore[arg-type]
            line=line,
        )
        for image_id, (line, rel) in images.items()
    )
    if check_images:
        with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
            for problem in pool.map(lambda r: _check_image(found, r), records):
                if problem is not None:
                    raise CUB200TreeError(problem)
    return CUB200Tree(root=found, classes=class_names, records=records, fingerprint=_fingerprint(found))


class ClassListMismatchError(ResNetZooError, ValueError):
    """A checkpoint was trained on other classes than the data set lists."""


def match_class_order(
    expected: Sequence[str], found: Sequence[str], *, expected_from: str, found_from: str
) -> list[int] | None:
    """Compare a checkpoint's class list with a data set's, by name.

    Args:
        expected: the class names in the checkpoint's label order.
        found: the class names in the data set's label order.
        expected_from: where ``expected`` comes from, for messages (the checkpoint path).
        found_from: where ``found`` comes from (``classes.txt``).

    Returns:
        None when the lists are equal. When ``found`` holds the same, distinct names
        in another order: for each label of the data, its index in ``expected`` (the
        data's labels are then mapped by name; a warning says so).

    Raises:
        ClassListMismatchError: the lists hold different names, or a name twice so that
            mapping by name would be ambiguous; the message shows the first difference.
    """
    expected, found = list(expected), list(found)
    if expected == found:
        return None
    position = next((i for i, (a, b) in enumerate(zip(expected, found, strict=False)) if a != b),
                    min(len(expected), len(found)))

    def at(names: list[str]) -> str:
        return repr(names[position]) if position < len(names) else "nothing (the list ends)"

    first = (f"first difference at class {position + 1}: {at(expected)} in {expected_from}, "
             f"{at(found)} in {found_from}")
    distinct = len(set(expected)) == len(expected) and len(set(found)) == len(found)
    if sorted(expected) != sorted(found) or not distinct:
        extra, missing = sorted(set(found) - set(expected)), sorted(set(expected) - set(found))
        detail = "; ".join(filter(None, [
            f"{len(expected)} classes in the checkpoint, {len(found)} in the data",
            f"not in the checkpoint: {', '.join(extra[:3])}" if extra else "",
            f"not in the data: {', '.join(missing[:3])}" if missing else "",
            "" if distinct else "a class name is listed twice, so classes cannot be matched by name",
        ]))
        raise ClassListMismatchError(
            f"the checkpoint was trained on other classes than the data lists ({first}; {detail}). "
            f"Use the data the checkpoint was trained on, or a checkpoint trained on this data"
        )
    logger.warning("the data lists the checkpoint's %d classes in another order (%s); labels are matched "
                   "by class name", len(expected), first)
    index = {name: i for i, name in enumerate(expected)}
    return [index[name] for name in found]


# ------------------------------------------------------------------------------- the dataset
def _decode(root: Path, record: CUB200Record, *, bbox_crop: bool) -> Image.Image:
    path = root / "images" / record.path
    try:
        with Image.open(path) as img:
            # convert() decodes fully, so a truncated file fails here, at a known place;
            # it also turns grayscale, CMYK, palette and RGBA images into RGB.
            rgb = img.convert("RGB")
    except Image.DecompressionBombError as e:
        raise CUB200TreeError(f"images.txt:{record.line}: {path} {_too_large(e)}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise CUB200TreeError(f"images.txt:{record.line}: cannot decode {path} ({e})") from e
    if bbox_crop:
        x, y, w, h = record.bbox
        left, top = max(0, int(x)), max(0, int(y))
        right, bottom = min(rgb.width, int(round(x + w))), min(rgb.height, int(round(y + h)))
        if right > left and bottom > top:
            rgb = rgb.crop((left, top, right, bottom))
    return rgb


def _resize(img: Image.Image, size: int, mode: ResizeMode) -> Image.Image:
    # torchvision's functional resize (PIL bilinear) so cached and uncached images are identical.
    return TF.resize(img, [size, size] if mode == "square" else [size])


class CUB200(Dataset):
    """CUB-200-2011 as a map-style dataset of ``(image, label)`` pairs.

    Images are RGB ``uint8`` tensors ``(3, H, W)`` (grayscale, CMYK and RGBA files are
    converted), optionally cropped to the bird's bounding box and resized to the
    pre-crop size, then passed through ``transform``. Labels are 0-based ints.

    With ``cache_dir`` each image is decoded once, resized, and kept as a ``uint8``
    ``.npy`` file (about 0.8 MB per image at 512 x 512, 9 GB for the whole set), so
    JPEG decoding does not limit training speed. The cache is keyed by the tree's
    fingerprint, the resize and the bounding-box choice, and shared by both splits.

    Args:
        root: the tree or its parent (see :func:`read_tree`), or a :class:`CUB200Tree`
            already read (to share one parse between the splits).
        split: ``"train"`` (5,994 images) or ``"test"`` (5,794 images).
        transform: called on each ``uint8`` image tensor, e.g. :func:`build_transforms`.
        bbox_crop: crop each image to its bounding box before resizing.
        resize: pre-crop size in pixels, or None to keep the original size.
        resize_mode: ``"square"`` resizes to ``resize x resize`` (the published
            recipe); ``"shorter"`` scales the shorter side to ``resize``.
        cache_dir: folder for the decoded-image cache, or None for no cache.
        check_images: see :func:`read_tree` (ignored when ``root`` is a tree).

    Attributes:
        tree: the parsed :class:`CUB200Tree`.
        classes: class names in label order.
        records: this split's :class:`CUB200Record` list.
        targets: this split's labels, in sample order.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | CUB200Tree,
        *,
        split: Split = "train",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        bbox_crop: bool = False,
        resize: int | None = None,
        resize_mode: ResizeMode = "square",
        cache_dir: str | os.PathLike[str] | None = None,
        check_images: bool = True,
    ) -> None:
        if resize_mode not in ("square", "shorter"):
            raise ValueError(f"resize_mode must be 'square' or 'shorter', got {resize_mode!r}")
        if resize is not None and (not isinstance(resize, int) or resize < 1):
            raise ValueError(f"resize must be a positive int or None, got {resize!r}")
        if cache_dir is not None and resize is None:
            raise ValueError("cache_dir needs resize: the cache stores images at the pre-crop size")
        self.tree = root if isinstance(root, CUB200Tree) else read_tree(root, check_images=check_images)
        self.split = split
        self.records = self.tree.split(split)
        self.classes = list(self.tree.classes)
        self.targets = [r.label for r in self.records]
        self.transform = transform
        self.bbox_crop = bbox_crop
        self.resize = resize
        self.resize_mode = resize_mode
        self.cache_dir: Path | None = None
        if cache_dir is not None:
            key = f"cub200-{self.tree.fingerprint[:12]}-{resize_mode}{resize}{'-bbox' if bbox_crop else ''}"
            self.cache_dir = Path(cache_dir) / key

    def __len__(self) -> int:
        return len(self.records)

    def use_class_order(self, classes: Sequence[str], *, source: str = "the given order") -> None:
        """Relabel the samples so that label ``i`` means ``classes[i]`` (the same names, reordered).

        Args:
            classes: the class names in the wanted label order (a checkpoint's).
            source: where ``classes`` comes from, for messages.

        Raises:
            ClassListMismatchError: ``classes`` is not a reordering of :attr:`classes`.
        """
        order = match_class_order(classes, self.classes, expected_from=source,
                                  found_from=str(self.tree.root / "classes.txt"))
        if order is None:
            return
        self.records = [dataclasses.replace(r, label=order[r.label]) for r in self.records]
        self.classes = list(classes)
        self.targets = [r.label for r in self.records]

    def _prepare(self, record: CUB200Record) -> np.ndarray:
        img = _decode(self.tree.root, record, bbox_crop=self.bbox_crop)
        if self.resize is not None:
            img = _resize(img, self.resize, self.resize_mode)
        return TF.pil_to_tensor(img).numpy()

    def _cached(self, record: CUB200Record, cache_dir: Path) -> np.ndarray:
        path = cache_dir / f"{record.image_id}.npy"
        try:
            return np.load(path)
        except (FileNotFoundError, ValueError, EOFError):
            pass  # not cached yet (writes are atomic, so a damaged file is not ours: redo it)
        array = self._prepare(record)
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Temporary names are unique per write (workers may fill the same entry at once);
        # orphans of killed processes are swept once per folder by build_cache, not per file.
        with atomic_path(path, clean=False) as tmp, tmp.open("wb") as f:
            np.save(f, array)
        return array

    def load_image(self, index: int) -> torch.Tensor:
        """The ``uint8`` image ``(3, H, W)`` of sample ``index`` before ``transform``."""
        record = self.records[index]
        array = self._prepare(record) if self.cache_dir is None else self._cached(record, self.cache_dir)
        return torch.from_numpy(array)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.records[index].label

    def build_cache(self, *, num_threads: int = 8, progress: bool = False) -> None:
        """Decode, resize and store every image of this split that is not cached yet.

        Doubles as the full decode check: an undecodable image raises
        :class:`CUB200TreeError` naming it, before training starts.

        Args:
            num_threads: decoding threads (PIL releases the GIL while decoding).
            progress: show a tqdm bar.

        Raises:
            ValueError: the dataset has no ``cache_dir``.
            CUB200TreeError: an image cannot be decoded.
        """
        if self.cache_dir is None:
            raise ValueError("this CUB200 dataset has no cache_dir; pass cache_dir=... to build a cache")
        from tqdm.auto import tqdm

        cache_dir = self.cache_dir
        remove_orphans_in(cache_dir)  # temporaries of a run killed while caching
        missing = [r for r in self.records if not (cache_dir / f"{r.image_id}.npy").is_file()]
        with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
            done = pool.map(lambda record: self._cached(record, cache_dir), missing)
            for _ in tqdm(done, total=len(missing), desc=f"caching {self.split}", disable=not progress):
                pass


# ---------------------------------------------------------------------------- the transforms
def build_transforms(*, train: bool, img_size: int, crop_padding: int = 8) -> v2.Compose:
    """Crop (and for training flip) pre-resized ``uint8`` images; normalisation happens later.

    Train: random ``img_size`` crop after zero-padding ``crop_padding`` pixels, then a
    random horizontal flip. Test: centre ``img_size`` crop. The output stays ``uint8``
    so a batch crosses to the GPU at a quarter of the float size; see :func:`normalize_batch`.

    Args:
        train: training (random) or evaluation (deterministic) transforms.
        img_size: crop size in pixels.
        crop_padding: zero padding added on each side before the random crop.

    Returns:
        A transform mapping ``uint8 (3, H, W)`` to ``uint8 (3, img_size, img_size)``.
    """
    if train:
        return v2.Compose(
            [
                v2.RandomCrop(img_size, padding=crop_padding or None, pad_if_needed=True),
                v2.RandomHorizontalFlip(),
            ]
        )
    return v2.Compose([v2.CenterCrop(img_size)])


def normalize_batch(
    images: torch.Tensor, *, mean: Sequence[float], std: Sequence[float], channels_last: bool = False
) -> torch.Tensor:
    """Turn a ``uint8`` batch ``(N, 3, H, W)`` into normalised ``float32`` on its own device.

    Args:
        images: ``uint8`` images, values 0..255.
        mean: per-channel mean on the 0..1 scale.
        std: per-channel standard deviation on the 0..1 scale.
        channels_last: return a channels-last tensor (faster convolutions on recent GPUs).

    Returns:
        ``float32 (N, 3, H, W)``: ``(images / 255 - mean) / std``.
    """
    mean_t = torch.tensor(mean, device=images.device, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=torch.float32).view(1, -1, 1, 1)
    out = images.float().div_(255).sub_(mean_t).div_(std_t)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


# ------------------------------------------------------------------------ safe extraction
def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute path; refusing to extract")
    if ".." in parts:
        raise UnsafeArchiveError(f"archive member {name!r} contains '..' and would escape the folder; refusing to extract")
    if member.issym() or member.islnk():
        # A chain of links, each harmless alone (d/l -> .., d/l/x -> ..), can lead a later
        # member anywhere; no data-set archive needs links, so none is extracted.
        kind = "symbolic" if member.issym() else "hard"
        raise UnsafeArchiveError(
            f"archive member {name!r} is a {kind} link (to {member.linkname!r}); archives with links "
            f"are refused (the data-set archives have none)"
        )
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"archive member {name!r} is a device or fifo; refusing to extract")


def _move_into_place(staging: Path, dest: Path) -> None:
    if not dest.exists():
        os.replace(staging, dest)
        return
    entries = sorted(staging.iterdir())
    for entry in entries:
        target = dest / entry.name
        if target.exists() or target.is_symlink():
            raise UnsafeArchiveError(
                f"{target} already exists and extracting would replace it; move it away and retry "
                f"(nothing was extracted)"
            )
    for entry in entries:
        os.replace(entry, dest / entry.name)


def safe_extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Extract a tar archive of plain files and folders into ``dest``, all or nothing.

    Every member is checked before anything is written: absolute paths, ``..``
    components, links of either kind, devices and fifos are refused. The members are
    extracted into a staging folder beside ``dest`` (with Python's ``tarfile`` ``"data"``
    filter where it has one) and moved into ``dest`` only when all of them are out; on
    any failure the staging folder is removed, so ``dest`` never holds part of an
    archive. A staging folder left by a killed process is removed by the next call.

    Args:
        archive: a ``.tar``, ``.tgz``, ``.tar.gz``, ``.tar.bz2`` or ``.tar.xz`` file.
        dest: the folder to extract into; created if absent. Entries of the archive's top
            level must not exist in it yet.

    Raises:
        UnsafeArchiveError: a member fails the checks, or would replace something in
            ``dest``; nothing has been extracted.
        tarfile.TarError, OSError: the archive is corrupt, or the disk is full;
            nothing has been extracted.
    """
    dest = Path(dest)
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _check_member(member)
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(dest)
        staging = temporary_name(dest)
        staging.mkdir()
        try:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(staging, members=members, filter="data")
            else:  # Python < 3.10.12 / 3.11.4: the checks above are the protection
                tar.extractall(staging, members=members)
            _move_into_place(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------------- download
def _by_hand(archive: Path, *, url: str, size: int | None, sha256: str) -> str:
    bytes_ = f"{size:,} bytes, " if size is not None else ""
    text = (
        f"Download it by hand from {url} ({bytes_}sha256 {sha256}) and save it as {archive}: "
        f"the next run with --download (download=True) verifies and extracts it"
    )
    partial = archive.with_name(archive.name + ".partial")
    if partial.is_file():
        text += f"; or run again to continue from the {partial.stat().st_size:,} bytes kept in {partial}"
    return text + "."


def _fetch_resumable(url: str, archive: Path, *, size: int | None, sha256: str, progress: bool,
                     timeout: float) -> None:
    """Download ``url`` to ``archive``, verified, continuing from ``archive.partial`` (HTTP Range)."""
    from tqdm.auto import tqdm

    with tqdm(unit="B", unit_scale=True, desc=archive.name, disable=not progress) as bar:

        def show(received: int, total: int | None) -> None:
            bar.total = total
            bar.update(received - bar.n)

        try:
            http_download(url, archive, sha256=sha256, size=size, resume=True, timeout=timeout, on_progress=show)
        except DownloadError as e:
            raise DownloadError(
                f"could not download {archive.name} ({e}). {_by_hand(archive, url=url, size=size, sha256=sha256)}"
            ) from e


def _verify(path: Path, *, size: int | None, sha256: str) -> str | None:
    """Return a mismatch description, or None when size and sha256 are right."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return f"{actual_size:,} bytes instead of {size:,}"
    actual = sha256_file(path)
    if actual != sha256.lower():
        return f"sha256 {actual} instead of {sha256}"
    return None


def _refuse_incomplete_tree(target: Path) -> None:
    if (target.exists() or target.is_symlink()) and not (target / "images.txt").is_file():
        raise CUB200TreeError(
            f"{target} exists but holds no images.txt: an incomplete copy or another data set. "
            f"Move or delete it and run again (nothing was downloaded or extracted)"
        )


def _extract_tree(archive: Path, root: Path) -> Path:
    target = root / TREE_DIRNAME
    _refuse_incomplete_tree(target)
    remove_orphans(target)  # the staging folder of an extraction that was killed
    staging = temporary_name(target)
    try:
        safe_extract(archive, staging)
        extracted = find_tree(staging)
        if extracted is None:
            raise CUB200TreeError(f"{archive} holds no {TREE_DIRNAME}/images.txt; it is not the CUB-200-2011 archive")
        os.replace(extracted, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def download_cub200(
    root: str | os.PathLike[str],
    *,
    url: str = CUB200_URL,
    size: int | None = CUB200_SIZE,
    sha256: str = CUB200_SHA256,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download, verify and extract CUB-200-2011 into ``root/CUB_200_2011``.

    The archive is written to ``root/CUB_200_2011.tgz.partial``; an interrupted download
    continues from there on the next call (HTTP Range; a server that ignores Range
    makes it start over). Size and sha256 are checked before anything is extracted,
    a mismatching download is deleted, and extraction goes through
    :func:`safe_extract` into a staging folder that is renamed into place at the end
    and removed on any failure, so a half-extracted tree is never mistaken for a
    complete one and nothing is left behind. The verified
    ``root/CUB_200_2011.tgz`` is kept (delete it to save 1.1 GB).

    Args:
        root: the folder to hold the archive and the tree.
        url: where to fetch the archive (default: CaltechDATA).
        size: expected size in bytes, or None to skip the size check.
        sha256: expected sha256 hex digest.
        progress: show a tqdm progress bar.
        timeout: seconds to wait for the server before giving up.

    Returns:
        The tree folder, ``root/CUB_200_2011``.

    Raises:
        ConnectionError: offline mode is on (``RESNETZOO_OFFLINE``/``HF_HUB_OFFLINE``), the
            server cannot be reached, or the transfer broke off (the partial file is kept
            for resuming).
        ChecksumError: the download has the wrong size or sha256 (it is deleted), or a
            ``CUB_200_2011.tgz`` already in ``root`` does not match (it is left alone).
        UnsafeArchiveError: the archive has a link, or a member that would escape ``root``;
            nothing is extracted.
        CUB200TreeError: the archive has no ``CUB_200_2011/images.txt``, or
            ``root/CUB_200_2011`` exists without it (checked before downloading).
    """
    root = Path(root)
    if (root / TREE_DIRNAME / "images.txt").is_file():
        return root / TREE_DIRNAME
    _refuse_incomplete_tree(root / TREE_DIRNAME)  # before 1.1 GB are downloaded for nothing
    root.mkdir(parents=True, exist_ok=True)
    archive = root / ARCHIVE_NAME
    if archive.exists():
        problem = _verify(archive, size=size, sha256=sha256)
        if problem is not None:
            raise ChecksumError(
                f"{archive} exists but has {problem}; it was not written by this download "
                f"(which verifies before renaming), so it is left alone: move or delete it and retry"
            )
    else:
        _fetch_resumable(url, archive, size=size, sha256=sha256, progress=progress, timeout=timeout)
    return _extract_tree(archive, root)


# ----------------------------------------------------------------------- the synthetic tree
_SHAPES = ("ellipse", "rectangle", "triangle", "diamond")


def _draw_sample(
    rng: random.Random, *, shape: str, colour: tuple[int, int, int], size: tuple[int, int]
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    width = max(16, int(size[0] * rng.uniform(0.8, 1.25)))
    height = max(16, int(size[1] * rng.uniform(0.8, 1.25)))
    background = tuple(rng.randint(90, 170) for _ in range(3))
    img = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(img)
    w = rng.randint(width // 3, width * 2 // 3)
    h = rng.randint(height // 3, height * 2 // 3)
    x, y = rng.randint(0, width - w), rng.randint(0, height - h)
    jitter = tuple(min(255, max(0, c + rng.randint(-20, 20))) for c in colour)
    box = (x, y, x + w - 1, y + h - 1)
    if shape == "ellipse":
        draw.ellipse(box, fill=jitter)
    elif shape == "rectangle":
        draw.rectangle(box, fill=jitter)
    elif shape == "triangle":
        draw.polygon([(x, y + h - 1), (x + w // 2, y), (x + w - 1, y + h - 1)], fill=jitter)
    else:
        draw.polygon([(x + w // 2, y), (x + w - 1, y + h // 2), (x + w // 2, y + h - 1), (x, y + h // 2)], fill=jitter)
    return img, (x, y, w, h)


def make_synthetic_tree(
    root: str | os.PathLike[str],
    *,
    num_classes: int = 5,
    train_per_class: int = 16,
    test_per_class: int = 8,
    image_size: tuple[int, int] = (96, 80),
    seed: int = 0,
) -> Path:
    """Write a small CUB-200-2011-layout tree of real JPEG files at ``root``.

    Class ``c`` is a shape (ellipse, rectangle, triangle, diamond, cycling) in its
    own hue on a random grey-ish background, at a random place whose bounding box
    goes to ``bounding_boxes.txt``; image sizes vary by up to 25 %. Like the real
    tree, ids are shuffled (not in file-name order) and the split is random within
    each class; the second image of classes 0 and 1 is grayscale and the third of
    class 0 is a CMYK JPEG. Same arguments, same bytes.

    Args:
        root: the folder to write (it becomes the tree: ``root/images.txt`` …). It must
            be absent, empty, or a tree this function wrote before (then it is rewritten).
        num_classes: number of classes (>= 1).
        train_per_class: train images per class (>= 1).
        test_per_class: test images per class (>= 1).
        image_size: nominal ``(width, height)`` in pixels.
        seed: random seed.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: a count is below 1, or ``root`` holds files this function did not write.
    """
    for name, value in (("num_classes", num_classes), ("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        if not (root / _SYNTHETIC_MARKER).is_file():
            raise ValueError(
                f"{root} is not empty and was not written by make_synthetic_tree; "
                f"choose an empty or new folder (nothing was changed)"
            )
        shutil.rmtree(root)
    (root / "images").mkdir(parents=True)
    (root / _SYNTHETIC_MARKER).write_text("Generated by resnetzoo.recipes.cub200.make_synthetic_tree; safe to delete.\n")

    rng = random.Random(seed)
    per_class = train_per_class + test_per_class
    class_names = []
    items = []  # (relative path, class index, is_train, bbox)
    for c in range(num_classes):
        shape = _SHAPES[c % len(_SHAPES)]
        hue = c / num_classes
        colour = tuple(int(255 * v) for v in colorsys.hsv_to_rgb(hue, 0.9, 0.95))
        name = f"{c + 1:03d}.Synthetic_{shape}_{c}"
        class_names.append(name)
        (root / "images" / name).mkdir()
        train_slots = set(rng.sample(range(per_class), train_per_class))
        for k in range(per_class):
            img, bbox = _draw_sample(rng, shape=shape, colour=colour, size=image_size)
            if k == 1 and c < 2:
                img = img.convert("L")
            elif k == 2 and c == 0:
                img = img.convert("CMYK")
            rel = f"{name}/Synthetic_{c}_{k:04d}.jpg"
            img.save(root / "images" / rel, format="JPEG", quality=90)
            items.append((rel, c, k in train_slots, bbox))

    ids = list(range(1, len(items) + 1))
    rng.shuffle(ids)  # like the real tree: ids do not follow file-name order
    rows = sorted(zip(ids, items, strict=True))

    def write(name: str, lines: list[str]) -> None:
        (root / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    write("classes.txt", [f"{i + 1} {n}" for i, n in enumerate(class_names)])
    write("images.txt", [f"{i} {rel}" for i, (rel, _, _, _) in rows])
    write("image_class_labels.txt", [f"{i} {c + 1}" for i, (_, c, _, _) in rows])
    write("train_test_split.txt", [f"{i} {int(is_train)}" for i, (_, _, is_train, _) in rows])
    write("bounding_boxes.txt", [f"{i} {b[0]}.0 {b[1]}.0 {b[2]}.0 {b[3]}.0" for i, (_, _, _, b) in rows])
    return root

