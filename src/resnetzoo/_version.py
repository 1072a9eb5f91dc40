"""The package version: the one place it is written (``pyproject.toml`` reads it from here).

Kept free of imports so that ``resnetzoo --version`` and ``pip`` can read it without torch.
"""

__all__ = ["__version__"]

__version__ = "0.2.0.dev0"
