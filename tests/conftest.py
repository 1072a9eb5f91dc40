"""Shared test fixtures."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter and BatchNorm statistic random values, so parity tests can fail.

    Fresh models have all-ones/zeros norms and zero-initialised last norms, under which
    many wiring mistakes still give identical outputs.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif name.endswith(("weight", "running_mean", "bias")):
                scale = 0.5 if tensor.ndim <= 1 else (1.0 / max(tensor[0].numel(), 1)) ** 0.5
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * scale)
    return model


@pytest.fixture
def randomize():
    """Return a function that fills a model's weights and BN statistics with random values."""
    return _randomize
