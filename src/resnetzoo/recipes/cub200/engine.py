"""Training and evaluation of the CUB-200-2011 recipe: ``train(config) -> summary``.

One process or many: under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set)
the model is wrapped in ``DistributedDataParallel``, each rank reads its share of the
data, metrics are summed over ranks, and rank 0 alone prepares the data (download,
synthetic tree, cache) and writes every output while the others wait for it.

Reproducibility: every random stream is derived from ``(seed, epoch, rank)`` at the
start of each epoch, and each training image's augmentation from
``(seed, epoch, image index)``, so a run resumed from its checkpoint repeats an
uninterrupted run exactly (bit for bit on CPU), whatever the number of data workers.
That is why checkpoints hold no RNG states: the epoch number restores them, on every
rank and not only on rank 0, which alone writes checkpoints.

Outputs in ``output_dir``: ``checkpoint.pt`` (every epoch, written atomically),
``best.safetensors`` (the best test top-1 so far), ``metrics.jsonl`` (one line per
epoch), ``summary.json``, ``per_class_accuracy.csv``, ``curves.png`` (needs
matplotlib) and ``tensorboard/`` (needs tensorboard).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import functools
import hashlib
import json
import logging
import math
import os
import platform
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from resnetzoo.errors import CheckpointError, ResNetZooError
from resnetzoo.recipes.cub200.config import ConfigError, CUB200Config, parse_config
from resnetzoo.recipes.cub200.data import (
    CUB200,
    CUB200Tree,
    build_transforms,
    download_cub200,
    make_synthetic_tree,
    normalize_batch,
    read_tree,
)

__all__ = ["CHECKPOINT_FORMAT", "evaluate", "load_checkpoint", "main", "save_checkpoint", "train"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "resnetzoo.recipes.cub200.checkpoint/1"
# Everything a run writes; --overwrite removes exactly these, nothing else in the folder.
_RUN_OUTPUTS = (
    "checkpoint.pt",
    "best.safetensors",
    "metrics.jsonl",
    "summary.json",
    "per_class_accuracy.csv",
    "curves.png",
    "tensorboard",
)
# Settings that may change when resuming (where and how fast), unlike the recipe itself.
_RUNTIME_FIELDS = frozenset(
    {"data_root", "download", "cache_dir", "workers", "device", "channels_last", "compile", "progress",
     "output_dir", "resume", "overwrite", "eval_only"}
)


# ------------------------------------------------------------------------------ seeds
def _derive_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part and on nothing else (not PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also every CUDA device


def _seed_worker(worker_id: int) -> None:
    # For user transforms that draw from numpy or random: torch already seeds each worker.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class _SeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(sample seed, index)``: augmentation then depends on (seed, epoch, index) only."""

    def __init__(self, sampler: DistributedSampler, *, seed: int) -> None:
        self.sampler = sampler
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.sampler:
            yield _derive_seed(self.seed, self.epoch, index), index

    def __len__(self) -> int:
        return len(self.sampler)


