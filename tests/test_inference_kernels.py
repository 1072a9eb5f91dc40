"""Kernel choice by CPU feature: every branch, forced on any machine.

The CPU probe (:func:`resnetzoo.inference.cpu.cpu_features`) is the only place the
library asks what the CPU can do, so forcing its answer runs each branch here. The
``avx2_only_cpu`` fixture goes further: it also makes PyTorch's private oneDNN ops
refuse reduced precision exactly as they do on an AVX2-only CPU, so the bf16 crash of
such machines (``mkldnn_reorder_conv2d_weight: bf16 path needs the cpu support ...``)
is reproduced on this one. ``fake_native_onednn`` stands in for a CPU with native
reduced-precision kernels on machines without them, recording the dtypes the kernels
were called with.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import resnetzoo
from resnetzoo import ResNet
from resnetzoo.inference import (
    CpuFeatures,
    FusedConv2d,
    cpu,
    cpu_features,
    onednn,
    optimize_for_inference,
)
from resnetzoo.inference import optimize as optimize_module
from resnetzoo.inference.kernels import choose_kernels

TINY = {"layers": (1, 1, 1, 1), "widths": (8, 16, 32, 64), "stem_width": 8, "num_classes": 10}
AVX2_ONLY = CpuFeatures(capability="AVX2", avx2=True, onednn=True)
AVX512_AMX = CpuFeatures(capability="AVX512", avx2=True, avx512=True, avx512_bf16=True, amx=True, vnni=True,
                         onednn=True, onednn_bf16=True, onednn_fp16=True)
NO_ONEDNN = CpuFeatures(capability="DEFAULT")
REAL_AVX2_ERROR = ("mkldnn_reorder_conv2d_weight: bf16 path needs the cpu support avx_ne_convert or avx512bw, "
                   "avx512vl and avx512dq")


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.float().flatten(), b.float().flatten(), dim=0).item()


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


def _force_cpu(monkeypatch: pytest.MonkeyPatch, features: CpuFeatures) -> None:
    monkeypatch.setattr(cpu, "cpu_features", lambda: features)


@pytest.fixture
def avx2_only_cpu(monkeypatch):
    """This CPU as an AVX2-only one: the probe says so, and oneDNN refuses bf16/fp16 as it does there."""
    _force_cpu(monkeypatch, AVX2_ONLY)
    monkeypatch.setattr(optimize_module, "_WARNED", set())  # a fresh process: the slow path is said again
    real_pack = onednn.pack_weight

    def pack_weight(weight, **kwargs):
        if weight.dtype != torch.float32:
            raise RuntimeError(REAL_AVX2_ERROR)
        return real_pack(weight, **kwargs)

    monkeypatch.setattr(onednn, "pack_weight", pack_weight)


def _act(y: torch.Tensor, attr: str, scalars, algorithm: str) -> torch.Tensor:
    if attr == "relu":
        return F.relu(y)
    if attr == "swish":
        return F.silu(y)
    if attr == "leaky_relu":
        return F.leaky_relu(y, scalars[0])
    if attr == "gelu":
        return F.gelu(y, approximate=algorithm)
    assert attr == "none", attr
    return y


@pytest.fixture
def fake_native_onednn(monkeypatch):
    """A CPU with native bf16/fp16 oneDNN kernels: the probe says so; the kernels are a float32 reference.

    Returns the list of dtypes each kernel call received (input, weight), to check that
    the native branch really hands reduced-precision tensors to oneDNN.
    """
    _force_cpu(monkeypatch, AVX512_AMX)
    calls: list[tuple[torch.dtype, torch.dtype]] = []

    def convolution(x, packed, bias, *, padding, stride, dilation, groups, attr="none", scalars=(), algorithm=""):
        calls.append((x.dtype, packed.dtype))
        y = F.conv2d(x.float(), packed.float(), None if bias is None else bias.float(), stride, padding, dilation,
                     groups)
        return _act(y, attr, scalars, algorithm).to(x.dtype)

    def convolution_add(x, residual, packed, bias, *, attr="none", scalars=(), algorithm="", **geometry):
        calls.append((x.dtype, packed.dtype))
        y = convolution(x, packed, bias, **geometry).float() + residual.float()
        calls.pop()
        return _act(y, attr, scalars, algorithm).to(x.dtype)

    monkeypatch.setattr(onednn, "pack_weight", lambda weight, **kwargs: weight)
    monkeypatch.setattr(onednn, "convolution", convolution)
    monkeypatch.setattr(onednn, "convolution_add", convolution_add)
    return calls


# ----------------------------------------------------------------------------- the probe
def test_probe_reads_torch_once_and_logs_once(caplog):
    cpu_features.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger="resnetzoo"):
            first, second = cpu_features(), cpu_features()
        assert first is second
        assert [r.getMessage() for r in caplog.records].count(f"CPU features: {first}") == 1
        assert first.capability == torch.backends.cpu.get_cpu_capability()
        assert first.onednn_bf16 == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        caps = torch.cpu.get_capabilities()
        assert first.avx2 == bool(caps.get("avx2")) and first.amx == all(
            caps.get(k) for k in ("amx_tile", "amx_bf16", "amx_int8"))
    finally:
        cpu_features.cache_clear()


def test_probe_reads_an_avx2_only_cpu(monkeypatch):
    caps = {"architecture": "x86_64", "avx": True, "avx2": True, "fma3": True, "f16c": True}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(onednn, "supports", lambda dtype: dtype == torch.float32)
    features = cpu._read()
    assert features == AVX2_ONLY
    assert str(features) == "capability AVX2 (AVX2); oneDNN native: fp32"
    assert features.native(torch.float32) and not features.native(torch.bfloat16)


# ----------------------------------------------------------------------------- the choice
@pytest.mark.parametrize(
    ("features", "dtype", "name", "compute"),
    [
        (AVX512_AMX, torch.float32, "onednn", torch.float32),
        (AVX512_AMX, torch.bfloat16, "onednn", torch.bfloat16),
        (AVX512_AMX, torch.float16, "onednn", torch.float16),
        (AVX2_ONLY, torch.float32, "onednn", torch.float32),
        (AVX2_ONLY, torch.bfloat16, "onednn-fp32-compute", torch.float32),
        (AVX2_ONLY, torch.float16, "onednn-fp32-compute", torch.float32),
        (NO_ONEDNN, torch.float32, "aten", torch.float32),
        (NO_ONEDNN, torch.bfloat16, "aten", torch.bfloat16),
    ],
)
def test_kernel_choice_per_cpu_class(monkeypatch, features, dtype, name, compute):
    _force_cpu(monkeypatch, features)
    choice = choose_kernels(device=torch.device("cpu"), dtype=dtype, compile=False)
    assert (choice.name, choice.compute_dtype) == (name, compute)
    assert choice.fused == name.startswith("onednn")
    if name == "onednn-fp32-compute":
        assert "no native" in choice.reason and "capability AVX2" in choice.reason


@pytest.mark.parametrize("features", [AVX512_AMX, AVX2_ONLY, NO_ONEDNN])
def test_compile_and_cuda_choices_do_not_depend_on_the_cpu(monkeypatch, features):
    _force_cpu(monkeypatch, features)
    compiled = choose_kernels(device=torch.device("cpu"), dtype=torch.bfloat16, compile=True)
    assert compiled.name == "inductor" and compiled.compute_dtype == torch.bfloat16
    cuda = choose_kernels(device=torch.device("cuda"), dtype=torch.float16, compile=False)
    assert cuda.name == "aten" and "cuda" in cuda.reason


# ----------------------------------------------------------------------------- AVX2-only CPUs
def test_the_avx2_fixture_reproduces_the_crash_of_avx2_machines(avx2_only_cpu):
    with pytest.raises(RuntimeError, match="bf16 path needs the cpu support"):
        onednn.pack_weight(torch.zeros(4, 4, 3, 3, dtype=torch.bfloat16), padding=(1, 1), stride=(1, 1),
                           dilation=(1, 1), groups=1, input_size=(1, 4, 8, 8))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_reduced_precision_on_an_avx2_only_cpu_is_correct(avx2_only_cpu, randomize, caplog, dtype, block):
    model = randomize(ResNet(**TINY, block=block)).eval()
    x = torch.randn(2, 3, 64, 64)
    with caplog.at_level(logging.INFO, logger="resnetzoo"):
        fast = optimize_for_inference(model, dtype=dtype)
    report = fast.inference_report
    assert report.kernels.name == "onednn-fp32-compute" and report.dtype == dtype
    assert fast.conv1.weight.dtype == dtype and fast.conv1.compute_dtype == torch.float32
    assert len(report.fused) > 0 and all(isinstance(m, FusedConv2d) for m in fast.modules()
                                         if isinstance(m, nn.Conv2d))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no native" in warnings[0].getMessage()
    with torch.no_grad():
        out, ref = fast(x), model(x)
    assert out.dtype == torch.float32
    assert _cosine(out, ref) >= 0.999


@pytest.mark.parametrize("residual", [False, True])
def test_emulated_layer_computes_in_float32_and_rounds_to_bf16(avx2_only_cpu, residual):
    conv = nn.Conv2d(8, 16, 3, padding=1).to(torch.bfloat16)
    layer = FusedConv2d(conv, nn.ReLU(), compute_dtype=torch.float32)
    x = torch.randn(2, 8, 12, 12, dtype=torch.bfloat16)
    other = torch.randn(2, 16, 12, 12, dtype=torch.bfloat16) if residual else None
    with torch.no_grad():
        out = layer(x, other)
        expected = F.conv2d(x.float(), conv.weight.float(), conv.bias.float(), padding=1)
        expected = F.relu(expected + (other.float() if residual else 0)).to(torch.bfloat16)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected)  # bf16 tolerances: one rounding, as a native kernel


def test_compiled_and_plain_paths_are_chosen_on_an_avx2_only_cpu(avx2_only_cpu, randomize):
    model = randomize(ResNet(**TINY, block="basic")).eval()
    fast = optimize_for_inference(model, dtype=torch.bfloat16, compile=True)
    assert fast.inference_report.kernels.name == "inductor"
    assert not any(isinstance(m, FusedConv2d) for m in fast.modules())


# ----------------------------------------------------------------------------- native CPUs
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_native_branch_hands_reduced_precision_to_onednn(fake_native_onednn, randomize, dtype):
    model = randomize(ResNet(**TINY, block="bottleneck", act="silu")).eval()
    x = torch.randn(2, 3, 64, 64)
    fast = optimize_for_inference(model, dtype=dtype)
    assert fast.inference_report.kernels.name == "onednn"
    with torch.no_grad():
        out = fast(x)
    assert fake_native_onednn and set(fake_native_onednn) == {(dtype, dtype)}
    assert _cosine(out, model(x).detach()) >= 0.999


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_native_kernels_of_this_cpu(randomize, dtype):
    """The real oneDNN kernels, where this machine has them (the branch itself is tested above)."""
    if not cpu_features().native(dtype):
        pytest.skip(f"this CPU has no native {dtype} oneDNN kernels ({cpu_features()})")
    model = randomize(ResNet(**TINY, block="bottleneck")).eval()
    x = torch.randn(2, 3, 64, 64)
    fast = optimize_for_inference(model, dtype=dtype)
    assert fast.inference_report.kernels.name == "onednn" and fast.conv1.compute_dtype == dtype
    with torch.no_grad():
        assert _cosine(fast(x), model(x)) >= 0.999


# ----------------------------------------------------------------------------- no oneDNN
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_without_onednn_plain_convolutions_run(monkeypatch, randomize, dtype):
    _force_cpu(monkeypatch, NO_ONEDNN)
    model = randomize(ResNet(**TINY, block="basic")).eval()
    x = torch.randn(2, 3, 64, 64)
    fast = optimize_for_inference(model, dtype=dtype)
    assert fast.inference_report.kernels.name == "aten" and fast.inference_report.fused == ()
    assert not any(isinstance(m, FusedConv2d) for m in fast.modules())
    assert len(fast.inference_report.folded) == 12
    with torch.no_grad():
        out, ref = fast(x), model(x)
    if dtype == torch.float32:
        assert _relative_error(out, ref) <= 1e-5
    else:
        assert _cosine(out, ref) >= 0.999


def test_report_names_the_choice(monkeypatch):
    _force_cpu(monkeypatch, AVX2_ONLY)
    fast = optimize_for_inference(resnetzoo.resnet18(num_classes=10))
    assert "kernels: onednn: oneDNN fused convolutions in float32; CPU capability AVX2" in str(fast.inference_report)
