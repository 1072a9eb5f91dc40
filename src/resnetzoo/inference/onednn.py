"""PyTorch's private oneDNN ops, in one place: every ``torch.ops.mkldnn._*`` call of resnetzoo is here.

resnetzoo runs convolutions through oneDNN's fused convolution directly (the op
Inductor emits for the same patterns), which ``nn.Conv2d`` cannot do: a weight
reordered once instead of on every call, and the activation or residual add that
follows run inside the same kernel. These ops are private to PyTorch: their
signatures may change between releases, and, unlike ``torch.nn.functional.conv2d``,
they do not check what the CPU can do. Called with bfloat16 tensors on a CPU without
AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT, ``_reorder_convolution_weight`` raises
``mkldnn_reorder_conv2d_weight: bf16 path needs the cpu support ...``. So callers ask
:func:`supports` (through :func:`resnetzoo.inference.cpu_features`, which reads it
once) before they call a kernel in a reduced precision.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["available", "convolution", "convolution_add", "pack_weight", "supports"]

_OPS = ("_convolution_pointwise", "_reorder_convolution_weight")


def available() -> bool:
    """Whether this PyTorch has oneDNN and the fused-convolution ops resnetzoo calls."""
    return torch.backends.mkldnn.is_available() and all(hasattr(torch.ops.mkldnn, op) for op in _OPS)


def supports(dtype: torch.dtype) -> bool:
    """Whether oneDNN computes convolutions in ``dtype`` natively on this CPU.

    float32 everywhere oneDNN is available; bfloat16 and float16 only where the CPU
    has the instructions (PyTorch's own check: AVX-512 BW/VL/DQ or AVX-NE-CONVERT for
    bfloat16, AVX-512 FP16 or AMX-FP16 for float16, or their ARM equivalents).
    """
    if not available():
        return False
    if dtype == torch.float32:
        return True
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if dtype == torch.float16:
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return False


def pack_weight(
    weight: torch.Tensor,
    *,
    padding: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    input_size: Sequence[int],
) -> torch.Tensor:
    """A convolution weight reordered into oneDNN's blocked layout for inputs of ``input_size``.

    Args:
        weight: ``(C_out, C_in / groups, kH, kW)`` in float32, or in a dtype :func:`supports`.
        padding, stride, dilation, groups: the convolution's geometry.
        input_size: the shape of the inputs it will see, ``(N, C_in, H, W)``.

    Returns:
        An opaque tensor to pass to :func:`convolution` / :func:`convolution_add` only.
    """
    return torch.ops.mkldnn._reorder_convolution_weight(
        weight, list(padding), list(stride), list(dilation), groups, list(input_size)
    )


def convolution(
    x: torch.Tensor,
    packed: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    padding: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    attr: str = "none",
    scalars: Sequence[float] = (),
    algorithm: str = "",
) -> torch.Tensor:
    """``act(conv(x))`` in one oneDNN kernel; ``attr`` names the activation (``"none"``, ``"relu"`` ...).

    Shapes: ``x`` ``(N, C_in, H, W)``, ``packed`` from :func:`pack_weight`, ``bias``
    ``(C_out,)``; returns ``(N, C_out, H', W')`` in ``x``'s dtype.
    """
    return torch.ops.mkldnn._convolution_pointwise(
        x, packed, bias, list(padding), list(stride), list(dilation), groups, attr, list(scalars), algorithm
    )


def convolution_add(
    x: torch.Tensor,
    residual: torch.Tensor,
    packed: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    padding: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    attr: str = "none",
    scalars: Sequence[float] = (),
    algorithm: str = "",
) -> torch.Tensor:
    """``act(conv(x) + residual)`` in one oneDNN kernel; ``residual`` has the output's shape and dtype."""
    return torch.ops.mkldnn._convolution_pointwise.binary(
        x, residual, packed, bias, list(padding), list(stride), list(dilation), groups,
        "add", 1.0, attr, list(scalars), algorithm,
    )
