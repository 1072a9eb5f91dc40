"""What names and shapes cannot show: unusable values, settings the model does not compute,
all-or-nothing loading, bounded work on crafted keys, and the hints that say what happened."""

from __future__ import annotations

import time

import pytest
import timm
import torch
import torch.nn as nn
import torchvision

import resnetzoo
from resnetzoo.errors import WeightsLoadError
from resnetzoo.infer import block_counts
from resnetzoo.remap import diagnose, load_weights
from resnetzoo.weights import read_source

transformers = pytest.importorskip("transformers")

# A small bottleneck ResNet and the transformers config with the same layout.
TINY = {"layers": (1, 1, 1, 1), "widths": (4, 8, 16, 32), "stem_width": 8, "num_classes": 5}
X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _hf_config(**overrides: object):
    fields = {"depths": [1, 1, 1, 1], "hidden_sizes": [16, 32, 64, 128], "embedding_size": 8, "num_labels": 5}
    return transformers.ResNetConfig(**{**fields, **overrides})


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> bool:
    state = model.state_dict()
    return state.keys() == snapshot.keys() and all(torch.equal(state[k], snapshot[k]) for k in state)


# ------------------------------------------------------------------ unusable values
def _damaged(state: dict[str, torch.Tensor], kind: str) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict with one tensor in the middle replaced by one that cannot be right."""
    state = dict(state)
    key = "layer2.0.conv1.weight"
    good = state[key]
    if kind == "nan":
        bad = good.clone()
        bad.view(-1)[3] = float("nan")
        bad.view(-1)[5] = float("inf")
    elif kind == "int":
        bad = torch.ones(good.shape, dtype=torch.int64)
    elif kind == "bool":
        bad = torch.ones(good.shape, dtype=torch.bool)
    elif kind == "complex":
        bad = good.to(torch.complex64)
    elif kind == "meta":
        bad = torch.empty(good.shape, device="meta")
    elif kind == "sparse":
        bad = good.to_sparse()
    else:
        raise AssertionError(kind)
    state[key] = bad
    return state, key


PROBLEMS = {
    "nan": "holds 1 NaN and 1 infinite values",
    "int": "holds int64 values where the model holds floating point",
    "bool": "holds bool values where the model holds floating point",
    "complex": "holds complex64 values where the model holds floating point",
    "meta": "has no data (a meta-device tensor",
    "sparse": "is a sparse_coo tensor",
}


@pytest.mark.parametrize("kind", sorted(PROBLEMS))
def test_unusable_values_are_named_and_refused_leaving_the_model_untouched(kind):
    state, key = _damaged(resnetzoo.ResNet(**TINY).state_dict(), kind)
    report = diagnose(resnetzoo.ResNet(**TINY), state)
    assert not report.ok and report.summary.endswith("does not load strictly")
    assert [(i.key, PROBLEMS[kind] in i.problem) for i in report.invalid] == [(key, True)]
    assert "1 unusable" in report.summary and key not in report.matched
    assert f"Unusable values (not loaded) (1):\n  {key}: " in str(report)
    model = resnetzoo.ResNet(**TINY)
    before = _snapshot(model)
    with pytest.raises(WeightsLoadError) as info:
        load_weights(model, state)
    assert info.value.report.invalid[0].key == key
    assert _unchanged(model, before)


def test_a_non_strict_load_skips_unusable_values_and_says_so():
    state, key = _damaged(resnetzoo.ResNet(**TINY).state_dict(), "nan")
    model = resnetzoo.ResNet(**TINY)
    before = _snapshot(model)
    report = load_weights(model, state, strict=False)
    assert report.summary.endswith("partly loaded: 1 model tensor keeps its initial value")
    assert torch.equal(model.state_dict()[key], before[key])
    assert torch.equal(model.state_dict()["fc.weight"], state["fc.weight"])


def test_integer_buffers_refuse_float_values():
    state = resnetzoo.ResNet(**TINY).state_dict()
    state["bn1.num_batches_tracked"] = torch.tensor(3.5)
    report = diagnose(resnetzoo.ResNet(**TINY), state)
    assert report.invalid[0].key == "bn1.num_batches_tracked"
    assert "float32 values where the model holds integers" in report.invalid[0].problem


class _Exploding(torch.Tensor):
    """A tensor that cannot be converted: stands for any failure while copying."""

    def to(self, *args: object, **kwargs: object) -> torch.Tensor:
        raise RuntimeError("cannot convert")


def test_a_failure_while_converting_leaves_the_model_untouched():
    state = dict(resnetzoo.ResNet(**TINY).state_dict())
    state["fc.bias"] = state["fc.bias"].as_subclass(_Exploding)  # the last key: all others come first
    model = resnetzoo.ResNet(**TINY)
    before = _snapshot(model)
    with pytest.raises(WeightsLoadError, match="the model is unchanged") as info:
        load_weights(model, state)
    assert "cannot convert" in str(info.value) and info.value.report.ok
    assert _unchanged(model, before)


def test_half_precision_values_load_into_a_float_model():
    source = resnetzoo.ResNet(**TINY)
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in source.state_dict().items()}
    model = resnetzoo.ResNet(**TINY)
    assert load_weights(model, state).ok
    assert model.conv1.weight.dtype == torch.float32
    assert torch.equal(model.conv1.weight, state["conv1.weight"].float())


# ------------------------------------------------------- settings a config records
def _hf_folder(tmp_path, config, randomize):
    hf = randomize(transformers.ResNetForImageClassification(config)).eval()
    hf.save_pretrained(tmp_path)
    return hf


def _load_anyway(model: nn.Module, folder) -> torch.Tensor:
    load_weights(model, folder, strict=False)
    with torch.no_grad():
        return model.eval()(X)


def test_downsample_in_first_stage_is_refused(tmp_path, randomize):
    hf = _hf_folder(tmp_path, _hf_config(downsample_in_first_stage=True), randomize)
    model = resnetzoo.ResNet(**TINY)
    report = diagnose(model, tmp_path)
    # Every tensor fits by name and shape: only the config tells.
    assert not report.missing and not report.unexpected and not report.mismatched and not report.ok
    assert "downsample_in_first_stage=true" in report.conflicts[0] and "transformers' ResNetModel" in report.conflicts[0]
    before = _snapshot(model)
    with pytest.raises(WeightsLoadError):
        load_weights(model, tmp_path)
    assert _unchanged(model, before)
    # The refusal is real: loaded anyway, the logits differ from transformers'.
    with torch.no_grad():
        expected = hf(X).logits
    assert not torch.allclose(_load_anyway(resnetzoo.ResNet(**TINY), tmp_path), expected, atol=1e-3)


def test_hidden_act_other_than_relu_is_refused_since_transformers_keeps_relu_inside_blocks(tmp_path, randomize):
    hf = _hf_folder(tmp_path, _hf_config(hidden_act="gelu"), randomize)
    report = diagnose(resnetzoo.ResNet(**TINY, act="gelu"), tmp_path)
    assert not report.ok and "hidden_act='gelu'" in report.conflicts[0]
    with torch.no_grad():
        expected = hf(X).logits
    # Neither activation everywhere computes transformers' network.
    for act in ("relu", "gelu"):
        assert not torch.allclose(_load_anyway(resnetzoo.ResNet(**TINY, act=act), tmp_path), expected, atol=1e-3)


def test_hidden_act_relu_is_honoured_and_refused_for_another_activation(tmp_path, randomize):
    hf = _hf_folder(tmp_path, _hf_config(hidden_act="relu"), randomize)
    report = diagnose(resnetzoo.ResNet(**TINY, act="silu"), tmp_path)
    assert not report.ok and "trained with ReLU" in report.conflicts[0] and "act='relu'" in report.conflicts[0]
    model = resnetzoo.ResNet(**TINY)
    assert load_weights(model, tmp_path).ok
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(X), hf(X).logits, rtol=1e-5, atol=1e-5)


def test_embedding_size_and_num_channels_are_honoured_through_the_shapes(tmp_path, randomize):
    hf = _hf_folder(tmp_path, _hf_config(embedding_size=16, num_channels=1), randomize)
    report = diagnose(resnetzoo.ResNet(**TINY), tmp_path)
    assert not report.ok and {m.key for m in report.mismatched} >= {"conv1.weight"}
    model = resnetzoo.ResNet(**{**TINY, "stem_width": 16}, in_chans=1)
    assert load_weights(model, tmp_path).ok
    gray = X[:, :1]
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(gray), hf(gray).logits, rtol=1e-5, atol=1e-5)


def test_every_field_of_transformers_resnet_config_is_read(tmp_path):
    # Every field that changes the computation is read from config.json, and then checked:
    # in the shapes (widths, depths, layer type, stem, input channels) or as a setting.
    # A field transformers adds later must be looked at here before it is trusted.
    computation = {"num_channels", "embedding_size", "hidden_sizes", "depths", "layer_type", "hidden_act",
                   "downsample_in_first_stage", "downsample_in_bottleneck"}  # fmt: skip
    annotations = vars(transformers.ResNetConfig).get("__annotations__", {})
    own = {name for name, kind in annotations.items() if "ClassVar" not in str(kind)}
    assert own == computation, f"ResNetConfig fields not checked by resnetzoo: {sorted(own - computation)}"
    transformers.ResNetForImageClassification(_hf_config()).save_pretrained(tmp_path)
    assert computation <= set(read_source(tmp_path).metadata)


# ------------------------------------------------------------------- bounded work
def test_a_crafted_layer_number_costs_nothing_and_gives_a_short_report():
    state = dict(resnetzoo.ResNet(**TINY).state_dict())
    state["layer10000000.0.conv1.weight"] = torch.zeros(1)
    start = time.perf_counter()
    report = diagnose(resnetzoo.ResNet(**TINY), state)
    text = str(report)
    assert time.perf_counter() - start < 2.0
    assert report.unexpected == ["layer10000000.0.conv1.weight"] and len(text) < 5_000


def test_keys_with_thousands_of_digits_are_just_unexpected():
    state = dict(resnetzoo.ResNet(**TINY).state_dict())
    huge = "9" * 5000
    state[f"layer{huge}.0.conv1.weight"] = torch.zeros(1)
    state[f"resnet.encoder.stages.{huge}.layers.0.layer.0.convolution.weight"] = torch.zeros(1)
    report = diagnose(resnetzoo.ResNet(**TINY), state)
    assert len(report.unexpected) == 2 and not report.ok
    assert max(len(line) for line in str(report).splitlines()) < 400


def test_block_counts_are_bounded_by_the_number_of_keys():
    assert block_counts(["layer100000000.0.x", "layer1.0.conv1.weight"]) == (1,)
    assert block_counts(["layer1.99999.x"]) == ()
    assert block_counts(["layer1.0.a", "layer1.1.a", "layer2.0.a"]) == (2, 1)


def test_many_unexpected_keys_near_the_missing_ones_stay_fast():
    state = dict(resnetzoo.ResNet(**TINY).state_dict())
    del state["layer1.0.conv1.weight"]
    for i in range(20_000):
        state[f"layer1.0.conv1_{i}.weight"] = torch.zeros(1)
    start = time.perf_counter()
    report = diagnose(resnetzoo.ResNet(**TINY), state)
    assert time.perf_counter() - start < 5.0 and len(report.unexpected) == 20_000


# ------------------------------------------------------------ saying the right thing
def test_another_depth_speaks_of_the_classifier_width_not_its_classes():
    with torch.device("meta"):
        model = resnetzoo.resnet50()
    report = diagnose(model, torchvision.models.resnet18().state_dict())
    head = [h for h in report.hints if "classifier" in h]
    assert head == [
        "the checkpoint's classifier takes 512 features, the model's 2048: the whole network differs, not only "
        "its head (another depth or width); build the architecture the checkpoint was saved from"
    ]
    assert not any("ignore_head" in h for h in report.hints)
    assert any("looks like resnet18" in h for h in report.hints)


def test_a_classifier_with_the_same_class_count_is_told_by_its_keys():
    with torch.device("meta"):
        model = resnetzoo.resnet18()
    state = torchvision.models.resnet18().state_dict()
    del state["fc.bias"]
    report = diagnose(model, state)
    head = [h for h in report.hints if "classifier" in h]
    assert head == [
        "the classifier (fc.*) differs though it has 1000 classes on both sides: the checkpoint lacks fc.bias: "
        "load with ignore_head=True to leave the model's head at its initialisation"
    ]
    assert report.hints_for("cli") == [h.replace("load with ignore_head=True", "pass --ignore-head")
                                       for h in report.hints]
    state = {**torchvision.models.resnet18().state_dict(), "fc.scale": torch.ones(1)}
    head = [h for h in diagnose(model, state).hints if "classifier" in h]
    assert len(head) == 1 and "the model has no fc.scale" in head[0] and "1000 classes on both sides" in head[0]


def test_hints_are_worded_for_python_or_the_command_line():
    with torch.device("meta"):
        model = resnetzoo.resnet18(num_classes=10)
    report = diagnose(model, torchvision.models.resnet18().state_dict())
    python, cli = report.render(), report.render(audience="cli")
    assert str(report) == python and "load with ignore_head=True" in python and "--ignore-head" not in python
    assert "pass --ignore-head to leave the model's head at its initialisation" in cli and "ignore_head=" not in cli
    assert report.to_dict(audience="cli")["hints"] == report.hints_for("cli") != report.to_dict()["hints"]
    assert "cli_hints" not in report.to_dict()
    with pytest.raises(ValueError, match="audience must be one of python, cli"):
        report.render(audience="shell")


def test_a_groupnorm_checkpoint_into_a_batchnorm_model_names_groupnorm():
    report = diagnose(resnetzoo.resnet18(), resnetzoo.resnet18(norm="gn").state_dict())
    hint = next(h for h in report.hints if "running statistics" in h)
    assert "trained with GroupNorm or another norm that keeps none (then build the model with norm='gn')" in hint
    assert "model's BatchNorm2d layers" in hint


def test_a_batchnorm_checkpoint_into_a_groupnorm_model_says_so_and_counts_what_loaded():
    model = resnetzoo.resnet18(norm="gn")
    report = load_weights(model, torchvision.models.resnet18().state_dict(), strict=False)
    assert any(
        h.startswith("the checkpoint was trained with BatchNorm (it has running statistics for 20 norm layers")
        and "the model uses GroupNorm32" in h
        and "norm='bn'" in h
        for h in report.hints
    )
    total = len(model.state_dict())
    assert len(report.matched) == total
    assert report.summary.endswith(f"— loaded every model tensor; {len(report.unexpected)} checkpoint tensors not used")
    assert "partly" not in report.summary


def test_the_detected_convention_is_named_and_shared_names_are_said():
    plain = timm.create_model("resnet18").state_dict()
    r18 = diagnose(resnetzoo.resnet18(), plain)
    assert r18.ok and r18.convention == "torchvision" and r18.same_names_as == ["timm"]
    assert "[torchvision = timm]" in r18.summary
    assert "convention  torchvision (timm uses the same names here: the file may come from either)" in str(r18)
    r18d = diagnose(resnetzoo.resnet18d(), timm.create_model("resnet18d").state_dict())
    assert r18d.ok and r18d.convention == "timm" and r18d.same_names_as == [] and "[timm]" in r18d.summary
    forced = diagnose(resnetzoo.resnet18(), plain, convention="timm")
    assert "[timm]" in forced.summary
