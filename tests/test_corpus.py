"""The checkpoint corpus: layouts made by the real torchvision, timm and transformers classes.

Each layout is a checkpoint as some project really writes it (a plain state dict, a
DataParallel or Lightning wrapper, a MoCo, DINO or BYOL training checkpoint, detectron2
and mmpretrain naming, a transformers ``save_pretrained`` folder …). From nothing but
the checkpoint, :func:`resnetzoo.create_model_from_checkpoint` must build the right
architecture (the constructor call is checked), load it with ``strict=True`` with no key
missing or unexpected, and give the source model's outputs; every bottleneck network
must have its v1/v1.5 stride placement reported as ambiguous, with the choice made.

Only a few real models are built (``_source`` keeps the last two), each run once on a
32x32 input; the layouts reuse their state dicts.
"""

from __future__ import annotations

import argparse
import copy
import functools
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file

import resnetzoo
from resnetzoo.errors import CheckpointError

transformers = pytest.importorskip("transformers")

SIZE = 32


@dataclass(frozen=True)
class Source:
    """A real model of some library, and the constructor call that should rebuild it."""

    build: Callable[[], nn.Module]
    call: str
    in_chans: int = 3


def _v1(model: nn.Module) -> nn.Module:
    """torchvision's ResNet-50 with the stride moved to each first 1x1 (v1, as MSRA/Caffe)."""
    for stage in (model.layer2, model.layer3, model.layer4):
        stage[0].conv1.stride, stage[0].conv2.stride = (2, 2), (1, 1)
    return model


def _folded_stats(model: nn.Module) -> nn.Module:
    """Running statistics 0 and 1: what a checkpoint that folded them into the affine computes."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.zero_()
            module.running_var.fill_(1.0)
    return model


def _without_fc(model: nn.Module) -> nn.Module:
    model.fc = nn.Identity()
    return model


def _hf(**config: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        cfg = transformers.ResNetConfig(**config)
        return (transformers.ResNetForImageClassification if cfg.num_labels else transformers.ResNetModel)(cfg)

    return build


SOURCES: dict[str, Source] = {
    "tv_resnet18": Source(torchvision.models.resnet18, "resnetzoo.resnet18()"),
    "tv_resnet18_128": Source(lambda: torchvision.models.resnet18(num_classes=128), "resnetzoo.resnet18(num_classes=128)"),
    "tv_resnet50": Source(torchvision.models.resnet50, "resnetzoo.resnet50()"),
    "tv_resnet50_v1": Source(lambda: _v1(torchvision.models.resnet50()), "resnetzoo.resnet50(stride_in_1x1=True)"),
    "tv_resnext50": Source(torchvision.models.resnext50_32x4d, "resnetzoo.resnext50_32x4d()"),
    "tv_wide50": Source(torchvision.models.wide_resnet50_2, "resnetzoo.wide_resnet50_2()"),
    "timm_resnet18d": Source(lambda: timm.create_model("resnet18d"), "resnetzoo.resnet18d()"),
    "timm_resnet26d": Source(
        lambda: timm.create_model("resnet26d"),
        'resnetzoo.ResNet(layers=(2, 2, 2, 2), block="bottleneck", stem="deep", shortcut="avgpool")',
    ),
    "timm_resnext50d": Source(
        lambda: timm.create_model("resnext50d_32x4d"),
        'resnetzoo.ResNet(layers=(3, 4, 6, 3), block="bottleneck", stem="deep", shortcut="avgpool", '
        "groups=32, width_per_group=4)",
    ),
    "timm_resnet50s": Source(
        lambda: timm.create_model("resnet50s"),
        'resnetzoo.ResNet(layers=(3, 4, 6, 3), block="bottleneck", stem="deep", stem_width=128)',
    ),
    "timm_resnet18_in1": Source(lambda: timm.create_model("resnet18", in_chans=1), "resnetzoo.resnet18(in_chans=1)", 1),
    "timm_resnet50d_in4_37": Source(
        lambda: timm.create_model("resnet50d", in_chans=4, num_classes=37),
        "resnetzoo.resnet50d(num_classes=37, in_chans=4)",
        4,
    ),
    "timm_resnet34_headless": Source(lambda: timm.create_model("resnet34", num_classes=0), "resnetzoo.resnet34(num_classes=0)"),
    "timm_resnet50_gn": Source(lambda: timm.create_model("resnet50_gn"), 'resnetzoo.resnet50(norm="groupnorm")'),
    "hf_resnet50": Source(_hf(num_labels=1000), "resnetzoo.resnet50()"),
    "hf_resnet18_headless": Source(
        _hf(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], num_labels=0),
        "resnetzoo.resnet18(num_classes=0)",
    ),
    "hf_v1_tiny": Source(
        _hf(depths=[1, 1, 1, 1], downsample_in_bottleneck=True, num_labels=10),
        'resnetzoo.ResNet(layers=(1, 1, 1, 1), block="bottleneck", num_classes=10, stride_in_1x1=True)',
    ),
    "hf_basic_in1": Source(
        _hf(layer_type="basic", depths=[1, 1, 1, 1], hidden_sizes=[64, 128, 256, 512], num_channels=1, num_labels=5),
        'resnetzoo.ResNet(layers=(1, 1, 1, 1), block="basic", num_classes=5, in_chans=1)',
        1,
    ),
}


@dataclass
class Built:
    model: nn.Module
    state: dict[str, torch.Tensor]
    x: torch.Tensor
    out: torch.Tensor


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(x)
    if hasattr(out, "logits"):
        return out.logits
    if hasattr(out, "pooler_output"):
        return out.pooler_output.flatten(1)
    return out


@functools.lru_cache(maxsize=2)
def _source(name: str, randomize: Callable[[nn.Module], nn.Module]) -> Built:
    """Build, randomise and run a source model once (the layouts are grouped by source).

    Built on the meta device and given memory afterwards: every tensor is then drawn by
    ``_randomize``, so the library's own initialisation would be wasted time.
    """
    spec = SOURCES[name]
    with torch.device("meta"):
        model = spec.build()
    model = randomize(model.to_empty(device="cpu")).eval()
    for key, tensor in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            tensor.zero_()
    if name == "tv_resnet50_v1":
        _folded_stats(model)
    x = torch.randn(2, spec.in_chans, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    return Built(model, dict(model.state_dict()), x, _outputs(model, x))


# ------------------------------------------------------------------ layouts
def _detectron2_name(key: str) -> str:
    """detectron2's tools/convert-torchvision-to-d2.py, rule for rule."""
    if "layer" not in key:
        key = "stem." + key
    for t in (1, 2, 3, 4):
        key = key.replace(f"layer{t}", f"res{t + 1}")
    for t in (1, 2, 3):
        key = key.replace(f"bn{t}", f"conv{t}.norm")
    return key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


