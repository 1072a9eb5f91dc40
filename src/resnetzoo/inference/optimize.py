"""Make a trained network fast for inference: fold BatchNorm, fuse activations, channels-last, bf16, compile.

:func:`optimize_for_inference` returns an :class:`InferenceModel` wrapping an
optimised copy of a model, which gives the same outputs (to float rounding in fp32)
with less work per image:

- every BatchNorm that directly consumes a convolution's output is folded into that
  convolution (:mod:`resnetzoo.inference.fold`);
- on CPU (without ``compile``), every 2-d convolution becomes a
  :class:`~resnetzoo.inference.kernels.FusedConv2d`: oneDNN's fused convolution with
  the weights reordered once, and the activation (and residual add) after it fused in
  (:mod:`resnetzoo.inference.fuse`). Which kernels run is chosen by the CPU's
  features (:func:`~resnetzoo.inference.kernels.choose_kernels`): natively in
  bfloat16/float16 where the CPU has the instructions, computing in float32 where it
  has not;
- weights are stored channels-last, the layout oneDNN and cuDNN convolutions prefer;
- weights can be cast to ``bfloat16``/``float16``; inputs are cast on the way in and
  outputs back to the input's dtype on the way out, so the caller never sees the change;
- optionally the forward is compiled with ``torch.compile`` and Inductor *freezing*,
  which treats the (now constant) weights as constants to fold and prepack. Inductor
  then does the fusions itself, so :class:`FusedConv2d` is not used.

What was done and chosen is the :class:`InferenceReport` kept as the model's
``inference_report`` and logged at INFO on the ``"resnetzoo"`` logger.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from resnetzoo.inference import cpu
from resnetzoo.inference.fold import fold
from resnetzoo.inference.fuse import fuse_activations
from resnetzoo.inference.kernels import KernelChoice, choose_kernels

__all__ = ["DTYPES", "InferenceModel", "InferenceReport", "optimize_for_inference"]

logger = logging.getLogger(__name__)

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class InferenceReport:
    """What :func:`optimize_for_inference` (or :func:`~resnetzoo.quantize`) did to a model.

    Attributes:
        folded: ``(conv_name, norm_name)`` for every norm folded into its convolution.
        not_folded: ``(norm_name, reason)`` for every norm kept as it was.
        fused: ``(conv_name, act_name)`` for every activation fused into its convolution.
        dtype: the dtype of the returned model's weights.
        channels_last: whether its weights are stored channels-last.
        compiled: whether its forward is compiled with ``torch.compile``.
        kernels: which convolution kernels it runs and why (chosen by device, CPU
            features and dtype).
    """

    folded: tuple[tuple[str, str], ...]
    not_folded: tuple[tuple[str, str], ...]
    fused: tuple[tuple[str, str], ...] = ()
    dtype: torch.dtype = torch.float32
    channels_last: bool = False
    compiled: bool = False
    kernels: KernelChoice | None = None

    def __str__(self) -> str:
        total = len(self.folded) + len(self.not_folded)
        lines = [
            f"folded {len(self.folded)} of {total} norms into convolutions, fused {len(self.fused)} "
            f"activations; dtype={_dtype_name(self.dtype)}, "
            f"channels_last={self.channels_last}, compiled={self.compiled}"
        ]
        if self.kernels is not None:
            lines.append(f"  kernels: {self.kernels}")
        lines += [f"  not folded: {name}: {reason}" for name, reason in self.not_folded]
        return "\n".join(lines)


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


def _run(module: nn.Module, dtype: torch.dtype, *args: Any, **kwargs: Any) -> Any:
    """``module`` on floating inputs cast to ``dtype``, with outputs cast back to the input's dtype."""
    first = args[0] if args else None
    out_dtype = first.dtype if isinstance(first, torch.Tensor) and first.is_floating_point() else None
    out = module(*_cast_floats(args, dtype), **kwargs)
    return out if out_dtype is None else _cast_floats(out, out_dtype)


@functools.cache
def _compiled_run() -> Callable[..., Any]:
    # One compiled function for every optimised model: the module is an argument, so each
    # model (and each deepcopy of one) gets its own frozen graph, guarded on its identity.
    return torch.compile(_run)


