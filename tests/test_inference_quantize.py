"""resnetzoo.quantize: int8 through torchao's PT2E flow, the accuracy budget and its fallback, the speed refusal.

The fallback test needs a model whose int8 error comes from one known layer: a
small CNN whose classifier is fitted (ridge regression) to separate ten noisy
prototype images, with one channel of its second convolution scaled by 100 and
ignored by the third. That channel stretches the third layer's input range, so int8
leaves the other channels a handful of levels; keeping that layer in float32 is
the fix. Everything is seeded.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from resnetzoo import ResNet
from resnetzoo.errors import QuantizationError
from resnetzoo.inference import (
    CpuFeatures,
    InferenceModel,
    cpu,
    optimize_for_inference,
    quantization,
    quantize,
)

pytest.importorskip("torchao")

TINY = {"layers": (1, 1, 1, 1), "widths": (8, 16, 32, 64), "stem_width": 8, "num_classes": 10}


def _prototype_images(gen: torch.Generator, prototypes: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.randint(10, (n,), generator=gen)
    return prototypes[labels] + 0.3 * torch.randn(n, 3, 16, 16, generator=gen), labels


@pytest.fixture
def outlier_task():
    """(model, calibration images, held-out (images, labels) batches); layer "4" quantizes badly."""
    gen = torch.Generator().manual_seed(0)
    prototypes = torch.randn(10, 3, 16, 16, generator=gen)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ).eval()
    with torch.no_grad():
        model[2].weight[0] *= 100
        model[2].bias[0] = model[2].bias[0].abs() * 100
        model[4].weight[:, 0] = 0
        images, labels = _prototype_images(gen, prototypes, 500)
        features = model[:-1](images)
        mean = features.mean(0)
        centred = features - mean
        target = F.one_hot(labels, 10).float() - 0.1
        weight = torch.linalg.solve(centred.T @ centred + torch.eye(32), centred.T @ target)
        model[-1].weight.copy_(weight.T)
        model[-1].bias.copy_(0.1 - mean @ weight)
    calibration, _ = _prototype_images(gen, prototypes, 64)
    held_out, labels = _prototype_images(gen, prototypes, 400)
    return model, calibration, list(zip(held_out.split(100), labels.split(100), strict=True))


def test_the_most_sensitive_layer_falls_back_until_the_budget_holds(outlier_task, caplog):
    model, calibration, held_out = outlier_task
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _, everything = quantize(model, calibration, eval_data=held_out, compile=False, accuracy_budget=100)
    assert everything.fallback == () and everything.accuracy_delta > 10  # int8 everywhere loses > 10 points
    assert everything.outliers == ("4",)
    with caplog.at_level(logging.INFO, logger="resnetzoo"):
        quantized, report = quantize(model, calibration, eval_data=held_out, compile=False)
    assert report.fallback == ("4",) and report.accuracy_delta <= 1.0
    assert report.sensitivity_db["4"] == min(report.sensitivity_db.values())
    assert report.eval_images == 400 and report.accuracy_fp32 is not None and not report.compiled
    assert "kept in float32: 4" in str(report) and "not compiled" in str(report)
    assert isinstance(quantized, InferenceModel) and quantized.quantization_report is report
    assert quantized(held_out[0][0]).shape == (100, 10)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the model is untouched


def test_a_budget_that_cannot_be_met_raises_with_the_report(outlier_task):
    model, calibration, held_out = outlier_task
    unlabelled = [images for images, _ in held_out]
    with pytest.raises(QuantizationError, match=r"misses the accuracy budget.*max_fallbacks=0.*most sensitive left: 4"):
        quantize(model, calibration, eval_data=unlabelled, compile=False, max_fallbacks=0)
    with pytest.raises(QuantizationError) as err:
        quantize(model, calibration, eval_data=unlabelled, compile=False, max_fallbacks=0)
    report = err.value.report
    assert report.accuracy_fp32 is None and report.accuracy_delta == pytest.approx(100 - report.agreement)


def _images(n: int = 4, size: int = 32, **kwargs) -> torch.Tensor:
    return torch.randn(n, 3, size, size, **kwargs)


@pytest.mark.parametrize(
    ("calibration", "error", "match"),
    [
        (None, ValueError, "calibration_data is required"),
        ([], ValueError, "calibration_data is empty"),
        (torch.zeros(0, 3, 32, 32), ValueError, "calibration_data is empty"),
        (torch.zeros(4, 1, 32, 32), ValueError, r"shape \(4, 1, 32, 32\); the model takes \(N, 3, H, W\)"),
        (torch.zeros(4, 3, 32), ValueError, "the model takes"),
        (torch.zeros(4, 3, 32, 32, dtype=torch.uint8), TypeError, "torch.uint8; convert them to float32"),
        ((x for x in [torch.zeros(2, 3, 32, 32)]), TypeError, "one-shot iterator; pass a list or a DataLoader"),
        ([torch.full((2, 3, 32, 32), float("nan"))], ValueError, "NaN or infinite"),
        ("images/", TypeError, "must be a tensor or an iterable"),
    ],
)
def test_bad_calibration_data_gets_one_clear_line(calibration, error, match):
    with pytest.raises(error, match=match):
        quantize(ResNet(**TINY, block="basic").eval(), calibration, eval_data=_images())


@pytest.mark.parametrize(
    ("prepare", "match"),
    [
        (lambda m: m.train(), r"training mode; call model.eval\(\) first"),
        (lambda m: m.to(torch.bfloat16), "quantize a float32 model"),
        (lambda m: optimize_for_inference(m), "already optimised or quantized"),
    ],
)
def test_bad_models_get_one_clear_line(prepare, match):
    with pytest.raises(ValueError, match=match):
        quantize(prepare(ResNet(**TINY, block="basic").eval()), _images(), eval_data=_images())


def test_bad_labels_and_settings_are_refused():
    model = ResNet(**TINY, block="basic").eval()
    with pytest.raises(ValueError, match="labels must be 4 class indices"):
        quantize(model, _images(), eval_data=[(_images(), torch.zeros(3, dtype=torch.long))])
    with pytest.raises(ValueError, match="accuracy_budget must be"):
        quantize(model, _images(), eval_data=_images(), accuracy_budget=-1)
    with pytest.raises(ValueError, match="max_fallbacks must be"):
        quantize(model, _images(), eval_data=_images(), max_fallbacks=1.5)


def test_calibration_and_evaluation_at_different_sizes_are_refused_up_front(monkeypatch):
    model = ResNet(**TINY, block="basic").eval()
    calls = []
    monkeypatch.setattr(quantization, "_trace", lambda *a: calls.append(a))  # nothing gets as far as the int8 flow
    with pytest.raises(ValueError, match=r"^eval_data batch 0: images are 32x32 but the calibration_data images are "
                                         r"1x1; calibrate and evaluate at the one size you will run the model at"):
        quantize(model, _images(size=1), eval_data=_images(size=32), compile=False)
    with pytest.raises(ValueError, match=r"calibration_data batch 1: images are 16x16 but the first batch's are "
                                         r"32x32"):
        quantize(model, [_images(), _images(size=16)], eval_data=_images(), compile=False)
    assert calls == []


def test_labels_outside_the_models_classes_are_refused_up_front(monkeypatch):
    model = ResNet(**TINY, block="basic").eval()  # 10 classes
    calls = []
    monkeypatch.setattr(quantization, "_trace", lambda *a: calls.append(a))
    for labels, shown in [(torch.full((4,), 99), "from 99 to 99"), (torch.tensor([0, 1, -1, 2]), "from -1 to 2")]:
        with pytest.raises(ValueError, match=rf"eval_data batch 1: labels run {shown}, but the model has 10 classes; "
                                             rf"give class indices in \[0, 10\)"):
            quantize(model, _images(), eval_data=[(_images(), torch.arange(4)), (_images(), labels)], compile=False)
    assert calls == []


@pytest.mark.parametrize(
    ("features", "words"),
    [
        (CpuFeatures("AVX512", avx2=True, avx512=True, amx=True, vnni=True, onednn=True), "AMX int8 tiles"),
        (CpuFeatures("AVX512", avx2=True, avx512=True, vnni=True, onednn=True), "VNNI int8 dot products"),
        (CpuFeatures("AVX2", avx2=True, onednn=True), "no VNNI or AMX"),
    ],
)
def test_int8_kernel_report_per_cpu_class(monkeypatch, features, words):
    monkeypatch.setattr(cpu, "cpu_features", lambda: features)
    choice = quantization._kernels()
    assert choice.name == "inductor" and choice.compute_dtype == torch.int8 and words in choice.reason


@pytest.mark.parametrize(
    ("features", "quant_max"),
    [
        (CpuFeatures("AVX512", avx2=True, avx512=True, amx=True, vnni=True, onednn=True), 255),
        (CpuFeatures("AVX2", avx2=True, vnni=True, onednn=True), 255),
        (CpuFeatures("AVX2", avx2=True, onednn=True), 127),
    ],
)
def test_activations_use_7_bits_where_int16_sums_would_saturate(monkeypatch, features, quant_max):
    """Without VNNI or AMX, 8-bit activations overflow oneDNN's int16 sums: the graph must use 0..127."""
    monkeypatch.setattr(cpu, "cpu_features", lambda: features)
    model = ResNet(**TINY).eval()
    calibration = quantization._Images(_images(2), what="calibration_data", in_chans=3, labels=False)
    graph = quantization._int8_graph(quantization._trace(model, _images(2)), calibration, keep_float=())
    activation_max = {node.args[4] for node in graph.graph.nodes
                      if "quantize_per_tensor" in str(node.target) and node.args[5] == torch.uint8}
    assert activation_max == {quant_max}
    assert quantization.activation_bits(features) == (8 if quant_max == 255 else 7)


