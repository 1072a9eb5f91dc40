"""resnetzoo: the ResNet family from pluggable parts.

>>> import resnetzoo
>>> model = resnetzoo.resnet50(num_classes=10)
>>> model.fc.out_features
10

The package root is lazy: ``import resnetzoo`` loads no torch, and each public name
is imported from its home module the first time it is used. So ``resnetzoo --help``
answers at once, and a program pays only for what it uses. Every name below is
also importable directly (``from resnetzoo import resnet50``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from resnetzoo._version import __version__
from resnetzoo.architectures import ARCHITECTURES

# Public name -> the module that defines it. To export a name, add it here.
_EXPORTS: dict[str, str] = {
    "BasicBlock": "resnetzoo.blocks",
    "Bottleneck": "resnetzoo.blocks",
    "ArchitectureError": "resnetzoo.errors",
    "CheckpointError": "resnetzoo.errors",
    "ChecksumError": "resnetzoo.errors",
    "DownloadError": "resnetzoo.errors",
    "ExportError": "resnetzoo.errors",
    "MissingDependencyError": "resnetzoo.errors",
    "QuantizationError": "resnetzoo.errors",
    "ResNetZooError": "resnetzoo.errors",
    "WeightsLoadError": "resnetzoo.errors",
    "WeightsUnavailableError": "resnetzoo.errors",
    "GroupNorm32": "resnetzoo.factories",
    "known_names": "resnetzoo.factories",
    "resolve": "resnetzoo.factories",
    "ExportReport": "resnetzoo.inference",
    "InferenceModel": "resnetzoo.inference",
    "InferenceReport": "resnetzoo.inference",
    "QuantizationReport": "resnetzoo.inference",
    "export": "resnetzoo.inference",
    "optimize_for_inference": "resnetzoo.inference",
    "quantize": "resnetzoo.inference",
    "create_model": "resnetzoo.registry",
    "create_model_from_checkpoint": "resnetzoo.registry",
    "inspect_checkpoint": "resnetzoo.registry",
    "list_models": "resnetzoo.registry",
    "register_model": "resnetzoo.registry",
    "LoadReport": "resnetzoo.remap",
    "diagnose": "resnetzoo.remap",
    "load_weights": "resnetzoo.remap",
    "save_weights": "resnetzoo.remap",
    "export_checkpoint": "resnetzoo.remap",
    "export_state_dict": "resnetzoo.remap",
    "ResNet": "resnetzoo.resnet",
    "ResNetFeatures": "resnetzoo.resnet",
    "make_stages": "resnetzoo.resnet",
    "ZeroPadShortcut": "resnetzoo.shortcuts",
    "WeightSpec": "resnetzoo.weights",
    "get_weights": "resnetzoo.weights",
    "list_pretrained": "resnetzoo.weights",
    "register_weights": "resnetzoo.weights",
    **{name: "resnetzoo.models" for name in ARCHITECTURES},
}
# Subpackages and modules reachable as attributes (``resnetzoo.weights.get_weights``).
_SUBMODULES = frozenset(
    {"architectures", "blocks", "cli", "errors", "factories", "features", "heads", "infer", "inference",
     "models", "recipes", "registry", "remap", "resnet", "shortcuts", "stems", "weights"}
)

__all__ = sorted([*_EXPORTS, "__version__"], key=str.lower)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # the next access is a plain attribute lookup
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})


if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported eagerly
    from resnetzoo.blocks import BasicBlock, Bottleneck
    from resnetzoo.errors import (
        ArchitectureError,
        CheckpointError,
        ChecksumError,
        DownloadError,
        ExportError,
        MissingDependencyError,
        QuantizationError,
        ResNetZooError,
        WeightsLoadError,
        WeightsUnavailableError,
    )
    from resnetzoo.factories import GroupNorm32, known_names, resolve
    from resnetzoo.inference import (
        ExportReport,
        InferenceModel,
        InferenceReport,
        QuantizationReport,
        export,
        optimize_for_inference,
        quantize,
    )
    from resnetzoo.models import *  # noqa: F403  (one constructor per architecture)
    from resnetzoo.registry import (
        create_model,
        create_model_from_checkpoint,
        inspect_checkpoint,
        list_models,
        register_model,
    )
    from resnetzoo.remap import (
        LoadReport,
        diagnose,
        export_checkpoint,
        export_state_dict,
        load_weights,
        save_weights,
    )
    from resnetzoo.resnet import ResNet, ResNetFeatures, make_stages
    from resnetzoo.shortcuts import ZeroPadShortcut
    from resnetzoo.weights import WeightSpec, get_weights, list_pretrained, register_weights
