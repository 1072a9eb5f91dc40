"""Fine-tune a ResNet on CUB-200-2011 (200 bird species) with a published recipe.

Command line::

    python -m resnetzoo.recipes.cub200 --synthetic                   # 1-minute CPU demo, no download
    python -m resnetzoo.recipes.cub200 --data-root data --download   # the real thing, on a GPU
    torchrun --nproc_per_node=8 -m resnetzoo.recipes.cub200 --data-root data --cache-dir cache

Python::

    from resnetzoo.recipes.cub200 import CUB200Config, train
    summary = train(CUB200Config(data_root="data", output_dir="runs/cub200"))
    summary["test_top1"], summary["best_top1"]

The recipe (defaults of :class:`CUB200Config`) is the published plain ResNet-50
fine-tune that reached 86.74 % top-1 at 448 px (cyizhuo/Fine-Grained-Image-Classification
``train.py``: torchvision ImageNet-1k V1 weights; 512 x 512 resize, random 448 crop
with 8-pixel padding, horizontal flip; SGD momentum 0.9, weight decay 5e-4, lr 0.025
at batch 64, cosine decay; label smoothing 0.1; 128 epochs, the best epoch's test
accuracy reported). Other published plain ResNet-50 results at 448 px: 85.99 %
(HaoMood/fine-grained-baseline) and the widely cited 84.5 % (DT-RAM). Changes here,
all common fine-grained practice: the new 200-class head learns 10x faster, the
first 5 epochs warm up linearly, the cosine decays per step, over 100 epochs;
bf16 autocast and channels-last on CUDA. Our aim is >= 87 % top-1; it has not yet
been verified on a GPU. Expected time: about 10 s of GPU time per epoch on an A100
when the input pipeline keeps up (use ``--cache-dir``), so roughly 20-30 minutes
for 100 epochs with evaluation. Details and sources: ``docs/recipes/cub200.md``.
"""

from __future__ import annotations

from resnetzoo.recipes.cub200.checkpoints import load_checkpoint, save_checkpoint
from resnetzoo.recipes.cub200.config import (
    SYNTHETIC_DEFAULTS,
    ConfigError,
    CUB200Config,
    build_parser,
    parse_config,
)
from resnetzoo.recipes.cub200.data import (
    CUB200,
    ClassListMismatchError,
    CUB200Record,
    CUB200Tree,
    CUB200TreeError,
    UnsafeArchiveError,
    build_transforms,
    download_cub200,
    find_tree,
    make_synthetic_tree,
    match_class_order,
    normalize_batch,
    read_tree,
    safe_extract,
)
from resnetzoo.recipes.cub200.engine import TrainingDivergedError, evaluate, main, train

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