@pytest.mark.slow
def test_torchvision_resnets_quantize_through_the_strict_trace():
    """torchvision's blocks call one ReLU module several times: the non-strict trace trips torchao 0.18."""
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(num_classes=10).eval()
    calibration = quantization._Images(_images(2), what="calibration_data", in_chans=3, labels=False)
    graph = quantization._int8_graph(quantization._trace(model, _images(2)), calibration, keep_float=())
    ops = {str(node.target) for node in graph.graph.nodes}
    assert any("quantize_per_tensor" in op for op in ops) and any("quantize_per_channel" in op for op in ops)


@pytest.mark.slow
def test_compiled_int8_is_timed_and_refused_when_slower(outlier_task, monkeypatch, caplog):
    model, calibration, held_out = outlier_task
    real = quantization._latency_ms
    measured = {}

    def int8_slowest(candidates):
        measured.update(real(candidates))
        return {**measured, "int8": 10 * max(measured.values())}

    monkeypatch.setattr(quantization, "_latency_ms", int8_slowest)
    with pytest.raises(QuantizationError, match=r"int8 is slower than optimize_for_inference.*allow_slower=True"):
        quantize(model, calibration, eval_data=held_out)
    assert set(measured) == {"int8", "fp32", "bf16"} and all(v > 0 for v in measured.values())
    with caplog.at_level(logging.WARNING, logger="resnetzoo"):
        quantized, report = quantize(model, calibration, eval_data=held_out, allow_slower=True)
    assert "returned anyway (allow_slower=True)" in caplog.text
    assert report.compiled and report.latency_batch == 100 and report.fallback == ("4",)
    assert report.accuracy_delta <= 1.0  # measured on the compiled int8 kernels
    assert quantized.inference_report.kernels.name == "inductor" and quantized.inference_report.compiled
    x = held_out[1][0]
    with torch.no_grad():
        assert F.cosine_similarity(quantized(x).flatten(), model(x).flatten(), dim=0) > 0.99
