"""From image files to batches: decoding, the decoded-image cache, crops and normalisation.

:class:`ImageDataset` turns the records of a data set into ``uint8`` image tensors,
resized to the pre-crop size (optionally cropped to the object's bounding box first),
optionally from a cache of images decoded once (:meth:`ImageDataset.build_cache`).
:func:`build_transforms` crops and flips them; images stay ``uint8`` until
:func:`normalize_batch` converts a whole batch on its device, so a batch crosses to
the GPU at a quarter of the float size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from resnetzoo._io import atomic_path, remove_orphans_in
from resnetzoo.recipes.finetune.errors import DatasetError
from resnetzoo.recipes.finetune.readers.base import (
    ImageRecord,
    ImageSet,
    match_class_order,
    too_large_message,
)

__all__ = ["ImageDataset", "ResizeMode", "build_transforms", "normalize_batch"]

ResizeMode = Literal["square", "shorter"]


def _decode(record: ImageRecord, *, bbox_crop: bool) -> Image.Image:
    where = f"{record.source}: " if record.source else ""
    try:
        with Image.open(record.path) as img:
            # convert() decodes fully, so a truncated file fails here, at a known place;
            # it also turns grayscale, CMYK, palette and RGBA images into RGB.
            rgb = img.convert("RGB")
    except Image.DecompressionBombError as e:
        raise DatasetError(f"{where}{record.path} {too_large_message(e)}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"{where}cannot decode {record.path} ({e})") from e
    if bbox_crop and record.bbox is not None:
        x, y, w, h = record.bbox
        left, top = max(0, int(x)), max(0, int(y))
        right, bottom = min(rgb.width, int(round(x + w))), min(rgb.height, int(round(y + h)))
        if right > left and bottom > top:
            rgb = rgb.crop((left, top, right, bottom))
    return rgb


class ImageDataset(Dataset):
    """Records of a data set as a map-style dataset of ``(image, label)`` pairs.

    Images are RGB ``uint8`` tensors ``(3, H, W)`` (grayscale, CMYK and RGBA files are
    converted), optionally cropped to the object's bounding box and resized to the
    pre-crop size, then passed through ``transform``. Labels are 0-based ints.

    With ``cache_dir`` each image is decoded once, resized, and kept as a ``uint8``
    ``.npy`` file (about 0.8 MB per image at 512 x 512, 9 GB for CUB-200), so JPEG
    decoding does not limit training speed. The cache is keyed by the data set's
    fingerprint, the resize and the bounding-box choice, and shared by all splits.

    Args:
        image_set: the data set the records belong to.
        records: the images of this dataset (one split, or part of one).
        transform: called on each ``uint8`` image tensor, e.g. :func:`build_transforms`.
        bbox_crop: crop each image to its bounding box before resizing (records
            without a box are used whole).
        resize: pre-crop size in pixels, or None to keep the original size.
        resize_mode: ``"square"`` resizes to ``resize x resize`` (the published CUB
            recipe); ``"shorter"`` scales the shorter side to ``resize``.
        cache_dir: folder for the decoded-image cache, or None for no cache.

    Attributes:
        image_set: the data set.
        classes: class names in label order.
        records: this dataset's records.
        targets: the labels, in sample order.
    """

    def __init__(
        self,
        image_set: ImageSet,
        records: Sequence[ImageRecord],
        *,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        bbox_crop: bool = False,
        resize: int | None = None,
        resize_mode: ResizeMode = "square",
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if resize_mode not in ("square", "shorter"):
            raise ValueError(f"resize_mode must be 'square' or 'shorter', got {resize_mode!r}")
        if resize is not None and (not isinstance(resize, int) or resize < 1):
            raise ValueError(f"resize must be a positive int or None, got {resize!r}")
        if cache_dir is not None and resize is None:
            raise ValueError("cache_dir needs resize: the cache stores images at the pre-crop size")
        self.image_set = image_set
        self.records = list(records)
        self.classes = list(image_set.classes)
        self.targets = [r.label for r in self.records]
        self.transform = transform
        self.bbox_crop = bbox_crop
        self.resize = resize
        self.resize_mode = resize_mode
        self.cache_dir: Path | None = None
        if cache_dir is not None:
            key = f"{image_set.name}-{image_set.fingerprint[:12]}-{resize_mode}{resize}{'-bbox' if bbox_crop else ''}"
            self.cache_dir = Path(cache_dir) / key

    # Kept for code written against the CUB-only dataset of resnetzoo 0.1.
    @property
    def tree(self) -> ImageSet:
        """The data set (``image_set``)."""
        return self.image_set

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
                                  found_from=self.image_set.classes_source or str(self.image_set.root))
        if order is None:
            return
        self.records = [
            ImageRecord(r.key, r.path, order[r.label], r.split, r.bbox, r.source) for r in self.records
        ]
        self.classes = list(classes)
        self.targets = [r.label for r in self.records]

    def _prepare(self, record: ImageRecord) -> np.ndarray:
        img = _decode(record, bbox_crop=self.bbox_crop)
        if self.resize is not None:
            # torchvision's functional resize (PIL bilinear) so cached and uncached images are identical.
            img = TF.resize(img, [self.resize, self.resize] if self.resize_mode == "square" else [self.resize])
        return TF.pil_to_tensor(img).numpy()

    def _cached(self, record: ImageRecord, cache_dir: Path) -> np.ndarray:
        path = cache_dir / f"{record.key.replace('/', '__')}.npy"
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

    def box_in_input(self, index: int, *, crop: int) -> tuple[float, float, float, float] | None:
        """The object's box in the pixels of the evaluation input (after resize and centre crop).

        Args:
            index: the sample.
            crop: the centre-crop size of the evaluation transform (``--img-size``).

        Returns:
            ``(x0, y0, x1, y1)`` clipped to the ``crop x crop`` input, or None when the
            record has no box, ``bbox_crop`` is on (the input is the box), or the box
            falls outside the crop.
        """
        record = self.records[index]
        if record.bbox is None or self.bbox_crop:
            return None
        with Image.open(record.path) as img:
            width, height = img.size  # the header only
        x, y, w, h = record.bbox
        # The box goes through the same torchvision resize and centre crop as the pixels.
        box = tv_tensors.BoundingBoxes([[x, y, x + w, y + h]], format="XYXY", canvas_size=(height, width))
        if self.resize is not None:
            box = TF.resize(box, [self.resize, self.resize] if self.resize_mode == "square" else [self.resize])
        x0, y0, x1, y1 = (float(v) for v in TF.center_crop(box, [crop, crop])[0])
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None

    def build_cache(self, *, num_threads: int = 8, progress: bool = False) -> None:
        """Decode, resize and store every image of this dataset that is not cached yet.

        Doubles as the full decode check: an undecodable image raises
        :class:`~resnetzoo.recipes.finetune.errors.DatasetError` naming it.

        Args:
            num_threads: decoding threads (PIL releases the GIL while decoding).
            progress: show a tqdm bar.

        Raises:
            ValueError: the dataset has no ``cache_dir``.
            DatasetError: an image cannot be decoded.
        """
        if self.cache_dir is None:
            raise ValueError("this dataset has no cache_dir; pass cache_dir=... to build a cache")
        cache_dir = self.cache_dir
        remove_orphans_in(cache_dir)  # temporaries of a run killed while caching
        missing = [r for r in self.records if not (cache_dir / f"{r.key.replace('/', '__')}.npy").is_file()]
        with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
            done = pool.map(lambda record: self._cached(record, cache_dir), missing)
            for _ in tqdm(done, total=len(missing), desc="caching", disable=not progress):
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
    # (x / 255 - mean) / std as one multiply-add over the batch: x * scale + shift.
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=images.device).view(1, -1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)], device=images.device).view(1, -1, 1, 1)
    out = torch.addcmul(shift, images.float(), scale)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out
