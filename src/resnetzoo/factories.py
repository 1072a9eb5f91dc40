"""Resolve the pluggable parts of a network: norm, activation, shortcut, stem and block.

Every part of a :class:`~resnetzoo.ResNet` is given as a *factory*: a registered
name (``"groupnorm"``), a class (``nn.GroupNorm``-like) or any callable such as
``functools.partial(nn.GroupNorm, 32)``. :func:`resolve` turns each of those into
a plain callable once, before anything is built, so the network code never
looks at strings.

The call signature each kind of factory must have:

========  ==========================================================================
kind      signature
========  ==========================================================================
norm      ``norm(num_channels) -> nn.Module`` (like torchvision's ``norm_layer``)
act       ``act() -> nn.Module``
shortcut  ``shortcut(in_chs, out_chs, *, stride, dilation, norm) -> nn.Module``
stem      ``stem(in_chans, out_chs, *, stem_width, norm, act) -> nn.Sequential``
block     a class following the block protocol (see :mod:`resnetzoo.blocks`)
========  ==========================================================================
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch.nn as nn

from resnetzoo.blocks import BasicBlock, Bottleneck
from resnetzoo.shortcuts import avgpool_shortcut, conv_shortcut, zero_pad_shortcut
from resnetzoo.stems import classic_stem, deep_stem

__all__ = [
    "ACTS",
    "BLOCKS",
    "NORMS",
    "SHORTCUTS",
    "STEMS",
    "FactoryKind",
    "GroupNorm32",
    "frozen_batchnorm",
    "known_names",
    "resolve",
]

FactoryKind = Literal["norm", "act", "shortcut", "stem", "block"]


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with (up to) 32 groups, called like a BatchNorm: ``GroupNorm32(num_channels)``.

    The group count is ``gcd(32, num_channels)`` so that narrow networks (a test
    model with 8 channels, say) still get a valid group count.
    """

    def __init__(self, num_channels: int, *, num_groups: int = 32, eps: float = 1e-5) -> None:
        super().__init__(math.gcd(num_groups, num_channels), num_channels, eps=eps)


def frozen_batchnorm(num_features: int, eps: float = 1e-5) -> nn.Module:
    """torchvision's :class:`~torchvision.ops.FrozenBatchNorm2d`: BatchNorm with fixed statistics and affine.

    torchvision is imported on first use only: importing it costs seconds (it loads
    ``torch._dynamo``), which a model without frozen norms should not pay.
    """
    from torchvision.ops import FrozenBatchNorm2d

    return FrozenBatchNorm2d(num_features, eps=eps)


NORMS: dict[str, Callable[..., nn.Module]] = {
    "batchnorm": nn.BatchNorm2d,
    "bn": nn.BatchNorm2d,
    "groupnorm": GroupNorm32,
    "gn": GroupNorm32,
    "frozen_bn": frozen_batchnorm,
    "syncbn": nn.SyncBatchNorm,
}
ACTS: dict[str, Callable[..., nn.Module]] = {
    "relu": functools.partial(nn.ReLU, inplace=True),
    "silu": functools.partial(nn.SiLU, inplace=True),
    "gelu": nn.GELU,
    "leaky_relu": functools.partial(nn.LeakyReLU, negative_slope=0.01, inplace=True),
}
SHORTCUTS: dict[str, Callable[..., nn.Module]] = {
    "conv": conv_shortcut,
    "avgpool": avgpool_shortcut,
    "zero_pad": zero_pad_shortcut,
}
STEMS: dict[str, Callable[..., nn.Sequential]] = {
    "classic": classic_stem,
    "deep": deep_stem,
}
BLOCKS: dict[str, type[nn.Module]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
}

_TABLES: Mapping[str, Mapping[str, Any]] = {
    "norm": NORMS,
    "act": ACTS,
    "shortcut": SHORTCUTS,
    "stem": STEMS,
    "block": BLOCKS,
}


def _check_kind(kind: str) -> None:
    if kind not in _TABLES:
        raise ValueError(f"unknown factory kind {kind!r}; expected one of {sorted(_TABLES)}")


def known_names(kind: FactoryKind) -> list[str]:
    """Return the registered names for one kind of factory, sorted.

    Raises:
        ValueError: ``kind`` is not one of ``"norm"``, ``"act"``, ``"shortcut"``, ``"stem"``, ``"block"``.
    """
    _check_kind(kind)
    return sorted(_TABLES[kind])


def resolve(kind: FactoryKind, factory: str | Callable[..., Any]) -> Callable[..., Any]:
    """Turn a factory given as a name, class or callable into a callable.

    Args:
        kind: which part the factory builds: ``"norm"``, ``"act"``, ``"shortcut"``,
            ``"stem"`` or ``"block"``.
        factory: a registered name (case-insensitive, see :func:`known_names`), a
            class, or any callable (e.g. ``functools.partial(nn.GroupNorm, 32)``); not a
            module instance.

    Returns:
        The callable to build the part with. Classes and callables are returned as
        they are.

    Raises:
        ValueError: ``kind`` is unknown, or ``factory`` is a name nobody registered
            (the message lists the known names).
        TypeError: ``factory`` is a module instance, or neither a string nor callable.
    """
    _check_kind(kind)
    if isinstance(factory, str):
        table = _TABLES[kind]
        key = factory.lower()
        if key not in table:
            raise ValueError(
                f"unknown {kind} {factory!r}; known {kind} names: {', '.join(known_names(kind))} "
                f"(or pass a class or callable instead of a name)"
            )
        return table[key]
    if isinstance(factory, nn.Module):
        # An instance is callable too, but calling it runs its forward, far from here.
        raise TypeError(
            f"{kind} must build a module, not be one: pass the class or a factory "
            f"(e.g. {type(factory).__name__} or functools.partial({type(factory).__name__}, ...)), "
            f"not the instance {factory!r}"
        )
    if callable(factory):
        return factory
    raise TypeError(
        f"{kind} must be a name ({', '.join(known_names(kind))}), a class or a callable, "
        f"got {type(factory).__name__}"
    )
