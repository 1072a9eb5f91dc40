"""Pictures of the errors: where a fine-tuned classifier fails, and where it looks.

After the final test evaluation the recipe calls :func:`write_error_analysis`, which
writes into the run's folder:

- ``confusion.png``: the row-normalised confusion matrix as a heat map, classes
  ordered so that classes confused with each other sit next to each other
  (:func:`confusion_order`), and ``confusion.csv``: the counts, in label order;
- ``confused_pairs.csv``: the most frequent (true, predicted) errors with their counts,
  rates and example image ids (:func:`confused_pairs`);
- ``cam/``: Grad-CAM overlays for a fixed, seeded sample of test images, half wrong and
  half right where there are enough of each, with the ground-truth box where the data
  set has boxes; ``cam/overview.png`` shows them all, ``cam/index.csv`` lists them;

and returns an :class:`ErrorAnalysis` whose :meth:`~ErrorAnalysis.summary` (the
pointing-game score, how it was measured and its baseline) goes into ``summary.json``.

**Grad-CAM** (Selvaraju et al., 2017) weighs each channel of the last stage's feature
map by the mean gradient of the class score over that channel and keeps the positive
part of the weighted sum. :func:`grad_cam` computes it from the model's
``forward_features`` / ``forward_head`` split (resnetzoo and timm models have both): the
feature map is the boundary between the two, so no hooks are registered, the model's
parameters get no ``.grad``, and the backbone runs without autograd. For a ResNet's
average-pool + linear head the map equals the original CAM (Zhou et al., 2016) divided
by the map's area, which is what the tests check it against.

We do not use the ``grad-cam`` package (``pytorch_grad_cam``, maintained and working
with torch 2.14): it brings OpenCV, scikit-learn, SciPy and ttach (350 MB installed) into
the ``recipe`` extra and takes 2.7 s to import for what is, on this split, one
``torch.autograd.grad`` call; its context manager also swallows ``IndexError``.

**The pointing game** (Zhang et al., 2016, "Top-down neural attention by excitation
backprop") asks whether the map's maximum falls inside the object: here the Grad-CAM of
the *true* class against the ground-truth box, next to the score of a map that always
points at the image's centre (a strong baseline where subjects are centred). Boxes are
``(x, y, width, height)`` in pixels of the image given to the model (after resizing and
cropping), ``(x, y)`` its top-left corner, as in CUB's ``bounding_boxes.txt``; pixel
``(column u, row v)`` covers ``[u, u + 1) x [v, v + 1)``. The map's maximum is the centre
of its largest cell in those coordinates (:func:`cam_peaks`), and an image scores when
it lies in the closed box. A map that is zero everywhere (no positive evidence) scores
a miss.

Internal to the recipe (no stability promise outside it), but usable on its own: the
functions take plain tensors and write plain files.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from resnetzoo._io import atomic_path, write_text
from resnetzoo.recipes.finetune.images import normalize_batch

__all__ = [
    "OUTPUT_NAMES",
    "ConfusedPair",
    "ErrorAnalysis",
    "confused_pairs",
    "confusion_matrix",
    "confusion_order",
    "cam_peaks",
    "grad_cam",
    "plot_confusion",
    "pointing_game_hits",
    "write_error_analysis",
]

logger = logging.getLogger(__name__)

OUTPUT_NAMES = ("confusion.png", "confusion.csv", "confused_pairs.csv", "cam")
"""What :func:`write_error_analysis` may write in its folder (``cam`` is a folder)."""

_CAM_FILE = re.compile(r"(?:\d{2,}_(?:wrong|right)_[A-Za-z0-9._-]*\.png|overview\.png|index\.csv)")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 28  # characters of a class name shown in a picture


# ----------------------------------------------------------------------------- checks
def _as_labels(name: str, values: Any, *, num_classes: int, length: int | None = None) -> torch.Tensor:
    """``values`` as an int64 CPU tensor ``(N,)`` of class indices, or a ValueError naming ``name``."""
    try:
        tensor = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a 1-d sequence of class indices, got {type(values).__name__}") from e
    if tensor.ndim != 1:
        raise ValueError(f"{name} must be 1-d (one class index per image), got shape {tuple(tensor.shape)}")
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got dtype {tensor.dtype}")
    tensor = tensor.detach().to("cpu", torch.int64)
    if length is not None and tensor.numel() != length:
        raise ValueError(f"{name} has {tensor.numel()} entries but labels have {length}; give one per image")
    if tensor.numel() and (tensor.min() < 0 or tensor.max() >= num_classes):
        bad = int(((tensor < 0) | (tensor >= num_classes)).nonzero()[0])
        raise ValueError(
            f"{name}[{bad}] = {int(tensor[bad])} is not a class index in [0, {num_classes}); "
            f"are the class list and the labels from the same data set?"
        )
    return tensor


def _as_boxes(boxes: Any, *, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes as ``float64 (N, 4)`` ``(x, y, w, h)`` plus a ``bool (N,)`` mask of images that have one.

    None, a row of NaN, and a box of zero width or height (what a crop leaves of a box
    outside it) all mean "no box"; negative or infinite values are an error.
    """
    if isinstance(boxes, (torch.Tensor, np.ndarray)):
        table = torch.as_tensor(boxes, dtype=torch.float64)
        if table.ndim != 2 or table.shape[1] != 4:
            raise ValueError(f"boxes must have shape (N, 4), got {tuple(table.shape)}")
        rows: list[Any] = list(table)
    else:
        rows = list(boxes)
    if len(rows) != length:
        raise ValueError(f"boxes has {len(rows)} entries for {length} images; give one per image (None for none)")
    out = torch.full((length, 4), math.nan, dtype=torch.float64)
    for i, row in enumerate(rows):
        if row is None:
            continue
        values = torch.as_tensor(row, dtype=torch.float64).reshape(-1)
        if values.numel() != 4:
            raise ValueError(f"boxes[{i}] must be (x, y, width, height), got {len(values)} values")
        if values.isnan().all():
            continue  # a NaN row means "no box", as None does
        x, y, w, h = values.tolist()
        if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 0 or h < 0:
            raise ValueError(f"boxes[{i}] = {(x, y, w, h)} needs finite values and width, height >= 0")
        if w > 0 and h > 0:  # a box the crop removed entirely (zero width or height) is no box
            out[i] = values
    return out, ~out[:, 0].isnan()


