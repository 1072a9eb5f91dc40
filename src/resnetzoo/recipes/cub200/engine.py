"""Training and evaluation of the CUB-200-2011 recipe: ``train(config) -> summary``.

One process or many: under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set)
the model is wrapped in ``DistributedDataParallel``, each rank reads its share of the
data, metrics are summed over ranks, and rank 0 alone prepares the data (download,
synthetic tree, cache) and writes every output while the others wait for it.

This module builds the model, optimiser and schedule, runs the epochs and the
evaluation; its sibling modules hold the rest: ``distributed`` (ranks, process group),
``seeding`` (why a resumed run repeats an uninterrupted one exactly), ``loaders``
(datasets and data loaders), ``checkpoints`` (``checkpoint.pt``, ``best.safetensors``)
and ``outputs`` (every other file in ``output_dir``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from resnetzoo._io import write_json
from resnetzoo.errors import ResNetZooError
from resnetzoo.recipes.cub200.checkpoints import (
    CHECKPOINT_FORMAT,
    _resumed_config,
    _save_best,
    load_checkpoint,
    save_checkpoint,
)
from resnetzoo.recipes.cub200.config import ConfigError, CUB200Config, parse_config
from resnetzoo.recipes.cub200.data import CUB200, normalize_batch
from resnetzoo.recipes.cub200.distributed import (
    _all_reduce_sum,
    _default_workers,
    _Dist,
    _dist_from_env,
    _main_process_first,
    _process_group,
    _resolve_device,
    _show_progress,
)
from resnetzoo.recipes.cub200.loaders import (
    _micro_batch_size,
    _prepare_data,
    _test_loader,
    _train_loader,
)
from resnetzoo.recipes.cub200.outputs import (
    _append_metrics,
    _check_writable,
    _device_info,
    _log_tensorboard,
    _plot_curves,
    _prepare_output_dir,
    _tensorboard,
    _versions,
    _write_metrics,
    _write_per_class,
)
from resnetzoo.recipes.cub200.seeding import _derive_seed, _seed_everything, _SeededSampler

__all__ = ["TrainingDivergedError", "evaluate", "main", "train"]

logger = logging.getLogger(__name__)


class TrainingDivergedError(ResNetZooError, ArithmeticError):
    """The training loss or the weights became NaN or infinite; the run stopped without saving them."""


# -------------------------------------------------------------- model, optimiser
def _amp_dtype(config: CUB200Config, device: torch.device) -> torch.dtype | None:
    if config.amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[config.amp]


def _normalisation(config: CUB200Config) -> tuple[list[float], list[float]]:
    from resnetzoo.weights import IMAGENET_MEAN, IMAGENET_STD, WeightSpec, pretrained_source

    source = pretrained_source(config.arch, config.pretrained)
    if isinstance(source, WeightSpec):
        return list(source.mean), list(source.std)
    return list(IMAGENET_MEAN), list(IMAGENET_STD)


def _build_model(config: CUB200Config, *, num_classes: int, load_pretrained: bool = True) -> nn.Module:
    from resnetzoo import create_model
    from resnetzoo.errors import WeightsUnavailableError
    from resnetzoo.weights import pretrained_source

    # --pretrained is create_model's pretrained=: one vocabulary (tag, full name, none,
    # path, hf-hub:, URL); a classifier that does not fit num_classes is left out.
    wanted = load_pretrained and pretrained_source(config.arch, config.pretrained) is not None
    try:
        return create_model(
            config.arch, pretrained=config.pretrained if wanted else False, num_classes=num_classes,
            drop_path_rate=config.drop_path_rate,
        )
    except WeightsUnavailableError as e:
        raise WeightsUnavailableError(
            f"{e}\nFrom the command line: download the weights where you have access and pass the file "
            f"with --pretrained PATH, or train from scratch with --pretrained none."
        ) from e


def _to_device(model: nn.Module, config: CUB200Config, device: torch.device) -> None:
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)


def _param_groups(model: nn.Module, config: CUB200Config) -> list[dict[str, Any]]:
    head = list(model.get_classifier().parameters())  # type: ignore[operator]
    head_ids = {id(p) for p in head}
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    return [
        {"params": backbone, "lr": config.lr, "name": "backbone"},
        {"params": head, "lr": config.lr * config.head_lr_mult, "name": "head"},
    ]


def _lr_factor(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up from ``1 / warmup_steps`` to 1, then cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _build_optimisation(
    model: nn.Module, config: CUB200Config, *, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    optimizer = torch.optim.SGD(
        _param_groups(model, config),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )
    schedule = functools.partial(
        _lr_factor,
        warmup_steps=round(config.warmup * steps_per_epoch),
        total_steps=config.epochs * steps_per_epoch,
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


# ----------------------------------------------------------------------- the steps
def _forward(model: nn.Module, images: torch.Tensor, amp_dtype: torch.dtype | None) -> torch.Tensor:
    with torch.autocast(images.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        return model(images)


def _train_epoch(
    *,
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    criterion: nn.Module,
    config: CUB200Config,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    mean: list[float],
    std: list[float],
    dist: _Dist,
    steps: int,
    desc: str,
) -> dict[str, float]:
    from tqdm.auto import tqdm

    model.train()
    ddp = isinstance(model, nn.parallel.DistributedDataParallel)
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, images
    # The first step whose loss was not finite (``steps``: none yet), kept on the device
    # and read every _CHECK_EVERY steps, so that checking does not wait for the GPU.
    first_bad = torch.full((), steps, dtype=torch.int64, device=device)
    batches = iter(loader)
    start = time.perf_counter()
    bar = tqdm(total=steps, desc=desc, leave=False, disable=not _show_progress(config, dist))
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        for micro in range(config.grad_accum):
            images, labels = next(batches)
            images = normalize_batch(
                images.to(device, non_blocking=True), mean=mean, std=std, channels_last=bool(config.channels_last)
            )
            labels = labels.to(device, non_blocking=True)
            # Gradients cross the network only on the last micro-batch of a step.
            last = micro == config.grad_accum - 1
            with contextlib.nullcontext() if last or not ddp else model.no_sync():  # type: ignore[operator]
                logits = _forward(model, images, amp_dtype)
                loss = criterion(logits.float(), labels)
                scaler.scale(loss / config.grad_accum).backward()
            correct = (logits.detach().argmax(1) == labels).sum()
            totals += torch.stack([loss.detach().double() * labels.numel(), correct.double(), totals.new_tensor(labels.numel())])
            first_bad = torch.where(loss.detach().isfinite() | (first_bad < steps), first_bad, step)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        bar.update()
        if step % _CHECK_EVERY == 0 or step == steps - 1:
            _stop_if_diverged(first_bad, dist=dist, steps=steps, desc=desc, config=config)
        if step % 20 == 0 and not bar.disable:  # .item() waits for the GPU: only when shown
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    loss_sum, correct, count = _all_reduce_sum(totals, dist).tolist()
    return {
        "train_loss": loss_sum / count,
        "train_top1": 100.0 * correct / count,
        "train_images": int(count),
        "train_s": seconds,
        "images_per_s": count / seconds,
    }


_CHECK_EVERY = 20


def _stop_if_diverged(first_bad: torch.Tensor, *, dist: _Dist, steps: int, desc: str, config: CUB200Config) -> None:
    """Raise on every rank at once if any rank saw a loss that is not finite."""
    if dist.enabled:  # every rank must stop together, or the others wait forever
        first_bad = first_bad.clone()
        torch_dist.all_reduce(first_bad, op=torch_dist.ReduceOp.MIN)
    step = int(first_bad.item())
    if step < steps:
        raise TrainingDivergedError(_diverged_message(f"the training loss is not finite at {desc}, step {step + 1} "
                                                      f"of {steps}", config))


def _diverged_message(what: str, config: CUB200Config) -> str:
    hints = [f"a lower --lr (now {config.lr:g})", f"a longer --warmup-epochs (now {config.warmup:g})"]
    if config.amp == "fp16":
        hints.append("--amp bf16 or off")
    return (
        f"training diverged: {what}. Nothing of this epoch was saved: the last checkpoint and best "
        f"weights, if any, are from before. Try {', or '.join(hints)}"
    )


def _check_finite_weights(model: nn.Module, *, where: str, config: CUB200Config) -> None:
    bad = [name for name, tensor in model.state_dict().items()
           if tensor.is_floating_point() and not bool(tensor.isfinite().all())]
    if bad:
        raise TrainingDivergedError(_diverged_message(f"{len(bad)} weight tensors hold NaN or infinity after "
                                                      f"{where} (first: {bad[0]})", config))


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
) -> dict[str, Any]:
    """Test loss, top-1, top-5 and per-class accuracy over a loader of ``uint8`` images.

    Args:
        model: the network (put in eval mode here).
        loader: yields ``(uint8 images (N, 3, H, W), int64 labels (N,))``.
        num_classes: number of classes, for the per-class counts.
        device: where to run.
        mean: normalisation mean (0..1 scale).
        std: normalisation std.
        amp_dtype: autocast dtype, or None for full precision.
        channels_last: feed channels-last tensors.
        progress: show a tqdm bar.
        distributed: sum the counts over all processes (each loader holds a shard).

    Returns:
        ``test_loss`` (cross-entropy, no smoothing), ``test_top1`` and ``test_top5`` in
        percent, ``test_images``, and ``per_class_correct`` / ``per_class_total``
        (lists of ints, one per class).
    """
    from tqdm.auto import tqdm

    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top-1, top-5, images
    per_class = torch.zeros(2, num_classes, dtype=torch.int64, device=device)  # correct, total
    k = min(5, num_classes)
    for images, labels in tqdm(loader, desc="test", leave=False, disable=not progress):
        images = normalize_batch(images.to(device, non_blocking=True), mean=mean, std=std, channels_last=channels_last)
        labels = labels.to(device, non_blocking=True)
        logits = _forward(model, images, amp_dtype).float()
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
    if distributed:
        torch_dist.all_reduce(totals)
        torch_dist.all_reduce(per_class)
    loss_sum, top1, top5, count = totals.tolist()
    count = max(count, 1.0)
    return {
        "test_loss": loss_sum / count,
        "test_top1": 100.0 * top1 / count,
        "test_top5": 100.0 * top5 / count,
        "test_images": int(totals[3].item()),
        "per_class_correct": per_class[0].tolist(),
        "per_class_total": per_class[1].tolist(),
    }


# ---------------------------------------------------------------------- the two runs
def _evaluate_only(config: CUB200Config, dist: _Dist, device: torch.device) -> dict[str, Any]:
    from resnetzoo.remap import load_weights

    path = Path(config.eval_only)  # type: ignore[arg-type]
    out = Path(config.output_dir)

    def check_output() -> None:
        if (out / "eval.json").exists() and not config.overwrite:
            raise ConfigError(f"{out / 'eval.json'} exists; pass --overwrite to replace it or choose another --output-dir")
        _check_writable(out)

    _main_process_first(dist, check_output, others=lambda: None)
    classes: list[str] | None
    if path.suffix == ".safetensors":
        from resnetzoo.weights import read_checkpoint

        state, meta = read_checkpoint(path)  # a truncated or corrupt file is a CheckpointError
        config = dataclasses.replace(config, arch=meta.get("arch", config.arch))
        mean = json.loads(meta["mean"]) if "mean" in meta else _normalisation(config)[0]
        std = json.loads(meta["std"]) if "std" in meta else _normalisation(config)[1]
        classes = json.loads(meta["classes"]) if "classes" in meta else None
    else:
        checkpoint = load_checkpoint(path)
        saved = CUB200Config.from_dict(checkpoint["config"])
        config = dataclasses.replace(config, arch=saved.arch, img_size=saved.img_size, resize=saved.resize,
                                     resize_mode=saved.resize_mode, bbox_crop=saved.bbox_crop)
        mean, std, state = checkpoint["mean"], checkpoint["std"], checkpoint["model"]
        classes = list(checkpoint["classes"])
    test_set = _prepare_data(config, dist, splits=("test",))["test"]
    _use_checkpoint_classes(test_set, classes, checkpoint=path)
    model = _build_model(config, num_classes=len(test_set.classes), load_pretrained=False)
    load_weights(model, state, strict=True, ignore_head=False)
    _to_device(model, config, device)
    loader = _test_loader(test_set, config=config, dist=dist, device=device,
                          batch_size=max(1, config.batch_size // dist.world_size))
    result = evaluate(
        model, loader, num_classes=len(test_set.classes), device=device, mean=mean, std=std,
        amp_dtype=_amp_dtype(config, device), channels_last=config.channels_last,
        progress=_show_progress(config, dist), distributed=dist.enabled,
    )
    per_class = (result.pop("per_class_correct"), result.pop("per_class_total"))
    summary = {**result, "checkpoint": str(path), "arch": config.arch, **_device_info(device),
               "world_size": dist.world_size, "versions": _versions(), "config": config.to_dict()}
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "eval.json", summary)
        _write_per_class(out / "eval_per_class_accuracy.csv", test_set.classes, *per_class)
        logger.info("%s: test top-1 %.2f %%, top-5 %.2f %% on %d images", path, result["test_top1"],
                    result["test_top5"], result["test_images"])
    return summary


def _use_checkpoint_classes(dataset: CUB200, classes: list[str] | None, *, checkpoint: Path) -> None:
    """Give the data the checkpoint's label order, by class name; refuse a different class list."""
    if classes is None:
        logger.warning("%s records no class names: the class order of the data cannot be checked against it",
                       checkpoint)
        return
    dataset.use_class_order(classes, source=str(checkpoint))


