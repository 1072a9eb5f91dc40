"""Conversion out: each export loads in the real library strictly, computes the same, and comes back bit-identical."""

from __future__ import annotations

import json

import pytest
import timm
import torch
import torch.nn as nn
import torchvision

import resnetzoo
from resnetzoo.errors import ExportError

transformers = pytest.importorskip("transformers")

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
SMALL = dict(layers=(1, 1, 1, 1))


def _out(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model.eval()(x)
    if hasattr(out, "logits"):
        return out.logits
    if hasattr(out, "pooler_output"):
        return out.pooler_output.flatten(1)
    return out


def _round_trip(original: resnetzoo.ResNet, library_state: dict[str, torch.Tensor], kwargs: dict) -> None:
    """The library's state dict loads back into resnetzoo strictly, every tensor bit-identical."""
    back = resnetzoo.ResNet(**kwargs)
    assert resnetzoo.load_weights(back, library_state).ok
    for key, tensor in original.state_dict().items():
        assert torch.equal(back.state_dict()[key], tensor), key


# ------------------------------------------------------------------ into the real libraries
@pytest.mark.parametrize(
    ("kwargs", "build"),
    [
        (dict(layers=(2, 2, 2, 2), block="basic"), lambda: torchvision.models.resnet18()),
        (
            dict(**SMALL, groups=4, width_per_group=16, num_classes=10),
            lambda: torchvision.models.resnet.ResNet(
                torchvision.models.resnet.Bottleneck, [1, 1, 1, 1], num_classes=10, groups=4, width_per_group=16
            ),
        ),
    ],
    ids=["resnet18", "resnext-small"],
)
def test_torchvision(kwargs, build, tmp_path, randomize):
    model = randomize(resnetzoo.ResNet(**kwargs))
    exported = resnetzoo.export_checkpoint(model, tmp_path / "tv.pth", to="torchvision")
    target = build()
    target.load_state_dict(torch.load(tmp_path / "tv.pth"), strict=True)
    torch.testing.assert_close(_out(target, X), _out(model, X), rtol=0, atol=1e-5)
    _round_trip(model, target.state_dict(), kwargs)
    assert "load_state_dict" in exported.load_with


@pytest.mark.parametrize(
    ("kwargs", "build", "in_chans"),
    [
        (dict(layers=(2, 2, 2, 2), block="basic", stem="deep", shortcut="avgpool"), lambda: timm.create_model("resnet18d"), 3),
        (
            dict(**SMALL, stem="deep", stem_width=128, in_chans=4, num_classes=0),
            lambda: timm.models.resnet.ResNet(
                block=timm.models.resnet.Bottleneck, layers=[1, 1, 1, 1], stem_width=64, stem_type="deep",
                in_chans=4, num_classes=0,
            ),
            4,
        ),
        (
            dict(**SMALL, norm="groupnorm", act="silu", num_classes=5),
            lambda: timm.models.resnet.ResNet(
                block=timm.models.resnet.Bottleneck, layers=[1, 1, 1, 1], norm_layer="groupnorm", act_layer="silu",
                num_classes=5,
            ),
            3,
        ),
    ],
    ids=["resnet18d", "deep-64-in4-headless", "groupnorm-silu"],
)  # fmt: skip
def test_timm(kwargs, build, in_chans, tmp_path, randomize):
    model = randomize(resnetzoo.ResNet(**kwargs))
    exported = resnetzoo.export_checkpoint(model, tmp_path / "timm.safetensors", to="timm")
    target = build()
    from safetensors.torch import load_file

    target.load_state_dict(load_file(str(tmp_path / "timm.safetensors")), strict=True)
    x = torch.randn(2, in_chans, 32, 32)
    torch.testing.assert_close(_out(target, x), _out(model, x), rtol=0, atol=1e-5)
    _round_trip(model, target.state_dict(), kwargs)
    assert exported.load_with.startswith("model = timm.")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(layers=(2, 2, 2, 2), block="basic", num_classes=10),
        dict(**SMALL, stride_in_1x1=True, num_classes=0, in_chans=1),
        dict(layers=(1, 2), widths=(16, 32), stem_width=16, num_classes=4),
    ],
    ids=["resnet18-10", "v1-headless-gray", "two-stages"],
)
def test_transformers(kwargs, tmp_path, randomize):
    model = randomize(resnetzoo.ResNet(**kwargs))
    exported = resnetzoo.export_checkpoint(model, tmp_path / "hf", to="transformers")
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["config.json", "model.safetensors"]
    cls = transformers.ResNetForImageClassification if model.num_classes else transformers.ResNetModel
    target, info = cls.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert target.config.downsample_in_bottleneck is bool(kwargs.get("stride_in_1x1"))
    x = torch.randn(2, model.in_chans, 32, 32)
    torch.testing.assert_close(_out(target, x), _out(model, x), rtol=0, atol=1e-5)
    _round_trip(model, target.state_dict(), kwargs)
    # The folder alone rebuilds the model, v1 included (its config.json says so).
    rebuilt, report = resnetzoo.create_model_from_checkpoint(tmp_path / "hf")
    assert report.ok and rebuilt.stride_in_1x1 is bool(kwargs.get("stride_in_1x1"))
    assert exported.convention.startswith("transformers-")


