"""Write the intersphinx inventories the docs use offline, in ``docs/_inventories/``.

Intersphinx normally downloads each project's ``objects.inv``; the docs build must
work offline, so this script lists the Python, PyTorch and torchvision names the
docs refer to, each with its page in the real online documentation, and writes
them in Sphinx's inventory format (version 2). Links in the built pages point to
docs.python.org and docs.pytorch.org as usual.

Only public names are listed. Type hints name a class by its defining module
(``torch.nn.modules.module.Module`` for ``torch.nn.Module``); the docs extension
``docs/_ext/zoo_api.py`` resolves such a path to the listed name of the same object
at build time, so the files do not depend on the installed versions.

When the docs build warns "reference to X does not resolve: add it to
docs/_scripts/make_inventories.py", add X to the table below and run::

    python docs/_scripts/make_inventories.py
"""

from __future__ import annotations

import argparse
import builtins
import importlib
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["INVENTORIES", "Entry", "Inventory", "build_entries", "main", "render", "resolve_object"]

OUT_DIR = Path(__file__).resolve().parent.parent / "_inventories"


@dataclass(frozen=True)
class Entry:
    """One inventory line: ``name domain:role priority uri dispname``."""

    name: str
    role: str
    uri: str
    dispname: str = "-"  # "-": the same as name


@dataclass(frozen=True)
class Inventory:
    """The names of one documentation site.

    Attributes:
        project: project name written in the header.
        version: version written in the header; fixed ("stable"), so the file does
            not change with the installed version.
        names: ``(name, role, page)``; ``page`` is relative to the site's base URL
            (``conf.py``'s ``intersphinx_mapping``) and gets ``#name`` appended
            unless it has an anchor of its own.
    """

    project: str
    version: str
    names: tuple[tuple[str, str, str], ...]


def _py(module: str, *names: str, role: str = "class") -> list[tuple[str, str, str]]:
    return [(f"{module}.{n}", role, f"library/{module}.html") for n in names]


def _builtins() -> list[tuple[str, str, str]]:
    out = [
        (n, "class", "library/stdtypes.html")
        for n in ("str", "bytes", "dict", "list", "tuple", "set", "frozenset")
    ]
    out += [
        (n, "class", "library/functions.html")
        for n in ("int", "float", "bool", "complex", "object", "type")
    ]
    out += [
        (n, "data", "library/constants.html")
        for n in ("None", "Ellipsis", "True", "False", "NotImplemented")
    ]
    out += [
        (n, "exception", "library/exceptions.html")
        for n in (
            "BaseException",
            "Exception",
            "ValueError",
            "TypeError",
            "RuntimeError",
            "KeyError",
            "OSError",
            "FileNotFoundError",
            "FileExistsError",
            "ImportError",
            "NotImplementedError",
            "SystemExit",
            "KeyboardInterrupt",
            "ConnectionError",
            "TimeoutError",
            "PermissionError",
            "IsADirectoryError",
            "NotADirectoryError",
            "AttributeError",
            "LookupError",
        )
    ]
    return out


def _torch(*names: str, role: str = "class") -> list[tuple[str, str, str]]:
    # PyTorch documents most public names on a page of their own under generated/.
    return [(n, role, f"generated/{n}.html") for n in names]


def _torch_methods(cls: str, *methods: str) -> list[tuple[str, str, str]]:
    return [(f"{cls}.{m}", "method", f"generated/{cls}.html") for m in methods]


def _vision_models(*archs: str) -> list[tuple[str, str, str]]:
    out = []
    for arch in archs:
        page = f"models/generated/torchvision.models.{arch}.html"
        out.append((f"torchvision.models.{arch}", "function", page))
    return out


_RESNET_ARCHS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
)
_WEIGHT_ENUMS = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights",
    "resnet152": "ResNet152_Weights",
    "wide_resnet50_2": "Wide_ResNet50_2_Weights",
    "wide_resnet101_2": "Wide_ResNet101_2_Weights",
    "resnext50_32x4d": "ResNeXt50_32X4D_Weights",
    "resnext101_32x8d": "ResNeXt101_32X8D_Weights",
    "resnext101_64x4d": "ResNeXt101_64X4D_Weights",
}

