"""Settings of the fine-tuning recipe: one dataclass, and the command line built from it.

Each field of :class:`FinetuneConfig` carries its help text and, for the recipe's
hyper-parameters, where the value comes from. The command line (:func:`build_parser`)
is generated from the fields, so a setting has one name (``img_size`` is
``--img-size``) and one default, documented in one place.

The defaults are the published plain ResNet-50 recipe that reached 86.74 % top-1 on
CUB-200-2011 (cyizhuo/Fine-Grained-Image-Classification ``train.py``: torchvision's
ImageNet-1k V1 weights, 512 x 512 resize, random 448 crop with 8-pixel padding,
horizontal flip, SGD lr 0.1 x 64/256 = 0.025 at batch 64, momentum 0.9, weight decay
5e-4, cosine decay, label smoothing 0.1), with changes common in fine-grained work:
the new head learns 10x faster (only when the backbone is pretrained), the first 5 %
of training warms up linearly, and the schedule is stepped per iteration over 100
epochs instead of per epoch over 128. Settings left at ``None`` follow the run (the
crop padding scales with ``--img-size``, the learning rate with the batch) and are
resolved once by :func:`resolve_settings`; the run records the values it used.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from resnetzoo.recipes.finetune.errors import ConfigError, DatasetError
from resnetzoo.recipes.finetune.readers import resolve_reader
from resnetzoo.recipes.finetune.readers.cub import TREE_DIRNAME, find_tree
from resnetzoo.registry import list_models
from resnetzoo.weights import WeightSpec, pretrained_source

__all__ = [
    "SYNTHETIC_DEFAULTS",
    "FinetuneConfig",
    "build_parser",
    "parse_config",
    "resolve_settings",
]

_AMP_CHOICES = ("auto", "bf16", "fp16", "off")
_BN_CHOICES = ("auto", "train", "frozen", "sync")
_WARMUP_EPOCHS = 5.0  # the recipe's warm-up: 5 of 100 epochs ...
_WARMUP_SHARE = 0.05  # ... which is 5 % of the run
_PUBLISHED_SIZE = 448  # the crop the pixel settings below were published for
_PUBLISHED_RESIZE = 512
_PUBLISHED_PADDING = 8
_HEAD_LR_MULT = 10.0
_BN_MIN_BATCH = 16  # BatchNorm statistics are unreliable below ~16 images


def _setting(default: Any, help: str, *, group: str, choices: tuple[str, ...] | None = None,
             metavar: str | None = None) -> Any:
    return field(default=default, metadata={"help": help, "group": group, "choices": choices, "metavar": metavar})


def _flag(name: str) -> str:
    return name.replace("_", "-")


SYNTHETIC_DEFAULTS: dict[str, Any] = {
    "arch": "resnet18",
    "pretrained": "none",
    "img_size": 64,
    "epochs": 3,
    "batch_size": 16,
    "lr": 0.05,
    "warmup_epochs": 0.0,
    "output_dir": "runs/cub200-synthetic",
}
"""What ``--synthetic`` changes unless given explicitly: a run of well under a minute on a CPU."""


@dataclass
class FinetuneConfig:
    """Every setting of a fine-tuning run; ``train(FinetuneConfig(...))`` runs it.

    Fields are grouped as in ``python -m resnetzoo.recipes.finetune --help``, which
    shows the same help texts. ``batch_size`` is global: images per optimizer step
    summed over processes and accumulation steps, so the recipe means the same thing
    on one GPU or eight. ``None`` means "follow the run" (see :func:`resolve_settings`).
    """

    # data
    dataset: str = _setting(
        "cub200", "the data set: cub200, nabirds, fgvc_aircraft, stanford_cars, flowers102, oxford_pets, or "
        "imagefolder:PATH (PATH/train/<class>/*.jpg and PATH/test/ or PATH/val/)", group="data", metavar="NAME",
    )
    data_root: str = _setting(
        "data", "folder holding the data set (CUB_200_2011/, fgvc-aircraft-2013b/, ... as torchvision lays "
        "them out); --download fills it for cub200", group="data", metavar="DIR",
    )
    download: bool = _setting(
        False, "download CUB_200_2011.tgz (1.1 GB) from CaltechDATA into --data-root, verify, extract "
        "(cub200 only: the other data sets are yours to download; the error says where their files go)",
        group="data",
    )
    synthetic: bool = _setting(
        False,
        "run on a generated CUB-layout tree of drawn shapes instead of the real data; switches the "
        "defaults to a tiny CPU run (resnet18, 64 px, 3 epochs, no pretrained weights)",
        group="data",
    )
    cache_dir: str | None = _setting(
        None,
        "cache images decoded once and resized to --resize here as uint8 .npy (9 GB for CUB at 512), "
        "so JPEG decoding does not limit speed",
        group="data",
        metavar="DIR",
    )
    bbox_crop: bool = _setting(
        False, "crop every image to its bounding box first (data sets with boxes: cub200, nabirds)", group="data"
    )
    workers: int | None = _setting(
        None, "data-loading worker processes per GPU (default: the CPUs this process may use, "
        "shared among the processes of one machine, at most 8)", group="data", metavar="N",
    )
    val_fraction: float = _setting(
        0.1, "share of each class's training images held out, seeded, to choose the best epoch; the "
        "test set is then evaluated once, at the end. 0 chooses on the test set, as the published "
        "results do (every output says so). Data sets with their own validation split use it, and "
        "with 0 train on it too (train + val, as published)",
        group="data",
    )
    exclude_test_list: str | None = _setting(
        None, "a text file of test images to leave out (image ids or paths, one per line, # comments), "
        "e.g. the CUB test images that also appear in ImageNet", group="data", metavar="FILE",
    )
    official_counts: bool = _setting(
        True, "check the images per split and the classes against the data set's official numbers",
        group="data",
    )

    # model
    arch: str | None = _setting(
        "resnet50", "architecture, as listed by resnetzoo.list_models(); with --eval-only the checkpoint's "
        "unless given (a checkpoint of another architecture is then refused)", group="model",
    )
    pretrained: str = _setting(
        "tv_in1k",
        "start weights, as for resnetzoo.create_model: a tag of --arch (tv_in1k = torchvision "
        "ImageNet-1k V1, as in the published recipe), a full name (resnet50.tv2_in1k), 'none', a "
        "checkpoint file, an hf-hub:org/repo reference or a URL; the classifier is left out",
        group="model",
        metavar="TAG|NAME|none|PATH|URL",
    )
    drop_path_rate: float = _setting(0.0, "stochastic depth of the last block (0 in the published recipe)", group="model")
    bn: str = _setting(
        "auto", "BatchNorm during training: train (batch statistics), frozen (keep the pretrained "
        "statistics, still learn scale and shift), sync (statistics over all GPUs), auto (train with "
        "16+ images per GPU, else sync across GPUs, else frozen when pretrained)",
        group="model", choices=_BN_CHOICES,
    )

    # input
    img_size: int = _setting(448, "crop size fed to the network (published: 448)", group="input")
    resize: int | None = _setting(
        None, "pre-crop resize (default: --img-size x 512/448, the published 512 at 448)", group="input",
        metavar="PIXELS",
    )
    resize_mode: str = _setting(
        "square",
        "'square' resizes to resize x resize (published recipe), 'shorter' scales the shorter side",
        group="input",
        choices=("square", "shorter"),
    )
    crop_padding: int | None = _setting(
        None, "zero padding before the random train crop (default: --img-size x 8/448, the published 8 "
        "at 448)", group="input", metavar="PIXELS",
    )
    mixup_alpha: float = _setting(
        0.0, "MixUp: blend pairs of training images and their labels, weight ~ Beta(alpha, alpha); "
        "0 = off (published: off)", group="input",
    )
    cutmix_alpha: float = _setting(
        0.0, "CutMix: paste a box of one training image into another, labels by area, ~ Beta(alpha, "
        "alpha); 0 = off (published: off). With both on, each batch gets one of them", group="input",
    )

    # optimisation
    epochs: int = _setting(100, "training epochs (published: 128 with per-epoch cosine)", group="optimisation")
    batch_size: int = _setting(
        64, "images per optimizer step, summed over GPUs and accumulation steps (published: 64)", group="optimisation"
    )
    lr: float | None = _setting(
        None, "backbone learning rate (default: --lr-base x --batch-size / --lr-base-size, the linear "
        "scaling rule: 0.1 x 64 / 256 = 0.025 as published)", group="optimisation",
    )
    lr_base: float = _setting(0.1, "learning rate of a batch of --lr-base-size images", group="optimisation")
    lr_base_size: int = _setting(256, "batch size that --lr-base is for", group="optimisation")
    head_lr_mult: float | None = _setting(
        None, "learning-rate multiplier of the freshly initialised classifier (default: 10 with "
        "pretrained weights, 1 from scratch, where the head is no newer than the rest)",
        group="optimisation",
    )
    momentum: float = _setting(0.9, "SGD momentum (published: 0.9)", group="optimisation")
    nesterov: bool = _setting(False, "Nesterov momentum (published: off)", group="optimisation")
    weight_decay: float = _setting(5e-4, "weight decay on every parameter (published: 5e-4)", group="optimisation")
    warmup_epochs: float | None = _setting(
        None, "linear warm-up length in epochs before the per-step cosine decay (default: 5 % of "
        "--epochs, at most 5: 5 of the recipe's 100)", group="optimisation", metavar="EPOCHS",
    )
    label_smoothing: float = _setting(0.1, "label smoothing of the training loss (published: 0.1)", group="optimisation")
    grad_accum: int = _setting(1, "micro-batches accumulated per optimizer step", group="optimisation")
    ema_decay: float = _setting(
        0.0, "keep an exponential moving average of the weights with this decay per step (e.g. 0.999) "
        "and evaluate it beside the raw weights; 0 = off (published: off)", group="optimisation",
    )
    early_stop_patience: int = _setting(
        0, "stop when the validation top-1 has not improved for N epochs (the best epoch is still the "
        "one kept and tested); 0 = off, every --epochs run (published: off). Not with --val-fraction 0, "
        "where it would stop on the test set", group="optimisation", metavar="N",
    )

    # speed
    device: str = _setting("auto", "'auto' (cuda if available), 'cpu', 'cuda' or 'cuda:N'", group="speed")
    amp: str = _setting(
        "auto", "mixed precision: auto (bf16 on CUDA, off on CPU), bf16, fp16 (with a GradScaler), off",
        group="speed", choices=_AMP_CHOICES,
    )
    channels_last: bool | None = _setting(
        None, "channels-last memory format (faster convolutions on GPUs, often slower on CPUs); "
        "unset: on for CUDA, off for CPU", group="speed",
    )
    threads: int | None = _setting(
        None, "CPU threads for the network's arithmetic when training on the CPU (default: the CPUs "
        "this process may use that other programs leave idle, from the load average; ignored on CUDA)",
        group="speed", metavar="N",
    )
    compile: bool = _setting(False, "torch.compile the model (slower start, faster steps)", group="speed")
    sync_bn: bool = _setting(False, "the same as --bn sync (kept from resnetzoo 0.1)", group="speed")
    deterministic: bool = _setting(
        False, "deterministic CUDA kernels (cudnn.benchmark off, torch.use_deterministic_algorithms)", group="speed"
    )

    # run
    output_dir: str = _setting("runs/finetune", "where metrics, checkpoints, plots and the summary go", group="run")
    resume: bool = _setting(False, "continue the run in --output-dir from its checkpoint.pt", group="run")
    overwrite: bool = _setting(False, "replace the results of an earlier run in --output-dir", group="run")
    eval_only: str | None = _setting(
        None, "only evaluate this training checkpoint (.pt) or weights file (.safetensors) on the test split",
        group="run", metavar="CKPT",
    )
    error_analysis: bool = _setting(
        True, "after the final test evaluation, write the confusion matrix, the most-confused pairs and "
        "Grad-CAM pictures, and measure the pointing game where the data set has boxes", group="run",
    )
    cam_images: int = _setting(16, "Grad-CAM pictures of test images, half wrong and half right", group="run",
                               metavar="N")
    seed: int = _setting(0, "seed of every random number generator (and of the validation split)", group="run")
    progress: bool = _setting(True, "show progress bars (on rank 0, when writing to a terminal)", group="run")

    @classmethod
    def for_synthetic(cls, **overrides: Any) -> FinetuneConfig:
        """The ``--synthetic`` demo: :data:`SYNTHETIC_DEFAULTS`, then ``overrides``.

        Args:
            **overrides: any field, e.g. ``output_dir="runs/demo"``.

        Returns:
            A config with ``synthetic=True``.
        """
        return cls(**{**SYNTHETIC_DEFAULTS, **overrides, "synthetic": True})

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON- and checkpoint-safe: str, int, float, bool, None)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FinetuneConfig:
        """Rebuild a config from :meth:`to_dict` output, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @property
    def warmup(self) -> float:
        """The warm-up in epochs: ``warmup_epochs``, or by default 5 % of the run, at most 5 epochs."""
        if self.warmup_epochs is not None:
            return float(self.warmup_epochs)
        return min(_WARMUP_EPOCHS, _WARMUP_SHARE * self.epochs)

    def validate(self) -> None:
        """Check every setting before anything heavy starts.

        Raises:
            ConfigError: the first invalid setting, named by its flag, with what to do.
        """
        for name in ("epochs", "batch_size", "img_size", "grad_accum", "lr_base_size"):
            _check_int(name, getattr(self, name), low=1)
        for name in ("seed", "cam_images", "early_stop_patience"):
            _check_int(name, getattr(self, name), low=0)
        for name, low in (("workers", 0), ("crop_padding", 0), ("threads", 1)):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), low=low)
        if self.resize is not None:
            _check_int("resize", self.resize, low=1)
        # Every float must be a finite number: nan passes every comparison below, and a
        # nan or inf learning rate trains a network of nan that still "reports" accuracy.
        _check_number("lr_base", self.lr_base, low=0, low_open=True)
        for name in ("lr", "head_lr_mult"):
            if getattr(self, name) is not None:
                _check_number(name, getattr(self, name), low=0, low_open=True)
        for name in ("momentum", "label_smoothing", "drop_path_rate", "val_fraction", "ema_decay"):
            _check_number(name, getattr(self, name), low=0, high=1)
        for name in ("weight_decay", "mixup_alpha", "cutmix_alpha"):
            _check_number(name, getattr(self, name), low=0)
        if self.warmup_epochs is not None:
            _check_number("warmup_epochs", self.warmup_epochs, low=0)
            if self.warmup_epochs > self.epochs:
                raise ConfigError(
                    f"--warmup-epochs ({self.warmup_epochs}) is longer than --epochs ({self.epochs}); "
                    f"give a shorter warm-up (0 for none), or leave it out for 5 % of the run"
                )
        if self.resize is not None and self.img_size > self.resize:
            raise ConfigError(
                f"--img-size ({self.img_size}) is larger than --resize ({self.resize}): the crop is taken "
                f"from the resized image, so --resize must be >= --img-size"
            )
        if self.batch_size % self.grad_accum:
            raise ConfigError(
                f"--batch-size ({self.batch_size}) must be a multiple of --grad-accum ({self.grad_accum})"
            )
        for name in ("amp", "resize_mode", "bn"):
            choices = next(f for f in fields(self) if f.name == name).metadata["choices"]
            if getattr(self, name) not in choices:
                raise ConfigError(f"--{_flag(name)} must be one of {', '.join(choices)}; got {getattr(self, name)!r}")
        if self.sync_bn and self.bn not in ("auto", "sync"):
            raise ConfigError(f"--sync-bn and --bn {self.bn} contradict each other; give one")
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; give one")
        if self.early_stop_patience and self.val_fraction == 0:
            raise ConfigError(
                "--early-stop-patience with --val-fraction 0 would stop training on the test set; keep a "
                "validation split (--val-fraction > 0) or drop --early-stop-patience"
            )
        self._validate_dataset()
        self._validate_device()
        self._validate_model()
        self._validate_paths()

    def _validate_dataset(self) -> None:
        try:
            reader, _ = resolve_reader(self.dataset, self.data_root)
        except DatasetError as e:
            raise ConfigError(str(e)) from None
        if (self.synthetic or self.download) and reader.name != "cub200":
            flag = "--synthetic" if self.synthetic else "--download"
            raise ConfigError(
                f"{flag} is for --dataset cub200; {reader.title} is yours to download: {reader.obtain}"
            )
        if self.bbox_crop and not reader.has_boxes:
            raise ConfigError(f"--bbox-crop: {reader.title} has no bounding boxes (cub200 and nabirds have)")

    def _validate_device(self) -> None:
        if self.device == "auto":
            return
        try:
            device = torch.device(self.device)
        except (RuntimeError, ValueError):
            raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N; got {self.device!r}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"--device {self.device}: CUDA is not available here; use --device cpu (or auto)")
        if device.type not in ("cpu", "cuda"):
            raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N; got {self.device!r}")

    def _validate_model(self) -> None:
        if self.arch is None:
            if self.eval_only is None:
                raise ConfigError("--arch is needed: name an architecture of resnetzoo.list_models()")
            return  # --eval-only: the checkpoint's architecture
        models = list_models()
        if self.arch not in models:
            close = difflib.get_close_matches(self.arch, models, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"--arch {self.arch!r} is not a resnetzoo model.{hint} Choices: {', '.join(models)}")
        if self.eval_only is not None:
            return
        try:
            source = pretrained_source(self.arch, self.pretrained)
        except ValueError as e:
            raise ConfigError(f"--pretrained {self.pretrained!r}: {e}") from None
        remote = isinstance(source, str) and ("://" in source or source.startswith("hf-hub:"))
        if source is not None and not isinstance(source, WeightSpec) and not remote and not Path(source).exists():
            raise ConfigError(f"--pretrained {self.pretrained}: no such file")
        if source is None and self.bn == "frozen":
            raise ConfigError(
                f"--bn frozen keeps the pretrained BatchNorm statistics, but --pretrained {self.pretrained} has none "
                f"(it would freeze the initial mean 0 and variance 1); use --bn train or auto, or give pretrained "
                f"weights"
            )

    def _validate_paths(self) -> None:
        for flag, value in (("--eval-only", self.eval_only), ("--exclude-test-list", self.exclude_test_list)):
            if value is not None:
                _check_regular_file(flag, Path(value))
        if self.synthetic or self.download or self.resume:
            return  # generated, fetched, or named by the checkpoint being resumed
        reader, root = resolve_reader(self.dataset, self.data_root)
        if reader.name == "cub200":
            if find_tree(root) is None:
                raise ConfigError(
                    f"--data-root {root}: no CUB-200-2011 tree there (looked for {root / 'images.txt'} and "
                    f"{root / TREE_DIRNAME / 'images.txt'}). Add --download to fetch it (1.1 GB), point "
                    f"--data-root at an extracted copy, or try the pipeline with --synthetic"
                )
        elif not root.is_dir() and reader.name == "imagefolder":
            raise ConfigError(f"--dataset imagefolder:{root}: no such folder; expected {reader.layout}")
        elif not root.is_dir():
            raise ConfigError(f"--data-root {root}: no such folder; {reader.title} is expected as {reader.layout}. "
                              f"{reader.obtain}")