@dataclasses.dataclass
class _Training:
    """Everything one training run holds, built by :func:`_setup_training`."""

    config: CUB200Config
    dist: _Dist
    device: torch.device
    out: Path
    train_set: CUB200
    test_set: CUB200
    train_sampler: _SeededSampler
    train_loader: DataLoader
    test_loader: DataLoader
    steps_per_epoch: int
    raw: nn.Module  # what is saved and evaluated
    model: nn.Module  # what is trained: raw, maybe wrapped in DDP and compiled
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    mean: list[float]
    std: list[float]
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best_top1: float = -1.0
    best_epoch: int = 0
    start_epoch: int = 0
    elapsed_before: float = 0.0

    @property
    def classes(self) -> list[str]:
        return self.train_set.classes


def _setup_training(config: CUB200Config, dist: _Dist, device: torch.device) -> _Training:
    out = _main_process_first(dist, lambda: _prepare_output_dir(config), others=lambda: Path(config.output_dir))
    checkpoint = load_checkpoint(out / "checkpoint.pt") if config.resume else None
    if checkpoint is not None:
        config = _resumed_config(config, checkpoint["config"])
    _seed_everything(config.seed)
    datasets = _prepare_data(config, dist, splits=("train", "test"))
    train_set, test_set = datasets["train"], datasets["test"]
    if checkpoint is not None:
        for dataset in (train_set, test_set):
            _use_checkpoint_classes(dataset, list(checkpoint["classes"]), checkpoint=out / "checkpoint.pt")
    micro = _micro_batch_size(config, dist)
    train_sampler, train_loader = _train_loader(train_set, config=config, dist=dist, device=device, batch_size=micro)
    test_loader = _test_loader(test_set, config=config, dist=dist, device=device, batch_size=micro)
    steps_per_epoch = len(train_loader) // config.grad_accum
    if steps_per_epoch < 1:
        raise ConfigError(
            f"the train split has {len(train_set)} images, fewer than one optimizer step of --batch-size "
            f"{config.batch_size}; lower --batch-size"
        )

    raw = _build_model(config, num_classes=len(train_set.classes), load_pretrained=checkpoint is None)
    if config.sync_bn and dist.enabled:
        raw = nn.SyncBatchNorm.convert_sync_batchnorm(raw)
    elif config.sync_bn:
        logger.warning("--sync-bn has no effect in a single process")
    _to_device(raw, config, device)
    optimizer, scheduler = _build_optimisation(raw, config, steps_per_epoch=steps_per_epoch)
    amp_dtype = _amp_dtype(config, device)
    mean, std = (checkpoint["mean"], checkpoint["std"]) if checkpoint else _normalisation(config)
    training = _Training(
        config=config, dist=dist, device=device, out=out, train_set=train_set, test_set=test_set,
        train_sampler=train_sampler, train_loader=train_loader, test_loader=test_loader,
        steps_per_epoch=steps_per_epoch, raw=raw, model=raw, optimizer=optimizer, scheduler=scheduler,
        scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16), amp_dtype=amp_dtype,
        mean=list(mean), std=list(std),
    )
    if checkpoint is not None:
        raw.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        training.scaler.load_state_dict(checkpoint["scaler"])
        training.history = list(checkpoint["history"])
        training.best_top1, training.best_epoch = checkpoint["best_top1"], checkpoint["best_epoch"]
        training.start_epoch, training.elapsed_before = checkpoint["epoch"], checkpoint["elapsed_s"]

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not config.deterministic
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    if dist.enabled:
        training.model = nn.parallel.DistributedDataParallel(
            raw, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        training.model = torch.compile(training.model)
    return training


def _evaluate_training(t: _Training) -> dict[str, Any]:
    if t.dist.enabled:  # every rank evaluates exactly the model rank 0 saves
        for buffer in t.raw.buffers():
            torch_dist.broadcast(buffer, src=0)
    return evaluate(
        t.raw, t.test_loader, num_classes=len(t.classes), device=t.device, mean=t.mean, std=t.std,
        amp_dtype=t.amp_dtype, channels_last=bool(t.config.channels_last),
        progress=_show_progress(t.config, t.dist), distributed=t.dist.enabled,
    )


def _run_epoch(t: _Training, epoch: int, criterion: nn.Module) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train one epoch and evaluate; returns the metrics row and the full evaluation."""
    _seed_everything(_derive_seed(t.config.seed, epoch, t.dist.rank))
    t.train_sampler.set_epoch(epoch)
    start = time.perf_counter()
    lrs = [group["lr"] for group in t.optimizer.param_groups]
    stats = _train_epoch(
        model=t.model, loader=t.train_loader, optimizer=t.optimizer, scheduler=t.scheduler, scaler=t.scaler,
        criterion=criterion, config=t.config, device=t.device, amp_dtype=t.amp_dtype, mean=t.mean, std=t.std,
        dist=t.dist, steps=t.steps_per_epoch, desc=f"epoch {epoch + 1}/{t.config.epochs}",
    )
    _check_finite_weights(t.raw, where=f"epoch {epoch + 1}", config=t.config)
    result = _evaluate_training(t)
    if not math.isfinite(result["test_loss"]):
        raise TrainingDivergedError(_diverged_message(f"the test loss is {result['test_loss']} after epoch {epoch + 1}",
                                                      t.config))
    row = {"epoch": epoch + 1, "lr": lrs[0], "head_lr": lrs[1], **stats,
           **{k: v for k, v in result.items() if not k.startswith("per_class")},
           "epoch_s": time.perf_counter() - start}
    return row, result


def _record_epoch(t: _Training, row: dict[str, Any], run_start: float, writer: Any) -> None:
    """Best weights, checkpoint, metrics line, TensorBoard, log line (files on rank 0 only)."""
    t.history.append(row)
    improved = row["test_top1"] > t.best_top1
    if improved:
        t.best_top1, t.best_epoch = row["test_top1"], row["epoch"]
    if not t.dist.is_main:
        return
    if improved:
        _save_best(t.raw, t.out / "best.safetensors", config=t.config, classes=t.classes, mean=t.mean,
                   std=t.std, top1=t.best_top1, epoch=t.best_epoch)
    save_checkpoint(t.out / "checkpoint.pt", {
        "format": CHECKPOINT_FORMAT, "epoch": row["epoch"], "model": t.raw.state_dict(),
        "optimizer": t.optimizer.state_dict(), "scheduler": t.scheduler.state_dict(),
        "scaler": t.scaler.state_dict(), "config": t.config.to_dict(), "classes": list(t.classes),
        "mean": t.mean, "std": t.std, "best_top1": t.best_top1, "best_epoch": t.best_epoch,
        "history": t.history, "elapsed_s": t.elapsed_before + time.perf_counter() - run_start,
    })
    _append_metrics(t.out / "metrics.jsonl", row)
    _log_tensorboard(writer, row)
    logger.info("epoch %d/%d  loss %.3f  train %.2f%%  test %.2f%% (top-5 %.2f%%)  %.1f s  %.0f img/s",
                row["epoch"], t.config.epochs, row["train_loss"], row["train_top1"], row["test_top1"],
                row["test_top5"], row["epoch_s"], row["images_per_s"])


def _summarise(t: _Training, run_start: float) -> dict[str, Any]:
    final = t.history[-1]
    return {
        "test_top1": final["test_top1"], "test_top5": final["test_top5"], "test_loss": final["test_loss"],
        "best_top1": t.best_top1, "best_epoch": t.best_epoch, "epochs": len(t.history),
        "time_s": t.elapsed_before + time.perf_counter() - run_start,
        "images_per_s": float(np.median([row["images_per_s"] for row in t.history])),
        "num_classes": len(t.classes), "train_images": len(t.train_set), "test_images": len(t.test_set),
        "world_size": t.dist.world_size, "amp": str(t.amp_dtype).removeprefix("torch.") if t.amp_dtype else "off",
        **_device_info(t.device), "versions": _versions(), "config": t.config.to_dict(), "output_dir": str(t.out),
    }


def _fit(config: CUB200Config, dist: _Dist, device: torch.device) -> dict[str, Any]:
    t = _setup_training(config, dist, device)
    criterion = nn.CrossEntropyLoss(label_smoothing=t.config.label_smoothing)
    writer = _tensorboard(t.out / "tensorboard") if dist.is_main else None
    if dist.is_main:
        _write_metrics(t.out / "metrics.jsonl", t.history)  # on resume: drops lines of epochs not checkpointed
        logger.info("%s on %s: %d train / %d test images, %d classes, %d steps/epoch of %d images, %s",
                    t.config.arch, device, len(t.train_set), len(t.test_set), len(t.classes),
                    t.steps_per_epoch, t.config.batch_size, f"AMP {t.amp_dtype}" if t.amp_dtype else "fp32")
    run_start = time.perf_counter()
    last_eval = None
    for epoch in range(t.start_epoch, t.config.epochs):
        row, last_eval = _run_epoch(t, epoch, criterion)
        _record_epoch(t, row, run_start, writer)
    if last_eval is None:  # resumed a finished run: evaluate once more for the per-class file
        last_eval = _evaluate_training(t)
    if writer is not None:
        writer.close()
    summary = _summarise(t, run_start)
    if dist.is_main:
        _write_per_class(t.out / "per_class_accuracy.csv", t.classes, last_eval["per_class_correct"],
                         last_eval["per_class_total"])
        _plot_curves(t.out / "curves.png", t.history)
        write_json(t.out / "summary.json", summary)
    return summary


def _resolve_automatic(config: CUB200Config, dist: _Dist, device: torch.device) -> CUB200Config:
    """Settings left to the run (None): the values this run uses, so that the summary records them."""
    resolved: dict[str, Any] = {}
    if config.channels_last is None:
        resolved["channels_last"] = device.type == "cuda"
    if config.workers is None:
        resolved["workers"] = _default_workers(dist)
    if config.warmup_epochs is None:
        resolved["warmup_epochs"] = config.warmup
        if config.warmup < 5.0 and config.eval_only is None and not config.resume and dist.is_main:
            logger.info("warm-up: %g epochs, 5 %% of --epochs %d (give --warmup-epochs to choose)",
                        config.warmup, config.epochs)
    return dataclasses.replace(config, **resolved)


# ------------------------------------------------------------------------- public API
def train(config: CUB200Config) -> dict[str, Any]:
    """Run the recipe: fine-tune (or, with ``config.eval_only``, only evaluate) and write the outputs.

    Reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (set by ``torchrun``) to run as one
    process of a DistributedDataParallel group, initialising the process group if it
    is not already (NCCL on CUDA, gloo on CPU).

    Args:
        config: the settings; validated first.

    Returns:
        The summary also written to ``summary.json``: ``test_top1`` (final epoch) and
        ``best_top1`` in percent, ``best_epoch``, ``test_top5``, ``test_loss``,
        ``epochs``, ``time_s``, ``images_per_s`` (median over epochs), image counts,
        ``world_size``, ``amp``, ``device``, ``versions`` and ``config``. With
        ``eval_only``: the test metrics, also written to ``eval.json``.

    Raises:
        ConfigError: an invalid setting, an output folder holding an earlier run, or
            ``resume`` with no checkpoint.
        CUB200TreeError: a missing or broken dataset tree.
        CheckpointError: an unreadable checkpoint.
        ConnectionError, ChecksumError: the download failed.
    """
    config.validate()
    dist = _dist_from_env()
    device = _resolve_device(config, dist)
    config = _resolve_automatic(config, dist, device)
    if config.sync_bn and device.type != "cuda":
        raise ConfigError("--sync-bn needs CUDA devices: PyTorch's SyncBatchNorm does not run on the CPU")
    with _process_group(dist, device):
        if config.eval_only is not None:
            return _evaluate_only(config, dist, device)
        return _fit(config, dist, device)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``python -m resnetzoo.recipes.cub200 [flags]``.

    Args:
        argv: arguments without the program name; None reads ``sys.argv``.

    Returns:
        0 on success, 2 on a usage or data error (message on stderr, no traceback),
        130 when interrupted.
    """
    try:
        config = parse_config(argv)
    except SystemExit as e:  # argparse: --help, or a malformed flag (usage already printed)
        return int(e.code or 0)
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=logging.INFO if rank == "0" else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        summary = train(config)
    except TrainingDivergedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ResNetZooError, ConnectionError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only folder: name the path and the fix
        print(f"error: {_describe_os_error(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; continue with --resume --output-dir {config.output_dir}", file=sys.stderr)
        return 130
    if rank == "0":
        if config.eval_only is not None:
            print(f"test top-1 {summary['test_top1']:.2f} %, top-5 {summary['test_top5']:.2f} % "
                  f"({summary['test_images']} images); details in {Path(config.output_dir) / 'eval.json'}")
        else:
            print(f"test top-1 {summary['test_top1']:.2f} % after {summary['epochs']} epochs (best "
                  f"{summary['best_top1']:.2f} % at epoch {summary['best_epoch']}); results in {summary['output_dir']}")
    return 0


def _describe_os_error(error: OSError) -> str:
    where = error.filename or "a file"
    reason = error.strerror or str(error)
    if error.errno == errno.ENOSPC:
        fix = ("free some space or choose another --output-dir / --cache-dir; files written before are intact "
               "(an interrupted training continues with --resume)")
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "choose a folder you can write to (--output-dir, --cache-dir, --data-root)"
    else:
        fix = "check the path and the disk"
    return f"{where}: {reason}; {fix}"
