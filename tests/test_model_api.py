"""The model interface: heads, features, dilation, checkpointing, registry, export, errors."""

from __future__ import annotations

import copy
import functools
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import resnetzoo
from resnetzoo import ResNet

TINY = {"layers": (1, 1, 1, 1), "widths": (8, 16, 32, 64), "stem_width": 8}


def tiny(**kwargs) -> ResNet:
    return ResNet(**{**TINY, "block": "basic", "num_classes": 5, **kwargs})


def test_forward_features_head_and_pre_logits():
    model = tiny().eval()
    x = torch.randn(2, 3, 64, 64)
    feats = model.forward_features(x)
    assert feats.shape == (2, 64, 2, 2)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    torch.testing.assert_close(model.forward_head(feats), model(x))


def test_reset_classifier_and_num_classes_zero():
    model = tiny().eval()
    assert model.get_classifier() is model.fc and model.get_classifier(name_only=True) == "fc"
    model.reset_classifier(7)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 64)
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(-1)


@pytest.mark.parametrize(("pool", "width"), [("avg", 64), ("max", 64), ("avgmax", 64), ("catavgmax", 128)])
def test_global_pool_types_set_the_head_width(pool, width):
    x = torch.randn(2, 3, 32, 32)
    model = tiny(global_pool=pool).eval()
    assert model.head_hidden_size == width and model.fc.in_features == width
    feats = model.forward_features(x)
    pooled = model.forward_head(feats, pre_logits=True)
    avg, top = feats.mean((2, 3)), feats.amax((2, 3))
    expected = {"avg": avg, "max": top, "avgmax": (avg + top) / 2, "catavgmax": torch.cat([avg, top], 1)}[pool]
    torch.testing.assert_close(pooled, expected)


def test_reset_classifier_keeps_or_changes_the_pooling_as_timm():
    model = tiny(global_pool="max").eval()
    model.reset_classifier(3)
    assert model.global_pool.pool_type == "max" and model.head_hidden_size == 64
    model.reset_classifier(3, "catavgmax")
    assert model.fc.in_features == model.head_hidden_size == 128
    model.reset_classifier(0, "")
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 64, 1, 1)  # the unpooled map
    # A classifier needs pooled features: with no pooling kept, the head pools by average.
    model.reset_classifier(4)
    assert model.global_pool.pool_type == "avg" and model(torch.randn(1, 3, 32, 32)).shape == (1, 4)
    with pytest.raises(ValueError, match="needs num_classes=0"):
        model.reset_classifier(4, "")
    with pytest.raises(ValueError, match="needs num_classes=0"):
        tiny(global_pool="")
    with pytest.raises(ValueError, match="unknown global_pool 'mean'"):
        tiny(global_pool="mean")


def test_reset_classifier_follows_the_model_device_dtype_and_mode():
    model = tiny().to(dtype=torch.float64).train()
    model.reset_classifier(2, "avg")
    assert model.fc.weight.dtype == torch.float64 and model.fc.training
    with torch.device("meta"):
        meta = tiny().eval()
    meta.reset_classifier(2)
    assert meta.fc.weight.device.type == "meta" and not meta.fc.training


