"""Fine-tune a ResNet on CUB-200-2011 (200 bird species): the fine-tuning recipe's flagship preset.

Command line::

    python -m resnetzoo.recipes.cub200 --synthetic                   # CPU demo, no download
    python -m resnetzoo.recipes.cub200 --data-root data --download   # the real thing, on a GPU
    torchrun --nproc_per_node=8 -m resnetzoo.recipes.cub200 --data-root data --cache-dir cache

Python::

    from resnetzoo.recipes.cub200 import CUB200Config, train
    summary = train(CUB200Config(data_root="data", output_dir="runs/cub200"))
    summary["test_top1"], summary["test_top1_selected"]

This is :mod:`resnetzoo.recipes.finetune` with ``--dataset cub200`` and its output
folder; it takes the same flags. The recipe (defaults of
:class:`~resnetzoo.recipes.finetune.config.FinetuneConfig`) is the published plain
ResNet-50 fine-tune that reached 86.74 % top-1 at 448 px (cyizhuo/Fine-Grained-Image-
Classification ``train.py``: torchvision ImageNet-1k V1 weights; 512 x 512 resize,
random 448 crop with 8-pixel padding, flip; SGD momentum 0.9, weight decay 5e-4, lr
0.025 at batch 64, cosine decay; label smoothing 0.1; 128 epochs, the best epoch's
test accuracy reported). Changes, all common fine-grained practice: the new 200-class
head learns 10x faster, the first 5 epochs warm up linearly, the cosine decays per
step, over 100 epochs; bf16 autocast and channels-last on CUDA; and the best epoch is
chosen on a validation split carved from the training images, not on the test set.
Details and sources: ``docs/recipes/cub200.md``.
"""

from __future__ import annotations

import argparse
import dataclasses

from resnetzoo.recipes.finetune import config as finetune_config
from resnetzoo.recipes.finetune import engine as finetune_engine
from resnetzoo.recipes.finetune.archive import safe_extract
from resnetzoo.recipes.finetune.checkpoints import load_checkpoint, save_checkpoint
from resnetzoo.recipes.finetune.config import SYNTHETIC_DEFAULTS, FinetuneConfig
from resnetzoo.recipes.finetune.engine import train
from resnetzoo.recipes.finetune.errors import (
    ClassListMismatchError,
    ConfigError,
    TrainingDivergedError,
    UnsafeArchiveError,
)
from resnetzoo.recipes.finetune.evaluation import evaluate
from resnetzoo.recipes.finetune.images import build_transforms, normalize_batch
from resnetzoo.recipes.finetune.readers.base import ImageRecord, ImageSet, match_class_order
from resnetzoo.recipes.finetune.readers.cub import (
    CUB200,
    CUB200TreeError,
    download_cub200,
    find_tree,
    read_tree,
)
from resnetzoo.recipes.finetune.synthetic import make_synthetic_tree

__all__ = [
    "CUB200",
    "SYNTHETIC_DEFAULTS",
    "CUB200Config",
    "CUB200Record",
    "CUB200Tree",
    "CUB200TreeError",
    "ClassListMismatchError",
    "ConfigError",
    "TrainingDivergedError",
    "UnsafeArchiveError",
    "build_parser",
    "build_transforms",
    "download_cub200",
    "evaluate",
    "find_tree",
    "load_checkpoint",
    "main",
    "make_synthetic_tree",
    "match_class_order",
    "normalize_batch",
    "parse_config",
    "read_tree",
    "safe_extract",
    "save_checkpoint",
    "train",
]

CUB200Record = ImageRecord
"""One image of the tree (kept from resnetzoo 0.1; the records of every data set are :class:`ImageRecord`)."""
CUB200Tree = ImageSet
"""A parsed tree (kept from resnetzoo 0.1; every data set is read into an :class:`ImageSet`)."""

_PROG = "python -m resnetzoo.recipes.cub200"
_OUTPUT_DIR = next(f for f in dataclasses.fields(FinetuneConfig) if f.name == "output_dir")


@dataclasses.dataclass
class CUB200Config(FinetuneConfig):
    """:class:`~resnetzoo.recipes.finetune.config.FinetuneConfig` with CUB-200-2011's defaults.

    The same fields and flags; ``dataset`` is ``cub200`` and the outputs go to
    ``runs/cub200`` unless given.
    """

    output_dir: str = dataclasses.field(default="runs/cub200", metadata=_OUTPUT_DIR.metadata)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m resnetzoo.recipes.cub200`` argument parser, one flag per config field."""
    return finetune_config.build_parser(
        CUB200Config, prog=_PROG,
        description="Fine-tune a ResNet on CUB-200-2011 (200 bird species) with a published recipe.",
        examples=(
            "examples:\n"
            f"  {_PROG} --synthetic                # 1-minute CPU demo\n"
            f"  {_PROG} --data-root data --download\n"
            "  torchrun --nproc_per_node=8 -m resnetzoo.recipes.cub200 --data-root data --cache-dir cache\n"
            f"  {_PROG} --output-dir runs/cub200 --resume\n"
            f"  {_PROG} --eval-only runs/cub200/best.safetensors --output-dir runs/cub200-eval"
        ),
    )


def parse_config(argv: list[str] | None = None) -> CUB200Config:
    """Parse command-line arguments into a :class:`CUB200Config` (not yet validated)."""
    return finetune_config.parse_config(argv, config_class=CUB200Config, parser=build_parser())  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``python -m resnetzoo.recipes.cub200 [flags]`` (see :func:`~resnetzoo.recipes.finetune.main`)."""
    return finetune_engine.main(argv, config_class=CUB200Config, parser=build_parser())
