"""``python -m resnetzoo.recipes.finetune``: fine-tune on any supported data set from the command line."""

from __future__ import annotations

from resnetzoo.recipes.finetune.engine import main

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(main())
