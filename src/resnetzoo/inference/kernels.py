"""Which convolution kernels an optimised model runs, chosen by device, CPU features and dtype.

:func:`choose_kernels` makes the choice (one place, from :func:`~resnetzoo.inference.cpu.cpu_features`)
and :class:`FusedConv2d` carries it out: oneDNN's fused convolution with a prepacked
weight, computing natively in the model's dtype where the CPU can, and in float32
(rounding back to the model's dtype after each convolution) where it cannot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from resnetzoo.inference import cpu, onednn

__all__ = ["ONEDNN_ACTIVATIONS", "FusedConv2d", "KernelChoice", "choose_kernels"]

# Activation modules oneDNN can apply inside a convolution: type -> (attr, scalars, algorithm).
ONEDNN_ACTIVATIONS: dict[type[nn.Module], Callable[[Any], tuple[str, list[float], str]]] = {
    nn.ReLU: lambda m: ("relu", [], ""),
    nn.SiLU: lambda m: ("swish", [], ""),
    nn.LeakyReLU: lambda m: ("leaky_relu", [m.negative_slope], ""),
    nn.GELU: lambda m: ("gelu", [], m.approximate),
}


@dataclass(frozen=True)
class KernelChoice:
    """The kernels an optimised model runs, and why.

    Attributes:
        name: ``"onednn"`` (oneDNN fused convolutions in the model's dtype),
            ``"onednn-fp32-compute"`` (the same, computing in float32 because the CPU has
            no native kernel for the model's reduced-precision dtype), ``"inductor"``
            (``torch.compile`` with Inductor freezing chooses) or ``"aten"`` (PyTorch's
            own convolutions: cuDNN on CUDA, or a CPU PyTorch without oneDNN).
        compute_dtype: the dtype convolutions compute in (they accumulate in float32 in
            every case; this is the dtype of their inputs and weights).
        reason: what decided, in words (the device or the CPU features found).
    """

    name: str
    compute_dtype: torch.dtype
    reason: str

    @property
    def fused(self) -> bool:
        """Whether convolutions become :class:`FusedConv2d`."""
        return self.name.startswith("onednn")

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def choose_kernels(*, device: torch.device, dtype: torch.dtype, compile: bool) -> KernelChoice:
    """Choose the convolution kernels for a model on ``device`` with weights in ``dtype``.

    Args:
        device: where the model's weights are.
        dtype: float32, bfloat16 or float16.
        compile: whether the forward is compiled with Inductor.

    Returns:
        The :class:`KernelChoice`. On CPU it depends on :func:`resnetzoo.inference.cpu.cpu_features`.
    """
    name = _dtype_name(dtype)
    if compile:
        return KernelChoice("inductor", dtype, f"torch.compile with Inductor freezing picks {name} kernels for "
                                               f"this {'CPU' if device.type == 'cpu' else device.type} itself")
    if device.type != "cpu":
        return KernelChoice("aten", dtype, f"PyTorch's own {name} convolutions on {device.type}")
    features = cpu.cpu_features()
    if not features.onednn:
        return KernelChoice("aten", dtype, f"this PyTorch has no oneDNN fused convolution; plain {name} convolutions")
    if features.native(dtype):
        return KernelChoice("onednn", dtype, f"oneDNN fused convolutions in {name}; CPU {features}")
    return KernelChoice(
        "onednn-fp32-compute", torch.float32,
        f"this CPU has no native {name} convolution (it needs AVX-512 BW/VL/DQ or AVX-NE-CONVERT for "
        f"bfloat16, AVX-512 FP16 for float16; CPU {features}): weights and activations stay {name}, "
        f"each convolution computes in float32, slower than dtype=torch.float32",
    )


class FusedConv2d(nn.Conv2d):
    """A 2-d convolution run by oneDNN with prepacked weights, optionally fused with what follows it.

    Computes ``act(conv(x))``, or ``act(conv(x) + residual)`` when a residual is given,
    in one kernel (oneDNN's ``_convolution_pointwise``, the op Inductor emits for these
    patterns). The weights are reordered into oneDNN's blocked layout once and cached
    (again only when they change), instead of on every call as ``nn.Conv2d`` does.
    Parameters keep their names (``conv1.weight`` stays ``conv1.weight``); the packed
    copy is not part of the state dict. For inference only (no autograd). Off the CPU,
    and while ``torch.compile`` or ``torch.export`` traces it, it runs the same
    computation with PyTorch's portable ops, so compiled and exported graphs hold
    ordinary convolutions.

    Args:
        conv: the convolution to take the parameters and geometry from.
        act: the activation module (``nn.ReLU``, ``nn.SiLU``, ``nn.LeakyReLU``,
            ``nn.GELU``; only ``nn.ReLU`` with a residual), or None for none.
        compute_dtype: the dtype oneDNN computes in, or None for the weight's dtype.
            ``torch.float32`` with reduced-precision weights on a CPU without native
            kernels for them: inputs, residual and weight are cast up, the output back
            to the weight's dtype, so results round like a native reduced-precision
            kernel's (which also accumulates in float32).

    Shape:
        ``forward(x, residual=None)``: as ``conv``; ``residual`` has the output's shape.
    """

    def __init__(self, conv: nn.Conv2d, act: nn.Module | None = None, *,
                 compute_dtype: torch.dtype | None = None) -> None:
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
        self.attr, self.scalars, self.algorithm = (
            ONEDNN_ACTIVATIONS[type(act)](act) if act is not None else ("none", [], "")
        )
        self.compute_dtype = compute_dtype
        self._packed: tuple[tuple[Any, ...], torch.Tensor, torch.Tensor | None] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The packed weight is a cache (and an opaque oneDNN tensor): never copied or pickled.
        return {**self.__dict__, "_packed": None}

    def extra_repr(self) -> str:
        extra = super().extra_repr() + f", act={self.attr}"
        return extra + (f", compute_dtype={_dtype_name(self.compute_dtype)}" if self.compute_dtype else "")

    def _operands(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The packed weight and the bias in the compute dtype, cached until the weight changes."""
        weight, bias = self.weight, self.bias
        dtype = self.compute_dtype or weight.dtype
        key = (weight.data_ptr(), weight.dtype, weight._version, dtype,
               None if bias is None else (bias.data_ptr(), bias._version))
        if self._packed is None or self._packed[0] != key:
            packed = onednn.pack_weight(weight.to(dtype), padding=self.padding, stride=self.stride,
                                        dilation=self.dilation, groups=self.groups, input_size=x.shape)
            self._packed = (key, packed, None if bias is None else bias.to(dtype))
        return self._packed[1], self._packed[2]

    def _portable(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        y = self._conv_forward(x, self.weight, self.bias)
        return self.act(y if residual is None else y + residual)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if x.device.type != "cpu" or torch.compiler.is_compiling():
            return self._portable(x, residual)
        out_dtype = x.dtype
        dtype = self.compute_dtype or self.weight.dtype
        x = x.to(dtype)
        weight, bias = self._operands(x)
        geometry = {"padding": self.padding, "stride": self.stride, "dilation": self.dilation,
                    "groups": self.groups, "attr": self.attr, "scalars": self.scalars,
                    "algorithm": self.algorithm}
        if residual is None:
            y = onednn.convolution(x, weight, bias, **geometry)
        else:
            y = onednn.convolution_add(x, residual.to(dtype), weight, bias, **geometry)
        return y.to(out_dtype)
