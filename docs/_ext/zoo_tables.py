"""Sphinx extension: tables generated from the registries, so the pages never disagree with the code.

* ``{weights-table}`` renders one row per :func:`resnetzoo.weights.list_pretrained`
  record (accuracy, parameters, GFLOPs, evaluation size, where the file lives and
  its licence), then names the architectures without weights.
* ``{models-table}`` renders one row per registered architecture: block, blocks per
  stage, stem, shortcut, grouping, parameters (counted on the meta device) and its
  default weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from resnetzoo.architectures import natural_key

__all__ = ["ModelsTable", "WeightsTable", "setup", "table"]

_HEADER = ("Weights", "Top-1 %", "Top-5 %", "Params", "GFLOPs", "Evaluated at", "Source", "License")
_DASH = "—"


def _cell(*children: nodes.Node | str) -> list[nodes.Node]:
    return [nodes.Text(c) if isinstance(c, str) else c for c in children]


def table(
    header: Sequence[str],
    rows: Sequence[Sequence[list[nodes.Node]]],
    *,
    classes: Sequence[str] = (),
) -> nodes.table:
    """A docutils table: ``header`` strings, then rows of cells (each a list of inline nodes)."""
    node = nodes.table(classes=list(classes))
    group = nodes.tgroup(cols=len(header))
    node += group
    group += [nodes.colspec(colwidth=1) for _ in header]
    head, body = nodes.thead(), nodes.tbody()
    group += [head, body]
    for target, cells in ((head, [_cell(h) for h in header]), *((body, r) for r in rows)):
        row = nodes.row()
        for children in cells:
            row += nodes.entry("", nodes.paragraph("", "", *children))
        target += row
    return node


def _link(text: str, url: str) -> nodes.reference:
    return nodes.reference(text, text, refuri=url)


def _number(value: float | None, fmt: str) -> str:
    return _DASH if value is None else format(value, fmt)


def _evaluated_at(spec: Any) -> str:
    size = (spec.test_input_size or spec.input_size)[-1]
    if spec.resize_size:
        how = f"resize {spec.resize_size}"
    else:
        crop = spec.test_crop_pct if spec.test_input_size and spec.test_crop_pct else spec.crop_pct
        how = f"crop {crop:.0%}"
    return f"{size} px, {how}, {spec.interpolation}"


def _sources(spec: Any) -> list[nodes.Node]:
    links: list[nodes.Node] = []
    for text, url in (
        ("Hub", f"https://huggingface.co/{spec.hf_hub_id}" if spec.hf_hub_id else None),
        ("URL", spec.url),
        ("recipe", spec.recipe),
    ):
        if url:
            if links:
                links.append(nodes.Text(" · "))
            links.append(_link(text, url))
    return links


def _row(spec: Any, default: bool) -> list[list[nodes.Node]]:
    name = [nodes.literal(spec.name, spec.name)]
    if default:
        name.append(nodes.Text(" (default)"))
    params = _DASH if spec.num_params is None else f"{spec.num_params / 1e6:.1f} M"
    return [
        name,
        _cell(_number(spec.top1, ".2f")),
        _cell(_number(spec.top5, ".2f")),
        _cell(params),
        _cell(_number(spec.gflops, ".2f")),
        _cell(_evaluated_at(spec)),
        _sources(spec),
        _cell(spec.license or _DASH),
    ]


class WeightsTable(SphinxDirective):
    """Every registered weight set, and the architectures that have none."""

    option_spec = {"pattern": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        import resnetzoo
        from resnetzoo.weights import default_tag, list_pretrained

        # Architectures in natural order; each one's default weights first.
        specs = sorted(
            list_pretrained(self.options.get("pattern")),
            key=lambda s: (natural_key(s.arch), s.tag != default_tag(s.arch), s.tag),
        )
        rows = [_row(spec, spec.tag == default_tag(spec.arch)) for spec in specs]
        out: list[nodes.Node] = [table(_HEADER, rows, classes=["zoo-weights-table"])]
        with_weights = {spec.arch for spec in list_pretrained()}
        without = sorted(
            (n for n in resnetzoo.list_models() if n not in with_weights), key=natural_key
        )
        if without and "pattern" not in self.options:
            para = nodes.paragraph(
                "", f"{len(specs)} weight sets. Architectures without pretrained weights: "
            )
            for i, name in enumerate(without):
                para += nodes.literal(name, name)
                para += nodes.Text(", " if i < len(without) - 1 else ".")
            out.append(para)
        return out


_MODEL_HEADER = (
    "Architecture",
    "Block",
    "Blocks per stage",
    "Stem",
    "Shortcut",
    "Groups × width",
    "Params",
    "Default weights",
)


def _model_row(name: str) -> list[list[nodes.Node]]:
    import torch

    import resnetzoo
    from resnetzoo.weights import default_tag, list_pretrained

    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        model = resnetzoo.create_model(name)
    blocks = [len(getattr(model, stage)) for stage in model.stage_names]
    first = model.layer1[0]
    conv2 = first.conv2
    # Channels per group of layer1's 3x3 convolution: 64 for ResNet, 4 for ResNeXt-50 32x4d.
    groups = f"{conv2.groups} × {conv2.out_channels // conv2.groups}"
    stem = "deep (3 × 3×3)" if isinstance(model.conv1, torch.nn.Sequential) else "classic (7×7)"
    downsample = model.layer2[0].downsample
    shortcut = "avg-pool + 1×1" if isinstance(downsample[0], torch.nn.AvgPool2d) else "1×1 conv"
    params = sum(p.numel() for p in model.parameters())
    has_weights = any(spec.arch == name for spec in list_pretrained())
    default = (
        [nodes.literal(f"{name}.{default_tag(name)}", f"{name}.{default_tag(name)}")]
        if has_weights
        else _cell(_DASH)
    )
    return [
        [nodes.literal(name, name)],
        _cell(type(first).__name__),
        _cell(", ".join(map(str, blocks))),
        _cell(stem),
        _cell(shortcut),
        _cell(groups),
        _cell(f"{params / 1e6:.1f} M"),
        default,
    ]


class ModelsTable(SphinxDirective):
    """Every registered architecture and what it is made of."""

    def run(self) -> list[nodes.Node]:
        import resnetzoo

        return [
            table(
                _MODEL_HEADER,
                [_model_row(n) for n in resnetzoo.list_models()],
                classes=["zoo-models-table"],
            )
        ]


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the ``weights-table`` and ``models-table`` directives."""
    app.add_directive("weights-table", WeightsTable)
    app.add_directive("models-table", ModelsTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
