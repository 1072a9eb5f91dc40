"""The named architectures as data: one :class:`Architecture` row per name.

This table is the single source of the names: the constructors in
:mod:`resnetzoo.models` (``resnetzoo.resnet50`` …), the package's exports and the
registry are all derived from it, so adding an architecture is one row here. It
imports nothing heavy (no torch), so ``import resnetzoo`` and ``resnetzoo --help``
can list the names without building anything.

>>> from resnetzoo.architectures import ARCHITECTURES
>>> ARCHITECTURES["resnext50_32x4d"].kwargs()["groups"]
32
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["ARCHITECTURES", "SPEC_FIELDS", "Architecture", "natural_key"]

#: The :class:`~resnetzoo.ResNet` keywords an architecture row fixes (see :meth:`Architecture.kwargs`).
SPEC_FIELDS = ("block", "layers", "groups", "width_per_group", "stem", "shortcut")

_DEPTHS: dict[int, tuple[int, ...]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


@dataclass(frozen=True)
class Architecture:
    """One named architecture: the :class:`~resnetzoo.ResNet` keywords it fixes, and a summary.

    Attributes:
        name: the constructor's name, e.g. ``"resnet50"``.
        depth: the number in the name (18, 34, 50, 101, 152).
        block: ``"basic"`` (two 3x3 convolutions) or ``"bottleneck"`` (1x1, 3x3, 1x1).
        summary: one line for the constructor's docstring.
        groups: groups of the 3x3 convolutions (ResNeXt cardinality).
        width_per_group: channels per group at ``planes=64`` (128 for Wide ResNet).
        stem: ``"classic"`` (7x7 + max-pool) or ``"deep"`` (three 3x3, ResNet-C/D).
        shortcut: ``"conv"`` (strided 1x1) or ``"avgpool"`` (pool then 1x1, ResNet-D).
    """

    name: str
    depth: int
    block: Literal["basic", "bottleneck"]
    summary: str
    groups: int = 1
    width_per_group: int = 64
    stem: Literal["classic", "deep"] = "classic"
    shortcut: Literal["conv", "avgpool"] = "conv"

    @property
    def layers(self) -> tuple[int, ...]:
        """Blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50."""
        return _DEPTHS[self.depth]

    def kwargs(self) -> dict[str, Any]:
        """The :class:`~resnetzoo.ResNet` keyword arguments that build this architecture."""
        return {field: getattr(self, field) for field in SPEC_FIELDS}


def _resnets() -> list[Architecture]:
    params = {18: "11.7", 34: "21.8", 50: "25.6", 101: "44.5", 152: "60.2"}
    rows = []
    for depth, millions in params.items():
        basic = depth < 50
        block: Literal["basic", "bottleneck"] = "basic" if basic else "bottleneck"
        kind = "BasicBlock" if basic else "Bottleneck, stride on the 3x3 (v1.5)"
        rows.append(Architecture(
            f"resnet{depth}", depth, block,
            f"ResNet-{depth}: {kind}, {_DEPTHS[depth]} blocks per stage; {millions} M parameters "
            f"(He et al., 2015).",
        ))
    for depth in params:
        block = "basic" if depth < 50 else "bottleneck"
        rows.append(Architecture(
            f"resnet{depth}d", depth, block,
            f"ResNet-{depth}-D: ResNet-{depth} with a deep 3x3 stem and average-pool shortcuts "
            f"(Bag of Tricks, He et al., 2019; timm's ``resnet{depth}d``).",
            stem="deep", shortcut="avgpool",
        ))
    return rows


ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in [
        *_resnets(),
        Architecture(
            "wide_resnet50_2", 50, "bottleneck",
            "Wide ResNet-50-2: ResNet-50 with bottlenecks twice as wide (Zagoruyko & Komodakis, 2016).",
            width_per_group=128,
        ),
        Architecture(
            "wide_resnet101_2", 101, "bottleneck",
            "Wide ResNet-101-2: ResNet-101 with bottlenecks twice as wide.",
            width_per_group=128,
        ),
        Architecture(
            "resnext50_32x4d", 50, "bottleneck",
            "ResNeXt-50 32x4d: 32 groups of width 4 in each 3x3 convolution (Xie et al., 2017).",
            groups=32, width_per_group=4,
        ),
        Architecture(
            "resnext101_32x8d", 101, "bottleneck", "ResNeXt-101 32x8d: 32 groups of width 8.",
            groups=32, width_per_group=8,
        ),
        Architecture(
            "resnext101_64x4d", 101, "bottleneck", "ResNeXt-101 64x4d: 64 groups of width 4.",
            groups=64, width_per_group=4,
        ),
    ]
}


def natural_key(name: str) -> list[int | str]:
    """Sort key that orders numbers by value: ``resnet18 < resnet50 < resnet101``.

    Every list of names shown to a user (models, weight sets, tags) is sorted with it;
    ``"resnet18.tv_in1k"`` sorts before ``"resnet18d.ra2_in1k"`` and ``"resnet101.tv_in1k"``.
    """
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name.lower())]
