"""Settings of the CUB-200-2011 recipe: one dataclass, and the command line built from it.

Each field of :class:`CUB200Config` carries its help text and, for the recipe's
hyper-parameters, where the value comes from. The command line
(:func:`build_parser`) is generated from the fields, so a setting has one name
(``img_size`` is ``--img-size``) and one default, documented in one place.

The defaults follow the published plain ResNet-50 recipe that reached 86.74 % top-1
(cyizhuo/Fine-Grained-Image-Classification ``train.py``: torchvision's ImageNet-1k V1
weights, 512 x 512 resize, random 448 crop with 8-pixel padding, horizontal flip,
SGD lr 0.1 x 64/256 = 0.025 at batch 64, momentum 0.9, weight decay 5e-4, cosine
decay, label smoothing 0.1), with three changes common in fine-grained work: the
new 200-class head learns 10x faster, the first 5 % of training warms up linearly,
and the schedule is stepped per iteration over 100 epochs instead of per epoch
over 128. See ``docs/recipes/cub200.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from resnetzoo.errors import ResNetZooError

__all__ = [
    "SYNTHETIC_DEFAULTS",
    "CUB200Config",
    "ConfigError",
    "build_parser",
    "parse_config",
]

_AMP_CHOICES = ("auto", "bf16", "fp16", "off")
DEFAULT_WARMUP_EPOCHS = 5.0
DEFAULT_WARMUP_SHARE = 0.05


class ConfigError(ResNetZooError, ValueError):
    """A recipe setting is invalid; the message names the setting (as its command-line flag)."""


def _setting(default: Any, help: str, *, group: str, choices: tuple[str, ...] | None = None, metavar: str | None = None) -> Any:
    return field(default=default, metadata={"help": help, "group": group, "choices": choices, "metavar": metavar})


def _flag(name: str) -> str:
    return name.replace("_", "-")


SYNTHETIC_DEFAULTS: dict[str, Any] = {
    "arch": "resnet18",
    "pretrained": "none",
    "img_size": 64,
    "resize": 72,
    "epochs": 3,
    "batch_size": 16,
    "lr": 0.05,
    "head_lr_mult": 1.0,  # from scratch, the head is no newer than the rest
    "warmup_epochs": 0.0,
    "output_dir": "runs/cub200-synthetic",
}
"""What ``--synthetic`` changes unless given explicitly: a run of well under a minute on a CPU."""


@dataclass
class CUB200Config:
    """Every setting of the CUB-200-2011 fine-tune; ``train(CUB200Config(...))`` runs it.

    Fields are grouped as in ``python -m resnetzoo.recipes.cub200 --help``, which shows
    the same help texts. ``batch_size`` is global: images per optimizer step summed
    over processes and accumulation steps, so the recipe means the same thing on one
    GPU or eight.
    """

    # data
    data_root: str = _setting(
        "data", "folder holding CUB_200_2011/ (or the tree itself); --download fills it", group="data"
    )
    download: bool = _setting(
        False, "download CUB_200_2011.tgz (1.1 GB) from CaltechDATA into --data-root, verify, extract", group="data"
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
    bbox_crop: bool = _setting(False, "crop every image to the bird's bounding box first", group="data")
    workers: int | None = _setting(
        None, "data-loading worker processes per GPU (default: the CPUs this process may use, "
        "shared among the processes of one machine, at most 8)", group="data", metavar="N",
    )

    # model
    arch: str = _setting("resnet50", "architecture, as listed by resnetzoo.list_models()", group="model")
    pretrained: str = _setting(
        "tv_in1k",
        "start weights, as for resnetzoo.create_model: a tag of --arch (tv_in1k = torchvision "
        "ImageNet-1k V1, as in the published recipe), a full name (resnet50.tv2_in1k), 'none', a "
        "checkpoint file, an hf-hub:org/repo reference or a URL; the classifier is left out",
        group="model",
        metavar="TAG|NAME|none|PATH|URL",
    )
    drop_path_rate: float = _setting(0.0, "stochastic depth of the last block (0 in the published recipe)", group="model")

    # input
    img_size: int = _setting(448, "crop size fed to the network (published: 448)", group="input")
    resize: int = _setting(512, "pre-crop resize (published: 512)", group="input")
    resize_mode: str = _setting(
        "square",
        "'square' resizes to resize x resize (published recipe), 'shorter' scales the shorter side",
        group="input",
        choices=("square", "shorter"),
    )
    crop_padding: int = _setting(8, "zero padding before the random train crop (published: 8)", group="input")

    # optimisation
    epochs: int = _setting(100, "training epochs (published: 128 with per-epoch cosine)", group="optimisation")
    batch_size: int = _setting(
        64, "images per optimizer step, summed over GPUs and accumulation steps (published: 64)", group="optimisation"
    )
    lr: float = _setting(0.025, "backbone learning rate (published: 0.1 x 64 / 256 = 0.025)", group="optimisation")
    head_lr_mult: float = _setting(
        10.0, "learning-rate multiplier of the freshly initialised classifier (common fine-grained practice)",
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
    compile: bool = _setting(False, "torch.compile the model (slower start, faster steps)", group="speed")
    sync_bn: bool = _setting(False, "synchronise BatchNorm statistics across GPUs (DDP only)", group="speed")
    deterministic: bool = _setting(
        False, "deterministic CUDA kernels (cudnn.benchmark off, torch.use_deterministic_algorithms)", group="speed"
    )

    # run
    output_dir: str = _setting("runs/cub200", "where metrics, checkpoints, plots and the summary go", group="run")
    resume: bool = _setting(False, "continue the run in --output-dir from its checkpoint.pt", group="run")
    overwrite: bool = _setting(False, "replace the results of an earlier run in --output-dir", group="run")
    eval_only: str | None = _setting(
        None, "only evaluate this training checkpoint (.pt) or weights file (.safetensors) on the test split",
        group="run", metavar="CKPT",
    )
    seed: int = _setting(0, "seed of every random number generator", group="run")
    progress: bool = _setting(True, "show progress bars (on rank 0, when writing to a terminal)", group="run")

    @classmethod
    def for_synthetic(cls, **overrides: Any) -> CUB200Config:
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
    def from_dict(cls, values: dict[str, Any]) -> CUB200Config:
        """Rebuild a config from :meth:`to_dict` output, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def validate(self) -> None:
        """Check every setting before anything heavy starts.

        Raises:
            ConfigError: the first invalid setting, named by its flag, with what to do.
        """
        positive_ints = ("epochs", "batch_size", "img_size", "resize", "grad_accum")
        for name in positive_ints:
            _check_int(name, getattr(self, name), low=1)
        for name in ("crop_padding", "seed"):
            _check_int(name, getattr(self, name), low=0)
        if self.workers is not None:
            _check_int("workers", self.workers, low=0)
        # Every float must be a finite number: nan passes every comparison below, and a
        # nan or inf learning rate trains a network of nan that still "reports" accuracy.
        for name in ("lr", "head_lr_mult"):
            _check_number(name, getattr(self, name), low=0, low_open=True)
        for name in ("momentum", "label_smoothing", "drop_path_rate"):
            _check_number(name, getattr(self, name), low=0, high=1)
        _check_number("weight_decay", self.weight_decay, low=0)
        if self.warmup_epochs is not None:
            _check_number("warmup_epochs", self.warmup_epochs, low=0)
            if self.warmup_epochs > self.epochs:
                raise ConfigError(
                    f"--warmup-epochs ({self.warmup_epochs}) is longer than --epochs ({self.epochs}); "
                    f"give a shorter warm-up (0 for none), or leave it out for 5 % of the run"
                )
        if self.img_size > self.resize:
            raise ConfigError(
                f"--img-size ({self.img_size}) is larger than --resize ({self.resize}): the crop is taken "
                f"from the resized image, so --resize must be >= --img-size"
            )
        if self.batch_size % self.grad_accum:
            raise ConfigError(
                f"--batch-size ({self.batch_size}) must be a multiple of --grad-accum ({self.grad_accum})"
            )
        for name in ("amp", "resize_mode"):
            choices = next(f for f in fields(self) if f.name == name).metadata["choices"]
            if getattr(self, name) not in choices:
                raise ConfigError(f"--{_flag(name)} must be one of {', '.join(choices)}; got {getattr(self, name)!r}")
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; give one")
        self._validate_device()
        self._validate_model()
        self._validate_paths()

    @property
    def warmup(self) -> float:
        """The warm-up in epochs: ``warmup_epochs``, or by default 5 % of the run, at most 5 epochs."""
        if self.warmup_epochs is not None:
            return float(self.warmup_epochs)
        return min(DEFAULT_WARMUP_EPOCHS, DEFAULT_WARMUP_SHARE * self.epochs)

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
        from resnetzoo import list_models

        models = list_models()
        if self.arch not in models:
            import difflib

            close = difflib.get_close_matches(self.arch, models, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"--arch {self.arch!r} is not a resnetzoo model.{hint} Choices: {', '.join(models)}")
        if self.eval_only is not None:
            return
        from resnetzoo.weights import WeightSpec, pretrained_source

        try:
            source = pretrained_source(self.arch, self.pretrained)
        except ValueError as e:
            raise ConfigError(f"--pretrained {self.pretrained!r}: {e}") from None
        remote = isinstance(source, str) and ("://" in source or source.startswith("hf-hub:"))
        if source is not None and not isinstance(source, WeightSpec) and not remote and not Path(source).exists():
            raise ConfigError(f"--pretrained {self.pretrained}: no such file")

    def _validate_paths(self) -> None:
        if self.eval_only is not None and not Path(self.eval_only).is_file():
            raise ConfigError(f"--eval-only {self.eval_only}: no such file")
        if self.synthetic or self.download or self.resume:
            return  # generated, fetched, or named by the checkpoint being resumed
        from resnetzoo.recipes.cub200.data import TREE_DIRNAME, find_tree

        if find_tree(self.data_root) is None:
            root = Path(self.data_root)
            raise ConfigError(
                f"--data-root {root}: no CUB-200-2011 tree there (looked for {root / 'images.txt'} and "
                f"{root / TREE_DIRNAME / 'images.txt'}). Add --download to fetch it (1.1 GB), point "
                f"--data-root at an extracted copy, or try the pipeline with --synthetic"
            )


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