class _SeededDataset(Dataset):
    """Runs the wrapped dataset's random transforms under the seed the sampler chose."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        sample_seed, index = key
        # fork_rng: with workers=0 this runs in the training process, whose RNG must not move.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            return self.dataset[index]


class _ShardSampler(Sampler[int]):
    """Every ``world_size``-th index from ``rank``: each test image is seen once, none padded."""

    def __init__(self, length: int, *, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# ----------------------------------------------------------------------- processes
@dataclasses.dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _dist_from_env() -> _Dist:
    values = {}
    for var, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
        raw = os.environ.get(var, str(default))
        try:
            values[var] = int(raw)
        except ValueError:
            raise ConfigError(f"environment variable {var}={raw!r} must be an integer (set by torchrun)") from None
    return _Dist(rank=values["RANK"], world_size=values["WORLD_SIZE"], local_rank=values["LOCAL_RANK"])


def _resolve_device(config: CUB200Config, dist: _Dist) -> torch.device:
    name = config.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    return device


def _amp_dtype(config: CUB200Config, device: torch.device) -> torch.dtype | None:
    if config.amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[config.amp]


def _show_progress(config: CUB200Config, dist: _Dist) -> bool:
    # Bars only on rank 0 and only on a terminal: in a log file they are noise.
    return config.progress and dist.is_main and sys.stderr.isatty()


def _all_reduce_sum(tensor: torch.Tensor, dist: _Dist) -> torch.Tensor:
    if dist.enabled:
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return tensor


def _main_process_first(dist: _Dist, fn: Callable[[], Any], *, others: Callable[[], Any] | None = None) -> Any:
    """Run ``fn`` on rank 0 while the others wait, then ``others`` (default ``fn``) on the others.

    A failure on rank 0 is re-raised there and reported on every other rank, so no
    rank waits forever for a rank that has died.
    """
    if not dist.enabled:
        return fn()
    result, error = None, None
    if dist.is_main:
        try:
            result = fn()
        except BaseException as e:  # re-raised below, after telling the other ranks
            error = e
    message = [None if error is None else f"{type(error).__name__}: {error}"]
    torch_dist.broadcast_object_list(message, src=0)
    if error is not None:
        raise error
    if message[0] is not None:
        raise ResNetZooError(f"rank 0 failed while preparing the run: {message[0]}")
    return result if dist.is_main else (others or fn)()


# ---------------------------------------------------------------------------- data
def _tree_root(config: CUB200Config) -> Path:
    return Path(config.output_dir) / "synthetic_data" if config.synthetic else Path(config.data_root)


def _make_datasets(config: CUB200Config, tree: CUB200Tree, *, splits: tuple[str, ...]) -> dict[str, CUB200]:
    return {
        split: CUB200(
            tree,
            split=split,  # type: ignore[arg-type]
            transform=build_transforms(train=split == "train", img_size=config.img_size, crop_padding=config.crop_padding),
            bbox_crop=config.bbox_crop,
            resize=config.resize,
            resize_mode=config.resize_mode,  # type: ignore[arg-type]
            cache_dir=config.cache_dir,
        )
        for split in splits
    }


def _prepare_data(config: CUB200Config, dist: _Dist, *, splits: tuple[str, ...]) -> dict[str, CUB200]:
    """Rank 0 downloads / generates / caches and checks the tree; the others then read it."""
    root = _tree_root(config)
    show = _show_progress(config, dist)

    def prepare() -> dict[str, CUB200]:
        if config.synthetic:
            make_synthetic_tree(root, seed=config.seed)
        elif config.download:
            download_cub200(root, progress=show)
        datasets = _make_datasets(config, read_tree(root, check_images=True), splits=splits)
        if config.cache_dir is not None:
            for dataset in datasets.values():
                dataset.build_cache(num_threads=max(1, config.workers), progress=show)
        return datasets

    def read() -> dict[str, CUB200]:
        return _make_datasets(config, read_tree(root, check_images=False), splits=splits)

    return _main_process_first(dist, prepare, others=read)


def _loader(
    dataset: Dataset, *, config: CUB200Config, device: torch.device, batch_size: int, sampler: Sampler, drop_last: bool
) -> DataLoader:
    workers = config.workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_seed_worker,
        # Its own generator, so creating a loader does not draw from the global RNG.
        generator=torch.Generator().manual_seed(config.seed),
    )


def _micro_batch_size(config: CUB200Config, dist: _Dist) -> int:
    parts = dist.world_size * config.grad_accum
    if config.batch_size % parts:
        raise ConfigError(
            f"--batch-size {config.batch_size} must be divisible by processes x --grad-accum "
            f"({dist.world_size} x {config.grad_accum} = {parts}): it is the global batch per optimizer step"
        )
    return config.batch_size // parts


# --------------------------------------------------------------------------- model
def _normalisation(config: CUB200Config) -> tuple[list[float], list[float]]:
    from resnetzoo.weights import IMAGENET_MEAN, IMAGENET_STD, get_weights

    if config.pretrained == "none" or Path(config.pretrained).is_file():
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    spec = get_weights(config.arch, config.pretrained)
    return list(spec.mean), list(spec.std)


def _build_model(config: CUB200Config, *, num_classes: int, load_pretrained: bool = True) -> nn.Module:
    from resnetzoo import create_model
    from resnetzoo.remap import load_weights

    tag = config.pretrained
    from_file = load_pretrained and tag != "none" and Path(tag).is_file()
    from_tag = load_pretrained and tag != "none" and not from_file
    model = create_model(
        config.arch, pretrained=tag if from_tag else False, num_classes=num_classes, drop_path_rate=config.drop_path_rate
    )
    if from_file:
        # The head is new (200 classes): keep its initialisation, but every other key must fit.
        load_weights(model, tag, strict=True, ignore_head=True)
    return model


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
        warmup_steps=round(config.warmup_epochs * steps_per_epoch),
        total_steps=config.epochs * steps_per_epoch,
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


# ---------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write a training checkpoint atomically: a temporary file, then ``os.replace``.

    An interruption (crash, full disk, Ctrl-C) leaves the previous checkpoint intact.

    Args:
        path: destination, e.g. ``output_dir / "checkpoint.pt"``.
        state: tensors and plain containers only, so :func:`load_checkpoint` can read
            it with ``weights_only=True``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`train`, without running any pickled code.

    Args:
        path: a ``checkpoint.pt``.

    Returns:
        The checkpoint dict: ``format``, ``epoch`` (epochs completed), ``model``,
        ``optimizer``, ``scheduler``, ``scaler`` (state dicts), ``config``, ``classes``,
        ``mean``, ``std``, ``best_top1``, ``best_epoch``, ``history``, ``elapsed_s``.

    Raises:
        CheckpointError: the file is unreadable, unsafe, or not a recipe checkpoint.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch raises many types for a bad file; all mean the same here
        raise CheckpointError(f"{path}: not a readable training checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a CUB-200 recipe checkpoint (no format {CHECKPOINT_FORMAT!r}); "
            f"for a weights file use --eval-only with a .safetensors file or --pretrained"
        )
    return state


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
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        bar.update()
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


# --------------------------------------------------------------------------- outputs
def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    _write_atomic(path, "".join(json.dumps(row) + "\n" for row in history))


def _write_per_class(path: Path, classes: list[str], correct: list[int], total: list[int]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "correct", "total", "accuracy"])
        for name, c, t in zip(classes, correct, total, strict=True):
            writer.writerow([name, c, t, f"{100.0 * c / t:.2f}" if t else ""])
    os.replace(tmp, path)


def _plot_curves(path: Path, history: list[dict[str, Any]]) -> None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning("matplotlib is not installed: skipping %s (pip install matplotlib)", path.name)
        return
    epochs = [row["epoch"] for row in history]
    # Figure + Agg canvas directly: no pyplot, so the caller's backend is left alone.
    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    loss_ax, acc_ax = figure.subplots(1, 2)
    loss_ax.plot(epochs, [r["train_loss"] for r in history], "o-", label="train (label-smoothed)")
    loss_ax.plot(epochs, [r["test_loss"] for r in history], "o-", label="test")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    acc_ax.plot(epochs, [r["train_top1"] for r in history], "o-", label="train top-1")
    acc_ax.plot(epochs, [r["test_top1"] for r in history], "o-", label="test top-1")
    acc_ax.plot(epochs, [r["test_top5"] for r in history], "o-", label="test top-5")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    figure.savefig(path, dpi=100)


def _tensorboard(path: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.info("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
        return None
    return SummaryWriter(log_dir=str(path))


def _versions() -> dict[str, str]:
    import torchvision

    try:
        ours = importlib_metadata.version("resnetzoo")
    except importlib_metadata.PackageNotFoundError:
        import resnetzoo

        ours = str(getattr(resnetzoo, "__version__", "unknown"))
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__, "resnetzoo": ours}


def _device_info(device: torch.device) -> dict[str, str]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {"device": str(device), "device_name": name}


def _prepare_output_dir(config: CUB200Config) -> Path:
    """Refuse to clobber an earlier run; with --overwrite remove exactly what a run writes."""
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output-dir {out} is a file, not a folder")
    if config.resume:
        if not (out / "checkpoint.pt").is_file():
            raise ConfigError(f"--resume: no checkpoint at {out / 'checkpoint.pt'}; drop --resume to start a new run")
        return out
    existing = [name for name in _RUN_OUTPUTS if (out / name).exists()]
    if existing and not config.overwrite:
        raise ConfigError(
            f"--output-dir {out} already holds the results of a run ({', '.join(existing)}); pass --resume to "
            f"continue it or --overwrite to replace them, or choose another --output-dir"
        )
    for name in existing:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def _resumed_config(config: CUB200Config, saved: dict[str, Any]) -> CUB200Config:
    """The checkpoint's recipe with this call's runtime settings; warns about what is ignored."""
    checkpoint_config = CUB200Config.from_dict(saved)
    defaults = (CUB200Config(), CUB200Config.for_synthetic())
    # A value equal to a default was most likely not typed: only the others are worth a warning.
    ignored = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.name not in _RUNTIME_FIELDS
        and getattr(config, f.name) != getattr(checkpoint_config, f.name)
        and all(getattr(config, f.name) != getattr(d, f.name) for d in defaults)
    }
    if ignored:
        logger.warning(
            "resuming with the checkpoint's settings; ignoring %s",
            ", ".join(f"{k}={v!r} (checkpoint: {getattr(checkpoint_config, k)!r})" for k, v in ignored.items()),
        )
    runtime = {name: getattr(config, name) for name in _RUNTIME_FIELDS}
    return dataclasses.replace(checkpoint_config, **runtime)


# ---------------------------------------------------------------------- the two runs
def _save_best(model: nn.Module, path: Path, *, config: CUB200Config, classes: list[str], mean: list[float],
               std: list[float], top1: float, epoch: int) -> None:
    from resnetzoo.remap import save_weights

    save_weights(model, path, overwrite=True, metadata={
        "dataset": "CUB-200-2011", "num_classes": str(len(classes)), "classes": json.dumps(list(classes)),
        "mean": json.dumps(list(mean)), "std": json.dumps(list(std)), "img_size": str(config.img_size),
        "resize": str(config.resize), "resize_mode": config.resize_mode, "test_top1": f"{top1:.4f}",
        "epoch": str(epoch), "recipe": "resnetzoo.recipes.cub200",
    })


def _evaluate_only(config: CUB200Config, dist: _Dist, device: torch.device) -> dict[str, Any]:
    from resnetzoo.remap import load_weights

    path = Path(config.eval_only)  # type: ignore[arg-type]
    out = Path(config.output_dir)

    def check_output() -> None:
        if (out / "eval.json").exists() and not config.overwrite:
            raise ConfigError(f"{out / 'eval.json'} exists; pass --overwrite to replace it or choose another --output-dir")

    _main_process_first(dist, check_output, others=lambda: None)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        config = dataclasses.replace(config, arch=meta.get("arch", config.arch))
        mean = json.loads(meta["mean"]) if "mean" in meta else _normalisation(config)[0]
        std = json.loads(meta["std"]) if "std" in meta else _normalisation(config)[1]
        state: Any = str(path)
    else:
        checkpoint = load_checkpoint(path)
        saved = CUB200Config.from_dict(checkpoint["config"])
        config = dataclasses.replace(config, arch=saved.arch, img_size=saved.img_size, resize=saved.resize,
                                     resize_mode=saved.resize_mode, bbox_crop=saved.bbox_crop)
        mean, std, state = checkpoint["mean"], checkpoint["std"], checkpoint["model"]
    test_set = _prepare_data(config, dist, splits=("test",))["test"]
    model = _build_model(config, num_classes=len(test_set.classes), load_pretrained=False)
    load_weights(model, state, strict=True, ignore_head=False)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    loader = _loader(
        test_set, config=config, device=device, batch_size=max(1, config.batch_size // dist.world_size),
        sampler=_ShardSampler(len(test_set), rank=dist.rank, world_size=dist.world_size), drop_last=False,
    )
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
        _write_atomic(out / "eval.json", json.dumps(summary, indent=2) + "\n")
        _write_per_class(out / "eval_per_class_accuracy.csv", test_set.classes, *per_class)
        logger.info("%s: test top-1 %.2f %%, top-5 %.2f %% on %d images", path, result["test_top1"],
                    result["test_top5"], result["test_images"])
    return summary


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
    micro = _micro_batch_size(config, dist)
    train_sampler = _SeededSampler(
        DistributedSampler(train_set, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
                           seed=config.seed, drop_last=True),
        seed=config.seed,
    )
    train_loader = _loader(_SeededDataset(train_set), config=config, device=device, batch_size=micro,
                           sampler=train_sampler, drop_last=True)
    test_loader = _loader(test_set, config=config, device=device, batch_size=micro, drop_last=False,
                          sampler=_ShardSampler(len(test_set), rank=dist.rank, world_size=dist.world_size))
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
    raw.to(device)
    if config.channels_last:
        raw.to(memory_format=torch.channels_last)
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
    result = _evaluate_training(t)
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
    with (t.out / "metrics.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    if writer is not None:
        for key, value in row.items():
            if key != "epoch":
                writer.add_scalar(key, value, row["epoch"])
        writer.flush()
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
        _write_atomic(t.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


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
    if config.channels_last is None:
        config = dataclasses.replace(config, channels_last=device.type == "cuda")
    if config.sync_bn and device.type != "cuda":
        raise ConfigError("--sync-bn needs CUDA devices: PyTorch's SyncBatchNorm does not run on the CPU")
    owns_group = dist.enabled and not torch_dist.is_initialized()
    if owns_group:
        # An hour, not NCCL's default 10 minutes: the other ranks wait in a collective
        # while rank 0 downloads 1.1 GB and builds the cache.
        torch_dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=1)
        )
    try:
        if config.eval_only is not None:
            return _evaluate_only(config, dist, device)
        return _fit(config, dist, device)
    finally:
        if owns_group:
            torch_dist.destroy_process_group()


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
    except (ResNetZooError, ConnectionError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
