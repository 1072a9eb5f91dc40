"""pytest plugin: run timm's own ``tests/test_models.py`` against resnetzoo models.

Loaded with ``-p timm_shim`` before timm's test module is imported, it swaps the
factory the module imports from timm (``create_model``, ``list_models``,
``list_pretrained``, ``get_pretrained_cfg_value``) for resnetzoo's, and keeps every
assertion and every other timm helper (``FeatureInfo``, ``group_parameters``, the fx
tracer settings) as timm ships them.

What it selects:

- every item whose ``model_name`` is a resnetzoo architecture (with or without a
  ``.tag``) among ``RESNETZOO_PEER_ARCHS`` (a comma-separated list, or ``all``; the
  default is a representative subset: a basic, a bottleneck, a ResNeXt and a D model);
- timm's fixed-name items (a ``model_name`` list, or a literal
  ``create_model("...")`` in an unparametrized test) that name only resnetzoo
  architectures (``resnet18``, ``resnet50d``) or ``test_resnet``, timm's tiny test
  ResNet, built here from resnetzoo parts with timm's layout (deep stem, average-pool
  shortcut, widths 32/48/48/96, one block per stage);
- not the items that need the network (``test_model_inference``,
  ``test_model_load_pretrained``, ``test_model_features_pretrained``).

Everything else in the file tests other timm architectures and is deselected.
"""

from __future__ import annotations

import fnmatch
import inspect
import os
import re
from collections.abc import Iterable

import pytest
import timm
import torch

import resnetzoo

REPRESENTATIVE = ("resnet18", "resnet50", "resnext50_32x4d", "resnet50d")
NETWORK_TESTS = {"test_model_inference", "test_model_load_pretrained", "test_model_features_pretrained"}
# resnetzoo's models are ResNets: the timm module that holds its ResNets is "resnet".
MODULE = "resnet"


def _archs() -> list[str]:
    chosen = os.environ.get("RESNETZOO_PEER_ARCHS", ",".join(REPRESENTATIVE))
    if chosen.strip() == "all":
        return resnetzoo.list_models()
    archs = [a.strip() for a in chosen.split(",") if a.strip()]
    unknown = [a for a in archs if a not in resnetzoo.list_models()]
    if unknown:
        raise pytest.UsageError(f"RESNETZOO_PEER_ARCHS names unknown architectures: {unknown}")
    return archs


def test_resnet(*, pretrained: bool | str = False, **kwargs) -> resnetzoo.ResNet:
    """timm's ``test_resnet`` from resnetzoo parts: deep stem, avg-pool shortcut, tiny widths."""
    if pretrained:
        raise ValueError("test_resnet has no pretrained weights")
    spec = {
        "layers": (1, 1, 1, 1),
        "block": "basic",
        "widths": (32, 48, 48, 96),
        "stem": "deep",
        "stem_width": 32,
        "shortcut": "avgpool",
        "arch": "test_resnet",
    }
    return resnetzoo.ResNet(**{**spec, **kwargs})


def _as_list(value: str | Iterable[str] | None) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


def _tags(arch: str) -> list[str]:
    return [spec.name for spec in resnetzoo.list_pretrained() if spec.arch == arch]


def list_models(
    filter: str | Iterable[str] = "",
    module: str | Iterable[str] = "",
    pretrained: bool = False,
    exclude_filters: str | Iterable[str] = "",
    name_matches_cfg: bool = False,
    include_tags: bool | None = None,
) -> list[str]:
    """timm's ``list_models`` over resnetzoo's architectures (the chosen subset)."""
    modules = _as_list(module)
    if modules and not any(fnmatch.fnmatch(MODULE, m) for m in modules):
        return []
    include_tags = pretrained if include_tags is None else include_tags
    names: list[str] = []
    for arch in _archs():
        tags = _tags(arch)
        if pretrained and not tags:
            continue
        names.extend(tags if include_tags and tags else [arch])
    filters = _as_list(filter)
    if filters:
        names = [n for n in names if any(fnmatch.fnmatch(n, f) for f in filters)]
    excludes = _as_list(exclude_filters)
    return [n for n in names if not any(fnmatch.fnmatch(n, f) for f in excludes)]


def list_pretrained(filter: str | Iterable[str] = "", exclude_filters: str | Iterable[str] = "") -> list[str]:
    return list_models(filter, pretrained=True, exclude_filters=exclude_filters, include_tags=True)


def create_model(model_name: str, pretrained: bool = False, **kwargs) -> torch.nn.Module:
    if model_name == "test_resnet":
        return test_resnet(pretrained=pretrained, **kwargs)
    return resnetzoo.create_model(model_name, pretrained=pretrained, **kwargs)


def get_pretrained_cfg_value(model_name: str, cfg_key: str):
    with torch.device("meta"):
        model = create_model(model_name)
    return model.pretrained_cfg.get(cfg_key)


timm.create_model = create_model
timm.list_models = list_models
timm.list_pretrained = list_pretrained
timm.get_pretrained_cfg_value = get_pretrained_cfg_value


def _ours(name: object) -> bool:
    if not isinstance(name, str):
        return False
    arch = name.partition(".")[0]
    return arch == "test_resnet" or resnetzoo.registry.is_model(arch)


def pytest_configure(config: pytest.Config) -> None:
    # timm uses pytest-timeout's marker; the plugin itself is not needed to run the tests.
    config.addinivalue_line("markers", "timeout(seconds): per-test time limit (pytest-timeout)")


def _named_models(item: pytest.Item) -> list[str]:
    """The model names an item builds: its ``model_name`` parameter, else the literal names in
    its ``create_model("...")`` calls (timm's unparametrized tests name their model inline)."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    if "model_name" in params:
        return [params["model_name"]]
    try:
        source = inspect.getsource(item.function)
    except (OSError, TypeError):
        return []
    return re.findall(r"create_model\(\s*['\"]([\w.]+)['\"]", source)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        names = _named_models(item)
        applicable = bool(names) and all(map(_ours, names)) and item.originalname not in NETWORK_TESTS
        (keep if applicable else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep
