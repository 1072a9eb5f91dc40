"""The slow-path warning of ``optimize_for_inference`` is said once per process and dtype.

The CPU probe is forced (as in ``tests/test_inference_kernels.py``), so the AVX2-only
branch runs on any machine; only the choice is made here, no reduced-precision kernel runs.
"""

from __future__ import annotations

import logging

import pytest
import torch

from resnetzoo import ResNet
from resnetzoo.inference import CpuFeatures, cpu, optimize_for_inference
from resnetzoo.inference import optimize as optimize_module

TINY = {"layers": (1, 1, 1, 1), "widths": (8, 16, 32, 64), "stem_width": 8, "num_classes": 10}
AVX2_ONLY = CpuFeatures(capability="AVX2", avx2=True, onednn=True)


def test_the_slow_path_is_said_once_per_dtype_and_recorded_every_time(monkeypatch, caplog):
    monkeypatch.setattr(cpu, "cpu_features", lambda: AVX2_ONLY)
    monkeypatch.setattr(optimize_module, "_WARNED", set())  # as in a fresh process
    model = ResNet(**TINY).eval()

    def warnings_of(dtype: torch.dtype) -> tuple[list[str], str]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="resnetzoo"):
            fast = optimize_for_inference(model, dtype=dtype)
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING], str(fast.inference_report)

    first, report = warnings_of(torch.bfloat16)
    assert len(first) == 1 and "no native bfloat16 convolution" in first[0] and "said once per process" in first[0]
    assert "onednn-fp32-compute" in report and "no native bfloat16 convolution" in report
    again, report = warnings_of(torch.bfloat16)  # the choice is still recorded in the report
    assert again == [] and "onednn-fp32-compute" in report
    other, _ = warnings_of(torch.float16)
    assert len(other) == 1 and "no native float16" in other[0]
    assert warnings_of(torch.float32)[0] == []


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_cpu_with_native_kernels_is_not_warned_about(monkeypatch, caplog, dtype):
    native = CpuFeatures(capability="AVX512", avx2=True, avx512=True, avx512_bf16=True, amx=True, vnni=True,
                         onednn=True, onednn_bf16=True, onednn_fp16=True)
    monkeypatch.setattr(cpu, "cpu_features", lambda: native)
    monkeypatch.setattr(optimize_module, "_WARNED", set())
    with caplog.at_level(logging.WARNING, logger="resnetzoo"):
        optimize_for_inference(ResNet(**TINY).eval(), dtype=dtype)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
