"""Fine-tuning recipe engine: settings, a CPU run, model selection, resume, checkpoints, outputs, failures,
the command lines, DDP, the benchmarks."""

from __future__ import annotations

import dataclasses
import errno
import importlib.util
import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import resnetzoo
from resnetzoo import registry
from resnetzoo._io import temporary_name
from resnetzoo.errors import CheckpointError
from resnetzoo.recipes.cub200 import (
    ClassListMismatchError,
    ConfigError,
    CUB200Config,
    load_checkpoint,
    main,
    make_synthetic_tree,
    parse_config,
    read_tree,
    save_checkpoint,
    train,
)
from resnetzoo.recipes.finetune import DatasetError, TrainingDivergedError, resolve_settings
from resnetzoo.recipes.finetune import engine as engine_module
from resnetzoo.recipes.finetune.checkpoints import CHECKPOINT_FORMAT
from resnetzoo.recipes.finetune.images import ImageDataset
from resnetzoo.registry import is_model

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = '''
from resnetzoo import ResNet, load_weights, register_model
from resnetzoo.registry import is_model

if not is_model("cub_test_tiny"):

    @register_model
    def cub_test_tiny(*, pretrained=False, **kwargs):
        """A 4-stage ResNet a 2-core CPU trains in seconds (not a real architecture)."""
        model = ResNet(layers=(1, 1, 1, 1), widths=(8, 16, 32, 64), block="basic", arch="cub_test_tiny", **kwargs)
        if pretrained:  # a checkpoint path: no published weights for this one
            load_weights(model, pretrained, strict=True, ignore_head=True)
        return model
'''


@pytest.fixture(autouse=True, scope="module")
def _tiny_model():
    """Register ``cub_test_tiny`` for this module's tests only (the subprocesses run TINY_MODEL too)."""
    exec(TINY_MODEL, {})
    assert is_model("cub_test_tiny")
    yield
    registry._MODELS.pop("cub_test_tiny", None)  # other modules' tests see the usual registry