def _short(name: str) -> str:
    return name if len(name) <= _MAX_NAME else name[: _MAX_NAME - 1] + "…"


# ------------------------------------------------------------------------- confusion
def confusion_matrix(labels: Any, predictions: Any, *, num_classes: int) -> torch.Tensor:
    """Count how often each true class was predicted as each class.

    Args:
        labels: true class indices, ``(N,)`` ints (tensor, array or sequence).
        predictions: predicted class indices, ``(N,)`` ints, in the same order.
        num_classes: the number of classes ``C``.

    Returns:
        ``int64 (C, C)``: entry ``[t, p]`` counts the images of class ``t`` predicted as
        ``p``; rows sum to each class's image count, the diagonal holds the hits.

    Raises:
        ValueError: lengths differ, or an index is outside ``[0, C)``.
        TypeError: the values are not integers.
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    truth = _as_labels("labels", labels, num_classes=num_classes)
    guess = _as_labels("predictions", predictions, num_classes=num_classes, length=truth.numel())
    flat = torch.bincount(truth * num_classes + guess, minlength=num_classes * num_classes)
    return flat.view(num_classes, num_classes)


def _oriented_join(left: list[int], right: list[int], similarity: torch.Tensor) -> list[int]:
    """Concatenate two leaf orders, each possibly reversed, so the most similar ends meet."""
    candidates = (
        (left, right),
        (left, right[::-1]),
        (left[::-1], right),
        (left[::-1], right[::-1]),
    )
    # max() keeps the first of equal candidates, so ties keep the given orientation.
    best = max(candidates, key=lambda pair: float(similarity[pair[0][-1], pair[1][0]]))
    return best[0] + best[1]


def confusion_order(confusion: torch.Tensor) -> list[int]:
    """An order of the classes in which classes confused with each other are neighbours.

    Why this order: in label order a 200-class confusion matrix shows its errors as
    scattered dots, and a reader cannot tell a systematic confusion (two gull species
    mistaken for each other) from noise. Reordering both axes by groups of mutually
    confused classes turns those groups into blocks on the diagonal.

    How: the confusion is turned into a symmetric similarity between classes, the
    error *rates* ``r[i, j] = confusion[i, j] / images of class i`` summed both ways
    (``s = r + r.T``, diagonal zero), so a class with many test images does not
    dominate. Classes are then merged bottom-up by average linkage (the similarity of
    two groups is the mean similarity of their members; the most similar pair of
    groups is merged first), and each merge joins the two groups' orders end to end,
    reversing either so that the most similar ends meet. Merging stops when no two
    groups were ever confused. Groups are listed by their confusion mass, largest
    first; classes never confused with another close the order, in label order.

    Why not spectral ordering (the Fiedler vector of the graph Laplacian): a confusion
    graph usually falls apart into many components, where that vector is not unique,
    and its sign is arbitrary, so the picture could change between identical runs.
    This order is a deterministic function of the matrix (ties go to the lower class
    index) and costs ``O(C^3)`` simple steps, a few milliseconds for ``C = 200``.

    Args:
        confusion: ``(C, C)`` counts from :func:`confusion_matrix`.

    Returns:
        A permutation of ``range(C)``: position ``k`` of the picture shows class ``order[k]``.
    """
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be a square (C, C) matrix, got shape {tuple(confusion.shape)}")
    counts = confusion.detach().to("cpu", torch.float64)
    num_classes = counts.shape[0]
    rates = counts / counts.sum(dim=1, keepdim=True).clamp_min(1.0)
    similarity = rates + rates.T
    similarity.fill_diagonal_(0.0)

    orders: dict[int, list[int]] = {i: [i] for i in range(num_classes)}  # group id -> leaf order
    sizes = torch.ones(num_classes, dtype=torch.float64)
    link = similarity.clone()  # average-linkage similarity between live groups
    link.fill_diagonal_(-math.inf)
    while True:
        flat = int(torch.argmax(link))  # the first maximum: ties go to the lowest (a, b)
        a, b = divmod(flat, num_classes)
        if not link[a, b] > 0:
            break
        orders[a] = _oriented_join(orders[a], orders.pop(b), similarity)
        # Lance-Williams update for average linkage: the merged group's mean similarity.
        merged = (sizes[a] * link[a] + sizes[b] * link[b]) / (sizes[a] + sizes[b])
        link[a], link[:, a] = merged, merged
        link[b], link[:, b] = -math.inf, -math.inf
        link[a, a] = -math.inf
        sizes[a] += sizes[b]

    def mass(group: list[int]) -> float:
        block = counts[group][:, group]
        return float(block.sum() - block.diagonal().sum())

    groups = sorted((g for g in orders.values() if len(g) > 1), key=lambda g: (-mass(g), min(g)))
    alone = sorted(g[0] for g in orders.values() if len(g) == 1)
    return [c for g in groups for c in g] + alone


# ---------------------------------------------------------------------- confused pairs
@dataclass(frozen=True)
class ConfusedPair:
    """One kind of error: images of class ``true`` predicted as class ``predicted``.

    Attributes:
        true: the true class index.
        predicted: the predicted class index (never ``true``).
        count: how many images made this error.
        true_total: how many images of class ``true`` there are.
        reverse_count: how many images of ``predicted`` were predicted as ``true``
            (a mutual confusion when both counts are high).
        image_ids: ids of up to ``examples`` images that made it, in sample order.
    """

    true: int
    predicted: int
    count: int
    true_total: int
    reverse_count: int
    image_ids: tuple[str, ...]

    @property
    def rate(self) -> float:
        """Share of class ``true``'s images predicted as ``predicted``, in ``[0, 1]``."""
        return self.count / self.true_total


