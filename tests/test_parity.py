"""Our default architectures are torchvision's (and the D variants timm's), key for key."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision

import resnetzoo

TORCHVISION_ARCHS = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
]
TIMM_D_ARCHS = ["resnet18d", "resnet34d", "resnet50d", "resnet101d", "resnet152d"]


def _num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _assert_same_model(ours: torch.nn.Module, ref: torch.nn.Module, randomize) -> None:
    randomize(ref.eval())
    ours.eval()
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert _num_params(ours) == _num_params(ref)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", TORCHVISION_ARCHS)
def test_torchvision_checkpoint_loads_strictly_with_same_logits(arch, randomize):
    _assert_same_model(getattr(resnetzoo, arch)(), getattr(torchvision.models, arch)(), randomize)


@pytest.mark.parametrize("arch", TIMM_D_ARCHS)
def test_timm_d_checkpoint_loads_strictly_with_same_logits(arch, randomize):
    _assert_same_model(getattr(resnetzoo, arch)(), timm.create_model(arch), randomize)


def test_timm_resnet50_equals_ours(randomize):
    # timm's plain resnet50 uses torchvision's names: one state dict serves both.
    _assert_same_model(resnetzoo.resnet50(), timm.create_model("resnet50"), randomize)


def test_resnet50_parameter_count_matches_the_paper_table():
    assert _num_params(resnetzoo.resnet50()) == 25_557_032


def test_stride_in_1x1_moves_the_stride_to_the_first_conv(randomize):
    v15 = randomize(resnetzoo.resnet50())
    v1 = resnetzoo.resnet50(stride_in_1x1=True)
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)
    assert v1.layer2[0].conv1.stride == (2, 2) and v1.layer2[0].conv2.stride == (1, 1)
    # Same weights, different computation: the v1 model is not a silent copy of v1.5.
    v1.load_state_dict(v15.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert v1.eval()(x).shape == v15.eval()(x).shape
        assert not torch.allclose(v1(x), v15(x))
