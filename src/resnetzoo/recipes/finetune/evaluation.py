"""Evaluating a network on a data loader: loss, top-1, top-5, per class, and per image.

:func:`evaluate` runs one pass over a loader of ``uint8`` images (on one process or
each process's shard) and returns an :class:`Evaluation`; with ``keep_predictions`` it
also keeps every image's predicted class and confidence, in dataset order, which the
error analysis (confusion matrix, most-confused pairs) and ``predictions.csv`` use.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.distributed as torch_dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from resnetzoo.recipes.finetune.images import normalize_batch

__all__ = ["Evaluation", "evaluate", "forward"]


def forward(model: nn.Module, images: torch.Tensor, amp_dtype: torch.dtype | None) -> torch.Tensor:
    """``model(images)`` under autocast to ``amp_dtype`` (None: full precision)."""
    with torch.autocast(images.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        return model(images)


@dataclasses.dataclass
class Evaluation:
    """The result of :func:`evaluate`.

    Attributes:
        loss: mean cross-entropy (no label smoothing).
        top1: top-1 accuracy in percent.
        top5: top-5 accuracy in percent (top-k with k = the number of classes, if fewer).
        images: the number of images evaluated.
        per_class_correct: correct top-1 predictions per class.
        per_class_total: images per class.
        predictions: with ``keep_predictions``, the predicted class of every image in
            dataset order; else None.
        confidences: with ``keep_predictions``, the softmax probability of that class.
    """

    loss: float
    top1: float
    top5: float
    images: int
    per_class_correct: list[int]
    per_class_total: list[int]
    predictions: list[int] | None = None
    confidences: list[float] | None = None

    def metrics(self, prefix: str) -> dict[str, Any]:
        """``{prefix}_loss``, ``{prefix}_top1``, ``{prefix}_top5``, ``{prefix}_images``: a metrics row."""
        return {f"{prefix}_loss": self.loss, f"{prefix}_top1": self.top1, f"{prefix}_top5": self.top5,
                f"{prefix}_images": self.images}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    *,
    num_classes: int,
    device: torch.device,
    mean: list[float],
    std: list[float],
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: bool = False,
    distributed: bool = False,
    keep_predictions: bool = False,
    desc: str = "eval",
) -> Evaluation:
    """Loss, top-1, top-5 and per-class accuracy over a loader of ``uint8`` images.

    Args:
        model: the network (put in eval mode here).
        loader: yields ``(uint8 images (N, 3, H, W), int64 labels (N,))``; its sampler
            gives the dataset index of every image.
        num_classes: number of classes, for the per-class counts.
        device: where to run.
        mean: normalisation mean (0..1 scale).
        std: normalisation std.
        amp_dtype: autocast dtype, or None for full precision.
        channels_last: feed channels-last tensors.
        progress: show a tqdm bar.
        distributed: sum the counts over all processes (each loader holds a shard) and
            gather the predictions.
        keep_predictions: keep every image's prediction (see :class:`Evaluation`).
        desc: the progress bar's label.

    Returns:
        The :class:`Evaluation`.
    """
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top-1, top-5, images
    per_class = torch.zeros(2, num_classes, dtype=torch.int64, device=device)  # correct, total
    predicted: list[torch.Tensor] = []
    confidence: list[torch.Tensor] = []
    k = min(5, num_classes)
    for images, labels in tqdm(loader, desc=desc, leave=False, disable=not progress):
        images = normalize_batch(images.to(device, non_blocking=True), mean=mean, std=std, channels_last=channels_last)
        labels = labels.to(device, non_blocking=True)
        logits = forward(model, images, amp_dtype).float()
        top = logits.topk(k, dim=1).indices
        hit1 = top[:, 0] == labels
        hit5 = (top == labels[:, None]).any(dim=1)
        totals += torch.stack([
            F.cross_entropy(logits, labels, reduction="sum").double(),
            hit1.sum().double(),
            hit5.sum().double(),
            totals.new_tensor(labels.numel()),
        ])
        per_class[0] += torch.bincount(labels[hit1], minlength=num_classes)
        per_class[1] += torch.bincount(labels, minlength=num_classes)
        if keep_predictions:
            predicted.append(top[:, 0].cpu())
            confidence.append(logits.softmax(dim=1).gather(1, top[:, :1]).squeeze(1).cpu())
    if distributed:
        torch_dist.all_reduce(totals)
        torch_dist.all_reduce(per_class)
    loss_sum, top1, top5, count = totals.tolist()
    result = Evaluation(
        loss=loss_sum / max(count, 1.0), top1=100.0 * top1 / max(count, 1.0), top5=100.0 * top5 / max(count, 1.0),
        images=int(count), per_class_correct=per_class[0].tolist(), per_class_total=per_class[1].tolist(),
    )
    if keep_predictions:
        result.predictions, result.confidences = _in_dataset_order(
            loader, torch.cat(predicted).tolist() if predicted else [],
            torch.cat(confidence).tolist() if confidence else [], distributed=distributed,
        )
    return result


def _in_dataset_order(loader: DataLoader, predicted: list[int], confidence: list[float], *,
                      distributed: bool) -> tuple[list[int], list[float]]:
    """Per-image results of this process's shard (or of all processes), put back in dataset order."""
    indices = list(iter(loader.sampler))
    mine = list(zip(indices, predicted, confidence, strict=True))
    if distributed:
        shards: list[Any] = [None] * torch_dist.get_world_size()
        torch_dist.all_gather_object(shards, mine)
        mine = [item for shard in shards for item in shard]
    mine.sort()
    return [p for _, p, _ in mine], [c for _, _, c in mine]
