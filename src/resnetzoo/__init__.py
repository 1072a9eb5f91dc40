"""resnetzoo: the ResNet family from pluggable parts.

>>> import resnetzoo
>>> model = resnetzoo.resnet50(num_classes=10)
>>> model.fc.out_features
10
"""

from __future__ import annotations

from resnetzoo.blocks import BasicBlock, Bottleneck
from resnetzoo.errors import (
    CheckpointError,
    ChecksumError,
    ResNetZooError,
    WeightsLoadError,
    WeightsUnavailableError,
)
from resnetzoo.factories import GroupNorm32, known_names, resolve
from resnetzoo.models import (
    resnet18,
    resnet18d,
    resnet34,
    resnet34d,
    resnet50,
    resnet50d,
    resnet101,
    resnet101d,
    resnet152,
    resnet152d,
    resnext50_32x4d,
    resnext101_32x8d,
    resnext101_64x4d,
    wide_resnet50_2,
    wide_resnet101_2,
)
from resnetzoo.registry import create_model, list_models, register_model
from resnetzoo.resnet import ResNet, make_stages
from resnetzoo.shortcuts import ZeroPadShortcut

__version__ = "0.1.0"

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "CheckpointError",
    "ChecksumError",
    "GroupNorm32",
    "ResNet",
    "ResNetZooError",
    "WeightsLoadError",
    "WeightsUnavailableError",
    "ZeroPadShortcut",
    "__version__",
    "create_model",
    "known_names",
    "list_models",
    "make_stages",
    "register_model",
    "resnet18",
    "resnet18d",
    "resnet34",
    "resnet34d",
    "resnet50",
    "resnet50d",
    "resnet101",
    "resnet101d",
    "resnet152",
    "resnet152d",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "resolve",
    "wide_resnet50_2",
    "wide_resnet101_2",
]
