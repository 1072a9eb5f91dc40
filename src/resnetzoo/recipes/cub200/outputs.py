"""The files a CUB-200-2011 run writes in its ``output_dir``, besides the checkpoints.

``metrics.jsonl`` (one line per epoch), ``summary.json``, ``per_class_accuracy.csv``,
``curves.png`` (needs matplotlib) and ``tensorboard/`` (needs tensorboard); with
``--eval-only``, ``eval.json`` and ``eval_per_class_accuracy.csv``. Files are written
atomically, and an earlier run's outputs are replaced only with ``--overwrite``.

Internal to the recipe: nothing here is public API.
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
from pathlib import Path
from typing import Any

import torch

from resnetzoo._io import atomic_path, to_strict_json, write_text
from resnetzoo._version import __version__
from resnetzoo.recipes.cub200.config import ConfigError, CUB200Config

__all__: list[str] = []

logger = logging.getLogger(__name__)

# Everything a run writes; --overwrite removes exactly these, nothing else in the folder.
_RUN_OUTPUTS = (
    "checkpoint.pt",
    "best.safetensors",
    "metrics.jsonl",
    "summary.json",
    "per_class_accuracy.csv",
    "curves.png",
    "tensorboard",
)


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(to_strict_json(row), allow_nan=False) + "\n" for row in rows)


def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    write_text(path, _jsonl(history))


def _append_metrics(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(_jsonl([row]))


def _write_per_class(path: Path, classes: list[str], correct: list[int], total: list[int]) -> None:
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["class", "correct", "total", "accuracy"])
    for name, c, t in zip(classes, correct, total, strict=True):
        writer.writerow([name, c, t, f"{100.0 * c / t:.2f}" if t else ""])
    write_text(path, table.getvalue())


def _plot_curves(path: Path, history: list[dict[str, Any]]) -> None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        logger.warning("matplotlib is not installed: skipping %s (pip install matplotlib)", path.name)
        return
    epochs = [row["epoch"] for row in history]
    # Figure + Agg canvas directly: no pyplot, so the caller's backend is left alone.
    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    loss_ax, acc_ax = figure.subplots(1, 2)
    loss_ax.plot(epochs, [r["train_loss"] for r in history], "o-", label="train (label-smoothed)")
    loss_ax.plot(epochs, [r["test_loss"] for r in history], "o-", label="test")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    acc_ax.plot(epochs, [r["train_top1"] for r in history], "o-", label="train top-1")
    acc_ax.plot(epochs, [r["test_top1"] for r in history], "o-", label="test top-1")
    acc_ax.plot(epochs, [r["test_top5"] for r in history], "o-", label="test top-5")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
        ax.legend()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100, format="png")


def _tensorboard(path: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.info("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
        return None
    return SummaryWriter(log_dir=str(path))


def _log_tensorboard(writer: Any, row: dict[str, Any]) -> None:
    """Every number of a metrics row, at its epoch; ``writer`` None (no tensorboard) does nothing."""
    if writer is None:
        return
    for key, value in row.items():
        if key != "epoch":
            writer.add_scalar(key, value, row["epoch"])
    writer.flush()


def _versions() -> dict[str, str]:
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "resnetzoo": __version__}


def _device_info(device: torch.device) -> dict[str, str]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {"device": str(device), "device_name": name}


def _prepare_output_dir(config: CUB200Config) -> Path:
    """Refuse to clobber an earlier run; with --overwrite remove exactly what a run writes."""
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output-dir {out} is a file, not a folder")
    if config.resume:
        if not (out / "checkpoint.pt").is_file():
            raise ConfigError(f"--resume: no checkpoint at {out / 'checkpoint.pt'}; drop --resume to start a new run")
        _check_writable(out)
        return out
    existing = [name for name in _RUN_OUTPUTS if (out / name).exists()]
    if existing and not config.overwrite:
        raise ConfigError(
            f"--output-dir {out} already holds the results of a run ({', '.join(existing)}); pass --resume to "
            f"continue it or --overwrite to replace them, or choose another --output-dir"
        )
    _check_writable(out)
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


def _check_writable(out: Path) -> None:
    """Create ``out`` if needed and write a probe file: a read-only folder fails now, not after an epoch."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(
            f"--output-dir {out}: cannot write there ({e.strerror or e}); choose a folder you can write to"
        ) from e