def _check_regular_file(flag: str, path: Path) -> None:
    """A file to read must be a regular file: a folder or a FIFO (which would block a reader) is refused."""
    if not path.exists():
        raise ConfigError(f"{flag} {path}: no such file")
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "a FIFO, device or socket"
        raise ConfigError(f"{flag} {path}: not a regular file ({kind}); give the path of a file")


def _check_int(name: str, value: Any, *, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"--{_flag(name)} must be an integer >= {low}, got {value!r}")


def _check_number(
    name: str, value: Any, *, low: float, high: float | None = None, low_open: bool = False
) -> None:
    """A finite number in ``[low, high)`` (``(low, high)`` with ``low_open``), else ConfigError naming the flag."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"--{_flag(name)} must be a finite number, got {value!r}")
    too_low = value <= low if low_open else value < low
    if too_low or (high is not None and value >= high):
        bounds = f"{'>' if low_open else '>='} {low:g}" + (f" and below {high:g}" if high is not None else "")
        raise ConfigError(f"--{_flag(name)} must be a number {bounds}, got {value!r}")


# ------------------------------------------------------------------------- resolution
def resolve_settings(
    config: FinetuneConfig, *, device: torch.device, world_size: int, default_workers: int,
    default_threads: tuple[int, str] = (1, ""),
) -> tuple[FinetuneConfig, dict[str, str]]:
    """Give every setting left at ``None`` (or ``auto``) the value this run uses.

    Args:
        config: a validated config.
        device: the device the run uses.
        world_size: the number of processes.
        default_workers: the data-loading workers to use when ``workers`` is None.
        default_threads: the CPU threads to use when ``threads`` is None on a CPU, and why.

    Returns:
        The config with concrete values (what checkpoints and ``summary.json`` record),
        and for each setting that was chosen here a line saying how (``summary.json``
        ``settings_chosen``).
    """
    pretrained = config.arch is not None and pretrained_source(config.arch, config.pretrained) is not None
    scale = config.img_size / _PUBLISHED_SIZE
    chosen: dict[str, Any] = {}
    why: dict[str, str] = {}
    if config.channels_last is None:
        chosen["channels_last"] = device.type == "cuda"
    if config.workers is None:
        chosen["workers"] = default_workers
    if config.threads is None and device.type == "cpu":
        chosen["threads"], why["threads"] = default_threads
    if config.warmup_epochs is None:
        chosen["warmup_epochs"] = config.warmup
        why["warmup_epochs"] = f"{config.warmup:g} epochs: 5 % of --epochs {config.epochs}, at most 5"
    if config.lr is None:
        chosen["lr"] = config.lr_base * config.batch_size / config.lr_base_size
        why["lr"] = (f"{chosen['lr']:g}: linear scaling rule, --lr-base {config.lr_base:g} x --batch-size "
                     f"{config.batch_size} / --lr-base-size {config.lr_base_size}")
    if config.head_lr_mult is None:
        chosen["head_lr_mult"] = _HEAD_LR_MULT if pretrained else 1.0
        why["head_lr_mult"] = (f"{chosen['head_lr_mult']:g}: " +
                               ("a fresh head on a pretrained backbone" if pretrained else
                                "trained from scratch, the head is no newer than the rest"))
    if config.resize is None:
        chosen["resize"] = max(config.img_size, round(_PUBLISHED_RESIZE * scale))
        why["resize"] = f"{chosen['resize']}: 512 at 448, scaled to --img-size {config.img_size}"
    if config.crop_padding is None:
        chosen["crop_padding"] = round(_PUBLISHED_PADDING * scale)
        why["crop_padding"] = f"{chosen['crop_padding']}: 8 at 448, scaled to --img-size {config.img_size}"
    bn = "sync" if config.sync_bn else config.bn
    if bn == "auto":
        per_process = config.batch_size // (world_size * config.grad_accum)
        if per_process >= _BN_MIN_BATCH:
            bn, reason = "train", f"{per_process} images per process"
        elif world_size > 1 and device.type == "cuda" and per_process * world_size >= _BN_MIN_BATCH:
            bn, reason = "sync", f"{per_process} images per GPU, {per_process * world_size} over the GPUs"
        elif pretrained:
            bn, reason = "frozen", f"{per_process} images per process keep the pretrained statistics"
        else:
            bn, reason = "train", f"{per_process} images per process, but no pretrained statistics to keep"
        why["bn"] = f"{bn}: {reason} (BatchNorm is unreliable below {_BN_MIN_BATCH})"
    chosen["bn"], chosen["sync_bn"] = bn, False
    return dataclasses.replace(config, **chosen), why


# ------------------------------------------------------------------------- command line
def _scalar_type(hint: Any) -> type:
    """``int`` for ``int``, ``str`` for ``str | None`` …: the type argparse converts to."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def build_parser(
    config_class: type[FinetuneConfig] = FinetuneConfig,
    *,
    prog: str = "python -m resnetzoo.recipes.finetune",
    description: str = "Fine-tune a ResNet on a fine-grained image-classification data set.",
    examples: str = "",
) -> argparse.ArgumentParser:
    """The command-line parser, one flag per config field.

    Every flag defaults to "not given" (``argparse.SUPPRESS``), so :func:`parse_config`
    can tell an explicit value from a default; the help shows the real defaults.

    Args:
        config_class: the config class whose fields become flags (a preset's subclass).
        prog: the program name in the usage line.
        description: the first paragraph of ``--help``.
        examples: the epilog of ``--help``.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog=prog, description=description,
        epilog=examples or (
            "examples:\n"
            f"  {prog} --synthetic                                   # 1-minute CPU demo\n"
            f"  {prog} --dataset fgvc_aircraft --data-root data\n"
            f"  {prog} --dataset imagefolder:data/my_birds --epochs 30\n"
            f"  torchrun --nproc_per_node=8 -m resnetzoo.recipes.finetune --dataset cub200 --cache-dir cache\n"
            f"  {prog} --output-dir runs/finetune --resume"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hints = typing.get_type_hints(config_class)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(config_class):
        meta = f.metadata
        group = groups.get(meta["group"]) or groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        kind = _scalar_type(hints[f.name])
        text = meta["help"].replace("%", "%%")  # argparse %-formats help strings
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        if kind is bool:
            # store_true for off-by-default switches; --x/--no-x where the default is on or automatic.
            kwargs["action"] = "store_true" if f.default is False else argparse.BooleanOptionalAction
            kwargs["help"] = text + (" (default: on)" if f.default is True else "")
        else:
            kwargs.update(type=kind, choices=meta["choices"], metavar=meta["metavar"])
            # A None default is described by the help text itself ("default: ...").
            kwargs["help"] = text if f.default is None else f"{text} (default: {f.default})"
        group.add_argument(f"--{_flag(f.name)}", **kwargs)
    return parser


def parse_config(argv: list[str] | None = None, *, config_class: type[FinetuneConfig] = FinetuneConfig,
                 parser: argparse.ArgumentParser | None = None) -> FinetuneConfig:
    """Parse command-line arguments into a config (not yet validated).

    With ``--synthetic`` the :data:`SYNTHETIC_DEFAULTS` replace the recipe defaults;
    flags given explicitly win over both.

    Args:
        argv: the arguments, without the program name; None reads ``sys.argv``.
        config_class: the config class to build (a preset's subclass).
        parser: the parser to use; default ``build_parser(config_class)``.

    Returns:
        The config.
    """
    given = vars((parser or build_parser(config_class)).parse_args(argv))
    if given.get("eval_only") is not None and "arch" not in given:
        given["arch"] = None  # the checkpoint's; an --arch given is checked against it
    if given.get("synthetic"):
        return config_class.for_synthetic(**given)
    return config_class(**given)
