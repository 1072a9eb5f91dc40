"""Benchmark resnetzoo against torchvision and timm on the same work, in one process.

    python benchmarks/run.py                  # ResNet-50, batch 8, 224 px, CPU: every section
    python benchmarks/run.py --quick          # 3 rounds, no torch.compile, int8 or export; memory at --size/--batch
    python benchmarks/run.py --device cuda --models resnet50 resnet101 --batch 64
    python benchmarks/run.py --emulate-avx2   # this CPU limited to AVX2 (oneDNN, ATen, resnetzoo's probe)

All three libraries get the same weights (resnetzoo's random initialisation with
BatchNorm scales drawn at random and statistics calibrated on random images, loaded
into torchvision's and timm's models with ``strict=True``) and the same input.
Within a section the contenders are timed in turn, round after round, and each
one's median is reported with its ratio to torchvision (and, for the inference
goals, to torchvision's eager fp32 model). Writes ``results.md`` (the tables) and
``results.json`` (every sample) to ``--out``. benchmarks/README.md says what each
row measures.
"""

from __future__ import annotations

import argparse
import copy
import functools
import importlib.util
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
# _timing sits next to this script; resnetzoo comes from src/ when it is not installed.
sys.path[:0] = [str(ROOT / "benchmarks")] + ([] if importlib.util.find_spec("resnetzoo") else [str(ROOT / "src")])

from _timing import alternate, machine_info, median, peak_memory  # noqa: E402

import resnetzoo  # noqa: E402
from resnetzoo.inference import CpuFeatures, cpu, export, optimize_for_inference, quantize  # noqa: E402

SECTIONS = ("inference", "compile", "int8", "export", "train", "memory", "load", "data")
# --emulate-avx2: oneDNN and ATen limited to AVX2 (read when torch loads, so set before a re-exec),
# and resnetzoo's probe answering as an AVX2-only CPU would.
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "RESNETZOO_BENCH_EMULATE": "avx2"}
AVX2_ONLY = CpuFeatures(capability="AVX2", avx2=True, onednn=True)
EMULATION_NOTE = ("ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2 and resnetzoo's probe forced to an AVX2-only "
                  "CPU; the AVX2 code paths on this machine's cores, caches and memory, not an AVX2 machine's speed")
LIBS = ("torchvision", "timm", "resnetzoo")
MIB = 2**20
CL = torch.channels_last
BASELINE = "torchvision eager fp32"


@dataclass
class Row:
    """One table line: each library's median, and how resnetzoo compares.

    ``unit`` is ``img/s`` (higher is better) or ``s``/``MiB`` (lower is better).
    ``samples`` holds the timed rounds (seconds) behind each median. The ratios are
    resnetzoo's value over torchvision's and over ``reference``; for timed rows each is
    the median of the per-round ratios (see :func:`_paired`).
    """

    section: str
    name: str
    unit: str
    values: dict[str, float | None]
    samples: dict[str, list[float]] = field(default_factory=dict)
    vs_torchvision: float | None = None
    reference: str = ""
    vs_reference: float | None = None
    goal: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class Check:
    """A correctness number measured alongside the timings (error, similarity)."""

    name: str
    value: float
    goal: str
    met: bool | None


# ----------------------------------------------------------------------------- ratios
def _paired(mine: list[float], other: list[float], unit: str) -> float | None:
    """resnetzoo's value over another contender's, from times taken in the same rounds.

    The median of the per-round ratios: a burst of load from another process slows
    both sides of a round alike, so it cancels in the ratio even when it spoils the
    medians of the times themselves.
    """
    if not mine or not other:
        return None
    return median([o / m if unit == "img/s" else m / o for m, o in zip(mine, other, strict=True)])


def _noise(samples: dict[str, list[float]]) -> str:
    """A warning when some contender's rounds differ by more than 1.5x (another process was busy)."""
    spread = max((max(t) / min(t) for t in samples.values() if t), default=1.0)
    return f"NOISY: rounds differ up to {spread:.1f}x, rerun on a quiet machine" if spread > 1.5 else ""


def _timed_row(
    section: str, name: str, samples: dict[str, list[float]], *, per_call: int, note: str = "",
    reference: tuple[str, list[float]] | None = None,
) -> Row:
    """A row from timed rounds: img/s (``per_call`` images per call) or seconds (``per_call=0``)."""
    unit = "img/s" if per_call else "s"
    values = {lib: (per_call / median(t) if per_call else median(t)) if (t := samples.get(lib)) else None
              for lib in LIBS}
    ours = samples.get("resnetzoo", [])
    return Row(
        section, name, unit, values, samples,
        vs_torchvision=_paired(ours, samples.get("torchvision", []), unit),
        reference=reference[0] if reference else "",
        vs_reference=_paired(ours, reference[1], unit) if reference else None,
        note="; ".join(n for n in (note, _noise(samples)) if n),
    )