def _config(out: Path, **overrides: object) -> CUB200Config:
    """The synthetic demo, shrunk: tiny model, 48 px, 2 epochs of 8 steps, no worker processes, no pictures.

    Stochastic depth and CutMix are on so that training draws from the global RNG, which resume
    must restore; the weight average (EMA) is on so that its state must be restored too.
    """
    settings = {
        "output_dir": str(out), "arch": "cub_test_tiny", "img_size": 48, "resize": 56, "epochs": 2,
        "batch_size": 8, "workers": 0, "progress": False, "drop_path_rate": 0.1, "cutmix_alpha": 1.0,
        "ema_decay": 0.9, "error_analysis": False,
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
    return out, train(_config(out, error_analysis=True, cam_images=2))


def _copy_tree(out: Path, dest: Path, *, edit=None) -> Path:
    """A copy of a run's synthetic tree; ``edit(classes, labels, split)`` may change its tables (dicts by id)."""
    import shutil

    shutil.copytree(out / "synthetic_data", dest)
    if edit is not None:
        tables = {name: dict(line.split(" ", 1) for line in (dest / name).read_text().splitlines())
                  for name in ("classes.txt", "image_class_labels.txt", "train_test_split.txt")}
        edit(*tables.values())
        for name, table in tables.items():
            (dest / name).write_text("".join(f"{k} {v}\n" for k, v in table.items()))
    return dest


def _on_tree(config: CUB200Config, tree: Path) -> CUB200Config:
    """``config`` on a copy of the synthetic tree, as a user's tree (not the official counts)."""
    return dataclasses.replace(config, synthetic=False, data_root=str(tree), official_counts=False)


def _rotate_classes(classes: dict, labels: dict, split: dict) -> None:
    """The same classes and images, listed in another order (class ids renumbered)."""
    names = [classes[k] for k in sorted(classes, key=int)]
    rotated = names[1:] + names[:1]
    new_id = {name: str(i + 1) for i, name in enumerate(rotated)}
    old_name = {str(i + 1): name for i, name in enumerate(names)}
    classes.clear()
    classes.update({str(i + 1): name for i, name in enumerate(rotated)})
    for image_id, label in labels.items():
        labels[image_id] = new_id[old_name[label]]


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
        (["--synthetic", "--img-size", "80", "--resize", "72"], r"--img-size \(80\) is larger than --resize \(72\)"),
        (["--synthetic", "--arch", "resnet5O"], r"--arch 'resnet5O' is not a resnetzoo model\. Did you mean resnet50"),
        (["--synthetic", "--arch", "resnet50", "--pretrained", "in22k_nope"], r"--pretrained 'in22k_nope'.*known tags"),
        (["--synthetic", "--pretrained", "weights/missing.pth"], r"--pretrained weights/missing\.pth: no such file"),
        (["--synthetic", "--resume", "--overwrite"], r"--resume and --overwrite contradict"),
        (["--synthetic", "--batch-size", "10", "--grad-accum", "3"], r"multiple of --grad-accum"),
        (["--synthetic", "--warmup-epochs", "5"], r"--warmup-epochs \(5\.0\) is longer than --epochs \(3\).*0 for none"),
        (["--synthetic", "--lr", "0"], r"--lr must be a number > 0"),
        (["--synthetic", "--lr", "nan"], r"--lr must be a finite number, got nan"),
        (["--synthetic", "--lr", "inf"], r"--lr must be a finite number, got inf"),
        (["--synthetic", "--momentum", "nan"], r"--momentum must be a finite number"),
        (["--synthetic", "--weight-decay", "inf"], r"--weight-decay must be a finite number"),
        (["--synthetic", "--head-lr-mult", "inf"], r"--head-lr-mult must be a finite number"),
        (["--synthetic", "--label-smoothing", "nan"], r"--label-smoothing must be a finite number"),
        (["--synthetic", "--warmup-epochs", "nan"], r"--warmup-epochs must be a finite number"),
        (["--synthetic", "--drop-path-rate=-inf"], r"--drop-path-rate must be a finite number"),
        (["--synthetic", "--cutmix-alpha", "nan"], r"--cutmix-alpha must be a finite number"),
        (["--synthetic", "--ema-decay", "1"], r"--ema-decay must be a number >= 0 and below 1"),
        (["--synthetic", "--val-fraction", "1"], r"--val-fraction must be a number >= 0 and below 1"),
        (["--synthetic", "--momentum", "1"], r"--momentum must be a number >= 0 and below 1"),
        (["--synthetic", "--arch", "resnet18", "--pretrained", "resnet50.tv_in1k"], r"names weights of resnet50"),
        (["--synthetic", "--eval-only", "nowhere.pt"], r"--eval-only nowhere\.pt: no such file"),
        (["--synthetic", "--exclude-test-list", "nowhere.txt"], r"--exclude-test-list nowhere\.txt: no such file"),
        (["--synthetic", "--device", "cpu", "--sync-bn"], r"--sync-bn\) needs CUDA"),
        (["--synthetic", "--bn", "frozen", "--sync-bn"], r"--sync-bn and --bn frozen contradict"),
        (["--dataset", "cars"], r"--dataset 'cars' is not a known data set; choose one of cub200"),
        (["--dataset", "fgvc_aircraft", "--download"], r"--download is for --dataset cub200; FGVC-Aircraft is yours"),
        (["--dataset", "flowers102", "--bbox-crop"], r"--bbox-crop: Flowers-102 has no bounding boxes"),
        (["--dataset", "oxford_pets", "--data-root", "nowhere"], r"--data-root nowhere: no such folder; Oxford-IIIT"),
        (["--synthetic", "--early-stop-patience", "-1"], r"--early-stop-patience must be an integer >= 0, got -1"),
        (["--synthetic", "--val-fraction", "0", "--early-stop-patience", "3"],
         r"--early-stop-patience with --val-fraction 0 would stop training on the test set"),
        (["--synthetic", "--bn", "frozen"], r"--bn frozen keeps the pretrained BatchNorm statistics, but --pretrained "
                                            r"none has none \(it would freeze the initial mean 0 and variance 1\)"),
        (["--synthetic", "--eval-only", "."], r"--eval-only \.: not a regular file \(a folder\)"),
        (["--amp", "fp8"], r"invalid choice: 'fp8'"),
        (["--bn", "off"], r"invalid choice: 'off'"),
    ],
)
def test_bad_settings_fail_before_anything_starts(tmp_path, capsys, args, message) -> None:
    assert re.search(message, _fails_fast(tmp_path, capsys, args))


@pytest.mark.parametrize("value", ["resnet18.tv_in1k", "tv_in1k", "none", "hf-hub:org/repo", "https://example.com/w.pth"])
def test_pretrained_takes_the_library_vocabulary(value) -> None:
    config = dataclasses.replace(CUB200Config.for_synthetic(arch="resnet18"), pretrained=value)
    config.validate()  # nothing is fetched to validate