def test_features_only_returns_the_five_timm_levels():
    model = tiny(features_only=True).eval()
    assert isinstance(model, resnetzoo.ResNetFeatures) and isinstance(model, ResNet)
    assert "fc.weight" not in model.state_dict()
    feats = model(torch.randn(1, 3, 64, 64))
    info = model.feature_info
    assert [f.shape[1] for f in feats] == info.channels() == [8, 8, 16, 32, 64]
    assert [64 // f.shape[-1] for f in feats] == info.reduction() == [2, 4, 8, 16, 32]
    assert info.module_name() == ["act1", "layer1", "layer2", "layer3", "layer4"]
    with pytest.raises(ValueError, match="no classifier"):
        model.reset_classifier(3)

    class Custom(ResNet):
        pass

    with pytest.raises(TypeError, match="subclass ResNetFeatures instead"):
        Custom(**TINY, features_only=True)


@pytest.mark.parametrize(("out_indices", "expected"), [((1, 3), (1, 3)), ((-1,), (4,)), (2, (3, 4)), ([4, 0], (0, 4))])
def test_features_only_out_indices_accept_timm_forms(out_indices, expected):
    model = tiny(features_only=True, out_indices=out_indices).eval()
    assert model.out_indices == model.feature_info.out_indices == expected
    feats = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == model.feature_info.channels()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features_only": True, "out_indices": (5,)}, "feature index 5 is out of range.*0 to 4"),
        ({"features_only": True, "out_indices": (-6,)}, "feature index -6 is out of range"),
        ({"features_only": True, "out_indices": 0}, "indices=0"),
        ({"features_only": True, "out_indices": ()}, "indices is empty"),
        ({"features_only": True, "feature_cls": "hook"}, "feature_cls must be one of"),
        ({"out_indices": (1, 2)}, "pass features_only=True"),
    ],
)
def test_bad_feature_options_say_what_is_valid(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kwargs)


def test_feature_info_keeps_timm_contract_and_list_form():
    info = tiny().feature_info
    assert info[1] == {"module": "layer1", "num_chs": 8, "reduction": 4}
    assert info.channels(2) == 16 and info.reduction([0, 4]) == [2, 32]
    narrowed = info.from_other((2, 4))
    assert narrowed.out_indices == (2, 4) and narrowed.module_name() == ["layer2", "layer4"]
    assert narrowed.get_dicts(keys=["num_chs"]) == [{"num_chs": 16}, {"num_chs": 64}]
    timm = pytest.importorskip("timm")
    theirs = timm.models.FeatureInfo(tiny().feature_info, (1, 2, 3, 4))
    assert theirs.channels() == [8, 16, 32, 64]


def test_forward_intermediates_has_timm_signature_and_returns():
    model = tiny().eval()
    x = torch.randn(1, 3, 64, 64)
    final, feats = model.forward_intermediates(x)
    torch.testing.assert_close(final, model.forward_features(x))
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]
    only = model.forward_intermediates(x, indices=[0, -2], intermediates_only=True)
    torch.testing.assert_close(only, [feats[0], feats[3]])
    last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
    torch.testing.assert_close(last_two, feats[3:])
    early, stopped = model.forward_intermediates(x, indices=[2], stop_early=True)
    torch.testing.assert_close(early, feats[2])
    torch.testing.assert_close(stopped, [feats[2]])
    with pytest.raises(ValueError, match="feature index 5 is out of range"):
        model.forward_intermediates(x, indices=[5])
    with pytest.raises(ValueError, match="output_fmt must be 'NCHW'"):
        model.forward_intermediates(x, output_fmt="NHWC")


def test_stem_feature_is_before_the_max_pool():
    model = tiny().eval()
    x = torch.randn(1, 3, 65, 67)
    seen = {}
    model.act1.register_forward_hook(lambda m, i, o: seen.setdefault("act1", o.clone()))
    stem = model.forward_intermediates(x, indices=[0], intermediates_only=True)[0]
    assert stem.shape[-2:] == (33, 34)
    torch.testing.assert_close(stem, seen["act1"])


def test_prune_intermediate_layers_as_timm():
    model = tiny().eval()
    x = torch.randn(2, 3, 64, 64)
    taps = model.forward_intermediates(x, intermediates_only=True)
    pruned = copy.deepcopy(model)
    assert pruned.prune_intermediate_layers((0, 2)) == [0, 2]
    assert len(pruned.layer3) == len(pruned.layer4) == 0
    assert pruned.num_features == pruned.head_hidden_size == 16
    torch.testing.assert_close(pruned.forward_features(x), taps[2])
    torch.testing.assert_close(pruned.forward_intermediates(x, indices=[0, 2], intermediates_only=True), [taps[0], taps[2]])
    assert pruned(x).shape == (2, 16, 8, 8)  # no head: the map of the last kept level
    stem_only = copy.deepcopy(model)
    stem_only.prune_intermediate_layers([0])
    assert isinstance(stem_only.maxpool, nn.Identity)
    torch.testing.assert_close(stem_only.forward_features(x), taps[0])
    keep_head = copy.deepcopy(model)
    keep_head.prune_intermediate_layers([-1], prune_head=False)
    torch.testing.assert_close(keep_head(x), model(x))


