"""Pretrained weights: the records table, fetching and verification, and safe reading.

>>> from resnetzoo.weights import get_weights
>>> spec = get_weights("resnet50")          # the default tag, torchvision's V1
>>> spec.name, spec.top1
('resnet50.tv_in1k', 76.13)
>>> get_weights("resnet50.tv2_in1k").resize_size
232
"""

from __future__ import annotations

from resnetzoo.weights.download import (
    cache_dir,
    download_url,
    fetch_weights,
    hub_download,
    is_offline,
    sha256_file,
)
from resnetzoo.weights.files import (
    LoadedCheckpoint,
    read_checkpoint,
    read_checkpoint_file,
    read_training_checkpoint,
)
from resnetzoo.weights.records import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    WeightSpec,
    default_tag,
    get_weights,
    imagenet_categories,
    list_pretrained,
    register_weights,
)
from resnetzoo.weights.sources import pretrained_source, read_source

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LoadedCheckpoint",
    "WeightSpec",
    "cache_dir",
    "default_tag",
    "download_url",
    "fetch_weights",
    "get_weights",
    "hub_download",
    "imagenet_categories",
    "is_offline",
    "list_pretrained",
    "pretrained_source",
    "read_checkpoint",
    "read_checkpoint_file",
    "read_source",
    "read_training_checkpoint",
    "register_weights",
    "sha256_file",
]