def confused_pairs(
    labels: Any, predictions: Any, *, num_classes: int, image_ids: Sequence[Any], top: int | None = 100,
    examples: int = 5,
) -> list[ConfusedPair]:
    """The most frequent errors, as ordered (true, predicted) pairs.

    Pairs are sorted by count, then by rate (a pair that takes most of a small class
    first), then by class indices; only pairs that occurred are listed.

    Args:
        labels: true class indices, ``(N,)``.
        predictions: predicted class indices, ``(N,)``, same order.
        num_classes: the number of classes ``C``.
        image_ids: one id per image (file name, data-set id), same order; must be unique.
        top: how many pairs to return; None for all.
        examples: image ids kept per pair.

    Returns:
        Up to ``top`` :class:`ConfusedPair`.
    """
    confusion = confusion_matrix(labels, predictions, num_classes=num_classes)
    truth = _as_labels("labels", labels, num_classes=num_classes)
    guess = _as_labels("predictions", predictions, num_classes=num_classes)
    ids = _as_ids(image_ids, length=truth.numel())
    if top is not None and top < 0:
        raise ValueError(f"top must be >= 0 or None, got {top}")
    totals = confusion.sum(dim=1)
    errors = confusion.clone()
    errors.fill_diagonal_(0)
    t_idx, p_idx = errors.nonzero(as_tuple=True)
    pairs = sorted(
        zip(t_idx.tolist(), p_idx.tolist(), strict=True),
        key=lambda tp: (-int(errors[tp]), -int(errors[tp]) / int(totals[tp[0]]), tp),
    )[:top]
    wanted = set(pairs)
    found: dict[tuple[int, int], list[str]] = {pair: [] for pair in pairs}
    for i in (truth != guess).nonzero().flatten().tolist():
        pair = (int(truth[i]), int(guess[i]))
        if pair in wanted and len(found[pair]) < examples:
            found[pair].append(ids[i])
    return [
        ConfusedPair(true=t, predicted=p, count=int(errors[t, p]), true_total=int(totals[t]),
                     reverse_count=int(errors[p, t]), image_ids=tuple(found[(t, p)]))
        for t, p in pairs
    ]


def _as_ids(image_ids: Sequence[Any], *, length: int) -> list[str]:
    ids = [str(i) for i in image_ids]
    if len(ids) != length:
        raise ValueError(f"image_ids has {len(ids)} entries but labels have {length}; give one per image")
    seen: set[str] = set()
    for image_id in ids:
        if image_id in seen:
            raise ValueError(f"image_ids must be unique (they name the images), but {image_id!r} appears twice")
        seen.add(image_id)
    return ids


def _pairs_csv(pairs: list[ConfusedPair], classes: Sequence[str], *, examples: int) -> str:
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["rank", "true_label", "true_class", "predicted_label", "predicted_class", "count",
                     "true_total", "rate_percent", "reverse_count", *(f"example_{k + 1}" for k in range(examples))])
    for rank, pair in enumerate(pairs, start=1):
        shown = list(pair.image_ids) + [""] * (examples - len(pair.image_ids))
        writer.writerow([rank, pair.true, classes[pair.true], pair.predicted, classes[pair.predicted], pair.count,
                         pair.true_total, f"{100.0 * pair.rate:.2f}", pair.reverse_count, *shown])
    return table.getvalue()


def _confusion_csv(confusion: torch.Tensor, classes: Sequence[str]) -> str:
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["true \\ predicted", *classes])
    for name, row in zip(classes, confusion.tolist(), strict=True):
        writer.writerow([name, *row])
    return table.getvalue()


