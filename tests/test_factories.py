"""Factories: each part accepted as a name, a class or a callable, and used everywhere."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn as nn

import resnetzoo
from resnetzoo import BasicBlock, Bottleneck, ResNet, ZeroPadShortcut
from resnetzoo.factories import GroupNorm32, known_names, resolve


def test_resolve_accepts_names_classes_and_partials():
    assert resolve("norm", "BN") is nn.BatchNorm2d
    assert resolve("norm", nn.InstanceNorm2d) is nn.InstanceNorm2d
    partial = functools.partial(nn.GroupNorm, 4)
    assert resolve("norm", partial) is partial
    assert resolve("block", "bottleneck") is Bottleneck
    assert isinstance(resolve("act", "silu")(), nn.SiLU)
    with pytest.raises(ValueError, match="unknown factory kind"):
        resolve("head", "linear")


def test_known_names_are_sorted_and_complete():
    assert known_names("norm") == ["batchnorm", "bn", "frozen_bn", "gn", "groupnorm", "syncbn"]
    assert known_names("shortcut") == ["avgpool", "conv", "zero_pad"]


def test_groupnorm32_adapts_the_group_count_to_narrow_layers():
    assert GroupNorm32(256).num_groups == 32
    assert GroupNorm32(8).num_groups == 8
    assert GroupNorm32(48).num_groups == 16


class CountingBlock(BasicBlock):
    """A user block: the network must build it for every block and call its init hook."""

    built = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        type(self).built += 1
        self.zero_init_calls = 0

    def zero_init_last(self) -> None:
        super().zero_init_last()
        self.zero_init_calls += 1


def test_user_block_subclass_is_used_everywhere_and_initialised():
    CountingBlock.built = 0
    model = ResNet(layers=(2, 1, 3, 1), block=CountingBlock, widths=(8, 8, 16, 16), stem_width=8)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 7 and all(type(b) is CountingBlock for b in blocks)
    assert CountingBlock.built == 7
    assert all(b.zero_init_calls == 1 for b in blocks)
    assert all(torch.count_nonzero(b.bn2.weight) == 0 for b in blocks)


def test_zero_init_last_can_be_turned_off():
    model = resnetzoo.resnet18(zero_init_last=False)
    assert torch.count_nonzero(model.layer1[0].bn2.weight) > 0


def test_custom_block_needs_no_isinstance_registration():
    class SEBlock(Bottleneck):
        def __init__(self, in_chs, planes, **kwargs):
            super().__init__(in_chs, planes, **kwargs)
            chs = planes * self.expansion
            self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(chs, chs, 1), nn.Sigmoid())

        def forward(self, x):
            shortcut = x if self.downsample is None else self.downsample(x)
            x = self.act1(self.bn1(self.conv1(x)))
            x = self.act2(self.bn2(self.conv2(x)))
            x = self.bn3(self.conv3(x))
            return self.act3(x * self.se(x) + shortcut)

    model = resnetzoo.resnet50(block=SEBlock, num_classes=3).eval()
    assert "layer4.2.se.1.weight" in model.state_dict()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_shortcut_factories_produce_their_documented_keys():
    conv = resnetzoo.resnet18()
    assert "layer2.0.downsample.0.weight" in conv.state_dict()
    avg = resnetzoo.resnet18(shortcut="avgpool")
    assert "layer2.0.downsample.1.weight" in avg.state_dict()
    assert isinstance(avg.layer2[0].downsample[0], nn.AvgPool2d)
    zero = resnetzoo.resnet18(shortcut="zero_pad").eval()
    assert isinstance(zero.layer2[0].downsample, ZeroPadShortcut)
    assert not any("downsample" in k for k in zero.state_dict())
    assert zero(torch.randn(1, 3, 65, 65)).shape == (1, 1000)


def test_zero_pad_shortcut_is_subsample_plus_zero_channels():
    x = torch.randn(2, 4, 5, 5)
    y = ZeroPadShortcut(4, 6, stride=2)(x)
    assert y.shape == (2, 6, 3, 3)
    torch.testing.assert_close(y[:, :4], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 4:]) == 0
    with pytest.raises(ValueError, match="cannot reduce channels"):
        ZeroPadShortcut(8, 4, stride=1)


def test_deep_stem_has_timm_keys_and_silu_reaches_every_activation():
    model = resnetzoo.resnet50d(act="silu")
    keys = model.state_dict()
    assert {"conv1.0.weight", "conv1.1.weight", "conv1.3.weight", "conv1.4.weight", "conv1.6.weight"} <= set(keys)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert sum(isinstance(m, nn.SiLU) for m in model.modules()) == 2 + 1 + 16 * 3


def test_stem_factory_callable_is_registered_at_top_level():
    def tiny_stem(in_chans, out_chs, *, norm, act):
        stem = nn.Sequential()
        stem.add_module("conv1", nn.Conv2d(in_chans, out_chs, 3, stride=2, padding=1, bias=False))
        stem.add_module("bn1", norm(out_chs))
        stem.add_module("act1", act())
        stem.reduction = 2
        return stem

    model = ResNet(layers=(1, 1), widths=(8, 16), stem=tiny_stem, stem_width=8, num_classes=2, features_only=True)
    assert model.stem_names == ("conv1", "bn1", "act1")
    # Without a `feature` attribute the stem's output is its feature level.
    assert model.feature_info.module_name() == ["act1", "layer1", "layer2"]
    assert model.feature_info.reduction() == [2, 2, 4]
    feats = model.eval()(torch.randn(1, 3, 32, 32))
    assert [f.shape[-1] for f in feats] == [16, 16, 8]
    scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(torch.ones(1, 3, 32, 32)), model(torch.ones(1, 3, 32, 32)))


def test_stem_feature_attribute_names_the_tapped_layer():
    def pooled_stem(in_chans, out_chs, *, norm, act):
        stem = nn.Sequential()
        stem.add_module("conv1", nn.Conv2d(in_chans, out_chs, 3, stride=1, padding=1, bias=False))
        stem.add_module("act1", act())
        stem.add_module("pool", nn.AvgPool2d(4))
        stem.reduction, stem.feature = 4, ("act1", 1)
        return stem

    model = ResNet(layers=(1,), widths=(8,), stem=pooled_stem, stem_width=8, features_only=True).eval()
    assert model.feature_info.module_name() == ["act1", "layer1"] and model.feature_info.reduction() == [1, 4]
    assert [f.shape[-1] for f in model(torch.randn(1, 3, 16, 16))] == [16, 4]

    def misnamed(in_chans, out_chs, *, norm, act):
        stem = pooled_stem(in_chans, out_chs, norm=norm, act=act)
        stem.feature = ("relu", 1)
        return stem

    with pytest.raises(ValueError, match="stem's feature names 'relu', which is not one of its children"):
        ResNet(layers=(1,), widths=(8,), stem=misnamed, stem_width=8)
