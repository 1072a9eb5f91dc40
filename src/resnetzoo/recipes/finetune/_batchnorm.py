"""What BatchNorm does during fine-tuning: ``train``, ``frozen`` or ``sync``.

BatchNorm normalises with the statistics of the current batch; below about 16 images
those statistics are noise, and fine-tuning with a small batch per GPU degrades the
pretrained network. ``frozen`` keeps the pretrained running statistics (the layers
stay in eval mode; their scale and shift still learn); ``sync`` computes the
statistics over the whole batch of every GPU (:class:`torch.nn.SyncBatchNorm`, CUDA
and DistributedDataParallel only). ``auto`` is resolved by
:func:`~resnetzoo.recipes.finetune.config.resolve_settings`.

Internal to the recipe (a private module): its names are for the recipe's modules.
"""

from __future__ import annotations

import logging

import torch.nn as nn

from resnetzoo.recipes.finetune.errors import ConfigError

__all__ = ["apply_bn_policy", "freeze_bn_statistics"]

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)

logger = logging.getLogger(__name__)


def apply_bn_policy(model: nn.Module, policy: str, *, distributed: bool, device_type: str) -> nn.Module:
    """Prepare ``model`` for ``policy`` (``train``, ``frozen`` or ``sync``); returns the model to train.

    ``sync`` converts the BatchNorm layers to :class:`torch.nn.SyncBatchNorm` (a new
    module tree); ``frozen`` is applied after every ``model.train()`` by
    :func:`freeze_bn_statistics`.

    Raises:
        ConfigError: ``sync`` on a device other than CUDA.
    """
    if policy not in ("train", "frozen", "sync"):
        raise ValueError(f"BatchNorm policy must be train, frozen or sync, got {policy!r}")
    if policy != "sync":
        return model
    if device_type != "cuda":
        raise ConfigError("--bn sync (--sync-bn) needs CUDA devices: PyTorch's SyncBatchNorm does not run on the CPU")
    if not distributed:
        logger.warning("--bn sync has no effect in a single process: the statistics are already the whole batch's")
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def freeze_bn_statistics(model: nn.Module) -> int:
    """Put every BatchNorm layer in eval mode: it normalises with, and keeps, its running statistics.

    Call after ``model.train()``. The layers' scale and shift still receive gradients.

    Returns:
        The number of layers frozen.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, _BATCH_NORMS):
            module.eval()
            count += 1
    return count
