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
from resnetzoo.inference import InferenceReport, optimize_for_inference
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
from resnetzoo.remap import LoadReport, diagnose, load_weights, save_weights
from resnetzoo.resnet import ResNet, make_stages
from resnetzoo.shortcuts import ZeroPadShortcut
from resnetzoo.weights import WeightSpec, get_weights, list_pretrained, register_weights

__version__ = "0.1.0"

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "CheckpointError",
    "ChecksumError",
    "GroupNorm32",
    "InferenceReport",
    "LoadReport",
    "ResNet",
    "ResNetZooError",
    "WeightsLoadError",
    "WeightSpec",
    "WeightsUnavailableError",
    "ZeroPadShortcut",
    "__version__",
    "create_model",
    "diagnose",
    "get_weights",
    "known_names",
    "list_models",
    "list_pretrained",
    "load_weights",
    "make_stages",
    "optimize_for_inference",
    "register_model",
    "register_weights",
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
    "save_weights",
    "wide_resnet50_2",
    "wide_resnet101_2",
]
