"""Make a trained network fast for inference: fold BatchNorm, fuse activations, channels-last, bf16, compile.

:func:`optimize_for_inference` returns a copy of a model that gives the same outputs
(to float rounding in fp32) with less work per image:

- every BatchNorm that directly consumes a convolution's output is folded into that
  convolution (the convolution gains a bias, the norm becomes ``nn.Identity``), which
  removes a full read and write of every activation map;
- on CPU (without ``compile``), every 2-d convolution becomes a :class:`FusedConv2d`:
  oneDNN's fused convolution (``torch.ops.mkldnn._convolution_pointwise``, the op
  Inductor emits for the same patterns) with weights reordered for oneDNN once instead
  of on every call, and with the activation module (ReLU, SiLU, LeakyReLU, GELU) that
  directly consumes its output fused in; ``relu(conv(x) + shortcut)`` at the end of a
  residual block becomes one call too (found by tracing each block with ``torch.fx``;
  blocks that cannot be traced are left as they are). Each fusion removes a pass over
  the activations;
- weights are stored channels-last, the layout oneDNN and cuDNN convolutions prefer;
- weights can be cast to ``bfloat16``/``float16``; inputs are cast on the way in and
  outputs back to the input's dtype on the way out, so the caller never sees the change;
- optionally the forward is compiled with ``torch.compile`` and Inductor *freezing*,
  which treats the (now constant) weights as constants to fold and prepack. Inductor
  then does the fusions itself, so :class:`FusedConv2d` is not used.

Which modules feed which is found by running the model once on a small input and
following the autograd graph, so custom blocks work as long as they call
``nn.Conv*d``, norm and activation *modules*: a norm is folded when its input is the
output of a convolution called exactly once and nothing else uses that output (and
likewise for an activation). Norms that normalise with statistics of the input itself
(GroupNorm, LayerNorm, InstanceNorm, BatchNorm without running statistics) cannot be
folded; they are kept and listed in :attr:`InferenceReport.not_folded`, which is
attached to the returned model as ``model.inference_report`` and logged at INFO on
the ``"resnetzoo"`` logger.
"""

from __future__ import annotations

import copy
import functools
import logging
import operator
import types
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
import torch.nn as nn
from torchvision.ops import FrozenBatchNorm2d

__all__ = ["FusedConv2d", "InferenceReport", "fold_batchnorms", "optimize_for_inference"]

logger = logging.getLogger(__name__)

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
# Norms that apply a fixed per-channel affine map in eval mode (given running statistics).
_FOLDABLE = (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)
# Every norm the report should account for, foldable or not.
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, FrozenBatchNorm2d)
# Activation modules oneDNN can apply inside a convolution: type -> (attr, scalars, algorithm).
_ONEDNN_ACTS: dict[type[nn.Module], Callable[[Any], tuple[str, list[float], str]]] = {
    nn.ReLU: lambda m: ("relu", [], ""),
    nn.SiLU: lambda m: ("swish", [], ""),
    nn.LeakyReLU: lambda m: ("leaky_relu", [m.negative_slope], ""),
    nn.GELU: lambda m: ("gelu", [], m.approximate),
}
# Residual additions as torch.fx records them (``a + b``, ``torch.add(a, b)``, ``a += b``).
_ADDS = (operator.add, operator.iadd, torch.add)
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_SAMPLE_SIZE = 64  # pixels; enough for output stride 32 and cheap for any ResNet

Node = torch.autograd.graph.Node


@dataclass(frozen=True)
class InferenceReport:
    """What :func:`optimize_for_inference` did to a model.

    Attributes:
        folded: ``(conv_name, norm_name)`` for every norm folded into its convolution.
        not_folded: ``(norm_name, reason)`` for every norm kept as it was.
        fused: ``(conv_name, act_name)`` for every activation fused into its convolution.
        dtype: the dtype of the returned model's weights.
        channels_last: whether its weights are stored channels-last.
        compiled: whether its forward is compiled with ``torch.compile``.
    """

    folded: tuple[tuple[str, str], ...]
    not_folded: tuple[tuple[str, str], ...]
    fused: tuple[tuple[str, str], ...] = ()
    dtype: torch.dtype = torch.float32
    channels_last: bool = False
    compiled: bool = False

    def __str__(self) -> str:
        total = len(self.folded) + len(self.not_folded)
        lines = [
            f"folded {len(self.folded)} of {total} norms into convolutions, fused {len(self.fused)} "
            f"activations; dtype={str(self.dtype).removeprefix('torch.')}, "
            f"channels_last={self.channels_last}, compiled={self.compiled}"
        ]
        lines += [f"  not folded: {name}: {reason}" for name, reason in self.not_folded]
        return "\n".join(lines)