_MM_STEM = {"conv1.0": "stem.0.conv", "conv1.1": "stem.0.bn", "conv1.3": "stem.1.conv",
            "conv1.4": "stem.1.bn", "conv1.6": "stem.2.conv", "bn1": "stem.2.bn"}  # fmt: skip


def _mmpretrain_name(key: str, *, v1d: bool) -> str:
    """mmpretrain's documented names (ResNet, ResNetV1c/V1d, ResNeXt), written out by hand."""
    module, _, leaf = key.rpartition(".")
    if module.startswith("fc"):
        return f"head.{key}"
    module = _MM_STEM.get(module, module) if key.startswith("conv1.0") or module in _MM_STEM else module
    if v1d and module.startswith("layer1.0.downsample."):
        module = "layer1.0.downsample." + str(int(module.rsplit(".", 1)[1]) - 1)
    return f"backbone.{module}.{leaf}"


def _prefixed(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in sd.items()}


def _clones(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v.clone() + 0.01 if v.is_floating_point() else v.clone() for k, v in sd.items()}


def _save(obj: Any, path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in obj.items()}, str(path))
    else:
        torch.save(obj, path)
    return path


def _moco(sd, tmp):
    inner = {**_prefixed(sd, "module.encoder_q."), **_clones(sd, "module.encoder_k.")}
    inner["module.queue"] = torch.randn(128, 4096)
    inner["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    return {"epoch": 200, "arch": "resnet18", "state_dict": inner, "optimizer": {"state": {}, "param_groups": []}}


def _dino(sd, tmp):
    # main_dino.py saves both networks DDP-wrapped (they have BatchNorms), with their heads,
    # and the run's argparse.Namespace: weights_only=True refuses the file (MoCo v3 alike).
    head = {"mlp.0.weight": torch.randn(64, 512), "mlp.0.bias": torch.randn(64), "last_layer.weight_g": torch.ones(100, 1)}
    return _save({
        "student": {**_clones(sd, "module.backbone."), **_prefixed(head, "module.head.")},
        "teacher": {**_prefixed(sd, "module.backbone."), **_prefixed(head, "module.head.")},
        "optimizer": {"state": {0: {"momentum_buffer": torch.zeros(3)}}, "param_groups": [{"lr": 0.1}]},
        "epoch": 100,
        "args": argparse.Namespace(arch="resnet34", out_dim=65536, lr=0.0005, local_crops_number=8),
    }, tmp / "checkpoint.pth")  # fmt: skip


def _byol(sd, tmp):
    projector = {"net.0.weight": torch.randn(256, 512), "net.0.bias": torch.randn(256)}
    return {
        **_prefixed(sd, "online_network.encoder."),
        **_clones(sd, "target_network.encoder."),
        **_prefixed(projector, "online_network.projector."),
        **_prefixed(projector, "predictor."),
    }


def _detectron2_final(sd, tmp):
    # A detector trained from detectron2's ImageNet weights: FrozenBatchNorm2d (statistics, no
    # counters), the ResNet under backbone.bottom_up beside the FPN and the heads.
    bottom_up = {
        "backbone.bottom_up." + _detectron2_name(k): v
        for k, v in sd.items()
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    }
    fpn = {"backbone.fpn_lateral2.weight": torch.randn(256, 256, 1, 1), "roi_heads.box_predictor.cls_score.weight": torch.randn(81, 1024)}
    return {"model": {**bottom_up, **fpn}, "iteration": 90000}


def _detectron2_folded(sd, tmp):
    return {
        "model": {
            "backbone.bottom_up." + _detectron2_name(k): v
            for k, v in sd.items()
            if not k.startswith("fc.") and not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
        }
    }


def _detectron2_converted(sd, tmp):
    # As tools/convert-torchvision-to-d2.py writes it: pickle.dump of numpy arrays, not torch.save.
    path = tmp / "R-tv.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {_detectron2_name(k): v.numpy() for k, v in sd.items()}, "__author__": "torchvision",
                     "matching_heuristics": True}, f)  # fmt: skip
    return path


