"""Inference: fast on every CPU (:func:`optimize_for_inference`), verified export, int8 quantization.

Modules, bottom-up:

- :mod:`~resnetzoo.inference.onednn`: every private ``torch.ops.mkldnn._*`` op resnetzoo calls;
- :mod:`~resnetzoo.inference.cpu`: :func:`cpu_features`, the one probe of what this CPU can do;
- :mod:`~resnetzoo.inference.kernels`: the kernel choice and :class:`FusedConv2d`;
- :mod:`~resnetzoo.inference.graph`: who feeds whom (one traced sample pass);
- :mod:`~resnetzoo.inference.fold`: BatchNorm folding (:func:`fold_batchnorms`);
- :mod:`~resnetzoo.inference.fuse`: activation and residual fusion;
- :mod:`~resnetzoo.inference.optimize`: :func:`optimize_for_inference` and :class:`InferenceModel`;
- :mod:`~resnetzoo.inference.exporter`: :func:`export` to ONNX or ``.pt2``, verified (:class:`ExportReport`);
- :mod:`~resnetzoo.inference.quantization`: :func:`quantize` to int8 with torchao, checked (:class:`QuantizationReport`).
"""

from __future__ import annotations

from resnetzoo.inference.cpu import CpuFeatures, cpu_features
from resnetzoo.inference.exporter import (
    DimensionCheck,
    ExportMetadata,
    ExportReport,
    Preprocessing,
    ShapeCheck,
    export,
    export_format,
    read_export_metadata,
    recipe_metadata,
)
from resnetzoo.inference.fold import fold_batchnorms
from resnetzoo.inference.kernels import FusedConv2d, KernelChoice
from resnetzoo.inference.optimize import InferenceModel, InferenceReport, optimize_for_inference
from resnetzoo.inference.quantization import LayerRange, QuantizationReport, quantize

__all__ = [
    "CpuFeatures",
    "DimensionCheck",
    "ExportMetadata",
    "ExportReport",
    "FusedConv2d",
    "InferenceModel",
    "InferenceReport",
    "KernelChoice",
    "LayerRange",
    "Preprocessing",
    "QuantizationReport",
    "ShapeCheck",
    "cpu_features",
    "export",
    "export_format",
    "fold_batchnorms",
    "optimize_for_inference",
    "quantize",
    "read_export_metadata",
    "recipe_metadata",
]