class FusedConv2d(nn.Conv2d):
    """A 2-d convolution run by oneDNN with prepacked weights, optionally fused with what follows it.

    Computes ``act(conv(x))``, or ``act(conv(x) + residual)`` when a residual is given,
    in one kernel (``torch.ops.mkldnn._convolution_pointwise``, the op Inductor emits
    for these patterns). The weights are reordered into oneDNN's blocked layout once
    and cached (again only when they change), instead of on every call as
    ``nn.Conv2d`` does. Parameters keep their names (``conv1.weight`` stays
    ``conv1.weight``); the packed copy is not part of the state dict. For inference
    only (no autograd). Off the CPU it falls back to a plain convolution.

    Args:
        conv: the convolution to take the parameters and geometry from.
        act: the activation module (``nn.ReLU``, ``nn.SiLU``, ``nn.LeakyReLU``,
            ``nn.GELU``; only ``nn.ReLU`` with a residual), or None for none.

    Shape:
        ``forward(x, residual=None)``: as ``conv``; ``residual`` has the output's shape.
    """

    def __init__(self, conv: nn.Conv2d, act: nn.Module | None = None) -> None:
        with torch.device("meta"):  # the parameters are conv's: allocate nothing
            super().__init__(
                conv.in_channels,
                conv.out_channels,
                conv.kernel_size,
                stride=conv.stride,
                padding=conv.padding,
                dilation=conv.dilation,
                groups=conv.groups,
                bias=conv.bias is not None,
            )
        self.weight, self.bias = conv.weight, conv.bias
        self.act = act if act is not None else nn.Identity()
        self.attr, self.scalars, self.algorithm = _ONEDNN_ACTS[type(act)](act) if act is not None else ("none", [], "")
        self._packed: tuple[tuple[int, torch.dtype, int], torch.Tensor] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The packed weight is a cache (and an opaque oneDNN tensor): never copied or pickled.
        return {**self.__dict__, "_packed": None}

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        key = (weight.data_ptr(), weight.dtype, weight._version)
        if self._packed is None or self._packed[0] != key:
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                weight, self.padding, self.stride, self.dilation, self.groups, list(x.shape)
            )
            self._packed = (key, packed)
        return self._packed[1]

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if x.device.type != "cpu":
            y = self._conv_forward(x, self.weight, self.bias)
            return self.act(y if residual is None else y.add_(residual))
        weight = self._packed_weight(x)
        geometry = (self.padding, self.stride, self.dilation, self.groups)
        if residual is None:
            return torch.ops.mkldnn._convolution_pointwise(
                x, weight, self.bias, *geometry, self.attr, self.scalars, self.algorithm
            )
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, residual, weight, self.bias, *geometry, "add", 1.0, self.attr, self.scalars, self.algorithm
        )


# ----------------------------------------------------------------------------- tracing
@dataclass
class _Trace:
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


def _sample_input(model: nn.Module) -> torch.Tensor:
    first_conv = next(m for m in model.modules() if isinstance(m, _CONVS))
    in_chans = getattr(model, "in_chans", None) or first_conv.in_channels
    ref = first_conv.weight
    spatial = (_SAMPLE_SIZE,) * (ref.ndim - 2)
    return torch.randn(1, in_chans, *spatial, device=ref.device, dtype=ref.dtype)


def _trace(model: nn.Module, example: torch.Tensor) -> _Trace:
    """Run ``model`` once, recording the autograd node of each conv/norm/activation's input and output."""
    trace = _Trace()

    def record(table: dict[str, list[Node | None]], name: str, tensor: Any) -> None:
        table.setdefault(name, []).append(getattr(tensor, "grad_fn", None))

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (*_CONVS, *_NORMS, *_ONEDNN_ACTS)):
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
            f"to find its conv -> norm pairs ({type(err).__name__}: {err}); pass "
            f"example_input= with an input the model accepts"
        ) from err
    finally:
        for handle in handles:
            handle.remove()
    trace.uses = _count_uses([t.grad_fn for t in _tensors(output) if t.grad_fn is not None])
    return trace


# ----------------------------------------------------------------------------- planning
def _why_not_foldable(norm: nn.Module) -> str | None:
    if not isinstance(norm, _FOLDABLE):
        return f"{type(norm).__name__} normalises with statistics of each input, which no weight can hold"
    if getattr(norm, "running_mean", None) is None or getattr(norm, "running_var", None) is None:
        return f"{type(norm).__name__} has no running statistics (track_running_stats=False)"
    return None


