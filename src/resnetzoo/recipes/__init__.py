"""Training recipes built on resnetzoo models; each lives in its own subpackage.

- :mod:`resnetzoo.recipes.cub200`: fine-tuning on CUB-200-2011 (200 bird species).

A recipe is imported on demand (``from resnetzoo.recipes.cub200 import train``), so
``import resnetzoo`` does not pay for it.
"""

from __future__ import annotations

__all__: list[str] = []