# mmpretrain is not installed: its documented names, written out independently of the rules.
def _mmpretrain_names(native: dict[str, torch.Tensor], *, deep: bool, v1d: bool) -> dict[str, torch.Tensor]:
    stem = {"conv1.0": "stem.0.conv", "conv1.1": "stem.0.bn", "conv1.3": "stem.1.conv",
            "conv1.4": "stem.1.bn", "conv1.6": "stem.2.conv", "bn1": "stem.2.bn"}  # fmt: skip
    out = {}
    for key, value in native.items():
        module, _, leaf = key.rpartition(".")
        if module == "fc":
            out[f"head.fc.{leaf}"] = value
            continue
        module = stem.get(module, module) if deep else module
        if v1d and module.startswith("layer1.0.downsample."):
            module = "layer1.0.downsample." + str(int(module.rsplit(".", 1)[1]) - 1)
        out[f"backbone.{module}.{leaf}"] = value
    return out


@pytest.mark.parametrize(
    ("kwargs", "backbone"),
    [
        (dict(layers=(3, 4, 6, 3), stride_in_1x1=True, num_classes=7), "type='ResNet', depth=50"),
        (dict(layers=(2, 2, 2, 2), block="basic", stem="deep", shortcut="avgpool"), "type='ResNetV1d', depth=18"),
        (dict(layers=(2, 2, 2, 2), block="basic", stem="deep", num_classes=0), "type='ResNetV1c', depth=18"),
        (dict(layers=(3, 4, 6, 3), groups=32, width_per_group=4, in_chans=1), "type='ResNeXt', depth=50"),
    ],
    ids=["resnet50-caffe", "v1d-18", "v1c-18-headless", "resnext50-gray"],
)
def test_mmpretrain(kwargs, backbone, tmp_path):
    model = resnetzoo.ResNet(**kwargs)
    exported = resnetzoo.export_checkpoint(model, tmp_path / "mm.pth", to="mmpretrain")
    checkpoint = torch.load(tmp_path / "mm.pth")
    deep, v1d = kwargs.get("stem") == "deep", kwargs.get("shortcut") == "avgpool"
    expected = _mmpretrain_names(model.state_dict(), deep=deep, v1d=v1d)
    assert checkpoint["state_dict"].keys() == expected.keys()
    assert all(torch.equal(checkpoint["state_dict"][k], v) for k, v in expected.items())
    assert backbone in checkpoint["meta"]["cfg"] and checkpoint["meta"]["cfg"].startswith("model = dict(type='ImageClassifier'")
    assert ("style='caffe'" in checkpoint["meta"]["cfg"]) is bool(kwargs.get("stride_in_1x1"))
    assert ("head=dict(type='LinearClsHead'" in checkpoint["meta"]["cfg"]) is bool(model.num_classes)
    rebuilt, report = resnetzoo.create_model_from_checkpoint(tmp_path / "mm.pth")  # and back, v1 from its style
    assert report.ok and rebuilt.stride_in_1x1 is bool(kwargs.get("stride_in_1x1"))
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in model.state_dict().items())
    assert exported.library == "mmpretrain"


