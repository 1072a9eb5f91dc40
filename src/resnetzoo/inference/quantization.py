"""int8 post-training quantization that checks itself: accuracy budget, layer fallback, speed.

:func:`quantize` runs torchao's PT2E flow with the x86 Inductor quantizer (static
int8: uint8 activations per tensor from a histogram, int8 weights per channel) on a
copy of the model with its BatchNorms folded, calibrates it on the images given, and
compiles it with Inductor freezing, which lowers it to oneDNN's int8 convolutions
(VNNI or AMX where the CPU has them). Then it checks what it made:

- accuracy on held-out images against the float32 model (top-1 agreement, and the
  accuracy change where labels are given). Over the budget, the layer that
  quantizes worst in isolation (lowest signal-to-quantization-noise ratio of its
  output, with its input range as calibrated) is kept in float32, and the flow runs
  again, one layer at a time, until the budget holds;
- speed against :func:`~resnetzoo.inference.optimize_for_inference` in float32 (and
  bfloat16, for the record) on this machine, alternating runs of the same batch. A
  model slower than float32 is refused unless ``allow_slower=True``.

Why these choices:

- The model is traced with ``torch.export.export(..., strict=True)``. torchao 0.18's
  quantizer finds conv -> add -> relu patterns by "source partitions", and a
  non-strict trace (``torch.export``'s default) puts every call of one activation
  module in one partition: torchvision's blocks call ``self.relu`` two or three
  times, so annotating them raises ``ValueError: Input partition has more than one
  output node``. The strict (TorchDynamo) trace records each call on its own.
- Batch, height and width stay dynamic in the trace (as in :func:`~resnetzoo.export`);
  Inductor specialises the compiled model to each input shape it sees.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from resnetzoo.errors import MissingDependencyError, QuantizationError
from resnetzoo.inference import cpu
from resnetzoo.inference.fold import fold
from resnetzoo.inference.graph import CONVS, size_oblivious
from resnetzoo.inference.kernels import KernelChoice
from resnetzoo.inference.optimize import InferenceModel, InferenceReport, optimize_for_inference

__all__ = ["LayerRange", "QuantizationReport", "activation_bits", "quantize"]

logger = logging.getLogger(__name__)

_QUANTIZABLE = (nn.Conv2d, nn.Linear)
_OUTLIER_RATIO = 10.0  # a range 10x the typical magnitude leaves typical values < 26 of 256 levels
_SAMPLES_PER_LAYER = 100_000
_LATENCY_ROUNDS = 5


# ----------------------------------------------------------------------------- report
@dataclass(frozen=True)
class LayerRange:
    """The calibrated input range of one quantized layer.

    int8 activations share one scale per tensor, so a few large values (or one large
    channel) leave the rest of the values only a few of the 256 levels.

    Attributes:
        name: the layer's module name (``"layer1.0.conv1"``).
        min, max: the smallest and largest input value seen in calibration.
        p999: the 99.9th percentile of the absolute input values.
        channel_ratio: the largest channel's peak ``|x|`` over the median channel's.
        outlier: ``max(|min|, |max|) > 10 * p999`` (outlier values) or
            ``channel_ratio > 10`` (an outlier channel).
    """

    name: str
    min: float
    max: float
    p999: float
    channel_ratio: float
    outlier: bool


@dataclass(frozen=True)
class QuantizationReport:
    """What :func:`quantize` made, and how it compares with the float model.

    Attributes:
        layers: one :class:`LayerRange` per convolution and linear layer.
        fallback: layers or blocks kept in float32 to meet the budget, in the order they were.
        sensitivity_db: per layer and per block, the signal-to-quantization-noise ratio
            of its output when only it is quantized (lower: more sensitive), in dB;
            measured only when a fallback was needed. See :func:`quantize`.
        eval_images: held-out images compared.
        agreement: top-1 agreement with the float32 model, in percent.
        accuracy_fp32, accuracy_int8: top-1 accuracy in percent where labels were given.
        accuracy_delta: the budgeted number, in points: ``accuracy_fp32 - accuracy_int8``
            with labels, else ``100 - agreement`` (an upper bound of the accuracy change).
        budget: the accuracy budget, in points.
        compiled: whether the model was compiled (latency is measured only then).
        latency_ms: median milliseconds per batch of ``latency_batch`` images:
            ``"int8"``, ``"fp32"`` (``optimize_for_inference``), ``"bf16"``
            (``optimize_for_inference(dtype=torch.bfloat16)``).
        latency_batch: images per timed batch.
        cpu: the CPU features found (:func:`~resnetzoo.inference.cpu_features`).
        activation_bits: 8, or 7 on a CPU without VNNI or AMX (see :func:`activation_bits`).
        seconds: time the whole call took.
    """

    layers: tuple[LayerRange, ...]
    fallback: tuple[str, ...]
    sensitivity_db: dict[str, float]
    eval_images: int
    agreement: float
    accuracy_fp32: float | None
    accuracy_int8: float | None
    accuracy_delta: float
    budget: float
    compiled: bool
    latency_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    latency_batch: int = 0
    cpu: str = ""
    activation_bits: int = 8
    seconds: float = 0.0

    @property
    def outliers(self) -> tuple[str, ...]:
        """Names of the layers whose calibrated input range has outliers."""
        return tuple(layer.name for layer in self.layers if layer.outlier)

    @property
    def speedup(self) -> float | None:
        """int8 speed over ``optimize_for_inference`` float32 (above 1: int8 is faster), when measured."""
        if "int8" not in self.latency_ms or "fp32" not in self.latency_ms:
            return None
        return self.latency_ms["fp32"] / self.latency_ms["int8"]

    def __str__(self) -> str:
        measure = "accuracy" if self.accuracy_fp32 is not None else "disagreement"
        lines = [
            f"int8: {len(self.layers)} layers, {len(self.fallback)} layers or blocks kept in float32; "
            f"top-1 agreement with float32 {self.agreement:.2f} % on {self.eval_images} held-out images",
        ]
        if self.accuracy_fp32 is not None:
            lines.append(f"  accuracy {self.accuracy_int8:.2f} % (float32 {self.accuracy_fp32:.2f} %)")
        lines.append(f"  {measure} delta {self.accuracy_delta:.2f} points (budget {self.budget:g})")
        if self.fallback:
            lines.append(f"  kept in float32: {', '.join(self.fallback)}")
        if self.outliers:
            lines.append(f"  input outliers (values or a channel > {_OUTLIER_RATIO:g}x the typical): "
                         f"{', '.join(self.outliers)}")
        if self.latency_ms:
            times = ", ".join(f"{k} {v:.1f} ms" for k, v in self.latency_ms.items())
            lines.append(f"  batch of {self.latency_batch}: {times}; int8 {self.speedup:.2f}x float32; {self.cpu}")
        elif not self.compiled:
            lines.append("  not compiled: the reference int8 model, for accuracy checks (no speed measured)")
        if self.activation_bits != 8:
            lines.append(f"  activations in {self.activation_bits} bits: this CPU has no VNNI or AMX")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- data
Batch = tuple[torch.Tensor, torch.Tensor | None]


class _Images:
    """A re-iterable source of ``(images, labels or None)`` batches, checked as they come.

    Accepts a ``(N, C, H, W)`` tensor (split in batches of 32), or anything iterable
    more than once (a list, a ``DataLoader``) yielding image tensors or
    ``(images, labels, ...)`` tuples.

    Every image has one height and width: that of the first batch, or with ``like``,
    the other set's. A ResNet runs at any size, but its activation ranges depend on it
    (how many pixels an object covers, how much of a small feature map is padding
    border), so ranges calibrated at one size are set for another model than the one
    evaluated at another size, and the accuracy check would not vouch for what is
    deployed. Calibrating at another size than you evaluate is almost always a
    preprocessing slip (a missing resize), so it is refused rather than warned about.

    With ``num_classes``, labels must be class indices in ``[0, num_classes)``: a label
    outside it is never predicted, so both models would score 0 % on it and the
    accuracy check would pass without checking anything.
    """

    def __init__(self, data: Any, *, what: str, in_chans: int, labels: bool, num_classes: int | None = None,
                 like: _Images | None = None) -> None:
        if data is None:
            raise ValueError(f"{what} is required: pass a (N, {in_chans}, H, W) float tensor of preprocessed "
                             f"images, or a DataLoader of them")
        if isinstance(data, torch.Tensor):
            data = list(data.split(32)) if data.ndim == 4 else [data]
        elif not isinstance(data, Iterable) or isinstance(data, (str, bytes, dict)):
            raise TypeError(f"{what} must be a tensor or an iterable of image batches, got {type(data).__name__}")
        elif iter(data) is data:
            raise TypeError(f"{what} is a one-shot iterator; pass a list or a DataLoader (it is read several "
                            f"times: calibration again after each fallback)")
        self.data, self.what, self.in_chans, self.labels = data, what, in_chans, labels
        self.num_classes, self.like = num_classes, like
        self.size: tuple[int, int] | None = like.size if like is not None else None  # (H, W), from the first batch
        self.count = 0  # images in a full pass, known after the first
        first = next(iter(data), None)  # fail fast on the first batch; the others are checked as they come
        if first is None:
            raise ValueError(f"{what} is empty; give at least one image")
        self.first = self._check(first, 0)[0]
        if self.first.shape[0] == 0:
            raise ValueError(f"{what} is empty; give at least one image")

    def _check(self, item: Any, index: int) -> Batch:
        images, labels = (item[0], item[1] if len(item) > 1 else None) if isinstance(item, (tuple, list)) else (item, None)
        where = f"{self.what} batch {index}"
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"{where}: images must be a tensor, got {type(images).__name__}")
        if not images.is_floating_point():
            raise TypeError(f"{where}: images are {images.dtype}; convert them to float32 and normalise them as for "
                            f"the model (e.g. WeightSpec.transforms()), as at inference")
        if images.ndim != 4 or images.shape[1] != self.in_chans:
            raise ValueError(f"{where}: images have shape {tuple(images.shape)}; the model takes "
                             f"(N, {self.in_chans}, H, W)")
        size = (images.shape[2], images.shape[3])
        if self.size is None:
            self.size = size
        elif size != self.size:
            other = f"the {self.like.what} images are" if self.like is not None else "the first batch's are"
            raise ValueError(f"{where}: images are {size[0]}x{size[1]} but {other} {self.size[0]}x{self.size[1]}; "
                             f"calibrate and evaluate at the one size you will run the model at (resize both sets "
                             f"the same way)")
        if not torch.isfinite(images).all():
            raise ValueError(f"{where}: images hold NaN or infinite values")
        if not self.labels or not isinstance(labels, torch.Tensor):
            labels = None
        elif labels.shape != (images.shape[0],) or labels.is_floating_point():
            raise ValueError(f"{where}: labels must be {images.shape[0]} class indices, got "
                             f"{labels.dtype} of shape {tuple(labels.shape)}")
        elif self.num_classes is not None and labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"{where}: labels run from {labels.min().item()} to {labels.max().item()}, but the model "
                             f"has {self.num_classes} classes; give class indices in [0, {self.num_classes}) in the "
                             f"order of the model's outputs (an index it cannot predict makes the accuracy check "
                             f"vacuous)")
        return images.float().cpu(), None if labels is None else labels.long().cpu()

    def __iter__(self) -> Iterator[Batch]:
        count = 0
        for index, item in enumerate(self.data):
            batch = self._check(item, index)
            count += batch[0].shape[0]
            yield batch
        self.count = count


def _num_classes(model: nn.Module, images: torch.Tensor) -> int | None:
    """The width of ``model``'s ``(N, classes)`` logits on ``images``, or None when it returns something else."""
    with torch.no_grad():
        out = model(images)
    return out.shape[1] if isinstance(out, torch.Tensor) and out.ndim == 2 else None


