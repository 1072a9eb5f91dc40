"""Checkpoint remapping: every convention loads strictly and gives identical outputs; every broken case is reported."""

from __future__ import annotations

import collections
import json
import logging
import os

import pytest
import timm
import torch
import torch.nn as nn
import torchvision
from safetensors.torch import load_file, save_file

import resnetzoo
from resnetzoo.errors import CheckpointError, WeightsLoadError
from resnetzoo.remap import CONVENTIONS, LoadReport, diagnose, load_weights, save_weights
from resnetzoo.remap.conventions import get_convention

transformers = pytest.importorskip("transformers")

X = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _logits(model: nn.Module) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = model(X)
    # transformers returns a ModelOutput; its pooler output is (N, C, 1, 1).
    if hasattr(out, "logits"):
        return out.logits
    if hasattr(out, "pooler_output"):
        return out.pooler_output.flatten(1)
    return out


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, snapshot[k]) for k, v in model.state_dict().items())


def _hf_config(kind: str):
    if kind == "bottleneck":  # microsoft/resnet-50 layout
        return transformers.ResNetConfig(
            layer_type="bottleneck", depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048], embedding_size=64,
            num_labels=1000,
        )
    return transformers.ResNetConfig(  # microsoft/resnet-18 layout
        layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], embedding_size=64, num_labels=1000
    )


# Independent of the library's rules: mmpretrain's documented names written out by hand.
def _to_mmpretrain(sd: dict[str, torch.Tensor], *, v1d: bool) -> dict[str, torch.Tensor]:
    stem = {"conv1.0": "stem.0.conv", "conv1.1": "stem.0.bn", "conv1.3": "stem.1.conv",
            "conv1.4": "stem.1.bn", "conv1.6": "stem.2.conv", "bn1": "stem.2.bn"}  # fmt: skip
    out = {}
    for key, value in sd.items():
        module, _, leaf = key.rpartition(".")
        if module.startswith("fc"):
            out[f"head.{key}"] = value
            continue
        if "conv1.0.weight" in sd:
            module = stem.get(module, module)
        if v1d and module.startswith("layer1.0.downsample."):
            module = "layer1.0.downsample." + str(int(module.rsplit(".", 1)[1]) - 1)
        out[f"backbone.{module}.{leaf}"] = value
    return out


# ------------------------------------------------------------------ conventions
def test_transformers_defaults_are_v1_5():
    assert transformers.ResNetConfig().downsample_in_bottleneck is False


@pytest.mark.parametrize(
    ("make_source", "make_target", "convention"),
    [
        pytest.param(lambda: torchvision.models.resnet18(), lambda: resnetzoo.resnet18(), "torchvision", id="tv-resnet18"),
        pytest.param(lambda: torchvision.models.resnet50(), lambda: resnetzoo.resnet50(), "torchvision", id="tv-resnet50"),
        pytest.param(lambda: timm.create_model("resnet50", pretrained=False), lambda: resnetzoo.resnet50(), "torchvision", id="timm-resnet50"),
        pytest.param(lambda: timm.create_model("resnet50d", pretrained=False), lambda: resnetzoo.resnet50d(), "timm", id="timm-resnet50d"),
        pytest.param(
            lambda: transformers.ResNetForImageClassification(_hf_config("bottleneck")),
            lambda: resnetzoo.resnet50(),
            "transformers-ResNetForImageClassification",
            id="hf-cls-resnet50",
        ),
        pytest.param(
            lambda: transformers.ResNetModel(_hf_config("bottleneck")),
            lambda: resnetzoo.resnet50(num_classes=0),
            "transformers-ResNetModel",
            id="hf-model-resnet50",
        ),
        pytest.param(
            lambda: transformers.ResNetForImageClassification(_hf_config("basic")),
            lambda: resnetzoo.resnet18(),
            "transformers-ResNetForImageClassification",
            id="hf-cls-resnet18",
        ),
        pytest.param(
            lambda: transformers.ResNetModel(_hf_config("basic")),
            lambda: resnetzoo.resnet18(num_classes=0),
            "transformers-ResNetModel",
            id="hf-model-resnet18",
        ),
    ],
)
def test_convention_loads_strictly_with_identical_outputs(make_source, make_target, convention, randomize):
    source = randomize(make_source())
    target = make_target()
    report = load_weights(target, source.state_dict())
    assert report.ok and report.loaded
    assert report.convention == convention
    assert not report.missing and not report.unexpected and not report.mismatched
    torch.testing.assert_close(_logits(target), _logits(source), rtol=0, atol=0)


