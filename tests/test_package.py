"""The package root: lazy exports derived from the tables, and one vocabulary for ``pretrained``."""

from __future__ import annotations

import ast
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import resnetzoo
from resnetzoo.architectures import ARCHITECTURES
from resnetzoo.weights import WeightSpec, pretrained_source


def _fresh(code: str) -> dict:
    """Run ``code`` (which prints JSON) in a new interpreter."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout)


def test_import_loads_no_torch_until_a_name_is_used():
    out = _fresh(
        "import sys, json, resnetzoo\n"
        "before = 'torch' in sys.modules\n"
        "resnetzoo.resnet18\n"
        "print(json.dumps({'before': before, 'after': 'torch' in sys.modules, 'version': resnetzoo.__version__}))"
    )
    assert out == {"before": False, "after": True, "version": resnetzoo.__version__}


def test_the_weight_records_load_no_torch():
    """``resnetzoo list`` reads the records table: pure data, no torch until a file is read."""
    out = _fresh(
        "import sys, json, resnetzoo.weights as w\n"
        "n = len(w.list_pretrained())\n"
        "before = 'torch' in sys.modules\n"
        "w.read_checkpoint\n"
        "print(json.dumps({'records': n, 'before': before, 'after': 'torch' in sys.modules}))"
    )
    assert out == {"records": len(resnetzoo.weights.list_pretrained()), "before": False, "after": True}


def test_every_architecture_is_exported_with_its_constructor():
    for name in ARCHITECTURES:
        assert name in resnetzoo.__all__
        constructor = getattr(resnetzoo, name)
        assert constructor.__name__ == name and resnetzoo.registry.is_model(name)
        assert constructor.__doc__.startswith(ARCHITECTURES[name].summary)
    built_in = [name for name in resnetzoo.list_models() if name in ARCHITECTURES]  # other tests register more
    assert built_in == sorted(ARCHITECTURES, key=resnetzoo.registry.natural_key)


def test_every_export_resolves_and_unknown_names_raise_attribute_error():
    for name in resnetzoo.__all__:
        assert getattr(resnetzoo, name) is not None
    assert resnetzoo.weights.get_weights("resnet50").tag == "tv_in1k"  # subpackages as attributes
    assert {"resnet50", "weights", "load_weights"} <= set(dir(resnetzoo))
    with pytest.raises(AttributeError, match="no attribute 'resnet51'"):
        resnetzoo.resnet51  # noqa: B018


@pytest.mark.parametrize("package", [resnetzoo, resnetzoo.weights], ids=["resnetzoo", "resnetzoo.weights"])
def test_type_checking_imports_match_the_export_table(package):
    # What IDEs and type checkers see must be what the lazy table serves.
    tree = ast.parse(Path(package.__file__).read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    seen: dict[str, str] = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom)
        for alias in node.names:
            if alias.name == "*":
                seen.update(dict.fromkeys(ARCHITECTURES, node.module))
            else:
                seen[alias.name] = node.module
    assert seen == package._EXPORTS


def test_architecture_table_builds_what_it_says():
    with torch.device("meta"):
        model = resnetzoo.resnext101_32x8d()
    spec = ARCHITECTURES["resnext101_32x8d"]
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == list(spec.layers)
    assert model.layer1[0].conv2.groups == 32 and model.arch == "resnext101_32x8d"


# ------------------------------------------------------------------------- pretrained=
@pytest.mark.parametrize("value", [False, None, "none", "None", " none "])
def test_no_weights(value):
    assert pretrained_source("resnet50", value) is None


@pytest.mark.parametrize("value", [True, "tv_in1k", "resnet50.tv_in1k"])
def test_default_tag_and_full_name_mean_the_same_record(value):
    spec = pretrained_source("resnet50", value)
    assert isinstance(spec, WeightSpec) and spec.name == "resnet50.tv_in1k"


@pytest.mark.parametrize(
    "value",
    ["hf-hub:timm/resnet50.a1_in1k", "https://example.org/r50.pth", "weights/r50.pth", "r50.safetensors", "~/r.pt"],
)
def test_sources_are_passed_on_to_read_source(value):
    assert pretrained_source("resnet50", value) == value


def test_an_existing_file_wins_over_a_non_tag(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_weights").write_bytes(b"")
    assert pretrained_source("resnet50", "my_weights") == "my_weights"
    assert pretrained_source("resnet50", Path("my_weights")) == Path("my_weights")


def test_wrong_forms_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="names weights of resnet18, but the model is resnet50"):
        pretrained_source("resnet50", "resnet18.tv_in1k")
    with pytest.raises(ValueError, match="known tags: .*checkpoint path"):
        pretrained_source("resnet50", "no_such_tag")
    with pytest.raises(TypeError, match="pretrained must be"):
        pretrained_source("resnet50", 1)


def test_a_checkpoint_path_loads_through_the_constructor(tmp_path, caplog):
    source = resnetzoo.resnet18(num_classes=7).eval()
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    with caplog.at_level(logging.INFO, logger="resnetzoo"):
        model = resnetzoo.resnet18(pretrained=str(path), num_classes=7).eval()
        other_head = resnetzoo.create_model("resnet18", pretrained=path, num_classes=3)
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(model(x), source(x))
    assert model.load_report.ok and str(path) in model.load_report.origin
    assert other_head.load_report.head_mismatch and torch.equal(other_head.conv1.weight, source.conv1.weight)


def test_a_named_tag_without_pretrained_warns_that_weights_are_random(caplog):
    with caplog.at_level(logging.WARNING, logger="resnetzoo"), torch.device("meta"):
        resnetzoo.create_model("resnet50.a1_in1k")
    assert "random weights" in caplog.text and "pretrained=True" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="resnetzoo"), torch.device("meta"):
        resnetzoo.create_model("resnet50.a1_in1k", pretrained="none")
    assert caplog.text == ""
