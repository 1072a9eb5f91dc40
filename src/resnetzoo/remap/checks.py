"""What makes a checkpoint wrong for a model even when every name and shape fits.

Names and shapes are not enough: a tensor full of NaN, an integer tensor where a
float belongs, a tensor on the meta device (no data at all), or a checkpoint whose
``config.json`` says it computes differently (v1 stride placement, a first stage
that downsamples, another activation) all fit by name and shape and give outputs
that are wrong, or a crash half-way through loading. This module finds them, so
that :class:`~resnetzoo.remap.report.LoadReport` can name them and a strict load
can refuse them before anything is copied:

- :func:`invalid_tensors`: checkpoint values that cannot be right.
- :func:`config_conflicts`: settings recorded with the checkpoint (a transformers
  ``config.json``, mmpretrain's ``style``, resnetzoo's own metadata) that the model
  does not honour, each with the reason and the fix.
- :class:`ModelFacts`: what these checks need to know about the model.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn as nn

__all__ = ["InvalidTensor", "ModelFacts", "config_conflicts", "invalid_tensors", "model_facts"]

# Modules whose class decides the nonlinearity; their class names are compared with a config.
_ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Hardswish,
    nn.Hardsigmoid, nn.PReLU, nn.Tanh, nn.Sigmoid, nn.Softplus,
)  # fmt: skip
# transformers' ACT2FN names -> the torch module that computes them.
_HF_ACTIVATIONS = {"relu": "ReLU", "gelu": "GELU", "silu": "SiLU", "swish": "SiLU", "leaky_relu": "LeakyReLU"}


@dataclass(frozen=True)
class InvalidTensor:
    """A checkpoint tensor whose name and shape fit but whose values cannot be loaded as they are."""

    key: str
    problem: str


@dataclass(frozen=True)
class ModelFacts:
    """What the checks need to know about the model besides its state dict.

    Attributes:
        module_types: every submodule's name -> its class name (``"layer1.0.bn1"`` -> ``"BatchNorm2d"``).
        stride_in_1x1: the model's stride placement (``True`` for v1), when it says.
        has_bottleneck: whether its blocks are bottlenecks (where v1 and v1.5 differ).
    """

    module_types: Mapping[str, str] = field(default_factory=dict)
    stride_in_1x1: bool | None = None
    has_bottleneck: bool = True

    @property
    def activations(self) -> frozenset[str]:
        """Class names of the model's activation modules (``{"ReLU"}`` for every torchvision ResNet)."""
        return frozenset(t for t in self.module_types.values() if t in _ACTIVATION_NAMES)

    def module_type(self, key: str) -> str | None:
        """The class of the module a state-dict key belongs to (``"bn1.weight"`` -> ``"BatchNorm2d"``)."""
        return self.module_types.get(key.rpartition(".")[0])


_ACTIVATION_NAMES = frozenset(cls.__name__ for cls in _ACTIVATIONS)


def model_facts(model: nn.Module) -> ModelFacts:
    """Collect :class:`ModelFacts` from a model (any ``nn.Module``; the meta device is fine)."""
    module_types = {name: type(module).__name__ for name, module in model.named_modules() if name}
    stride_in_1x1 = getattr(model, "stride_in_1x1", None)
    has_bottleneck = any(name.endswith(".conv3") for name in module_types) or not any(
        name.startswith("layer") for name in module_types
    )
    return ModelFacts(module_types, stride_in_1x1 if isinstance(stride_in_1x1, bool) else None, has_bottleneck)


# ------------------------------------------------------------------ values
def _surely_finite(value: torch.Tensor) -> bool:
    """Whether every value is finite, proven by one reduction that allocates nothing.

    Any NaN or infinity makes a sum NaN or infinite, so a finite sum proves every value
    finite. A sum that is not finite (a bad value, or finite values that overflow) is
    checked exactly by the caller. ``isfinite(t).all()`` instead writes a bool tensor as
    large as ``t`` and reads it again: for the 60 million weights of a ResNet-152 that
    took most of ``resnetzoo inspect``'s time, several seconds on a loaded machine.
    """
    return math.isfinite(value.sum().item())


def _value_problem(value: torch.Tensor, target: torch.Tensor) -> str | None:
    """Why ``value`` cannot be copied into the model's tensor ``target``, or None."""
    if value.device.type == "meta":
        return "has no data (a meta-device tensor: it was saved from a model that was never materialised)"
    if value.layout != torch.strided:
        return f"is a {str(value.layout).removeprefix('torch.')} tensor; only dense tensors load"
    if value.is_quantized:
        return f"is quantized ({value.dtype}); dequantize it before saving"
    if target.is_floating_point() and not value.is_floating_point():
        return f"holds {str(value.dtype).removeprefix('torch.')} values where the model holds floating point"
    if not target.is_floating_point() and not target.is_complex():
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            return f"holds {str(value.dtype).removeprefix('torch.')} values where the model holds integers"
        return None
    if value.is_floating_point() and not _surely_finite(value):
        finite = torch.isfinite(value)
        if not bool(finite.all()):
            nan = int(torch.isnan(value).sum())
            inf = value.numel() - int(finite.sum()) - nan
            parts = [f"{nan:,} NaN" if nan else "", f"{inf:,} infinite" if inf else ""]
            return f"holds {' and '.join(p for p in parts if p)} values of {value.numel():,}"
    return None