def test_transformers_report_names_rules_and_renames(randomize):
    source = transformers.ResNetForImageClassification(_hf_config("basic")).state_dict()
    report = diagnose(resnetzoo.resnet18(), source)
    assert report.rules["transformers classifier.1 → fc"] == 2
    # BasicBlock: layer.0 / layer.1 are conv1 / conv2; stage 0 has no shortcut.
    renamed = {r.source: r.target for r in report.renamed}
    assert renamed["resnet.encoder.stages.0.layers.1.layer.1.convolution.weight"] == "layer1.1.conv2.weight"
    assert renamed["resnet.encoder.stages.1.layers.0.shortcut.normalization.running_var"] == "layer2.0.downsample.1.running_var"
    assert not any("stages.0.layers.0.shortcut" in k for k in renamed)
    assert sum(report.rules.values()) == len(report.renamed) == len(source)


def test_transformers_v1_folder_is_refused_unless_the_model_is_v1(tmp_path, randomize):
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(depths=[1, 1, 1, 1], downsample_in_bottleneck=True, num_labels=10)
    hf = randomize(ResNetForImageClassification(config).eval())
    hf.save_pretrained(tmp_path)
    v15 = resnetzoo.ResNet(layers=(1, 1, 1, 1), num_classes=10)
    before = _snapshot(v15)
    with pytest.raises(WeightsLoadError) as info:
        load_weights(v15, tmp_path)  # the weights fit; the outputs would not
    report = info.value.report
    assert report.metadata["downsample_in_bottleneck"] == "true" and not report.ok
    assert any("ResNet v1 (its config says downsample_in_bottleneck=true)" in c for c in report.conflicts)
    assert any("build the model with stride_in_1x1=True" in c for c in report.conflicts)
    assert _same_state(v15, before)
    v1 = resnetzoo.ResNet(layers=(1, 1, 1, 1), num_classes=10, stride_in_1x1=True)
    report = load_weights(v1, tmp_path)
    assert report.ok and report.hints == [] and report.conflicts == []
    with torch.no_grad():
        torch.testing.assert_close(v1.eval()(X), hf(X).logits, rtol=1e-5, atol=1e-5)


def test_mmpretrain_plain(randomize):
    source = randomize(torchvision.models.resnet18())
    target = resnetzoo.resnet18()
    report = load_weights(target, _to_mmpretrain(source.state_dict(), v1d=False))
    assert report.ok and report.convention == "mmpretrain"
    torch.testing.assert_close(_logits(target), _logits(source), rtol=0, atol=0)


def test_mmpretrain_v1d_deep_stem_and_shortcut(randomize):
    source = randomize(timm.create_model("resnet50d", pretrained=False))
    mm = _to_mmpretrain(source.state_dict(), v1d=True)
    assert "backbone.stem.2.bn.running_mean" in mm and "backbone.layer1.0.downsample.0.weight" in mm
    target = resnetzoo.resnet50d()
    report = load_weights(target, mm)
    assert report.ok and report.convention == "mmpretrain-v1d"
    assert report.rules["mmpretrain layer1 shortcut conv .0 → .1"] == 1
    torch.testing.assert_close(_logits(target), _logits(source), rtol=0, atol=0)


def test_mmpretrain_v1c_deep_stem(randomize):
    source = randomize(resnetzoo.resnet18(stem="deep"))
    target = resnetzoo.resnet18(stem="deep")
    report = load_weights(target, _to_mmpretrain(source.state_dict(), v1d=False))
    assert report.ok and report.convention == "mmpretrain-v1c"
    torch.testing.assert_close(_logits(target), _logits(source), rtol=0, atol=0)