def _mmpretrain(v1d: bool = False, style: str | None = None):
    def make(sd, tmp):
        meta: dict[str, Any] = {"epoch": 100}
        if style:
            meta["cfg"] = f"model = dict(backbone=dict(type='ResNet', depth=50, style='{style}'))"
        return _save({"meta": meta, "state_dict": {_mmpretrain_name(k, v1d=v1d): v for k, v in sd.items()}}, tmp / "mm.pth")

    return make


def _hf_folder(model, tmp):
    model.save_pretrained(tmp / "hf")
    return tmp / "hf"


def _lightning(sd, tmp):
    return _save(
        {"epoch": 9, "global_step": 4680, "pytorch-lightning_version": "2.4.0",
         "state_dict": {**_prefixed(sd, "model."), "criterion.pos_weight": torch.ones(37)}},
        tmp / "last.ckpt",
    )  # fmt: skip


@dataclass(frozen=True)
class Layout:
    """A checkpoint layout: the source model, how its state dict is laid out, what to expect.

    ``call`` is the constructor call expected when it is not the source's; ``stride`` a
    phrase the v1/v1.5 hint must contain (where the choice came from); ``recovered`` the
    non-tensor object the file holds, for a file that is refused by default and read
    with ``unsafe_objects="stub"``.
    """

    source: str
    make: Callable[[dict[str, torch.Tensor], Path], Any]
    call: str | None = None
    stride: str | None = None
    recovered: str | None = None


_D2_BACKBONE = 'resnetzoo.resnet50(num_classes=0, norm="frozen_bn", stride_in_1x1=True)'

