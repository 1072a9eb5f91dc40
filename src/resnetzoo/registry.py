"""The model registry: named constructors, listed and created by name or from a checkpoint.

:func:`register_model` adds a constructor under its function name;
:func:`create_model` builds one from a name such as ``"resnet50"`` or
``"resnet50.a1_in1k"`` (architecture, then the pretrained tag to use).
:func:`create_model_from_checkpoint` builds the network a checkpoint holds, told
from its tensors' names and shapes (:mod:`resnetzoo.infer`), and loads it.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn as nn

from resnetzoo.architectures import natural_key
from resnetzoo.infer import NOT_IN_THE_WEIGHTS, InferredArchitecture, infer_architecture
from resnetzoo.models import CONSTRUCTORS
from resnetzoo.remap import LoadReport, load_weights
from resnetzoo.remap.conventions import Remapped, to_native
from resnetzoo.resnet import ResNet
from resnetzoo.weights import LoadedCheckpoint, get_weights, list_pretrained, read_source
from resnetzoo.weights.files import UnsafeObjects

__all__ = [
    "create_model",
    "create_model_from_checkpoint",
    "inspect_checkpoint",
    "is_model",
    "list_models",
    "natural_key",
    "register_model",
    "split_model_name",
]

logger = logging.getLogger(__name__)

# Every registered constructor: the built-in ones (one per architecture row), then the user's.
_MODELS: dict[str, Callable[..., nn.Module]] = dict(CONSTRUCTORS)
F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(fn: F) -> F:
    """Decorator: register a model constructor under its ``__name__``.

    Raises:
        ValueError: a constructor with that name is already registered.
    """
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(
            f"a model named {name!r} is already registered (by {_MODELS[name].__module__}); "
            f"choose another function name"
        )
    _MODELS[name] = fn
    return fn


def is_model(name: str) -> bool:
    """Tell whether an architecture name (without a ``.tag``) is registered."""
    return name in _MODELS


def split_model_name(name: str) -> tuple[str, str | None]:
    """Split ``"resnet50.a1_in1k"`` into ``("resnet50", "a1_in1k")``; no tag gives ``None``."""
    arch, _, tag = name.partition(".")
    return arch, tag or None


def list_models(pattern: str | None = None, *, pretrained: bool = False) -> list[str]:
    """List registered architecture names in natural order (``resnet18`` before ``resnet101``).

    Args:
        pattern: shell-style filter such as ``"resnet*d"`` (``fnmatch``).
        pretrained: list only architectures that have at least one pretrained weight set.
    """
    names = sorted(_MODELS, key=natural_key)
    if pattern is not None:
        names = fnmatch.filter(names, pattern)
    if pretrained:
        with_weights = {spec.arch for spec in list_pretrained()}
        names = [n for n in names if n in with_weights]
    return names


def create_model(name: str, *, pretrained: Any = False, **kwargs: Any) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: ``"arch"`` or ``"arch.tag"``; a tag chooses the weight set that
            ``pretrained=True`` loads (``create_model("resnet50.a1_in1k", pretrained=True)``).
            Without ``pretrained`` the weights stay random, as in timm, and a warning
            says so.
        pretrained: ``False``/``None``/``"none"``, ``True`` (the tag in ``name``, else the
            architecture's default weights), a tag, a full ``arch.tag`` name, a checkpoint
            path, an ``hf-hub:`` reference or a URL (see
            :func:`resnetzoo.weights.pretrained_source`).
        **kwargs: passed to the constructor (``num_classes``, factories, ``device``,
            ``dtype``, …).

    Raises:
        ValueError: unknown architecture (the message suggests close names), or a tag
            in ``name`` that contradicts ``pretrained``.
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string such as 'resnet50', got {type(name).__name__}")
    arch, tag = split_model_name(name)
    models = _MODELS
    if arch not in models:
        close = difflib.get_close_matches(arch, models, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {arch!r}{hint} (see resnetzoo.list_models())")
    spec = None
    if tag is not None:
        spec = get_weights(arch, tag)  # an unknown tag is a mistake even when nothing is loaded
        if pretrained is True:
            pretrained = tag
        elif pretrained is False or pretrained is None:
            logger.warning("%s: built with random weights; pass pretrained=True to load the %s weights", name, tag)
        elif isinstance(pretrained, str) and pretrained.strip().lower() != "none" and pretrained not in (tag, name):
            raise ValueError(f"model name {name!r} names tag {tag!r} but pretrained={pretrained!r}; give one")
    model = models[arch](pretrained=pretrained, **kwargs)
    if spec is not None and getattr(model, "weight_spec", spec) is None:
        # As timm: "arch.tag" without its weights still carries the tag's preprocessing config.
        model.weight_spec = spec
    return model


# ------------------------------------------------------------ from a checkpoint
def _read(source: Any, unsafe_objects: UnsafeObjects) -> LoadedCheckpoint:
    return source if isinstance(source, LoadedCheckpoint) else read_source(source, unsafe_objects=unsafe_objects)


# The keywords create_model_from_checkpoint passes on to ResNet: checked up front, so that a
# misspelt or misplaced one is named with the accepted ones, never a TypeError from deep inside.
_RESNET_KEYWORDS = tuple(name for name in inspect.signature(ResNet.__init__).parameters if name != "self")


def _check_overrides(overrides: dict[str, Any]) -> None:
    unknown = sorted(set(overrides) - set(_RESNET_KEYWORDS))
    if unknown:
        raise ValueError(
            f"create_model_from_checkpoint got unknown keyword(s) {', '.join(map(repr, unknown))}; it takes "
            f"source, prefix, convention, strict, ignore_head, unsafe_objects and the ResNet keywords "
            f"{', '.join(_RESNET_KEYWORDS)}"
        )


def _infer(remapped: Remapped, metadata: dict[str, str]) -> InferredArchitecture:
    remapped.check_one_convention()
    # The file's own metadata (safetensors header, config.json) outranks entries in the pickle.
    info = {**remapped.info, **metadata}
    shapes = {key: tuple(value.shape) for key, value in remapped.state_dict.items()}
    inferred = infer_architecture(shapes, convention=remapped.convention.name, info=info)
    return dataclasses.replace(
        inferred,
        prefix=remapped.prefix,
        alternatives=tuple(remapped.alternatives),
        convention=remapped.convention.name,
    )


def inspect_checkpoint(
    source: Any, *, prefix: str | None = None, convention: str | None = None, unsafe_objects: UnsafeObjects = "refuse"
) -> InferredArchitecture:
    """Tell which ResNet a checkpoint holds, from its tensors' names and shapes; build nothing.

    Args:
        source: a state dict or training checkpoint, a file, a ``save_pretrained`` folder,
            a URL or an ``hf-hub:`` reference (see :func:`resnetzoo.weights.read_source`).
        prefix: read the network under this prefix (``"module.encoder_k."``) instead of
            the sub-tree that fits a ResNet best.
        convention: the naming convention, instead of detecting it.
        unsafe_objects: for a pickled checkpoint that also holds other Python objects
            (a DINO or MoCo-v3 ``args`` Namespace): ``"refuse"`` (default) or ``"stub"``
            to recover its tensors without running anything; see
            :func:`resnetzoo.weights.read_checkpoint`.

    Returns:
        the :class:`~resnetzoo.infer.InferredArchitecture`: ``.call()`` is the constructor
        call that builds the network, ``.ambiguities`` what the shapes cannot tell.

    Raises:
        ArchitectureError: not a ResNet, a truncated tree, mixed conventions, or two
            sub-trees that fit equally well; the message says what was found.
        CheckpointError, WeightsUnavailableError: the source cannot be read.
    """
    loaded = _read(source, unsafe_objects)
    remapped = to_native(loaded.obj, prefix=prefix, convention=convention)
    return _infer(remapped, dict(loaded.metadata or {}))


def _build(kwargs: dict[str, Any], *, materialise_only: bool) -> ResNet:
    """Build the network; with ``materialise_only`` skip the weight initialisation.

    A strict load overwrites every tensor, so drawing random weights first (a second for
    a ResNet-152 on a small CPU) is wasted: the network is built on the meta device and
    given uninitialised memory. Where the model holds tensors that a state dict does not
    (non-persistent buffers) it is built the usual way.
    """
    if not materialise_only:
        return ResNet(**kwargs)
    with torch.device("meta"):
        model = ResNet(**kwargs)
    if {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers()} != set(
        model.state_dict()
    ):
        return ResNet(**kwargs)
    return model.to_empty(device="cpu")


def create_model_from_checkpoint(
    source: Any,
    *,
    prefix: str | None = None,
    convention: str | None = None,
    strict: bool = True,
    ignore_head: bool = False,
    unsafe_objects: UnsafeObjects = "refuse",
    **overrides: Any,
) -> tuple[ResNet, LoadReport]:
    """Build the ResNet a checkpoint holds and load it: no architecture name needed.

    The architecture is inferred from the checkpoint's names and shapes
    (:func:`inspect_checkpoint`): blocks per stage, block kind, widths and groups, stem,
    shortcut, input channels, classes and norm. It is built as the named architecture
    when it is one (``resnet50d``), else as :class:`~resnetzoo.ResNet` with explicit
    keywords, and loaded strictly. The report's first hints say which constructor call
    was made and what the shapes could not tell (v1 or v1.5 bottlenecks), with the
    choice taken and why.

    Args:
        source: as for :func:`inspect_checkpoint`.
        prefix: read the network under this prefix instead of the best-fitting sub-tree.
        convention: the naming convention, instead of detecting it.
        strict: load only if every tensor fits (the default); ``False`` loads what fits.
        ignore_head: allow the classifier to differ from the checkpoint's: with
            ``num_classes=200`` in ``overrides`` the new classifier keeps its fresh
            initialisation (a classifier that fits is still loaded). A projection head
            (MoCo, SimCLR) or an empty classifier is never loaded, with or without it.
        unsafe_objects: as for :func:`inspect_checkpoint`; with ``"stub"`` the report's
            ``recovered`` shows the other objects as plain data (the ``args`` Namespace's fields).
        **overrides: :class:`~resnetzoo.ResNet` keywords that replace the inferred ones
            (``num_classes=200``, ``norm="frozen_bn"``, ``stride_in_1x1=True``,
            ``drop_path_rate=0.1`` …).

    Returns:
        ``(model, report)``: the loaded :class:`~resnetzoo.ResNet` (``model.arch`` is the
        architecture's name, or ``None``) and its :class:`~resnetzoo.LoadReport`.

    Raises:
        ArchitectureError: the checkpoint is not a ResNet, is truncated, mixes
            conventions, or has two sub-trees of equal fit; nothing is built.
        WeightsLoadError: ``strict`` and an override makes the weights not fit.
        CheckpointError, WeightsUnavailableError: the source cannot be read.
        ValueError: an override that is not a :class:`~resnetzoo.ResNet` keyword.
    """
    _check_overrides(overrides)
    loaded = _read(source, unsafe_objects)
    remapped = to_native(loaded.obj, prefix=prefix, convention=convention)
    inferred = _infer(remapped, dict(loaded.metadata or {}))
    kwargs = {**inferred.kwargs(), **overrides}
    # A projection head or an empty classifier is not a classifier: never loaded.
    ignore_head = ignore_head or bool(inferred.left_out)
    model = _build(kwargs, materialise_only=strict and not {"device", "dtype"} & set(overrides))
    # The model was built from the best-fitting sub-tree, so matching against the model
    # finds that sub-tree again, with the same notes (a twin taken by default, what else was there).
    report = load_weights(model, loaded, strict=strict, ignore_head=ignore_head, convention=convention, prefix=prefix)
    # What was left out on purpose (the notes say why) is not an unexpected key: the report's
    # verdict (report.ok) agrees with the model built.
    report.unexpected = [key for key in report.unexpected if key not in inferred.left_out]
    head = f"{report.head_prefix}."
    if model.num_classes and not any(key.startswith(head) for key in report.matched):
        model.reset_classifier(model.num_classes)  # a fresh head, not uninitialised memory
    report.hints[:0] = [
        f"built {inferred.call()} from the checkpoint's names and shapes",
        *(f"ambiguous: {a}" for a in inferred.ambiguities),
        *inferred.notes,
        NOT_IN_THE_WEIGHTS,
    ]
    return model, report
