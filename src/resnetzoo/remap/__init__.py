"""Checkpoint remapping: load ResNet weights saved by any library, and say what did not fit.

>>> import resnetzoo
>>> from resnetzoo.remap import diagnose, load_weights
>>> model = resnetzoo.resnet18()
>>> report = load_weights(model, resnetzoo.resnet18().state_dict())
>>> report.ok
True
"""

from __future__ import annotations

from resnetzoo.remap.conventions import CONVENTIONS, Convention, RenameRule, to_native
from resnetzoo.remap.export import export_checkpoint, export_state_dict
from resnetzoo.remap.load import diagnose, load_weights, save_weights
from resnetzoo.remap.report import LoadReport, Rename, ShapeMismatch

__all__ = [
    "CONVENTIONS",
    "Convention",
    "LoadReport",
    "Rename",
    "RenameRule",
    "ShapeMismatch",
    "diagnose",
    "export_checkpoint",
    "export_state_dict",
    "load_weights",
    "save_weights",
    "to_native",
]
