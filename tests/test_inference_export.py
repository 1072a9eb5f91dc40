"""resnetzoo.export: parity over the shape sweep, symbolic dimensions, metadata, and every refusal."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from resnetzoo import BasicBlock, ResNet
from resnetzoo.errors import ExportError, MissingDependencyError
from resnetzoo.inference import (
    ExportReport,
    Preprocessing,
    export_format,
    exporter,
    optimize_for_inference,
    read_export_metadata,
    recipe_metadata,
)
from resnetzoo.inference import export as export_model

TINY = {"layers": (1, 1, 1, 1), "widths": (8, 16, 32, 64), "stem_width": 8, "num_classes": 10}
MODELS = {
    "basic": {"block": "basic"},
    "bottleneck": {"block": "bottleneck"},
    "resnet-d": {"block": "bottleneck", "stem": "deep", "shortcut": "avgpool"},
}
SMALL_SWEEP = [(1, 64, 64), (3, 65, 80)]


def _model(randomize, kind: str) -> nn.Module:
    return randomize(ResNet(**TINY, **MODELS[kind])).eval()


def _assert_verified(report: ExportReport, path: Path, shapes) -> None:
    assert report.ok and report.path == path and path.is_file()
    assert [(c.batch, c.height, c.width) for c in report.checks] == list(shapes)
    assert all(c.ok and c.max_rel <= 1e-4 for c in report.checks), str(report)
    assert [(d.name, d.symbolic) for d in report.dimensions] == [("batch", True), ("height", True), ("width", True)]
    assert not any(p.name.startswith(".") for p in path.parent.iterdir())  # no staging file left


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(MODELS))
def test_onnx_export_matches_eager_over_the_sweep(tmp_path, randomize, kind):
    pytest.importorskip("onnxruntime")
    model = _model(randomize, kind)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "model.onnx"
    names = [f"class {i}" for i in range(10)]
    report = export_model(model, path, class_names=names)
    _assert_verified(report, path, exporter.DEFAULT_SWEEP)
    assert {(c.batch, c.height, c.width) for c in report.checks} >= {(17, 321, 479), (1, 225, 225), (3, 448, 448)}
    # The sizes any ResNet accepts are not narrowed: no guard rejects a height or width.
    assert all(d.minimum <= 1 and d.maximum is None and d.rejected == "" for d in report.dimensions)
    meta = read_export_metadata(path)
    assert meta == report.metadata and meta.class_names == tuple(names) and meta.num_classes == 10
    assert meta.preprocessing == Preprocessing() and meta.output_names == ("logits",)
    # onnxruntime users read the same JSON, and the graph names its dynamic axes.
    import onnx
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map["resnetzoo"] == meta.to_json()
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]
    assert model.training is False and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


@pytest.mark.slow
def test_pt2_export_of_a_resnet_d_matches_eager_over_the_sweep(tmp_path, randomize):
    model = _model(randomize, "resnet-d")
    path = tmp_path / "model.pt2"
    report = export_model(model, path, format="pt2", preprocessing=Preprocessing(mean=(0.5,) * 3, std=(0.25,) * 3))
    _assert_verified(report, path, exporter.DEFAULT_SWEEP)
    # torch keeps guards of the ceil-mode average pool on height and width, but none rejects a size.
    assert all(d.rejected == "" for d in report.dimensions)
    assert read_export_metadata(path).preprocessing.std == (0.25, 0.25, 0.25)
    program = torch.export.load(path).module()
    x = torch.randn(2, 3, 40, 52)
    with torch.no_grad():
        torch.testing.assert_close(program(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_an_optimised_model_exports_with_ordinary_convolutions(tmp_path, randomize):
    pytest.importorskip("onnxruntime")
    fast = optimize_for_inference(_model(randomize, "bottleneck"))
    report = export_model(fast, tmp_path / "fast.onnx", check_shapes=SMALL_SWEEP)
    _assert_verified(report, tmp_path / "fast.onnx", SMALL_SWEEP)
    import onnx

    ops = {node.op_type for node in onnx.load(str(tmp_path / "fast.onnx")).graph.node}
    assert "Conv" in ops and "BatchNormalization" not in ops  # folded, and no private oneDNN op leaked in


def test_a_failed_verification_writes_nothing(tmp_path, randomize, monkeypatch):
    model = _model(randomize, "basic")
    path = tmp_path / "model.pt2"

    def broken(program, tmp, meta):  # an artefact that computes something else
        written, run = real(program, tmp, meta)
        return written, lambda x: [2 * y for y in run(x)]

    real = exporter._write_pt2
    monkeypatch.setattr(exporter, "_write_pt2", broken)
    with pytest.raises(ExportError, match="not written") as err:
        export_model(model, path, format="pt2", check_shapes=[(1, 64, 64)])
    assert not err.value.report.ok and err.value.report.checks[0].max_rel > 0.1
    assert "metadata: 10 classes (outputs; no class names)" in str(err.value.report)
    assert list(tmp_path.iterdir()) == []


def test_guards_that_narrow_a_dimension_are_reported():
    guard = "(1 + (((-1) + L['x'].size()[2]) // 32)) != 1"
    assert exporter._rejected([guard], (2, 3, 224, 224), 2) == "1-32"
    pool = "2*(((-1) + L['x'].size()[2]) // 8) < 1 + (((-1) + L['x'].size()[2]) // 4)"
    assert exporter._rejected([pool], (2, 3, 224, 224), 2) == ""


class DataDependentBlock(BasicBlock):
    """A block whose forward branches on tensor values: torch.export cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out if out.sum() > 0 else -out


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"train": True}, ValueError, r"training mode; call model.eval\(\) first"),
        ({"format": "tflite"}, ValueError, "format must be one of 'onnx', 'pt2'"),
        ({"class_names": ["a", "b"]}, ValueError, "class_names has 2 names but the model has 10 classes"),
        ({"tolerance": 0}, ValueError, "tolerance must be a number"),
        ({"check_shapes": [(1, 64)]}, ValueError, "check_shapes must be"),
        ({"bf16": True}, ValueError, "export a float32 model"),
        ({"preprocessing": Preprocessing(input_size=(1, 224, 224), mean=(0.5,), std=(0.5,))}, ValueError,
         "model takes 3 channels"),
    ],
)
def test_bad_input_gets_one_clear_line(tmp_path, change, error, match):
    model = ResNet(**TINY, block="basic").eval()
    if change.pop("train", False):
        model.train()
    if change.pop("bf16", False):
        model = optimize_for_inference(model, dtype=torch.bfloat16)
    with pytest.raises(error, match=match):
        export_model(model, tmp_path / "m.pt2", **{"format": "pt2", **change})
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_never_overwritten_without_asking(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_model(ResNet(**TINY, block="basic").eval(), path)
    assert path.read_bytes() == b"mine"


def test_a_missing_extra_is_named(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'resnetzoo\[export\]'"):
        export_model(ResNet(**TINY, block="basic").eval(), tmp_path / "m.onnx")


def test_a_block_that_cannot_trace_is_named(tmp_path):
    model = ResNet(**TINY, block=DataDependentBlock).eval()
    with pytest.raises(ExportError, match=r"could not trace DataDependentBlock at 'layer1.0'.*traceable"):
        export_model(model, tmp_path / "m.pt2", format="pt2")
    assert list(tmp_path.iterdir()) == []


def test_metadata_of_a_file_without_it_is_refused(tmp_path):
    plain = tmp_path / "plain.pt2"
    program = torch.export.export(nn.Conv2d(3, 4, 3).eval(), (torch.randn(1, 3, 8, 8),))
    torch.export.save(program, plain)
    with pytest.raises(ValueError, match="holds no resnetzoo metadata"):
        read_export_metadata(plain)
    with pytest.raises(FileNotFoundError):
        read_export_metadata(tmp_path / "missing.onnx")


@pytest.mark.slow
def test_cli_exports_a_recipe_checkpoint_with_its_classes_and_normalisation(tmp_path, monkeypatch, capsys):
    from resnetzoo.cli import main
    from resnetzoo.remap import save_weights

    monkeypatch.setattr(exporter, "DEFAULT_SWEEP", ((1, 64, 64),))
    model = ResNet(**{**TINY, "num_classes": 3}, block="basic", arch="resnet18").eval()
    classes = ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross"]
    checkpoint = tmp_path / "best.safetensors"
    save_weights(model, checkpoint, metadata={
        "classes": json.dumps(classes), "mean": json.dumps([0.5, 0.4, 0.3]), "std": json.dumps([0.2, 0.2, 0.2]),
        "img_size": "448", "resize": "512", "resize_mode": "square"})
    monkeypatch.setattr("resnetzoo.registry.create_model",
                        lambda arch, **kw: ResNet(**{**TINY, **kw}, block="basic", arch=arch))
    out = tmp_path / "birds.pt2"
    assert main(["export", str(checkpoint), str(out), "--arch", "resnet18"]) == 0
    assert "verified pt2 export of resnet18" in capsys.readouterr().out
    meta = read_export_metadata(out)
    assert meta.class_names == tuple(classes) and meta.architecture == "resnet18"
    assert meta.preprocessing == Preprocessing(input_size=(3, 448, 448), mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2),
                                               resize_size=512, crop_pct=448 / 512, resize_mode="square")
    assert main(["export", str(checkpoint), str(out), "--arch", "resnet18"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["export", str(checkpoint), str(tmp_path / "birds.tflite"), "--arch", "resnet18"]) == 2
    assert "name it .onnx or .pt2" in capsys.readouterr().err


def test_the_format_follows_the_suffix_and_a_contradiction_is_refused(tmp_path):
    model = ResNet(**TINY, block="basic").eval()
    report = export_model(model, tmp_path / "m.pt2", check_shapes=[(1, 32, 32)])  # no format=: the suffix says pt2
    assert report.format == "pt2"
    program = torch.export.load(tmp_path / "m.pt2").module()  # a real program, not an ONNX file named .pt2
    with torch.no_grad():
        torch.testing.assert_close(program(torch.ones(1, 3, 32, 32)), model(torch.ones(1, 3, 32, 32)))
    assert [export_format(name) for name in ("a.onnx", "b.ONNX", "c.pt2")] == ["onnx", "onnx", "pt2"]
    assert export_format("model.bin", format="pt2") == "pt2"  # a suffix that names no format: the format decides
    for name, fmt, match in [("x.pt2", "onnx", r"the suffix of 'x.pt2' says pt2, but the format asked for is onnx; "
                                                r"name it x.onnx, or leave the format out to write pt2"),
                             ("x.ONNX", "pt2", "the suffix of 'x.ONNX' says onnx, but the format asked for is pt2"),
                             ("x.tflite", None, r"cannot tell the export format from 'x.tflite'; name it .onnx"),
                             ("x", None, "cannot tell the export format")]:
        with pytest.raises(ValueError, match=match):
            export_model(model, tmp_path / name, format=fmt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt2"]


def _recipe_checkpoint(path: Path, model: nn.Module, classes: list[str]) -> None:
    """``checkpoint.pt`` as ``recipes.finetune.engine.Run._checkpoint_state`` and ``save_checkpoint`` write it."""
    from resnetzoo.recipes.finetune.checkpoints import CHECKPOINT_FORMAT, save_checkpoint
    from resnetzoo.recipes.finetune.config import FinetuneConfig

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    config = FinetuneConfig.for_synthetic(img_size=64, resize=73, resize_mode="square")
    save_checkpoint(path, {
        "format": CHECKPOINT_FORMAT, "epoch": 2, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": {}, "scaler": {}, "ema": None, "config": config.to_dict(), "classes": classes,
        "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2], "best": {"epoch": 1, "top1": 50.0}, "history": [],
        "settings_chosen": {}, "elapsed_s": 1.0,
    })


RECIPE_PREPROCESSING = Preprocessing(input_size=(3, 64, 64), mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2),
                                     resize_size=73, crop_pct=64 / 73, resize_mode="square")


def test_recipe_metadata_reads_the_training_checkpoint_and_the_safetensors_alike(tmp_path):
    from resnetzoo.remap import save_weights
    from resnetzoo.weights import read_source

    model = ResNet(**{**TINY, "num_classes": 3}, block="basic")
    classes = ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross"]
    _recipe_checkpoint(tmp_path / "checkpoint.pt", model, classes)
    save_weights(model, tmp_path / "best.safetensors", metadata={
        "classes": json.dumps(classes), "mean": json.dumps([0.5, 0.4, 0.3]), "std": json.dumps([0.2, 0.2, 0.2]),
        "img_size": "64", "resize": "73", "resize_mode": "square"})
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    expected = (tuple(classes), RECIPE_PREPROCESSING)
    assert recipe_metadata(read_source(tmp_path / "checkpoint.pt")) == expected
    assert recipe_metadata(read_source(tmp_path / "best.safetensors")) == expected
    assert recipe_metadata(read_source(tmp_path / "plain.pth")) == (None, None)


@pytest.mark.slow
def test_cli_exports_the_recipes_training_checkpoint_and_warns_where_nothing_is_saved(tmp_path, monkeypatch, capsys):
    from resnetzoo.cli import main

    monkeypatch.setattr(exporter, "DEFAULT_SWEEP", ((1, 64, 64),))
    monkeypatch.setattr("resnetzoo.registry.create_model",
                        lambda arch, **kw: ResNet(**{**TINY, **kw}, block="basic", arch=arch))
    model = ResNet(**{**TINY, "num_classes": 3}, block="basic", arch="resnet18").eval()
    classes = ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross"]
    _recipe_checkpoint(tmp_path / "checkpoint.pt", model, classes)
    assert main(["export", str(tmp_path / "checkpoint.pt"), str(tmp_path / "final.pt2"), "--arch", "resnet18"]) == 0
    assert "warning" not in capsys.readouterr().err
    meta = read_export_metadata(tmp_path / "final.pt2")
    assert meta.class_names == tuple(classes) and meta.preprocessing == RECIPE_PREPROCESSING

    torch.save(model.state_dict(), tmp_path / "plain.pth")  # says nothing of its classes or preprocessing
    assert main(["export", str(tmp_path / "plain.pth"), str(tmp_path / "plain.pt2"), "--arch", "resnet18"]) == 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "plain.pth says nothing of its preprocessing; the export's metadata falls back to ImageNet's " in err
    assert "without class names" in err and "preprocessing=Preprocessing(...)" in err
    assert read_export_metadata(tmp_path / "plain.pt2").preprocessing == Preprocessing()

    assert main(["export", str(tmp_path / "checkpoint.pt"), str(tmp_path / "x.pt2"), "--format", "onnx"]) == 2
    assert "the suffix of 'x.pt2' says pt2, but the format asked for is onnx" in capsys.readouterr().err
    assert not (tmp_path / "x.pt2").exists()


def test_metadata_comes_from_the_weight_record_when_the_head_is_the_records():
    from resnetzoo.weights import get_weights

    model = ResNet(**{**TINY, "num_classes": 1000}, block="basic", arch="resnet18").eval()
    model.weight_spec = get_weights("resnet18.tv_in1k")
    meta = exporter._metadata(model, class_names=None, preprocessing=None)
    assert meta.weights == "resnet18.tv_in1k" and len(meta.class_names) == 1000 and meta.class_names[0] == "tench"
    assert meta.preprocessing == Preprocessing.from_spec(model.weight_spec)
    model.reset_classifier(10)  # a new head: the record's classes no longer apply
    assert exporter._metadata(model, class_names=None, preprocessing=None).class_names is None