# ----------------------------------------------------------------------------- models
def _calibrate(model: nn.Module, *, device: torch.device, seed: int = 0) -> nn.Module:
    """Give a fresh model BatchNorms that look trained: drawn scales, statistics of its activations.

    A fresh ResNet's block-final norms are zero (every block starts as its shortcut)
    and all statistics are 0/1, which would make the precision checks trivial. Scales
    are drawn from U(0.5, 1), except the block-final norms (the ones zero-initialised,
    ``zero_init_last``), which get U(0, 0.3): trained ResNets damp their residual
    branches like this, and an undamped random network amplifies rounding errors
    through its 16 blocks far more than a trained one (bf16 logits cosine ~0.993 for
    torchvision's autocast as for ours). Shifts are N(0, 0.1). The running statistics
    are then set to the activations' actual statistics on random images (momentum=None
    gives the cumulative average).
    """
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in norms:
            low, high = (0.0, 0.3) if not m.weight.any() else (0.5, 1.0)
            m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * (high - low) + low)
            m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            m.reset_running_stats()
            m.momentum = None
        model.train()
        for _ in range(2):
            model(torch.randn(8, 3, 128, 128, generator=gen).to(device))
    for m in norms:
        m.momentum = 0.1
    return model.eval()


def _build(arch: str, *, device: torch.device) -> dict[str, nn.Module]:
    """The same network from every library that has ``arch``, all holding resnetzoo's weights."""
    import torchvision

    ours = _calibrate(resnetzoo.create_model(arch).to(device), device=device)
    models: dict[str, nn.Module] = {}
    if hasattr(torchvision.models, arch):
        models["torchvision"] = getattr(torchvision.models, arch)()
    try:
        import timm

        if timm.is_model(arch):
            models["timm"] = timm.create_model(arch)
    except ImportError:
        pass
    for model in models.values():
        model.load_state_dict(ours.state_dict(), strict=True)
        model.to(device).eval()
    models["resnetzoo"] = ours
    return models


