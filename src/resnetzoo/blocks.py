"""Residual blocks and the block protocol.

A block class is anything that can be built as::

    block(in_chs, planes, *, stride, downsample, groups, base_width, dilation,
          first_dilation, norm, act, drop_path, stride_in_1x1)

and has a class attribute ``expansion`` (output channels = ``planes * expansion``).
``downsample`` is the shortcut module made by the shortcut factory (``None`` for
the identity); the block registers it as ``downsample`` so that checkpoints keep
torchvision's key names. A block may define ``zero_init_last()``: the network
calls it (found with ``hasattr``) to start the residual branch at zero, so a
custom block joins in just by defining the method. Subclass :class:`BasicBlock`
or :class:`Bottleneck` to inherit the whole protocol.

Blocks compute the residual branch first and the shortcut after, as torchvision and
timm do. The output is the same either way, but the order is visible: ``torch.fx``
lists a traced block's parameters in execution order, and tools that pair layers by
position (torchvision's feature-extraction checks, converters between libraries)
expect torchvision's order.

No ``from __future__ import annotations`` here: TorchScript reads these annotations,
and in a ``torch.fx`` graph that is scripted afterwards a string annotation becomes
an unknown type name.
"""

from collections.abc import Callable

import torch
import torch.fx
import torch.nn as nn

__all__ = ["BasicBlock", "Bottleneck", "DropPath", "conv1x1", "conv3x3", "drop_path"]

NormFactory = Callable[[int], nn.Module]
ActFactory = Callable[[], nn.Module]


def conv3x3(in_chs: int, out_chs: int, *, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution with "same" padding and no bias (a norm follows it)."""
    return nn.Conv2d(
        in_chs, out_chs, 3, stride=stride, padding=dilation, groups=groups, dilation=dilation, bias=False
    )


def conv1x1(in_chs: int, out_chs: int, *, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias (a norm follows it)."""
    return nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)


@torch.fx.wrap  # one node in a traced graph: its shape arithmetic needs real tensors
def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples of ``x`` with probability ``p``, scale the rest by ``1 / (1 - p)``.

    The same computation, random draws included, as torchvision's
    ``stochastic_depth(x, p, mode="row")`` and timm's ``drop_path``: with the same seed
    all three give the same output. Outside training, or with ``p == 0``, ``x`` itself
    is returned.

    Shape:
        ``(N, *) -> (N, *)``; one Bernoulli draw per sample.
    """
    if not training or p == 0.0:
        return x
    keep = 1.0 - p
    noise = x.new_empty([x.shape[0]] + [1] * (x.dim() - 1)).bernoulli_(keep)
    if keep > 0.0:
        noise.div_(keep)
    return x * noise


class DropPath(nn.Module):
    """Stochastic depth of a residual branch (Huang et al., 2016), as a module: see :func:`drop_path`.

    Our own small module rather than torchvision's ``StochasticDepth``: importing
    ``torchvision.ops`` costs seconds (it loads ``torch._dynamo``), and building a model
    must not. Its behaviour is checked against torchvision's in the test suite.

    Args:
        p: probability of dropping a sample's branch, in ``[0, 1]``.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1], got {p!r}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _drop_path(rate: float) -> nn.Module:
    # Identity when off, so that a plain model has no extra module in its forward.
    return DropPath(rate) if rate > 0 else nn.Identity()


