"""The named constructors: one per row of :data:`resnetzoo.architectures.ARCHITECTURES`.

Each constructor (``resnetzoo.resnet50`` …) is :class:`~resnetzoo.ResNet` built with
its architecture's keywords, generated from the table, so that adding an architecture
is one row there. Every constructor takes ``pretrained`` and any
:class:`~resnetzoo.ResNet` keyword (``num_classes``, ``norm``, ``act``, ``block``,
``drop_path_rate`` …), which override the architecture's. ``pretrained`` accepts
``False``/``None``/``"none"``, ``True`` (the default weight set), a tag or full name
(``"tv2_in1k"``, ``"resnet50.tv2_in1k"``), a checkpoint path, an ``hf-hub:`` reference
or a URL (see :func:`resnetzoo.weights.pretrained_source`). With pretrained weights
and a different ``num_classes`` the backbone is loaded and the classifier keeps its
fresh initialisation; with another ``in_chans`` the stem kernel is adapted.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch

from resnetzoo.architectures import ARCHITECTURES, Architecture
from resnetzoo.remap import load_weights
from resnetzoo.resnet import ResNet
from resnetzoo.weights import LoadedCheckpoint, WeightSpec, pretrained_source, read_source

__all__ = ["ARCHITECTURES", "CONSTRUCTORS", *ARCHITECTURES]

logger = logging.getLogger(__name__)

Pretrained = bool | str | os.PathLike[str] | None


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
    if not isinstance(checkpoint.obj, Mapping):
        return checkpoint  # not a flat state dict: the load report will say what it is
    weights = dict(checkpoint.obj)
    kernel = weights.get(first_conv)
    if not isinstance(kernel, torch.Tensor) or kernel.ndim != 4 or kernel.shape[1] == model.in_chans:
        return checkpoint
    weights[first_conv] = _adapt_input_conv(kernel, model.in_chans)
    logger.info(
        "%s: adapted the pretrained %s from %d to %d input channels",
        model.arch,
        first_conv,
        kernel.shape[1],
        model.in_chans,
    )
    return LoadedCheckpoint(weights, checkpoint.metadata, checkpoint.origin, checkpoint.recovered)


def _load_pretrained(model: ResNet, arch: str, source: WeightSpec | str | os.PathLike[str], read: LoadedCheckpoint) -> None:
    checkpoint = _with_input_channels(read, model)
    # A weight record knows its library's names (timm's resnet50 = torchvision's): say which.
    convention = source.convention if isinstance(source, WeightSpec) else None
    report = load_weights(model, checkpoint, strict=True, ignore_head=True, convention=convention)
    if isinstance(source, WeightSpec):
        model.weight_spec = source
    if report.head_mismatch:
        logger.info(
            "%s: loaded the backbone from %s; its classifier does not fit the model's %d classes, "
            "which keep their fresh initialisation",
            arch,
            report.origin,
            model.num_classes,
        )


def _create(arch: str, pretrained: Pretrained, kwargs: dict[str, Any]) -> ResNet:
    source = pretrained_source(arch, pretrained)
    spec = {**ARCHITECTURES[arch].kwargs(), **kwargs, "arch": arch}
    read = None
    if source is not None:
        # Fetched before the model is built, so weights that cannot be had fail at once,
        # without first paying for the model's initialisation; a mistyped keyword still
        # fails before any download. (Not by a build on the meta device: initialising
        # meta tensors imports torch._dynamo, seconds of the failure's latency.)
        try:
            inspect.signature(ResNet.__init__).bind(None, **spec)
        except TypeError as exc:
            raise TypeError(f"{arch}() {exc}") from None
        read = read_source(source)
    model = ResNet(**spec)
    if source is not None and read is not None:
        _load_pretrained(model, arch, source, read)
    return model


_CONSTRUCTOR_DOC = """

    Args:
        pretrained: ``False``/``None``/``"none"`` for random weights, ``True`` for the
            default weight set, a tag or full name (``resnetzoo list``), a checkpoint
            path, an ``hf-hub:`` reference or a URL.
        **kwargs: any :class:`~resnetzoo.ResNet` keyword; overrides the architecture's.

    Returns:
        the :class:`~resnetzoo.ResNet`.
"""


def _constructor(arch: Architecture) -> Callable[..., ResNet]:
    def constructor(*, pretrained: Pretrained = False, **kwargs: Any) -> ResNet:
        return _create(arch.name, pretrained, kwargs)

    constructor.__name__ = constructor.__qualname__ = arch.name
    constructor.__module__ = __name__
    constructor.__doc__ = arch.summary + _CONSTRUCTOR_DOC
    return constructor


#: Architecture name -> its constructor, one per row of the table; the registry starts from these.
CONSTRUCTORS: dict[str, Callable[..., ResNet]] = {name: _constructor(arch) for name, arch in ARCHITECTURES.items()}
globals().update(CONSTRUCTORS)