def test_group_matcher_groups_stem_blocks_and_head():
    timm = pytest.importorskip("timm")
    from timm.models._manipulate import group_parameters

    model = tiny(layers=(2, 1, 1, 1))
    groups = group_parameters(model, model.group_matcher(coarse=False))
    assert groups[0] == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert groups[1][0] == "layer1.0.conv1.weight" and groups[2][0] == "layer1.1.conv1.weight"
    assert groups[max(groups)] == ["fc.weight", "fc.bias"]
    coarse = group_parameters(model, model.group_matcher(coarse=True))
    assert len(coarse) == 1 + 4 + 1
    deep = tiny(stem="deep")
    assert "conv1.0.weight" in group_parameters(deep, deep.group_matcher())[0]
    del timm


def test_pretrained_cfg_is_a_dict_timm_reads():
    timm = pytest.importorskip("timm")
    plain = resnetzoo.resnet50(num_classes=10)
    assert plain.weight_spec is None and plain.default_cfg == plain.pretrained_cfg
    cfg = plain.pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["pool_size"] == (7, 7)
    assert cfg["first_conv"] == "conv1" and cfg["classifier"] == "fc" and cfg["num_classes"] == 10
    assert timm.data.resolve_data_config(model=plain) == {
        "input_size": (3, 224, 224), "interpolation": "bilinear", "crop_pct": 0.875, "crop_mode": "center",
        "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
    }
    # A tag in the name brings its weights' preprocessing, as timm (no download without pretrained=True).
    a1 = resnetzoo.create_model("resnet50d.a1_in1k", output_stride=16)
    assert a1.weight_spec.name == "resnet50d.a1_in1k" and a1.load_report is None
    data = timm.data.resolve_data_config(model=a1, use_test_size=True)
    assert data["interpolation"] == "bicubic" and data["input_size"] == (3, 288, 288) and data["crop_pct"] == 1.0
    assert a1.pretrained_cfg["first_conv"] == "conv1.0" and a1.pretrained_cfg["pool_size"] == (14, 14)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_create_model_builds_on_device_and_dtype(dtype):
    model = resnetzoo.create_model("resnet50", device="meta", dtype=dtype, num_classes=3)
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    assert all(t.device.type == "meta" for t in tensors.values())
    expected = dtype or torch.float32
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {expected}
    with pytest.raises(TypeError, match="not_a_model_arg"):
        resnetzoo.create_model("resnet18", device="meta", not_a_model_arg=1)


def test_torchvision_and_timm_aliases():
    off = tiny(zero_init_residual=False)
    assert torch.count_nonzero(off.layer1[0].bn2.weight) > 0
    assert torch.count_nonzero(tiny().layer1[0].bn2.weight) == 0  # our default: timm's
    with pytest.raises(ValueError, match="zero_init_last=True and its alias zero_init_residual=False disagree"):
        tiny(zero_init_last=True, zero_init_residual=False)
    gn = tiny(norm_layer=functools.partial(nn.GroupNorm, 2))
    assert isinstance(gn.bn1, nn.GroupNorm)
    with pytest.raises(ValueError, match="disagree"):
        tiny(norm="bn", norm_layer="gn")
    assert resnetzoo.resnet50().inplanes == 2048 and tiny().inplanes == 64