def _scalar_type(hint: Any) -> type:
    """``int`` for ``int``, ``str`` for ``str | None`` …: the type argparse converts to."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m resnetzoo.recipes.cub200`` argument parser, one flag per config field.

    Every flag defaults to "not given" (``argparse.SUPPRESS``), so :func:`parse_config`
    can tell an explicit value from a default; the help shows the real defaults.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog="python -m resnetzoo.recipes.cub200",
        description="Fine-tune a ResNet on CUB-200-2011 (200 bird species) with a published recipe.",
        epilog=(
            "examples:\n"
            "  python -m resnetzoo.recipes.cub200 --synthetic                # 1-minute CPU demo\n"
            "  python -m resnetzoo.recipes.cub200 --data-root data --download\n"
            "  torchrun --nproc_per_node=8 -m resnetzoo.recipes.cub200 --data-root data --cache-dir cache\n"
            "  python -m resnetzoo.recipes.cub200 --output-dir runs/cub200 --resume\n"
            "  python -m resnetzoo.recipes.cub200 --eval-only runs/cub200/best.safetensors"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hints = typing.get_type_hints(CUB200Config)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(CUB200Config):
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


def parse_config(argv: list[str] | None = None) -> CUB200Config:
    """Parse command-line arguments into a :class:`CUB200Config` (not yet validated).

    With ``--synthetic`` the :data:`SYNTHETIC_DEFAULTS` replace the recipe defaults;
    flags given explicitly win over both.

    Args:
        argv: the arguments, without the program name; None reads ``sys.argv``.

    Returns:
        The config.
    """
    given = vars(build_parser().parse_args(argv))
    if given.get("synthetic"):
        return CUB200Config.for_synthetic(**given)
    return CUB200Config(**given)
