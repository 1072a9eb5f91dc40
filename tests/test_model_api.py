"""The model interface: heads, features, dilation, checkpointing, registry, export, errors."""

from __future__ import annotations

import copy
import functools

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
    assert model.get_classifier() is model.fc
    model.reset_classifier(7)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 64)
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(-1)


def test_features_only_backbone_and_feature_info():
    model = tiny(features_only=True).eval()
    assert "fc.weight" not in model.state_dict()
    feats = model(torch.randn(1, 3, 64, 64))
    info = model.feature_info[1:]
    assert [f.shape[1] for f in feats] == [i["num_chs"] for i in info] == [8, 16, 32, 64]
    assert [64 // f.shape[-1] for f in feats] == [i["reduction"] for i in info] == [4, 8, 16, 32]
    stem_and_c3 = model.forward_intermediates(torch.randn(1, 3, 64, 64), indices=(0, 2))
    assert [f.shape[1] for f in stem_and_c3] == [8, 16]
    with pytest.raises(ValueError, match="feature indices"):
        model.forward_intermediates(torch.randn(1, 3, 64, 64), indices=(5,))


@pytest.mark.parametrize(("output_stride", "size"), [(32, 2), (16, 4), (8, 8)])
def test_output_stride_trades_stride_for_dilation(output_stride, size):
    model = resnetzoo.resnet50(output_stride=output_stride, num_classes=0).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 64, 64)).shape[-1] == size
    assert model.feature_info[-1]["reduction"] == output_stride


def test_output_stride_matches_timm_dilated_resnet(randomize):
    timm = pytest.importorskip("timm")
    ref = randomize(timm.create_model("resnet50", output_stride=16, num_classes=0).eval())
    ours = resnetzoo.resnet50(output_stride=16, num_classes=0).eval()
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
    torch.testing.assert_close(extractor(x)["c4"], model.forward_intermediates(x, indices=(3,))[0])


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
