"""Wrapper discovery by fit, create_model_from_checkpoint, and what each bad checkpoint is told.

Tiny networks (8 and 16 channels) keep every test well under a second.
"""

from __future__ import annotations

import argparse
import time

import pytest
import timm
import torch

import resnetzoo
from resnetzoo.cli import main
from resnetzoo.errors import ArchitectureError, CheckpointError, WeightsLoadError
from resnetzoo.remap.conventions import CONVENTIONS, discover, to_native

TINY = dict(layers=(1, 1), widths=(8, 16), stem_width=8, block="basic", num_classes=3)
TINY_CALL = 'resnetzoo.ResNet(layers=(1, 1), block="basic", widths=(8, 16), stem_width=8, num_classes=3)'
X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def tiny(randomize):
    return randomize(resnetzoo.ResNet(**TINY)).eval()


def _prefixed(sd, prefix, shift=0.0):
    return {prefix + k: (v + shift if v.is_floating_point() else v) for k, v in sd.items()}


def _same_weights(model, state):
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


# ------------------------------------------------------------------ twins
def test_moco_takes_the_query_encoder_and_names_the_rest(tiny):
    sd = tiny.state_dict()
    checkpoint = {
        "epoch": 200,
        "arch": "resnet50",
        "state_dict": {
            **_prefixed(sd, "module.encoder_q."),
            **_prefixed(sd, "module.encoder_k.", shift=1.0),
            "module.queue": torch.randn(3, 64),
            "module.queue_ptr": torch.zeros(1, dtype=torch.long),
        },
    }
    model, report = resnetzoo.create_model_from_checkpoint(checkpoint)
    assert report.hints[0] == f"built {TINY_CALL} from the checkpoint's names and shapes"
    assert report.ok and _same_weights(model, sd)
    assert [p for p, _ in report.stripped_prefixes] == ["module.", "encoder_q."]
    hints = "\n".join(report.hints)
    assert "took the sub-tree 'module.encoder_q.' (MoCo evaluates and transfers the query encoder)" in hints
    assert "pass prefix='module.encoder_k.' to load it instead" in hints
    assert "not loaded: 'module.encoder_k.' (" in hints and "'module.queue' (1 tensor)" in hints
    assert "the checkpoint holds ['epoch', 'arch'] (not loaded)" in hints
    assert any("arch='resnet50'" in h for h in report.hints)  # what the file claims, against its tensors

    other, _ = resnetzoo.create_model_from_checkpoint(checkpoint, prefix="module.encoder_k.")
    assert _same_weights(other, _prefixed(sd, "", shift=1.0))
    inferred = resnetzoo.inspect_checkpoint(checkpoint)
    assert inferred.prefix == "module.encoder_q." and inferred.alternatives == ("module.encoder_k.",)


def test_dino_nested_teacher_and_student(tiny):
    sd = tiny.state_dict()
    head = {"mlp.0.weight": torch.randn(4, 16)}
    checkpoint = {
        "student": {**_prefixed(sd, "module.backbone.", shift=1.0), **_prefixed(head, "module.head.")},
        "teacher": {**_prefixed(sd, "module.backbone."), **_prefixed(head, "module.head.")},
        "optimizer": {"state": {0: {"momentum_buffer": torch.zeros(2)}}, "param_groups": [{"lr": 0.1}]},
        "epoch": 100,
    }
    model, report = resnetzoo.create_model_from_checkpoint(checkpoint)
    assert report.ok and _same_weights(model, sd)
    hints = "\n".join(report.hints)
    assert "took the sub-tree 'teacher.module.backbone.' (DINO evaluates and transfers the teacher)" in hints
    assert "'optimizer.state.0.momentum_buffer' (1 tensor)" in hints and "'student.' (" in hints  # the optimizer state is named, not loaded


