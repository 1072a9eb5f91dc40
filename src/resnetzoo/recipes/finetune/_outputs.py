"""The files a run writes in its ``output_dir``, besides the checkpoints.

``metrics.jsonl`` (one line per epoch), ``summary.json``, ``per_class_accuracy.csv``,
``predictions.csv``, ``curves.png`` (needs matplotlib) and ``tensorboard/`` (needs
tensorboard); with ``--eval-only``, ``eval.json``, ``eval_per_class_accuracy.csv`` and
``eval_predictions.csv``. Files are written atomically through :mod:`resnetzoo._io`,
only by the main process, and an earlier run's outputs are replaced only with
``--overwrite``.

Internal to the recipe (a private module): its names are for the recipe's modules.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import platform
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision

from resnetzoo._io import atomic_path, to_strict_json, write_json, write_text
from resnetzoo._version import __version__
from resnetzoo.recipes.finetune.errors import ConfigError
from resnetzoo.recipes.finetune.readers.base import ImageRecord

__all__ = ["RUN_OUTPUTS", "Outputs", "check_writable", "device_info", "prepare_output_dir", "versions"]

logger = logging.getLogger(__name__)

RUN_OUTPUTS = (
    "checkpoint.pt",
    "best.safetensors",
    "ema.safetensors",
    "metrics.jsonl",
    "summary.json",
    "per_class_accuracy.csv",
    "predictions.csv",
    "curves.png",
    "tensorboard",
    # the error analysis (resnetzoo.recipes.finetune.analysis)
    "confusion.png",
    "confusion.csv",
    "confused_pairs.csv",
    "cam",
)
"""Everything a training run writes; ``--overwrite`` removes exactly these, nothing else in the folder."""


def check_writable(out: Path, *, flag: str = "--output-dir") -> None:
    """Create ``out`` if needed and write a probe file: a read-only folder fails now, not after an epoch.

    Raises:
        ConfigError: the folder cannot be created or written, named with ``flag``.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{flag} {out}: cannot write there ({e.strerror or e}); choose a folder you can write to") from e


def prepare_output_dir(out: Path, *, resume: bool, overwrite: bool) -> Path:
    """Refuse to clobber an earlier run; with ``overwrite`` remove exactly what a run writes.

    Raises:
        ConfigError: ``out`` is a file, holds an earlier run (without ``overwrite`` or
            ``resume``), has no checkpoint to resume, or cannot be written.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output-dir {out} is a file, not a folder")
    if resume:
        if not (out / "checkpoint.pt").is_file():
            raise ConfigError(f"--resume: no checkpoint at {out / 'checkpoint.pt'}; drop --resume to start a new run")
        check_writable(out)
        return out
    existing = [name for name in RUN_OUTPUTS if (out / name).exists() or (out / name).is_symlink()]
    if existing and not overwrite:
        raise ConfigError(
            f"--output-dir {out} already holds the results of a run ({', '.join(existing)}); pass --resume to "
            f"continue it or --overwrite to replace them, or choose another --output-dir"
        )
    check_writable(out)
    for name in existing:
        target = out / name
        if target.is_symlink():
            # Remove the link, never what it points to: that is not this run's to delete.
            logger.info("--overwrite: removing the link %s (its target %s is left alone)", target, target.resolve())
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    return out


def versions() -> dict[str, str]:
    """The versions of Python, torch, torchvision and resnetzoo, for the summary."""
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "resnetzoo": __version__}


def device_info(device: torch.device) -> dict[str, str]:
    """The device and its name (the GPU model, or the CPU), for the summary."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {"device": str(device), "device_name": name}


def _jsonl(rows: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(to_strict_json(row), allow_nan=False) + "\n" for row in rows)