def _channels_last(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to(memory_format=CL)


def _bf16_supported(device: torch.device) -> bool:
    """Native bf16: on CPU what resnetzoo's probe says (AVX-512 BW/VL/DQ or AVX-NE-CONVERT)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu.cpu_features().onednn_bf16


def _with_autocast(fn: Callable[..., Any], device: torch.device) -> Callable[..., Any]:
    """``fn`` under bf16 autocast: the standard mixed precision for torchvision and timm models."""

    @functools.wraps(fn)
    def run(*args: Any) -> Any:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return fn(*args)

    return run


def _no_grad(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    def run() -> Any:
        with torch.no_grad():
            return fn(*args)

    return run


# -------------------------------------------------------------------------- inference
# Issue 13's goals, per row: (goal text, the check). "ref" is the row's ratio to its reference
# (torchvision eager fp32 unless the row names another); "tv" its ratio to torchvision in the same row.
INFERENCE_GOALS: dict[str, tuple[str, Callable[[float | None, float | None], bool | None]]] = {
    "fp32 eager": ("resnetzoo / torchvision >= 0.97", lambda ref, tv: None if tv is None else tv >= 0.97),
    "fp32 optimize_for_inference": (f">= 1.3x {BASELINE}", lambda ref, tv: None if ref is None else ref >= 1.3),
    "torch.compile fp32": ("resnetzoo / torchvision >= 1.05 (both compiled, freezing)",
                           lambda ref, tv: None if tv is None else tv >= 1.05),
    "torch.compile bf16": ("resnetzoo / torchvision >= 1.05 (both compiled, freezing), on native bf16",
                           lambda ref, tv: None if tv is None else tv >= 1.05),
    "int8 quantize": (">= 1.5x the reference (AMX: compiled bf16; otherwise compiled fp32)",
                      lambda ref, tv: None if ref is None else ref >= 1.5),
    "onnxruntime fp32": (f">= 1.0x {BASELINE}", lambda ref, tv: None if ref is None else ref >= 1.0),
}
INFERENCE_NOTES = {
    "fp32 eager": "model(x), NCHW input",
    "fp32 channels-last": "model and input channels-last",
    "fp32 optimize_for_inference": "resnetzoo: BatchNorm folded, oneDNN fused convolutions, channels-last weights, "
    "NCHW input",
    "bf16": "torchvision/timm: channels-last + torch.autocast(bf16); "
    "resnetzoo: optimize_for_inference(dtype=bfloat16) (its kernel choice in the checks table)",
    "torch.compile fp32": "torchvision: torch.compile(model) with Inductor freezing; "
    "resnetzoo: optimize_for_inference(compile=True)",
    "torch.compile bf16": "torchvision: torch.compile(model) with Inductor freezing under torch.autocast(bf16); "
    "resnetzoo: optimize_for_inference(dtype=bfloat16, compile=True)",
    "int8 quantize": "resnetzoo.quantize (torchao PT2E, x86 Inductor quantizer, compiled with freezing); "
    "calibrated on random images: speed only, accuracy on real images in benchmarks/int8_digits.py",
    "int8 reference": "resnetzoo: optimize_for_inference(compile=True), bf16 on AMX, else fp32: the int8 goal's "
    "reference, timed on its own because compile is not among --sections",
    "onnxruntime fp32": "resnetzoo.export(format='onnx') run by onnxruntime (CPU provider, torch's thread count) "
    "vs torchvision eager fp32",
}


def _frozen(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` under Inductor freezing, as optimize_for_inference(compile=True) runs: a fair compiled peer."""
    import torch._inductor.config as inductor_config

    @functools.wraps(fn)
    def run(*args: Any) -> Any:
        with inductor_config.patch(freezing=True):
            return fn(*args)

    return run


def _int8(ours: nn.Module, x: torch.Tensor) -> tuple[nn.Module, Any]:
    """resnetzoo's model quantized to int8, calibrated on random images (this measures speed only)."""
    gen = torch.Generator().manual_seed(1)
    calibration = torch.randn(16, *x.shape[1:], generator=gen)
    held_out = torch.randn(32, *x.shape[1:], generator=gen)
    return quantize(ours, calibration, eval_data=list(held_out.split(x.shape[0])), allow_slower=True,
                    accuracy_budget=100)


def _int8_reference() -> tuple[str, torch.dtype]:
    """The row whose resnetzoo model the int8 goal compares with: compiled bf16 on AMX, compiled fp32 elsewhere."""
    return ("torch.compile bf16", torch.bfloat16) if cpu.cpu_features().amx else ("torch.compile fp32", torch.float32)


def _inference_contenders(
    models: dict[str, nn.Module], x: torch.Tensor, *, device: torch.device, sections: list[str]
) -> tuple[dict[str, dict[str, Callable[[], Any]]], dict[str, Any], list[str]]:
    """Per row, per library, a function that runs one batch; resnetzoo's optimised models (and reports);
    and why a section asked for was not run."""
    skipped = []
    x_cl = x.contiguous(memory_format=CL)
    ours, tv = models["resnetzoo"], models.get("torchvision")
    fast: dict[str, Any] = {"fp32 optimize_for_inference": optimize_for_inference(ours)}
    rows = {
        "fp32 eager": {lib: _no_grad(m, x) for lib, m in models.items()},
        "fp32 channels-last": {lib: _no_grad(_channels_last(m), x_cl) for lib, m in models.items()},
        "fp32 optimize_for_inference": {"resnetzoo": _no_grad(fast["fp32 optimize_for_inference"], x)},
    }
    # bf16 runs on every CPU (natively, or computing in fp32 without AVX-512); the goal applies where native.
    fast["bf16"] = optimize_for_inference(ours, dtype=torch.bfloat16)
    rows["bf16"] = {
        lib: _no_grad(_with_autocast(_channels_last(m), device), x_cl) for lib, m in models.items() if lib != "resnetzoo"
    }
    rows["bf16"]["resnetzoo"] = _no_grad(fast["bf16"], x)
    if "compile" in sections and tv is not None:
        # timm's ResNet is the same graph as torchvision's; compiling it too would only
        # double the (long) compile time.
        for dtype, row in ((torch.float32, "torch.compile fp32"), (torch.bfloat16, "torch.compile bf16")):
            compiled_tv = torch.compile(copy.deepcopy(tv))
            if dtype == torch.bfloat16:
                compiled_tv = _with_autocast(compiled_tv, device)
            fast[row] = optimize_for_inference(ours, dtype=dtype, compile=True)
            rows[row] = {"torchvision": _no_grad(_frozen(compiled_tv), x), "resnetzoo": _no_grad(fast[row], x)}
    if "int8" in sections and device.type != "cpu":
        skipped.append(f"int8: not run on {device}: resnetzoo.quantize makes int8 models for CPUs; "
                       f"run with --device cpu")
    elif "int8" in sections:
        fast["int8 quantize"], fast["int8 report"] = _int8(ours, x)
        rows["int8 quantize"] = {"resnetzoo": _no_grad(fast["int8 quantize"], x)}
        reference, dtype = _int8_reference()
        if reference not in rows:  # compile not asked for (or no torchvision): time the goal's reference alone
            fast[f"{reference} (the int8 reference)"] = model = optimize_for_inference(ours, dtype=dtype, compile=True)
            rows["int8 reference"] = {"resnetzoo": _no_grad(model, x)}
    if "export" in sections and device.type != "cpu":
        skipped.append(f"export: not run on {device}: the export is verified with onnxruntime's CPU provider; "
                       f"run with --device cpu")
    elif "export" in sections and tv is None:
        skipped.append("export: the onnxruntime row needs torchvision (its reference); pip install torchvision")
    elif "export" in sections:
        session = _onnx_session(ours, x)
        if session is None:
            skipped.append("export: no onnxruntime row: onnxruntime is not installed "
                           "(pip install 'resnetzoo[export]')")
        else:
            name = session.get_inputs()[0].name
            rows["onnxruntime fp32"] = {"torchvision": _no_grad(tv, x),
                                        "resnetzoo": lambda: session.run(None, {name: x.numpy()})}
    return rows, fast, skipped


def _onnx_session(model: nn.Module, x: torch.Tensor) -> Any:
    """An onnxruntime session of ``model`` written by resnetzoo.export (small sweep), or None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export(model, path, check_shapes=[tuple(x.shape[:1]) + tuple(x.shape[2:])])
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":  # the same courtesy as torch's OpenMP threads
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _inference_checks(
    models: dict[str, nn.Module], fast: dict[str, Any], x: torch.Tensor, *, device: torch.device
) -> list[Check]:
    """How far resnetzoo's optimised outputs are from its eager fp32 output (and torchvision's bf16, for scale)."""
    with torch.no_grad():
        ref = models["resnetzoo"](x).float()
        outputs = {f"resnetzoo {row}": model(x).float() for row, model in fast.items() if isinstance(model, nn.Module)}
        if "torchvision" in models and _bf16_supported(device):
            outputs["torchvision bf16 autocast (for comparison)"] = _with_autocast(models["torchvision"], device)(x).float()
    checks = []
    for name, out in outputs.items():
        if "bf16" in name or "int8" in name:
            value = F.cosine_similarity(out.flatten(), ref.flatten(), dim=0).item()
            checks.append(Check(f"{name}: logits cosine similarity", value, ">= 0.999" if "bf16" in name else "",
                                value >= 0.999 if "bf16" in name else None))
        else:
            value = ((out - ref).abs().max() / ref.abs().max()).item()
            checks.append(Check(f"{name}: max relative error", value, "<= 1e-4", value <= 1e-4))
    for row in ("bf16", "torch.compile bf16"):
        if row in fast:
            kernels = fast[row].inference_report.kernels
            checks.append(Check(f"resnetzoo {row}: kernels chosen: {kernels}", float("nan"), "", None))
    if "int8 report" in fast:
        report = fast["int8 report"]
        checks.append(Check("resnetzoo int8: top-1 agreement with fp32 on 32 random images, % (not a real-image "
                            "accuracy: see int8_digits.py)", report.agreement, "", None))
    return checks


def _export_checks(ours: nn.Module, args: argparse.Namespace) -> list[Check]:
    """resnetzoo.export of resnetzoo's model in both formats over the shape sweep (a small one with --quick)."""
    shapes = [(1, args.size, args.size), (3, args.size + 1, args.size + 1)] if args.quick else None
    checks = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("onnx", "pt2"):
            try:
                report = export(ours, Path(tmp) / f"model.{fmt}", format=fmt,
                                **({"check_shapes": shapes} if shapes else {}))
            except Exception as err:  # a failure is a result too
                checks.append(Check(f"export {fmt} FAILED: {type(err).__name__}: {str(err).splitlines()[0][:200]}",
                                    float("nan"), "<= 1e-4", False))
                continue
            dims = "; ".join(str(d) for d in report.dimensions)
            checks.append(Check(f"export {fmt}: worst relative difference over {len(report.checks)} shapes "
                                f"({report.seconds:.0f} s; {dims})", report.max_rel, "<= 1e-4", report.ok))
    return checks


