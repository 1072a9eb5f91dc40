"""Fuse what follows a convolution into it: the activation, and ``relu(conv(x) + shortcut)``.

Every CPU ``nn.Conv2d`` becomes a :class:`~resnetzoo.inference.kernels.FusedConv2d`
(for its prepacked weight); the activation module that alone consumes a (folded)
convolution's output runs inside it, found from the sample pass's
:class:`~resnetzoo.inference.graph.Trace`; and ``relu(conv(x) + shortcut)`` at the end of a
residual block becomes one call too, found by tracing each block with ``torch.fx``
(blocks that cannot be traced are left as they are). Each fusion saves a pass over
the activations.
"""

from __future__ import annotations

import operator
from collections import Counter

import torch
import torch.fx
import torch.nn as nn

from resnetzoo.inference.graph import Trace, replace_module
from resnetzoo.inference.kernels import ONEDNN_ACTIVATIONS, FusedConv2d

__all__ = ["fuse_activations"]

# Residual additions as torch.fx records them (``a + b``, ``torch.add(a, b)``, ``a += b``).
_ADDS = (operator.add, operator.iadd, torch.add)


def _fusable_conv(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and conv.weight.device.type == "cpu"
    )


def _fusion_plan(modules: dict[str, nn.Module], trace: Trace, folded: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``(conv_name, act_name)`` for every activation that directly consumes a conv's (folded) output."""
    producer = trace.producers(modules)
    for conv_name, norm_name in folded:  # after folding, the norm's output is the conv's
        producer[trace.only(trace.outputs, norm_name)] = conv_name
    pairs = []
    for name, act in modules.items():
        node = trace.only(trace.inputs, name) if type(act) in ONEDNN_ACTIVATIONS else None
        conv_name = producer.get(node)
        if conv_name is not None and trace.uses[node] == 1 and _fusable_conv(modules[conv_name]):
            pairs.append((conv_name, name))
    return pairs


class _Tracer(torch.fx.Tracer):
    """symbolic_trace's tracer, also keeping already fused convolutions as single calls."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, FusedConv2d) or super().is_leaf_module(m, qualname)


def _conv_before(node: torch.fx.Node, modules: dict[str, nn.Module]) -> torch.fx.Node | None:
    """The fusable convolution ``node`` comes from, through identity modules, each used once."""
    while node.op == "call_module" and len(node.users) == 1:
        module = modules[node.target]
        if _fusable_conv(module) and len(node.args) == 1 and not node.kwargs:
            return node
        if not isinstance(module, nn.Identity):
            return None
        node = node.args[0]
        if not isinstance(node, torch.fx.Node):
            return None
    return None


def _fuse_residual_graph(block: nn.Module, compute_dtype: torch.dtype | None) -> tuple[nn.Module, list[tuple[str, str]]]:
    """Rewrite ``relu(conv(x) + other)`` in ``block``'s forward into one fused call.

    Returns the rewritten block (a ``torch.fx.GraphModule`` with the same submodule
    names) and ``(conv_name, act_name)`` for each rewrite; the block itself when its
    forward cannot be traced or has no such pattern.
    """
    try:
        graph = _Tracer().trace(block)
    except Exception:  # data-dependent control flow, unsupported calls …: leave it as it is
        return block, []
    modules = dict(block.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    fused = []
    for act in list(graph.nodes):
        if act.op != "call_module" or type(modules.get(act.target)) is not nn.ReLU or len(act.args) != 1:
            continue
        add = act.args[0]
        if not (isinstance(add, torch.fx.Node) and add.op == "call_function" and add.target in _ADDS
                and len(add.args) == 2 and not add.kwargs and len(add.users) == 1):
            continue
        for branch, other in (add.args, add.args[::-1]):
            conv = _conv_before(branch, modules) if isinstance(branch, torch.fx.Node) else None
            # A module called twice would carry the fused add into its other call too.
            if conv is not None and calls[conv.target] == 1 and isinstance(other, torch.fx.Node):
                break
        else:
            continue
        with graph.inserting_before(add):
            call = graph.call_module(conv.target, (conv.args[0], other))
        act.replace_all_uses_with(call)
        dead = [act, add]
        node = branch
        while node is not conv:  # the identity chain between the conv and the add
            dead.append(node)
            node = node.args[0]
        for node in [*dead, conv]:
            graph.erase_node(node)
        module = FusedConv2d(modules[conv.target], modules[act.target], compute_dtype=compute_dtype)
        fused.append((conv.target, act.target, module))
    if not fused:
        return block, []
    rewritten = torch.fx.GraphModule(block, graph, class_name=f"Fused{type(block).__name__}")
    for conv_name, _, module in fused:
        rewritten.add_submodule(conv_name, module)
    rewritten.delete_all_unused_submodules()
    return rewritten, [(conv_name, act_name) for conv_name, act_name, _ in fused]


def _fuse_residuals(model: nn.Module, compute_dtype: torch.dtype | None) -> list[tuple[str, str]]:
    """Fuse ``relu(conv(x) + shortcut)`` inside every submodule that owns a conv and a ReLU."""
    pairs = []
    for name, module in list(model.named_modules()):
        children = list(module.children())
        if not name or not any(type(c) is nn.ReLU for c in children) or not any(_fusable_conv(c) for c in children):
            continue
        rewritten, fused = _fuse_residual_graph(module, compute_dtype)
        if fused:
            replace_module(model, name, rewritten)
            pairs += [(f"{name}.{conv}", f"{name}.{act}") for conv, act in fused]
    return pairs


def fuse_activations(
    model: nn.Module, trace: Trace, folded: list[tuple[str, str]], *, compute_dtype: torch.dtype | None = None
) -> list[tuple[str, str]]:
    """Fuse, in place, each activation into the (folded) convolution feeding it, then the residual ReLUs.

    Every other CPU ``nn.Conv2d`` becomes a :class:`FusedConv2d` without an activation,
    for the prepacked weights.

    Args:
        model: the folded model (its modules as when ``trace`` was taken).
        trace: the sample pass of :func:`resnetzoo.inference.fold.fold`.
        folded: the ``(conv_name, norm_name)`` pairs folded.
        compute_dtype: passed to every :class:`FusedConv2d` (None: the weight's dtype).

    Returns:
        ``(conv_name, act_name)`` per fusion.
    """
    modules = dict(model.named_modules())
    pairs = _fusion_plan(modules, trace, folded)
    for conv_name, act_name in pairs:
        replace_module(model, conv_name, FusedConv2d(modules[conv_name], modules[act_name], compute_dtype=compute_dtype))
        replace_module(model, act_name, nn.Identity())
    pairs += _fuse_residuals(model, compute_dtype)
    for name, module in list(model.named_modules()):  # the rest still gain prepacked weights
        if _fusable_conv(module):
            replace_module(model, name, FusedConv2d(module, compute_dtype=compute_dtype))
    return pairs
