"""Who feeds whom in a network: one sample forward pass, read back from the autograd graph.

Folding a norm into a convolution, or fusing an activation into one, is only right
when the norm's input is the convolution's output and nothing else reads that output.
:func:`trace_modules` finds this for any network made of modules, custom blocks
included, by running it once and recording the autograd node of every module's
input and output, and how many times each node is used.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

__all__ = ["CONVS", "Trace", "replace_module", "sample_input", "size_oblivious", "trace_modules"]

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
SAMPLE_SIZE = 64  # pixels; enough for output stride 32 and cheap for any ResNet

Node = torch.autograd.graph.Node


@dataclass
class Trace:
    """Who fed whom in one forward pass, as autograd nodes.

    ``inputs``/``outputs``: per module name, the node of its first input / of its output,
    one per call. ``uses``: per node, how many times the tensor it produced was used
    (the model's outputs count as one use each, so a tensor that is also returned is
    never fused away).
    """

    inputs: dict[str, list[Node | None]] = field(default_factory=dict)
    outputs: dict[str, list[Node | None]] = field(default_factory=dict)
    uses: Counter = field(default_factory=Counter)

    def only(self, table: dict[str, list[Node | None]], name: str) -> Node | None:
        """The node recorded for ``name`` if the module ran exactly once, else None."""
        calls = table.get(name, [])
        return calls[0] if len(calls) == 1 else None

    def producers(self, modules: dict[str, nn.Module]) -> dict[Node, str]:
        """Map the output node of every convolution in ``modules`` that ran exactly once to its name."""
        producer = {}
        for name, module in modules.items():
            node = self.only(self.outputs, name) if isinstance(module, CONVS) else None
            if node is not None:
                producer[node] = name
        return producer

    def calls(self, name: str) -> int:
        """How many times the module ``name`` ran."""
        return len(self.inputs.get(name, []))


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """Yield every tensor in a (nested) tensor / list / tuple / dict output."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _count_uses(roots: list[Node]) -> Counter:
    """Count, for every autograd node reachable from ``roots``, the edges that lead into it."""
    uses: Counter = Counter(roots)
    seen: set[Node] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for parent, _ in node.next_functions:
            if parent is not None:
                uses[parent] += 1
                stack.append(parent)
    return uses


def sample_input(model: nn.Module) -> torch.Tensor:
    """A random ``(1, in_chans, 64, 64)`` input on the model's device and in its dtype (3-d and 1-d alike)."""
    first_conv = next(m for m in model.modules() if isinstance(m, CONVS))
    in_chans = getattr(model, "in_chans", None) or first_conv.in_channels
    ref = first_conv.weight
    spatial = (SAMPLE_SIZE,) * (ref.ndim - 2)
    return torch.randn(1, in_chans, *spatial, device=ref.device, dtype=ref.dtype)


def trace_modules(model: nn.Module, example: torch.Tensor) -> Trace:
    """Run ``model`` once on ``example``, recording the autograd node of every module's input and output.

    Raises:
        ValueError: the model could not run on ``example``.
    """
    trace = Trace()

    def record(table: dict[str, list[Node | None]], name: str, tensor: Any) -> None:
        table.setdefault(name, []).append(getattr(tensor, "grad_fn", None))

    handles = []
    for name, module in model.named_modules():
        # Inputs before the module runs: an in-place activation rewrites its input's grad_fn.
        handles.append(module.register_forward_pre_hook(
            lambda m, args, name=name: record(trace.inputs, name, args[0] if args else None)))
        handles.append(module.register_forward_hook(
            lambda m, args, out, name=name: record(trace.outputs, name, out)))
    # The input requires grad so that a graph is built even when every weight is frozen.
    example = example.detach().requires_grad_(True)
    try:
        with torch.enable_grad():
            output = model(example)
    except Exception as err:
        raise ValueError(
            f"could not run {type(model).__name__} on a sample input of shape {tuple(example.shape)} "
            f"to find which module feeds which ({type(err).__name__}: {err}); pass "
            f"example_input= with an input the model accepts"
        ) from err
    finally:
        for handle in handles:
            handle.remove()
    trace.uses = _count_uses([t.grad_fn for t in _tensors(output) if t.grad_fn is not None])
    return trace


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule ``name`` (dotted) is."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


@contextlib.contextmanager
def size_oblivious() -> Iterator[None]:
    """``torch.export`` without specialising sizes that could be 1, as ``torch.onnx``'s exporter traces.

    Otherwise torch specialises every feature map that could be 1 pixel wide, so a
    ResNet's program rejects images under 33 px. The switch is a private torch config
    (``torch.fx.experimental._config.backed_size_oblivious``); without it, a no-op.
    """
    try:
        import torch.fx.experimental._config as config  # private: imported here, where it is used
    except ImportError:
        config = None
    if config is None or not hasattr(config, "backed_size_oblivious"):
        yield
        return
    with config.patch(backed_size_oblivious=True):
        yield
