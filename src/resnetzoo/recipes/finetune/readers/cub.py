"""CUB-200-2011 and NABirds: the Caltech-UCSD Birds file layout, and CUB's download.

The official CUB tree (Wah et al., 2011, CaltechDATA record 65de6-vp158) is::

    CUB_200_2011/
      images/NNN.Class_Name/*.jpg
      images.txt               <image id> <path under images/>
      train_test_split.txt     <image id> <1 = train, 0 = test>
      image_class_labels.txt   <image id> <class id, 1-based>
      classes.txt              <class id> <NNN.Class_Name>
      bounding_boxes.txt       <image id> <x> <y> <width> <height>   (pixels)

NABirds (Van Horn et al., 2015) uses the same files: its image ids are UUIDs and its
``classes.txt`` lists the whole taxonomy (1,011 nodes), of which the 555 that label
images are the classes. Every table is joined on the image id. Ids are not in
file-name order within a class, so a sorted folder listing must never be paired with
the split file.

:func:`read_tree` parses and checks a CUB tree once; :func:`download_cub200` fetches and
verifies the official archive, resuming an interrupted download, and extracts it
with :func:`~resnetzoo.recipes.finetune.archive.safe_extract`. :class:`CUB200` is the
data set of one split, as a PyTorch dataset.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from resnetzoo._io import http_download, remove_orphans, sha256_file, temporary_name
from resnetzoo.errors import ChecksumError, DownloadError
from resnetzoo.recipes.finetune.archive import safe_extract
from resnetzoo.recipes.finetune.errors import DatasetError
from resnetzoo.recipes.finetune.images import ImageDataset, ResizeMode
from resnetzoo.recipes.finetune.readers.base import ImageRecord, ImageSet, Reader, read_table
from resnetzoo.recipes.finetune.readers.base import check_images as check_image_files

__all__ = [
    "CUB200",
    "CUB200_COUNTS",
    "CUB200_SHA256",
    "CUB200_SIZE",
    "CUB200_URL",
    "CUB200_READER",
    "NABIRDS_READER",
    "CUB200TreeError",
    "download_cub200",
    "find_tree",
    "read_cub_layout",
    "read_tree",
]

CUB200_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1"
CUB200_SIZE = 1_150_585_339
CUB200_SHA256 = "0c685df5597a8b24909f6a7c9db6d11e008733779a671760afef78feb49bf081"
CUB200_COUNTS = {"train": 5_994, "test": 5_794}
"""The official split: 5,994 training and 5,794 test images of 200 classes."""

TREE_DIRNAME = "CUB_200_2011"
ARCHIVE_NAME = "CUB_200_2011.tgz"
_INDEX_FILES = ("images.txt", "classes.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt")


class CUB200TreeError(DatasetError):
    """A tree in the CUB-200-2011 layout is missing, incomplete or inconsistent.

    The message names the file (and line) at fault and what to do about it.
    """


# ----------------------------------------------------------------------------- reading
def find_tree(root: str | os.PathLike[str], *, dirname: str = TREE_DIRNAME) -> Path | None:
    """Locate a tree at ``root`` itself or at ``root/<dirname>``; None if neither has ``images.txt``."""
    root = Path(root)
    for candidate in (root, root / dirname):
        if (candidate / "images.txt").is_file():
            return candidate
    return None


def _table(root: Path, name: str, *, columns: int) -> list[tuple[int, list[str]]]:
    try:
        return read_table(root / name, columns=columns, what=(
            f"a tree in the CUB layout needs {', '.join(_INDEX_FILES)} and images/ (re-extract the archive, "
            f"or download it again)"))
    except DatasetError as e:
        raise CUB200TreeError(str(e)) from None


def _number(value: str, kind: type, *, where: str, what: str) -> float:
    try:
        return kind(value)
    except ValueError:
        article = "an integer" if kind is int else "a number"
        raise CUB200TreeError(f"{where}: {what} must be {article}, got {value!r}") from None


def _by_image_id(root: Path, name: str, *, columns: int,
                 parse: Callable[[str, list[str]], object]) -> dict[str, tuple[int, object]]:
    """Map image id -> (line, parsed value) for a table whose first column is an image id."""
    table: dict[str, tuple[int, object]] = {}
    for number, fields in _table(root, name, columns=columns):
        where = f"{name}:{number}"
        if fields[0] in table:
            raise CUB200TreeError(f"{where}: id {fields[0]} is listed twice (first on line {table[fields[0]][0]})")
        table[fields[0]] = (number, parse(where, fields[1:]))
    return table


def _parse_split(where: str, fields: list[str]) -> str:
    if fields[0] not in ("0", "1"):
        raise CUB200TreeError(f"{where}: the split must be 1 (train) or 0 (test), got {fields[0]!r}")
    return "train" if fields[0] == "1" else "test"


def _parse_bbox(where: str, fields: list[str]) -> tuple[float, float, float, float]:
    x, y, w, h = (_number(v, float, where=where, what="a bounding-box value") for v in fields)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise CUB200TreeError(f"{where}: bounding box (x={x}, y={y}, w={w}, h={h}) has a value that is not a finite number")
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise CUB200TreeError(f"{where}: bounding box (x={x}, y={y}, w={w}, h={h}) needs x, y >= 0 and w, h > 0")
    return (x, y, w, h)


def _class_table(root: Path) -> dict[int, tuple[int, str]]:
    classes: dict[int, tuple[int, str]] = {}
    for number, (class_id, name) in _table(root, "classes.txt", columns=2):
        where = f"classes.txt:{number}"
        key = int(_number(class_id, int, where=where, what="the class id"))
        if key in classes:
            raise CUB200TreeError(f"{where}: class id {key} is listed twice (first on line {classes[key][0]})")
        classes[key] = (number, name)
    return classes


def _check_same_ids(images: dict[str, tuple[int, object]], other: dict[str, tuple[int, object]], name: str) -> None:
    for image_id, (line, _) in images.items():
        if image_id not in other:
            raise CUB200TreeError(f"images.txt:{line}: image id {image_id} has no line in {name}")
    for image_id, (line, _) in other.items():
        if image_id not in images:
            raise CUB200TreeError(f"{name}:{line}: image id {image_id} is not in images.txt")


def read_cub_layout(root: Path, *, name: str, every_class: bool) -> ImageSet:
    """Parse the index files of a tree in the CUB layout (images are not checked here).

    Args:
        root: the folder holding ``images.txt`` and ``images/``.
        name: the reader's name, recorded in the :class:`ImageSet`.
        every_class: CUB: ``classes.txt`` lists exactly the classes, ids 1..N, names
            ``NNN.Name`` (the prefix is dropped). NABirds (False): it lists a taxonomy;
            the classes are the ids that label images, in id order, names as written.

    Raises:
        CUB200TreeError: a missing index file, a malformed line, an id missing from or
            extra in a table, a class id out of range; the message names file and line.
    """
    classes = _class_table(root)
    if every_class and sorted(classes) != list(range(1, len(classes) + 1)):
        missing = sorted(set(range(1, max(classes, default=0) + 1)) - set(classes))
        raise CUB200TreeError(f"classes.txt: class ids must run 1..{len(classes)} without gaps; missing {missing[:5]}")

    def parse_class(where: str, fields: list[str]) -> int:
        class_id = int(_number(fields[0], int, where=where, what="the class id"))
        if class_id not in classes:
            span = f" (ids 1..{len(classes)})" if every_class else ""
            raise CUB200TreeError(f"{where}: class id {class_id} is not in classes.txt{span}")
        return class_id

    images = _by_image_id(root, "images.txt", columns=2, parse=lambda where, f: f[0])
    if not images:
        raise CUB200TreeError(f"{root / 'images.txt'}: lists no images")
    tables = {
        "image_class_labels.txt": _by_image_id(root, "image_class_labels.txt", columns=2, parse=parse_class),
        "train_test_split.txt": _by_image_id(root, "train_test_split.txt", columns=2, parse=_parse_split),
        "bounding_boxes.txt": _by_image_id(root, "bounding_boxes.txt", columns=5, parse=_parse_bbox),
    }
    for table_name, table in tables.items():
        _check_same_ids(images, table, table_name)

    used = sorted(classes) if every_class else sorted({int(v) for _, v in tables["image_class_labels.txt"].values()})
    label_of = {class_id: i for i, class_id in enumerate(used)}
    names = tuple(
        (classes[c][1].partition(".")[2] or classes[c][1]) if every_class else classes[c][1] for c in used
    )
    records = tuple(
        ImageRecord(
            key=image_id,
            path=root / "images" / str(rel),
            label=label_of[int(tables["image_class_labels.txt"][image_id][1])],  # type: ignore[call-overload]
            split=str(tables["train_test_split.txt"][image_id][1]),
            bbox=tables["bounding_boxes.txt"][image_id][1],  # type: ignore[arg-type]
            source=f"images.txt:{line}",
        )
        for image_id, (line, rel) in images.items()
    )
    return ImageSet(name=name, root=root, classes=names, records=records, classes_source=str(root / "classes.txt"))


def _locate(root: Path, *, dirname: str, title: str, hint: str) -> Path:
    found = find_tree(root, dirname=dirname)
    if found is None:
        raise CUB200TreeError(
            f"no {title} tree at {root}: expected {root / 'images.txt'} or {root / dirname / 'images.txt'}. {hint}"
        )
    return found


def read_tree(root: str | os.PathLike[str], *, check_images: bool = True, num_threads: int = 8) -> ImageSet:
    """Parse and check a CUB-200-2011 tree.

    Args:
        root: the tree (the folder with ``images.txt``) or its parent holding ``CUB_200_2011/``.
        check_images: check that every image exists and PIL recognises its header
            (a few seconds for the 11,788 images); the pixels are checked when the
            cache is built or the image is first read.
        num_threads: threads for the image check.

    Returns:
        The :class:`~resnetzoo.recipes.finetune.readers.ImageSet`: classes without the
        ``NNN.`` prefix, records keyed by image id, in ``images.txt`` order.

    Raises:
        CUB200TreeError: no tree at ``root``, a missing index file, a malformed line, an
            id missing from or extra in a table, a class id out of range, or a missing
            or unrecognisable image; the message names the file and line.
    """
    image_set = CUB200_READER.read(Path(root))
    if check_images:
        try:
            check_image_files(image_set.records, num_threads=num_threads)
        except DatasetError as e:
            raise CUB200TreeError(str(e)) from None
    return image_set


def _read_cub200(root: Path) -> ImageSet:
    found = _locate(root, dirname=TREE_DIRNAME, title="CUB-200-2011", hint=(
        "Download it (--download, 1.1 GB) or try the pipeline on generated data (--synthetic)"))
    return read_cub_layout(found, name="cub200", every_class=True)


def _read_nabirds(root: Path) -> ImageSet:
    found = _locate(root, dirname="nabirds", title="NABirds", hint=NABIRDS_READER.obtain)
    return read_cub_layout(found, name="nabirds", every_class=False)


CUB200_READER = Reader(
    name="cub200",
    title="CUB-200-2011",
    read=_read_cub200,
    layout="--data-root/CUB_200_2011/{images.txt, classes.txt, image_class_labels.txt, train_test_split.txt, "
           "bounding_boxes.txt, images/}",
    counts=CUB200_COUNTS,
    num_classes=200,
    obtain="--download fetches it (1.1 GB, verified) into --data-root",
    has_boxes=True,
)
"""CUB-200-2011 (``--dataset cub200``): 5,994 / 5,794 images, 200 species, boxes."""
NABIRDS_READER = Reader(
    name="nabirds",
    title="NABirds",
    read=_read_nabirds,
    layout="--data-root/nabirds/{images.txt, classes.txt, image_class_labels.txt, train_test_split.txt, "
           "bounding_boxes.txt, images/}",
    num_classes=555,
    obtain=("Request it from the Cornell Lab of Ornithology (dl.allaboutbirds.org/nabirds) and extract it "
            "into --data-root (the folder nabirds/ with images.txt)"),
    has_boxes=True,
)
"""NABirds (``--dataset nabirds``): CUB's layout, 555 classes, boxes."""