@pytest.mark.parametrize("flags", [(False, False, True), (False, True, True), (True, False, False), (True, True, True)])
def test_replace_stride_with_dilation_sets_each_stage(flags):
    model = tiny(replace_stride_with_dilation=flags, features_only=True).eval()
    expected, reduction = [2, 4], 4
    for dilated in flags:
        reduction *= 1 if dilated else 2
        expected.append(reduction)
    assert model.feature_info.reduction() == expected
    assert [64 // f.shape[-1] for f in model(torch.randn(1, 3, 64, 64))] == expected


def test_output_stride_is_replace_stride_with_dilation_shorthand(randomize):
    a = randomize(tiny(output_stride=8)).eval()
    b = tiny(replace_stride_with_dilation=(False, True, True)).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(a(x), b(x))
    with pytest.raises(ValueError, match="must be 3 bools"):
        tiny(replace_stride_with_dilation=(True, True))


def test_drop_path_equals_torchvision_and_timm_stochastic_depth():
    from timm.layers import DropPath as TimmDropPath
    from torchvision.ops import StochasticDepth

    from resnetzoo.blocks import DropPath

    x = torch.randn(64, 3, 4, 4)
    for p in (0.0, 0.25, 1.0):
        outputs = []
        for module in (DropPath(p), StochasticDepth(p, mode="row"), TimmDropPath(p)):
            torch.manual_seed(3)
            outputs.append(module.train()(x))
            assert module.eval()(x) is x
        torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
        torch.testing.assert_close(outputs[0], outputs[2], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"drop-path probability must be in \[0, 1\]"):
        DropPath(1.5)


def test_blocks_run_the_residual_branch_before_the_shortcut():
    from torch.fx import symbolic_trace

    block = resnetzoo.resnet50().layer2[0]
    traced = symbolic_trace(block)
    called = [n.target for n in traced.graph.nodes if n.op == "call_module"]
    assert called.index("conv3") < called.index("downsample.0")
    # fx registers parameters in the order they are used: torchvision's order.
    assert [n for n, _ in traced.named_parameters()] == [n for n, _ in block.named_parameters()]


def test_building_a_model_imports_no_torchvision():
    # The GUIDE's import-cost rule: torchvision pulls in torch._dynamo (seconds).
    code = (
        "import sys, resnetzoo; resnetzoo.resnet50d(drop_path_rate=0.1, features_only=True); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(("output_stride", "size"), [(32, 2), (16, 4), (8, 8)])
def test_output_stride_trades_stride_for_dilation(output_stride, size):
    model = resnetzoo.resnet50(output_stride=output_stride, num_classes=0).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 64, 64)).shape[-1] == size
    assert model.feature_info[-1]["reduction"] == output_stride


@pytest.mark.parametrize(("arch", "output_stride"), [("resnet50", 16), ("resnet50d", 16), ("resnet18d", 8)])
def test_output_stride_matches_timm_dilated_resnet(arch, output_stride, randomize):
    timm = pytest.importorskip("timm")
    ref = randomize(timm.create_model(arch, output_stride=output_stride, num_classes=0).eval())
    ours = resnetzoo.create_model(arch, output_stride=output_stride, num_classes=0).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_grad_checkpointing_gives_equal_gradients_and_running_stats(randomize):
    plain = randomize(tiny(block="bottleneck", widths=(4, 8, 16, 32)))
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing(True)
    x = torch.randn(4, 3, 32, 32)
    for model in (plain, ckpt):
        model.train()
        model(x).logsumexp(dim=1).sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=name)
    # Recomputation must not update BatchNorm statistics a second time.
    for (name, a), (_, b) in zip(plain.named_buffers(), ckpt.named_buffers(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_drop_path_is_random_in_training_and_off_in_eval(randomize):
    model = randomize(tiny(drop_path_rate=0.5))
    x = torch.randn(8, 3, 64, 64)
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    b = model(x)
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(model(x), model(x))


def test_wrong_input_channels_get_a_clear_error():
    with pytest.raises(ValueError, match=r"expects images of shape \(N, 3, H, W\).*in_chans=1"):
        tiny()(torch.randn(1, 1, 32, 32))
    assert tiny(in_chans=1).eval()(torch.randn(1, 1, 32, 32)).shape == (1, 5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"output_stride": 4}, "output_stride must be one of"),
        ({"layers": (1, 0, 1, 1)}, "layers must be"),
        ({"widths": (8, 16)}, "widths has 2 entries"),
        ({"num_classes": -3}, "num_classes"),
        ({"drop_path_rate": 1.5}, "drop_path_rate"),
        ({"norm": "layernorm"}, "known norm names: batchnorm, bn, frozen_bn, gn, groupnorm, syncbn"),
        ({"act": "swish"}, "known act names: gelu, leaky_relu, relu, silu"),
        ({"shortcut": "dotted"}, "known shortcut names: avgpool, conv, zero_pad"),
        ({"stem": "huge"}, "known stem names: classic, deep"),
        ({"block": "resnext"}, "known block names: basic, bottleneck"),
        ({"groups": 32}, "BasicBlock supports only groups=1"),
    ],
)
def test_invalid_configurations_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kwargs)