# ------------------------------------------------------------------ what a library cannot express
@pytest.mark.parametrize(
    ("kwargs", "to", "reason"),
    [
        (dict(**SMALL, stem="deep"), "torchvision", "only the classic 7x7 stem, this model a deep stem: use timm"),
        (dict(**SMALL, shortcut="avgpool", stem="deep"), "transformers", "only strided 1x1 shortcuts"),
        (dict(**SMALL, norm="groupnorm"), "transformers", "BatchNorm only, this model GroupNorm"),
        (dict(**SMALL, groups=4, width_per_group=16), "transformers", "no grouped or widened bottlenecks"),
        (dict(**SMALL, in_chans=4), "torchvision", "takes 3 input channels, this model 4"),
        (dict(**SMALL, num_classes=0), "torchvision", "always has a classifier fc"),
        (dict(**SMALL, stride_in_1x1=True), "timm", "v1.5 (stride on the 3x3), this model v1"),
        (dict(**SMALL, act="silu"), "torchvision", "uses ReLU, this model silu"),
        (dict(**SMALL, act="silu"), "transformers", "ReLU inside the blocks, this model silu throughout"),
        (dict(**SMALL), "mmpretrain", "blocks of depth 18, 34, 50, 101 or 152 only"),
        (dict(layers=(2, 2, 2, 2), block="basic", shortcut="avgpool"), "mmpretrain", "only with the deep stem"),
        (dict(layers=(2, 2, 2, 2), block="basic", shortcut="zero_pad"), "timm", "no parameter-free"),
        (dict(**SMALL, act=nn.Mish), "timm", "this model's activation (Mish)"),
        # What no tensor shows, read from the model: a file without it would compute something else.
        (dict(**SMALL, block="basic", output_stride=16), "torchvision", "BasicBlock has no dilation"),
        (dict(**SMALL, output_stride=16), "transformers", "no dilated stages, this model dilates"),
        (dict(layers=(3, 4, 6, 3), output_stride=8), "mmpretrain", "no dilated stages"),
        (dict(**SMALL, replace_stride_with_dilation=(True, False, False)), "timm", "dilates only the last stages"),
        (dict(**SMALL, global_pool="max"), "torchvision", "average-pools before its classifier, this model global_pool='max'"),
        (dict(**SMALL, global_pool="avgmax"), "transformers", "this model global_pool='avgmax'"),
        (dict(layers=(3, 4, 6, 3), global_pool="max"), "mmpretrain", "global_pool='max'"),
    ],
)
def test_refused_with_the_reason(kwargs, to, reason, tmp_path):
    with torch.device("meta"):
        model = resnetzoo.ResNet(**kwargs)
    with pytest.raises(ExportError) as info:
        resnetzoo.export_state_dict(model, to)
    assert f" for {to}: " in str(info.value) and reason in str(info.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("kwargs", "build"),
    [
        (
            dict(layers=(1, 1, 2, 2), output_stride=16, global_pool="max", num_classes=5),
            lambda: timm.models.resnet.ResNet(
                block=timm.models.resnet.Bottleneck, layers=[1, 1, 2, 2], num_classes=5, output_stride=16, global_pool="max"
            ),
        ),
        (
            dict(layers=(1, 1, 2, 2), block="basic", output_stride=8, global_pool="catavgmax", num_classes=3),
            lambda: timm.models.resnet.ResNet(
                block=timm.models.resnet.BasicBlock, layers=[1, 1, 2, 2], num_classes=3, output_stride=8,
                global_pool="catavgmax",
            ),
        ),
    ],
    ids=["os16-max", "os8-catavgmax"],
)  # fmt: skip
def test_dilation_and_pooling_are_carried_to_timm(kwargs, build, tmp_path, randomize):
    model = randomize(resnetzoo.ResNet(**kwargs))
    exported = resnetzoo.export_checkpoint(model, tmp_path / "timm.pth", to="timm")
    assert f"output_stride={kwargs['output_stride']}" in exported.load_with
    assert f"global_pool='{kwargs['global_pool']}'" in exported.load_with
    target = build()
    target.load_state_dict(torch.load(tmp_path / "timm.pth"), strict=True)
    torch.testing.assert_close(_out(target, X), _out(model, X), rtol=0, atol=1e-5)


def test_dilation_is_carried_to_torchvision(tmp_path, randomize):
    model = randomize(resnetzoo.ResNet(layers=(1, 2, 2, 2), replace_stride_with_dilation=(False, True, True)))
    exported = resnetzoo.export_checkpoint(model, tmp_path / "tv.pth", to="torchvision")
    assert "replace_stride_with_dilation=[False, True, True]" in exported.load_with
    target = torchvision.models.resnet.ResNet(
        torchvision.models.resnet.Bottleneck, [1, 2, 2, 2], replace_stride_with_dilation=[False, True, True]
    )
    target.load_state_dict(torch.load(tmp_path / "tv.pth"), strict=True)
    torch.testing.assert_close(_out(target, X), _out(model, X), rtol=0, atol=1e-5)


