"""The errors of the fine-tuning recipe: each names what is wrong and what to do.

All derive from :class:`resnetzoo.ResNetZooError` and from the built-in class a caller
would expect, so ``except ValueError`` keeps working. The command line prints the
message on one line and exits with status 2 (a setting or the data) or 1 (the run
itself failed: it diverged, or a file could not be written).
"""

from __future__ import annotations

from resnetzoo.errors import ResNetZooError

__all__ = [
    "ClassListMismatchError",
    "ConfigError",
    "DatasetError",
    "TrainingDivergedError",
    "UnsafeArchiveError",
]


class ConfigError(ResNetZooError, ValueError):
    """A recipe setting is invalid; the message names the setting (as its command-line flag)."""


class DatasetError(ResNetZooError, ValueError):
    """A data set is missing, incomplete or inconsistent.

    The message names the file (and line) at fault and what to do about it.
    """


class ClassListMismatchError(ResNetZooError, ValueError):
    """A checkpoint was trained on other classes than the data set lists."""


class UnsafeArchiveError(ResNetZooError, ValueError):
    """An archive holds a link, a device or a member that would land outside the extraction folder."""


class TrainingDivergedError(ResNetZooError, ArithmeticError):
    """The training loss or the weights became NaN or infinite; the run stopped without saving them."""
