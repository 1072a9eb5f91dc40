"""The named architectures: each constructor is :class:`~resnetzoo.ResNet` plus a one-line spec.

Every constructor takes ``pretrained`` (``False``, ``True`` for the architecture's
default weights, or a tag such as ``"tv2_in1k"``) and any :class:`~resnetzoo.ResNet`
keyword (``num_classes``, ``norm``, ``act``, ``block``, ``drop_path_rate`` …), which
override the spec. With pretrained weights and a different ``num_classes`` the
backbone is loaded and the classifier keeps its fresh initialisation.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from resnetzoo.registry import register_model
from resnetzoo.remap import load_weights
from resnetzoo.resnet import ResNet
from resnetzoo.weights import LoadedCheckpoint, get_weights, read_source

__all__ = [
    "ARCHITECTURES",
    "resnet18",
    "resnet18d",
    "resnet34",
    "resnet34d",
    "resnet50",
    "resnet50d",
    "resnet101",
    "resnet101d",
    "resnet152",
    "resnet152d",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
]

logger = logging.getLogger(__name__)

_BASIC = {"block": "basic"}
_BOTTLENECK = {"block": "bottleneck"}
# ResNet-D (Bag of Tricks): deep 3x3 stem and average-pool shortcut, as timm's resnet*d.
_D = {"stem": "deep", "shortcut": "avgpool"}
_DEPTHS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}

#: The spec of every named architecture: the :class:`ResNet` keywords it fixes.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "resnet18": {**_BASIC, "layers": _DEPTHS[18]},
    "resnet34": {**_BASIC, "layers": _DEPTHS[34]},
    "resnet50": {**_BOTTLENECK, "layers": _DEPTHS[50]},
    "resnet101": {**_BOTTLENECK, "layers": _DEPTHS[101]},
    "resnet152": {**_BOTTLENECK, "layers": _DEPTHS[152]},
    "wide_resnet50_2": {**_BOTTLENECK, "layers": _DEPTHS[50], "width_per_group": 128},
    "wide_resnet101_2": {**_BOTTLENECK, "layers": _DEPTHS[101], "width_per_group": 128},
    "resnext50_32x4d": {**_BOTTLENECK, "layers": _DEPTHS[50], "groups": 32, "width_per_group": 4},
    "resnext101_32x8d": {**_BOTTLENECK, "layers": _DEPTHS[101], "groups": 32, "width_per_group": 8},
    "resnext101_64x4d": {**_BOTTLENECK, "layers": _DEPTHS[101], "groups": 64, "width_per_group": 4},
    "resnet18d": {**_BASIC, **_D, "layers": _DEPTHS[18]},
    "resnet34d": {**_BASIC, **_D, "layers": _DEPTHS[34]},
    "resnet50d": {**_BOTTLENECK, **_D, "layers": _DEPTHS[50]},
    "resnet101d": {**_BOTTLENECK, **_D, "layers": _DEPTHS[101]},
    "resnet152d": {**_BOTTLENECK, **_D, "layers": _DEPTHS[152]},
}


def _adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Turn an RGB stem kernel ``(C, 3, k, k)`` into one for ``in_chans`` input channels.

    One channel gets the sum of the RGB kernels (a grey image through an RGB network);
    more channels get the RGB kernels repeated and scaled by ``3 / in_chans`` so the
    activations keep their scale, as timm does.
    """
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_chans // weight.shape[1])
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (weight.shape[1] / in_chans)


def _with_input_channels(checkpoint: LoadedCheckpoint, model: ResNet) -> LoadedCheckpoint:
    # The first convolution is the only tensor that depends on the input channels.
    first_conv = next(name for name, _ in model.named_parameters())
    weights = dict(checkpoint.obj)
    kernel = weights.get(first_conv)
    if kernel is None or kernel.shape[1] == model.in_chans:
        return checkpoint
    weights[first_conv] = _adapt_input_conv(kernel, model.in_chans)
    logger.info(
        "%s: adapted the pretrained %s from %d to %d input channels",
        model.arch,
        first_conv,
        kernel.shape[1],
        model.in_chans,
    )
    return LoadedCheckpoint(weights, checkpoint.metadata, checkpoint.origin)


def _load_pretrained(model: ResNet, arch: str, pretrained: bool | str) -> None:
    spec = get_weights(arch, None if pretrained is True else pretrained)
    checkpoint = _with_input_channels(read_source(spec), model)
    report = load_weights(model, checkpoint, strict=True, ignore_head=True)
    model.pretrained_cfg = spec
    if report.head_mismatch:
        logger.info(
            "%s: loaded %s backbone; classifier has %d classes in the weights and %d in the model, "
            "so it keeps its fresh initialisation",
            arch,
            spec.name,
            spec.num_classes,
            model.num_classes,
        )


