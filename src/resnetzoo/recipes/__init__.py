"""Training recipes built on resnetzoo models; each lives in its own subpackage.

- :mod:`resnetzoo.recipes.finetune`: fine-tuning on any image-classification data set
  (CUB-200-2011, NABirds, FGVC-Aircraft, Stanford Cars, Flowers-102, Oxford-IIIT Pets,
  or your own class folders).
- :mod:`resnetzoo.recipes.cub200`: its CUB-200-2011 preset (200 bird species).

A recipe is imported on demand (``from resnetzoo.recipes.finetune import train``), so
``import resnetzoo`` does not pay for it.
"""

from __future__ import annotations

__all__: list[str] = []