def _inference(models: dict[str, nn.Module], x: torch.Tensor, args: argparse.Namespace) -> tuple[list[Row], list[Check]]:
    contenders, fast, skipped = _inference_contenders(models, x, device=args.device, sections=args.sections)
    flat = {f"{row}|{lib}": fn for row, libs in contenders.items() for lib, fn in libs.items()}
    samples = alternate(flat, rounds=args.rounds, warmup=args.warmup, device=args.device)
    baseline = samples.get("fp32 eager|torchvision")
    rows = []
    for row, libs in contenders.items():
        reference = (BASELINE, baseline) if baseline else None
        if row == "int8 quantize":
            ref_row, dtype = _int8_reference()
            ref_row = ref_row if ref_row in contenders else "int8 reference"
            reference = (f"resnetzoo compiled {'bf16' if dtype == torch.bfloat16 else 'fp32'}",
                         samples[f"{ref_row}|resnetzoo"])
        result = _timed_row(
            "inference", f"inference {row}", {lib: samples[f"{row}|{lib}"] for lib in libs},
            per_call=x.shape[0], note=INFERENCE_NOTES[row], reference=reference,
        )
        if row in INFERENCE_GOALS and not (row == "torch.compile bf16" and not _bf16_supported(args.device)):
            result.goal, check = INFERENCE_GOALS[row]
            result.met = check(result.vs_reference, result.vs_torchvision)
        rows.append(result)
    checks = _inference_checks(models, fast, x, device=args.device)
    if "export" in args.sections and args.device.type == "cpu":
        checks += _export_checks(models["resnetzoo"], args)
    for why in skipped:  # a section asked for and not run says so, in the table and at once
        print(f"benchmarks/run.py: {why}", file=sys.stderr)
        checks.append(Check(f"NOT RUN: {why}", float("nan"), "", None))
    return rows, checks


