"""Sphinx extension: the API reference, generated from each module's ``__all__``.

``.. resnetzoo-api:: resnetzoo.blocks`` (in an ``.rst`` page) documents the
module's docstring and every public name whose home is that module, each under
the shortest import path a user can type (``resnetzoo.BasicBlock``, not
``resnetzoo.blocks.BasicBlock``). A name's *home* is the module that defines it;
every public object is documented exactly once, on its home module's page.

Two checks keep the reference whole under ``-W``:

* a public name (in any module's ``__all__``) that no page documents is a warning;
* a Python cross-reference that does not resolve is a warning when it points into
  resnetzoo, PyTorch, torchvision or the standard library (``conf.py`` sets
  ``nitpicky = True``; other unresolved names stay plain text). A reference to another
  import path of a documented object (``resnetzoo.remap.load.load_weights`` for
  ``resnetzoo.remap.load_weights``) is resolved to where the object is documented.
"""

from __future__ import annotations

import builtins
import functools
import importlib
import inspect
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.ext.intersphinx import InventoryAdapter
from sphinx.ext.intersphinx import missing_reference as intersphinx_missing_reference
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from zoo_snippets import package_modules

__all__ = ["PublicName", "members_of", "public_modules", "public_names", "setup"]

PACKAGE = "resnetzoo"
logger = logging.getLogger(__name__)

_MISSING = object()
# Roots whose unresolved references are errors; anything else (prose in a type slot,
# a third-party type) renders as plain text.
_INVENTORY_ROOTS = frozenset({"torch", "torchvision"})
_ATOMS = (type(None), bool, int, float, complex, str, bytes)
_LONG_VALUE = 60


# ------------------------------------------------------------------ public names
@dataclass(frozen=True)
class PublicName:
    """One public object and where the docs put it.

    Attributes:
        home: the module whose page documents it (the module that defines it).
        name: its attribute name.
        path: the dotted path the docs show; for data the home module's path,
            since autodoc reads a constant's ``#:`` comment from that module's source.
        obj: the object itself.
    """

    home: str
    name: str
    path: str
    obj: Any


def _is_data(obj: Any) -> bool:
    return not (inspect.isclass(obj) or inspect.isroutine(obj) or isinstance(obj, property))


@functools.cache
def public_modules() -> tuple[str, ...]:
    """Every importable module of the package, without private and ``__main__`` modules."""
    return tuple(package_modules(PACKAGE))


@functools.cache
def public_names() -> tuple[PublicName, ...]:
    """Every object named in some module's ``__all__``, once, with its home and shown path.

    Raises:
        AttributeError: a module lists in ``__all__`` a name it does not have.
    """
    exporters: dict[tuple[int, str], list[str]] = {}
    objects: dict[tuple[int, str], Any] = {}
    for modname in public_modules():
        module = importlib.import_module(modname)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                continue
            key = (id(obj), name)
            exporters.setdefault(key, []).append(modname)
            objects[key] = obj
    out = []
    for key, modules in exporters.items():
        obj, name = objects[key], key[1]
        defined_in = getattr(obj, "__module__", None)
        # The defining module when it exports the name, else the deepest exporter.
        home = (
            defined_in if defined_in in modules else max(modules, key=lambda m: (m.count("."), m))
        )
        shortest = min(modules, key=lambda m: (m.count("."), m))
        out.append(PublicName(home, name, f"{home if _is_data(obj) else shortest}.{name}", obj))
    return tuple(out)


def members_of(modname: str) -> list[PublicName]:
    """The public names whose home is ``modname``, in source order."""
    items = [item for item in public_names() if item.home == modname]
    try:
        order = ModuleAnalyzer.for_module(modname).tagorder
    except Exception:  # no source (a compiled module): keep __all__ order
        order = {}
    return sorted(items, key=lambda item: order.get(item.name, len(order)))


def _directive_lines(item: PublicName) -> list[str]:
    obj = item.obj
    if inspect.isclass(obj):
        kind = "autoexception" if issubclass(obj, BaseException) else "autoclass"
        lines = [f".. {kind}:: {item.path}", "   :members:"]
        if obj.__bases__ != (object,):
            lines.append("   :show-inheritance:")
        return lines
    if inspect.isroutine(obj):
        return [f".. autofunction:: {item.path}"]
    lines = [f".. autodata:: {item.path}"]
    if len(repr(obj)) > _LONG_VALUE:
        lines.append("   :no-value:")
    return lines


def _summary_lines(modname: str) -> list[str]:
    """A table of the names a package exports (its ``__all__``), each linked, with its first line."""
    module = importlib.import_module(modname)
    names = [n for n in getattr(module, "__all__", ()) if not inspect.ismodule(getattr(module, n))]
    if not names:
        return []
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 35 65",
        "",
        "   * - Name",
        "     - Summary",
    ]
    for name in names:
        doc = inspect.getdoc(getattr(module, name)) if not _is_data(getattr(module, name)) else None
        first = (doc or "").strip().split("\n\n", 1)[0].replace("\n", " ")
        lines += [f"   * - :py:obj:`~{modname}.{name}`", f"     - {first}"]
    return [*lines, ""]


