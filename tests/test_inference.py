"""optimize_for_inference: BatchNorm folding, dtype, channels-last, compile, reporting; benchmark smoke run."""

from __future__ import annotations

import copy
import json
import logging
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import resnetzoo
from resnetzoo import BasicBlock, Bottleneck, ResNet
from resnetzoo.inference import (
    CpuFeatures,
    FusedConv2d,
    InferenceModel,
    InferenceReport,
    cpu,
    fold_batchnorms,
    optimize_for_inference,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = {"layers": (1, 1, 1, 1), "widths": (8, 16, 32, 64), "stem_width": 8, "num_classes": 10}


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _assert_close_relative(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-4) -> None:
    error = (actual.float() - expected.float()).abs().max() / expected.float().abs().max()
    assert error <= tol, f"relative error {error:.2e} > {tol:.0e}"


class SEBottleneck(Bottleneck):
    """A custom block: squeeze-excitation made of biased 1x1 convs, no norm after them."""

    def __init__(self, in_chs: int, planes: int, **kwargs) -> None:
        super().__init__(in_chs, planes, **kwargs)
        out_chs = planes * self.expansion
        self.se_reduce = nn.Conv2d(out_chs, max(out_chs // 4, 1), 1)
        self.se_expand = nn.Conv2d(max(out_chs // 4, 1), out_chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        gate = torch.sigmoid(self.se_expand(F.relu(self.se_reduce(x.mean((2, 3), keepdim=True)))))
        return self.act3(x * gate + shortcut)


class PeekBlock(BasicBlock):
    """A block that also uses conv2's raw output, so bn2 must not be folded into conv2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        raw = self.conv2(x)
        return self.act2(self.bn2(raw) + 0.5 * raw + shortcut)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50d"])
def test_fp32_output_equals_original_with_random_bn_statistics(arch, randomize):
    model = randomize(resnetzoo.create_model(arch)).eval()
    x = torch.randn(2, 3, 64, 64)
    fast = optimize_for_inference(model)
    _assert_close_relative(_outputs(fast, x), _outputs(model, x), tol=1e-4)
    assert not fast.inference_report.not_folded


def test_original_model_is_untouched(randomize):
    model = randomize(ResNet(**TINY, block="basic")).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimize_for_inference(model, dtype=torch.bfloat16)
    assert model.training
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 12
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert after[key].dtype == value.dtype and torch.equal(after[key], value), key
    assert model.conv1.weight.is_contiguous()  # not converted to channels-last in place


def test_every_batchnorm_after_a_conv_is_folded_in_resnet50():
    model = resnetzoo.resnet50()
    num_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    fast = optimize_for_inference(model)
    report = fast.inference_report
    assert num_bn == 53
    assert len(report.folded) == num_bn and report.not_folded == ()
    assert ("conv1", "bn1") in report.folded
    assert ("layer1.0.downsample.0", "layer1.0.downsample.1") in report.folded
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert all(m.bias is not None for m in fast.modules() if isinstance(m, nn.Conv2d))
    assert not fast.training
    assert not any(p.requires_grad for p in fast.parameters())
    # Stem + two per block fused with their ReLU, and each block's residual add + ReLU.
    assert len(report.fused) == 1 + 16 * 2 + 16
    assert ("layer1.0.conv3", "layer1.0.act3") in report.fused
    assert isinstance(fast.conv1, FusedConv2d) and isinstance(fast.act1, nn.Identity)


@pytest.mark.parametrize("act", ["relu", "silu", "gelu", "leaky_relu"])
def test_activations_fused_into_convolutions_keep_the_output(act, randomize):
    model = randomize(ResNet(**TINY, block="bottleneck", act=act)).eval()
    x = torch.randn(2, 3, 64, 64)
    fast = optimize_for_inference(model)
    assert ("conv1", "act1") in fast.inference_report.fused
    assert sum(isinstance(m, FusedConv2d) for m in fast.modules()) >= 9
    _assert_close_relative(_outputs(fast, x), _outputs(model, x))
    assert set(fast.module.state_dict()) <= set(model.state_dict()) | {k.replace("weight", "bias") for k in model.state_dict()}


def test_packed_weights_follow_weight_changes_and_copies(randomize):
    model = randomize(ResNet(**TINY, block="basic")).eval()
    x = torch.randn(2, 3, 32, 32)
    fast = optimize_for_inference(model)
    assert all(isinstance(m, FusedConv2d) for m in fast.modules() if isinstance(m, nn.Conv2d))
    before = _outputs(fast, x)  # packs the weights
    twin = copy.deepcopy(fast)
    with torch.no_grad():  # an in-place change must reach the packed copy (folding commutes with it)
        fast.conv1.weight.mul_(2.0)
        model.conv1.weight.mul_(2.0)
    _assert_close_relative(_outputs(fast, x), _outputs(model, x))
    _assert_close_relative(_outputs(twin, x), before)


def test_a_torchvision_model_is_optimised_too(randomize):
    torchvision = pytest.importorskip("torchvision")
    model = randomize(torchvision.models.resnet18()).eval()
    x = torch.randn(2, 3, 64, 64)
    fast = optimize_for_inference(model)
    assert len(fast.inference_report.folded) == 20
    _assert_close_relative(_outputs(fast, x), _outputs(model, x))


def test_deep_stem_and_frozen_batchnorm_are_folded(randomize):
    model = randomize(ResNet(**TINY, block="basic", stem="deep", shortcut="avgpool", norm="frozen_bn"))
    x = torch.randn(2, 3, 64, 64)
    fast = optimize_for_inference(model)
    folded = dict(fast.inference_report.folded)
    assert folded["conv1.0"] == "conv1.1" and folded["conv1.3"] == "conv1.4" and folded["conv1.6"] == "bn1"
    assert folded["layer2.0.downsample.1"] == "layer2.0.downsample.2"
    assert fast.inference_report.not_folded == ()
    _assert_close_relative(_outputs(fast, x), _outputs(model, x))


def test_groupnorm_model_folds_nothing_reports_why_and_keeps_output(randomize, caplog):
    model = randomize(ResNet(**TINY, block="basic", norm="gn")).eval()
    x = torch.randn(2, 3, 64, 64)
    with caplog.at_level(logging.INFO, logger="resnetzoo"):
        fast = optimize_for_inference(model)
    report = fast.inference_report
    assert report.folded == ()
    assert len(report.not_folded) == 12
    assert all("GroupNorm32" in reason for _, reason in report.not_folded)
    assert "folded 0 of 12 norms" in caplog.text and "layer1.0.bn1" in caplog.text
    _assert_close_relative(_outputs(fast, x), _outputs(model, x), tol=1e-5)


def test_custom_blocks_fold_what_is_safe_and_keep_the_rest(randomize):
    se = randomize(ResNet(**{**TINY, "widths": (4, 8, 16, 32)}, block=SEBottleneck)).eval()
    x = torch.randn(2, 3, 64, 64)
    fast = optimize_for_inference(se)
    assert fast.inference_report.not_folded == () and len(fast.inference_report.folded) == 17
    _assert_close_relative(_outputs(fast, x), _outputs(se, x))

    peek = randomize(ResNet(**TINY, block=PeekBlock)).eval()
    fast = optimize_for_inference(peek)
    kept = dict(fast.inference_report.not_folded)
    assert set(kept) == {f"layer{i}.0.bn2" for i in range(1, 5)}
    assert all("also used elsewhere" in reason for reason in kept.values())
    assert isinstance(fast.layer1[0].bn2, nn.BatchNorm2d) and isinstance(fast.layer1[0].bn1, nn.Identity)
    _assert_close_relative(_outputs(fast, x), _outputs(peek, x))


def test_batchnorm_without_running_stats_is_kept():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    folded, kept = fold_batchnorms(model, example_input=torch.randn(1, 3, 8, 8))
    assert folded == [] and "track_running_stats=False" in kept[0][1]


def test_features_only_backbone_works(randomize):
    model = randomize(ResNet(**TINY, block="basic", features_only=True)).eval()
    x = torch.randn(1, 3, 64, 64)
    expected, actual = _outputs(model, x), _outputs(optimize_for_inference(model), x)
    assert len(actual) == len(expected) == 5  # timm's levels: the stem's and four stages'
    for a, e in zip(actual, expected, strict=True):
        _assert_close_relative(a, e)


def test_bf16_path_keeps_logits_close_and_returns_input_dtype(randomize):
    model = randomize(resnetzoo.resnet18()).eval()
    x = torch.randn(2, 3, 64, 64)
    fast = optimize_for_inference(model, dtype=torch.bfloat16)
    assert fast.conv1.weight.dtype == torch.bfloat16 and fast.inference_report.dtype == torch.bfloat16
    out = _outputs(fast, x)
    assert out.dtype == torch.float32
    assert F.cosine_similarity(out.flatten(), _outputs(model, x).flatten(), dim=0) >= 0.999


def test_channels_last_weights():
    fast = optimize_for_inference(resnetzoo.resnet18())
    convs = [m for m in fast.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert not all(m.weight.is_contiguous() for m in convs)
    plain = optimize_for_inference(resnetzoo.resnet18(), channels_last=False)
    assert all(m.weight.is_contiguous() for m in plain.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dtype": torch.int8}, ValueError, "dtype must be one of torch.float32"),
        ({"dtype": "bf16"}, TypeError, "dtype must be a torch.dtype"),
        ({"compile": "yes"}, TypeError, "compile must be True or False"),
        ({"channels_last": None}, TypeError, "channels_last must be True or False"),
        ({"example_input": [1, 2]}, TypeError, "example_input must be a torch.Tensor"),
    ],
)
def test_bad_options_give_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        optimize_for_inference(ResNet(**TINY, block="basic"), **kwargs)


def test_not_a_module_and_bad_sample_input_give_clear_errors():
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        optimize_for_inference({"conv1.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="pass example_input="):
        optimize_for_inference(ResNet(**TINY, block="basic"), example_input=torch.randn(1, 5, 32, 32))


def test_works_inside_inference_mode_and_report_text(randomize):
    model = randomize(ResNet(**TINY, block="basic")).eval()
    with torch.inference_mode():
        fast = optimize_for_inference(model)
    assert len(fast.inference_report.folded) == 12
    assert isinstance(fast.inference_report, InferenceReport)
    assert str(fast.inference_report).startswith("folded 12 of 12 norms")


def test_returns_a_wrapper_and_leaves_forward_alone(randomize):
    model = randomize(ResNet(**TINY, block="basic")).eval()
    x = torch.randn(2, 3, 32, 32)
    fast = optimize_for_inference(model)
    assert isinstance(fast, InferenceModel) and type(fast.module) is ResNet
    assert "forward" not in vars(fast.module)  # the network's own forward, not a patched one
    assert isinstance(fast.inference_report, InferenceReport) and "inference_report" not in vars(fast.module)
    assert fast.num_classes == 10 and fast.fc is fast.module.fc  # attributes come from the network
    with torch.no_grad():
        features = fast.forward_features(x)
    assert features.shape == (2, 64, 1, 1)
    assert set(fast.state_dict()) == {f"module.{k}" for k in fast.module.state_dict()}
    with pytest.raises(ValueError, match="already optimised"):
        optimize_for_inference(fast)


def test_optimised_models_pickle_and_copy(randomize):
    model = randomize(ResNet(**TINY, block="bottleneck")).eval()
    x = torch.randn(2, 3, 32, 32)
    fast = optimize_for_inference(model, dtype=torch.bfloat16)
    expected = _outputs(fast, x)
    for twin in (pickle.loads(pickle.dumps(fast)), copy.deepcopy(fast)):
        assert isinstance(twin, InferenceModel) and twin.inference_report == fast.inference_report
        assert torch.equal(_outputs(twin, x), expected)


def test_private_onednn_ops_are_called_from_one_module_only():
    private_op = re.compile(r"torch\.ops\.mkldnn\._[a-z]|mkldnn\._[a-z]\w*\(")
    files = [*(ROOT / "src").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    users = sorted(str(p.relative_to(ROOT)) for p in files if private_op.search(p.read_text()))
    assert users == ["src/resnetzoo/inference/onednn.py"]


@pytest.mark.slow
def test_importing_the_inference_api_imports_no_optional_dependency():
    code = ("import sys, torch, resnetzoo, resnetzoo.inference as i; "
            "i.optimize_for_inference(resnetzoo.resnet18(num_classes=4)); "
            "print(sorted(m for m in ('onnx', 'onnxruntime', 'onnxscript', 'torchao') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_compiled_model_matches_eager(randomize):
    model = randomize(ResNet(**{**TINY, "layers": (1, 1, 1, 1)}, block="basic")).eval()
    x = torch.randn(1, 3, 32, 32)
    fast = optimize_for_inference(copy.deepcopy(model), compile=True)
    assert fast.inference_report.compiled
    _assert_close_relative(_outputs(fast, x), _outputs(model, x))


@pytest.mark.slow
def test_benchmark_quick_run_writes_json_and_markdown(tmp_path):
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--models", "resnet18",
        "--batch", "1", "--size", "64", "--rounds", "1", "--out", str(tmp_path),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    table = (tmp_path / "results.md").read_text()
    assert results["machine"]["torch"] == torch.__version__
    inference = {row["name"]: row for row in results["rows"] if row["section"] == "inference"}
    assert set(inference["inference fp32 eager"]["values"]) == {"torchvision", "timm", "resnetzoo"}
    assert all(v > 0 for v in inference["inference fp32 eager"]["values"].values())
    assert not any(row["section"] == "compile" or "compile" in row["name"] for row in results["rows"])  # --quick
    assert "| measurement | unit | torchvision | timm | resnetzoo |" in table
    assert "| inference fp32 eager | img/s |" in table


def _benchmark_script(monkeypatch):
    """benchmarks/run.py as a module (it puts benchmarks/ on sys.path: restored after the test)."""
    import importlib.util

    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = importlib.util.spec_from_file_location("resnetzoo_benchmarks_run", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("amx", "reference"), [(True, torch.bfloat16), (False, torch.float32)])
def test_benchmark_runs_int8_without_compile_against_the_goals_reference(monkeypatch, amx, reference):
    bench = _benchmark_script(monkeypatch)
    made = []

    def optimize(model, *, dtype=torch.float32, compile=False):  # stands in for minutes of compilation
        made.append((dtype, compile))
        return model

    monkeypatch.setattr(bench, "optimize_for_inference", optimize)
    monkeypatch.setattr(bench, "_int8", lambda ours, x: (ours, "the int8 report"))
    monkeypatch.setattr(cpu, "cpu_features", lambda: CpuFeatures(capability="AVX512", avx2=True, amx=amx))
    model = ResNet(**TINY, block="basic").eval()
    rows, fast, skipped = bench._inference_contenders({"resnetzoo": model, "torchvision": model},
                                                      torch.randn(1, 3, 32, 32), device=torch.device("cpu"),
                                                      sections=["inference", "int8"])
    assert "int8 quantize" in rows and fast["int8 report"] == "the int8 report" and skipped == []
    assert "int8 reference" in rows and (reference, True) in made  # the goal's reference, compiled, on its own
    assert not any(row.startswith("torch.compile") for row in rows)


def test_benchmark_says_why_a_section_asked_for_is_not_run_and_its_help_is_true(monkeypatch, capsys):
    bench = _benchmark_script(monkeypatch)
    monkeypatch.setattr(bench, "optimize_for_inference", lambda model, **kw: model)
    model = ResNet(**TINY, block="basic").eval()
    rows, _, skipped = bench._inference_contenders({"resnetzoo": model}, torch.randn(1, 3, 32, 32),
                                                   device=torch.device("cuda"), sections=["inference", "int8", "export"])
    assert "int8 quantize" not in rows
    assert skipped == ["int8: not run on cuda: resnetzoo.quantize makes int8 models for CPUs; run with --device cpu",
                       "export: not run on cuda: the export is verified with onnxruntime's CPU provider; run with "
                       "--device cpu"]
    with pytest.raises(SystemExit):
        bench._parse(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--quick leaves out compile, int8 and export" in text
    assert "unless --sections says otherwise, no torch.compile, int8 or export" in text
    quick = bench._parse(["--quick"])
    assert not {"compile", "int8", "export"} & set(quick.sections)
    assert "int8" in bench._parse(["--quick", "--sections", "int8"]).sections


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal path of a machine without a GPU")
def test_gpu_check_refuses_cleanly_without_a_gpu(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "no CUDA device" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
