"""CUB-200 recipe engine: settings, a CPU run, resume, checkpoints, outputs, DDP, CLI, benchmark."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import resnetzoo
from resnetzoo import registry
from resnetzoo.errors import CheckpointError
from resnetzoo.recipes.cub200 import (
    ConfigError,
    CUB200Config,
    load_checkpoint,
    main,
    parse_config,
    save_checkpoint,
    train,
)
from resnetzoo.recipes.cub200 import engine as engine_module
from resnetzoo.recipes.cub200.checkpoints import CHECKPOINT_FORMAT
from resnetzoo.registry import is_model

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = '''
from resnetzoo import ResNet, register_model
from resnetzoo.registry import is_model

if not is_model("cub_test_tiny"):

    @register_model
    def cub_test_tiny(*, pretrained=False, **kwargs):
        """A 4-stage ResNet a 2-core CPU trains in seconds (not a real architecture)."""
        if pretrained:
            raise ValueError("cub_test_tiny has no pretrained weights")
        return ResNet(layers=(1, 1, 1, 1), widths=(8, 16, 32, 64), block="basic", arch="cub_test_tiny", **kwargs)
'''


@pytest.fixture(autouse=True, scope="module")
def _tiny_model():
    """Register ``cub_test_tiny`` for this module's tests only (the subprocesses run TINY_MODEL too)."""
    exec(TINY_MODEL, {})
    assert is_model("cub_test_tiny")
    yield
    registry._MODELS.pop("cub_test_tiny", None)  # other modules' tests see the usual registry


def _config(out: Path, **overrides: object) -> CUB200Config:
    """The synthetic demo, shrunk: tiny model, 48 px, 2 epochs of 10 steps, no worker processes.

    Stochastic depth is on so that training draws from the global RNG, which resume must restore.
    """
    settings = {
        "output_dir": str(out), "arch": "cub_test_tiny", "img_size": 48, "resize": 56, "epochs": 2,
        "batch_size": 8, "workers": 0, "progress": False, "drop_path_rate": 0.1,
    }
    return CUB200Config.for_synthetic(**{**settings, **overrides})


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _without_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.endswith("_s") and k != "images_per_s"} for row in rows]


