"""Checkpoints of a run: ``checkpoint.pt`` to resume, ``best.safetensors`` to reuse.

``checkpoint.pt`` is written after every epoch, atomically, and read back by the
library's training-checkpoint reader without running any pickled code (``weights_only=True``);
it holds no RNG states, since the epoch number restores them (every random stream is
derived from the seed and epoch). ``best.safetensors`` holds the weights of the epoch
chosen on the validation split (on the test split with ``--val-fraction 0``), with
the classes and normalisation in its metadata; ``ema.safetensors`` the averaged
weights. A resumed run keeps the checkpoint's recipe and takes only where and how fast
to run from the new settings.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch.nn as nn

from resnetzoo._io import save_torch
from resnetzoo.errors import CheckpointError
from resnetzoo.recipes.finetune.config import FinetuneConfig
from resnetzoo.remap import save_weights
from resnetzoo.weights import read_training_checkpoint

__all__ = [
    "CHECKPOINT_FORMAT",
    "RUNTIME_FIELDS",
    "load_checkpoint",
    "resumed_config",
    "save_checkpoint",
    "save_model_weights",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "resnetzoo.recipes.finetune.checkpoint/2"
_LEGACY_FORMATS = ("resnetzoo.recipes.cub200.checkpoint/1",)  # resnetzoo 0.1: evaluated, not resumed
RUNTIME_FIELDS = frozenset(
    {"data_root", "download", "cache_dir", "workers", "threads", "device", "channels_last", "compile", "progress",
     "output_dir", "resume", "overwrite", "eval_only", "exclude_test_list", "official_counts", "error_analysis",
     "cam_images"}
)
"""Settings a resumed run takes from its command line (where and how fast); the rest come from the checkpoint."""

Config = TypeVar("Config", bound=FinetuneConfig)


def resumed_config(config: Config, saved: Mapping[str, Any]) -> Config:
    """The checkpoint's recipe with this call's runtime settings; warns about what is ignored.

    Args:
        config: the settings given to the resuming call.
        saved: the checkpoint's ``config``.

    Returns:
        A config of the same class as ``config``.
    """
    kind = type(config)
    checkpoint_config = kind.from_dict(dict(saved))
    defaults = (kind(), kind.for_synthetic())
    runtime = {name: getattr(config, name) for name in RUNTIME_FIELDS}
    if config.dataset.startswith("imagefolder:") and checkpoint_config.dataset.startswith("imagefolder:"):
        runtime["dataset"] = config.dataset  # the same layout, maybe moved
    # A value equal to a default was most likely not typed: only the others are worth a warning.
    ignored = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.name not in runtime
        and getattr(config, f.name) != getattr(checkpoint_config, f.name)
        and all(getattr(config, f.name) != getattr(d, f.name) for d in defaults)
    }
    if ignored:
        logger.warning(
            "resuming with the checkpoint's settings; ignoring %s",
            ", ".join(f"{k}={v!r} (checkpoint: {getattr(checkpoint_config, k)!r})" for k, v in ignored.items()),
        )
    return dataclasses.replace(checkpoint_config, **runtime)


def save_model_weights(model: nn.Module, path: Path, *, metadata: Mapping[str, str]) -> None:
    """Write ``model``'s weights as safetensors with ``metadata``, atomically (``resnetzoo.save_weights``).

    Raises:
        OSError: the file cannot be written (a full disk, a read-only folder).
    """
    save_weights(model, path, overwrite=True, metadata=dict(metadata))


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write a training checkpoint atomically: a temporary file, then ``os.replace``.

    An interruption (crash, full disk, Ctrl-C) leaves the previous checkpoint intact.

    Args:
        path: destination, e.g. ``output_dir / "checkpoint.pt"``.
        state: tensors and plain containers only, so :func:`load_checkpoint` can read
            it with ``weights_only=True``.

    Raises:
        OSError: the file cannot be written (a full disk, a read-only folder); the
            previous checkpoint is intact and the error names ``path``.
    """
    save_torch(path, state)


def load_checkpoint(path: str | os.PathLike[str], *, resumable: bool = False) -> dict[str, Any]:
    """Read a checkpoint written by :func:`~resnetzoo.recipes.finetune.train`, without running any pickled code.

    The file is read by the library's reader of training checkpoints
    (:func:`resnetzoo.weights.read_training_checkpoint`: ``weights_only=True``, bounded
    by the file's size, clear errors for truncated, corrupt and foreign files).

    Args:
        path: a ``checkpoint.pt``.
        resumable: refuse a checkpoint of resnetzoo 0.1's CUB recipe, which can be
            evaluated but not resumed.

    Returns:
        The checkpoint dict: ``format``, ``epoch`` (epochs completed), ``model``,
        ``optimizer``, ``scheduler``, ``scaler``, ``ema`` (state dicts), ``config``,
        ``classes``, ``mean``, ``std``, ``best``, ``history``, ``elapsed_s``.

    Raises:
        CheckpointError: the file is unreadable, unsafe, or not a recipe checkpoint.
        FileNotFoundError: there is no file at ``path``.
    """
    path = Path(path)
    state = read_training_checkpoint(path)
    fmt = state.get("format")
    if fmt == CHECKPOINT_FORMAT or (fmt in _LEGACY_FORMATS and not resumable):
        return state
    if fmt in _LEGACY_FORMATS:
        raise CheckpointError(
            f"{path} was written by resnetzoo 0.1's CUB-200 recipe: evaluate it with --eval-only; a run "
            f"resumes only from a checkpoint of this version"
        )
    raise CheckpointError(
        f"{path}: not a checkpoint of the fine-tuning recipe (no format {CHECKPOINT_FORMAT!r}); "
        f"for a weights file use --eval-only with a .safetensors file, or --pretrained"
    )
