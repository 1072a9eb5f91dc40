"""The model registry: named constructors, listed and created by name.

:func:`register_model` adds a constructor under its function name;
:func:`create_model` builds one from a name such as ``"resnet50"`` or
``"resnet50.a1_in1k"`` (architecture, then the pretrained tag to use).
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

import torch.nn as nn

from resnetzoo.weights import get_weights, list_pretrained

__all__ = ["create_model", "is_model", "list_models", "natural_key", "register_model", "split_model_name"]

logger = logging.getLogger(__name__)

_MODELS: dict[str, Callable[..., nn.Module]] = {}
F = TypeVar("F", bound=Callable[..., nn.Module])


def _registered() -> dict[str, Callable[..., nn.Module]]:
    """Every registered constructor, the built-in ones included.

    The built-in constructors register themselves when :mod:`resnetzoo.models` is
    imported; it is imported here rather than at the top because it imports this
    module to register (and the package root imports neither until asked).
    """
    import resnetzoo.models  # noqa: F401

    return _MODELS


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
    return name in _registered()


def split_model_name(name: str) -> tuple[str, str | None]:
    """Split ``"resnet50.a1_in1k"`` into ``("resnet50", "a1_in1k")``; no tag gives ``None``."""
    arch, _, tag = name.partition(".")
    return arch, tag or None


def natural_key(name: str) -> list[int | str]:
    """Sort key that orders numbers by value: ``resnet18 < resnet50 < resnet101``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name.lower())]


def list_models(pattern: str | None = None, *, pretrained: bool = False) -> list[str]:
    """List registered architecture names in natural order (``resnet18`` before ``resnet101``).

    Args:
        pattern: shell-style filter such as ``"resnet*d"`` (``fnmatch``).
        pretrained: list only architectures that have at least one pretrained weight set.
    """
    names = sorted(_registered(), key=natural_key)
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
    models = _registered()
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