def _subprocess_env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One uninterrupted 2-epoch run, shared by the tests that only read its outputs."""
    out = tmp_path_factory.mktemp("run") / "out"
    return out, train(_config(out))


# ------------------------------------------------------------------------- settings
def _fails_fast(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    out = tmp_path / "out"
    assert main(["--output-dir", str(out), *args]) == 2
    assert not out.exists()  # nothing started
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--synthetic", "--epochs", "-1"], r"--epochs must be an integer >= 1, got -1"),
        (["--synthetic", "--img-size", "600"], r"--img-size \(600\) is larger than --resize \(72\)"),
        (["--synthetic", "--arch", "resnet5O"], r"--arch 'resnet5O' is not a resnetzoo model\. Did you mean resnet50"),
        (["--synthetic", "--arch", "resnet50", "--pretrained", "in22k_nope"], r"--pretrained 'in22k_nope'.*known tags"),
        (["--synthetic", "--pretrained", "weights/missing.pth"], r"--pretrained weights/missing\.pth: no such file"),
        (["--synthetic", "--resume", "--overwrite"], r"--resume and --overwrite contradict"),
        (["--synthetic", "--batch-size", "10", "--grad-accum", "3"], r"multiple of --grad-accum"),
        (["--synthetic", "--warmup-epochs", "5"], r"--warmup-epochs \(5\.0\) is longer than --epochs \(3\)"),
        (["--synthetic", "--lr", "0"], r"--lr must be a number > 0"),
        (["--synthetic", "--eval-only", "nowhere.pt"], r"--eval-only nowhere\.pt: no such file"),
        (["--synthetic", "--device", "cpu", "--sync-bn"], r"--sync-bn needs CUDA"),
        (["--amp", "fp8"], r"invalid choice: 'fp8'"),
    ],
)
def test_bad_settings_fail_before_anything_starts(tmp_path, capsys, args, message) -> None:
    import re

    assert re.search(message, _fails_fast(tmp_path, capsys, args))


def test_missing_data_root_says_how_to_get_data(tmp_path, capsys) -> None:
    err = _fails_fast(tmp_path, capsys, ["--data-root", str(tmp_path / "nothing")])
    assert "no CUB-200-2011 tree there" in err and "--download" in err and "--synthetic" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given when CUDA is absent")
def test_cuda_device_without_cuda(tmp_path, capsys) -> None:
    assert "CUDA is not available" in _fails_fast(tmp_path, capsys, ["--synthetic", "--device", "cuda"])


def test_command_line_defaults_and_overrides() -> None:
    recipe = parse_config([])
    assert (recipe.arch, recipe.pretrained, recipe.img_size, recipe.resize, recipe.batch_size) == (
        "resnet50", "tv_in1k", 448, 512, 64)
    assert (recipe.lr, recipe.head_lr_mult, recipe.weight_decay, recipe.label_smoothing) == (0.025, 10.0, 5e-4, 0.1)
    demo = parse_config(["--synthetic", "--epochs", "7", "--no-channels-last"])
    assert (demo.arch, demo.pretrained, demo.img_size, demo.epochs, demo.channels_last) == (
        "resnet18", "none", 64, 7, False)
    assert CUB200Config.from_dict({**demo.to_dict(), "unknown_future_field": 1}) == demo


def test_help_lists_every_setting(capsys) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for f in dataclasses.fields(CUB200Config):
        assert f"--{f.name.replace('_', '-')}" in text, f.name
    assert "(default: 448)" in text and "--no-channels-last" in text


def test_learning_rates_warm_up_then_follow_a_cosine_per_step() -> None:
    config = CUB200Config(epochs=10, warmup_epochs=2, lr=0.1, head_lr_mult=10.0)
    model = resnetzoo.create_model("cub_test_tiny", num_classes=3)
    optimizer, scheduler = engine_module._build_optimisation(model, config, steps_per_epoch=5)
    backbone, head = optimizer.param_groups
    assert {id(p) for p in head["params"]} == {id(p) for p in model.fc.parameters()}
    assert len(backbone["params"]) + len(head["params"]) == len(list(model.parameters()))
    lrs = []
    for _ in range(50):
        lrs.append((backbone["lr"], head["lr"]))
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx((0.01, 0.1))  # step 1 of a 10-step warm-up
    assert lrs[9] == pytest.approx((0.1, 1.0))  # warm-up done: the peak
    assert lrs[29] == pytest.approx((0.05, 0.5), rel=0.1)  # half-way through the cosine
    assert all(a[0] >= b[0] for a, b in zip(lrs[9:], lrs[10:], strict=False)) and lrs[-1][0] < 1e-3


# ---------------------------------------------------------------------------- a run
def test_two_epoch_cpu_run_learns_and_writes_every_output(run) -> None:
    out, summary = run
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    for key in ("lr", "train_loss", "train_top1", "test_loss", "test_top1", "test_top5", "epoch_s", "images_per_s"):
        assert isinstance(rows[0][key], float), key
    assert rows[0]["test_images"] == 40 and rows[0]["train_images"] == 80

    saved = json.loads((out / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert summary["test_top1"] == rows[-1]["test_top1"]
    assert summary["best_top1"] == max(r["test_top1"] for r in rows)
    assert set(summary["versions"]) >= {"torch", "torchvision", "resnetzoo"} and summary["device"] == "cpu"
    assert summary["config"]["arch"] == "cub_test_tiny"

    lines = (out / "per_class_accuracy.csv").read_text().splitlines()
    assert lines[0] == "class,correct,total,accuracy" and len(lines) == 1 + 5
    assert sum(int(line.split(",")[2]) for line in lines[1:]) == 40
    assert sum(int(line.split(",")[1]) for line in lines[1:]) == round(summary["test_top1"] * 40 / 100)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint["epoch"] == 2 and checkpoint["history"] == json.loads(json.dumps(checkpoint["history"]))
    best = resnetzoo.create_model("cub_test_tiny", num_classes=5)
    report = resnetzoo.remap.load_weights(best, str(out / "best.safetensors"), strict=True)
    assert report.loaded


def test_resume_repeats_an_uninterrupted_run_exactly(run, tmp_path, monkeypatch) -> None:
    straight, _ = run
    out = tmp_path / "out"
    real_save = engine_module.save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        raise KeyboardInterrupt  # the run is killed right after epoch 1's checkpoint

    monkeypatch.setattr(engine_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(_config(out))
    monkeypatch.setattr(engine_module, "save_checkpoint", real_save)
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1

    summary = train(_config(out, resume=True))
    expected, resumed = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(out / "checkpoint.pt")
    assert expected["model"].keys() == resumed["model"].keys()
    for key, tensor in expected["model"].items():
        assert torch.equal(tensor, resumed["model"][key]), key
    assert _without_times(_rows(out)) == _without_times(_rows(straight))
    assert summary["test_top1"] == json.loads((straight / "summary.json").read_text())["test_top1"]


def test_worker_processes_do_not_change_the_result(tmp_path) -> None:
    train(_config(tmp_path / "a", epochs=1))
    train(_config(tmp_path / "b", epochs=1, workers=2))
    a, b = load_checkpoint(tmp_path / "a" / "checkpoint.pt"), load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_an_earlier_run_is_never_overwritten_without_a_flag(run, tmp_path) -> None:
    out = tmp_path / "out"
    train(_config(out, epochs=1))
    (out / "my_notes.txt").write_text("mine")
    before = (out / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match=rf"{out}.*--resume.*--overwrite"):
        train(_config(out, epochs=1, seed=1))
    assert (out / "metrics.jsonl").read_text() == before
    train(_config(out, epochs=1, seed=1, overwrite=True))
    assert (out / "my_notes.txt").read_text() == "mine" and (out / "metrics.jsonl").read_text() != before
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(_config(tmp_path / "fresh", resume=True))


def test_eval_only_reads_a_checkpoint_or_a_safetensors_file(run, tmp_path) -> None:
    out, summary = run
    from_checkpoint = train(_config(tmp_path / "e1", eval_only=str(out / "checkpoint.pt")))
    assert from_checkpoint["test_top1"] == summary["test_top1"] and from_checkpoint["test_images"] == 40
    from_weights = train(_config(tmp_path / "e2", eval_only=str(out / "best.safetensors")))
    assert from_weights["test_top1"] == summary["best_top1"]
    assert json.loads((tmp_path / "e2" / "eval.json").read_text())["test_top1"] == summary["best_top1"]
    assert len((tmp_path / "e2" / "eval_per_class_accuracy.csv").read_text().splitlines()) == 6


def test_pretrained_file_loads_the_backbone_and_keeps_a_new_head(tmp_path) -> None:
    donor = resnetzoo.create_model("cub_test_tiny", num_classes=7)  # another class count
    with torch.no_grad():
        for p in donor.parameters():
            p.normal_()
    path = resnetzoo.remap.save_weights(donor, tmp_path / "donor.safetensors")
    model = engine_module._build_model(_config(tmp_path / "out", pretrained=str(path)), num_classes=5)
    assert torch.equal(model.conv1.weight, donor.conv1.weight)
    assert model.fc.out_features == 5
    broken = tmp_path / "broken.safetensors"
    resnetzoo.remap.save_weights(resnetzoo.create_model("resnet18", num_classes=5), broken)
    with pytest.raises(resnetzoo.WeightsLoadError):  # strict: a different backbone is an error
        engine_module._build_model(_config(tmp_path / "out", pretrained=str(broken)), num_classes=5)


# ----------------------------------------------------------------------- checkpoints
def test_interrupted_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch) -> None:
    path = tmp_path / "checkpoint.pt"
    first = {"format": CHECKPOINT_FORMAT, "epoch": 1, "model": {"w": torch.ones(3)}}
    save_checkpoint(path, first)
    real_save = torch.save

    def dies_half_way(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 half a zip file")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, {**first, "epoch": 2})
    monkeypatch.setattr(torch, "save", real_save)
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 1 and torch.equal(loaded["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    "content, message",
    [
        (lambda p: torch.save({"w": torch.ones(1)}, p), "not a CUB-200 recipe checkpoint"),
        (lambda p: p.write_bytes(b"not a checkpoint"), "not a readable training checkpoint"),
        (lambda p: p.write_bytes(pickle.dumps({"x": _Exploit()}, protocol=2)), "not a readable training checkpoint"),
    ],
)
def test_load_checkpoint_refuses_foreign_corrupt_and_unsafe_files(tmp_path, content, message) -> None:
    path = tmp_path / "bad.pt"
    content(path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


# ------------------------------------------------------------------ whole programs
def test_synthetic_demo_through_main(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    args = ["--synthetic", "--arch", "cub_test_tiny", "--img-size", "48", "--resize", "56", "--epochs", "1",
            "--workers", "0", "--no-progress", "--output-dir", str(out)]
    assert main(args) == 0
    assert "test top-1" in capsys.readouterr().out
    assert {"summary.json", "metrics.jsonl", "checkpoint.pt", "best.safetensors"} <= {p.name for p in out.iterdir()}
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err  # a second run refuses
    # --resume alone finds the rest in the checkpoint; the run is complete, so it only re-evaluates.
    first = json.loads((out / "summary.json").read_text())
    assert main(["--output-dir", str(out), "--resume", "--workers", "0", "--no-progress"]) == 0
    assert json.loads((out / "summary.json").read_text())["test_top1"] == first["test_top1"]


@pytest.mark.slow
def test_two_process_ddp_run_on_cpu(tmp_path) -> None:
    script = tmp_path / "launch.py"
    script.write_text(TINY_MODEL + textwrap.dedent("""
        import sys
        from resnetzoo.recipes.cub200 import main
        sys.exit(main(sys.argv[1:]))
    """))
    out = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
         "--synthetic", "--arch", "cub_test_tiny", "--img-size", "48", "--resize", "56", "--epochs", "2",
         "--batch-size", "8", "--grad-accum", "2", "--workers", "0", "--no-progress", "--output-dir", str(out)],
        env=_subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs"] == 2
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == [1, 2]  # written once, by rank 0
    assert rows[0]["test_images"] == 40 and rows[0]["train_images"] == 80  # summed over ranks, none twice
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2


@pytest.mark.slow
def test_example_script_runs_the_synthetic_demo(tmp_path) -> None:
    out = tmp_path / "tmp"
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "cub200_finetune.py"), "--synthetic", "--output-dir", str(out),
         "--epochs", "1", "--workers", "0", "--no-progress"],
        env=_subprocess_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test top-1" in result.stdout
    assert json.loads((out / "summary.json").read_text())["config"]["arch"] == "resnet18"


# ------------------------------------------------------------------------- benchmark
def _benchmark():
    spec = importlib.util.spec_from_file_location("gpu_recipe_check", REPO / "benchmarks" / "gpu_recipe_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_refuses_politely_without_cuda(monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _benchmark().main([]) == 0
    assert "no CUDA device" in capsys.readouterr().out


def test_benchmark_core_loops_run_on_cpu(tmp_path, capsys) -> None:
    args = ["--device", "cpu", "--steps", "2", "--img-size", "64", "--batch-size", "2", "--workdir", str(tmp_path),
            "--json", str(tmp_path / "result.json")]
    assert _benchmark().main(args) == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["recipe_images_per_s"] > 0 and result["bare_images_per_s"] > 0
    assert "img/s" in capsys.readouterr().out


def test_config_round_trips_through_a_checkpoint(run) -> None:
    out, _ = run
    saved = CUB200Config.from_dict(load_checkpoint(out / "checkpoint.pt")["config"])
    expected = dataclasses.replace(_config(out), channels_last=False)  # resolved for the CPU
    assert saved == expected