# ------------------------------------------------------------------------------ train
def _train_step(model: nn.Module, x: torch.Tensor, *, amp: bool) -> Callable[[], None]:
    """One SGD step on a fixed batch: forward, cross-entropy, backward, update."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    target = torch.randint(0, model.fc.out_features, (x.shape[0],), device=x.device)

    def step() -> None:
        opt.zero_grad(set_to_none=False)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x), target)
        loss.backward()
        opt.step()

    return step


def _train(models: dict[str, nn.Module], x: torch.Tensor, args: argparse.Namespace) -> list[Row]:
    variants = [("fp32", False, x)]
    if args.train_amp:
        variants.append(("bf16 autocast + channels-last", True, x.contiguous(memory_format=CL)))
    rows = []
    for label, amp, inp in variants:
        fmt = CL if amp else torch.contiguous_format
        steps = {
            lib: _train_step(copy.deepcopy(m).to(memory_format=fmt), inp, amp=amp) for lib, m in models.items()
        }
        samples = alternate(steps, rounds=args.rounds, warmup=args.warmup, device=args.device)
        rows.append(_timed_row("train", f"train step {label}", samples, per_call=x.shape[0],
                               note="forward, cross-entropy, backward, SGD step; batch and size as inference"))
    return rows


# ----------------------------------------------------------------------------- memory
def _max_grad_difference(model: nn.Module, x: torch.Tensor) -> float:
    """Largest relative difference between the gradients with and without checkpointing."""
    grads = []
    for enable in (False, True):
        net = copy.deepcopy(model).train()
        net.set_grad_checkpointing(enable)
        net(x).square().mean().backward()
        grads.append([p.grad for p in net.parameters()])
    return max(((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item() for a, b in zip(*grads, strict=True))


def _memory(models: dict[str, nn.Module], args: argparse.Namespace) -> tuple[list[Row], list[Check]]:
    x = torch.randn(args.mem_batch, 3, args.mem_size, args.mem_size, device=args.device)
    plain = {lib: _train_step(copy.deepcopy(m), x, amp=False) for lib, m in models.items()}
    ckpt_models = {lib: copy.deepcopy(m) for lib, m in models.items() if hasattr(m, "set_grad_checkpointing")}
    for m in ckpt_models.values():
        m.set_grad_checkpointing(True)
    ckpt = {lib: _train_step(m, x, amp=False) for lib, m in ckpt_models.items()}
    for step in (*plain.values(), *ckpt.values()):
        step()  # gradients and momentum buffers exist from here on, as in training
    mem_plain = {lib: peak_memory(step, device=args.device) for lib, step in plain.items()}
    mem_ckpt = {lib: peak_memory(step, device=args.device) for lib, step in ckpt.items()}
    times = alternate(
        {"plain": plain["resnetzoo"], "checkpointed": ckpt["resnetzoo"]},
        rounds=args.rounds, warmup=0, device=args.device,
    )
    where = f"{args.mem_size} px, batch {args.mem_batch}"
    mib = {lib: None if mem_plain.get(lib) is None else mem_plain[lib] / MIB for lib in LIBS}
    plain_row = Row("memory", f"train step peak memory ({where})", "MiB", mib,
                    note="peak of live tensor bytes during the step, above the level before it (CPU: the "
                         "profiler's allocation events; CUDA: max_memory_allocated): activations kept for "
                         "backward, their gradients, temporaries")
    if mib["torchvision"] and mib["resnetzoo"]:
        plain_row.vs_torchvision = mib["resnetzoo"] / mib["torchvision"]
    ckpt_mib = {lib: None if mem_ckpt.get(lib) is None else mem_ckpt[lib] / MIB for lib in LIBS}
    ckpt_row = Row("memory", f"train step peak memory, gradient checkpointing ({where})", "MiB", ckpt_mib,
                   reference="resnetzoo without checkpointing", goal="<= 0.60x without (>= 40 % less)",
                   note="torchvision has no gradient checkpointing")
    if ckpt_mib["resnetzoo"] and mib["resnetzoo"]:
        ckpt_row.vs_reference = ckpt_mib["resnetzoo"] / mib["resnetzoo"]
        ckpt_row.met = ckpt_row.vs_reference <= 0.60
    time_row = _timed_row("memory", f"train step time, gradient checkpointing ({where})",
                          {"resnetzoo": times["checkpointed"]}, per_call=0,
                          reference=("resnetzoo without checkpointing", times["plain"]))
    time_row.goal = "<= 1.35x without"
    time_row.met = time_row.vs_reference <= 1.35
    diff = _max_grad_difference(models["resnetzoo"], x)
    check = Check(f"gradients with vs without checkpointing ({where}): max relative difference", diff, "<= 1e-4",
                  diff <= 1e-4)
    return [plain_row, ckpt_row, time_row], [check]


# ------------------------------------------------------------------------------- load
def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def _build_and_load(build: Callable[[], nn.Module], read: Callable[[], dict[str, torch.Tensor]]) -> nn.Module:
    model = build()
    model.load_state_dict(read())
    return model.eval()


def _working(contenders: dict[str, Callable[[], Any]]) -> tuple[dict[str, Callable[[], Any]], list[str]]:
    """Run each contender once; keep those that work, and say what failed for the others."""
    working, failures = {}, []
    for lib, fn in contenders.items():
        try:
            fn()
        except Exception as err:  # reported in the table, not hidden: a failure is a result too
            failures.append(f"{lib} FAILED: {type(err).__name__}: {str(err).splitlines()[0][:300]}")
        else:
            working[lib] = fn
    return working, failures


def _load(arch: str, args: argparse.Namespace) -> list[Row]:
    """Seconds from a weights file in the OS cache to a model ready to run, per format."""
    import torchvision
    from safetensors.torch import load_file, save_file

    from resnetzoo.remap import load_weights

    have_tv = hasattr(torchvision.models, arch)
    try:
        import timm

        have_timm = timm.is_model(arch)
    except ImportError:
        have_timm = False
    state = resnetzoo.create_model(arch).state_dict()
    with tempfile.TemporaryDirectory() as tmp:
        files = {"safetensors": Path(tmp) / f"{arch}.safetensors", "pth": Path(tmp) / f"{arch}.pth"}
        save_file({k: v.contiguous() for k, v in state.items()}, files["safetensors"])
        torch.save(state, files["pth"])
        rows = []
        for fmt, path in files.items():
            read = functools.partial(load_file if fmt == "safetensors" else _torch_load, path)
            contenders: dict[str, Callable[[], Any]] = {}
            if have_tv:
                contenders["torchvision"] = functools.partial(_build_and_load, getattr(torchvision.models, arch), read)
            if have_timm:
                contenders["timm"] = functools.partial(_build_and_load, functools.partial(timm.create_model, arch), read)
            contenders["resnetzoo"] = functools.partial(
                lambda path: load_weights(resnetzoo.create_model(arch), path), path
            )
            contenders, failures = _working(contenders)  # the first call doubles as warm-up
            samples = alternate(contenders, rounds=args.rounds, warmup=0, device=torch.device("cpu"))
            how = "safetensors.torch.load_file" if fmt == "safetensors" else "torch.load(weights_only=True)"
            note = f"torchvision/timm: build + {how} + load_state_dict; resnetzoo: build + resnetzoo.remap.load_weights"
            rows.append(_timed_row("load", f"cached .{fmt} file -> ready {arch}", samples, per_call=0,
                                   note="; ".join([note, *failures])))
    return rows


# ------------------------------------------------------------------------------- data
def _data(args: argparse.Namespace) -> list[Row]:
    """Images per second through the CUB-200 recipe's training input pipeline, per worker count."""
    try:
        from resnetzoo.recipes.cub200 import CUB200, build_transforms, make_synthetic_tree
    except ImportError as err:
        return [Row("data", "CUB-200 recipe train loader", "img/s", {}, note=f"skipped: recipe not installed ({err})")]
    from torch.utils.data import DataLoader

    per_class = 16 if args.quick else 75
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # CUB photos are about 500 x 375; the recipe resizes to 512 and crops 448.
        tree = make_synthetic_tree(Path(tmp) / "cub", num_classes=4, train_per_class=per_class,
                                   test_per_class=1, image_size=(500, 375))
        dataset = CUB200(tree, split="train", transform=build_transforms(train=True, img_size=448), resize=512)
        for workers in args.data_workers:
            loader = DataLoader(dataset, batch_size=16, shuffle=True, num_workers=workers, drop_last=False)
            batches = iter(loader)
            first = next(batches)  # worker start-up is not the pipeline's throughput
            start, count = time.perf_counter(), 0
            for images, _ in batches:
                count += images.shape[0]
            seconds = time.perf_counter() - start
            speed = count / seconds if count else float(first[0].shape[0])
            rows.append(Row(
                "data", f"CUB-200 recipe train loader, {workers} workers", "img/s", {"resnetzoo": speed},
                {"resnetzoo": [seconds]},
                note=f"{speed / max(workers, 1):.1f} img/s per worker; {len(dataset)} synthetic JPEGs "
                     f"500x375 -> resize 512 -> random crop 448 + flip (uint8)",
            ))
    return rows


