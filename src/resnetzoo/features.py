"""Feature maps of a network: which ones exist (:class:`FeatureInfo`) and which to take.

A ResNet has one feature map per level: index 0 is the stem's (timm's ``act1``,
before the max-pool, at stride 2), index ``i`` the output of stage ``layer{i}``.
:class:`FeatureInfo` describes them with timm's contract, so code written for
``timm``'s ``model.feature_info`` (``.channels()``, ``.reduction()``,
``.module_name()``, ``from_other``) works unchanged; it is also a plain ``list`` of
dicts, as timm's classification models keep it, so ``feature_info[i]["num_chs"]``
and ``timm.models.FeatureInfo(model.feature_info, ...)`` work too.

:func:`take_indices` turns timm's ``indices`` argument (``None``, a count of last
levels, or a list of indices that may be negative) into absolute indices; it is
TorchScript-compatible because ``forward_intermediates`` calls it.
"""

import copy
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["FeatureInfo", "normalize_indices", "take_indices"]


def take_indices(num_features: int, indices: int | list[int] | None) -> tuple[list[int], int]:
    """Resolve timm's ``indices`` argument into absolute feature indices.

    Args:
        num_features: how many feature levels the network has.
        indices: ``None`` for all levels, an int ``n`` for the last ``n`` levels, or a
            list of indices (negative ones count from the end).

    Returns:
        ``(absolute_indices, max_index)``, the indices in the order given.

    Raises:
        ValueError: an index (or count) is out of range, or the list is empty.
    """
    if indices is None:
        return list(range(num_features)), num_features - 1
    taken: list[int] = []
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ValueError(
                "indices=" + str(indices) + " asks for the last " + str(indices) + " feature levels; "
                "the network has " + str(num_features) + " (give 1 to " + str(num_features) + ")"
            )
        for i in range(num_features - indices, num_features):
            taken.append(i)
    else:
        for i in indices:
            index = num_features + i if i < 0 else i
            if not 0 <= index < num_features:
                raise ValueError(
                    "feature index " + str(i) + " is out of range: the network has " + str(num_features)
                    + " feature levels, 0 to " + str(num_features - 1) + " (or -" + str(num_features)
                    + " to -1 from the end)"
                )
            taken.append(index)
    if len(taken) == 0:
        raise ValueError("indices is empty: give at least one feature index")
    return taken, max(taken)


def normalize_indices(num_features: int, indices: int | Iterable[int] | None) -> tuple[int, ...]:
    """Absolute, sorted, distinct feature indices, for attributes such as ``out_indices``.

    Accepts what :func:`take_indices` accepts, and any iterable of ints (a tuple, a
    ``range``) in place of the list.
    """
    if indices is not None and not isinstance(indices, int):
        indices = list(indices)
        bad = [i for i in indices if not isinstance(i, int) or isinstance(i, bool)]
        if bad:
            raise ValueError(f"feature indices must be integers, got {bad!r}")
    taken, _ = take_indices(num_features, indices)
    return tuple(sorted(set(taken)))


class FeatureInfo(list):
    """The feature levels of a network: a list of ``{"module", "num_chs", "reduction"}`` dicts.

    timm's ``FeatureInfo`` contract: :meth:`channels`, :meth:`reduction` and
    :meth:`module_name` (and :meth:`get`) return one value per index of
    :attr:`out_indices` when called without an argument, the value at one level for
    an int, and a list for a list of levels.

    Args:
        info: one dict per level, shallow to deep, each with ``module`` (the module
            whose output it is), ``num_chs`` (channels) and ``reduction`` (stride from
            the input).
        out_indices: the levels a feature extractor returns; default all.

    Attributes:
        out_indices: absolute indices of the levels returned by default, ascending.
    """

    def __init__(self, info: Iterable[dict[str, Any]], out_indices: int | Iterable[int] | None = None) -> None:
        super().__init__(dict(level) for level in info)
        previous = 1
        for i, level in enumerate(self):
            missing = {"module", "num_chs", "reduction"} - set(level)
            if missing:
                raise ValueError(f"feature level {i} lacks {sorted(missing)}: {level}")
            if level["reduction"] < previous:
                raise ValueError(f"feature level {i} has reduction {level['reduction']} < {previous} of the level before")
            previous = level["reduction"]
        self.out_indices = normalize_indices(len(self), out_indices)

    def from_other(self, out_indices: int | Iterable[int] | None) -> "FeatureInfo":
        """A copy that returns the levels ``out_indices`` by default (timm's ``from_other``)."""
        return FeatureInfo(copy.deepcopy(list(self)), out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        """Value of ``key`` at each level of :attr:`out_indices` (``idx=None``), at level ``idx``, or at each of ``idx``."""
        if idx is None:
            return [self[i][key] for i in self.out_indices]
        if isinstance(idx, int):
            return self[idx][key]
        return [self[i][key] for i in idx]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None) -> Any:
        """The level dicts (restricted to ``keys``) at :attr:`out_indices`, at ``idx``, or at each of ``idx``."""

        def pick(i: int) -> dict[str, Any]:
            return dict(self[i]) if keys is None else {k: self[i][k] for k in keys}

        if idx is None:
            return [pick(i) for i in self.out_indices]
        if isinstance(idx, int):
            return pick(idx)
        return [pick(i) for i in idx]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        """Channels of each returned level (see :meth:`get`)."""
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        """Stride from the input of each returned level (see :meth:`get`)."""
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        """Name of the module producing each returned level (see :meth:`get`)."""
        return self.get("module", idx)

    def __repr__(self) -> str:
        return f"FeatureInfo({list.__repr__(self)}, out_indices={self.out_indices})"