def test_factory_of_wrong_type_raises_type_error():
    with pytest.raises(TypeError, match="norm must be a name"):
        tiny(norm=3)
    with pytest.raises(TypeError, match="expansion"):
        tiny(block=nn.Identity)


def test_registry_lists_creates_and_refuses_duplicates():
    names = resnetzoo.list_models()
    assert {"resnet50", "resnet50d", "resnext101_64x4d", "wide_resnet50_2"} <= set(names)
    assert resnetzoo.list_models("resnet*d") == [  # natural order: 18 before 101
        "resnet18d", "resnet34d", "resnet50d", "resnet101d", "resnet152d"
    ]
    model = resnetzoo.create_model("resnet18", num_classes=3)
    assert model.arch == "resnet18" and model.fc.out_features == 3
    with pytest.raises(ValueError, match="did you mean resnet50"):
        resnetzoo.create_model("resnet05")
    with pytest.raises(ValueError, match="already registered"):
        resnetzoo.register_model(resnetzoo.models.resnet18)

    @resnetzoo.register_model
    def tiny_test_resnet(*, pretrained=False, **kwargs):
        return tiny(**kwargs)

    assert resnetzoo.create_model("tiny_test_resnet", num_classes=2).fc.out_features == 2


def test_torch_export_matches_eager():
    model = tiny().eval()
    x = torch.randn(2, 3, 32, 32)
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), model(x))


def test_groupnorm_partial_and_frozen_bn_factories():
    gn = tiny(norm=functools.partial(nn.GroupNorm, 4))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gn.modules())
    frozen = tiny(norm="frozen_bn")
    frozen.train()
    before = copy.deepcopy(frozen.state_dict())
    frozen(torch.randn(2, 3, 32, 32))
    for key, value in frozen.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_torchvision_feature_extractor_traces_the_model():
    from torchvision.models.feature_extraction import create_feature_extractor

    model = tiny().eval()
    extractor = create_feature_extractor(model, {"layer3": "c4"})
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(extractor(x)["c4"], model.forward_intermediates(x, indices=[3], intermediates_only=True)[0])


def test_integer_images_get_a_clear_error():
    with pytest.raises(TypeError, match=r"floating-point images, got torch.uint8.*x.float\(\) / 255"):
        tiny().eval()(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_module_instance_as_factory_is_refused_with_advice():
    with pytest.raises(TypeError, match=r"pass the class or a factory \(e.g. SiLU"):
        tiny(act=nn.SiLU())


def test_create_model_rejects_unknown_tags_and_non_strings():
    with pytest.raises(ValueError, match="no weights tagged 'nonsense'"):
        resnetzoo.create_model("resnet50.nonsense")
    with pytest.raises(TypeError, match="model name must be a string"):
        resnetzoo.create_model(50)
    with pytest.raises(ValueError, match="unknown factory kind"):
        resnetzoo.known_names("normz")
