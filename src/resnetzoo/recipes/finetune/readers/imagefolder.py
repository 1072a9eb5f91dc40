"""Any data set in the folder layout everybody uses: one sub-folder per class.

``--dataset imagefolder:PATH`` reads::

    PATH/
      train/<class name>/*.jpg      the training images
      test/<class name>/*.jpg       the test images
      val/<class name>/*.jpg        validation images: used for model selection when
                                    test/ is there too, else they are the test images

The classes are the sub-folders of ``train/``, in sorted order (as
:class:`torchvision.datasets.ImageFolder` numbers them); ``test/`` and ``val/`` may lack
a class but must not add one. Files are found by torchvision's own
``torchvision.datasets.folder.make_dataset`` (the extensions PIL reads).
"""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from resnetzoo.recipes.finetune.errors import DatasetError
from resnetzoo.recipes.finetune.readers.base import ImageRecord, ImageSet, Reader, relative_key

__all__ = ["IMAGEFOLDER_READER", "read_imagefolder"]

_LAYOUT = "PATH/train/<class>/*.jpg and PATH/test/<class>/*.jpg (or PATH/val/<class>/*.jpg)"


def _held_out_splits(root: Path) -> dict[str, str]:
    """Folder name -> split: ``test/`` is the test set; ``val/`` is validation beside it, the test set alone."""
    has_test, has_val = (root / "test").is_dir(), (root / "val").is_dir()
    if not has_test and not has_val:
        raise DatasetError(f"{root}: no test/ or val/ folder beside train/; expected {_LAYOUT}")
    if has_test:
        return {"test": "test", **({"val": "val"} if has_val else {})}
    return {"val": "test"}


def _records(folder: Path, *, root: Path, split: str, class_to_idx: dict[str, int]) -> list[ImageRecord]:
    try:
        present, _ = find_classes(str(folder))
    except FileNotFoundError:  # no class folders: an empty split, refused where it is used
        return []
    extra = sorted(set(present) - set(class_to_idx))
    if extra:
        raise DatasetError(
            f"{folder / extra[0]}: a class folder that train/ does not have ({len(extra)} such); "
            f"every class needs training images"
        )
    try:
        samples = make_dataset(str(folder), {c: class_to_idx[c] for c in present}, extensions=IMG_EXTENSIONS,
                               allow_empty=split != "train")
    except FileNotFoundError as e:  # a class folder without a single image file
        raise DatasetError(f"{folder}: {e}") from None
    return [
        ImageRecord(key=relative_key(Path(path), root), path=Path(path), label=label, split=split,
                    source=relative_key(Path(path), root))
        for path, label in samples
    ]


def read_imagefolder(root: Path) -> ImageSet:
    """Read ``root/train`` and ``root/test`` (or ``root/val``) as class folders.

    Raises:
        DatasetError: no ``train/`` or no held-out folder, a class folder without images,
            or a held-out class that ``train/`` does not have.
    """
    root = Path(root)
    if not (root / "train").is_dir():
        raise DatasetError(f"{root}: no train/ folder; --dataset imagefolder:PATH expects {_LAYOUT}")
    try:
        classes, class_to_idx = find_classes(str(root / "train"))
    except FileNotFoundError as e:
        raise DatasetError(f"{root / 'train'}: {e}; expected one sub-folder per class") from None
    records = _records(root / "train", root=root, split="train", class_to_idx=class_to_idx)
    for folder, split in _held_out_splits(root).items():
        records += _records(root / folder, root=root, split=split, class_to_idx=class_to_idx)
    return ImageSet(name="imagefolder", root=root, classes=tuple(classes), records=tuple(records),
                    classes_source=f"the folder names in {root / 'train'}")


IMAGEFOLDER_READER = Reader(
    name="imagefolder",
    title="image folder",
    read=read_imagefolder,
    layout=_LAYOUT,
    obtain="arrange your images as " + _LAYOUT,
)
"""Class folders (``--dataset imagefolder:PATH``): ``train/`` and ``test/`` or ``val/``."""