def _dino_file(tiny, path):
    # As main_dino.py saves it: both networks DDP-wrapped, and the run's argparse.Namespace.
    sd = tiny.state_dict()
    torch.save({
        "student": _prefixed(sd, "module.backbone.", shift=1.0),
        "teacher": _prefixed(sd, "module.backbone."),
        "epoch": 100,
        "args": argparse.Namespace(arch="resnet50", lr=0.0005, out_dim=65536),
    }, path)  # fmt: skip
    return path


def test_a_dino_checkpoint_with_its_args_is_refused_then_recovered(tiny, tmp_path):
    path = _dino_file(tiny, tmp_path / "checkpoint.pth")
    for call in (resnetzoo.create_model_from_checkpoint, resnetzoo.inspect_checkpoint):
        with pytest.raises(CheckpointError, match=r"argparse\.Namespace.*unsafe_objects='stub'.*--unsafe-objects stub"):
            call(path)
    assert resnetzoo.inspect_checkpoint(path, unsafe_objects="stub").prefix == "teacher.module.backbone."
    model, report = resnetzoo.create_model_from_checkpoint(path, unsafe_objects="stub")
    assert report.ok and _same_weights(model, tiny.state_dict())
    assert report.recovered["checkpoint['args']"] == {
        "__class__": "argparse.Namespace", "arch": "resnet50", "lr": 0.0005, "out_dim": 65536
    }  # fmt: skip


@pytest.mark.parametrize("command", ["inspect", "convert"])
def test_the_cli_recovers_with_unsafe_objects_stub(command, tiny, tmp_path, capsys):
    path = _dino_file(tiny, tmp_path / "checkpoint.pth")
    out = [str(tmp_path / "out.safetensors")] if command == "convert" else []
    assert main([command, str(path), *out]) == 2
    assert "--unsafe-objects stub" in capsys.readouterr().err
    assert main([command, str(path), *out, "--unsafe-objects", "stub"]) == 0
    printed = capsys.readouterr().out
    assert "checkpoint['args']" in printed and '"lr": 0.0005' in printed
    if command == "convert":
        assert _same_weights(resnetzoo.create_model_from_checkpoint(out[0])[0], tiny.state_dict())


def test_unknown_overrides_are_named_with_the_accepted_keywords(tiny):
    with pytest.raises(ValueError, match=r"unknown keyword\(s\) 'unsafe_object'.*unsafe_objects.*num_classes"):
        resnetzoo.create_model_from_checkpoint(tiny.state_dict(), unsafe_object="stub")


def test_byol_online_network(tiny):
    sd = tiny.state_dict()
    checkpoint = {
        **_prefixed(sd, "online_network.encoder."),
        **_prefixed(sd, "target_network.encoder.", shift=1.0),
        "online_network.projector.net.0.weight": torch.randn(4, 16),
    }
    model, report = resnetzoo.create_model_from_checkpoint(checkpoint)
    assert report.ok and _same_weights(model, sd)
    assert any("'online_network.projector.net.0.weight' (1 tensor)" in h for h in report.hints)


def test_unknown_twins_must_be_chosen(tiny):
    sd = tiny.state_dict()
    checkpoint = {**_prefixed(sd, "net_a."), **_prefixed(sd, "net_b.", shift=1.0)}
    with pytest.raises(ArchitectureError, match=r"2 sub-trees .* \('net_a\.', 'net_b\.'.*choose one with prefix="):
        resnetzoo.create_model_from_checkpoint(checkpoint)
    target = resnetzoo.ResNet(**TINY)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ArchitectureError):
        resnetzoo.load_weights(target, checkpoint)
    assert _same_weights(target, before)  # nothing loaded half-way
    model, _ = resnetzoo.create_model_from_checkpoint(checkpoint, prefix="net_b")  # the dot is optional
    assert _same_weights(model, _prefixed(sd, "", shift=1.0))
    assert resnetzoo.load_weights(target, checkpoint, prefix="net_a.").ok


def test_a_prefix_that_is_not_there(tiny):
    with pytest.raises(ArchitectureError, match=r"no key of the checkpoint starts with prefix='encoder_q\.'"):
        resnetzoo.create_model_from_checkpoint(_prefixed(tiny.state_dict(), "module."), prefix="encoder_q.")


