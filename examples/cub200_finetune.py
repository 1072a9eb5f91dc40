"""Fine-tune a ResNet on CUB-200-2011 (200 bird species) with resnetzoo's published recipe.

A thin script over ``python -m resnetzoo.recipes.cub200``: same flags, same outputs.

    # a one-minute CPU run on generated images, no download
    python examples/cub200_finetune.py --synthetic --output-dir runs/demo

    # the real recipe (ResNet-50 from ImageNet-1k weights, 448 px, 100 epochs) on a GPU
    python examples/cub200_finetune.py --data-root data --download --cache-dir cache

    # eight GPUs
    torchrun --nproc_per_node=8 examples/cub200_finetune.py --data-root data --cache-dir cache

Run ``python examples/cub200_finetune.py --help`` for every flag; the recipe, its sources
and the expected accuracy are in docs/recipes/cub200.md.
"""

from __future__ import annotations

from resnetzoo.recipes.cub200 import main

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(main())