def invalid_tensors(
    state_dict: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor], keys: Collection[str]
) -> list[InvalidTensor]:
    """The checkpoint tensors among ``keys`` whose values cannot be right for the model.

    Found: a meta-device tensor (no data), a sparse, quantized or otherwise non-dense
    tensor, a bool/int/complex tensor where the model holds floating point (or a float
    where it holds integers, as ``num_batches_tracked``), and NaN or infinite values.

    Args:
        state_dict: the checkpoint in native names.
        model_state: the model's state dict (the meta device is fine: only dtypes are read).
        keys: the keys to check (those whose names and shapes fit).
    """
    out = []
    with _one_thread():
        for key in keys:
            problem = _value_problem(state_dict[key], model_state[key])
            if problem is not None:
                out.append(InvalidTensor(key, problem))
    return out


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch's kernels on one thread for the duration (the previous count is restored).

    The value scan reads each tensor once: memory-bound work that one core does at full
    speed (60 million weights in about 0.05 s). Split across threads, each of the ~900
    reductions waits for every thread of the pool to be scheduled, and on a machine
    whose cores are busy that wait dominates: measured on 2 shared cores, 2.2 s with two
    threads against 0.05 s with one.
    """
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


# ------------------------------------------------------------------ settings
def _flag(metadata: Mapping[str, str], key: str) -> bool | None:
    value = metadata.get(key)
    if value is None:
        return None
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        parsed = value
    return parsed if isinstance(parsed, bool) else str(parsed).lower() == "true"


def _v1(metadata: Mapping[str, str]) -> tuple[bool, str] | None:
    """``(is_v1, what says so)`` when the checkpoint records its stride placement."""
    in_bottleneck = _flag(metadata, "downsample_in_bottleneck")
    if in_bottleneck is not None:
        return in_bottleneck, f"its config says downsample_in_bottleneck={str(in_bottleneck).lower()}"
    style = metadata.get("style")
    if style in ("caffe", "pytorch"):
        return style == "caffe", f"its mmpretrain style is {style!r}"
    saved = _flag(metadata, "stride_in_1x1")
    if saved is not None:
        return saved, f"it was saved from a model with stride_in_1x1={saved}"
    return None


def config_conflicts(metadata: Mapping[str, str], facts: ModelFacts) -> list[str]:
    """Settings recorded with the checkpoint that the model does not compute; each says why and what to do.

    The weights of these checkpoints fit the model by name and shape, so only what was
    recorded beside them can tell: transformers' ``config.json`` (``hidden_act``,
    ``downsample_in_first_stage``, ``downsample_in_bottleneck``; the widths, depths,
    ``layer_type``, ``embedding_size`` and ``num_channels`` show in the shapes and are
    compared there), mmpretrain's ``style``, and the ``stride_in_1x1`` resnetzoo records.

    Args:
        metadata: the checkpoint's metadata (safetensors header and config fields).
        facts: the model's :class:`ModelFacts`.
    """
    conflicts = []
    is_hf = metadata.get("model_type") == "resnet"
    if is_hf and _flag(metadata, "downsample_in_first_stage"):
        conflicts.append(
            "its config says downsample_in_first_stage=true: its first stage halves the resolution, "
            "which no resnetzoo (or torchvision, timm) ResNet does, so every output would differ although "
            "the weights fit. Run it with transformers' ResNetModel, or use a checkpoint trained with "
            "downsample_in_first_stage=false"
        )
    act = metadata.get("hidden_act")
    if is_hf and act is not None:
        wanted = _HF_ACTIVATIONS.get(act.strip('"'))
        if wanted != "ReLU":
            conflicts.append(
                f"its config says hidden_act={act.strip(chr(34))!r}: transformers applies it in the stem and after "
                f"each residual sum but keeps ReLU inside the blocks, which no resnetzoo model computes "
                f"(act= sets every activation). Run it with transformers' ResNetModel"
            )
        elif facts.activations and facts.activations != {"ReLU"}:
            conflicts.append(
                f"it was trained with ReLU (config hidden_act='relu'), the model uses "
                f"{', '.join(sorted(facts.activations))}: build it with act='relu' (the default)"
            )
    v1 = _v1(metadata)
    layer_type = metadata.get("layer_type", "").strip('"')
    if v1 is not None and facts.has_bottleneck and layer_type != "basic":
        is_v1, source = v1
        model_v1 = facts.stride_in_1x1 is True
        if is_v1 and not model_v1:
            conflicts.append(
                f"the checkpoint is ResNet v1 ({source}): stride on the first 1x1 conv; the model is v1.5 "
                f"(stride on the 3x3). The weights fit either way but the outputs differ: build the model "
                f"with stride_in_1x1=True"
            )
        elif model_v1 and not is_v1:
            conflicts.append(
                f"the checkpoint is ResNet v1.5 ({source}): stride on the 3x3 conv; the model is v1 "
                f"(stride_in_1x1=True). The weights fit either way but the outputs differ: build the model "
                f"with stride_in_1x1=False (the default)"
            )
    return conflicts