def test_lightning_extras_are_named_and_the_network_loads_strictly(tiny):
    checkpoint = {"state_dict": {**_prefixed(tiny.state_dict(), "model."), "criterion.pos_weight": torch.ones(3)}}
    report = resnetzoo.load_weights(resnetzoo.ResNet(**TINY), checkpoint)
    assert report.ok and any("'criterion.pos_weight' (1 tensor)" in h for h in report.hints)


# ------------------------------------------------------------------ bad input
def test_mixed_conventions_are_refused_with_what_was_found(tiny):
    hf = resnetzoo.export_state_dict(tiny, "transformers")
    native = tiny.state_dict()
    mixed = {k: v for k, v in hf.items() if "stages.1" not in k}
    mixed.update({k: v for k, v in native.items() if k.startswith("layer2.")})
    with pytest.raises(ArchitectureError, match=r"mixes naming conventions: \d+ keys have transformers-\w+ names and \d+ torchvision"):
        resnetzoo.create_model_from_checkpoint(mixed)
    report = resnetzoo.diagnose(resnetzoo.ResNet(**TINY), mixed)
    assert any("mixes naming conventions" in h for h in report.hints)


def test_not_a_resnet_and_truncated_trees_build_nothing(tiny):
    sd = tiny.state_dict()
    with pytest.raises(ArchitectureError, match="this is not a ResNet: its keys look like a Vision Transformer"):
        resnetzoo.create_model_from_checkpoint(
            {"cls_token": torch.zeros(1, 1, 8), "pos_embed": torch.zeros(1, 5, 8), "blocks.0.attn.qkv.weight": torch.zeros(24, 8)}
        )
    with pytest.raises(ArchitectureError, match="stage layer2 is missing"):
        resnetzoo.create_model_from_checkpoint({k: v for k, v in sd.items() if not k.startswith("layer2")} | {"layer3.0.conv1.weight": torch.zeros(1, 1, 3, 3)})


def test_residual_looking_blocks_of_another_network_are_not_a_resnet():
    # An EfficientNet's blocks have conv1/bn1/conv2/bn2 keys: each fits a block, none is a ResNet.
    sd = timm.create_model("efficientnet_b0", pretrained=False).state_dict()
    for wrapped in (sd, {f"module.{k}": v for k, v in sd.items()}):
        with pytest.raises(ArchitectureError, match=r"this is not a ResNet: its keys look like an EfficientNet or MobileNet \(timm\)"):
            resnetzoo.create_model_from_checkpoint(wrapped)
    # A ResNet without its stem is still read as one, and the gap named.
    tv = {f"model.{k}": v for k, v in resnetzoo.resnet18().state_dict().items() if not k.startswith(("conv1", "bn1"))}
    with pytest.raises(ArchitectureError, match=r"there is no stem \(conv1\)"):
        resnetzoo.inspect_checkpoint(tv)


def test_what_the_weights_cannot_show_is_said_and_an_anti_aliased_claim_refused(tiny):
    from resnetzoo.infer import NOT_IN_THE_WEIGHTS

    _, report = resnetzoo.create_model_from_checkpoint(tiny.state_dict())
    assert NOT_IN_THE_WEIGHTS in report.hints and "anti-aliasing" in NOT_IN_THE_WEIGHTS
    assert NOT_IN_THE_WEIGHTS in str(resnetzoo.inspect_checkpoint(tiny.state_dict()))
    # timm's train.py records the model name: resnetblur50's tensors are resnet50's, its outputs are not.
    checkpoint = {"epoch": 3, "arch": "resnetblur50", "state_dict": tiny.state_dict()}
    with pytest.raises(ArchitectureError, match=r"arch='resnetblur50': timm's anti-aliased ResNet.*timm.create_model"):
        resnetzoo.create_model_from_checkpoint(checkpoint)