def test_a_state_dict_says_what_could_not_be_checked(tmp_path):
    sd = resnetzoo.ResNet(**SMALL, output_stride=16).state_dict()  # the dilation leaves no trace in it
    exported = resnetzoo.export_checkpoint(sd, tmp_path / "timm.pth", to="timm")
    assert any("could not be checked" in note and "output stride 32" in note for note in exported.notes)


def test_state_dicts_of_any_convention_convert(randomize):
    hf = randomize(transformers.ResNetForImageClassification(
        transformers.ResNetConfig(layer_type="basic", depths=[1, 1, 1, 1], hidden_sizes=[64, 128, 256, 512], num_labels=3)
    )).eval()  # fmt: skip
    timm_sd = resnetzoo.export_state_dict(hf.state_dict(), "timm")
    target = timm.models.resnet.ResNet(block=timm.models.resnet.BasicBlock, layers=[1, 1, 1, 1], num_classes=3)
    target.load_state_dict(timm_sd, strict=True)
    torch.testing.assert_close(_out(target, X), _out(hf, X), rtol=0, atol=1e-5)
    # A MoCo-style projection head is not part of the network: left out.
    sd = resnetzoo.ResNet(layers=(2, 2, 2, 2), block="basic", num_classes=0).state_dict()
    sd.update({"fc.0.weight": torch.zeros(8, 512), "fc.0.bias": torch.zeros(8), "fc.2.weight": torch.zeros(4, 8), "fc.2.bias": torch.zeros(4)})
    assert not any(k.startswith("fc") for k in resnetzoo.export_state_dict({"state_dict": sd}, "timm"))
    assert resnetzoo.export_state_dict(sd, "transformers-ResNetModel")
    # A stray tensor beside the network is noted and not written.
    assert "criterion.weight" not in resnetzoo.export_state_dict({**sd, "criterion.weight": torch.ones(3)}, "timm")
    with pytest.raises(ExportError, match="written in the transformers-ResNetModel convention"):
        resnetzoo.export_state_dict(sd, "transformers-ResNetForImageClassification")
    with pytest.raises(ValueError, match="resnetzoo writes torchvision, timm, transformers, mmpretrain"):
        resnetzoo.export_state_dict(sd, "caffe2")


def test_never_overwrites_without_permission(tmp_path):
    model = resnetzoo.ResNet(layers=(2, 2, 2, 2), block="basic")
    path = tmp_path / "mine.pth"
    path.write_bytes(b"user data")
    with pytest.raises(FileExistsError, match="overwrite"):
        resnetzoo.export_checkpoint(model, path, to="timm")
    assert path.read_bytes() == b"user data"
    resnetzoo.export_checkpoint(model, path, to="timm", overwrite=True)
    assert torch.load(path).keys() == model.state_dict().keys()
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="config.json"):
        resnetzoo.export_checkpoint(model, tmp_path / "hf", to="transformers")
    assert (tmp_path / "hf" / "config.json").read_text() == "{}"
    resnetzoo.export_checkpoint(model, tmp_path / "hf", to="transformers", overwrite=True)
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["layer_type"] == "basic"
    with pytest.raises(ValueError, match=r"\.pth or \.safetensors"):
        resnetzoo.export_checkpoint(model, tmp_path / "model.txt", to="torchvision")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "mine.pth"]  # no temporary file left


def test_imagenet_labels_go_into_the_config(tmp_path):
    model = resnetzoo.resnet18()
    model.weight_spec = resnetzoo.get_weights("resnet18")
    resnetzoo.export_checkpoint(model, tmp_path / "hf", to="transformers")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["id2label"]["0"] == "tench" and len(config["label2id"]) == 1000


@pytest.mark.parametrize("to", ["resnetzoo", "timm", "transformers"])
def test_convert_never_creates_a_mistyped_folder(to, tmp_path, capsys):
    from resnetzoo.cli import main

    source = tmp_path / "r18.pth"
    torch.save(resnetzoo.ResNet(layers=(1, 1), widths=(8, 16), stem_width=8, block="basic").state_dict(), source)
    out = tmp_path / "typo" / "deeper" / {"transformers": "hf", "resnetzoo": "out.safetensors"}.get(to, "out.pth")
    assert main(["convert", str(source), str(out), "--to", to]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and str(tmp_path / "typo" / "deeper") in err
    assert not (tmp_path / "typo").exists()
