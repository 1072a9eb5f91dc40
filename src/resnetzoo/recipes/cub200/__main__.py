"""``python -m resnetzoo.recipes.cub200``: the CUB-200-2011 fine-tune from the command line."""

from __future__ import annotations

from resnetzoo.recipes.cub200 import main

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(main())
