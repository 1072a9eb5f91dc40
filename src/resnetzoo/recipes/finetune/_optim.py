"""The optimiser and its schedule: SGD with a faster head, linear warm-up, per-step cosine.

Internal to the recipe (a private module): its names are for the recipe's modules.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn as nn

__all__ = ["build_optimizer", "lr_factor", "param_groups"]


def param_groups(model: nn.Module, *, lr: float, head_lr_mult: float) -> list[dict[str, Any]]:
    """Two groups: the backbone at ``lr``, the classifier at ``lr x head_lr_mult``."""
    head = list(model.get_classifier().parameters())  # type: ignore[operator]
    head_ids = {id(p) for p in head}
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    return [
        {"params": backbone, "lr": lr, "name": "backbone"},
        {"params": head, "lr": lr * head_lr_mult, "name": "head"},
    ]


def lr_factor(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up from ``1 / warmup_steps`` to 1, then cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(
    model: nn.Module, *, lr: float, head_lr_mult: float, momentum: float, nesterov: bool, weight_decay: float,
    warmup_steps: int, total_steps: int,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """SGD over :func:`param_groups` and a :class:`~torch.optim.lr_scheduler.LambdaLR` of :func:`lr_factor`.

    Step the scheduler once per optimizer step.
    """
    optimizer = torch.optim.SGD(
        param_groups(model, lr=lr, head_lr_mult=head_lr_mult),
        lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
    )
    schedule = functools.partial(lr_factor, warmup_steps=warmup_steps, total_steps=total_steps)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
