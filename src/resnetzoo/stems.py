"""Stem factories: the layers before the first stage.

A stem factory has the signature ``stem(in_chans, out_chs, *, norm, act)`` and
returns an ``nn.Sequential`` whose *named* children the network registers at its
top level, in order. That is how the default stem keeps torchvision's keys
(``conv1``, ``bn1``) instead of ``stem.conv1``.

Two optional attributes of the returned module describe it to the network:

- ``reduction``: how much the whole stem reduces the resolution (default 4);
- ``feature``: ``(child_name, reduction)`` of the stem's feature map, feature index 0
  of :meth:`~resnetzoo.ResNet.forward_intermediates` and ``feature_info``. The built-in
  stems say ``("act1", 2)``: the activation before the max-pool, as timm. Without it
  the stem's last child's output (at ``reduction``) is the feature.
"""

from collections import OrderedDict
from collections.abc import Callable

import torch.nn as nn

from resnetzoo.blocks import conv3x3

__all__ = ["classic_stem", "deep_stem"]


def _with_norm_act_pool(
    conv: nn.Module, out_chs: int, norm: Callable[[int], nn.Module], act: Callable[[], nn.Module]
) -> nn.Sequential:
    stem = nn.Sequential(
        OrderedDict(
            conv1=conv, bn1=norm(out_chs), act1=act(), maxpool=nn.MaxPool2d(3, stride=2, padding=1)
        )
    )
    stem.reduction = 4
    stem.feature = ("act1", 2)  # before the max-pool, where timm and detectors tap the stem
    return stem


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
    return _with_norm_act_pool(conv, out_chs, norm, act)


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
    return _with_norm_act_pool(conv, out_chs, norm, act)
