"""Stem factories: the layers before the first stage.

A stem factory has the signature ``stem(in_chans, out_chs, *, norm, act)`` and
returns an ``nn.Sequential`` whose *named* children the network registers at its
top level, in order. That is how the default stem keeps torchvision's keys
(``conv1``, ``bn1``) instead of ``stem.conv1``. A stem reduces resolution by 4
unless the returned module sets a ``reduction`` attribute saying otherwise.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch.nn as nn

from resnetzoo.blocks import conv3x3

__all__ = ["classic_stem", "deep_stem"]


def _norm_act_pool(
    out_chs: int, norm: Callable[[int], nn.Module], act: Callable[[], nn.Module]
) -> list[tuple[str, nn.Module]]:
    return [("bn1", norm(out_chs)), ("act1", act()), ("maxpool", nn.MaxPool2d(3, stride=2, padding=1))]


def classic_stem(
    in_chans: int,
    out_chs: int,
    *,
    norm: Callable[[int], nn.Module],
    act: Callable[[], nn.Module],
) -> nn.Sequential:
    """The original stem: 7x7 stride-2 conv, norm, activation, 3x3 stride-2 max-pool.

    Keys: ``conv1.weight``, ``bn1.*`` (torchvision). Shape:
    ``(N, in_chans, H, W) -> (N, out_chs, ceil(H / 4), ceil(W / 4))``.
    """
    conv = nn.Conv2d(in_chans, out_chs, 7, stride=2, padding=3, bias=False)
    return nn.Sequential(OrderedDict([("conv1", conv), *_norm_act_pool(out_chs, norm, act)]))


def deep_stem(
    in_chans: int,
    out_chs: int,
    *,
    norm: Callable[[int], nn.Module],
    act: Callable[[], nn.Module],
    mid_chs: int | None = None,
) -> nn.Sequential:
    """Deep stem (ResNet-C/D): three 3x3 convs (the first strided), then norm, activation, max-pool.

    Three 3x3 convolutions see the same 7x7 field as the classic stem at lower cost and
    with two more non-linearities. ``mid_chs`` defaults to ``out_chs // 2`` (32 for the
    usual 64-channel stem). Keys: ``conv1.{0,1,3,4,6}``, ``bn1.*`` (timm's ``resnet*d``).
    """
    mid = mid_chs or out_chs // 2
    conv = nn.Sequential(
        conv3x3(in_chans, mid, stride=2),
        norm(mid),
        act(),
        conv3x3(mid, mid),
        norm(mid),
        act(),
        conv3x3(mid, out_chs),
    )
    return nn.Sequential(OrderedDict([("conv1", conv), *_norm_act_pool(out_chs, norm, act)]))
