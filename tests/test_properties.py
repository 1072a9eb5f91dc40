"""Property tests: any valid configuration builds, runs forward and backward, and is layout-independent."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resnetzoo import BasicBlock, Bottleneck, ResNet
from resnetzoo.shortcuts import conv_shortcut
from resnetzoo.stems import classic_stem

NORMS = ["bn", "groupnorm", "frozen_bn", nn.BatchNorm2d, functools.partial(nn.GroupNorm, 2)]
ACTS = ["relu", "silu", "gelu", "leaky_relu", nn.ReLU, functools.partial(nn.LeakyReLU, 0.2)]
SHORTCUTS = ["conv", "avgpool", "zero_pad", conv_shortcut]
STEMS = ["classic", "deep", classic_stem]
BLOCKS = ["basic", "bottleneck", BasicBlock, Bottleneck]


@st.composite
def configs(draw):
    num_stages = draw(st.integers(1, 4))
    block = draw(st.sampled_from(BLOCKS))
    is_bottleneck = block in ("bottleneck", Bottleneck)
    groups = draw(st.sampled_from([1, 2])) if is_bottleneck else 1
    # Non-decreasing widths and a stem no wider than stage 1, so that every shortcut,
    # the parameter-free zero-pad one included, is valid.
    widths = sorted(draw(st.sampled_from([4, 8, 16])) * groups for _ in range(num_stages))
    expansion = 4 if is_bottleneck else 1
    return {
        "layers": draw(st.lists(st.integers(1, 2), min_size=num_stages, max_size=num_stages)),
        "widths": widths,
        "block": block,
        "groups": groups,
        "width_per_group": 64 if groups == 1 else draw(st.sampled_from([32, 64])),
        "stem_width": draw(st.sampled_from([4, 8]).filter(lambda w: w <= widths[0] * expansion)),
        "norm": draw(st.sampled_from(NORMS)),
        "act": draw(st.sampled_from(ACTS)),
        "shortcut": draw(st.sampled_from(SHORTCUTS)),
        "stem": draw(st.sampled_from(STEMS)),
        "output_stride": draw(st.sampled_from([8, 16, 32])),
        "in_chans": draw(st.integers(1, 4)),
        "num_classes": draw(st.integers(0, 5)),
        "stride_in_1x1": draw(st.booleans()),
    }


def _expected_size(size: int, reduction: int) -> int:
    for _ in range(int(math.log2(reduction))):
        size = -(-size // 2)  # every strided layer rounds up
    return size


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs(), size=st.integers(17, 48), seed=st.integers(0, 2**31 - 1))
def test_any_valid_configuration_runs_forward_backward_and_channels_last(config, size, seed):
    torch.manual_seed(seed)
    model = ResNet(**config)
    x = torch.randn(2, config["in_chans"], size, size)

    model.train()
    out = model(x)
    width = config["num_classes"] or model.num_features
    assert out.shape == (2, width)
    out.float().pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)

    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        reduction = model.feature_info[-1]["reduction"]
        assert reduction <= config["output_stride"]
        expected = _expected_size(size, reduction)
        assert feats.shape == (2, model.num_features, expected, expected)
        reference = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(
            model_cl(x.to(memory_format=torch.channels_last)), reference, rtol=1e-4, atol=1e-5
        )