# -------------------------------------------------------------------- wrappers
def _drop_nbt(sd):
    out = collections.OrderedDict((k, v) for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    out._metadata = getattr(sd, "_metadata", None)  # as a state_dict() OrderedDict carries it
    return out


@pytest.mark.parametrize("with_nbt", [True, False], ids=["nbt", "no-nbt"])
@pytest.mark.parametrize(
    ("wrap", "unwrapped", "prefixes"),
    [
        (lambda m: nn.DataParallel(m).state_dict(), [], ["module."]),
        (lambda m: torch.compile(m).state_dict(), [], ["_orig_mod."]),
        (lambda m: nn.DataParallel(torch.compile(m)).state_dict(), [], ["module.", "_orig_mod."]),
        (
            lambda m: {
                "state_dict": {f"model.{k}": v for k, v in m.state_dict().items()},
                "epoch": 3,
                "global_step": 120,
                "pytorch-lightning_version": "2.4.0",
            },
            ["state_dict"],
            ["model."],
        ),
        (lambda m: {"model": m.state_dict(), "optimizer": {"state": {}, "param_groups": []}, "epoch": 1}, ["model"], []),
        (lambda m: {"state_dict_ema": m.state_dict(), "epoch": 7}, ["state_dict_ema"], []),
        (lambda m: {"model_state_dict": nn.DataParallel(m).state_dict()}, ["model_state_dict"], ["module."]),
    ],
    ids=["module", "orig_mod", "module+orig_mod", "lightning", "model+optimizer", "state_dict_ema", "nested+module"],
)
def test_wrappers(wrap, unwrapped, prefixes, with_nbt, randomize):
    source = randomize(torchvision.models.resnet18())
    obj = wrap(source)
    if not with_nbt:
        inner = obj
        for key in unwrapped:
            inner = inner[key]
        stripped = _drop_nbt(inner)
        if unwrapped:
            parent = obj
            for key in unwrapped[:-1]:
                parent = parent[key]
            parent[unwrapped[-1]] = stripped
        else:
            obj = stripped
    target = resnetzoo.resnet18()
    report = load_weights(target, obj)
    assert report.ok
    assert report.unwrapped == unwrapped
    assert [p for p, _ in report.stripped_prefixes] == prefixes
    assert len(report.filled) == (0 if with_nbt else 20)
    if not with_nbt:
        assert all(int(target.get_submodule(k.rsplit(".", 1)[0]).num_batches_tracked) == 0 for k in report.filled)
    torch.testing.assert_close(_logits(target), _logits(source), rtol=0, atol=0)


def test_ordered_dict_without_nbt_fails_in_torch_but_loads_here():
    source = torchvision.models.resnet18()
    sd = _drop_nbt(source.state_dict())
    with pytest.raises(RuntimeError, match="Missing key"):
        torchvision.models.resnet18().load_state_dict(sd)
    assert load_weights(resnetzoo.resnet18(), sd).ok


def test_unused_containers_are_noted():
    sd = torchvision.models.resnet18().state_dict()
    report = diagnose(resnetzoo.resnet18(), {"state_dict": sd, "state_dict_ema": sd, "epoch": 2})
    assert report.unwrapped == ["state_dict"]
    assert any("state_dict_ema" in h and "not used" in h for h in report.hints)


def test_not_a_checkpoint_is_a_clear_error():
    with pytest.raises(CheckpointError, match="no tensors found.*epoch"):
        diagnose(resnetzoo.resnet18(), {"epoch": 3, "lr": 0.1})


# -------------------------------------------------------- files, dtype, device
def test_files_and_dtype(tmp_path, randomize):
    source = randomize(torchvision.models.resnet18())
    torch.save({"state_dict": {f"model.{k}": v for k, v in source.state_dict().items()}, "epoch": 1}, tmp_path / "a.ckpt")
    save_file({f"module.{k}": v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "b.safetensors"))
    for name in ("a.ckpt", "b.safetensors"):
        target = resnetzoo.resnet18().double()
        report = load_weights(target, tmp_path / name)
        assert report.ok and report.origin.endswith(name)
        assert target.conv1.weight.dtype == torch.float64
        torch.testing.assert_close(target.conv1.weight, source.conv1.weight.double(), rtol=0, atol=0)


# ---------------------------------------------------------------- broken cases
@pytest.fixture(scope="module")
def r18_state():
    return torchvision.models.resnet18().state_dict()


def test_missing_key_strict_raises_and_leaves_model_unchanged(r18_state):
    sd = dict(r18_state)
    del sd["layer1.0.conv1.weight"]
    model = resnetzoo.resnet18()
    before = _snapshot(model)
    with pytest.raises(WeightsLoadError) as info:
        load_weights(model, sd)
    report = info.value.report
    assert isinstance(report, LoadReport) and not report.loaded
    assert report.missing == ["layer1.0.conv1.weight"]
    assert "layer1.0.conv1.weight" in str(info.value) and "strict=False" in str(info.value)
    assert _same_state(model, before) and model.load_report is None


def test_non_strict_loads_what_fits(r18_state):
    sd = dict(r18_state)
    del sd["layer1.0.conv1.weight"]
    sd["layer2.0.conv1.weight"] = torch.zeros(5, 5, 3, 3)
    sd["extra.weight"] = torch.zeros(3)
    model = resnetzoo.resnet18()
    before = _snapshot(model)
    report = load_weights(model, sd, strict=False)
    assert report.loaded and not report.ok and model.load_report is report
    assert report.missing == ["layer1.0.conv1.weight"]
    assert report.unexpected == ["extra.weight"]
    assert [(m.key, m.checkpoint_shape, m.model_shape) for m in report.mismatched] == [
        ("layer2.0.conv1.weight", (5, 5, 3, 3), (128, 64, 3, 3))
    ]
    assert torch.equal(model.layer1[0].conv1.weight, before["layer1.0.conv1.weight"])  # kept
    assert torch.equal(model.layer2[0].conv1.weight, before["layer2.0.conv1.weight"])  # kept
    assert torch.equal(model.layer3[0].conv1.weight, r18_state["layer3.0.conv1.weight"])  # loaded
    assert "partly loaded" in report.summary


def test_head_mismatch_ignore_head(r18_state):
    model = resnetzoo.resnet18(num_classes=200)
    head_before = model.fc.weight.clone()
    with pytest.raises(WeightsLoadError, match="ignore_head=True"):
        load_weights(model, r18_state)
    report = load_weights(model, r18_state, ignore_head=True)
    assert report.loaded and report.head_mismatch and not report.ok
    assert {m.key for m in report.mismatched} == {"fc.weight", "fc.bias"}
    assert torch.equal(model.fc.weight, head_before)
    assert torch.equal(model.layer4[1].bn2.running_var, r18_state["layer4.1.bn2.running_var"])
    assert any("1000 classes, the model 200: head left at its initialisation" in h for h in report.hints)
    assert "(head)" in str(report)


def test_head_absent_in_model_with_ignore_head(r18_state):
    model = resnetzoo.resnet18(num_classes=0)
    with pytest.raises(WeightsLoadError):
        load_weights(model, r18_state)
    report = load_weights(model, r18_state, ignore_head=True)
    assert report.unexpected == ["fc.weight", "fc.bias"] and report.head_mismatch
    assert any("1000-class classifier, the model none: its keys ignored" in h for h in report.hints)
    assert report.summary.endswith("loaded every model tensor; 2 checkpoint tensors not used")


def test_matching_head_still_loads_with_ignore_head(r18_state):
    model = resnetzoo.resnet18()
    report = load_weights(model, r18_state, ignore_head=True)
    assert report.ok and torch.equal(model.fc.weight, r18_state["fc.weight"])


def test_deeper_checkpoint_names_the_architecture():
    with torch.device("meta"):
        deeper = torchvision.models.resnet101().state_dict()
    report = diagnose(resnetzoo.resnet50(), deeper)
    assert len(report.unexpected) > 100
    assert any("resnet101" in h and "layer3 has 23 blocks, the model 6" in h for h in report.hints)
    text = str(report)
    assert "… and " in text and "more" in text


def test_damaged_deeper_checkpoint_is_still_recognised_without_hint_spam():
    with torch.device("meta"):
        deeper = torchvision.models.resnet101().state_dict()
    del deeper["layer1.0.bn1.running_mean"]
    report = diagnose(resnetzoo.resnet50(), {"state_dict": {f"module.{k}": v for k, v in deeper.items()}})
    assert report.missing == ["layer1.0.bn1.running_mean"]
    assert any(h.startswith("this checkpoint looks like resnet101") for h in report.hints)
    # Keys of the extra blocks are explained by the architecture, not paired with layer1's key.
    assert not any("is close to missing" in h for h in report.hints)


def test_other_architecture_gets_one_hint_not_typo_or_bn_noise(randomize):
    report = diagnose(resnetzoo.resnet50(), timm.create_model("resnet50d").state_dict())
    assert any(h.startswith("this checkpoint looks like resnet50d") for h in report.hints)
    assert not any("is close to missing" in h or "running statistics" in h for h in report.hints)


def test_strict_failure_message_states_the_summary_once(r18_state):
    sd = {k: v for k, v in r18_state.items() if k != "fc.bias"}
    with pytest.raises(WeightsLoadError) as info:
        load_weights(resnetzoo.resnet18(), sd)
    assert str(info.value).count(info.value.report.summary) == 1


def test_unknown_block_counts_are_spelled_out(r18_state):
    sd = {k: v for k, v in r18_state.items() if not k.startswith("layer4.1.")}
    report = diagnose(resnetzoo.resnet18(), sd)
    assert any("(2, 2, 2, 1) blocks per stage" in h and "layer4 has 1 blocks, the model 2" in h for h in report.hints)


def test_near_miss_hint(r18_state):
    sd = dict(r18_state)
    sd["layer1.0.conv1.weigth"] = sd.pop("layer1.0.conv1.weight")
    report = diagnose(resnetzoo.resnet18(), sd)
    assert report.missing == ["layer1.0.conv1.weight"] and report.unexpected == ["layer1.0.conv1.weigth"]
    assert any("'layer1.0.conv1.weigth' is close to missing 'layer1.0.conv1.weight'" in h for h in report.hints)


def test_bn_statistics_missing_hint(r18_state):
    sd = {k: v for k, v in r18_state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    report = diagnose(resnetzoo.resnet18(), sd)
    assert not report.ok and any("running statistics" in h and "parameters()" in h for h in report.hints)


def test_in_chans_hint(r18_state):
    report = diagnose(resnetzoo.resnet18(in_chans=1), r18_state)
    assert any("in_chans=3" in h for h in report.hints)


def test_report_text_json_and_logging(r18_state, caplog):
    sd = dict(r18_state)
    del sd["bn1.weight"]
    sd["junk"] = torch.zeros(1)
    sd["layer1.0.conv1.weight"] = torch.zeros(1, 1, 1, 1)
    model = resnetzoo.resnet18(num_classes=10)
    report = diagnose(model, sd)
    text = str(report)
    assert text.splitlines()[0] == report.summary
    for section in ("Missing from the checkpoint (1)", "Unexpected", "Shape mismatches (3)", "Hints:", "convention"):
        assert section in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False and data["head_mismatch"] is True
    assert data["missing"] == ["bn1.weight"]
    assert {"key": "fc.bias", "checkpoint_shape": [1000], "model_shape": [10]} in data["mismatched"]
    with caplog.at_level(logging.INFO, logger="resnetzoo"):
        load_weights(model, sd, strict=False)
    assert any("partly loaded" in r.getMessage() for r in caplog.records)


def test_bad_model_type():
    with pytest.raises(TypeError, match="nn.Module"):
        load_weights({"not": "a model"}, {})


def test_conventions_are_named_and_unique():
    names = [c.name for c in CONVENTIONS]
    assert len(names) == len(set(names)) and names[0] == "torchvision"
    assert get_convention("timm").name == "timm" and get_convention("torchvision").same_names_as == ("timm",)
    with pytest.raises(ValueError, match="known"):
        get_convention("caffe")
    for convention in CONVENTIONS:
        assert all(rule.name for rule in convention.rules)


def test_forced_convention(r18_state):
    report = diagnose(resnetzoo.resnet18(), r18_state, convention="transformers-ResNetModel")
    assert report.convention == "transformers-ResNetModel" and report.ok  # native keys match no rule


# --------------------------------------------------------------- save_weights
def test_save_weights_roundtrip(tmp_path, randomize):
    model = randomize(resnetzoo.resnet18())
    path = save_weights(model, tmp_path / "sub" / "r18.safetensors", metadata={"dataset": "cub200"})
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt" and meta["arch"] == "resnet18" and meta["convention"] == "torchvision"
    assert meta["dataset"] == "cub200" and meta["resnetzoo_version"]
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary file left behind
    target = resnetzoo.resnet18()
    report = load_weights(target, path)
    assert report.ok and report.convention == "torchvision" and report.metadata["arch"] == "resnet18"
    torch.testing.assert_close(_logits(target), _logits(model), rtol=0, atol=0)


def test_saved_weights_follow_the_umask_not_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_weights(resnetzoo.resnet18(), tmp_path / "w.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_save_weights_refuses_overwrite_and_bad_input(tmp_path):
    model = resnetzoo.resnet18(num_classes=3)
    path = save_weights(model, tmp_path / "m.safetensors")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_weights(resnetzoo.resnet18(num_classes=4), path)
    assert path.read_bytes() == before
    save_weights(resnetzoo.resnet18(num_classes=4), path, overwrite=True)
    assert load_file(str(path))["fc.bias"].shape == (4,)
    with pytest.raises(ValueError, match=".safetensors"):
        save_weights(model, tmp_path / "m.pth")
    with pytest.raises(TypeError, match="str to str"):
        save_weights(model, tmp_path / "n.safetensors", metadata={"epoch": 3})


def test_saved_arch_differs_hint(tmp_path):
    path = save_weights(resnetzoo.resnet18(), tmp_path / "m.safetensors")
    custom = resnetzoo.ResNet(layers=(2, 2, 2, 2), block="basic", arch="my_resnet18")
    report = load_weights(custom, path)
    assert report.ok and any("saved from resnet18, the model is my_resnet18" in h for h in report.hints)


def test_save_weights_shared_tensors(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)
            self.b.weight = self.a.weight

    model = Tied()
    path = save_weights(model, tmp_path / "tied.safetensors")
    loaded = load_file(str(path))
    assert torch.equal(loaded["a.weight"], loaded["b.weight"])
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        assert "arch" not in f.metadata()  # a plain module has no architecture name


def test_v1_metadata_is_a_conflict_for_bottlenecks_only(tmp_path):
    tiny = {"layers": (1, 1, 1, 1), "widths": (4, 8, 8, 8), "stem_width": 8, "num_classes": 3}
    path = save_weights(
        resnetzoo.ResNet(**tiny, stride_in_1x1=True), tmp_path / "v1.safetensors", metadata={"style": "caffe"}
    )
    report = diagnose(resnetzoo.ResNet(**tiny), path)
    assert not report.ok and "ResNet v1 (its mmpretrain style is 'caffe')" in report.conflicts[0]
    assert "1 setting the model does not compute" in report.summary
    # resnetzoo records the stride placement itself: v1 weights into a v1.5 model are refused.
    plain = save_weights(resnetzoo.ResNet(**tiny, stride_in_1x1=True), tmp_path / "plain.safetensors")
    assert "stride_in_1x1=True" in diagnose(resnetzoo.ResNet(**tiny), plain).conflicts[0]
    assert diagnose(resnetzoo.ResNet(**tiny, stride_in_1x1=True), plain).ok
    # Basic blocks have no 1x1 conv: v1 and v1.5 are the same network.
    basic = save_weights(resnetzoo.resnet18(), tmp_path / "r18.safetensors", metadata={"style": "caffe"})
    assert load_weights(resnetzoo.resnet18(), basic).ok
