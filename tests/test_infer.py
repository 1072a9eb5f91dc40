"""Architecture inference from names and shapes, and its answers to bad input.

Shapes only: every model here is built on the meta device, so nothing is allocated.
"""

from __future__ import annotations

import time

import pytest
import timm
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

import resnetzoo
from resnetzoo.architectures import ARCHITECTURES
from resnetzoo.errors import ArchitectureError
from resnetzoo.infer import block_counts, guess_arch, infer_architecture, is_resnet_key


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _meta(build, *args, **kwargs):
    with torch.device("meta"):
        return build(*args, **kwargs)


# ------------------------------------------------------------------ what is inferred
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_named_architecture_is_recognised(name):
    inferred = infer_architecture(_shapes(_meta(resnetzoo.create_model, name)))
    assert inferred.name == name and inferred.call() == f"resnetzoo.{name}()"
    assert guess_arch(_shapes(_meta(resnetzoo.create_model, name, num_classes=0))) == name


@given(
    block=st.sampled_from(["basic", "bottleneck"]),
    layers=st.lists(st.integers(1, 3), min_size=1, max_size=4),
    base=st.sampled_from([8, 16]),
    stem=st.sampled_from(["classic", "deep"]),
    shortcut=st.sampled_from(["conv", "avgpool"]),
    grouped=st.booleans(),
    in_chans=st.integers(1, 5),
    num_classes=st.sampled_from([0, 1, 7]),
    norm=st.sampled_from(["batchnorm", "groupnorm"]),
)
@settings(max_examples=40, deadline=None)
def test_inference_rebuilds_any_resnet(block, layers, base, stem, shortcut, grouped, in_chans, num_classes, norm):
    kwargs = dict(
        layers=tuple(layers), block=block, widths=tuple(base * 2**i for i in range(len(layers))), stem=stem,
        stem_width=2 * base, shortcut=shortcut, in_chans=in_chans, num_classes=num_classes, norm=norm,
        groups=4 if grouped and block == "bottleneck" else 1, width_per_group=16 if grouped and block == "bottleneck" else 64,
    )  # fmt: skip
    original = _meta(resnetzoo.ResNet, **kwargs)
    inferred = infer_architecture(_shapes(original))
    rebuilt = _meta(resnetzoo.ResNet, **inferred.kwargs())
    assert _shapes(rebuilt) == _shapes(original)
    # The printed constructor call builds the same network.
    namespace = {"resnetzoo": resnetzoo, "functools": __import__("functools")}
    from_call = _meta(eval, inferred.call(), namespace)
    assert _shapes(from_call) == _shapes(original)
    assert inferred.layers == tuple(layers) and inferred.in_chans == in_chans and inferred.num_classes == num_classes
    assert inferred.norm == norm


def test_named_architecture_with_other_sizes_keeps_its_name():
    inferred = infer_architecture(_shapes(_meta(timm.create_model, "resnet50d", num_classes=37, in_chans=4)))
    assert inferred.call() == "resnetzoo.resnet50d(num_classes=37, in_chans=4)"
    assert inferred.kwargs()["arch"] == "resnet50d"


def test_deep_stem_with_a_wide_middle_gets_an_explicit_stem():
    # timm's resnet50s: three 3x3 convs of 64, 64, 128 channels.
    inferred = infer_architecture(_shapes(_meta(timm.create_model, "resnet50s")))
    assert inferred.stem_width == 128 and inferred.stem_mid == 64 and inferred.name is None
    custom = resnetzoo.ResNet(layers=(1,), widths=(8,), stem="deep", stem_width=16, block="basic")
    custom_mid = dict(_shapes(custom))
    custom_mid["conv1.0.weight"] = (12, 3, 3, 3)
    custom_mid["conv1.1.weight"] = custom_mid["conv1.1.bias"] = custom_mid["conv1.1.running_mean"] = (12,)
    custom_mid["conv1.1.running_var"] = (12,)
    custom_mid["conv1.3.weight"] = (12, 12, 3, 3)
    custom_mid["conv1.4.weight"] = custom_mid["conv1.4.bias"] = custom_mid["conv1.4.running_mean"] = (12,)
    custom_mid["conv1.4.running_var"] = (12,)
    custom_mid["conv1.6.weight"] = (16, 12, 3, 3)
    inferred = infer_architecture(custom_mid)
    assert "mid_chs=12" in inferred.call()
    assert _shapes(_meta(resnetzoo.ResNet, **inferred.kwargs())) == custom_mid


def test_zero_pad_shortcuts_are_recognised():
    original = _meta(resnetzoo.ResNet, layers=(1, 1), widths=(8, 16), stem_width=8, block="basic", shortcut="zero_pad")
    inferred = infer_architecture(_shapes(original))
    assert inferred.shortcut == "zero_pad" and any("option A" in n for n in inferred.notes)


