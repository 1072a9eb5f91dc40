"""The resnetzoo command: exit codes, output, and conversions that load back strictly."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from safetensors.torch import save_file

import resnetzoo
from resnetzoo.cli import main
from resnetzoo.remap import load_weights

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tv_checkpoint(tmp_path_factory):
    """A torchvision resnet18 training checkpoint ({"state_dict": …, "epoch": …}) on disk."""
    path = tmp_path_factory.mktemp("ckpt") / "r18.pth"
    torch.save({"state_dict": torchvision.models.resnet18().state_dict(), "epoch": 3}, path)
    return path


@pytest.fixture(scope="module")
def hf_model():
    config = transformers.ResNetConfig(
        layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], embedding_size=64, num_labels=10
    )
    return transformers.ResNetForImageClassification(config).eval()


@pytest.fixture(scope="module")
def hf_checkpoint(hf_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("hf") / "model.safetensors"
    save_file({k: v.contiguous() for k, v in hf_model.state_dict().items()}, str(path))
    return path


def test_inspect_tells_the_architecture(tv_checkpoint, capsys):
    assert main(["inspect", str(tv_checkpoint)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "Architecture: resnetzoo.resnet18()" and not err
    assert "resnet18 <- " in out and "loads strictly" in out and "unwrapped   checkpoint['state_dict']" in out


def test_inspect_json(hf_checkpoint, capsys):
    assert main(["inspect", str(hf_checkpoint), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["model_arch"] == "resnet18"
    assert data["convention"] == "transformers-ResNetForImageClassification"
    assert data["architecture"]["call"] == "resnetzoo.resnet18(num_classes=10)"


def test_inspect_mismatch_exit_1(tv_checkpoint, capsys):
    assert main(["inspect", str(tv_checkpoint), "--arch", "resnet34"]) == 1
    out = capsys.readouterr().out
    assert "does not load strictly" in out and "looks like resnet18" in out


def test_inspect_head_mismatch_exit_1(tv_checkpoint, capsys):
    assert main(["inspect", str(tv_checkpoint), "--arch", "resnet18", "--num-classes", "200"]) == 1
    assert "1000 classes, the model 200" in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"version https://git-lfs.github.com/spec/v1\n"])
def test_inspect_unreadable_exit_2(tmp_path, content, capsys):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    assert main(["inspect", str(path)]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("resnetzoo: error:") and str(path) in err and "Traceback" not in err + out


def test_inspect_missing_file_exit_2(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "nope.pth")]) == 2
    assert "not found" in capsys.readouterr().err


def test_unknown_arch_exit_2(tv_checkpoint, capsys):
    assert main(["inspect", str(tv_checkpoint), "--arch", "resnet51"]) == 2
    assert "unknown model 'resnet51'" in capsys.readouterr().err


def test_convert_then_load_strict(hf_model, hf_checkpoint, tmp_path, capsys):
    out = tmp_path / "native.safetensors"
    assert main(["convert", str(hf_checkpoint), str(out), "--arch", "resnet18"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    model = resnetzoo.resnet18(num_classes=10).eval()
    report = load_weights(model, out)
    assert report.ok and report.convention == "torchvision" and report.metadata["arch"] == "resnet18"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf_model(x).logits, rtol=0, atol=0)
    # An existing output is never replaced without --overwrite.
    before = out.read_bytes()
    assert main(["convert", str(hf_checkpoint), str(out), "--arch", "resnet18"]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["convert", str(hf_checkpoint), str(out), "--arch", "resnet18", "--overwrite"]) == 0


def test_convert_refuses_partial(tv_checkpoint, tmp_path, capsys):
    out = tmp_path / "r34.safetensors"
    assert main(["convert", str(tv_checkpoint), str(out), "--arch", "resnet34"]) == 1
    assert "--allow-partial" in capsys.readouterr().err and not out.exists()
    assert main(["convert", str(tv_checkpoint), str(out), "--arch", "resnet34", "--allow-partial"]) == 0
    assert "partly loaded" in capsys.readouterr().out and out.exists()


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "  resnet50\n" in out and "resnet50.tv_in1k" in out and "top-1 76.13%" in out
    assert main(["list", "resnext*"]) == 0
    out = capsys.readouterr().out
    assert "resnext50_32x4d" in out and "  resnet50\n" not in out


def test_download_offline_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RESNETZOO_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("RESNETZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    assert main(["download", "resnet18"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("resnetzoo: error:") and "resnet18" in err and "Traceback" not in err
    assert not out


def test_usage_errors(capsys):
    assert main([]) == 2
    assert main(["inspect"]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["--help"]) == 0
    assert "inspect" in capsys.readouterr().out


def test_download_prints_path(tmp_path, monkeypatch, capsys):
    import resnetzoo.weights

    fetched = []
    monkeypatch.setattr(resnetzoo.weights, "fetch_weights", lambda spec: fetched.append(spec.name) or tmp_path / "w.pth")
    assert main(["download", "resnet50.tv2_in1k"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "w.pth") and fetched == ["resnet50.tv2_in1k"]
    assert main(["download", "resnet50.nope"]) == 2
    assert "no weights tagged 'nope'" in capsys.readouterr().err


# ------------------------------------------------------------------ no torch for help and version
@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["inspect", "--help"], [], ["frobnicate"], ["list"]])
def test_help_version_list_and_usage_errors_import_no_torch(argv):
    import subprocess
    import sys

    code = (
        "import sys\nfrom resnetzoo.cli import main\nrc = main(sys.argv[1:])\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', rc)"
    )
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip().splitlines()[-1].startswith("NO-TORCH"), result.stdout + result.stderr
    if argv == ["--version"]:
        assert result.stdout.startswith(f"resnetzoo {resnetzoo.__version__}\n")


def test_list_is_in_natural_order(capsys):
    assert main(["list", "resnet*"]) == 0
    out = capsys.readouterr().out
    names = [line.strip() for line in out.split("Weights")[0].splitlines()[1:]]
    assert names[:5] == ["resnet18", "resnet18d", "resnet34", "resnet34d", "resnet50"]
    assert names.index("resnet101") > names.index("resnet50d")
    weights = [line.split()[0] for line in out.split("Weights")[1].splitlines()[1:]]
    assert weights[:4] == ["resnet18.tv_in1k", "resnet18d.ra2_in1k", "resnet34.tv_in1k", "resnet34d.ra2_in1k"]
    assert weights.index("resnet101.tv_in1k") > weights.index("resnet50d.a1_in1k")
    assert weights == [s.name for s in resnetzoo.weights.list_pretrained("resnet*")]


def test_an_unknown_architecture_lists_the_others_in_natural_order(capsys):
    assert main(["download", "resnet5O"]) == 2
    err = capsys.readouterr().err
    listed = err.split("Architectures with weights: ")[1].rstrip(".\n").split(", ")
    assert listed[:6] == ["resnet18", "resnet18d", "resnet34", "resnet34d", "resnet50", "resnet50d"]
    assert listed.index("resnext50_32x4d") < listed.index("resnext101_32x8d")


# ------------------------------------------------------------------ messages for shell users
def test_the_head_hint_names_the_flag_not_the_keyword(tv_checkpoint, capsys):
    args = ["inspect", str(tv_checkpoint), "--arch", "resnet18", "--num-classes", "10"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "classifier has 1000 classes, the model 10: pass --ignore-head to leave the model's head" in out
    assert "ignore_head" not in out
    assert main([*args, "--json"]) == 1
    hints = json.loads(capsys.readouterr().out)["hints"]
    assert any("pass --ignore-head" in h for h in hints) and not any("ignore_head" in h for h in hints)


@pytest.mark.parametrize(("command", "what"), [("convert", "converted"), ("export", "exported")])
def test_a_misfit_is_told_in_flags_not_python_keywords(tv_checkpoint, tmp_path, capsys, command, what):
    out = tmp_path / ("o.safetensors" if command == "convert" else "o.onnx")
    assert main([command, str(tv_checkpoint), str(out), "--arch", "resnet34"]) == 1
    err = capsys.readouterr().err
    assert f"resnetzoo: not {what}: the checkpoint does not fit the architecture strictly; check --arch" in err
    assert ("--allow-partial" in err) == (command == "convert")
    assert "strict=False" not in err and "ignore_head" not in err
    assert not out.exists()


def test_convert_to_a_file_that_is_not_safetensors_says_how(tv_checkpoint, tmp_path, capsys):
    out = tmp_path / "o3.pth"
    assert main(["convert", str(tv_checkpoint), str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (f"resnetzoo: error: {out}: convert writes resnetzoo weights as safetensors; name the output "
                   f".safetensors, or pass --to torchvision (or timm, mmpretrain) to write a .pth for that library\n")
    assert not out.exists()


def test_an_unknown_arch_points_at_resnetzoo_list(tv_checkpoint, capsys):
    assert main(["inspect", str(tv_checkpoint), "--arch", "resnet5O"]) == 2
    err = capsys.readouterr().err
    assert err == "resnetzoo: error: unknown model 'resnet5O'; did you mean resnet50, resnet50d, resnet152? (see resnetzoo list)\n"


def test_a_full_disk_names_the_file_and_the_fix(tv_checkpoint, tmp_path, capsys, monkeypatch):
    import errno
    from pathlib import Path

    write_bytes = Path.write_bytes

    def full(self: Path, data) -> int:  # as on a real full disk: write() names no file
        if self.name.endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    out = tmp_path / "out.safetensors"
    assert main(["convert", str(tv_checkpoint), str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (f"resnetzoo: error: {out}: No space left on device; free some space or write the output to "
                   f"another disk; a file already there is unchanged\n")
    assert list(tmp_path.iterdir()) == []


def test_an_unreadable_input_is_told_to_be_read_not_written(tv_checkpoint, tmp_path, capsys, monkeypatch):
    import errno

    import resnetzoo.cli as cli

    def locked(source, unsafe_objects="refuse"):  # root ignores file modes: refuse as a locked file would
        raise PermissionError(errno.EACCES, "Permission denied", source)

    monkeypatch.setattr(cli, "_read", locked)
    out = tmp_path / "out.safetensors"
    assert main(["convert", str(tv_checkpoint), str(out)]) == 2
    assert capsys.readouterr().err == (f"resnetzoo: error: {tv_checkpoint}: Permission denied; check its "
                                       f"permissions: resnetzoo must be able to read it\n")


@pytest.mark.parametrize("command", ["inspect", "convert", "export"])
def test_every_command_that_reads_a_checkpoint_takes_unsafe_objects(tv_checkpoint, tmp_path, monkeypatch, command):
    """The refusal of a pickled checkpoint advises --unsafe-objects stub: each reading command must take it."""
    import resnetzoo.cli as cli

    asked = []

    def reading(source, unsafe_objects="refuse"):
        asked.append(unsafe_objects)
        raise resnetzoo.errors.CheckpointError("stop here")

    monkeypatch.setattr(cli, "_read", reading)
    out = [] if command == "inspect" else [str(tmp_path / ("o.onnx" if command == "export" else "o.safetensors"))]
    assert main([command, str(tv_checkpoint), *out, "--unsafe-objects", "stub"]) == 2
    assert asked == ["stub"]


# ------------------------------------------------------------------ --prefix, --ignore-head
@pytest.fixture(scope="module")
def moco_checkpoint(tmp_path_factory):
    q = resnetzoo.resnet18(num_classes=128).state_dict()
    k = {name: value + 1 if value.is_floating_point() else value for name, value in q.items()}
    path = tmp_path_factory.mktemp("moco") / "moco.pth.tar"
    torch.save(
        {"epoch": 200, "state_dict": {**{f"module.encoder_q.{n}": v for n, v in q.items()},
                                      **{f"module.encoder_k.{n}": v for n, v in k.items()},
                                      "module.queue": torch.randn(128, 16)}},
        path,
    )  # fmt: skip
    return path


def test_inspect_names_the_sub_tree_and_the_alternative(moco_checkpoint, capsys):
    assert main(["inspect", str(moco_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Architecture: resnetzoo.resnet18(num_classes=128)\n  keys        under 'module.encoder_q.'")
    assert "also fits   'module.encoder_k.'" in out and "'module.queue' (1 tensor)" in out
    assert main(["inspect", str(moco_checkpoint), "--prefix", "module.encoder_k.", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["architecture"]["prefix"] == "module.encoder_k." and data["ok"]


def test_ignore_head_flag(tv_checkpoint, tmp_path, capsys):
    args = ["--arch", "resnet18", "--num-classes", "200"]
    assert main(["inspect", str(tv_checkpoint), *args]) == 1
    assert main(["inspect", str(tv_checkpoint), *args, "--ignore-head"]) == 0
    capsys.readouterr()
    out = tmp_path / "r18-200.safetensors"
    assert main(["convert", str(tv_checkpoint), str(out), *args]) == 1
    assert "--ignore-head" in capsys.readouterr().err and not out.exists()
    assert main(["convert", str(tv_checkpoint), str(out), "--num-classes", "200", "--ignore-head"]) == 0
    assert "loaded except the classifier" in capsys.readouterr().out
    model = resnetzoo.resnet18(num_classes=200)
    assert load_weights(model, out).ok


def test_not_a_resnet_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "vit.safetensors"
    save_file({"cls_token": torch.zeros(1, 1, 8), "pos_embed": torch.zeros(1, 5, 8), "blocks.0.attn.qkv.weight": torch.zeros(24, 8)}, str(path))
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("resnetzoo: error: this is not a ResNet: its keys look like a Vision Transformer")
    assert err.count("\n") == 1


# ------------------------------------------------------------------ convert --to
def test_convert_to_each_library(tv_checkpoint, tmp_path, capsys):
    source = torchvision.models.resnet18()
    source.load_state_dict(torch.load(tv_checkpoint)["state_dict"])
    x = torch.randn(1, 3, 32, 32)
    expected = source.eval()(x)

    assert main(["convert", str(tv_checkpoint), str(tmp_path / "tv.pth"), "--to", "torchvision"]) == 0
    assert "load it with: model = torchvision.models.resnet18(num_classes=1000)" in capsys.readouterr().out
    tv = torchvision.models.resnet18()
    tv.load_state_dict(torch.load(tmp_path / "tv.pth"), strict=True)

    assert main(["convert", str(tv_checkpoint), str(tmp_path / "hf"), "--to", "transformers"]) == 0
    hf = transformers.ResNetForImageClassification.from_pretrained(tmp_path / "hf").eval()

    assert main(["convert", str(tv_checkpoint), str(tmp_path / "mm.pth"), "--to", "mmpretrain"]) == 0
    assert "backbone.layer1.0.conv1.weight" in torch.load(tmp_path / "mm.pth")["state_dict"]
    with torch.no_grad():
        torch.testing.assert_close(tv.eval()(x), expected, rtol=0, atol=0)
        torch.testing.assert_close(hf(x).logits, expected, rtol=0, atol=1e-5)

    # What the library cannot express is refused, and nothing is written.
    d = tmp_path / "r18d.pth"
    torch.save(resnetzoo.resnet18d().state_dict(), d)
    assert main(["convert", str(d), str(tmp_path / "d.pth"), "--to", "torchvision"]) == 2
    err = capsys.readouterr().err
    assert "only the classic 7x7 stem, this model a deep stem: use timm" in err and not (tmp_path / "d.pth").exists()
    # Never over an existing output without --overwrite.
    assert main(["convert", str(tv_checkpoint), str(tmp_path / "hf"), "--to", "transformers"]) == 2
    assert "--overwrite" in capsys.readouterr().err