# --------------------------------------------------------------------------- Grad-CAM
def grad_cam(model: nn.Module, images: torch.Tensor, *, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM of the last stage for one target class per image.

    ``map[n] = relu(sum_k alpha[n, k] * A[n, k])`` where ``A = model.forward_features(x)``
    and ``alpha[n, k]`` is the mean over positions of ``d logit[n, targets[n]] / d A[n, k]``.
    The backbone runs without autograd; only the head is differentiated, with
    ``torch.autograd.grad``, so no hook is left behind and no parameter gets a
    ``.grad``. Run the model in eval mode (BatchNorm statistics, no dropout):
    :func:`write_error_analysis` does.

    Args:
        model: a network with ``forward_features`` and ``forward_head`` (any resnetzoo
            or timm model; unwrap ``DistributedDataParallel`` with ``.module`` first).
        images: normalised ``float (N, 3, H, W)`` on the model's device.
        targets: ``(N,)`` class index whose evidence to map, per image.

    Returns:
        ``maps``: ``float32 (N, h, w)`` at the feature map's resolution (``H / 32`` for a
        ResNet), not rescaled; ``logits``: ``float32 (N, C)``.
    """
    if not (callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None))):
        raise TypeError(
            f"grad_cam needs a model with forward_features() and forward_head() (resnetzoo and timm models), "
            f"got {type(model).__name__}; unwrap DistributedDataParallel (.module) or torch.compile (._orig_mod)"
        )
    if targets.shape != (images.shape[0],):
        raise ValueError(f"targets must hold one class index per image, shape ({images.shape[0]},), "
                         f"got {tuple(targets.shape)}")
    with torch.no_grad():
        features = model.forward_features(images)
    if features.ndim != 4:
        raise ValueError(f"forward_features returned shape {tuple(features.shape)}; Grad-CAM needs (N, K, h, w)")
    features = features.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model.forward_head(features)
        chosen = logits.gather(1, targets.to(logits.device).view(-1, 1)).sum()
        (gradient,) = torch.autograd.grad(chosen, features)
    weights = gradient.float().mean(dim=(2, 3), keepdim=True)
    maps = F.relu((weights * features.detach().float()).sum(dim=1))
    return maps, logits.detach().float()


def _upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(N, h, w)`` maps to ``(N, H, W)``, bilinear with cell centres aligned (``align_corners=False``)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def cam_peaks(maps: torch.Tensor, *, image_size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each map is largest, in pixel coordinates of the image it explains.

    The peak is the centre of the map's largest cell (the first in row-major order
    on ties): cell ``(row i, column j)`` of an ``h x w`` map over an ``H x W`` image has
    its centre at ``x = (j + 0.5) * W / w``, ``y = (i + 0.5) * H / h``. That is where
    bilinear upsampling (``align_corners=False``) puts the cell's value, and since
    that upsampling only averages neighbouring cells, it is a maximum of the upsampled
    map too, without the ties that the flat borders of an upsampled map would create.
    For a map at the image's own size it is the centre of the largest pixel.

    Args:
        maps: ``(N, h, w)`` saliency maps (e.g. from :func:`grad_cam`).
        image_size: ``(H, W)`` of the images; None when the maps have that size.

    Returns:
        ``points``: ``float64 (N, 2)`` peak ``(x, y)`` in pixels; ``positive``: ``bool (N,)``,
        whether the map has any value above zero (a map of zeros points nowhere).
    """
    if maps.ndim != 3:
        raise ValueError(f"maps must be (N, h, w), got shape {tuple(maps.shape)}")
    h, w = maps.shape[-2:]
    height, width = image_size if image_size is not None else (h, w)
    flat = maps.detach().flatten(1)
    index = flat.argmax(dim=1).cpu()
    x = (index % w).double().add(0.5).mul(width / w)
    y = (index // w).double().add(0.5).mul(height / h)
    return torch.stack([x, y], dim=1), (flat.amax(dim=1) > 0).cpu()


def pointing_game_hits(
    maps: torch.Tensor, boxes: Any, *, image_size: tuple[int, int] | None = None, tolerance: float = 0.0
) -> torch.Tensor:
    """Whether each map's maximum falls inside its image's ground-truth box.

    The maximum is the point given by :func:`cam_peaks`; it counts as inside when it
    lies in the closed box ``[x, x + w] x [y, y + h]``, or within ``tolerance`` pixels of
    it (Zhang et al. allow 15 pixels at 224 px; the default 0 is strict). A map with
    no positive value is a miss.

    Args:
        maps: ``(N, h, w)`` saliency maps (e.g. from :func:`grad_cam`).
        boxes: ``(N, 4)`` boxes ``(x, y, width, height)`` in pixels of the model's input,
            ``(x, y)`` the top-left corner; pixel ``(u, v)`` covers ``[u, u + 1) x [v, v + 1)``.
        image_size: ``(H, W)`` of that input; None when the maps already have it.
        tolerance: distance in pixels still counted as a hit.

    Returns:
        ``bool (N,)``; the pointing-game score is its mean.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    points, positive = cam_peaks(maps, image_size=image_size)
    box, has_box = _as_boxes(boxes, length=maps.shape[0])
    if not bool(has_box.all()):
        raise ValueError(f"boxes[{int((~has_box).nonzero()[0])}] is missing; the pointing game needs a box per map")
    px, py = points.unbind(dim=1)
    x, y, w, h = box.unbind(dim=1)
    dx = (x - px).clamp_min(0) + (px - (x + w)).clamp_min(0)
    dy = (y - py).clamp_min(0) + (py - (y + h)).clamp_min(0)
    return positive & (torch.hypot(dx, dy) <= tolerance)


def _wilson(hits: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (sound near 0 and 1, unlike the normal one)."""
    if total == 0:
        return (math.nan, math.nan)
    p = hits / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


# ----------------------------------------------------------------------------- pictures
def _matplotlib() -> Any:
    """matplotlib's Figure and Agg canvas, or None (with a warning) when it is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning("matplotlib is not installed: no error pictures (pip install 'resnetzoo[recipe]')")
        return None
    return Figure, FigureCanvasAgg


def _save(figure: Any, path: Path, *, dpi: int) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, format="png")


def plot_confusion(
    path: str | os.PathLike[str], confusion: torch.Tensor, *, classes: Sequence[str], order: Sequence[int] | None = None,
    title: str | None = None,
    note: str | None = None,
) -> bool:
    """Draw ``confusion`` as a heat map of rates and write it as a PNG.

    Cell ``(row t, column p)`` is the share of class ``t``'s images predicted as ``p``
    (rows sum to 1); the colour scale is a square root, so that the few-percent
    errors that matter stay visible next to a diagonal near 1. Both axes follow
    ``order`` (default: :func:`confusion_order`). Every class is named; the figure
    grows with the class count (about 2,400 pixels square at 200 classes) and the
    names shrink to fit (names longer than 28 characters are shortened).

    Args:
        path: where to write the PNG (atomically).
        confusion: ``(C, C)`` counts from :func:`confusion_matrix`.
        classes: ``C`` class names in label order.
        order: the class order of both axes.
        title: the figure title; default names the image count and top-1.
        note: a line under the title that a reader must see (the recipe says there when
            the test set chose the epoch); None for none.

    Returns:
        True, or False when matplotlib is not installed (then nothing is written).
    """
    num_classes = confusion.shape[0]
    if len(classes) != num_classes:
        raise ValueError(f"classes has {len(classes)} names but the confusion matrix is {num_classes} x {num_classes}")
    order = list(confusion_order(confusion) if order is None else order)
    if sorted(order) != list(range(num_classes)):
        raise ValueError(f"order must be a permutation of range({num_classes})")
    mpl = _matplotlib()
    if mpl is None:
        return False
    Figure, FigureCanvasAgg = mpl
    from matplotlib.colors import PowerNorm

    counts = confusion.detach().to("cpu", torch.float64)
    rates = (counts / counts.sum(dim=1, keepdim=True).clamp_min(1.0))[order][:, order]
    total = int(counts.sum())
    if title is None:
        top1 = 100.0 * float(counts.diagonal().sum()) / max(total, 1)
        title = f"Confusion: {total} images, {num_classes} classes, top-1 {top1:.2f} %"

    side = min(max(6.0, 3.0 + 0.065 * num_classes), 18.0)  # inches
    cell_points = 72.0 * side * 0.78 / num_classes
    fontsize = min(9.0, max(2.5, 0.8 * cell_points))
    figure = Figure(figsize=(side + 1.2, side), layout="constrained")
    FigureCanvasAgg(figure)  # Agg directly, no pyplot: the caller's backend is left alone
    ax = figure.subplots()
    image = ax.imshow(rates.numpy(), cmap="Blues", norm=PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0),
                      interpolation="nearest")
    if num_classes <= 30:  # few enough cells to print each count in its cell
        ordered = counts[order][:, order]
        for t in range(num_classes):
            for p in range(num_classes):
                if ordered[t, p] > 0:
                    ax.text(p, t, str(int(ordered[t, p])), ha="center", va="center", fontsize=min(9.0, fontsize),
                            color="white" if rates[t, p] > 0.3 else "black")
    names = [_short(str(classes[c])) for c in order]
    ax.set_xticks(range(num_classes), names, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(num_classes), names, fontsize=fontsize)
    ax.tick_params(length=1.5, width=0.4, pad=1)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    counted = " (numbers: image counts)" if num_classes <= 30 else ""
    subtitle = f"each row: a true class's images, as shares{counted}; classes ordered so that confusions form blocks"
    lines = [title, *([textwrap.fill(note, width=int(11 * side))] if note else []),
             textwrap.fill(subtitle, width=int(11 * side))]
    ax.set_title("\n".join(lines), fontsize=10)
    colorbar = figure.colorbar(image, ax=ax, shrink=0.6, ticks=[0, 0.02, 0.1, 0.25, 0.5, 1.0])
    colorbar.set_label("share of the true class's images (square-root scale)")
    _save(figure, Path(path), dpi=150 if num_classes > 60 else 100)
    return True


@dataclass(frozen=True)
class _CamSample:
    """One image of the ``cam/`` sample, with what was computed for it."""

    index: int
    image_id: str
    image: torch.Tensor  # uint8 (3, H, W)
    true: int
    predicted: int
    probability: float  # softmax probability of the predicted class
    predicted_map: torch.Tensor  # (h, w) at the feature map's resolution, not rescaled
    true_map: torch.Tensor
    box: tuple[float, float, float, float] | None
    hit: bool | None  # pointing game of the true-class map; None without a box

    @property
    def correct(self) -> bool:
        return self.true == self.predicted

    def file_name(self, rank: int) -> str:
        return f"{rank:02d}_{'right' if self.correct else 'wrong'}_{_UNSAFE.sub('_', self.image_id)[-60:]}.png"


def _draw_cam(ax: Any, sample: _CamSample, cam: torch.Tensor | None, *, title: str, fontsize: float) -> None:
    """The image; the map (if any) upsampled and scaled to its maximum, with its peak; the box."""
    from matplotlib.patches import Rectangle

    size = tuple(sample.image.shape[-2:])
    # imshow puts pixel u's centre at u: a point x in pixel coordinates is drawn at x - 0.5.
    if cam is None:
        ax.imshow(sample.image.permute(1, 2, 0).numpy())
    else:
        # Under a map the image turns grey (ITU-R 601 luma), so every colour belongs to the map.
        grey = (sample.image.float() * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(dim=0)
        ax.imshow(grey.numpy(), cmap="gray", vmin=0, vmax=255)
        full = _upsample(cam[None].float(), size)[0]  # type: ignore[arg-type]
        peak = float(full.max())
        ax.imshow((full / peak if peak > 0 else full).numpy(), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
        points, positive = cam_peaks(cam[None], image_size=size)  # type: ignore[arg-type]
        if bool(positive[0]):
            ax.plot(float(points[0, 0]) - 0.5, float(points[0, 1]) - 0.5, marker="+", color="white",
                    markersize=10, markeredgewidth=2)
    if sample.box is not None:
        x, y, w, h = sample.box
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor="lime", linewidth=1.5))
    ax.set_title(title, fontsize=fontsize)
    ax.set_axis_off()


def _plot_cam_sample(path: Path, sample: _CamSample, classes: Sequence[str], Figure: Any, Canvas: Any) -> None:
    """One file per image: the image and box, the predicted class's map, and (if wrong) the true class's."""
    panels = 2 if sample.correct else 3
    side = max(3.2, sample.image.shape[-1] / 100)  # inches per panel: at least the image's own pixels at 100 dpi
    # A fixed layout, not "constrained": this figure is drawn 16 times and the solver costs a third of it.
    figure = Figure(figsize=(side * panels, side + 0.75))
    Canvas(figure)
    axes = figure.subplots(1, panels)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.7 / (side + 0.75), wspace=0.04)
    verdict = "right" if sample.correct else "wrong"
    point = "" if sample.hit is None else f"; true-class peak {'inside' if sample.hit else 'outside'} the box"
    figure.suptitle(f"image {sample.image_id}: {verdict}{point}", fontsize=9, y=0.995, va="top")
    _draw_cam(axes[0], sample, None, title=f"true: {_short(classes[sample.true])}", fontsize=8)
    _draw_cam(axes[1], sample, sample.predicted_map, fontsize=8,
              title=f"Grad-CAM of predicted:\n{_short(classes[sample.predicted])} (p = {sample.probability:.2f})")
    if not sample.correct:
        _draw_cam(axes[2], sample, sample.true_map, fontsize=8,
                  title=f"Grad-CAM of true:\n{_short(classes[sample.true])}")
    _save(figure, path, dpi=100)


def _plot_cam_overview(path: Path, samples: list[_CamSample], classes: Sequence[str], Figure: Any, Canvas: Any, *,
                       note: str | None = None) -> None:
    columns = min(4, len(samples))
    rows = math.ceil(len(samples) / columns)
    figure = Figure(figsize=(2.8 * columns, 3.0 * rows + 0.4), layout="constrained")
    Canvas(figure)
    axes = np.atleast_1d(figure.subplots(rows, columns)).flatten()
    for ax in axes[len(samples):]:
        ax.set_axis_off()
    for ax, sample in zip(axes, samples, strict=False):
        name = _short(classes[sample.predicted])
        label = f"✓ {name}" if sample.correct else f"✗ {name}\n(true: {_short(classes[sample.true])})"
        _draw_cam(ax, sample, sample.predicted_map, title=label, fontsize=7)
    title = "Grad-CAM of the predicted class (+ marks the peak; green: ground-truth box)"
    wrapped = textwrap.fill(note, width=int(18 * 2.8 * columns)) if note else ""
    figure.suptitle(title + (f"\n{wrapped}" if note else ""), fontsize=9)
    _save(figure, path, dpi=100)


def _cam_index_csv(samples: list[_CamSample], names: list[str], classes: Sequence[str]) -> str:
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["file", "sample_index", "image_id", "true_label", "true_class", "predicted_label",
                     "predicted_class", "correct", "probability", "pointing_hit"])
    for name, s in zip(names, samples, strict=True):
        writer.writerow([name, s.index, s.image_id, s.true, classes[s.true], s.predicted, classes[s.predicted],
                         int(s.correct), f"{s.probability:.4f}", "" if s.hit is None else int(s.hit)])
    return table.getvalue()


# ------------------------------------------------------------------------ entry point
@dataclass(frozen=True)
class ErrorAnalysis:
    """What :func:`write_error_analysis` measured and wrote.

    Attributes:
        pointing_game: share of the measured images whose true-class Grad-CAM peak lies
            in the ground-truth box, in ``[0, 1]``; None without boxes (or a model).
        pointing_game_images: how many images it was measured on.
        pointing_game_ci95: its 95 % Wilson interval ``(low, high)``; None when it is None.
        pointing_game_centre: the score, on the same images, of a map that always points
            at the image's centre: the bar a model must clear to show it finds the object
            rather than the photographer's framing (high on CUB, where birds are centred).
        prediction_agreement: share of the images run through the model here whose
            arg-max equals the ``predictions`` given (1.0 unless mixed precision flipped
            a near tie); None when no image was run.
        order: the class order of ``confusion.png`` (:func:`confusion_order`).
        pairs: the rows of ``confused_pairs.csv``.
        paths: every file written, in the order written.
    """

    pointing_game: float | None
    pointing_game_images: int
    pointing_game_ci95: tuple[float, float] | None
    pointing_game_centre: float | None
    prediction_agreement: float | None
    order: list[int]
    pairs: list[ConfusedPair]
    paths: list[Path] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The numbers for ``summary.json``: the pointing-game score, its interval and centre baseline (percent)."""
        def percent(value: float | None) -> float | None:
            return None if value is None else round(100.0 * value, 2)

        return {
            "pointing_game": percent(self.pointing_game),
            "pointing_game_images": self.pointing_game_images,
            "pointing_game_ci95": None if self.pointing_game_ci95 is None
            else [percent(v) for v in self.pointing_game_ci95],
            "pointing_game_centre": percent(self.pointing_game_centre),
            "cam_prediction_agreement": self.prediction_agreement,
        }


class _ImageSource:
    """Uniform access to the caller's images: ``[i]`` gives ``uint8 (3, H, W)``."""

    def __init__(self, images: Any, *, length: int) -> None:
        if not hasattr(images, "__getitem__") or not hasattr(images, "__len__"):
            raise TypeError(f"images must support len() and [i] (a tensor, list or map-style dataset), "
                            f"got {type(images).__name__}")
        if len(images) != length:
            raise ValueError(f"images has {len(images)} items but labels have {length}; give them in the same order")
        self.images = images

    def __getitem__(self, index: int) -> torch.Tensor:
        item = self.images[index]
        if isinstance(item, (tuple, list)):
            item = item[0]  # a dataset's (image, label) pair
        if not isinstance(item, torch.Tensor) or item.dtype != torch.uint8 or item.ndim != 3 or item.shape[0] != 3:
            described = f"{item.dtype} {tuple(item.shape)}" if isinstance(item, torch.Tensor) else type(item).__name__
            raise TypeError(f"images[{index}] must be a uint8 (3, H, W) tensor as the test loader yields it "
                            f"before normalisation, got {described}")
        return item

    def batches(self, indices: list[int], batch_size: int) -> Iterator[tuple[list[int], torch.Tensor]]:
        """Consecutive runs of ``indices`` of one image size, at most ``batch_size`` long."""
        run: list[int] = []
        images: list[torch.Tensor] = []
        for i in indices:
            image = self[i]
            if images and (len(run) == batch_size or image.shape != images[0].shape):
                yield run, torch.stack(images)
                run, images = [], []
            run.append(i)
            images.append(image)
        if run:
            yield run, torch.stack(images)


class _EvalMode:
    """Eval mode for the duration, then every module's own training flag back (frozen BN stays frozen)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.flags = [(m, m.training) for m in model.modules()]

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        for module, flag in self.flags:
            module.training = flag


def _sample(pool: list[int], count: int, generator: torch.Generator) -> list[int]:
    if count >= len(pool):
        return list(pool)
    picks = torch.randperm(len(pool), generator=generator)[:count]
    return sorted(pool[i] for i in picks.tolist())


def _check_output(out: Path, *, overwrite: bool) -> list[Path]:
    """Refuse to clobber an earlier analysis or anything else; return the earlier files to replace."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file, not a folder")
    cam_dir = out / "cam"
    if cam_dir.exists() and not cam_dir.is_dir():
        raise FileExistsError(f"{cam_dir} is a file; the Grad-CAM pictures need that name for a folder")
    earlier = [out / name for name in OUTPUT_NAMES[:3] if (out / name).exists()]
    if cam_dir.is_dir():
        entries = sorted(cam_dir.iterdir())
        foreign = [p.name for p in entries if not (p.is_file() and _CAM_FILE.fullmatch(p.name))]
        if foreign:
            raise FileExistsError(f"{cam_dir} holds files this analysis did not write ({', '.join(foreign[:3])}); "
                                  f"move them or choose another output folder")
        earlier += entries
    if earlier and not overwrite:
        shown = ", ".join(str(p.relative_to(out)) for p in earlier[:4]) + (" …" if len(earlier) > 4 else "")
        raise FileExistsError(f"{out} already holds an error analysis ({shown}); pass overwrite=True to replace it")
    return earlier