def test_unreachable_default_weights_point_shell_users_at_a_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RESNETZOO_OFFLINE", "1")
    monkeypatch.setenv("RESNETZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(resnetzoo.WeightsUnavailableError, match=r"--pretrained PATH"):
        engine_module.build_model(CUB200Config(arch="resnet18"), num_classes=3)


def test_missing_data_root_says_how_to_get_data(tmp_path, capsys) -> None:
    err = _fails_fast(tmp_path, capsys, ["--data-root", str(tmp_path / "nothing")])
    assert "no CUB-200-2011 tree there" in err and "--download" in err and "--synthetic" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given when CUDA is absent")
def test_a_fifo_is_not_a_regular_file(tmp_path, capsys) -> None:
    fifo = tmp_path / "x.pt"
    os.mkfifo(fifo)  # reading it would block: refused from its type, never opened
    err = _fails_fast(tmp_path, capsys, ["--synthetic", "--eval-only", str(fifo)])
    assert f"--eval-only {fifo}: not a regular file (a FIFO, device or socket)" in err


def test_a_missing_image_folder_names_the_layout_once(tmp_path, capsys) -> None:
    err = _fails_fast(tmp_path, capsys, ["--dataset", f"imagefolder:{tmp_path / 'nowhere'}"])
    assert f"--dataset imagefolder:{tmp_path / 'nowhere'}: no such folder; expected PATH/train/" in err
    assert err.count("PATH/train/<class>") == 1


def test_cuda_device_without_cuda(tmp_path, capsys) -> None:
    assert "CUDA is not available" in _fails_fast(tmp_path, capsys, ["--synthetic", "--device", "cuda"])


def test_command_line_defaults_and_overrides() -> None:
    recipe = parse_config([])
    assert (recipe.dataset, recipe.arch, recipe.pretrained, recipe.img_size, recipe.batch_size) == (
        "cub200", "resnet50", "tv_in1k", 448, 64)
    assert (recipe.lr_base, recipe.lr_base_size, recipe.weight_decay, recipe.label_smoothing) == (0.1, 256, 5e-4, 0.1)
    assert (recipe.val_fraction, recipe.bn, recipe.output_dir, recipe.mixup_alpha, recipe.ema_decay) == (
        0.1, "auto", "runs/cub200", 0.0, 0.0)
    demo = parse_config(["--synthetic", "--epochs", "7", "--no-channels-last"])
    assert (demo.arch, demo.pretrained, demo.img_size, demo.epochs, demo.channels_last) == (
        "resnet18", "none", 64, 7, False)
    assert CUB200Config.from_dict({**demo.to_dict(), "unknown_future_field": 1}) == demo


def test_help_lists_every_setting(capsys) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m resnetzoo.recipes.cub200")
    for f in dataclasses.fields(CUB200Config):
        assert f"--{f.name.replace('_', '-')}" in text, f.name
    assert "(default: 448)" in text and "--no-channels-last" in text and "(default: None)" not in text
    assert engine_module.main(["--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: python -m resnetzoo.recipes.finetune")


# ---------------------------------------------------------------------------- a run
def test_two_epoch_cpu_run_chooses_on_validation_and_writes_every_output(run) -> None:
    out, summary = run
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "val_top1_ema", "epoch_s",
                "images_per_s"):
        assert isinstance(rows[0][key], float), key
    assert not any(key.startswith("test") for key in rows[0])  # the test set is not read during training
    assert (rows[0]["selected_on"], rows[0]["protocol"]) == ("val", "validation split")
    # 16 training images per class: 2 held out for validation (10 %, rounded), 14 left.
    assert rows[0]["val_images"] == 10 and rows[0]["train_images"] == 64  # 70 images, whole batches of 8

    saved = json.loads((out / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert summary["protocol"] == "validation split" and summary["selected_on"] == "validation"
    assert (summary["train_images"], summary["val_images"], summary["test_images"]) == (70, 10, 40)
    assert summary["val_top1"] == rows[-1]["val_top1"]
    assert summary["val_top1_selected"] == max(r["val_top1"] for r in rows)
    assert summary["selected_epoch"] == 1 + max(range(2), key=lambda i: (rows[i]["val_top1"], -i))
    assert 0 <= summary["test_top1_selected"] <= 100 and 0 <= summary["test_top1_ema"] <= 100
    assert summary["lr_rule"]["rule"] == "given (--lr)" and summary["bn"] == "train"  # 8 images, from scratch
    assert set(summary["versions"]) >= {"torch", "torchvision", "resnetzoo"} and summary["device"] == "cpu"
    assert summary["config"]["arch"] == "cub_test_tiny" and summary["config"]["crop_padding"] == 1

    lines = (out / "per_class_accuracy.csv").read_text().splitlines()
    assert lines[0] == "class,correct,total,accuracy" and len(lines) == 1 + 5
    assert sum(int(line.split(",")[2]) for line in lines[1:]) == 40
    assert sum(int(line.split(",")[1]) for line in lines[1:]) == round(summary["test_top1"] * 40 / 100)
    predictions = (out / "predictions.csv").read_text().splitlines()
    assert predictions[0] == "key,path,label,label_name,predicted,predicted_name,confidence,correct,protocol"
    assert len(predictions) == 41 and sum(int(p.split(",")[-2]) for p in predictions[1:]) == round(
        summary["test_top1"] * 40 / 100)
    assert all(p.endswith(",validation split") for p in predictions[1:])
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint["epoch"] == 2 and checkpoint["history"] == json.loads(json.dumps(checkpoint["history"]))
    best = resnetzoo.create_model("cub_test_tiny", num_classes=5)
    report = resnetzoo.remap.load_weights(best, str(out / "best.safetensors"), strict=True)
    assert report.loaded
    from resnetzoo.weights import read_checkpoint

    meta = read_checkpoint(out / "best.safetensors")[1]
    assert (meta["protocol"], meta["selected_on"], meta["epoch"]) == ("validation split", "val",
                                                                       str(summary["selected_epoch"]))
    assert (out / "ema.safetensors").is_file()


def test_the_error_analysis_runs_on_the_final_weights_with_the_boxes(run) -> None:
    out, summary = run
    # Every synthetic test image has its box inside the 48-px crop: all 40 are measured.
    assert summary["pointing_game_images"] == 40 and 0 <= summary["pointing_game"] <= 100
    assert summary["cam_prediction_agreement"] == 1.0  # the analysis saw the images in the evaluation's order
    assert {"confusion.png", "confusion.csv", "confused_pairs.csv"} <= {p.name for p in out.iterdir()}
    assert len([p for p in (out / "cam").iterdir() if p.name[:2].isdigit()]) == 2
    counts = [line.split(",")[1:] for line in (out / "confusion.csv").read_text().splitlines()[1:]]
    predicted = [line.split(",") for line in (out / "predictions.csv").read_text().splitlines()[1:]]
    diagonal = sum(int(row[i]) for i, row in enumerate(counts))
    assert diagonal == sum(int(p[-2]) for p in predicted) == round(summary["test_top1"] * 40 / 100)


def test_no_test_image_is_read_before_the_final_evaluation(tmp_path, monkeypatch) -> None:
    reads: list[tuple[str, str]] = []  # (split, key) of every image decoded, in order
    real_load, real_finish = ImageDataset.load_image, engine_module.Run.finish

    def load_image(self, index):
        reads.append((self.records[index].split, self.records[index].key))
        return real_load(self, index)

    def finish(self, *, started):
        reads.append(("--", "final evaluation"))
        return real_finish(self, started=started)

    monkeypatch.setattr(ImageDataset, "load_image", load_image)
    monkeypatch.setattr(engine_module.Run, "finish", finish)
    summary = train(_config(tmp_path / "out", epochs=2, ema_decay=0.0))
    marker = reads.index(("--", "final evaluation"))
    assert reads[:marker] and all(split == "train" for split, _ in reads[:marker])  # train and validation
    test_reads = [key for split, key in reads[marker:] if split == "test"]
    tree = read_tree(tmp_path / "out" / "synthetic_data")
    assert set(test_reads) == {r.key for r in tree.split("test")}
    # once for the final weights, once more only if the chosen epoch is not the last
    assert len(test_reads) == 40 * (1 if summary["selected_epoch"] == 2 else 2)


def test_test_set_selection_is_labelled_in_every_output(tmp_path, capsys, monkeypatch) -> None:
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    drawn: dict[str, str] = {}  # picture file name -> every text drawn in it
    real_savefig = Figure.savefig

    def savefig(self, fname, *args, **kwargs):
        name = Path(str(fname)).name.lstrip(".").split(".")[0]  # atomic writes save to ".NAME.png.<id>.tmp"
        drawn[name] = "\n".join(t.get_text() for t in self.findobj(Text))
        return real_savefig(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    out = tmp_path / "published"
    args = ["--synthetic", "--arch", "cub_test_tiny", "--img-size", "48", "--epochs", "2", "--batch-size", "8",
            "--workers", "0", "--no-progress", "--val-fraction", "0", "--cam-images", "2", "--output-dir", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "chosen on the test set" in printed and "optimistic" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"] == "test-set selection" and summary["selected_on"].startswith("test (optimistic")
    rows = _rows(out)
    assert summary["test_top1_selected"] == max(r["test_top1"] for r in rows) and summary["val_top1"] is None
    assert summary["train_images"] == 80 and summary["val_images"] == 0
    from resnetzoo.weights import read_checkpoint

    meta = read_checkpoint(out / "best.safetensors")[1]
    assert (meta["protocol"], meta["selected_on"]) == ("test-set selection", "test")
    # metrics.jsonl: every line says the test set chose
    assert all((r["selected_on"], r["protocol"]) == ("test", "test-set selection") for r in rows)
    # predictions.csv: a column every CSV reader keeps
    lines = (out / "predictions.csv").read_text().splitlines()
    assert lines[0].endswith(",correct,protocol") and all(line.endswith(",test-set selection") for line in lines[1:])
    # the pictures: their titles say it
    assert {"curves", "confusion", "overview"} <= set(drawn)
    assert "test-set selection: the test curve chose the epoch" in drawn["curves"]
    assert f"selected: epoch {summary['selected_epoch']}" in drawn["curves"]
    for picture in ("confusion", "overview"):
        assert "test-set selection: this run chose its epoch on these test images" in " ".join(
            drawn[picture].split()), picture


def test_exclude_test_list_drops_images_and_says_how_many(run, tmp_path) -> None:
    out, _ = run
    tree = _copy_tree(out, tmp_path / "tree")
    test_ids = [r.key for r in read_tree(tree).split("test")]
    listing = tmp_path / "in_imagenet.txt"
    listing.write_text(f"# also in ImageNet\n{test_ids[0]}\n{test_ids[5]}\n")
    summary = train(_on_tree(_config(tmp_path / "e", eval_only=str(out / "checkpoint.pt"),
                                     exclude_test_list=str(listing)), tree))
    assert (summary["test_images"], summary["test_images_excluded"]) == (38, 2)
    listing.write_text("999999\n")
    with pytest.raises(ConfigError, match=r"in_imagenet\.txt:1: '999999' is not a test image"):
        train(_on_tree(_config(tmp_path / "e2", eval_only=str(out / "checkpoint.pt"),
                               exclude_test_list=str(listing)), tree))


def test_any_data_set_in_class_folders_through_the_generic_command(tmp_path, capsys) -> None:
    folders = make_synthetic_tree(tmp_path / "folders", num_classes=3, train_per_class=6, test_per_class=2,
                                  image_size=(40, 32), layout="imagefolder")
    out = tmp_path / "out"
    args = ["--dataset", f"imagefolder:{folders}", "--arch", "cub_test_tiny", "--pretrained", "none", "--img-size",
            "32", "--epochs", "1", "--batch-size", "8", "--workers", "0", "--no-progress", "--cam-images", "1",
            "--output-dir", str(out)]
    assert engine_module.main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "imagefolder" and summary["num_classes"] == 3
    assert (summary["train_images"], summary["val_images"], summary["test_images"]) == (15, 3, 6)
    assert "path" in (out / "predictions.csv").read_text().splitlines()[0]
    assert summary["pointing_game"] is None  # class folders have no boxes; the other pictures are there
    assert (out / "confusion.png").is_file() and len(list((out / "cam").glob("01_*.png"))) == 1


def test_an_official_validation_split_chooses_and_trains_under_the_published_protocol(tmp_path) -> None:
    """val/ beside test/: by default it chooses the epoch; with --val-fraction 0 it trains (train + val, as
    published Flowers-102 results do) and the test set chooses, labelled so."""
    import shutil

    folders = make_synthetic_tree(tmp_path / "folders", num_classes=3, train_per_class=6, test_per_class=2,
                                  image_size=(40, 32), layout="imagefolder")
    shutil.copytree(folders / "test", folders / "val")  # 6 official validation images
    common = ["--dataset", f"imagefolder:{folders}", "--arch", "cub_test_tiny", "--pretrained", "none", "--img-size",
              "32", "--epochs", "1", "--batch-size", "4", "--workers", "0", "--no-progress", "--no-error-analysis"]
    assert engine_module.main([*common, "--output-dir", str(tmp_path / "default")]) == 0
    chosen = json.loads((tmp_path / "default" / "summary.json").read_text())
    assert chosen["protocol"] == "official validation split" and chosen["val_fraction"] is None
    assert (chosen["train_images"], chosen["val_images"], chosen["test_images"]) == (18, 6, 6)
    assert chosen["val_images_trained"] == 0

    assert engine_module.main([*common, "--val-fraction", "0", "--output-dir", str(tmp_path / "published")]) == 0
    published = json.loads((tmp_path / "published" / "summary.json").read_text())
    assert published["protocol"] == "test-set selection"
    assert (published["train_images"], published["val_images"], published["test_images"]) == (24, 0, 6)
    assert published["val_images_trained"] == 6
    assert _rows(tmp_path / "published")[0]["train_images"] == 24  # they really are trained on


def test_epochs_without_improvement_wait_for_a_better_score() -> None:
    assert engine_module.epochs_without_improvement([]) == 0
    assert engine_module.epochs_without_improvement([50.0, 60.0]) == 0
    assert engine_module.epochs_without_improvement([50.0, 60.0, 60.0, 55.0]) == 2  # a tie is no improvement
    assert engine_module.epochs_without_improvement([50.0, 40.0, 70.0, 70.0]) == 1


def test_early_stopping_stops_on_validation_and_resumes_to_the_same_stop(tmp_path, monkeypatch) -> None:
    scripted = [50.0, 60.0, 60.0, 55.0, 90.0, 95.0]  # the validation top-1 of epochs 1-6: stalls after epoch 2
    real_evaluate = engine_module.Run.evaluate_epoch

    def evaluate_epoch(self, epoch):
        scores = real_evaluate(self, epoch)
        assert "test_top1" not in scores  # the stop is decided on validation
        return {**scores, "val_top1": scripted[epoch]}

    monkeypatch.setattr(engine_module.Run, "evaluate_epoch", evaluate_epoch)
    settings = {"epochs": 6, "early_stop_patience": 2, "ema_decay": 0.0}
    straight = train(_config(tmp_path / "straight", **settings))
    assert straight["epochs"] == 4 and straight["stopped_early_at_epoch"] == 4
    assert straight["early_stop_patience"] == 2 and straight["selected_epoch"] == 3  # a tie takes the later epoch
    assert [r["val_top1"] for r in _rows(tmp_path / "straight")] == scripted[:4]

    out = tmp_path / "resumed"
    real_save, saves = engine_module.save_checkpoint, []

    def save_then_die(path, state):
        real_save(path, state)
        saves.append(state["epoch"])
        if state["epoch"] == 3:
            raise KeyboardInterrupt  # killed one epoch before the stop

    monkeypatch.setattr(engine_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(_config(out, **settings))
    resumed = train(_config(out, resume=True, **settings))
    assert saves == [1, 2, 3, 4]  # one more epoch, then the same stop
    assert (resumed["epochs"], resumed["stopped_early_at_epoch"]) == (4, 4)
    assert resumed["test_top1"] == straight["test_top1"] and resumed["selected_epoch"] == 3
    assert _without_times(_rows(out)) == _without_times(_rows(tmp_path / "straight"))
    # A stopped run, resumed, trains no more: it only evaluates again.
    again = train(_config(out, resume=True, **settings))
    assert saves == [1, 2, 3, 4] and again["epochs"] == 4 and again["test_top1"] == straight["test_top1"]


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
    for part in ("model", "ema"):
        assert expected[part].keys() == resumed[part].keys()
        for key, tensor in expected[part].items():
            assert torch.equal(tensor, resumed[part][key]), (part, key)
    assert _without_times(_rows(out)) == _without_times(_rows(straight))
    straight_summary = json.loads((straight / "summary.json").read_text())
    for key in ("test_top1", "test_top1_selected", "test_top1_ema", "selected_epoch"):
        assert summary[key] == straight_summary[key], key


@pytest.mark.slow
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
    elsewhere = tmp_path / "shared_logs"
    elsewhere.mkdir()
    (elsewhere / "other_run.log").write_text("keep")
    (out / "tensorboard").symlink_to(elsewhere, target_is_directory=True)
    orphan = Path(str(temporary_name(out / "summary.json")).replace(f".{os.getpid()}.", ".999999999."))
    orphan.write_text("{half")  # left by a run killed with kill -9
    train(_config(out, epochs=1, seed=1, overwrite=True))
    assert (out / "my_notes.txt").read_text() == "mine" and (out / "metrics.jsonl").read_text() != before
    assert (elsewhere / "other_run.log").read_text() == "keep"  # --overwrite removed the link, not its target
    assert not (out / "tensorboard").is_symlink() and not orphan.exists()
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(_config(tmp_path / "fresh", resume=True))


def test_config_round_trips_through_a_checkpoint(run) -> None:
    out, _ = run
    saved = CUB200Config.from_dict(load_checkpoint(out / "checkpoint.pt")["config"])
    # Automatic settings are recorded as resolved (what this run used).
    expected, _ = resolve_settings(_config(out, error_analysis=True, cam_images=2), device=torch.device("cpu"),
                                   world_size=1, default_workers=0,
                                   default_threads=(saved.threads, ""))
    assert saved == expected and saved.crop_padding == 1 and saved.resize == 56 and saved.head_lr_mult == 1.0


# ------------------------------------------------------------------------- failures
def test_nan_training_stops_with_an_error_and_saves_nothing(tmp_path, capsys) -> None:
    out = tmp_path / "nan"
    args = ["--synthetic", "--arch", "cub_test_tiny", "--img-size", "48", "--resize", "56", "--epochs", "2",
            "--workers", "0", "--no-progress", "--lr", "1e6", "--no-error-analysis", "--output-dir", str(out)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert re.search(r"training diverged: the training loss is not finite at epoch 1/2, step \d+ of \d+", err)
    assert "--lr (now 1e+06)" in err and "Traceback" not in err
    assert not {"best.safetensors", "checkpoint.pt", "summary.json"} & {p.name for p in out.iterdir()}


def test_non_finite_weights_are_never_saved_as_best() -> None:
    model = resnetzoo.create_model("cub_test_tiny", num_classes=3)
    with torch.no_grad():
        model.layer2[0].bn1.running_var[0] = float("inf")
    with pytest.raises(TrainingDivergedError, match=r"layer2\.0\.bn1\.running_var"):
        engine_module._check_finite_weights(model, where="epoch 3", config=CUB200Config(lr=0.1))


def test_eval_only_reads_a_checkpoint_or_a_safetensors_file(run, tmp_path) -> None:
    out, summary = run
    from_checkpoint = train(_config(tmp_path / "e1", eval_only=str(out / "checkpoint.pt")))
    assert from_checkpoint["test_top1"] == summary["test_top1"] and from_checkpoint["test_images"] == 40
    from_weights = train(_config(tmp_path / "e2", eval_only=str(out / "best.safetensors")))
    assert from_weights["test_top1"] == summary["test_top1_selected"]
    assert from_weights["trained_with"] == "validation split"
    assert json.loads((tmp_path / "e2" / "eval.json").read_text())["test_top1"] == summary["test_top1_selected"]
    assert len((tmp_path / "e2" / "eval_per_class_accuracy.csv").read_text().splitlines()) == 6
    assert len((tmp_path / "e2" / "eval_predictions.csv").read_text().splitlines()) == 41


def test_eval_only_takes_the_checkpoints_architecture_and_refuses_another(run, tmp_path, capsys) -> None:
    out, summary = run
    common = ["--synthetic", "--img-size", "48", "--workers", "0", "--no-progress"]  # the run's tree, regenerated
    for name in ("best.safetensors", "checkpoint.pt"):
        given = ["--eval-only", str(out / name), "--arch", "resnet18", "--output-dir", str(tmp_path / f"x-{name}")]
        assert main([*common, *given]) == 2
        err = capsys.readouterr().err
        assert f"--eval-only {out / name} holds a cub_test_tiny, but --arch is resnet18" in err, err
    # without --arch: the checkpoint's (the demo's default would be resnet18)
    assert main([*common, "--eval-only", str(out / "best.safetensors"), "--output-dir", str(tmp_path / "e")]) == 0
    evaluated = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert evaluated["arch"] == "cub_test_tiny" and evaluated["test_top1"] == summary["test_top1_selected"]
    lines = (tmp_path / "e" / "eval_predictions.csv").read_text().splitlines()
    assert lines[0].endswith(",protocol") and lines[1].endswith(",validation split")


def test_eval_only_maps_a_reordered_class_list_by_name(run, tmp_path, caplog) -> None:
    out, summary = run
    tree = _copy_tree(out, tmp_path / "rotated", edit=_rotate_classes)
    result = train(_on_tree(_config(tmp_path / "e", eval_only=str(out / "checkpoint.pt")), tree))
    assert result["test_top1"] == summary["test_top1"]  # the same predictions, matched by class name
    assert "in another order" in caplog.text and "matched by class name" in caplog.text
    from_weights = train(_on_tree(_config(tmp_path / "w", eval_only=str(out / "best.safetensors")), tree))
    assert from_weights["test_top1"] == summary["test_top1_selected"]


def test_eval_only_and_resume_refuse_other_classes_naming_the_first_difference(run, tmp_path) -> None:
    out, _ = run

    def rename(classes, labels, split):
        classes["3"] = "003.Not_in_the_checkpoint"

    tree = _copy_tree(out, tmp_path / "renamed", edit=rename)
    with pytest.raises(ClassListMismatchError, match=r"first difference at class 3: 'Synthetic_triangle_2' in "
                                                     r".*checkpoint\.pt, 'Not_in_the_checkpoint' in .*classes\.txt"):
        train(_on_tree(_config(tmp_path / "e", eval_only=str(out / "checkpoint.pt")), tree))
    same = _copy_tree(out, tmp_path / "same")
    train(_on_tree(_config(tmp_path / "resumed", epochs=1), same))
    (same / "classes.txt").write_text((tree / "classes.txt").read_text())  # changed between the two runs
    with pytest.raises(ClassListMismatchError, match="first difference at class 3"):
        train(_on_tree(_config(tmp_path / "resumed", resume=True), same))


def test_eval_only_with_a_truncated_safetensors_file_says_so(run, tmp_path, capsys) -> None:
    out, _ = run
    cut = tmp_path / "cut.safetensors"
    data = (out / "best.safetensors").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    args = ["--synthetic", "--arch", "cub_test_tiny", "--img-size", "48", "--resize", "56", "--workers", "0",
            "--no-progress", "--eval-only", str(cut), "--output-dir", str(tmp_path / "e")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "cut.safetensors is a corrupt or truncated safetensors file" in err and "Traceback" not in err


def test_an_empty_test_split_is_an_error(run, tmp_path) -> None:
    out, _ = run

    def all_train(classes, labels, split):
        split.update(dict.fromkeys(split, "1"))

    tree = _copy_tree(out, tmp_path / "no_test", edit=all_train)
    with pytest.raises(DatasetError, match=r"the test split is empty; an accuracy over no images"):
        train(_on_tree(_config(tmp_path / "e"), tree))


def test_read_only_output_folder_fails_at_once_naming_it(tmp_path, capsys, monkeypatch) -> None:
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    out = tmp_path / "out"
    assert main(["--synthetic", "--arch", "cub_test_tiny", "--workers", "0", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--output-dir {out}: cannot write there (Read-only file system)" in err


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch) -> None:
    write_bytes = Path.write_bytes

    def full_for_weights(self: Path, data) -> int:
        if "best.safetensors" in self.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_for_weights)
    out = tmp_path / "out"
    args = ["--synthetic", "--arch", "cub_test_tiny", "--img-size", "48", "--resize", "56", "--epochs", "1",
            "--workers", "0", "--no-progress", "--no-error-analysis", "--output-dir", str(out)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"{out / 'best.safetensors'}: No space left on device" in err and "free some space" in err
    assert "Traceback" not in err and not list(out.glob(".*.tmp"))


def test_pretrained_file_loads_the_backbone_and_keeps_a_new_head(tmp_path) -> None:
    donor = resnetzoo.create_model("cub_test_tiny", num_classes=7)  # another class count
    with torch.no_grad():
        for p in donor.parameters():
            p.normal_()
    path = resnetzoo.remap.save_weights(donor, tmp_path / "donor.safetensors")
    model = engine_module.build_model(_config(tmp_path / "out", pretrained=str(path)), num_classes=5)
    assert torch.equal(model.conv1.weight, donor.conv1.weight)
    assert model.fc.out_features == 5
    broken = tmp_path / "broken.safetensors"
    resnetzoo.remap.save_weights(resnetzoo.create_model("resnet18", num_classes=5), broken)
    with pytest.raises(resnetzoo.WeightsLoadError) as caught:  # strict: a different backbone is an error
        engine_module.build_model(_config(tmp_path / "out", pretrained=str(broken)), num_classes=5)
    message = str(caught.value)
    assert message.startswith(f"--pretrained {broken} does not fit --arch cub_test_tiny: ")
    assert f"does not hold a cub_test_tiny: check --arch (resnetzoo inspect {broken}" in message
    assert "strict=False" not in message  # a shell user cannot pass it
    # The network and one tensor more: the message gives the command that cleans the file; it works.
    crafted = tmp_path / "crafted.pth"
    torch.save({**donor.state_dict(), "layer100000000.0.x": torch.zeros(1)}, crafted)
    with pytest.raises(resnetzoo.WeightsLoadError) as caught:
        engine_module.build_model(_config(tmp_path / "out", pretrained=str(crafted)), num_classes=5)
    message = str(caught.value)
    assert "strict=False" not in message and "holds every tensor of a cub_test_tiny and 1 more" in message
    command = re.search(r"resnetzoo (convert .*--allow-partial)", message).group(1).split()
    assert command == ["convert", str(crafted), "clean.safetensors", "--arch", "cub_test_tiny", "--allow-partial"]
    from resnetzoo.cli import main as resnetzoo_cli

    clean = tmp_path / "clean.safetensors"
    assert resnetzoo_cli([*command[:2], str(clean), *command[3:]]) == 0
    model = engine_module.build_model(_config(tmp_path / "out", pretrained=str(clean)), num_classes=5)
    assert torch.equal(model.conv1.weight, donor.conv1.weight)
    # With pretrained weights the fresh head learns 10x faster; from scratch it does not.
    with_weights, _ = resolve_settings(_config(tmp_path / "out", pretrained=str(path)), device=torch.device("cpu"),
                                       world_size=1, default_workers=0)
    assert with_weights.head_lr_mult == 10.0


# ----------------------------------------------------------------------- checkpoints
def test_interrupted_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch) -> None:
    import errno

    path = tmp_path / "checkpoint.pt"
    first = {"format": CHECKPOINT_FORMAT, "epoch": 1, "model": {"w": torch.ones(3)}}
    save_checkpoint(path, first)
    real_write = Path.write_bytes

    def disk_full_half_way(self, data):
        real_write(self, bytes(data)[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full_half_way)
    with pytest.raises(OSError, match="No space") as caught:
        save_checkpoint(path, {**first, "epoch": 2})
    monkeypatch.setattr(Path, "write_bytes", real_write)
    assert caught.value.filename == str(path)  # the file asked for, not the temporary
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 1 and torch.equal(loaded["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    "content, message",
    [
        (lambda p: torch.save({"w": torch.ones(1)}, p), "not a checkpoint of the fine-tuning recipe"),
        (lambda p: p.write_bytes(b"not a checkpoint"), "not a checkpoint format"),
        (lambda p: p.write_bytes(pickle.dumps({"x": _Exploit()}, protocol=2)), "refused for safety"),
        (lambda p: torch.save({"format": "resnetzoo.recipes.cub200.checkpoint/1"}, p), "resnetzoo 0.1.*--eval-only"),
    ],
)
def test_load_checkpoint_refuses_foreign_corrupt_and_unsafe_files(tmp_path, content, message) -> None:
    path = tmp_path / "bad.pt"
    content(path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path, resumable=True)


# ------------------------------------------------------------------ whole programs
def test_synthetic_demo_through_main(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    args = ["--synthetic", "--arch", "cub_test_tiny", "--img-size", "48", "--resize", "56", "--epochs", "1",
            "--workers", "0", "--no-progress", "--no-error-analysis", "--output-dir", str(out)]
    assert main(args) == 0
    assert "test top-1" in capsys.readouterr().out
    assert {"summary.json", "metrics.jsonl", "checkpoint.pt", "best.safetensors"} <= {p.name for p in out.iterdir()}
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err  # a second run refuses
    # --resume alone finds the rest in the checkpoint; the run is complete, so it only re-evaluates.
    first = json.loads((out / "summary.json").read_text())
    assert main(["--output-dir", str(out), "--resume", "--workers", "0", "--no-progress", "--no-error-analysis"]) == 0
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
         "--batch-size", "8", "--grad-accum", "2", "--workers", "0", "--no-progress", "--cam-images", "2",
         "--output-dir", str(out)],
        env=_subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs"] == 2 and summary["bn"] == "train"
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == [1, 2]  # written once, by rank 0
    assert rows[0]["val_images"] == 10 and rows[0]["train_images"] == 64  # summed over ranks, none twice
    assert summary["test_images"] == 40 and len((out / "predictions.csv").read_text().splitlines()) == 41
    assert summary["pointing_game_images"] == 40 and (out / "confusion.png").is_file()  # by rank 0 alone
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


# ------------------------------------------------------------------------- benchmarks
def _benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_benchmark_refuses_politely_without_cuda(monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _benchmark("gpu_recipe_check").main([]) == 0
    assert "no CUDA device" in capsys.readouterr().out


@pytest.mark.slow
def test_gpu_benchmark_core_loops_run_on_cpu(tmp_path, capsys) -> None:
    args = ["--device", "cpu", "--steps", "2", "--img-size", "64", "--batch-size", "2", "--workdir", str(tmp_path),
            "--json", str(tmp_path / "result.json")]
    assert _benchmark("gpu_recipe_check").main(args) == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["recipe_images_per_s"] > 0 and result["bare_images_per_s"] > 0
    assert "img/s" in capsys.readouterr().out


@pytest.mark.slow
def test_cpu_throughput_benchmark_runs_both_loops(tmp_path, capsys) -> None:
    args = ["--rounds", "1", "--classes", "2", "--images-per-class", "8", "--batch-size", "4", "--img-size", "16",
            "--threads", "1", "--json", str(tmp_path / "result.json")]
    assert _benchmark("recipe_throughput").main(args) == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["recipe_images_per_s"] > 0 and result["bare_images_per_s"] > 0 and result["ratio"] > 0
    assert result["recipe_train_images"] == 14  # one of each class's 8 held out for validation
    assert "recipe / bare" in capsys.readouterr().out