class InferenceModel(nn.Module):
    """A network made ready for inference, called like the original.

    Wraps the optimised network (:attr:`module`): runs it without autograd, casts
    floating-point inputs to the network's dtype and floating-point outputs back to
    the input's dtype, and, when compiled, runs it through ``torch.compile`` under
    Inductor freezing. Attributes the wrapper does not have are looked up on the
    network, so ``fast.fc``, ``fast.num_classes`` or ``fast.forward_features(x)`` work
    as on the original (methods other than ``forward`` run the optimised layers
    directly: they need inputs in the network's dtype and no grad). The state dict is
    the network's, under ``module.``, as with ``DistributedDataParallel``.

    Args:
        module: the optimised network.
        report: what was done to it.
        input_dtype: the dtype floating-point inputs are cast to (default: ``report.dtype``).

    Attributes:
        module: the optimised network.
        inference_report: the :class:`InferenceReport`.
    """

    def __init__(self, module: nn.Module, *, report: InferenceReport, input_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.module = module
        self.inference_report = report
        self.input_dtype = input_dtype or report.dtype
        self.training = False  # the network is already in eval mode (and an exported graph refuses .eval())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the network on ``args`` (inputs cast to its dtype, outputs back), without autograd.

        With ``compile`` the call runs the compiled forward under Inductor freezing, which
        treats the weights as constants (folding them, prepacking them for oneDNN,
        fusing activations and residual adds into the convolutions). Inductor reads its
        config when it compiles, which happens inside a call (the first, and again for
        each new input shape), so every call runs under it; and freezing only applies
        to graphs compiled with grad disabled.
        """
        if not self.inference_report.compiled:
            with torch.no_grad():
                return _run(self.module, self.input_dtype, *args, **kwargs)
        import torch._inductor.config as inductor_config  # importing Inductor costs ~1 s: only when compiled

        with torch.no_grad(), inductor_config.patch(freezing=True):
            return _compiled_run()(self.module, self.input_dtype, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module" or name.startswith("__"):  # not set yet (unpickling): no recursion
                raise
            return getattr(self.module, name)

    def extra_repr(self) -> str:
        report = self.inference_report
        return f"dtype={_dtype_name(report.dtype)}, compiled={report.compiled}"


# ----------------------------------------------------------------------------- options
def _check_options(model: Any, dtype: Any, channels_last: Any, compile: Any, example_input: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, InferenceModel):
        raise ValueError("model is already optimised (an InferenceModel); pass the original model")
    names = ", ".join(f"torch.{_dtype_name(d)}" for d in DTYPES)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype ({names}), got {dtype!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {names}, got {dtype}")
    for name, value in (("channels_last", channels_last), ("compile", compile)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    if example_input is not None and not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a torch.Tensor, got {type(example_input).__name__}")


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


# (kernels, dtype) already warned about in this process. The choice depends only on the
# CPU and the dtype, so it is said once; each model's inference_report keeps the record.
_WARNED: set[tuple[str, torch.dtype]] = set()


def _warn_once_if_slow(device: torch.device, dtype: torch.dtype, kernels: KernelChoice) -> None:
    if device.type != "cpu" or dtype == torch.float32 or (kernels.name, dtype) in _WARNED:
        return
    features = cpu.cpu_features()
    if kernels.name == "onednn-fp32-compute" or not features.native(dtype):
        _WARNED.add((kernels.name, dtype))
        name = _dtype_name(dtype)
        how = "computed in float32" if kernels.name == "onednn-fp32-compute" else "from PyTorch's portable kernels"
        logger.warning(
            "optimize_for_inference: this CPU has no native %s convolution (CPU %s); %s models give %s results "
            "%s, slower than with dtype=torch.float32 (said once per process; each model's inference_report "
            "records its kernels)", name, features, name, name, how,
        )


def optimize_for_inference(
    model: nn.Module,
    *,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = True,
    compile: bool = False,
    example_input: torch.Tensor | None = None,
) -> InferenceModel:
    """Return a fast evaluation-mode copy of ``model``, wrapped; ``model`` itself is left untouched.

    The copy has every foldable BatchNorm folded into its convolution; on CPU (without
    ``compile``) its 2-d convolutions run as :class:`~resnetzoo.inference.FusedConv2d`
    with prepacked weights and the activations and residual adds after them fused in,
    natively in ``dtype`` where the CPU can and computing in float32 where it cannot
    (bfloat16 without AVX-512: the results are still bfloat16, just slower); weights in
    the chosen dtype and (by default) channels-last; no autograd; and optionally a
    ``torch.compile``-d forward with Inductor freezing. Call it like the original:
    floating-point inputs are cast to ``dtype`` and floating-point outputs back to the
    input's dtype.

    Args:
        model: any ResNet (custom blocks and factories included) or other network made
            of ``nn.Conv*d``, norm and activation modules, on any device, in train or
            eval mode.
        dtype: ``torch.float32`` (exact to rounding), ``torch.bfloat16`` (fast on CPUs
            with AVX-512 BF16/AMX and on recent GPUs) or ``torch.float16`` (GPUs, and
            CPUs with AVX-512 FP16).
        channels_last: store 4-d weights channels-last.
        compile: compile the forward with ``torch.compile`` and Inductor freezing. The
            first call for each input shape compiles (a minute or more on a small CPU).
        example_input: an input the model accepts, run once to see which module feeds
            which; by default a random ``(1, in_chans, 64, 64)`` tensor.

    Returns:
        An :class:`InferenceModel`: the optimised copy as its ``module``, the
        :class:`InferenceReport` as its ``inference_report`` (which also says which
        kernels were chosen, and why); other attributes are the copy's.

    Raises:
        TypeError: ``model`` is not a module, or an option has the wrong type.
        ValueError: ``dtype`` is not a supported floating-point dtype, ``model`` is
            already optimised, or it cannot run on the sample input.

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
        network = copy.deepcopy(model)
        folding = fold(network, example_input)
    device = _device(network)
    kernels = choose_kernels(device=device, dtype=dtype, compile=compile)
    fused = []
    if kernels.fused:
        fused = fuse_activations(network, folding.trace, folding.folded, compute_dtype=kernels.compute_dtype)
    network.requires_grad_(False)
    network.to(dtype=dtype)
    if channels_last:
        network.to(memory_format=torch.channels_last)
    _warn_once_if_slow(device, dtype, kernels)
    report = InferenceReport(
        folded=tuple(folding.folded),
        not_folded=tuple(folding.not_folded),
        fused=tuple(fused),
        dtype=dtype,
        channels_last=channels_last,
        compiled=compile,
        kernels=kernels,
    )
    logger.info("optimize_for_inference(%s): %s", type(model).__name__, report)
    return InferenceModel(network, report=report)