def test_the_stride_placement_is_always_reported_for_bottlenecks():
    shapes = _shapes(_meta(resnetzoo.resnet50))
    default = infer_architecture(shapes).ambiguities[0]
    assert "v1 or v1.5" in default.what and default.choice.startswith("v1.5") and "stride_in_1x1=True" in default.alternative
    cases = {
        ("transformers-ResNetModel", "downsample_in_bottleneck", "true"): (True, "config.json"),
        ("transformers-ResNetModel", "downsample_in_bottleneck", "false"): (False, "config.json"),
        ("mmpretrain", "style", "caffe"): (True, "style='caffe'"),
        ("mmpretrain", None, None): (False, "style='pytorch'"),
        ("detectron2", None, None): (True, "STRIDE_IN_1X1=True"),
        ("detectron2", "__author__", "torchvision"): (False, "converted from torchvision"),
        ("torchvision", "stride_in_1x1", "True"): (True, "stride_in_1x1=true"),
    }
    for (convention, key, value), (v1, why) in cases.items():
        inferred = infer_architecture(shapes, convention=convention, info={key: value} if key else {})
        assert inferred.stride_in_1x1 is v1 and why in inferred.ambiguities[0].why, (convention, key)
    assert infer_architecture(_shapes(_meta(resnetzoo.resnet18))).ambiguities == ()  # basic blocks: no question


def test_norms_without_statistics_are_an_ambiguity():
    shapes = _shapes(_meta(timm.create_model, "resnet50_gn"))
    inferred = infer_architecture(shapes)
    assert inferred.norm == "groupnorm"
    (norm,) = [a for a in inferred.ambiguities if "weight and bias only" in a.what]
    assert "parameters()" in norm.alternative
    d2 = infer_architecture(shapes, convention="detectron2")
    assert d2.norm == "frozen_bn" and any("folds the statistics" in a.why for a in d2.ambiguities)


def test_projection_and_empty_heads_are_left_out():
    shapes = _shapes(_meta(torchvision.models.resnet18))
    shapes.pop("fc.weight")
    shapes.pop("fc.bias")
    mlp = {**shapes, "fc.0.weight": (512, 512), "fc.0.bias": (512,), "fc.2.weight": (128, 512), "fc.2.bias": (128,)}
    inferred = infer_architecture(mlp)
    assert inferred.num_classes == 0 and set(inferred.left_out) == {k for k in mlp if k.startswith("fc.")}
    assert any("projection head (an MLP 512 → 512 → 128" in n for n in inferred.notes)
    empty = infer_architecture({**shapes, "fc.weight": (0, 512), "fc.bias": (0,)})
    assert empty.num_classes == 0 and empty.left_out == ("fc.weight", "fc.bias")
    assert any("0 classes" in n for n in empty.notes)


def test_a_claimed_arch_that_disagrees_is_noted():
    inferred = infer_architecture(_shapes(_meta(resnetzoo.resnet34)), info={"arch": "resnet50"})
    assert any("arch='resnet50'" in n and "resnet34" in n for n in inferred.notes)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: timm.create_model("vit_tiny_patch16_224"), "this is not a ResNet: its keys look like a Vision Transformer"),
        (lambda: timm.create_model("efficientnet_b0"), "this is not a ResNet: its keys look like an EfficientNet"),
        (lambda: torchvision.models.mobilenet_v3_small(), "this is not a ResNet: its keys look like a MobileNet"),
        (lambda: timm.create_model("resnetv2_50"), "this is not a ResNet: its keys look like a ResNet v2"),
        (lambda: timm.create_model("seresnet50"), "have no place in a ResNet: layer1.0.se.fc1.weight"),
        (lambda: timm.create_model("resnet10t"), "'tiered' stem"),
    ],
    ids=["vit", "efficientnet", "mobilenet", "resnetv2", "se-resnet", "tiered-stem"],
)
def test_other_networks_are_named_not_guessed(build, expected):
    with pytest.raises(ArchitectureError) as info:
        infer_architecture(_shapes(_meta(build)))
    assert expected in str(info.value)