class ApiDirective(SphinxDirective):
    """``.. resnetzoo-api:: MODULE``: the module's docstring and its public names.

    The ``:summary:`` flag adds a table of every name the module exports (for packages
    that re-export their submodules' names).
    """

    required_arguments = 1
    has_content = False
    option_spec = {"summary": directives.flag}

    def run(self) -> list[nodes.Node]:
        modname = self.arguments[0]
        if modname not in public_modules():
            logger.warning(
                "resnetzoo-api: %r is not a public module of %s (known: %s)",
                modname,
                PACKAGE,
                ", ".join(public_modules()),
                location=self.get_location(),
            )
            return []
        lines = [f".. automodule:: {modname}", "   :no-members:", ""]
        if "summary" in self.options:
            lines += _summary_lines(modname)
        for item in members_of(modname):
            lines += [*_directive_lines(item), ""]
        return self.parse_text_to_nodes("\n".join(lines))


# --------------------------------------------------------------- cross-references
def _import(path: str, *, external: bool = False) -> Any:
    """The object at a dotted path, or ``_MISSING``.

    Package paths may import package modules; other paths (``external=True``) are
    looked up only in modules already imported, so a stray reference never runs a
    module's import-time code.
    """
    parts = path.split(".")
    if not all(p.isidentifier() for p in parts):
        return _MISSING
    if not external and parts[0] != PACKAGE:
        return _MISSING
    if len(parts) == 1:
        return getattr(builtins, path, _MISSING) if external else _MISSING
    for split in range(len(parts), 0, -1):
        modname = ".".join(parts[:split])
        if external:
            obj: Any = sys.modules.get(modname, _MISSING)
            if obj is _MISSING:
                continue
        else:
            try:
                obj = importlib.import_module(modname)
            except ImportError:
                continue
        for attr in parts[split:]:
            obj = getattr(obj, attr, _MISSING)
            if obj is _MISSING:
                return _MISSING
        return obj
    return _MISSING


def _identity(obj: Any, name: str) -> tuple[int, str] | int | None:
    """What makes two paths the same documented object; None for values too common to tell."""
    if inspect.isclass(obj) or inspect.isroutine(obj) or isinstance(obj, property):
        return id(obj)
    if obj is _MISSING or inspect.ismodule(obj) or isinstance(obj, _ATOMS):
        return None
    return (id(obj), name)


def _defined_here(obj: Any) -> bool:
    """Whether a class or function comes from the package (not a typing or torch import)."""
    module = getattr(obj, "__module__", None) or ""
    return (inspect.isclass(obj) or inspect.isroutine(obj)) and module.split(".")[0] == PACKAGE


def _documented(env: BuildEnvironment) -> dict[Any, str]:
    """Identity of each documented package object → its documented full name."""
    objects = env.get_domain("py").objects
    cache = getattr(env, "_zoo_documented", None)
    if cache is None or cache[0] != len(objects):
        table: dict[Any, str] = {}
        for fullname in sorted(objects, key=len):  # shortest path wins
            entry = objects[fullname]
            if entry.objtype == "module" or entry.aliased:
                continue
            key = _identity(_import(fullname), fullname.rsplit(".", 1)[-1])
            if key is not None:
                table.setdefault(key, fullname)
        cache = (len(objects), table)
        env._zoo_documented = cache  # type: ignore[attr-defined]
    return cache[1]


def _inventory_names(env: BuildEnvironment) -> dict[Any, str]:
    """Identity of each class and function in the intersphinx inventories → its listed name."""
    cache = getattr(env, "_zoo_inventory_names", None)
    if cache is None:
        cache = {}
        for objtype, items in InventoryAdapter(env).main_inventory.items():
            if objtype.startswith("py:"):
                for name in sorted(items, key=len):
                    key = _identity(_import(name, external=True), name.rsplit(".", 1)[-1])
                    if isinstance(key, int):
                        cache.setdefault(key, name)
        env._zoo_inventory_names = cache  # type: ignore[attr-defined]
    return cache


def _candidates(target: str, module: str | None, cls: str | None) -> Iterator[str]:
    yield target
    if module:
        if cls:
            yield f"{module}.{cls}.{target}"
        yield f"{module}.{target}"
    yield f"{PACKAGE}.{target}"


