"""Fold BatchNorm into the convolution before it: ``norm(conv(x)) == conv'(x)`` in evaluation mode.

In evaluation mode a BatchNorm with running statistics is a fixed per-channel affine
map, so it can become the convolution's weight scale and bias, saving a full read and
write of every activation map. Norms that normalise with statistics of the input
itself (GroupNorm, LayerNorm, InstanceNorm, BatchNorm without running statistics)
cannot be folded; they are kept, with the reason.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
import torch.nn as nn

from resnetzoo.inference.graph import CONVS, Trace, replace_module, sample_input, trace_modules

__all__ = ["FoldResult", "fold", "fold_batchnorms", "fold_into", "is_norm"]

# Where other libraries keep a frozen BatchNorm (a BatchNorm whose statistics are buffers;
# timm uses torchvision's). Looked up among the modules already imported: a model holding
# one has imported it, and importing torchvision here would cost seconds on every
# `import resnetzoo`.
_FROZEN_BATCHNORMS = (("torchvision.ops.misc", "FrozenBatchNorm2d"),)


def _frozen_batchnorm_types() -> tuple[type[nn.Module], ...]:
    found = (getattr(sys.modules.get(module), name, None) for module, name in _FROZEN_BATCHNORMS)
    return tuple(t for t in found if isinstance(t, type))


def _foldable_types() -> tuple[type[nn.Module], ...]:
    """Norms that apply a fixed per-channel affine map in eval mode (given running statistics)."""
    return (nn.modules.batchnorm._BatchNorm, *_frozen_batchnorm_types())


def is_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a normalisation layer the report should account for, foldable or not."""
    return isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, *_foldable_types()))


@dataclass
class FoldResult:
    """What :func:`fold` did: the trace it used, the pairs it folded, the norms it kept."""

    trace: Trace
    folded: list[tuple[str, str]]
    not_folded: list[tuple[str, str]]


def _why_not_foldable(norm: nn.Module) -> str | None:
    if not isinstance(norm, _foldable_types()):
        return f"{type(norm).__name__} normalises with statistics of each input, which no weight can hold"
    if getattr(norm, "running_mean", None) is None or getattr(norm, "running_var", None) is None:
        return f"{type(norm).__name__} has no running statistics (track_running_stats=False)"
    return None


def _fold_plan(modules: dict[str, nn.Module], trace: Trace) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``(conv_name, norm_name)`` pairs to fold, and ``(norm_name, reason)`` for every other norm."""
    producer = trace.producers(modules)
    pairs: list[tuple[str, str]] = []
    kept: list[tuple[str, str]] = []
    for name, norm in modules.items():
        if not is_norm(norm):
            continue
        node = trace.only(trace.inputs, name)
        conv_name = producer.get(node)
        reason = _why_not_foldable(norm)
        if reason is None and node is None:
            reason = f"called {trace.calls(name)} times in the forward pass (folding needs exactly one)"
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


@torch.no_grad()
def fold_into(conv: nn.Module, norm: nn.Module) -> None:
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


def fold(model: nn.Module, example_input: torch.Tensor | None) -> FoldResult:
    """Put ``model`` in eval mode and fold, in place, every norm that can be; see :func:`fold_batchnorms`."""
    model.eval()
    modules = dict(model.named_modules())
    if not any(isinstance(m, CONVS) for m in modules.values()):
        kept = [(name, "no convolution in the model") for name, m in modules.items() if is_norm(m)]
        return FoldResult(Trace(), [], kept)
    trace = trace_modules(model, sample_input(model) if example_input is None else example_input)
    pairs, kept = _fold_plan(modules, trace)
    for conv_name, norm_name in pairs:
        fold_into(modules[conv_name], modules[norm_name])
        replace_module(model, norm_name, nn.Identity())
    return FoldResult(trace, pairs, kept)


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
    result = fold(model, example_input)
    return result.folded, result.not_folded