# Grouped by source, so that each source model is built once.
LAYOUTS: dict[str, Layout] = {name: Layout(*spec) for name, spec in {
    "tv-resnet18.pth": ("tv_resnet18", lambda sd, tmp: _save(sd, tmp / "r18.pth")),
    "tv-resnet18-model.backbone": ("tv_resnet18", lambda sd, tmp: _prefixed(sd, "model.backbone.")),
    "detectron2-converted-r18": ("tv_resnet18", _detectron2_converted),
    "moco-v1-encoder_q": ("tv_resnet18_128", _moco),
    "tv-resnet50.safetensors": ("tv_resnet50", lambda sd, tmp: _save(sd, tmp / "r50.safetensors")),
    "tv-resnet50-ddp": ("tv_resnet50", lambda sd, tmp: _prefixed(sd, "module."), None, "torchvision, timm and transformers"),
    "detectron2-converted-r50": ("tv_resnet50", _detectron2_converted, None, "__author__='torchvision'"),
    "mmpretrain-resnet50": ("tv_resnet50", _mmpretrain(), None, "style='pytorch'"),
    "detectron2-model_final": ("tv_resnet50_v1", _detectron2_final, _D2_BACKBONE, "STRIDE_IN_1X1=True"),
    "detectron2-folded-frozen-bn": ("tv_resnet50_v1", _detectron2_folded, _D2_BACKBONE, "STRIDE_IN_1X1=True"),
    "mmpretrain-caffe-v1": ("tv_resnet50_v1", _mmpretrain(style="caffe"), None, "style='caffe'"),
    "tv-resnext50.pth": ("tv_resnext50", lambda sd, tmp: _save(sd, tmp / "x50.pth")),
    "tv-resnext50-net": ("tv_resnext50", lambda sd, tmp: _prefixed(sd, "net.")),
    "mmpretrain-resnext50": ("tv_resnext50", _mmpretrain()),
    "tv-wide50.pth": ("tv_wide50", lambda sd, tmp: _save(sd, tmp / "w50.pth")),
    "tv-wide50-training": (
        "tv_wide50",
        lambda sd, tmp: {"model": sd, "model_ema": _clones(sd, ""), "optimizer": {"state": {}}, "epoch": 3},
    ),
    "timm-resnet18d.safetensors": ("timm_resnet18d", lambda sd, tmp: _save(sd, tmp / "r18d.safetensors")),
    "timm-resnet18d-compiled-ddp": ("timm_resnet18d", lambda sd, tmp: _prefixed(sd, "module._orig_mod.")),
    "mmpretrain-v1d": ("timm_resnet18d", _mmpretrain(v1d=True)),
    "timm-resnet26d.pth": ("timm_resnet26d", lambda sd, tmp: _save(sd, tmp / "r26d.pth")),
    "timm-resnet26d-encoder": ("timm_resnet26d", lambda sd, tmp: _prefixed(sd, "encoder.")),
    "timm-resnext50d": ("timm_resnext50d", lambda sd, tmp: sd),
    "timm-resnet50s": ("timm_resnet50s", lambda sd, tmp: _save(sd, tmp / "r50s.pth")),
    "timm-resnet18-in1": ("timm_resnet18_in1", lambda sd, tmp: _save(sd, tmp / "gray.safetensors")),
    "timm-resnet50d-in4-37.pth": ("timm_resnet50d_in4_37", lambda sd, tmp: _save(sd, tmp / "rgbn.pth")),
    "timm-resnet50d-in4-37-lightning": ("timm_resnet50d_in4_37", _lightning),
    "timm-resnet34-headless": ("timm_resnet34_headless", lambda sd, tmp: sd),
    "dino-teacher-student": ("timm_resnet34_headless", _dino, None, None, "checkpoint['args']"),
    "byol-online-target": ("timm_resnet34_headless", _byol),
    "timm-resnet50-gn": ("timm_resnet50_gn", lambda sd, tmp: _save(sd, tmp / "gn.pth")),
    "timm-resnet50-gn-ddp.safetensors": (
        "timm_resnet50_gn",
        lambda sd, tmp: _save(_prefixed(sd, "module."), tmp / "gn.safetensors"),
    ),
    "hf-resnet50": ("hf_resnet50", lambda sd, tmp: sd),
    "hf-resnet50-ddp": ("hf_resnet50", lambda sd, tmp: _prefixed(sd, "module.")),
    "hf-resnet18-model.bin": ("hf_resnet18_headless", lambda sd, tmp: _save(sd, tmp / "pytorch_model.bin")),
    "hf-v1-save_pretrained": ("hf_v1_tiny", _hf_folder, None, "downsample_in_bottleneck=true"),
    "hf-basic-in1": ("hf_basic_in1", lambda sd, tmp: sd),
}.items()}


def test_the_corpus_is_large_and_covers_every_library():
    assert len(LAYOUTS) >= 30
    assert {layout.source.split("_", 1)[0] for layout in LAYOUTS.values()} == {"tv", "timm", "hf"}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_layout_builds_the_right_model_and_loads_strictly(name, tmp_path, randomize):
    layout = LAYOUTS[name]
    source = _source(layout.source, randomize)
    checkpoint = layout.make(source.model if layout.make is _hf_folder else source.state, tmp_path)

    if layout.recovered:
        with pytest.raises(CheckpointError, match="unsafe_objects='stub'"):
            resnetzoo.create_model_from_checkpoint(checkpoint)
        model, report = resnetzoo.create_model_from_checkpoint(checkpoint, unsafe_objects="stub")
        assert report.recovered[layout.recovered]["__class__"] == "argparse.Namespace"
    else:
        model, report = resnetzoo.create_model_from_checkpoint(checkpoint)

    call = layout.call or SOURCES[layout.source].call
    assert report.hints[0] == f"built {call} from the checkpoint's names and shapes"
    assert report.loaded and not report.missing and not report.unexpected and not report.mismatched, str(report)
    reference = source.out
    if not model.num_classes and reference.shape[1] != model.num_features:
        # A detector's backbone has no classifier: compare the pooled features.
        reference = _outputs(_without_fc(copy.deepcopy(source.model)), source.x)
    torch.testing.assert_close(_outputs(model.eval(), source.x), reference, rtol=0, atol=1e-5)
    # Every bottleneck network says how it placed the stride, and why.
    stride_hints = [h for h in report.hints if h.startswith("ambiguous: v1 or v1.5")]
    assert len(stride_hints) == (type(model.layer1[0]).__name__ == "Bottleneck")
    if layout.stride:
        assert layout.stride in stride_hints[0]
        assert ("outputs): v1 (stride_in_1x1=True" in stride_hints[0]) == ("stride_in_1x1=True" in call)