_Batch = tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]


class _Explainer:
    """Grad-CAM over the caller's images in batches, counting agreement with the given predictions."""

    def __init__(self, model: nn.Module, source: _ImageSource, *, predictions: torch.Tensor, mean: Sequence[float],
                 std: Sequence[float], batch_size: int) -> None:
        self.model, self.source, self.predictions = model, source, predictions
        self.mean, self.std, self.batch_size = mean, std, batch_size
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        self.checked = self.agreed = 0

    def __call__(self, indices: list[int], targets: torch.Tensor) -> Iterator[_Batch]:
        """Per batch: the indices, ``uint8`` images, maps ``(n, h, w)`` for ``targets[i]``, logits (CPU)."""
        for batch_indices, batch in self.source.batches(indices, self.batch_size):
            x = normalize_batch(batch.to(self.device), mean=self.mean, std=self.std).to(self.dtype)
            maps, logits = grad_cam(self.model, x, targets=targets[batch_indices])
            logits = logits.cpu()
            self.checked += len(batch_indices)
            self.agreed += int((logits.argmax(dim=1) == self.predictions[batch_indices]).sum())
            yield batch_indices, batch, maps.cpu(), logits

    def check_alignment(self) -> None:
        """Refuse predictions that are not the model's on these images (they are misaligned).

        Every picture and the score would silently describe other images. Mixed
        precision in the evaluation may flip a near tie, so a few differences pass.
        """
        if self.checked - self.agreed > max(1, 0.05 * self.checked):
            raise ValueError(
                f"the model predicts differently from `predictions` on {self.checked - self.agreed} of "
                f"{self.checked} images; images, labels and predictions must come from the same evaluation, "
                f"in the same order"
            )


