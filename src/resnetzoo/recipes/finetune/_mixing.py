"""CutMix and MixUp on training batches, with torchvision's implementations.

:class:`torchvision.transforms.v2.CutMix` pastes a box of one image into another and
mixes the labels by area; :class:`~torchvision.transforms.v2.MixUp` blends two images
and their labels. Both draw their mixing weight from Beta(alpha, alpha) with torch's
global generator, which the recipe re-seeds every epoch, so a resumed run draws the
same boxes. The labels come out as class probabilities, which
:func:`torch.nn.functional.cross_entropy` takes directly (label smoothing included).

Internal to the recipe (a private module): its names are for the recipe's modules.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.transforms import v2

__all__ = ["build_mixing"]

Mixing = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def build_mixing(*, cutmix_alpha: float, mixup_alpha: float, num_classes: int) -> Mixing | None:
    """A batch transform ``(images, int labels) -> (images, label probabilities)``, or None when both are off.

    With both on, each batch gets one of them, chosen at random with equal odds (as
    timm and torchvision's reference scripts do).

    Args:
        cutmix_alpha: Beta parameter of CutMix; 0 turns it off.
        mixup_alpha: Beta parameter of MixUp; 0 turns it off.
        num_classes: the number of classes (the width of the label probabilities).
    """
    choices: list[torch.nn.Module] = []
    if cutmix_alpha > 0:
        choices.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    if mixup_alpha > 0:
        choices.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    if not choices:
        return None
    return choices[0] if len(choices) == 1 else v2.RandomChoice(choices)
