"""Shared test fixtures."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torch.nn as nn


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Run torch on one intra-op thread throughout the suite.

    Tests use tiny inputs that gain nothing from threads, and on a busy 2-core machine
    OpenMP's spin-waiting hand-offs make a 64x64 ResNet-50 forward 50x slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def _make_hub_repo(
    cache: Path, repo_id: str, files: dict[str, bytes], *, commit: str, blob_names: dict[str, str] | None = None
) -> None:
    """Lay out a Hugging Face Hub cache entry by hand, as huggingface_hub writes it.

    ``models--org--repo/blobs/<sha256>`` holds each file's bytes, the snapshot links to
    it, and ``refs/main`` names the commit. ``blob_names`` overrides a blob's name (to
    fake a corrupted blob).
    """
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs").mkdir()
    (repo / "snapshots" / commit).mkdir(parents=True)
    for filename, content in files.items():
        blob = (blob_names or {}).get(filename) or hashlib.sha256(content).hexdigest()
        (repo / "blobs" / blob).write_bytes(content)
        (repo / "snapshots" / commit / filename).symlink_to(f"../../blobs/{blob}")


@pytest.fixture(scope="session")
def make_hub_repo():
    """Return a function that lays out a Hub cache entry: ``make_hub_repo(cache, repo_id, files, commit=...)``."""
    return _make_hub_repo