def _pointing_game(explain: _Explainer, indices: list[int], *, truth: torch.Tensor,
                   box: torch.Tensor) -> tuple[list[bool], list[bool]]:
    """Hits of the true class's map, and of a map pointing at the image centre, per image."""
    hits: list[bool] = []
    centre: list[bool] = []
    for batch_indices, batch, maps, _ in explain(indices, truth):
        size = (batch.shape[-2], batch.shape[-1])
        hits += pointing_game_hits(maps, box[batch_indices], image_size=size).tolist()
        # A one-cell map points at its cell's centre: the image's centre.
        centre += pointing_game_hits(torch.ones(len(batch_indices), 1, 1), box[batch_indices], image_size=size).tolist()
    return hits, centre


def _cam_samples(explain: _Explainer, indices: list[int], *, truth: torch.Tensor, guess: torch.Tensor,
                 ids: list[str], box: torch.Tensor, has_box: torch.Tensor) -> list[_CamSample]:
    """The maps of the predicted and the true class for each image of the ``cam/`` sample, errors first."""
    true_maps: dict[int, torch.Tensor] = {}
    for batch_indices, _, maps, _ in explain(indices, truth):
        true_maps.update(zip(batch_indices, maps, strict=True))
    samples = []
    for batch_indices, batch, maps, logits in explain(indices, guess):
        probabilities = logits.softmax(dim=1)
        for k, i in enumerate(batch_indices):
            has = bool(has_box[i])
            size = (batch.shape[-2], batch.shape[-1])
            hit = bool(pointing_game_hits(true_maps[i][None], box[i][None], image_size=size)[0]) if has else None
            samples.append(_CamSample(
                index=i, image_id=ids[i], image=batch[k], true=int(truth[i]), predicted=int(guess[i]),
                probability=float(probabilities[k, guess[i]]), predicted_map=maps[k], true_map=true_maps[i],
                box=tuple(box[i].tolist()) if has else None,  # type: ignore[arg-type]
                hit=hit,
            ))
    return sorted(samples, key=lambda s: (s.correct, s.index))