class Outputs:
    """The files of one run in ``folder``; on any process but the main one every method does nothing.

    Args:
        folder: the output folder (already prepared).
        enabled: True on the main process.
        tensorboard: open a TensorBoard writer in ``folder/tensorboard`` when
            tensorboard is installed.
    """

    def __init__(self, folder: Path, *, enabled: bool, tensorboard: bool = False) -> None:
        self.folder = folder
        self.enabled = enabled
        self._writer: Any = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.info("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
            else:
                self._writer = SummaryWriter(log_dir=str(folder / "tensorboard"))

    def write_json(self, name: str, value: Any) -> None:
        """``folder/name`` as strict JSON (non-finite numbers as null)."""
        if self.enabled:
            write_json(self.folder / name, value)

    def write_metrics(self, history: Sequence[dict[str, Any]]) -> None:
        """Rewrite ``metrics.jsonl`` from ``history`` (on resume: drops lines of epochs not checkpointed)."""
        if self.enabled:
            write_text(self.folder / "metrics.jsonl", _jsonl(history))

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Add one epoch's line to ``metrics.jsonl`` and to TensorBoard."""
        if not self.enabled:
            return
        with (self.folder / "metrics.jsonl").open("a", encoding="utf-8") as f:
            f.write(_jsonl([row]))
        if self._writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self._writer.add_scalar(key, value, row["epoch"])
            self._writer.flush()

    def write_per_class(self, name: str, classes: Sequence[str], correct: Sequence[int], total: Sequence[int]) -> None:
        """A CSV of class, correct, total, accuracy (percent)."""
        if not self.enabled:
            return
        table = io.StringIO(newline="")
        writer = csv.writer(table)
        writer.writerow(["class", "correct", "total", "accuracy"])
        for class_name, c, t in zip(classes, correct, total, strict=True):
            writer.writerow([class_name, c, t, f"{100.0 * c / t:.2f}" if t else ""])
        write_text(self.folder / name, table.getvalue())

    def write_predictions(self, name: str, records: Sequence[ImageRecord], *, classes: Sequence[str],
                          predictions: Sequence[int], confidences: Sequence[float], root: Path,
                          protocol: str) -> None:
        """A CSV of every image: key, path, label, predicted class, confidence, correct, protocol.

        ``protocol`` (how the run chose its model, e.g. ``test-set selection``) is a column
        rather than a comment line, so that every CSV reader keeps it and a row copied
        elsewhere still says it.
        """
        if not self.enabled:
            return
        table = io.StringIO(newline="")
        writer = csv.writer(table)
        writer.writerow(["key", "path", "label", "label_name", "predicted", "predicted_name", "confidence", "correct",
                         "protocol"])
        for record, predicted, confidence in zip(records, predictions, confidences, strict=True):
            try:
                path = record.path.relative_to(root).as_posix()
            except ValueError:
                path = str(record.path)
            writer.writerow([record.key, path, record.label, classes[record.label], predicted, classes[predicted],
                             f"{confidence:.4f}", int(predicted == record.label), protocol])
        write_text(self.folder / name, table.getvalue())

    def plot_curves(self, history: Sequence[dict[str, Any]], *, protocol: str, selected_epoch: int) -> None:
        """``curves.png``: loss and accuracy per epoch, titled with how the epoch was chosen.

        Skipped with a warning without matplotlib. The title names the ``protocol``; the
        selected epoch is marked, and under test-set selection the title says the test
        curve chose it.
        """
        if not self.enabled or not history:
            return
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
            from matplotlib.ticker import MaxNLocator
        except ImportError:
            logger.warning("matplotlib is not installed: skipping curves.png (pip install matplotlib)")
            return
        epochs = [row["epoch"] for row in history]
        split = "val" if "val_top1" in history[0] else "test"
        # Figure + Agg canvas directly: no pyplot, so the caller's backend is left alone.
        figure = Figure(figsize=(10, 4), layout="constrained")
        FigureCanvasAgg(figure)
        loss_ax, acc_ax = figure.subplots(1, 2)
        loss_ax.plot(epochs, [r["train_loss"] for r in history], "o-", label="train (smoothed/mixed labels)")
        loss_ax.plot(epochs, [r[f"{split}_loss"] for r in history], "o-", label=split)
        loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
        acc_ax.plot(epochs, [r["train_top1"] for r in history], "o-", label="train top-1")
        acc_ax.plot(epochs, [r[f"{split}_top1"] for r in history], "o-", label=f"{split} top-1")
        acc_ax.plot(epochs, [r[f"{split}_top5"] for r in history], "o-", label=f"{split} top-5")
        if f"{split}_top1_ema" in history[0]:
            acc_ax.plot(epochs, [r[f"{split}_top1_ema"] for r in history], "o--", label=f"{split} top-1 (EMA)")
        acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
        if selected_epoch:
            acc_ax.axvline(selected_epoch, color="grey", linestyle=":", label=f"selected: epoch {selected_epoch}")
        if split == "test":
            chosen = ("test-set selection: the test curve chose the epoch, so its test accuracy is optimistic "
                      "(--val-fraction 0)")
        else:
            chosen = f"epoch chosen on the {protocol}; the test set is read once, after training"
        figure.suptitle(chosen, fontsize=10)
        for ax in (loss_ax, acc_ax):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
            ax.grid(alpha=0.3)
            ax.legend()
        with atomic_path(self.folder / "curves.png") as tmp:
            figure.savefig(tmp, dpi=100, format="png")

    def close(self) -> None:
        """Close the TensorBoard writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