def test_a_missing_stage_or_block_is_a_truncated_file():
    shapes = _shapes(_meta(resnetzoo.resnet50))
    without_stage = {k: v for k, v in shapes.items() if not k.startswith("layer3.")}
    with pytest.raises(ArchitectureError, match=r"stage layer3 is missing \(the checkpoint has layer1, layer2, layer4\)"):
        infer_architecture(without_stage)
    without_block = {k: v for k, v in shapes.items() if not k.startswith("layer3.2.")}
    with pytest.raises(ArchitectureError, match="block layer3.2 is missing"):
        infer_architecture(without_block)
    without_conv = {k: v for k, v in shapes.items() if not k.startswith("layer2.1.conv3")}
    with pytest.raises(ArchitectureError, match=r"block layer2.1 is incomplete \(conv3 missing\)"):
        infer_architecture(without_conv)
    without_norm = {k: v for k, v in shapes.items() if not k.startswith("layer4.2.bn1.")}
    with pytest.raises(ArchitectureError, match=r"block layer4.2 is incomplete \(bn1 missing\)"):
        infer_architecture(without_norm)
    without_shortcut = {k: v for k, v in shapes.items() if not k.startswith("layer3.0.downsample")}
    with pytest.raises(ArchitectureError, match="layer3.0 has no shortcut projection"):
        infer_architecture(without_shortcut)
    without_stem = {k: v for k, v in shapes.items() if not k.startswith(("conv1", "bn1"))}
    with pytest.raises(ArchitectureError, match="there is no stem"):
        infer_architecture(without_stem)


def test_norms_of_two_kinds_and_biased_convs_are_refused():
    shapes = _shapes(_meta(resnetzoo.resnet18))
    shapes.pop("layer1.0.bn1.running_mean")
    shapes.pop("layer1.0.bn1.running_var")
    with pytest.raises(ArchitectureError, match="layer1.0.bn1 lack the running statistics"):
        infer_architecture(shapes)
    assert guess_arch(shapes) == "resnet18"  # still recognisably a resnet18, for hints
    biased = {**_shapes(_meta(resnetzoo.resnet18)), "conv1.bias": (64,)}
    with pytest.raises(ArchitectureError, match="convolutions with a bias"):
        infer_architecture(biased)
    cifar = {**_shapes(_meta(resnetzoo.resnet18)), "conv1.weight": (64, 3, 3, 3)}
    with pytest.raises(ArchitectureError, match="conv1 is 3x3"):
        infer_architecture(cifar)


def test_hostile_numbers_cost_nothing():
    shapes = _shapes(_meta(resnetzoo.resnet18))
    start = time.perf_counter()
    with pytest.raises(ArchitectureError, match="layer5 is missing"):
        infer_architecture({**shapes, "layer999999.0.conv1.weight": (1, 1, 1, 1)})
    # No real stage has such a number: a stray key beside the network, left to the report.
    stray = infer_architecture({**shapes, "layer100000000.0.conv1.weight": (1, 1, 1, 1)})
    assert stray.name == "resnet18" and "not part of the network built: layer100000000.0.conv1.weight" in stray.notes[0]
    assert block_counts({"layer100000000.0.x": 0, "layer99.99999999.y": 0}) == ()
    huge = "9" * 5000  # int() of it would raise ValueError (Python's digit limit)
    inferred = infer_architecture({**_shapes(_meta(resnetzoo.resnet18)), f"layer{huge}.0.conv1.weight": (1, 1, 3, 3)})
    assert "not part of the network built: layer999" in inferred.notes[0]
    assert len(inferred.notes[0]) < 500  # the key is shortened, not printed whole
    assert block_counts({f"layer1.{huge}.conv1.weight": 0}) == ()
    assert guess_arch({"layer100000000.100000000.conv1.weight": (1, 1, 3, 3)}) is None
    assert time.perf_counter() - start < 1.0


def test_empty_and_non_resnet_keys():
    with pytest.raises(ArchitectureError, match="it holds no tensors"):
        infer_architecture({})
    with pytest.raises(ArchitectureError, match="its keys look like: encoder.weight"):
        infer_architecture({"encoder.weight": (3, 3), "decoder.weight": (3, 3)})


def test_is_resnet_key_checks_names_and_ranks():
    assert is_resnet_key("layer2.0.downsample.1.running_mean", (128,))
    assert is_resnet_key("conv1.0.weight", (32, 3, 3, 3)) and is_resnet_key("conv1.1.weight", (32,))
    assert not is_resnet_key("layer2.0.conv1.weight", (128,))  # a conv weight must be 4-d
    assert not is_resnet_key("fc.weight", (10,)) and not is_resnet_key("blocks.0.attn.qkv.weight", (3, 3))


def test_report_and_json_forms():
    inferred = infer_architecture(_shapes(_meta(resnetzoo.resnext50_32x4d, num_classes=10)))
    text = str(inferred)
    assert text.splitlines()[0] == "Architecture: resnetzoo.resnext50_32x4d(num_classes=10)"
    assert "ambiguous   v1 or v1.5" in text
    data = inferred.to_dict()
    assert data["groups"] == 32 and data["width_per_group"] == 4 and data["ambiguous"][0]["choice"].startswith("v1.5")
