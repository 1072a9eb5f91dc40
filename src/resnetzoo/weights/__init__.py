"""Pretrained weights: the records table, fetching and verification, and safe reading.

>>> from resnetzoo.weights import get_weights
>>> spec = get_weights("resnet50")          # the default tag, torchvision's V1
>>> spec.name, spec.top1
('resnet50.tv_in1k', 76.13)
>>> get_weights("resnet50.tv2_in1k").resize_size
232
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> the module that defines it. The package is lazy, like the root: the
# records table is pure data, so ``resnetzoo list`` reads it without importing torch,
# which reading and downloading files need.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("cache_dir", "download_url", "fetch_weights", "hub_download", "is_offline", "sha256_file"),
                    "resnetzoo.weights.download"),
    **dict.fromkeys(("LoadedCheckpoint", "read_checkpoint", "read_checkpoint_file", "read_training_checkpoint"),
                    "resnetzoo.weights.files"),
    **dict.fromkeys(("IMAGENET_MEAN", "IMAGENET_STD", "WeightSpec", "default_tag", "get_weights",
                     "imagenet_categories", "list_pretrained", "register_weights"), "resnetzoo.weights.records"),
    **dict.fromkeys(("pretrained_source", "read_source"), "resnetzoo.weights.sources"),
}

__all__ = sorted(_EXPORTS, key=str.lower)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # once imported, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # what type checkers and IDEs see; keep in step with _EXPORTS
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