def _resolve_package(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.Element
) -> tuple[nodes.Element | None, str | None]:
    """Resolve to the documented object of the same identity; also return an undocumented match."""
    documented = _documented(env)
    undocumented = None
    for candidate in _candidates(node["reftarget"], node.get("py:module"), node.get("py:class")):
        obj = _import(candidate)
        key = _identity(obj, candidate.rsplit(".", 1)[-1])
        if key is None:
            continue
        fullname = documented.get(key)
        if fullname is not None:
            py = env.get_domain("py")
            return py.resolve_xref(
                env, node["refdoc"], app.builder, "obj", fullname, node, contnode
            ), None
        if _defined_here(obj):
            undocumented = undocumented or candidate
    return None, undocumented


def _resolve_external(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.Element
) -> nodes.Element | None:
    """Resolve ``torch.nn.modules.module.Module`` to the inventory's ``torch.nn.Module``."""
    target = node["reftarget"]
    name = _inventory_names(env).get(
        _identity(_import(target, external=True), target.rsplit(".", 1)[-1])
    )
    if name is None or name == target:
        return None
    alias = node.deepcopy()
    alias["reftarget"] = name
    return intersphinx_missing_reference(app, env, alias, contnode)


def _on_missing_reference(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.Element
) -> nodes.Element | None:
    # Sphinx calls every listener and keeps the first result, so this also runs for
    # references intersphinx has resolved; it only adds what intersphinx cannot.
    if node.get("refdomain") != "py":
        return None
    resolved, _ = _resolve_package(app, env, node, contnode)
    return resolved or _resolve_external(app, env, node, contnode)


def _on_warn_missing_reference(app: Sphinx, domain: Any, node: pending_xref) -> bool | None:
    """Decide what an unresolved reference means; ``True`` silences Sphinx's own warning.

    (Emitted only for references nothing resolved; ``nitpicky = True`` makes Sphinx
    emit it for every one.)
    """
    if node.get("refdomain") != "py":
        return None  # a broken :doc: or :ref: keeps Sphinx's own warning
    target = node["reftarget"]
    root = target.split(".", 1)[0]
    _, undocumented = _resolve_package(app, app.env, node, nodes.literal())
    if undocumented is not None:
        logger.warning(
            "reference to %s: it exists but is not documented (add it to its module's __all__, "
            "or refer to a public name)",
            undocumented,
            location=node,
        )
    elif root == PACKAGE:
        logger.warning(
            "reference to %s does not resolve: no such public name", target, location=node
        )
    elif root in _INVENTORY_ROOTS or root in sys.stdlib_module_names or hasattr(builtins, target):
        logger.warning(
            "reference to %s does not resolve: add it to docs/_scripts/make_inventories.py "
            "and run that script",
            target,
            location=node,
        )
    # Anything else (a third-party type, words in a type slot) stays plain text.
    return True


# ------------------------------------------------------------------ checks
def _on_check_consistency(app: Sphinx, env: BuildEnvironment) -> None:
    objects = env.get_domain("py").objects
    for item in public_names():
        if item.path not in objects:
            logger.warning(
                "public name %s (in %s.__all__) is not documented: add '.. resnetzoo-api:: %s' "
                "to a page under docs/api/",
                item.path,
                item.home,
                item.home,
            )


def _on_process_docstring(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    # A constant without a #: comment would show its type's docstring ("Built-in
    # immutable sequence."): say nothing rather than that.
    if what in ("data", "attribute") and lines:
        inherited = inspect.cleandoc(type(obj).__doc__ or "")
        if "\n".join(lines).strip() == inherited.strip():
            lines.clear()


_TYPE_LIKE = re.compile(r"[A-Za-z_][\w.]*(\[.*\])?(\s*\|\s*[A-Za-z_][\w.]*(\[.*\])?)*")


def _on_process_docstring_late(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    # napoleon reads "words: more words" on the first line of a constant's or a
    # property's docstring as "type: description", so "One line: how many ..." would
    # show the type "One line". The code has type hints; put such prose back.
    if what not in ("data", "attribute", "property"):
        return
    for i, line in enumerate(lines):
        if line.startswith(":type: ") and not _TYPE_LIKE.fullmatch(line[len(":type: ") :].strip()):
            prose = line[len(":type: ") :].strip()
            del lines[i]
            if i and not lines[i - 1].strip():
                del lines[i - 1]
            first = next((j for j, text in enumerate(lines) if text.strip()), None)
            if first is None:
                lines.append(prose)
            else:
                indent = lines[first][: len(lines[first]) - len(lines[first].lstrip())]
                lines[first] = f"{indent}{prose}: {lines[first].lstrip()}"
            return


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directive and the reference and coverage checks."""
    app.add_directive("resnetzoo-api", ApiDirective)
    # After intersphinx (priority 500), so torch names come from the inventories first.
    app.connect("missing-reference", _on_missing_reference, priority=900)
    app.connect("warn-missing-reference", _on_warn_missing_reference)
    app.connect("env-check-consistency", _on_check_consistency)
    app.connect(
        "autodoc-process-docstring", _on_process_docstring_late, priority=600
    )  # after napoleon
    app.connect("autodoc-process-docstring", _on_process_docstring)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
