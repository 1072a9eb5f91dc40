"""What every data-set reader returns, and the checks they share.

A reader turns a folder in one published layout into an :class:`ImageSet`: the class
names in label order and one :class:`ImageRecord` per image (its file, label, split
and, where the data set has them, its bounding box). Everything after that (the
validation split, decoding, caching, training) is the same for every data set.

The checks here run before training starts, so a broken tree fails in seconds with
the file and line at fault: :func:`read_table` (index files, UTF-8, field counts),
:func:`check_images` (every file present and recognisable by PIL, no decompression
bombs) and :func:`check_counts` (the official number of images per split).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from resnetzoo.recipes.finetune.errors import ClassListMismatchError, DatasetError

__all__ = [
    "SPLITS",
    "ImageRecord",
    "ImageSet",
    "Reader",
    "check_counts",
    "check_images",
    "match_class_order",
    "read_table",
    "relative_key",
    "too_large_message",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
"""The splits a record may belong to; ``val`` only where the data set ships one (Flowers-102)."""


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One image of a data set.

    Attributes:
        key: a stable name of the image within its data set: the id of an index file
            (CUB's ``images.txt``) or the path relative to the data set's root. Used in
            ``--exclude-test-list``, in ``predictions.csv`` and as the cache file name.
        path: the image file.
        label: 0-based class index into :attr:`ImageSet.classes`.
        split: ``"train"``, ``"val"`` or ``"test"``.
        bbox: the object's box ``(x, y, width, height)`` in pixels of the file, where
            the data set has boxes; else None.
        source: where the image is listed, for messages (``"images.txt:12"``).
    """

    key: str
    path: Path
    label: int
    split: str
    bbox: tuple[float, float, float, float] | None = None
    source: str = ""


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """A data set read from disk: its classes and every image.

    Attributes:
        name: the reader that read it (``"cub200"``, ``"imagefolder"`` …).
        root: the data set's folder.
        classes: class names in label order.
        records: every image, in the reader's order (index-file order).
        classes_source: where the class list comes from, for messages
            (``".../classes.txt"``, ``"the folder names in .../train"``).
    """

    name: str
    root: Path
    classes: tuple[str, ...]
    records: tuple[ImageRecord, ...]
    classes_source: str = ""

    def split(self, split: str) -> list[ImageRecord]:
        """The records of one split (``"train"``, ``"val"`` or ``"test"``), in reader order."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return [r for r in self.records if r.split == split]

    @property
    def has_boxes(self) -> bool:
        """Whether every image has a bounding box."""
        return bool(self.records) and all(r.bbox is not None for r in self.records)

    @property
    def fingerprint(self) -> str:
        """sha256 of every record's file, box and key: a cache built for another tree is not reused."""
        digest = hashlib.sha256()
        for record in self.records:
            digest.update(f"{record.key}\0{record.path}\0{record.bbox}\n".encode())
        return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Reader:
    """How to read one data-set layout.

    Attributes:
        name: the ``--dataset`` value (``"fgvc_aircraft"``).
        title: the data set's name in messages and docs (``"FGVC-Aircraft"``).
        read: ``read(root) -> ImageSet``; parses the index files and raises
            :class:`DatasetError` naming the file and line of a problem. Image files
            are checked separately (:func:`check_images`).
        layout: where the files go under ``--data-root``, for messages.
        counts: the official number of images per split, or None where unknown.
        num_classes: the official number of classes, or None.
        obtain: how to get the files, for messages (downloads are the user's).
        has_boxes: whether the layout has a bounding box per image (``--bbox-crop``, the
            pointing game).
    """

    name: str
    title: str
    read: Callable[[Path], ImageSet]
    layout: str
    counts: Mapping[str, int] | None = None
    num_classes: int | None = None
    obtain: str = ""
    has_boxes: bool = False


# ------------------------------------------------------------------------- index files
def read_table(path: Path, *, columns: int | None, what: str = "") -> list[tuple[int, list[str]]]:
    """Rows of a whitespace-separated text file as ``(line number, fields)``; blank lines skipped.

    Args:
        path: the file.
        columns: the number of fields of every line (the last keeps any spaces), or
            None for "at least one".
        what: a hint appended to the "missing" message (how to get the file).

    Raises:
        DatasetError: the file is missing, is not UTF-8 (the line and byte are named),
            or a line has another number of fields.
    """
    if not path.is_file():
        raise DatasetError(f"{path}: missing{'; ' + what if what else ''}")
    rows = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DatasetError(
                    f"{path.name}:{number}: not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1}); "
                    f"the index files are plain UTF-8: re-extract the archive or save {path} as UTF-8"
                ) from None
            if not text.strip():
                continue
            # maxsplit keeps a last field with spaces (a path, a class name) whole.
            fields = text.strip().split(maxsplit=columns - 1) if columns else text.split()
            if columns and len(fields) != columns:
                raise DatasetError(
                    f"{path.name}:{number}: expected {columns} fields, found {len(fields)} in {text.strip()!r}"
                )
            rows.append((number, fields))
    return rows


# ------------------------------------------------------------------------------ images
def too_large_message(error: Exception) -> str:
    """The end of a message for an image PIL refuses as a decompression bomb."""
    # PIL refuses images over twice Image.MAX_IMAGE_PIXELS: decoding one could take
    # gigabytes. No photograph of a data set comes near it.
    return (
        f"is too large to decode safely ({error}); remove or shrink it, or raise "
        f"PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
    )


def _image_problem(record: ImageRecord) -> str | None:
    where = f"{record.source}: " if record.source else ""
    if not record.path.is_file():
        return f"{where}image file {record.path} does not exist"
    try:
        # The header only: cheap enough for every image at start-up. The pixels are
        # decoded (and checked) when the cache is built or the image is first read.
        with Image.open(record.path):
            pass
    except Image.DecompressionBombError as e:
        return f"{where}{record.path} {too_large_message(e)}"
    except (UnidentifiedImageError, OSError) as e:
        return f"{where}{record.path} is not a readable image ({e})"
    return None


def check_images(records: Iterable[ImageRecord], *, num_threads: int = 8) -> None:
    """Check that every image exists and PIL recognises its header.

    Raises:
        DatasetError: the first missing, unrecognisable or oversized image, named
            with the index line that lists it.
    """
    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        for problem in pool.map(_image_problem, records):
            if problem is not None:
                raise DatasetError(problem)


def check_counts(image_set: ImageSet, *, title: str, counts: Mapping[str, int] | None,
                 num_classes: int | None, hint: str = "") -> None:
    """Compare the images per split and the classes with the official numbers.

    Raises:
        DatasetError: the first split (or the class list) whose count differs, with
            the difference.
    """
    for split, expected in (counts or {}).items():
        found = len(image_set.split(split))
        if found != expected:
            diff = found - expected
            raise DatasetError(
                f"{title} at {image_set.root}: the {split} split has {found:,} images, {abs(diff):,} "
                f"{'more' if diff > 0 else 'fewer'} than the official {expected:,}{hint}"
            )
    if num_classes is not None and len(image_set.classes) != num_classes:
        raise DatasetError(
            f"{title} at {image_set.root}: {len(image_set.classes)} classes in {image_set.classes_source}, "
            f"not the official {num_classes}{hint}"
        )


# ------------------------------------------------------------------------- class lists
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


def relative_key(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with ``/`` separators: a record key that is the same on every OS."""
    return Path(os.path.relpath(path, root)).as_posix()