def write_error_analysis(
    output_dir: str | os.PathLike[str],
    *,
    model: nn.Module,
    images: Any,
    labels: Any,
    predictions: Any,
    classes: Sequence[str],
    image_ids: Sequence[Any],
    mean: Sequence[float],
    std: Sequence[float],
    boxes: Any = None,
    num_cams: int = 16,
    pointing_images: int | None = 1000,
    top_pairs: int | None = 100,
    examples: int = 5,
    seed: int = 0,
    batch_size: int = 32,
    overwrite: bool = False,
    note: str | None = None,
) -> ErrorAnalysis:
    """Write the confusion matrix, the confused pairs and the Grad-CAM sample; measure the pointing game.

    Call it once, on the main process, after the final test evaluation, with the
    evaluated model and the test set in evaluation order. Cost: ``O(N + C^2)`` for the
    confusion files; for the pictures, two forward passes per Grad-CAM image; for the
    pointing game, one per measured image (a seeded sample of at most
    ``pointing_images`` of the images that have a box), batched by ``batch_size`` on
    the model's device, in float32 without autocast. Nothing is trained: the model
    is in eval mode meanwhile and gets every module's training flag back after.

    The Grad-CAM sample is ``num_cams`` images drawn with ``seed``: half from the
    wrong predictions and half from the right ones (the other kind fills in when one
    runs short). Same inputs, same sample, same files.

    Args:
        output_dir: the run's folder (created if needed); see :data:`OUTPUT_NAMES`.
        model: the evaluated network, unwrapped (not DDP / ``torch.compile``), with
            ``forward_features`` and ``forward_head``.
        images: ``images[i]`` is test image ``i`` as the model saw it, before
            normalisation: ``uint8 (3, H, W)``, or a pair whose first item is that
            (a map-style test dataset with the test transform works as is).
        labels: true class indices ``(N,)``, same order.
        predictions: the evaluation's predicted class indices ``(N,)``, same order.
        classes: ``C`` class names in label order.
        image_ids: ``N`` unique image ids (data-set ids or file names) for the CSVs.
        mean: normalisation mean on the 0..1 scale (the model's input is
            ``(images / 255 - mean) / std``).
        std: normalisation standard deviation on the 0..1 scale.
        boxes: ground-truth boxes ``(x, y, width, height)`` in pixels of ``images[i]``
            (after the test resize and crop: pass the original box through the same
            transforms, e.g. as a ``torchvision.tv_tensors.BoundingBoxes``), as an
            ``(N, 4)`` array or a sequence with None for images without one; None when
            the data set has no boxes (no pointing game).
        num_cams: Grad-CAM images to draw (0 for none).
        pointing_images: at most this many images for the pointing game; None for all.
        top_pairs: rows of ``confused_pairs.csv``; None for every pair that occurred.
        examples: example image ids per pair.
        seed: seed of the Grad-CAM and pointing-game samples.
        batch_size: images per forward pass.
        overwrite: replace this function's earlier files in ``output_dir``; without it
            an existing ``confusion.png``, ``confusion.csv``, ``confused_pairs.csv`` or
            non-empty ``cam/`` is an error. Files it did not write are never removed.
        note: a line under the title of ``confusion.png`` and ``cam/overview.png``
            (e.g. that the test set chose the model); None for none.

    Returns:
        An :class:`ErrorAnalysis`; put its :meth:`~ErrorAnalysis.summary` in ``summary.json``.

    Raises:
        ValueError: inputs of different lengths, a class index out of range, a bad
            box, duplicate image ids, or predictions that disagree with what the model
            predicts on ``images`` (the images and predictions are not in the same
            order).
        TypeError: an image is not ``uint8 (3, H, W)``, or the model lacks
            ``forward_features`` / ``forward_head``.
        FileExistsError: an earlier analysis is there and ``overwrite`` is False.
    """
    out = Path(output_dir)
    num_classes = len(classes)
    truth = _as_labels("labels", labels, num_classes=num_classes)
    guess = _as_labels("predictions", predictions, num_classes=num_classes, length=truth.numel())
    count = truth.numel()
    ids = _as_ids(image_ids, length=count)
    source = _ImageSource(images, length=count)
    box, has_box = (_as_boxes(boxes, length=count) if boxes is not None
                    else (torch.full((count, 4), math.nan, dtype=torch.float64), torch.zeros(count, dtype=torch.bool)))
    for name, value, least in (("num_cams", num_cams, 0), ("batch_size", batch_size, 1), ("examples", examples, 0)):
        if not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    if pointing_images is not None and pointing_images < 0:
        raise ValueError(f"pointing_images must be >= 0 or None, got {pointing_images}")
    earlier = _check_output(out, overwrite=overwrite)

    # The two image samples, seeded and independent of the global random state.
    generator = torch.Generator().manual_seed(seed)
    wrong = (truth != guess).nonzero().flatten().tolist()
    right = (truth == guess).nonzero().flatten().tolist()
    take_wrong = min(len(wrong), max(num_cams // 2, num_cams - len(right)))
    cam_indices = _sample(wrong, take_wrong, generator)
    cam_indices += _sample(right, min(len(right), num_cams - len(cam_indices)), generator)
    boxed = has_box.nonzero().flatten().tolist()
    measured = _sample(boxed, len(boxed) if pointing_images is None else pointing_images, generator)

    # The model's part first: nothing is written unless images and predictions agree.
    explain = _Explainer(model, source, predictions=guess, mean=mean, std=std, batch_size=batch_size)
    with _EvalMode(model):
        hits, centre_hits = _pointing_game(explain, measured, truth=truth, box=box)
        samples = _cam_samples(explain, cam_indices, truth=truth, guess=guess, ids=ids, box=box, has_box=has_box)
    explain.check_alignment()

    for path in earlier:
        path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    # The confusion files: O(N + C^2).
    confusion = confusion_matrix(truth, guess, num_classes=num_classes)
    order = confusion_order(confusion)
    pairs = confused_pairs(truth, guess, num_classes=num_classes, image_ids=ids, top=top_pairs, examples=examples)
    write_text(out / "confusion.csv", _confusion_csv(confusion, classes))
    write_text(out / "confused_pairs.csv", _pairs_csv(pairs, classes, examples=examples))
    paths = [out / "confusion.csv", out / "confused_pairs.csv"]
    if plot_confusion(out / "confusion.png", confusion, classes=classes, order=order, note=note):
        paths.append(out / "confusion.png")
    mpl = _matplotlib() if samples else None
    if mpl is not None:
        (out / "cam").mkdir(exist_ok=True)
        names = [s.file_name(rank) for rank, s in enumerate(samples, start=1)]
        for name, sample in zip(names, samples, strict=True):
            _plot_cam_sample(out / "cam" / name, sample, classes, *mpl)
            paths.append(out / "cam" / name)
        _plot_cam_overview(out / "cam" / "overview.png", samples, classes, *mpl, note=note)
        write_text(out / "cam" / "index.csv", _cam_index_csv(samples, names, classes))
        paths += [out / "cam" / "overview.png", out / "cam" / "index.csv"]

    scored = sum(hits)
    return ErrorAnalysis(
        pointing_game=scored / len(hits) if hits else None,
        pointing_game_images=len(hits),
        pointing_game_ci95=_wilson(scored, len(hits)) if hits else None,
        pointing_game_centre=sum(centre_hits) / len(centre_hits) if centre_hits else None,
        prediction_agreement=explain.agreed / explain.checked if explain.checked else None,
        order=order,
        pairs=pairs,
        paths=paths,
    )
