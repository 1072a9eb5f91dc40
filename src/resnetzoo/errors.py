"""Exceptions raised by resnetzoo.

Every error a user can cause derives from :class:`ResNetZooError`, so
``except resnetzoo.ResNetZooError`` catches them all. Each also derives from
the built-in class a caller would expect (``ValueError``, ``FileNotFoundError``
…), so code written against plain Python keeps working.
"""

from __future__ import annotations

__all__ = [
    "ArchitectureError",
    "CheckpointError",
    "ChecksumError",
    "DownloadError",
    "ExportError",
    "MissingDependencyError",
    "QuantizationError",
    "ResNetZooError",
    "WeightsLoadError",
    "WeightsUnavailableError",
]


class ResNetZooError(Exception):
    """Base class of every error resnetzoo raises on purpose."""


class CheckpointError(ResNetZooError, ValueError):
    """A checkpoint file cannot be read: truncated, corrupt, unsafe or not a checkpoint."""


class ArchitectureError(CheckpointError):
    """The network a checkpoint holds cannot be told or rebuilt: not a ResNet, a stage
    missing, two equally good sub-trees, mixed naming conventions, an unknown module."""


class ExportError(ResNetZooError, ValueError):
    """A model cannot be exported: another library's ResNet cannot express it (a deep stem
    for torchvision, GroupNorm for transformers …), ``torch.export`` cannot trace it, or the
    written ONNX / ``.pt2`` file does not compute what the model does.

    Attributes:
        report: the :class:`~resnetzoo.inference.ExportReport` of a failed verification,
            or None.
    """

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report


class ChecksumError(CheckpointError):
    """A downloaded or cached file does not have the checksum it should have."""


class DownloadError(ResNetZooError, ConnectionError):
    """A file could not be downloaded: offline, host unreachable, an HTTP error or an HTML page,
    a transfer that broke off or grew past its size limit."""


class WeightsUnavailableError(ResNetZooError, FileNotFoundError):
    """Weights cannot be fetched (offline, unreachable) and are not in the cache."""


class WeightsLoadError(ResNetZooError, RuntimeError):
    """A strict load found keys or shapes that do not fit the model.

    Attributes:
        report: the :class:`~resnetzoo.remap.LoadReport` describing every mismatch.
    """

    def __init__(self, message: str, report: object) -> None:
        super().__init__(message)
        self.report = report


class MissingDependencyError(ResNetZooError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


class QuantizationError(ResNetZooError, RuntimeError):
    """A quantized model misses its accuracy budget or is slower than the float model it replaces.

    Attributes:
        report: the :class:`~resnetzoo.inference.QuantizationReport` that shows why.
    """

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report