# ----------------------------------------------------------------------------- ranges
def _quantizable(network: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in network.named_modules() if isinstance(m, _QUANTIZABLE)}


def _ranges(network: nn.Module, layers: dict[str, nn.Module], images: _Images) -> dict[str, LayerRange]:
    """Each layer's calibrated input range, 99.9th percentile of ``|input|`` (from a sample) and channel peaks."""
    low: dict[str, float] = {}
    high: dict[str, float] = {}
    peaks: dict[str, torch.Tensor] = {}
    samples: dict[str, list[torch.Tensor]] = {}
    gen = torch.Generator().manual_seed(0)

    def visit(name: str, layer: nn.Module, x: torch.Tensor) -> None:
        x = x.detach().float()
        low[name] = min(low.get(name, math.inf), x.min().item())
        high[name] = max(high.get(name, -math.inf), x.max().item())
        channels = x.abs().transpose(0, 1 if isinstance(layer, nn.Conv2d) else -1).flatten(1).amax(dim=1)
        peaks[name] = torch.maximum(peaks[name], channels) if name in peaks else channels
        flat = x.flatten()
        pick = torch.randint(flat.numel(), (min(flat.numel(), _SAMPLES_PER_LAYER // 4),), generator=gen)
        samples.setdefault(name, []).append(flat[pick].abs())

    _observe(network, images, before={name: functools.partial(visit, name) for name in layers}, after={})
    ranges = {}
    for name in layers:
        if name not in samples:  # never ran
            continue
        p999 = torch.quantile(torch.cat(samples[name])[:_SAMPLES_PER_LAYER], 0.999).item()
        peak = max(abs(low[name]), abs(high[name]))
        channel_ratio = (peaks[name].max() / peaks[name].median().clamp_min(1e-12)).item()
        outlier = peak > _OUTLIER_RATIO * max(p999, 1e-12) or channel_ratio > _OUTLIER_RATIO
        ranges[name] = LayerRange(name, low[name], high[name], p999, channel_ratio, outlier)
    return ranges


def _fake_quant_uint8(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``x`` through uint8 per-tensor quantization over ``[low, high]`` (widened to hold 0), and back."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max(high - low, 1e-8) / 255
    return torch.fake_quantize_per_tensor_affine(x, scale, round(-low / scale), 0, 255)


def _fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """``w`` through int8 symmetric per-output-channel quantization, and back."""
    scale = (w.detach().abs().amax(dim=tuple(range(1, w.ndim))) / 127.5).clamp_min(1e-12).float()
    return torch.fake_quantize_per_channel_affine(w, scale, torch.zeros_like(scale, dtype=torch.int32), 0, -128, 127)


def _blocks(network: nn.Module) -> dict[str, nn.Module]:
    """Modules other than the root that hold a quantizable layer directly: residual blocks, shortcuts."""
    return {name: m for name, m in network.named_modules()
            if name and any(isinstance(child, _QUANTIZABLE) for child in m.children())}


def _observe(network: nn.Module, images: _Images, *, before: dict[str, Callable[[nn.Module, torch.Tensor], None]],
             after: dict[str, Callable[[torch.Tensor], None]]) -> None:
    """Run ``network`` over ``images``: ``before[name](module, input)`` and ``after[name](output)`` per call."""
    modules = dict(network.named_modules())
    handles = [modules[name].register_forward_pre_hook(lambda m, args, fn=fn: fn(m, args[0]))
               for name, fn in before.items()]
    handles += [modules[name].register_forward_hook(
        lambda m, args, out, fn=fn: fn(out) if isinstance(out, torch.Tensor) else None)
        for name, fn in after.items()]
    try:
        with torch.no_grad():
            for batch, _ in images:
                network(batch)
    finally:
        for handle in handles:
            handle.remove()


def _sensitivity(network: nn.Module, layers: dict[str, nn.Module], images: _Images,
                 ranges: dict[str, LayerRange]) -> dict[str, float]:
    """How much signal each unit's own quantization loses: SQNR in dB (lower: more sensitive).

    Two kinds of units, matching what the x86 quantizer quantizes: a convolution or
    linear layer (its input as uint8 per tensor over the calibrated range, its weight
    as int8 per output channel; min/max stand in for the quantizer's histogram), and a
    block holding such layers (its output per tensor: the quantizer also quantizes the
    output of ``conv -> add -> relu`` and the shortcut it adds). This ranks units; it
    does not predict the final error.
    """
    blocks = _blocks(network)
    low: dict[str, float] = {}
    high: dict[str, float] = {}

    def output_range(name: str) -> Callable[[torch.Tensor], None]:
        def record(out: torch.Tensor) -> None:
            low[name] = min(low.get(name, math.inf), out.min().item())
            high[name] = max(high.get(name, -math.inf), out.max().item())
        return record

    _observe(network, images, before={}, after={name: output_range(name) for name in blocks})
    signal: dict[str, float] = {}
    noise: dict[str, float] = {}

    def add(name: str, exact: torch.Tensor, approx: torch.Tensor) -> None:
        signal[name] = signal.get(name, 0.0) + exact.float().pow(2).sum().item()
        noise[name] = noise.get(name, 0.0) + (exact.float() - approx.float()).pow(2).sum().item()

    def layer_error(name: str) -> Callable[[nn.Module, torch.Tensor], None]:
        def measure(layer: nn.Module, x: torch.Tensor) -> None:
            xq, wq = _fake_quant_uint8(x, ranges[name].min, ranges[name].max), _fake_quant_weight(layer.weight)
            if isinstance(layer, nn.Conv2d):
                add(name, layer._conv_forward(x, layer.weight, layer.bias), layer._conv_forward(xq, wq, layer.bias))
            else:
                add(name, F.linear(x, layer.weight, layer.bias), F.linear(xq, wq, layer.bias))
        return measure

    def block_error(name: str) -> Callable[[torch.Tensor], None]:
        return lambda out: add(name, out, _fake_quant_uint8(out, low[name], high[name]))

    _observe(network, images, before={name: layer_error(name) for name in layers if name in ranges},
             after={name: block_error(name) for name in blocks if name in low})
    # A unit whose output is all zeros (a zero-initialised last norm, folded) loses nothing.
    return {name: math.inf if signal[name] == 0 or noise[name] == 0 else 10 * math.log10(signal[name] / noise[name])
            for name in signal}


# ----------------------------------------------------------------------------- PT2E
def _torchao() -> Any:
    try:
        from torchao.quantization.pt2e import quantize_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer
    except ImportError as err:
        raise MissingDependencyError(
            "int8 quantization needs torchao: pip install 'resnetzoo[quantize]'"
        ) from err
    return quantize_pt2e, x86_inductor_quantizer


def _trace(network: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """The strict ``torch.export`` trace the quantizer annotates (see the module's docstring)."""
    from torch.export import Dim

    dynamic = ({0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC},)
    with size_oblivious():
        return torch.export.export(network, (example,), dynamic_shapes=dynamic, strict=True).module()


def activation_bits(features: cpu.CpuFeatures) -> int:
    """Bits for quantized activations on a CPU with ``features``: 8, or 7 without VNNI and AMX.

    Without VNNI or AMX, oneDNN multiplies uint8 activations by int8 weights with
    ``vpmaddubsw``, which adds each pair of products in int16 and saturates: with
    activations up to 255 the sums clip and the int8 model's answers are garbage
    (measured: 30 % top-1 agreement on a model that agrees 99 % with VNNI). Activations
    in 0..127 (the quantizer's ``reduce_range``) cannot overflow, at a small cost in
    resolution; fbgemm's eager quantization made the same choice for the same reason.
    """
    return 8 if features.vnni or features.amx else 7


def _int8_graph(graph: torch.fx.GraphModule, calibration: _Images, *, keep_float: tuple[str, ...]) -> torch.fx.GraphModule:
    """The PT2E flow on a copy of ``graph``: annotate (``keep_float`` left in float32), calibrate, convert."""
    quantize_pt2e, x86 = _torchao()
    quantizer = x86.X86InductorQuantizer()
    reduce_range = activation_bits(cpu.cpu_features()) < 8
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config(reduce_range=reduce_range))
    for name in keep_float:
        quantizer.set_module_name_qconfig(name, None)
    prepared = quantize_pt2e.prepare_pt2e(copy.deepcopy(graph), quantizer)
    with torch.no_grad():
        for images, _ in calibration:
            prepared(images)
    return quantize_pt2e.convert_pt2e(prepared)


def _predict(model: Callable[[torch.Tensor], torch.Tensor], images: _Images) -> tuple[torch.Tensor, torch.Tensor | None]:
    predictions, labels = [], []
    with torch.no_grad():
        for batch, batch_labels in images:
            predictions.append(model(batch).argmax(dim=1))
            labels.append(batch_labels)
    have_labels = all(label is not None for label in labels)
    return torch.cat(predictions), torch.cat(labels) if have_labels else None


def _percent(hits: torch.Tensor) -> float:
    return 100.0 * hits.float().mean().item()


@dataclass
class _Scores:
    agreement: float
    accuracy_fp32: float | None
    accuracy_int8: float | None

    @property
    def delta(self) -> float:
        if self.accuracy_fp32 is None or self.accuracy_int8 is None:
            return 100.0 - self.agreement
        return self.accuracy_fp32 - self.accuracy_int8


def _scores(reference: tuple[torch.Tensor, torch.Tensor | None], predicted: torch.Tensor) -> _Scores:
    ref, labels = reference
    with_labels = labels is not None
    return _Scores(_percent(predicted == ref), _percent(ref == labels) if with_labels else None,
                   _percent(predicted == labels) if with_labels else None)


# ----------------------------------------------------------------------------- timing
def _latency_ms(candidates: dict[str, Callable[[], Any]]) -> dict[str, float]:
    """Median milliseconds of each candidate, run in turn round after round (load bursts hit all alike)."""
    for run in candidates.values():  # warm-up: compilation, oneDNN plans, the allocator
        run()
        run()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for r in range(_LATENCY_ROUNDS):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            candidates[name]()
            samples[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(times) for name, times in samples.items()}


def _kernels() -> KernelChoice:
    features = cpu.cpu_features()
    how = ("AMX int8 tiles" if features.amx else "VNNI int8 dot products" if features.vnni
           else "no VNNI or AMX: activations in 7 bits so int16 sums cannot saturate, and int8 dot "
                "products take several instructions, so int8 gains little here")
    return KernelChoice("inductor", torch.int8, f"torch.compile with Inductor freezing: oneDNN int8 "
                                                f"convolutions ({how}); CPU {features}")


# ----------------------------------------------------------------------------- quantize
def _check_model(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, InferenceModel):
        raise ValueError("model is already optimised or quantized; pass the float32 model")
    if model.training:
        raise ValueError("model is in training mode; call model.eval() first (quantization calibrates the "
                         "model as it runs at inference)")
    params = list(model.parameters())
    if not params or any(p.dtype != torch.float32 for p in params):
        raise ValueError("quantize a float32 model (its parameters are not all float32)")
    if any(p.device.type != "cpu" for p in params):
        raise ValueError("int8 quantization runs on CPU; move the model there first (model.cpu())")
    return model


def quantize(
    model: nn.Module,
    calibration_data: Any,
    *,
    eval_data: Any,
    accuracy_budget: float = 1.0,
    max_fallbacks: int = 8,
    allow_slower: bool = False,
    compile: bool = True,
) -> tuple[InferenceModel, QuantizationReport]:
    """Quantize ``model`` to int8 (static, post-training), check accuracy and speed, and return it.

    Args:
        model: a float32 CPU model in eval mode (not modified).
        calibration_data: preprocessed images (as the model takes them) to set the
            activation ranges: a ``(N, C, H, W)`` float tensor, or a list or
            ``DataLoader`` of image batches or ``(images, labels)`` batches, all of
            one height and width: the size you will run the model at. A few hundred
            images from the training distribution are typical.
        eval_data: held-out images in the same forms and at the same height and width,
            with labels where available (``(images, labels)`` batches of class indices
            in ``[0, num_classes)``); never the calibration images.
        accuracy_budget: the largest accuracy loss accepted, in points (without labels:
            the largest top-1 disagreement with the float32 model, in percent).
        max_fallbacks: the most layers kept in float32 to meet the budget.
        allow_slower: return the int8 model even when it is slower than
            ``optimize_for_inference(model)`` in float32 on this machine.
        compile: compile with Inductor freezing (the fast int8 kernels; the first call
            per input shape compiles). False returns the reference int8 model (quantize
            / dequantize around float operations): for accuracy checks, slow, and not timed.

    Returns:
        ``(quantized, report)``: the int8 model as an
        :class:`~resnetzoo.inference.InferenceModel` (called like ``model``, on float32
        inputs; the report is also its ``quantization_report``), and the
        :class:`QuantizationReport`.

    Raises:
        TypeError, ValueError: bad model or data (empty, wrong shape or dtype, a one-shot
            iterator, calibration and held-out images of different sizes, labels outside
            the model's classes).
        MissingDependencyError: torchao is not installed.
        QuantizationError: the budget is not met with ``max_fallbacks`` layers in
            float32, or the int8 model is slower than float32 (``err.report`` has the details).
    """
    started = time.perf_counter()
    model = _check_model(model)
    if not isinstance(accuracy_budget, (int, float)) or not 0 <= accuracy_budget <= 100:
        raise ValueError(f"accuracy_budget must be a number of points in [0, 100], got {accuracy_budget!r}")
    if not isinstance(max_fallbacks, int) or max_fallbacks < 0:
        raise ValueError(f"max_fallbacks must be a non-negative int, got {max_fallbacks!r}")
    _torchao()
    network = copy.deepcopy(model)
    in_chans = next(m for m in network.modules() if isinstance(m, CONVS)).in_channels
    calibration = _Images(calibration_data, what="calibration_data", in_chans=in_chans, labels=False)
    held_out = _Images(eval_data, what="eval_data", in_chans=in_chans, labels=True, like=calibration,
                       num_classes=_num_classes(model, calibration.first[:2]))
    reference = _predict(model, held_out)  # reads every held-out batch: their checks come before any int8 work
    example = calibration.first[:2]
    if example.shape[0] < 2:  # torch.export specialises a batch of 1
        example = example.expand(2, -1, -1, -1).clone()
    folding = fold(network, example)
    layers = _quantizable(network)
    ranges = _ranges(network, layers, calibration)

    graph = _trace(network, example)
    keep_float: list[str] = []
    sqnr: dict[str, float] = {}
    while True:
        converted = _int8_graph(graph, calibration, keep_float=tuple(keep_float))
        scores = _scores(reference, _predict(converted, held_out)[0])
        logger.info("int8 with %d layers in float32: delta %.2f points", len(keep_float), scores.delta)
        if scores.delta <= accuracy_budget:
            break
        if not sqnr:
            sqnr = _sensitivity(network, layers, calibration, ranges)
        candidates = sorted((db, name) for name, db in sqnr.items()
                            if db < math.inf and not any(name == k or name.startswith(f"{k}.") for k in keep_float))
        if len(keep_float) >= max_fallbacks or not candidates:
            report = _report(ranges, sqnr, keep_float, held_out, scores, accuracy_budget, compile, {}, 0, started)
            raise QuantizationError(
                f"int8 misses the accuracy budget: delta {scores.delta:.2f} points > {accuracy_budget:g} with "
                f"{len(keep_float)} layers in float32 (max_fallbacks={max_fallbacks}); most sensitive left: "
                f"{', '.join(name for _, name in candidates[:3]) or 'none'}. Raise max_fallbacks or "
                f"accuracy_budget, or calibrate on more representative images\n{report}", report)
        keep_float.append(candidates[0][1])

    inference_report = InferenceReport(folded=tuple(folding.folded), not_folded=tuple(folding.not_folded),
                                       dtype=torch.int8, compiled=compile, kernels=_kernels())
    quantized = InferenceModel(converted, report=inference_report, input_dtype=torch.float32)
    latency: dict[str, float] = {}
    batch = held_out.first
    if compile:
        scores = _scores(reference, _predict(quantized, held_out)[0])  # the real int8 kernels, as handed over
        fp32 = optimize_for_inference(model)
        bf16 = optimize_for_inference(model, dtype=torch.bfloat16)
        latency = _latency_ms({"int8": lambda: quantized(batch), "fp32": lambda: fp32(batch),
                               "bf16": lambda: bf16(batch)})
    report = _report(ranges, sqnr, keep_float, held_out, scores, accuracy_budget, compile, latency,
                     batch.shape[0], started)
    if scores.delta > accuracy_budget:
        raise QuantizationError(f"the compiled int8 model misses the accuracy budget ({scores.delta:.2f} points "
                                f"> {accuracy_budget:g}), although its reference passed\n{report}", report)
    if latency and latency["int8"] > latency["fp32"]:
        message = (f"int8 is slower than optimize_for_inference(model) in float32 on this CPU "
                   f"({latency['int8']:.1f} ms vs {latency['fp32']:.1f} ms per batch of {batch.shape[0]}; "
                   f"{report.cpu})")
        if not allow_slower:
            raise QuantizationError(f"{message}; use optimize_for_inference(model), or pass allow_slower=True "
                                    f"to take the int8 model anyway\n{report}", report)
        logger.warning("quantize: %s; returned anyway (allow_slower=True)", message)
    quantized.quantization_report = report
    logger.info("quantize(%s): %s", type(model).__name__, report)
    return quantized, report


def _report(ranges: dict[str, LayerRange], sqnr: dict[str, float], keep_float: list[str], held_out: _Images,
            scores: _Scores, budget: float, compiled: bool, latency: dict[str, float], batch: int,
            started: float) -> QuantizationReport:
    return QuantizationReport(
        layers=tuple(ranges.values()), fallback=tuple(keep_float), sensitivity_db=dict(sqnr), eval_images=held_out.count, agreement=scores.agreement,
        accuracy_fp32=scores.accuracy_fp32, accuracy_int8=scores.accuracy_int8, accuracy_delta=scores.delta,
        budget=float(budget), compiled=compiled, latency_ms=latency, latency_batch=batch,
        cpu=str(cpu.cpu_features()), activation_bits=activation_bits(cpu.cpu_features()), seconds=time.perf_counter() - started,
    )