#: Every name the docs may link to, per site.
INVENTORIES: dict[str, Inventory] = {
    "python": Inventory(
        "Python",
        "3",
        tuple(
            _builtins()
            + _py(
                "collections.abc",
                "Callable",
                "Mapping",
                "MutableMapping",
                "Sequence",
                "Collection",
                "Iterable",
                "Iterator",
            )
            + _py("collections", "OrderedDict")
            + _py("typing", "Any", "Literal", "Optional", "Union", role="data")
            + _py("typing", "TypeVar", "IO")
            + _py("os", "PathLike")
            + _py("pathlib", "Path", "PurePath")
            + _py("argparse", "ArgumentParser", "Namespace")
            + _py("logging", "Logger")
            + _py("functools", "partial")
            + _py("dataclasses", "dataclass", role="function")
            + _py("fnmatch", "fnmatch", "fnmatchcase", role="function")
            + _py("os", "replace", role="function")
            + [("fnmatch", "module", "library/fnmatch.html#module-fnmatch")]
            + _py("tarfile", "TarFile", "TarError")
        ),
    ),
    "torch": Inventory(
        "PyTorch",
        "stable",
        tuple(
            _torch(
                "torch.nn.Module",
                "torch.nn.Sequential",
                "torch.nn.Conv2d",
                "torch.nn.Linear",
                "torch.nn.BatchNorm2d",
                "torch.nn.SyncBatchNorm",
                "torch.nn.GroupNorm",
                "torch.nn.LayerNorm",
                "torch.nn.ReLU",
                "torch.nn.SiLU",
                "torch.nn.GELU",
                "torch.nn.LeakyReLU",
                "torch.nn.Identity",
                "torch.nn.MaxPool2d",
                "torch.nn.AvgPool2d",
                "torch.nn.AdaptiveAvgPool2d",
                "torch.nn.Dropout",
                "torch.nn.CrossEntropyLoss",
                "torch.nn.parallel.DistributedDataParallel",
                "torch.optim.SGD",
                "torch.Generator",
                "torch.no_grad",
            )
            + _torch(
                "torch.load", "torch.save", "torch.compile", "torch.manual_seed", role="function"
            )
            + _torch_methods(
                "torch.nn.Module", "state_dict", "load_state_dict", "eval", "train", "to", "forward"
            )
            + [
                ("torch.Tensor", "class", "tensors.html"),
                ("torch.dtype", "class", "tensor_attributes.html"),
                ("torch.device", "class", "tensor_attributes.html"),
                ("torch.autocast", "class", "amp.html"),
                ("torch.autograd.graph.Node", "class", "autograd.html"),
                ("torch.utils.data.Dataset", "class", "data.html"),
                ("torch.utils.data.DataLoader", "class", "data.html"),
                ("torch.utils.data.distributed.DistributedSampler", "class", "data.html"),
                ("torch.utils.checkpoint.checkpoint", "function", "checkpoint.html"),
                ("torch.hub.get_dir", "function", "hub.html"),
                ("torch.hub.load_state_dict_from_url", "function", "hub.html"),
                ("torch.optim.Optimizer", "class", "optim.html"),
            ]
        ),
    ),
    "torchvision": Inventory(
        "torchvision",
        "stable",
        tuple(
            [
                (
                    "torchvision.ops.FrozenBatchNorm2d",
                    "class",
                    "generated/torchvision.ops.FrozenBatchNorm2d.html",
                ),
                (
                    "torchvision.ops.StochasticDepth",
                    "class",
                    "generated/torchvision.ops.StochasticDepth.html",
                ),
                (
                    "torchvision.ops.stochastic_depth",
                    "function",
                    "generated/torchvision.ops.stochastic_depth.html",
                ),
                (
                    "torchvision.transforms.v2.Compose",
                    "class",
                    "generated/torchvision.transforms.v2.Compose.html",
                ),
                (
                    "torchvision.transforms.v2.Transform",
                    "class",
                    "generated/torchvision.transforms.v2.Transform.html",
                ),
            ]
            + [
                (f"torchvision.datasets.{name}", "class", f"generated/torchvision.datasets.{name}.html")
                for name in ("ImageFolder", "FGVCAircraft", "StanfordCars", "Flowers102", "OxfordIIITPet")
            ]
            + _vision_models(*_RESNET_ARCHS)
            + [
                (
                    f"torchvision.models.{enum}",
                    "class",
                    f"models/generated/torchvision.models.{arch}.html",
                )
                for arch, enum in _WEIGHT_ENUMS.items()
            ]
        ),
    ),
}


def resolve_object(name: str) -> Any:
    """Import the module or object a dotted name refers to (bare names may be builtins).

    Raises:
        LookupError: nothing of that name is installed.
    """
    if hasattr(builtins, name):
        return getattr(builtins, name)
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise LookupError(f"{name!r} is not importable from the installed packages")


def build_entries(inventory: Inventory) -> list[Entry]:
    """The inventory lines, sorted by name.

    Raises:
        LookupError: a listed name is not importable (renamed or removed upstream).
    """
    entries = []
    for name, role, page in inventory.names:
        resolve_object(name)  # a name that no longer exists must not become a dead link
        uri = page if "#" in page else f"{page}#$"  # "$": Sphinx's shorthand for the name
        entries.append(Entry(name, role, uri))
    return sorted(entries, key=lambda e: (e.name, e.role))


def render(inventory: Inventory, entries: Iterable[Entry]) -> bytes:
    """The inventory file's bytes (Sphinx inventory version 2: a header, then zlib lines)."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {inventory.project}\n"
        f"# Version: {inventory.version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    ).encode()
    body = "".join(f"{e.name} py:{e.role} 1 {e.uri} {e.dispname}\n" for e in entries).encode()
    return header + zlib.compress(body, 9)


def main(argv: list[str] | None = None) -> int:
    """Write ``<out>/<site>.inv`` for every site in :data:`INVENTORIES`; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=OUT_DIR, help=f"output folder (default: {OUT_DIR})"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for site, inventory in INVENTORIES.items():
        entries = build_entries(inventory)
        path = args.out / f"{site}.inv"
        path.write_bytes(render(inventory, entries))
        print(f"{path}: {len(entries)} names")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