def _producers(modules: dict[str, nn.Module], trace: _Trace) -> dict[Node, str]:
    """Map the output node of every convolution that ran exactly once to its name."""
    producer = {}
    for name, module in modules.items():
        node = trace.only(trace.outputs, name) if isinstance(module, _CONVS) else None
        if node is not None:
            producer[node] = name
    return producer


def _fold_plan(
    modules: dict[str, nn.Module], trace: _Trace
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Which convolution each norm can be folded into.

    Returns:
        ``(pairs, kept)``: ``(conv_name, norm_name)`` pairs to fold, and
        ``(norm_name, reason)`` for every other norm.
    """
    producer = _producers(modules, trace)
    pairs: list[tuple[str, str]] = []
    kept: list[tuple[str, str]] = []
    for name, norm in modules.items():
        if not isinstance(norm, _NORMS):
            continue
        node = trace.only(trace.inputs, name)
        conv_name = producer.get(node)
        reason = _why_not_foldable(norm)
        if reason is None and node is None:
            reason = f"called {len(trace.inputs.get(name, []))} times in the forward pass (folding needs exactly one)"
        elif reason is None and conv_name is None:
            reason = "its input is not the output of a convolution called once"
        elif reason is None and trace.uses[node] != 1:
            reason = f"the output of {conv_name} is also used elsewhere"
        elif reason is None and modules[conv_name].out_channels != norm.running_mean.numel():
            reason = f"{conv_name} has {modules[conv_name].out_channels} channels, the norm {norm.running_mean.numel()}"
        if reason is None:
            pairs.append((conv_name, name))
        else:
            kept.append((name, reason))
    return pairs, kept


def _fusable_conv(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and conv.weight.device.type == "cpu"
    )


def _fusion_plan(
    modules: dict[str, nn.Module], trace: _Trace, folded: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """``(conv_name, act_name)`` for every activation that directly consumes a conv's (folded) output."""
    producer = _producers(modules, trace)
    for conv_name, norm_name in folded:  # after folding, the norm's output is the conv's
        producer[trace.only(trace.outputs, norm_name)] = conv_name
    pairs = []
    for name, act in modules.items():
        node = trace.only(trace.inputs, name) if type(act) in _ONEDNN_ACTS else None
        conv_name = producer.get(node)
        if conv_name is not None and trace.uses[node] == 1 and _fusable_conv(modules[conv_name]):
            pairs.append((conv_name, name))
    return pairs


# ----------------------------------------------------------------------------- rewriting
@torch.no_grad()
def _fold_into(conv: nn.Module, norm: nn.Module) -> None:
    """Fold an eval-mode norm into the convolution before it: ``norm(conv(x)) == conv'(x)``.

    With ``s = gamma / sqrt(var + eps)``: ``W' = W * s`` per output channel and
    ``b' = (b - mean) * s + beta``. Computed in float64 so that the folded fp32 model
    differs from the original only by the rounding of its own arithmetic.
    """
    weight = conv.weight
    mean, var = norm.running_mean.double(), norm.running_var.double()
    gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(mean)
    beta = norm.bias.double() if norm.bias is not None else torch.zeros_like(mean)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    scale = gamma * torch.rsqrt(var + norm.eps)
    new_weight = weight.double() * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    grad = weight.requires_grad
    conv.weight = nn.Parameter(new_weight.to(weight.dtype), requires_grad=grad)
    conv.bias = nn.Parameter(((bias - mean) * scale + beta).to(weight.dtype), requires_grad=grad)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _fold(model: nn.Module, example_input: torch.Tensor | None) -> tuple[_Trace, list, list]:
    model.eval()
    modules = dict(model.named_modules())
    if not any(isinstance(m, _CONVS) for m in modules.values()):
        kept = [(name, "no convolution in the model") for name, m in modules.items() if isinstance(m, _NORMS)]
        return _Trace(), [], kept
    trace = _trace(model, _sample_input(model) if example_input is None else example_input)
    pairs, kept = _fold_plan(modules, trace)
    for conv_name, norm_name in pairs:
        _fold_into(modules[conv_name], modules[norm_name])
        _replace(model, norm_name, nn.Identity())
    return trace, pairs, kept


def fold_batchnorms(
    model: nn.Module, *, example_input: torch.Tensor | None = None
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Fold, in place, every BatchNorm that directly follows a convolution into it.

    The model is put in eval mode first (folding uses the running statistics). Each
    folded norm is replaced by ``nn.Identity`` and its convolution gains a bias.

    Args:
        model: any network built from ``nn.Conv*d`` and norm modules (not only ResNets).
        example_input: an input the model accepts, used once to see which module feeds
            which; by default a ``(1, in_chans, 64, 64)`` random tensor.

    Returns:
        ``(folded, not_folded)``: ``(conv_name, norm_name)`` pairs that were folded, and
        ``(norm_name, reason)`` for every norm left as it was.

    Raises:
        ValueError: the model could not run on the sample input.
    """
    _, folded, kept = _fold(model, example_input)
    return folded, kept


# ----------------------------------------------------------------------------- fusing
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


def _fuse_residual_graph(block: nn.Module) -> tuple[nn.Module, list[tuple[str, str]]]:
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
        fused.append((conv.target, act.target, FusedConv2d(modules[conv.target], modules[act.target])))
    if not fused:
        return block, []
    rewritten = torch.fx.GraphModule(block, graph, class_name=f"Fused{type(block).__name__}")
    for conv_name, _, module in fused:
        rewritten.add_submodule(conv_name, module)
    rewritten.delete_all_unused_submodules()
    return rewritten, [(conv_name, act_name) for conv_name, act_name, _ in fused]


def _fuse_residuals(model: nn.Module) -> list[tuple[str, str]]:
    """Fuse ``relu(conv(x) + shortcut)`` inside every submodule that owns a conv and a ReLU."""
    pairs = []
    for name, module in list(model.named_modules()):
        children = list(module.children())
        if not name or not any(type(c) is nn.ReLU for c in children) or not any(_fusable_conv(c) for c in children):
            continue
        rewritten, fused = _fuse_residual_graph(module)
        if fused:
            _replace(model, name, rewritten)
            pairs += [(f"{name}.{conv}", f"{name}.{act}") for conv, act in fused]
    return pairs


def _fuse_activations(model: nn.Module, trace: _Trace, folded: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Fuse each activation into the (folded) convolution feeding it, then the residual ReLUs.

    Every other CPU ``nn.Conv2d`` becomes a :class:`FusedConv2d` without an activation,
    for the prepacked weights. Returns ``(conv_name, act_name)`` per fusion; none where
    oneDNN is unavailable.
    """
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")):
        return []
    modules = dict(model.named_modules())
    pairs = _fusion_plan(modules, trace, folded)
    for conv_name, act_name in pairs:
        _replace(model, conv_name, FusedConv2d(modules[conv_name], modules[act_name]))
        _replace(model, act_name, nn.Identity())
    pairs += _fuse_residuals(model)
    for name, module in list(model.named_modules()):  # the rest still gain prepacked weights
        if _fusable_conv(module):
            _replace(model, name, FusedConv2d(module))
    return pairs


# ----------------------------------------------------------------------------- forward
def _cast_floats(value: Any, dtype: torch.dtype) -> Any:
    """Cast every floating-point tensor in a (nested) list / tuple / dict to ``dtype``."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() and value.dtype != dtype else value
    if isinstance(value, (list, tuple)):
        return type(value)(_cast_floats(v, dtype) for v in value)
    if isinstance(value, dict):
        return {k: _cast_floats(v, dtype) for k, v in value.items()}
    return value


def _run_forward(model: nn.Module, dtype: torch.dtype, *args: Any, **kwargs: Any) -> Any:
    """``model``'s own forward with floating inputs cast to ``dtype``, outputs back to the input's dtype."""
    first = args[0] if args else None
    out_dtype = first.dtype if isinstance(first, torch.Tensor) and first.is_floating_point() else None
    out = type(model).forward(model, *_cast_floats(args, dtype), **kwargs)
    return out if out_dtype is None else _cast_floats(out, out_dtype)


@functools.cache
def _compiled_run_forward() -> Callable[..., Any]:
    # One compiled function for every optimised model: the model is an argument, so each
    # copy (and each deepcopy of one) gets its own frozen graph, guarded on its identity.
    return torch.compile(_run_forward)


def _inference_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """The forward of an optimised copy: no autograd, inputs cast to its dtype and outputs back.

    Bound to the copy as an instance attribute (a bound method, so ``copy.deepcopy``
    rebinds it to the new copy). With ``compile`` the call runs the compiled forward
    under Inductor freezing, which treats the weights as constants (folding them,
    prepacking them for oneDNN, fusing activations and residual adds into the
    convolutions). Inductor reads its config when it compiles, which happens inside a
    call (the first, and again for each new input shape), so every call runs under it;
    and freezing only applies to graphs compiled with grad disabled.
    """
    report = self.inference_report
    if not report.compiled:
        with torch.no_grad():
            return _run_forward(self, report.dtype, *args, **kwargs)
    import torch._inductor.config as inductor_config

    with torch.no_grad(), inductor_config.patch(freezing=True):
        return _compiled_run_forward()(self, report.dtype, *args, **kwargs)


def _check_options(model: Any, dtype: Any, channels_last: Any, compile: Any, example_input: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    names = ", ".join(f"torch.{str(d).removeprefix('torch.')}" for d in _DTYPES)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype ({names}), got {dtype!r}")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {names}, got {dtype}")
    for name, value in (("channels_last", channels_last), ("compile", compile)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    if example_input is not None and not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a torch.Tensor, got {type(example_input).__name__}")


def _warn_if_slow(model: nn.Module, dtype: torch.dtype) -> None:
    param = next(model.parameters(), None)
    if param is None or param.device.type != "cpu" or dtype == torch.float32:
        return
    supported = (
        torch.ops.mkldnn._is_mkldnn_bf16_supported()
        if dtype == torch.bfloat16
        else torch.ops.mkldnn._is_mkldnn_fp16_supported()
    )
    if not supported:
        logger.warning("this CPU has no native %s support; the model will be slower than in float32", dtype)


def optimize_for_inference(
    model: nn.Module,
    *,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = True,
    compile: bool = False,
    example_input: torch.Tensor | None = None,
) -> nn.Module:
    """Return a fast evaluation-mode copy of ``model``; ``model`` itself is left untouched.

    The copy has every foldable BatchNorm folded into its convolution; on CPU (without
    ``compile``, in fp32 or bf16) its 2-d convolutions run as :class:`FusedConv2d` with
    prepacked weights and the activations and residual adds after them fused in; weights
    in the chosen dtype and (by default) channels-last; no autograd; and optionally a
    ``torch.compile``-d forward with Inductor freezing. Call it like the original:
    floating-point inputs are cast to ``dtype`` and floating-point outputs back to the
    input's dtype. ``forward`` is wrapped; other methods (``forward_features`` …) run
    the optimised layers directly and need inputs of the model's dtype and no grad.

    Args:
        model: any ResNet (custom blocks and factories included) or other network made
            of ``nn.Conv*d``, norm and activation modules, on any device, in train or
            eval mode.
        dtype: ``torch.float32`` (exact to rounding), ``torch.bfloat16`` (fast on CPUs
            with AVX-512 BF16/AMX and on recent GPUs) or ``torch.float16`` (GPUs).
        channels_last: store 4-d weights channels-last.
        compile: compile the forward with ``torch.compile`` and Inductor freezing. The
            first call for each input shape compiles (a minute or more on a small CPU).
        example_input: an input the model accepts, run once to see which module feeds
            which; by default a random ``(1, in_chans, 64, 64)`` tensor.

    Returns:
        The optimised copy (same class as ``model``), with the
        :class:`InferenceReport` as its ``inference_report`` attribute.

    Raises:
        TypeError: ``model`` is not a module, or an option has the wrong type.
        ValueError: ``dtype`` is not a supported floating-point dtype, or the model
            cannot run on the sample input.

    Example:
        >>> import torch, resnetzoo
        >>> fast = optimize_for_inference(resnetzoo.resnet18(), dtype=torch.bfloat16)
        >>> len(fast.inference_report.folded), len(fast.inference_report.not_folded)
        (20, 0)
        >>> fast(torch.randn(1, 3, 64, 64)).dtype
        torch.float32
    """
    _check_options(model, dtype, channels_last, compile, example_input)
    # Outside inference mode: a deepcopy made inside it would hold inference tensors,
    # which build no autograd graph for the tracing pass.
    with torch.inference_mode(False):
        fast = copy.deepcopy(model)
        trace, folded, not_folded = _fold(fast, example_input)
    # Inductor does these fusions itself; oneDNN's fused kernels have no float16 path on CPU.
    fused = [] if compile or dtype == torch.float16 else _fuse_activations(fast, trace, folded)
    fast.requires_grad_(False)
    fast.to(dtype=dtype)
    if channels_last:
        fast.to(memory_format=torch.channels_last)
    _warn_if_slow(fast, dtype)
    # An instance attribute shadows the class's forward for this copy only; nn.Module's
    # __call__ (and so hooks) still run as usual.
    fast.forward = types.MethodType(_inference_forward, fast)
    fast.inference_report = InferenceReport(
        folded=tuple(folded),
        not_folded=tuple(not_folded),
        fused=tuple(fused),
        dtype=dtype,
        channels_last=channels_last,
        compiled=compile,
    )
    logger.info("optimize_for_inference(%s): %s", type(model).__name__, fast.inference_report)
    return fast