def _zero_weight(norm: nn.Module) -> None:
    # Norms built with affine=False have no weight to zero.
    weight = getattr(norm, "weight", None)
    if isinstance(weight, torch.Tensor):
        nn.init.zeros_(weight)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34): ``x -> conv1-bn1-act1-conv2-bn2 (+ shortcut) -> act2``.

    Args:
        in_chs: input channels.
        planes: channels of both convolutions; the output has ``planes * expansion`` channels.
        stride: stride of the first 3x3 convolution.
        downsample: shortcut module applied to the input, or ``None`` for the identity.
        groups: must be 1 (grouped convolutions are a Bottleneck feature).
        base_width: must be 64.
        dilation: dilation of the second convolution.
        first_dilation: dilation of the first convolution (the previous stage's when the
            network trades stride for dilation); defaults to ``dilation``.
        norm: norm factory, called with a channel count.
        act: activation factory, called with no arguments.
        drop_path: stochastic-depth rate of the residual branch.
        stride_in_1x1: ignored (BasicBlock has no 1x1 convolution); accepted so that all
            blocks share one signature.

    Shape:
        ``(N, in_chs, H, W) -> (N, planes, ceil(H / stride), ceil(W / stride))``.
    """

    expansion: int = 1

    def __init__(
        self,
        in_chs: int,
        planes: int,
        *,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        first_dilation: int | None = None,
        norm: NormFactory = nn.BatchNorm2d,
        act: ActFactory = nn.ReLU,
        drop_path: float = 0.0,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError(
                f"BasicBlock supports only groups=1 and width_per_group=64 (got groups={groups}, "
                f"width_per_group={base_width}); use block='bottleneck' for ResNeXt/wide variants"
            )
        out_chs = planes * self.expansion
        self.conv1 = conv3x3(in_chs, planes, stride=stride, dilation=first_dilation or dilation)
        self.bn1 = norm(planes)
        self.act1 = act()
        self.conv2 = conv3x3(planes, out_chs, dilation=dilation)
        self.bn2 = norm(out_chs)
        self.drop_path = _drop_path(drop_path)
        self.act2 = act()
        self.downsample = downsample

    def zero_init_last(self) -> None:
        """Zero the last norm's scale so the block starts as its shortcut."""
        _zero_weight(self.bn2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.drop_path(self.bn2(self.conv2(x)))
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        x += shortcut  # in place, as torchvision: one activation-sized tensor less per block
        return self.act2(x)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped) and 1x1 expand convolutions (ResNet-50 and deeper, ResNeXt, Wide).

    ``x -> conv1-bn1-act1-conv2-bn2-act2-conv3-bn3 (+ shortcut) -> act3``. The 3x3
    convolution has ``int(planes * base_width / 64) * groups`` channels.

    By default the stride sits on the 3x3 convolution (ResNet v1.5, as torchvision,
    timm and transformers); ``stride_in_1x1=True`` puts it on the first 1x1 as in the
    original paper (v1, Caffe style), which changes accuracy and speed but no weights.

    Args:
        in_chs: input channels.
        planes: bottleneck width before grouping; output has ``planes * 4`` channels.
        stride: spatial stride of the block.
        downsample: shortcut module, or ``None`` for the identity.
        groups: groups of the 3x3 convolution (ResNeXt cardinality).
        base_width: width per group (64 for ResNet, 128 for Wide ResNet, 4 or 8 for ResNeXt).
        dilation: dilation of the 3x3 convolution in all but the first block of a stage.
        first_dilation: dilation of the 3x3 convolution of this block; defaults to ``dilation``.
        norm: norm factory, called with a channel count.
        act: activation factory, called with no arguments.
        drop_path: stochastic-depth rate of the residual branch.
        stride_in_1x1: put the stride on the first 1x1 convolution (v1) instead of the 3x3.

    Shape:
        ``(N, in_chs, H, W) -> (N, planes * 4, ceil(H / stride), ceil(W / stride))``.
    """

    expansion: int = 4

    def __init__(
        self,
        in_chs: int,
        planes: int,
        *,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        first_dilation: int | None = None,
        norm: NormFactory = nn.BatchNorm2d,
        act: ActFactory = nn.ReLU,
        drop_path: float = 0.0,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        out_chs = planes * self.expansion
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_chs, width, stride=stride_1x1)
        self.bn1 = norm(width)
        self.act1 = act()
        self.conv2 = conv3x3(
            width, width, stride=stride_3x3, groups=groups, dilation=first_dilation or dilation
        )
        self.bn2 = norm(width)
        self.act2 = act()
        self.conv3 = conv1x1(width, out_chs)
        self.bn3 = norm(out_chs)
        self.drop_path = _drop_path(drop_path)
        self.act3 = act()
        self.downsample = downsample

    def zero_init_last(self) -> None:
        """Zero the last norm's scale so the block starts as its shortcut."""
        _zero_weight(self.bn3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.drop_path(self.bn3(self.conv3(x)))
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        x += shortcut  # in place, as torchvision: one activation-sized tensor less per block
        return self.act3(x)