# ---------------------------------------------------------------------------- the dataset
class CUB200(ImageDataset):
    """One split of CUB-200-2011 as a map-style dataset of ``(uint8 image, label)`` pairs.

    :class:`~resnetzoo.recipes.finetune.images.ImageDataset` over :func:`read_tree`.

    Args:
        root: the tree or its parent (see :func:`read_tree`), or an ``ImageSet`` already
            read (to share one parse between the splits).
        split: ``"train"`` (5,994 images) or ``"test"`` (5,794 images).
        transform: called on each ``uint8`` image tensor, e.g.
            :func:`~resnetzoo.recipes.finetune.images.build_transforms`.
        bbox_crop: crop each image to its bounding box before resizing.
        resize: pre-crop size in pixels, or None to keep the original size.
        resize_mode: ``"square"`` or ``"shorter"`` (see ``ImageDataset``).
        cache_dir: folder for the decoded-image cache, or None for no cache.
        check_images: see :func:`read_tree` (ignored when ``root`` is an ``ImageSet``).
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | ImageSet,
        *,
        split: str = "train",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        bbox_crop: bool = False,
        resize: int | None = None,
        resize_mode: ResizeMode = "square",
        cache_dir: str | os.PathLike[str] | None = None,
        check_images: bool = True,
    ) -> None:
        image_set = root if isinstance(root, ImageSet) else read_tree(root, check_images=check_images)
        super().__init__(image_set, image_set.split(split), transform=transform, bbox_crop=bbox_crop,
                         resize=resize, resize_mode=resize_mode, cache_dir=cache_dir)
        self.split = split


# ---------------------------------------------------------------------------- download
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
    :func:`~resnetzoo.recipes.finetune.archive.safe_extract` into a staging folder that
    is renamed into place at the end and removed on any failure, so a half-extracted
    tree is never mistaken for a complete one and nothing is left behind. The verified
    ``root/CUB_200_2011.tgz`` is kept (delete it to save 1.1 GB). An archive saved
    there by hand is verified and extracted without downloading.

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
            for resuming); the message says where to put the archive by hand.
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
