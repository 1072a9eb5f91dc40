"""Checkpoints of the CUB-200-2011 recipe: ``checkpoint.pt`` to resume, ``best.safetensors`` to reuse.

``checkpoint.pt`` is written after every epoch, atomically, and read back without
running any pickled code (``weights_only=True``); it holds no RNG states, since the
epoch number restores them (every random stream is derived from the seed and epoch).
``best.safetensors`` holds the weights of the best test top-1 so far, with the
classes and normalisation in its metadata. A resumed run keeps the checkpoint's
recipe and takes only where and how fast to run from the new settings.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError

from resnetzoo._io import atomic_path
from resnetzoo.errors import CheckpointError
from resnetzoo.recipes.cub200.config import CUB200Config
from resnetzoo.weights import read_checkpoint

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "save_checkpoint"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "resnetzoo.recipes.cub200.checkpoint/1"
# Settings that may change when resuming (where and how fast), unlike the recipe itself.
_RUNTIME_FIELDS = frozenset(
    {"data_root", "download", "cache_dir", "workers", "device", "channels_last", "compile", "progress",
     "output_dir", "resume", "overwrite", "eval_only"}
)


def _resumed_config(config: CUB200Config, saved: dict[str, Any]) -> CUB200Config:
    """The checkpoint's recipe with this call's runtime settings; warns about what is ignored."""
    checkpoint_config = CUB200Config.from_dict(saved)
    defaults = (CUB200Config(), CUB200Config.for_synthetic())
    # A value equal to a default was most likely not typed: only the others are worth a warning.
    ignored = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.name not in _RUNTIME_FIELDS
        and getattr(config, f.name) != getattr(checkpoint_config, f.name)
        and all(getattr(config, f.name) != getattr(d, f.name) for d in defaults)
    }
    if ignored:
        logger.warning(
            "resuming with the checkpoint's settings; ignoring %s",
            ", ".join(f"{k}={v!r} (checkpoint: {getattr(checkpoint_config, k)!r})" for k, v in ignored.items()),
        )
    runtime = {name: getattr(config, name) for name in _RUNTIME_FIELDS}
    return dataclasses.replace(checkpoint_config, **runtime)


def _save_best(model: nn.Module, path: Path, *, config: CUB200Config, classes: list[str], mean: list[float],
               std: list[float], top1: float, epoch: int) -> None:
    from resnetzoo.remap import save_weights

    try:
        save_weights(model, path, overwrite=True, metadata={
            "dataset": "CUB-200-2011", "num_classes": str(len(classes)), "classes": json.dumps(list(classes)),
            "mean": json.dumps(list(mean)), "std": json.dumps(list(std)), "img_size": str(config.img_size),
            "resize": str(config.resize), "resize_mode": config.resize_mode, "test_top1": f"{top1:.4f}",
            "epoch": str(epoch), "recipe": "resnetzoo.recipes.cub200",
        })
    except SafetensorError as e:  # not an OSError, though a full disk is its usual cause
        full = "StorageFull" in str(e) or "No space" in str(e)
        raise OSError(errno.ENOSPC if full else errno.EIO, f"could not write the weights ({e})", str(path)) from e


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write a training checkpoint atomically: a temporary file, then ``os.replace``.

    An interruption (crash, full disk, Ctrl-C) leaves the previous checkpoint intact.

    Args:
        path: destination, e.g. ``output_dir / "checkpoint.pt"``.
        state: tensors and plain containers only, so :func:`load_checkpoint` can read
            it with ``weights_only=True``.

    Raises:
        OSError: the file cannot be written (a full disk, a read-only folder); the
            previous checkpoint is intact.
    """
    # Serialised in memory first: torch.save turns a failed write (a full disk) into a
    # RuntimeError without the cause, while a plain file write raises the OSError.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`~resnetzoo.recipes.cub200.train`, without running any pickled code.

    The file is read by the library's checkpoint reader
    (:func:`resnetzoo.weights.read_checkpoint`: ``weights_only=True``, clear errors for
    truncated, corrupt and foreign files).

    Args:
        path: a ``checkpoint.pt``.

    Returns:
        The checkpoint dict: ``format``, ``epoch`` (epochs completed), ``model``,
        ``optimizer``, ``scheduler``, ``scaler`` (state dicts), ``config``, ``classes``,
        ``mean``, ``std``, ``best_top1``, ``best_epoch``, ``history``, ``elapsed_s``.

    Raises:
        CheckpointError: the file is unreadable, unsafe, or not a recipe checkpoint.
        FileNotFoundError: there is no file at ``path``.
    """
    path = Path(path)
    state, _ = read_checkpoint(path)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a CUB-200 recipe checkpoint (no format {CHECKPOINT_FORMAT!r}); "
            f"for a weights file use --eval-only with a .safetensors file or --pretrained"
        )
    return state
