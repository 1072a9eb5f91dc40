"""Timing and memory measurement for the benchmarks: alternating rounds, medians, peak memory.

Contenders are timed in turn within each round (the order rotates every round), so
a burst of load from another process slows all of them alike instead of one; each
contender's median over the rounds is what the tables report.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["alternate", "machine_info", "median", "peak_memory", "synchronize"]


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer measures it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median(samples: list[float]) -> float:
    """The median of a non-empty list of samples."""
    return statistics.median(samples)


def alternate(
    contenders: dict[str, Callable[[], Any]], *, rounds: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Time each contender once per round, in turn, after ``warmup`` untimed rounds.

    Args:
        contenders: name -> function doing one unit of work (one batch, one step …).
        rounds: timed rounds; each contender runs once per round.
        warmup: untimed rounds first (allocator, oneDNN/cuDNN plan caches, compilation).
        device: where the work runs, for synchronisation.

    Returns:
        name -> the seconds of each timed round.
    """
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            start = time.perf_counter()
            contenders[name]()
            synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return samples


# ----------------------------------------------------------------------- peak memory
def _peak_cpu_tensor_bytes(fn: Callable[[], Any]) -> int | None:
    """Peak of live tensor bytes allocated on the CPU while ``fn`` ran, above the level before.

    The profiler records every allocation and free of PyTorch's CPU allocator with its
    size; the peak of their running sum is the most memory the call's tensors held at
    once: activations kept for backward, gradients, temporaries. Exact and repeatable,
    unlike the process's resident size, which also follows the C allocator's caching.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        events = prof.profiler.kineto_results.events()
    except AttributeError:  # profiler internals moved: report no number rather than a wrong one
        return None
    changes = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    peak = live = 0
    for _, nbytes in changes:
        live += nbytes
        peak = max(peak, live)
    return peak


def peak_memory(fn: Callable[[], Any], *, device: torch.device) -> int | None:
    """Bytes by which memory use rose at its peak while ``fn`` ran, above the level before.

    CUDA: ``torch.cuda.max_memory_allocated`` above the allocation before the call.
    CPU: the peak of live tensor bytes from the profiler's allocation events.

    Returns:
        The bytes, or None where they cannot be measured.
    """
    gc.collect()
    if device.type != "cuda":
        return _peak_cpu_tensor_bytes(fn)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


# ----------------------------------------------------------------------- the machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on: CPU and its features, cores, threads, GPU, library versions.

    The CPU features are resnetzoo's probe (:func:`resnetzoo.inference.cpu_features`),
    which is what chose the kernels, so a forced probe (``--emulate-avx2``) shows here.
    """
    from resnetzoo.inference import cpu

    features = cpu.cpu_features()
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": features.capability,
        "cpu_features": str(features),
        "cpu_bf16": features.onednn_bf16,
        "cpu_amx": features.amx,
        "emulated": os.environ.get("RESNETZOO_BENCH_EMULATE", ""),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "timm": _version("timm"),
        "onnxruntime": _version("onnxruntime"),
        "torchao": _version("torchao"),
        "platform": platform.platform(),
    }
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        info["load_average"] = None
    return info
