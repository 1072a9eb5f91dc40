"""An exponential moving average of the weights, evaluated beside the raw ones.

The average is :class:`torch.optim.swa_utils.AveragedModel` with PyTorch's EMA rule
(``ema = decay x ema + (1 - decay) x weights`` after every optimizer step), over
parameters and buffers, so its BatchNorm statistics are averaged too.

Internal to the recipe (a private module): its names are for the recipe's modules.
"""

from __future__ import annotations

import torch.nn as nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["build_ema"]


def build_ema(model: nn.Module, *, decay: float) -> AveragedModel | None:
    """An :class:`~torch.optim.swa_utils.AveragedModel` of ``model`` with ``decay`` per step, or None for 0.

    Call ``ema.update_parameters(model)`` after every optimizer step; ``ema.module``
    is the averaged network.
    """
    if decay <= 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
