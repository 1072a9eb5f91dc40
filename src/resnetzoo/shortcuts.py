"""Shortcut (downsample) factories: what the residual connection does when shapes change.

Each factory has the signature ``shortcut(in_chs, out_chs, *, stride, dilation, norm)``
and returns the module the block registers as ``downsample``. The network calls it
only where the block changes resolution or width; elsewhere the shortcut is the
identity. Returning an ``nn.Sequential`` keeps the state-dict names that torchvision
(``downsample.0``/``.1``) and timm's ResNet-D (``downsample.1``/``.2``) use.
"""

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from resnetzoo.blocks import conv1x1

__all__ = ["ZeroPadShortcut", "avgpool_shortcut", "conv_shortcut", "zero_pad_shortcut"]


def conv_shortcut(
    in_chs: int, out_chs: int, *, stride: int, dilation: int = 1, norm: Callable[[int], nn.Module]
) -> nn.Sequential:
    """Projection shortcut (the paper's option B, the "dotted" line): strided 1x1 conv + norm.

    Keys: ``downsample.0.weight`` (conv), ``downsample.1.*`` (norm), as torchvision.
    """
    return nn.Sequential(conv1x1(in_chs, out_chs, stride=stride), norm(out_chs))


def avgpool_shortcut(
    in_chs: int, out_chs: int, *, stride: int, dilation: int = 1, norm: Callable[[int], nn.Module]
) -> nn.Sequential:
    """ResNet-D shortcut: 2x2 average pool, then an unstrided 1x1 conv + norm.

    A strided 1x1 convolution ignores three quarters of its input; pooling first lets
    every pixel contribute (Bag of Tricks, He et al. 2019). At stride 1 the pool is an
    ``nn.Identity``, except in a dilated stage (``output_stride`` < 32), where it is a
    2x2 stride-1 pool padded by one zero row and column at the bottom and right, as
    timm's ``AvgPool2dSame``, so that timm's dilated ``resnet*d`` and ours compute the
    same. Keys: ``downsample.1.weight`` (conv), ``downsample.2.*`` (norm), as timm's
    ``resnet*d``.
    """
    pool: nn.Module
    if stride > 1:
        pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
    elif dilation > 1:
        pool = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.AvgPool2d(2, 1))
    else:
        pool = nn.Identity()
    return nn.Sequential(pool, conv1x1(in_chs, out_chs), norm(out_chs))


class ZeroPadShortcut(nn.Module):
    """Parameter-free shortcut (the paper's option A): subsample, then pad channels with zeros.

    Shape:
        ``(N, in_chs, H, W) -> (N, out_chs, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(self, in_chs: int, out_chs: int, *, stride: int) -> None:
        super().__init__()
        if out_chs < in_chs:
            raise ValueError(
                f"zero_pad shortcut cannot reduce channels ({in_chs} -> {out_chs}); "
                f"use shortcut='conv'"
            )
        self.pad = out_chs - in_chs
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # F.pad pads from the last dimension backwards: (W, W, H, H, C_before, C_after).
        return F.pad(x, (0, 0, 0, 0, 0, self.pad)) if self.pad else x

    def extra_repr(self) -> str:
        return f"pad={self.pad}, stride={self.stride}"


def zero_pad_shortcut(
    in_chs: int, out_chs: int, *, stride: int, dilation: int = 1, norm: Callable[[int], nn.Module]
) -> ZeroPadShortcut:
    """Factory for :class:`ZeroPadShortcut` (``norm`` is unused: the shortcut has no parameters)."""
    return ZeroPadShortcut(in_chs, out_chs, stride=stride)
