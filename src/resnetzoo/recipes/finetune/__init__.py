"""Fine-tune a ResNet on any image-classification data set, with a published fine-grained recipe.

Command line::

    python -m resnetzoo.recipes.finetune --synthetic                         # CPU demo, no download
    python -m resnetzoo.recipes.finetune --dataset fgvc_aircraft --data-root data
    python -m resnetzoo.recipes.finetune --dataset imagefolder:data/my_birds
    torchrun --nproc_per_node=8 -m resnetzoo.recipes.finetune --dataset cub200 --cache-dir cache

Python::

    from resnetzoo.recipes.finetune import FinetuneConfig, train
    summary = train(FinetuneConfig(dataset="stanford_cars", data_root="data", output_dir="runs/cars"))
    summary["test_top1"], summary["test_top1_selected"], summary["protocol"]

The defaults (:class:`FinetuneConfig`) are the published plain ResNet-50 fine-tune
that reached 86.74 % top-1 on CUB-200-2011 at 448 px; ``resnetzoo.recipes.cub200`` is
the same engine as a CUB preset. The best epoch is chosen on a validation split held
out from the training images (``--val-fraction``, default 10 %), and the test split is
evaluated once, at the end, on the final and on the chosen weights. Data sets, flags
and outputs: ``docs/recipes/``.
"""

from __future__ import annotations

from resnetzoo.recipes.finetune.archive import safe_extract
from resnetzoo.recipes.finetune.checkpoints import load_checkpoint, save_checkpoint
from resnetzoo.recipes.finetune.config import (
    SYNTHETIC_DEFAULTS,
    FinetuneConfig,
    build_parser,
    parse_config,
    resolve_settings,
)
from resnetzoo.recipes.finetune.engine import (
    Dist,
    Run,
    build_model,
    evaluate_checkpoint,
    main,
    train,
)
from resnetzoo.recipes.finetune.errors import (
    ClassListMismatchError,
    ConfigError,
    DatasetError,
    TrainingDivergedError,
    UnsafeArchiveError,
)
from resnetzoo.recipes.finetune.evaluation import Evaluation, evaluate
from resnetzoo.recipes.finetune.images import ImageDataset, build_transforms, normalize_batch
from resnetzoo.recipes.finetune.readers import (
    READERS,
    ImageRecord,
    ImageSet,
    Reader,
    match_class_order,
    read_dataset,
)
from resnetzoo.recipes.finetune.synthetic import make_synthetic_tree

__all__ = [
    "READERS",
    "SYNTHETIC_DEFAULTS",
    "ClassListMismatchError",
    "ConfigError",
    "DatasetError",
    "Dist",
    "Evaluation",
    "FinetuneConfig",
    "ImageDataset",
    "ImageRecord",
    "ImageSet",
    "Reader",
    "Run",
    "TrainingDivergedError",
    "UnsafeArchiveError",
    "build_model",
    "build_parser",
    "build_transforms",
    "evaluate",
    "evaluate_checkpoint",
    "load_checkpoint",
    "main",
    "make_synthetic_tree",
    "match_class_order",
    "normalize_batch",
    "parse_config",
    "read_dataset",
    "resolve_settings",
    "safe_extract",
    "save_checkpoint",
    "train",
]