# ----------------------------------------------------------------------------- output
def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit == "MiB":
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def _markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    cpu_line = m["cpu_features"] + (f" — EMULATED {m['emulated'].upper()} on this CPU: {EMULATION_NOTE}"
                                     if m["emulated"] else "")
    lines = [
        "# resnetzoo benchmark",
        "",
        f"- command: `{report['command']}`",
        f"- machine: {m['cpu']}, {m['cpu_cores']} cores, {m['torch_threads']} torch threads, "
        f"{cpu_line}; device {m['device']}" + (f" ({m['gpu']})" if m["gpu"] else ""),
        f"- software: Python {m['python']}, torch {m['torch']}, torchvision {m['torchvision']}, timm {m['timm']}, "
        f"onnxruntime {m['onnxruntime']}, torchao {m['torchao']}",
        f"- load average at start: {', '.join(f'{v:.2f}' for v in m['load_average'] or [])}; "
        f"finished {report['finished']} in {report['seconds']:.0f} s",
        f"- {report['rounds']} timed rounds after {report['warmup']} warm-up rounds, contenders alternating; "
        "medians shown. img/s: higher is better; s and MiB: lower is better.",
    ]
    for run in report["runs"]:
        lines += ["", f"## {run['title']}", "", f"CPU features (resnetzoo's probe): {cpu_line}", "",
                  "| measurement | unit | torchvision | timm | resnetzoo | resnetzoo / torchvision "
                  "| resnetzoo / reference | goal | met |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in run["rows"]:
            row = Row(**r)
            met = {True: "yes", False: "**NO**", None: ""}[row.met]
            vs_ref = "" if row.vs_reference is None else f"{row.vs_reference:.2f}x {row.reference}"
            lines.append(
                f"| {row.name} | {row.unit} | {_fmt(row.values.get('torchvision'), row.unit)} "
                f"| {_fmt(row.values.get('timm'), row.unit)} | {_fmt(row.values.get('resnetzoo'), row.unit)} "
                f"| {_fmt(row.vs_torchvision)} | {vs_ref} | {row.goal} | {met} |"
            )
        if run["checks"]:
            lines += ["", "| check | value | goal | met |", "|---|---|---|---|"]
            lines += [f"| {c['name']} | {'' if c['value'] != c['value'] else format(c['value'], '.6g')} "
                      f"| {c['goal']} | {({True: 'yes', False: '**NO**', None: ''})[c['met']]} |"
                      for c in run["checks"]]
        notes = [f"- {r['name']}: {r['note']}" for r in run["rows"] if r["note"]]
        lines += ["", "Notes:", "", *notes] if notes else []
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ main
def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet50"], help="architectures (default: resnet50)")
    p.add_argument("--batch", type=int, default=8, help="batch size for inference and training (default 8)")
    p.add_argument("--size", type=int, default=224, help="image size in pixels (default 224)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 7; 3 with --quick)")
    p.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 2; 1 with --quick)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=None,
                   help="what to measure (default: all; --quick leaves out compile, int8 and export). "
                   "int8 runs without compile too: its goal's reference is then timed on its own")
    p.add_argument("--mem-size", type=int, default=None, help="image size of the memory rows (default 448; --size with --quick)")
    p.add_argument("--mem-batch", type=int, default=None, help="batch of the memory rows (default 2; --batch with --quick)")
    p.add_argument("--train-amp", action=argparse.BooleanOptionalAction, default=None,
                   help="add a bf16-autocast channels-last training row (default: on for cuda)")
    p.add_argument("--data-workers", type=int, nargs="+", default=None, help="loader worker counts (default 0 1 2)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="output folder")
    p.add_argument("--quick", action="store_true", help="a fast smoke run: fewer rounds, smaller memory rows and "
                   "export sweep; unless --sections says otherwise, no torch.compile, int8 or export")
    p.add_argument("--emulate-avx2", action="store_true",
                   help="run this CPU's AVX2 code paths: oneDNN and ATen limited to AVX2, resnetzoo's probe "
                   "answering as an AVX2-only CPU (labelled as such in the output)")
    args = p.parse_args(argv)
    for name in ("batch", "size", "threads", "rounds", "warmup", "mem_size", "mem_batch"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "warmup" else 1):
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible to torch here; run on a GPU machine or use --device cpu")
    if args.device.type not in ("cpu", "cuda"):
        p.error(f"--device must be cpu or cuda[:N], got {args.device}")
    args.rounds = args.rounds or (3 if args.quick else 7)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.sections = args.sections or [s for s in SECTIONS if not (args.quick and s in ("compile", "int8", "export"))]
    args.mem_size = args.mem_size or (args.size if args.quick else 448)
    args.mem_batch = args.mem_batch or (args.batch if args.quick else 2)
    args.train_amp = args.device.type == "cuda" if args.train_amp is None else args.train_amp
    args.data_workers = args.data_workers or ([0, 1] if args.quick else [0, 1, 2])
    known = set(resnetzoo.list_models())
    unknown = [m for m in args.models if m not in known]
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {sorted(known)}")
    return args


def _emulate_avx2(argv: list[str] | None) -> None:
    """Re-run this command with oneDNN and ATen limited to AVX2 (they read it at start), and force the probe."""
    if any(os.environ.get(k) != v for k, v in AVX2_ENV.items()):
        os.environ.update(AVX2_ENV)
        os.execv(sys.executable, [sys.executable, __file__, *(sys.argv[1:] if argv is None else argv)])
    cpu.cpu_features = lambda: AVX2_ONLY


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.emulate_avx2:
        _emulate_avx2(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    command = shlex.join(["python", "benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])
    report: dict[str, Any] = {"command": command, "machine": machine_info(args.device), "rounds": args.rounds,
                              "warmup": args.warmup, "runs": []}
    for arch in args.models:
        torch.manual_seed(0)
        models = _build(arch, device=args.device)
        x = torch.randn(args.batch, 3, args.size, args.size, device=args.device)
        rows: list[Row] = []
        checks: list[Check] = []
        if {"inference", "compile", "int8", "export"} & set(args.sections):
            more_rows, more_checks = _inference(models, x, args)
            rows += more_rows
            checks += more_checks
        if "train" in args.sections:
            rows += _train(models, x, args)
        if "memory" in args.sections:
            more_rows, more_checks = _memory(models, args)
            rows += more_rows
            checks += more_checks
        if "load" in args.sections:
            rows += _load(arch, args)
        title = f"{arch}, batch {args.batch}, {args.size} px, {args.device}"
        report["runs"].append({"title": title, "rows": [asdict(r) for r in rows], "checks": [asdict(c) for c in checks]})
        print(f"done: {title}", file=sys.stderr)
    if "data" in args.sections:
        report["runs"].append({"title": "CUB-200 recipe input pipeline", "rows": [asdict(r) for r in _data(args)],
                               "checks": []})
    report["seconds"] = time.perf_counter() - started
    report["finished"] = time.strftime("%Y-%m-%d %H:%M")
    report["rows"] = [row for run in report["runs"] for row in run["rows"]]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    table = _markdown(report)
    (args.out / "results.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
