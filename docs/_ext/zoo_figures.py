"""Sphinx extension: the anatomy figures, drawn with matplotlib from real models at build time.

Writes ``docs/_generated/network.svg`` (ResNet-50 from input to logits, with each
stage's block count and output shape) and ``docs/_generated/blocks.svg`` (a
BasicBlock with the identity shortcut and a Bottleneck with the projection
shortcut). Every label comes from the modules themselves (names, kernel sizes,
strides, channels, shapes), so the pictures cannot drift from the code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["draw_blocks", "draw_network", "setup"]

_COLORS = {
    "conv": "#d6e6f5",
    "norm": "#fbe3bf",
    "act": "#dcefd0",
    "other": "#eeeeee",
    "stage": "#e8e0f3",
}
_EDGE = "#444444"
_FONT = 8.5


def _kind(module: Any) -> str:
    import torch.nn as nn

    if isinstance(module, nn.Conv2d):
        return "conv"
    if "norm" in type(module).__name__.lower():
        return "norm"
    if isinstance(module, (nn.ReLU, nn.SiLU, nn.GELU, nn.LeakyReLU)):
        return "act"
    return "other"


def _describe(name: str, module: Any) -> str:
    kind = _kind(module)
    if kind == "conv":
        k, s = module.kernel_size[0], module.stride[0]
        text = f"{name}: {k}×{k} conv, {module.out_channels}"
        return text + (f", stride {s}" if s > 1 else "")
    if kind == "other" and type(module).__name__ == "Identity":
        return f"{name}: identity"
    return f"{name}: {type(module).__name__}"


def _box(ax: Any, x: float, y: float, w: float, h: float, text: str, color: str, **kw: Any) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor=color,
            edgecolor=_EDGE,
            linewidth=0.8,
        )
    )
    ax.text(
        x, y, text, ha="center", va="center", fontsize=kw.get("fontsize", _FONT), linespacing=1.3
    )


def _arrow(
    ax: Any,
    start: tuple[float, float],
    end: tuple[float, float],
    *,
    dashed: bool = False,
    **kw: Any,
) -> None:
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        arrowprops={
            "arrowstyle": "-|>",
            "color": _EDGE,
            "linewidth": 1.0,
            "shrinkA": 0,
            "shrinkB": 0,
            "linestyle": (0, (3, 2)) if dashed else "-",
            **kw,
        },
    )


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(
        path,
        format=path.suffix[1:],
        bbox_inches="tight",
        metadata={"Date": None} if path.suffix == ".svg" else None,
    )
    plt.close(fig)


def draw_network(path: Path, *, arch: str = "resnet50", size: int = 224) -> None:
    """Draw the stem, the stages and the head of ``arch`` for a ``size`` x ``size`` input."""
    import matplotlib.pyplot as plt
    import torch

    import resnetzoo

    model = resnetzoo.create_model(arch).eval()
    # The stem box shows what leaves the stem (after its max-pool), not its feature level.
    names = model.stem_names
    stem_out: list[tuple[int, ...]] = []
    hook = model.get_submodule(names[-1]).register_forward_hook(
        lambda module, args, out: stem_out.append(tuple(out.shape[1:]))
    )
    with torch.no_grad():
        levels = model.forward_intermediates(torch.zeros(1, 3, size, size), intermediates_only=True)
    hook.remove()
    shapes = [stem_out[0], *(tuple(f.shape[1:]) for f in levels[1:])]
    stem = "\n".join(" · ".join(names[i : i + 2]) for i in range(0, len(names), 2))
    block = type(model.layer1[0]).__name__
    boxes = [
        ("input", f"3×{size}×{size}", _COLORS["other"]),
        ("stem", f"{stem}\n" + "×".join(map(str, shapes[0])), _COLORS["conv"]),
    ]
    for i, name in enumerate(model.stage_names, start=1):
        stage = getattr(model, name)
        boxes.append(
            (name, f"{len(stage)} × {block}\n" + "×".join(map(str, shapes[i])), _COLORS["stage"])
        )
    boxes.append(
        ("global_pool · fc", f"{model.num_features} → {model.num_classes}", _COLORS["act"])
    )

    fig, ax = plt.subplots(figsize=(13, 2.0))
    width, gap = 1.62, 0.36
    for i, (title, text, color) in enumerate(boxes):
        x = i * (width + gap)
        _box(ax, x, 0, width, 1.0, f"{title}\n{text}", color)
        if i:
            _arrow(ax, (x - gap - width / 2, 0), (x - width / 2, 0))
    ax.set_xlim(-width / 2 - 0.1, (len(boxes) - 1) * (width + gap) + width / 2 + 0.1)
    ax.set_ylim(-0.7, 0.7)
    ax.set_aspect("equal")
    ax.axis("off")
    _save(fig, path)


def _draw_block(ax: Any, x0: float, block: Any, title: str, notes: dict[str, str]) -> None:
    """One block as a column of boxes with its shortcut on the right."""
    from matplotlib.patches import Circle

    body = [(n, m) for n, m in block.named_children() if n not in ("downsample", "drop_path")]
    last_act = body[-1]
    layers = body[:-1]
    step, w, h = 0.62, 3.1, 0.42
    top = 0.0
    ax.text(x0, top + 0.75, title, ha="center", va="bottom", fontsize=_FONT + 1, fontweight="bold")
    _box(ax, x0, top + 0.3, 1.2, 0.32, "x", _COLORS["other"])
    ys = [top - i * step - 0.35 for i in range(len(layers))]
    previous = top + 0.3 - 0.16
    for (name, module), y in zip(layers, ys, strict=True):
        _arrow(ax, (x0, previous), (x0, y + h / 2))
        _box(ax, x0, y, w, h, _describe(name, module), _COLORS[_kind(module)])
        if name in notes:
            ax.text(
                x0 - w / 2 - 0.12,
                y,
                notes[name],
                ha="right",
                va="center",
                fontsize=_FONT - 0.5,
                style="italic",
                color="#555555",
            )
        previous = y - h / 2
    add_y = ys[-1] - step
    _arrow(ax, (x0, previous), (x0, add_y + 0.16))
    ax.add_patch(Circle((x0, add_y), 0.16, facecolor="white", edgecolor=_EDGE))
    ax.text(x0, add_y, "+", ha="center", va="center", fontsize=_FONT + 3)
    act_y = add_y - step
    _arrow(ax, (x0, add_y - 0.16), (x0, act_y + h / 2))
    _box(ax, x0, act_y, w, h, _describe(*last_act), _COLORS["act"])

    # The shortcut: from the input, down the right side, into the addition.
    downsample = block.downsample
    style = "-" if downsample is None else (0, (3, 2))
    parts = [] if downsample is None else list(downsample.named_children())
    side = x0 + w / 2 + (0.6 if downsample is None else 1.75)
    ax.plot([x0 + 0.6, side], [top + 0.3, top + 0.3], color=_EDGE, linewidth=1.0, linestyle=style)
    if downsample is None:
        ax.plot([side, side], [top + 0.3, add_y], color=_EDGE, linewidth=1.0)
        ax.text(
            side + 0.1,
            (top + add_y) / 2,
            "identity\nshortcut\n(solid)",
            ha="left",
            va="center",
            fontsize=_FONT - 0.5,
        )
    else:
        mid = (top + add_y) / 2
        ys_sc = [mid + (len(parts) - 1) * 0.35 - i * 0.7 for i in range(len(parts))]
        ax.plot(
            [side, side], [top + 0.3, ys_sc[0] + h / 2], color=_EDGE, linewidth=1.0, linestyle=style
        )
        for i, ((name, module), y) in enumerate(zip(parts, ys_sc, strict=True)):
            _box(
                ax,
                side,
                y,
                3.2,
                h,
                _describe(f"downsample.{name}", module),
                _COLORS[_kind(module)],
                fontsize=_FONT - 0.5,
            )
            if i:
                _arrow(ax, (side, ys_sc[i - 1] - h / 2), (side, y + h / 2), dashed=True)
        ax.text(
            side + 0.12,
            ys_sc[-1] - h / 2 - 0.15,
            "projection shortcut\n(dotted)",
            ha="left",
            va="top",
            fontsize=_FONT - 0.5,
        )
        ax.plot(
            [side, side], [ys_sc[-1] - h / 2, add_y], color=_EDGE, linewidth=1.0, linestyle=style
        )
    _arrow(ax, (side, add_y), (x0 + 0.16, add_y), dashed=downsample is not None)


def draw_blocks(path: Path) -> None:
    """Draw a BasicBlock with an identity shortcut and a Bottleneck with a projection shortcut."""
    import matplotlib.pyplot as plt

    import resnetzoo

    basic = resnetzoo.resnet18().layer1[0]
    bottleneck = resnetzoo.resnet50().layer2[0]
    fig, ax = plt.subplots(figsize=(12, 6.2))
    _draw_block(ax, 0.0, basic, "BasicBlock (resnet18 layer1.0)", {})
    _draw_block(
        ax,
        7.6,
        bottleneck,
        "Bottleneck (resnet50 layer2.0)",
        {
            "conv1": "v1 (stride_in_1x1=True):\nstride 2 here instead",
            "conv2": "v1.5 (default):\nstride 2 here",
        },
    )
    ax.set_xlim(-1.8, 12.6)
    ax.set_ylim(-6.2, 1.3)
    ax.set_aspect("equal")
    ax.axis("off")
    _save(fig, path)


def _draw_all(app: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = (
        "resnetzoo"  # stable ids: the same picture gives the same file
    )
    out = Path(app.srcdir) / "_generated"
    draw_network(out / "network.svg")
    draw_blocks(out / "blocks.svg")


def setup(app: Any) -> dict[str, Any]:
    """Draw the figures when the build starts."""
    app.connect("builder-inited", _draw_all)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def _preview(paths: Sequence[str]) -> None:
    """Write PNG previews (``python docs/_ext/zoo_figures.py out.png blocks.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    draw_network(Path(paths[0]))
    draw_blocks(Path(paths[1]))


if __name__ == "__main__":
    import sys

    _preview(sys.argv[1:3])