@pytest.mark.parametrize("extra", ["criterion.weight", "layer100000000.0.x"])
def test_a_stray_tensor_beside_the_network_is_reported_not_fatal(extra, tiny, tmp_path, capsys):
    path = tmp_path / "extra.pth"
    torch.save({**tiny.state_dict(), extra: torch.ones(3)}, path)
    assert main(["inspect", str(path)]) == 1  # built, and told that it does not load strictly
    out = capsys.readouterr().out
    assert "Architecture: " + TINY_CALL in out and "no place in a ResNet" in out and "does not load strictly" in out
    with pytest.raises(WeightsLoadError, match=r"1 unexpected"):
        resnetzoo.create_model_from_checkpoint(path)  # never silently
    model, report = resnetzoo.create_model_from_checkpoint(path, strict=False)
    assert report.unexpected == [extra] and _same_weights(model, tiny.state_dict())
    # Inside a block, an unknown tensor changes what the network computes: not built around.
    torch.save({**tiny.state_dict(), "layer1.0.se.fc.weight": torch.ones(3, 3)}, path)
    assert main(["inspect", str(path)]) == 2
    assert "--arch NAME" in capsys.readouterr().err


def test_a_missing_last_stage_is_named_or_flagged():
    with torch.device("meta"):
        sd = resnetzoo.resnet50().state_dict()
    without_layer4 = {k: v for k, v in sd.items() if not k.startswith("layer4.")}
    with pytest.raises(ArchitectureError, match=r"stage layer4 is missing: the classifier fc takes 2048 features.*\(layer3\) gives 1024"):
        resnetzoo.inspect_checkpoint(without_layer4)
    # Without the classifier too: a C4 backbone, or a truncated file. Built, but never silently.
    inferred = resnetzoo.inspect_checkpoint({k: v for k, v in without_layer4.items() if not k.startswith("fc.")})
    assert inferred.layers == (3, 4, 6)
    (cut,) = [a for a in inferred.ambiguities if a.what.startswith("3 stages")]
    assert "C4 backbone" in cut.why and "layer4 missing" in cut.alternative


def test_inspect_of_a_zero_class_head_says_it_loads_strictly(tiny, tmp_path, capsys):
    path = tmp_path / "head0.pth"
    torch.save({**tiny.state_dict(), "fc.weight": torch.zeros(0, 16), "fc.bias": torch.zeros(0)}, path)
    assert main(["inspect", str(path)]) == 0
    assert "loads strictly" in capsys.readouterr().out


def test_dino_is_labelled_with_its_own_names(tiny, tmp_path):
    checkpoint = {"teacher": _prefixed(tiny.state_dict(), "backbone."), "student": _prefixed(tiny.state_dict(), "backbone.", 1.0)}
    inferred = resnetzoo.inspect_checkpoint(checkpoint)
    assert (inferred.prefix, inferred.convention) == ("teacher.backbone.", "torchvision")


def test_a_zero_class_head_is_left_out(tiny):
    sd = {**tiny.state_dict(), "fc.weight": torch.zeros(0, 16), "fc.bias": torch.zeros(0)}
    model, report = resnetzoo.create_model_from_checkpoint(sd)
    assert model.num_classes == 0 and report.loaded and report.summary.endswith("— loaded")
    assert report.ok and not report.unexpected  # left out on purpose: the verdict agrees with the model
    assert any("0 classes" in h for h in report.hints)


def test_overrides_and_a_new_head(tiny):
    sd = tiny.state_dict()
    with pytest.raises(WeightsLoadError, match="ignore_head=True"):
        resnetzoo.create_model_from_checkpoint(sd, num_classes=10)
    model, report = resnetzoo.create_model_from_checkpoint(sd, num_classes=10, ignore_head=True, drop_rate=0.1)
    assert model.fc.out_features == 10 and model.drop_rate == 0.1 and report.head_mismatch
    assert torch.isfinite(model.fc.weight).all() and model.fc.weight.abs().sum() > 0  # initialised, not raw memory
    assert torch.equal(model.layer2[0].conv1.weight, sd["layer2.0.conv1.weight"])
    loose, report = resnetzoo.create_model_from_checkpoint(sd, strict=False, num_classes=5)
    assert report.loaded and not report.ok and loose.fc.out_features == 5