def _create(arch: str, pretrained: bool | str, kwargs: dict[str, Any]) -> ResNet:
    if not isinstance(pretrained, (bool, str)):
        raise TypeError(
            f"pretrained must be True/False or a weight tag string, got {type(pretrained).__name__}"
        )
    model = ResNet(**{**ARCHITECTURES[arch], **kwargs, "arch": arch})
    if pretrained:
        _load_pretrained(model, arch, pretrained)
    return model


@register_model
def resnet18(*, pretrained: bool | str = False, **kwargs: Any) -> ResNet:
    """ResNet-18: BasicBlock, (2, 2, 2, 2) — He et al., 2015. 11.7 M parameters."""
    return _create("resnet18", pretrained, kwargs)


@register_model
def resnet34(*, pretrained: bool | str = False, **kwargs: Any) -> ResNet:
    """ResNet-34: BasicBlock, (3, 4, 6, 3). 21.8 M parameters."""
    return _create("resnet34", pretrained, kwargs)


@register_model
def resnet50(*, pretrained: bool | str = False, **kwargs: Any) -> ResNet:
    """ResNet-50 v1.5: Bottleneck, (3, 4, 6, 3), stride on the 3x3. 25.6 M parameters."""
    return _create("resnet50", pretrained, kwargs)


@register_model
def resnet101(*, pretrained: bool | str = False, **kwargs: Any) -> ResNet:
    """ResNet-101 v1.5: Bottleneck, (3, 4, 23, 3). 44.5 M parameters."""
    return _create("resnet101", pretrained, kwargs)


@register_model
def resnet152(*, pretrained: bool | str = False, **kwargs: Any) -> ResNet:
    """ResNet-152 v1.5: Bottleneck, (3, 8, 36, 3). 60.2 M parameters."""
    return _create("resnet152", pretrained, kwargs)


@register_model
def wide_resnet50_2(*, pretrained: bool | str = False, **kwargs: Any) -> ResNet:
    """Wide ResNet-50-2: ResNet-50 with bottlenecks twice as wide — Zagoruyko & Komodakis, 2016."""
    return _create("wide_resnet50_2", pretrained, kwargs)


@register_model
def wide_resnet101_2(*, pretrained: bool | str = False, **kwargs: Any) -> ResNet:
    """Wide ResNet-101-2: ResNet-101 with bottlenecks twice as wide."""
    return _create("wide_resnet101_2", pretrained, kwargs)


@register_model
def resnext50_32x4d(*, pretrained: bool | str = False, **kwargs: Any) -> ResNet:
    """ResNeXt-50 32x4d: 32 groups of width 4 in each 3x3 — Xie et al., 2017."""
    return _create("resnext50_32x4d", pretrained, kwargs)


@register_model
def resnext101_32x8d(*, pretrained: bool | str = False, **kwargs: Any) -> ResNet:
    """ResNeXt-101 32x8d: 32 groups of width 8."""
    return _create("resnext101_32x8d", pretrained, kwargs)


@register_model
def resnext101_64x4d(*, pretrained: bool | str = False, **kwargs: Any) -> ResNet:
    """ResNeXt-101 64x4d: 64 groups of width 4."""
    return _create("resnext101_64x4d", pretrained, kwargs)


@register_model
def resnet18d(*, pretrained: bool | str = False, **kwargs: Any) -> ResNet:
    """ResNet-18-D: deep 3x3 stem and average-pool shortcut (timm's ``resnet18d``)."""
    return _create("resnet18d", pretrained, kwargs)


@register_model
def resnet34d(*, pretrained: bool | str = False, **kwargs: Any) -> ResNet:
    """ResNet-34-D: deep 3x3 stem and average-pool shortcut (timm's ``resnet34d``)."""
    return _create("resnet34d", pretrained, kwargs)


@register_model
def resnet50d(*, pretrained: bool | str = False, **kwargs: Any) -> ResNet:
    """ResNet-50-D: deep 3x3 stem and average-pool shortcut (timm's ``resnet50d``)."""
    return _create("resnet50d", pretrained, kwargs)


@register_model
def resnet101d(*, pretrained: bool | str = False, **kwargs: Any) -> ResNet:
    """ResNet-101-D: deep 3x3 stem and average-pool shortcut (timm's ``resnet101d``)."""
    return _create("resnet101d", pretrained, kwargs)


@register_model
def resnet152d(*, pretrained: bool | str = False, **kwargs: Any) -> ResNet:
    """ResNet-152-D: deep 3x3 stem and average-pool shortcut (timm's ``resnet152d``)."""
    return _create("resnet152d", pretrained, kwargs)
