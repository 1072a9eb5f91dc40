"""The classification head's pooling: :class:`GlobalPool`, with timm's ``global_pool`` names.

``"avg"`` is the ResNet paper's (and torchvision's) global average pooling. timm adds
``"max"``, ``"avgmax"`` (the mean of both) and ``"catavgmax"`` (both, concatenated: twice
the features, so the classifier is twice as wide), and ``""`` for no pooling at all:
the head then returns the feature map, which only makes sense without a classifier.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["POOL_TYPES", "GlobalPool"]

#: The pooling names :class:`GlobalPool` (and ``ResNet(global_pool=...)``) accept.
POOL_TYPES: tuple[str, ...] = ("avg", "max", "avgmax", "catavgmax", "")


class GlobalPool(nn.Module):
    """Pool each channel over the whole feature map and flatten: ``(N, C, H, W) -> (N, C * feat_mult())``.

    Args:
        pool_type: one of :data:`POOL_TYPES`; ``""`` passes the map through unpooled
            (``(N, C, H, W) -> (N, C, H, W)``).

    Attributes:
        pool_type: the pooling, as given (timm's attribute name, which
            ``reset_classifier`` reads to keep the current pooling).
    """

    def __init__(self, pool_type: str = "avg") -> None:
        super().__init__()
        if pool_type not in POOL_TYPES:
            raise ValueError(
                f"unknown global_pool {pool_type!r}; choose one of {', '.join(repr(p) for p in POOL_TYPES)}"
            )
        self.pool_type = pool_type

    def feat_mult(self) -> int:
        """How many values per channel the pooling returns (2 for ``"catavgmax"``, else 1)."""
        return 2 if self.pool_type == "catavgmax" else 1

    def is_identity(self) -> bool:
        """True for ``""``: no pooling."""
        return self.pool_type == ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "":
            return x
        if self.pool_type == "avg":
            # adaptive_avg_pool2d, as torchvision's head, so that logits match it bit for bit.
            pooled = F.adaptive_avg_pool2d(x, 1)
        elif self.pool_type == "max":
            pooled = F.adaptive_max_pool2d(x, 1)
        elif self.pool_type == "avgmax":
            pooled = 0.5 * (F.adaptive_avg_pool2d(x, 1) + F.adaptive_max_pool2d(x, 1))
        else:  # catavgmax
            pooled = torch.cat((F.adaptive_avg_pool2d(x, 1), F.adaptive_max_pool2d(x, 1)), dim=1)
        return torch.flatten(pooled, 1)

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}"