def test_detectron2_folded_norms_are_filled_with_mean_0_and_variance_1(tiny):
    d2 = {}
    for key, value in tiny.state_dict().items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        key = key if key.startswith("layer") else "stem." + key
        for t in (1, 2):
            key = key.replace(f"layer{t}", f"res{t + 1}")
        key = key.replace("bn1", "conv1.norm").replace("bn2", "conv2.norm").replace("downsample.0", "shortcut")
        d2[key.replace("downsample.1", "shortcut.norm").replace("stem.fc.", "linear.")] = value
    model, report = resnetzoo.create_model_from_checkpoint({"model": d2})
    assert report.ok and report.convention == "detectron2" and model.bn1.running_var.eq(1).all()
    assert any("filled with mean 0 and variance 1" in h for h in report.hints)
    assert type(model.bn1).__name__ == "FrozenBatchNorm2d"


# ------------------------------------------------------------------ the rules, both ways
@pytest.mark.parametrize("convention", [c for c in CONVENTIONS if c.rules], ids=lambda c: c.name)
def test_every_rule_runs_backwards(convention):
    backwards = convention.reverse()
    for rule, reverse in zip(convention.rules, backwards.rules, strict=True):
        for key in ("layer3.12.downsample.0.weight", "layer1.0.conv2.weight", "conv1.weight", "bn1.running_var", "fc.bias",
                    "conv1.6.weight", "layer1.0.bn3.num_batches_tracked"):  # fmt: skip
            out = reverse.apply(key)
            if out is not None and rule.apply(out) is not None:
                assert rule.apply(out) == key, (rule.name, key, out)


def test_discover_scores_names_and_shapes():
    with torch.device("meta"):
        sd = resnetzoo.resnet18().state_dict()
    found = discover({f"backbone.bottom_up.{k}": v for k, v in sd.items()})
    assert found.prefix == "backbone.bottom_up." and found.score == len(sd)
    # Right names with the wrong rank do not count: only what may be a norm's 1-d tensor fits
    # (downsample.N.weight is the shortcut's conv or its norm).
    flat = {f"a.{k}": torch.zeros(3) for k in sd}
    could_be_1d = sum(v.ndim == 1 or k.endswith("downsample.0.weight") for k, v in sd.items())
    assert discover(flat).score == could_be_1d < len(sd)


def test_discovery_is_bounded():
    start = time.perf_counter()
    deep = {".".join(["x"] * 500) + f".{i}": torch.zeros(1) for i in range(2000)}
    remapped = to_native(deep)
    assert remapped.prefix == "" and len(remapped.state_dict) == 2000
    # 10000 two-tensor sub-trees (a stem and a block) that all fit equally: named, not compared pairwise.
    many = {f"net{i}.{part}.weight": torch.zeros(1, 1, 1, 1) for i in range(10000) for part in ("conv1", "layer1.0.conv1")}
    with pytest.raises(ArchitectureError, match="sub-trees of the checkpoint fit a ResNet equally well"):
        to_native(many)
    assert time.perf_counter() - start < 20  # seconds on a busy 2-core machine; quadratic work would take hours


def test_model_tensors_that_a_state_dict_lacks_are_initialised(tiny, monkeypatch):
    class WithScratch(resnetzoo.ResNet):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.register_buffer("scratch", torch.ones(1), persistent=False)

    # A strict load skips the initialisation, except where the model holds what no checkpoint does.
    monkeypatch.setattr(resnetzoo.registry, "ResNet", WithScratch)
    model, report = resnetzoo.create_model_from_checkpoint(tiny.state_dict())
    assert report.ok and torch.equal(model.scratch, torch.ones(1))
