"""Training and evaluation: ``train(config) -> summary``, and the :class:`Run` that does it.

A :class:`Run` holds everything one fine-tuning run needs (data, model, optimiser,
schedule, gradient scaler, weight average, outputs) and has a method for each step, so
:meth:`Run.fit` reads top to bottom: every epoch trains, checks the weights,
evaluates on the validation split and records the epoch; at the end the test split is
evaluated once, on the final and on the validation-selected weights.

One process or many: under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set)
the model is wrapped in ``DistributedDataParallel``, each process reads its share of
the data, metrics are summed over processes, and the main process alone prepares the
data (download, synthetic tree, cache) and writes every output while the others wait.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
import torch.nn as nn
from tqdm.auto import tqdm

from resnetzoo._io import describe_os_error
from resnetzoo.errors import ResNetZooError, WeightsLoadError, WeightsUnavailableError
from resnetzoo.recipes.finetune._batchnorm import apply_bn_policy, freeze_bn_statistics
from resnetzoo.recipes.finetune._data import prepare_data
from resnetzoo.recipes.finetune._distributed import (
    Dist,
    all_reduce_sum,
    default_threads,
    default_workers,
    dist_from_env,
    main_process_first,
    process_group,
    resolve_device,
)
from resnetzoo.recipes.finetune._ema import build_ema
from resnetzoo.recipes.finetune._loaders import eval_loader, train_loader
from resnetzoo.recipes.finetune._mixing import build_mixing
from resnetzoo.recipes.finetune._optim import build_optimizer
from resnetzoo.recipes.finetune._outputs import (
    Outputs,
    check_writable,
    device_info,
    prepare_output_dir,
    versions,
)
from resnetzoo.recipes.finetune._seeding import derive_seed, seed_everything
from resnetzoo.recipes.finetune.analysis import write_error_analysis
from resnetzoo.recipes.finetune.checkpoints import (
    CHECKPOINT_FORMAT,
    RUNTIME_FIELDS,
    load_checkpoint,
    resumed_config,
    save_checkpoint,
    save_model_weights,
)
from resnetzoo.recipes.finetune.config import (
    FinetuneConfig,
    build_parser,
    parse_config,
    resolve_settings,
)
from resnetzoo.recipes.finetune.errors import ConfigError, TrainingDivergedError
from resnetzoo.recipes.finetune.evaluation import Evaluation, evaluate, forward
from resnetzoo.recipes.finetune.images import ImageDataset, normalize_batch
from resnetzoo.registry import create_model
from resnetzoo.remap import load_weights
from resnetzoo.weights import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    WeightSpec,
    pretrained_source,
    read_checkpoint,
)

__all__ = ["Dist", "Run", "build_model", "epochs_without_improvement", "evaluate_checkpoint", "main", "train"]

logger = logging.getLogger(__name__)

_CHECK_EVERY = 20  # optimizer steps between checks for a non-finite loss (each check waits for the GPU)


# --------------------------------------------------------------------------- the model
def _normalisation(config: FinetuneConfig) -> tuple[list[float], list[float]]:
    source = pretrained_source(config.arch, config.pretrained)
    if isinstance(source, WeightSpec):
        return list(source.mean), list(source.std)
    return list(IMAGENET_MEAN), list(IMAGENET_STD)


def build_model(config: FinetuneConfig, *, num_classes: int, load_pretrained: bool = True) -> nn.Module:
    """``resnetzoo.create_model(config.arch, pretrained=config.pretrained, num_classes=...)``.

    ``--pretrained`` is :func:`~resnetzoo.create_model`'s ``pretrained=``: one vocabulary
    (tag, full name, ``none``, path, ``hf-hub:``, URL); a classifier that does not fit
    ``num_classes`` is left out and keeps its fresh initialisation.

    Args:
        config: the run's settings (``arch``, ``pretrained``, ``drop_path_rate``).
        num_classes: the classifier's width.
        load_pretrained: False to build random weights (a checkpoint will be loaded).

    Raises:
        WeightsUnavailableError: the weights cannot be fetched; the message says how to
            pass a file from the command line.
        WeightsLoadError: the weights do not fit ``config.arch`` (the classifier aside);
            the message says what a shell user can do about it.
    """
    arch = str(config.arch)
    wanted = load_pretrained and pretrained_source(arch, config.pretrained) is not None
    try:
        return create_model(arch, pretrained=config.pretrained if wanted else False, num_classes=num_classes,
                            drop_path_rate=config.drop_path_rate)
    except WeightsUnavailableError as e:
        raise WeightsUnavailableError(
            f"{e}\nFrom the command line: download the weights where you have access and pass the file "
            f"with --pretrained PATH, or train from scratch with --pretrained none."
        ) from e
    except WeightsLoadError as e:  # the library's advice ("pass strict=False") is for Python callers
        raise WeightsLoadError(f"--pretrained {config.pretrained} does not fit --arch {arch}: {e.report}\n"
                               f"{_misfit_advice(e.report, source=str(config.pretrained), arch=arch)}",
                               e.report) from None


def _misfit_advice(report: Any, *, source: str, arch: str) -> str:
    """What a shell user can do about weights that do not fit strictly (``report``: a LoadReport)."""
    head = report.head_prefix + "."
    unfit = [key for key in [*report.missing, *(m.key for m in report.mismatched), *(i.key for i in report.invalid)]
             if not key.startswith(head)]
    if not unfit and report.unexpected:  # every tensor of the network is there, and more
        return (f"The file holds every tensor of a {arch} and {len(report.unexpected)} more that it does not use. "
                f"Write a copy without them, then train from it: resnetzoo convert {source} clean.safetensors "
                f"--arch {arch} --allow-partial, and --pretrained clean.safetensors")
    return (f"The file does not hold a {arch}: check --arch (resnetzoo inspect {source} tells what it holds); if the "
            f"network sits under a key prefix (module., backbone.), write a clean copy with resnetzoo convert "
            f"{source} clean.safetensors --arch {arch} --prefix PREFIX and pass --pretrained clean.safetensors")


def _amp_dtype(config: FinetuneConfig, device: torch.device) -> torch.dtype | None:
    if config.amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[config.amp]


def _diverged(what: str, config: FinetuneConfig) -> TrainingDivergedError:
    hints = [f"a lower --lr (now {config.lr:g})", f"a longer --warmup-epochs (now {config.warmup:g})"]
    if config.amp == "fp16":
        hints.append("--amp bf16 or off")
    return TrainingDivergedError(
        f"training diverged: {what}. Nothing of this epoch was saved: the last checkpoint and best "
        f"weights, if any, are from before. Try {', or '.join(hints)}"
    )


def _check_finite_weights(model: nn.Module, *, where: str, config: FinetuneConfig) -> None:
    bad = [name for name, tensor in model.state_dict().items()
           if tensor.is_floating_point() and not bool(tensor.isfinite().all())]
    if bad:
        raise _diverged(f"{len(bad)} weight tensors hold NaN or infinity after {where} (first: {bad[0]})", config)


@dataclasses.dataclass
class _Best:
    """The epoch the selection split chose so far."""

    top1: float = -1.0
    epoch: int = 0


def epochs_without_improvement(scores: list[float]) -> int:
    """How many of the last ``scores`` (selection top-1 per epoch) are not better than every one before.

    A tie is no improvement here: early stopping waits for a *better* validation score
    (the best checkpoint, by contrast, takes the later of two tied epochs). A function of
    the history alone, so a resumed run stops at the same epoch as an uninterrupted one.
    """
    best, last_better = -math.inf, 0
    for epoch, score in enumerate(scores, start=1):
        if score > best:
            best, last_better = score, epoch
    return len(scores) - last_better


# ---------------------------------------------------------------------------- the run
class Run:
    """One fine-tuning run: the state it holds, and a method for each step.

    ``Run(config, dist=..., device=...)`` prepares the output folder, the data (read,
    checked, split), the model, optimiser, schedule, gradient scaler and weight
    average, or restores them all from ``checkpoint.pt`` with ``config.resume``.
    :meth:`fit` then trains the remaining epochs and evaluates the test split.

    Args:
        config: validated settings with every automatic value resolved
            (:func:`~resnetzoo.recipes.finetune.config.resolve_settings`).
        dist: this process's place in the process group.
        device: where to train.
        settings_chosen: how the automatic settings were chosen, for the summary.

    Attributes:
        config: the settings in force (a resumed run's come from its checkpoint).
        data: the train, validation and test datasets and the protocol.
        model: the network that is saved and evaluated.
        trained: what the optimiser steps through: ``model``, maybe wrapped in
            ``DistributedDataParallel`` and compiled.
        ema: the exponential moving average of the weights, or None.
        history: one metrics row per completed epoch.
    """

    def __init__(self, config: FinetuneConfig, *, dist: Dist, device: torch.device,
                 settings_chosen: dict[str, str] | None = None) -> None:
        self.dist, self.device = dist, device
        self.settings_chosen = dict(settings_chosen or {})
        self.out = main_process_first(
            dist, lambda: prepare_output_dir(Path(config.output_dir), resume=config.resume, overwrite=config.overwrite),
            others=lambda: Path(config.output_dir),
        )
        checkpoint = load_checkpoint(self.out / "checkpoint.pt", resumable=True) if config.resume else None
        self.config = resumed_config(config, checkpoint["config"]) if checkpoint else config
        seed_everything(self.config.seed)

        self.data = prepare_data(self.config, dist, training=True, progress=self.show_progress)
        if checkpoint is not None:
            self._use_class_order(checkpoint["classes"])
        self.classes: list[str] = self.train_set.classes
        micro_batch = self._micro_batch_size()
        self.sampler, self.train_loader = train_loader(
            self.train_set, dist=dist, workers=self.config.workers or 0, seed=self.config.seed, device=device,
            batch_size=micro_batch)
        self.selection_loader = self._eval_loader(self.data.selection)
        self.steps_per_epoch = len(self.train_loader) // self.config.grad_accum
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"the train split has {len(self.train_set)} images, fewer than one optimizer step of --batch-size "
                f"{self.config.batch_size}; lower --batch-size"
            )

        self.model = build_model(self.config, num_classes=len(self.classes), load_pretrained=checkpoint is None)
        self.model = apply_bn_policy(self.model, self.config.bn, distributed=dist.enabled, device_type=device.type)
        self.model.to(device)
        if self.config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer, self.scheduler = build_optimizer(
            self.model, lr=float(self.config.lr), head_lr_mult=float(self.config.head_lr_mult or 1.0),
            momentum=self.config.momentum, nesterov=self.config.nesterov, weight_decay=self.config.weight_decay,
            warmup_steps=round(self.config.warmup * self.steps_per_epoch),
            total_steps=self.config.epochs * self.steps_per_epoch,
        )
        self.amp_dtype = _amp_dtype(self.config, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.ema = build_ema(self.model, decay=self.config.ema_decay)
        self.mixing = build_mixing(cutmix_alpha=self.config.cutmix_alpha, mixup_alpha=self.config.mixup_alpha,
                                   num_classes=len(self.classes))
        self.criterion = nn.CrossEntropyLoss(label_smoothing=self.config.label_smoothing)
        self.mean, self.std = (list(checkpoint["mean"]), list(checkpoint["std"])) if checkpoint else _normalisation(
            self.config)
        self.history: list[dict[str, Any]] = []
        self.best = _Best()
        self.start_epoch, self.elapsed_before = 0, 0.0
        if checkpoint is not None:
            self._restore(checkpoint)
        self.trained = self._wrap(self.model)
        self.outputs = Outputs(self.out, enabled=dist.is_main, tensorboard=True)

    # ------------------------------------------------------------------ properties
    @property
    def train_set(self) -> ImageDataset:
        """The training images (without the validation share)."""
        assert self.data.train is not None  # a training run always has them
        return self.data.train

    @property
    def show_progress(self) -> bool:
        """Progress bars: only on the main process, and only on a terminal (in a log file they are noise)."""
        return self.config.progress and self.dist.is_main and sys.stderr.isatty()

    @property
    def stopped_early(self) -> bool:
        """``--early-stop-patience N``: the selection top-1 has not improved for N epochs."""
        patience = self.config.early_stop_patience
        scores = [row[f"{self.data.selection_split}_top1"] for row in self.history]
        return patience > 0 and len(scores) < self.config.epochs and epochs_without_improvement(scores) >= patience

    # ------------------------------------------------------------------------- fit
    def fit(self) -> dict[str, Any]:
        """Train every remaining epoch, then evaluate the test split once and write the summary.

        Returns:
            The summary, also written to ``summary.json``.

        Raises:
            TrainingDivergedError: the loss or the weights became NaN or infinite.
        """
        self.outputs.write_metrics(self.history)  # on resume: drops lines of epochs not checkpointed
        self._log_start()
        started = time.perf_counter()
        try:
            for epoch in range(self.start_epoch, self.config.epochs):
                if self.stopped_early:  # checked first: a resumed run that had stopped trains no more
                    break
                epoch_started = time.perf_counter()
                self.begin_epoch(epoch)
                stats = self.train_epoch(epoch)
                self.check_weights(epoch)
                scores = self.evaluate_epoch(epoch)
                row = {"epoch": epoch + 1, **stats, **scores, "epoch_s": time.perf_counter() - epoch_started,
                       "selected_on": self.data.selection_split, "protocol": self.data.protocol}
                self.end_epoch(row, started=started)
            return self.finish(started=started)
        finally:
            self.outputs.close()

    def begin_epoch(self, epoch: int) -> None:
        """Re-seed every random stream from (seed, epoch, rank): a resumed run repeats an uninterrupted one."""
        seed_everything(derive_seed(self.config.seed, epoch, self.dist.rank))
        self.sampler.set_epoch(epoch)

    def set_train_mode(self) -> None:
        """``model.train()``, with the BatchNorm statistics kept under ``--bn frozen``."""
        self.trained.train()
        if self.config.bn == "frozen":
            freeze_bn_statistics(self.trained)

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over this process's share of the training images.

        Returns:
            ``train_loss`` (label-smoothed, mixed), ``train_top1``, ``train_images``,
            ``train_s`` and ``images_per_s`` (summed over processes), ``lr`` and ``head_lr``.
        """
        self.set_train_mode()
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, correct, images
        # The first step whose loss was not finite (steps_per_epoch: none yet), kept on the
        # device and read every _CHECK_EVERY steps, so that checking does not wait for the GPU.
        first_bad = torch.full((), self.steps_per_epoch, dtype=torch.int64, device=self.device)
        batches = iter(self.train_loader)
        desc = f"epoch {epoch + 1}/{self.config.epochs}"
        start = time.perf_counter()
        bar = tqdm(total=self.steps_per_epoch, desc=desc, leave=False, disable=not self.show_progress)
        for step in range(self.steps_per_epoch):
            loss = self.train_step(batches, totals)
            first_bad = torch.where(loss.isfinite() | (first_bad < self.steps_per_epoch), first_bad, step)
            if step % _CHECK_EVERY == 0 or step == self.steps_per_epoch - 1:
                self._stop_if_diverged(first_bad, desc=desc)
            bar.update()
            if step % 20 == 0 and not bar.disable:  # .item() waits for the GPU: only when shown
                bar.set_postfix(loss=f"{loss.item() / self.config.grad_accum:.3f}")
        bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        loss_sum, correct, count = all_reduce_sum(totals, self.dist).tolist()
        return {"lr": lrs[0], "head_lr": lrs[1], "train_loss": loss_sum / count, "train_top1": 100.0 * correct / count,
                "train_images": int(count), "train_s": seconds, "images_per_s": count / seconds}

    def train_step(self, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], totals: torch.Tensor) -> torch.Tensor:
        """One optimizer step over ``--grad-accum`` micro-batches; adds to ``totals``; returns the summed loss.

        The sum is NaN or infinite when any micro-batch's loss was.
        """
        ddp = isinstance(self.trained, nn.parallel.DistributedDataParallel)
        self.optimizer.zero_grad(set_to_none=True)
        step_loss = totals.new_zeros(())
        for micro in range(self.config.grad_accum):
            images, labels = next(batches)
            images = normalize_batch(images.to(self.device, non_blocking=True), mean=self.mean, std=self.std,
                                     channels_last=bool(self.config.channels_last))
            labels = labels.to(self.device, non_blocking=True)
            targets = labels
            if self.mixing is not None:
                images, targets = self.mixing(images, labels)  # targets: class probabilities
            # Gradients cross the network only on the last micro-batch of a step.
            last = micro == self.config.grad_accum - 1
            with contextlib.nullcontext() if last or not ddp else self.trained.no_sync():  # type: ignore[operator]
                logits = forward(self.trained, images, self.amp_dtype)
                loss = self.criterion(logits.float(), targets)
                self.scaler.scale(loss / self.config.grad_accum).backward()
            truth = targets.argmax(1) if targets.ndim == 2 else labels
            correct = (logits.detach().argmax(1) == truth).sum()
            totals += torch.stack([loss.detach().double() * labels.numel(), correct.double(),
                                   totals.new_tensor(labels.numel())])
            step_loss += loss.detach()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return step_loss

    def check_weights(self, epoch: int) -> None:
        """Refuse to go on (or save) with weights or statistics that are NaN or infinite."""
        _check_finite_weights(self.model, where=f"epoch {epoch + 1}", config=self.config)

    def evaluate_epoch(self, epoch: int) -> dict[str, Any]:
        """Evaluate on the selection split (validation, or test under test-set selection), and the EMA beside.

        Raises:
            TrainingDivergedError: the evaluation loss is not finite.
        """
        split = self.data.selection_split
        scores = self.evaluate(self.model, self.selection_loader, desc=split).metrics(split)
        if not math.isfinite(scores[f"{split}_loss"]):
            raise _diverged(f"the {split} loss is {scores[f'{split}_loss']} after epoch {epoch + 1}", self.config)
        if self.ema is not None:
            averaged = self.evaluate(self.ema.module, self.selection_loader, desc=f"{split} EMA")
            scores.update({f"{split}_top1_ema": averaged.top1, f"{split}_loss_ema": averaged.loss})
        return scores

    def end_epoch(self, row: dict[str, Any], *, started: float) -> None:
        """Record the epoch's metrics ``row``: the best weights, the checkpoint, metrics.jsonl, the log line."""
        split = self.data.selection_split
        self.history.append(row)
        # A tie goes to the later epoch, which has trained longer (small validation splits tie often).
        improved = row[f"{split}_top1"] >= self.best.top1
        if improved:
            self.best = _Best(top1=row[f"{split}_top1"], epoch=row["epoch"])
        if self.dist.is_main:
            if improved:
                save_model_weights(self.model, self.out / "best.safetensors", metadata=self._weights_metadata(
                    selected_on=split, top1=self.best.top1, top1_on=split, epoch=self.best.epoch))
            save_checkpoint(self.out / "checkpoint.pt", self._checkpoint_state(started))
            self.outputs.append_metrics(row)
        ema = f" (EMA {row[f'{split}_top1_ema']:.2f}%)" if self.ema is not None else ""
        if self.dist.is_main:
            logger.info("epoch %d/%d  loss %.3f  train %.2f%%  %s %.2f%%%s  %.1f s  %.0f img/s", row["epoch"],
                        self.config.epochs, row["train_loss"], row["train_top1"], split, row[f"{split}_top1"], ema,
                        row["epoch_s"], row["images_per_s"])
            if self.stopped_early:
                logger.info("early stop after epoch %d: no better %s top-1 than %.2f%% for %d epochs "
                            "(--early-stop-patience %d)", row["epoch"], split, self.best.top1,
                            self.config.early_stop_patience, self.config.early_stop_patience)

    def finish(self, *, started: float) -> dict[str, Any]:
        """Evaluate the test split on the final, the selected and the averaged weights; write the summary."""
        test_loader = self._eval_loader(self.data.test)
        final = self.evaluate(self.model, test_loader, desc="test", keep_predictions=True)
        self._write_test_outputs(final)
        errors = self.analyse_errors(final)
        selected = self._test_selected(final, test_loader)  # loads the selected weights: after the analysis
        averaged = None
        if self.ema is not None:
            averaged = self.evaluate(self.ema.module, test_loader, desc="test EMA")
            if self.dist.is_main:
                save_model_weights(self.ema.module, self.out / "ema.safetensors", metadata=self._weights_metadata(
                    selected_on="final epoch (weight average)", top1=averaged.top1, top1_on="test",
                    epoch=len(self.history)))
        summary = {**self._summary(final, selected, averaged, started=started), **errors}
        self.outputs.plot_curves(self.history, protocol=self.data.protocol, selected_epoch=self.best.epoch)
        self.outputs.write_json("summary.json", summary)
        return summary

    def analyse_errors(self, final: Evaluation) -> dict[str, Any]:
        """Where the final weights fail and where they look, on the main process.

        Writes ``confusion.png``/``.csv``, ``confused_pairs.csv`` and ``cam/`` (Grad-CAM
        overlays with the ground-truth boxes) with
        :func:`~resnetzoo.recipes.finetune.analysis.write_error_analysis`.

        Returns:
            For ``summary.json``: the pointing-game score (share of test images whose
            true-class Grad-CAM peak falls in the object's box, in percent), its 95 %
            interval, the images it was measured on and a centre-point baseline; None
            values where the data set has no boxes. Empty with ``--no-error-analysis``
            and on the other processes.
        """
        if not self.dist.is_main or not self.config.error_analysis:
            return {}
        test = self.data.test
        boxes = None
        if self.data.image_set.has_boxes and not self.config.bbox_crop:
            corners = (test.box_in_input(i, crop=self.config.img_size) for i in range(len(test)))
            boxes = [None if c is None else (c[0], c[1], c[2] - c[0], c[3] - c[1]) for c in corners]
        result = write_error_analysis(
            self.out, model=self.model, images=test, labels=test.targets, predictions=final.predictions,
            classes=self.classes, image_ids=[record.key for record in test.records], mean=self.mean, std=self.std,
            boxes=boxes, num_cams=self.config.cam_images, seed=self.config.seed, overwrite=True,
            note=(f"test-set selection: this run chose its epoch on these test images (epoch {self.best.epoch}); "
                  f"accuracies chosen so are optimistic" if self.data.selection_split == "test" else None),
        )
        return result.summary()

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, model: nn.Module, loader: torch.utils.data.DataLoader, *, desc: str,
                 keep_predictions: bool = False) -> Evaluation:
        """:func:`~resnetzoo.recipes.finetune.evaluation.evaluate` with this run's settings."""
        if self.dist.enabled:  # every process evaluates exactly the model the main process saves
            for buffer in model.buffers():
                torch_dist.broadcast(buffer, src=0)
        return evaluate(model, loader, num_classes=len(self.classes), device=self.device, mean=self.mean,
                        std=self.std, amp_dtype=self.amp_dtype, channels_last=bool(self.config.channels_last),
                        progress=self.show_progress, distributed=self.dist.enabled,
                        keep_predictions=keep_predictions, desc=desc)

    def _test_selected(self, final: Evaluation, test_loader: torch.utils.data.DataLoader) -> float:
        """Test top-1 of the selected epoch's weights (under test-set selection: its score, measured on test)."""
        if self.data.selection_split == "test":
            return self.best.top1
        if self.best.epoch == len(self.history):
            return final.top1  # the final weights are the selected ones
        if self.dist.enabled:
            torch_dist.barrier()  # best.safetensors is written by the main process
        best, _ = read_checkpoint(self.out / "best.safetensors")
        self.model.load_state_dict(best, strict=True)  # the names this run saved
        return self.evaluate(self.model, test_loader, desc="test selected").top1

    def _write_test_outputs(self, final: Evaluation) -> None:
        self.outputs.write_per_class("per_class_accuracy.csv", self.classes, final.per_class_correct,
                                     final.per_class_total)
        self.outputs.write_predictions("predictions.csv", self.data.test.records, classes=self.classes,
                                       predictions=final.predictions or [], confidences=final.confidences or [],
                                       root=self.data.image_set.root, protocol=self.data.protocol)

    # ------------------------------------------------------------------ helpers
    def _eval_loader(self, dataset: ImageDataset) -> torch.utils.data.DataLoader:
        return eval_loader(dataset, dist=self.dist, workers=self.config.workers or 0, seed=self.config.seed,
                           device=self.device, batch_size=self._micro_batch_size())

    def _micro_batch_size(self) -> int:
        parts = self.dist.world_size * self.config.grad_accum
        if self.config.batch_size % parts:
            raise ConfigError(
                f"--batch-size {self.config.batch_size} must be divisible by processes x --grad-accum "
                f"({self.dist.world_size} x {self.config.grad_accum} = {parts}): it is the global batch per step"
            )
        return self.config.batch_size // parts

    def _use_class_order(self, classes: list[str]) -> None:
        source = str(self.out / "checkpoint.pt")
        for dataset in filter(None, (self.data.train, self.data.val, self.data.test)):
            dataset.use_class_order(classes, source=source)

    def _stop_if_diverged(self, first_bad: torch.Tensor, *, desc: str) -> None:
        """Raise on every process at once if any saw a loss that is not finite."""
        if self.dist.enabled:  # every process must stop together, or the others wait forever
            first_bad = first_bad.clone()
            torch_dist.all_reduce(first_bad, op=torch_dist.ReduceOp.MIN)
        step = int(first_bad.item())
        if step < self.steps_per_epoch:
            raise _diverged(f"the training loss is not finite at {desc}, step {step + 1} of {self.steps_per_epoch}",
                            self.config)

    def _wrap(self, model: nn.Module) -> nn.Module:
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = not self.config.deterministic
        if self.config.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        if self.dist.enabled:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.config.compile:
            model = torch.compile(model)  # type: ignore[assignment]
        return model

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        if self.ema is not None and checkpoint.get("ema") is not None:
            self.ema.load_state_dict(checkpoint["ema"])
        self.history = list(checkpoint["history"])
        self.best = _Best(**checkpoint["best"])
        # How the recipe's settings were chosen is the checkpoint's; where it runs is this call's.
        runtime = {k: v for k, v in self.settings_chosen.items() if k in RUNTIME_FIELDS}
        self.settings_chosen = {**checkpoint.get("settings_chosen", {}), **runtime}
        self.start_epoch, self.elapsed_before = checkpoint["epoch"], checkpoint["elapsed_s"]

    def _checkpoint_state(self, started: float) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT, "epoch": len(self.history), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "ema": self.ema.state_dict() if self.ema is not None else None,
            "config": self.config.to_dict(), "classes": list(self.classes), "mean": self.mean, "std": self.std,
            "best": dataclasses.asdict(self.best), "history": self.history, "settings_chosen": self.settings_chosen,
            "elapsed_s": self.elapsed_before + time.perf_counter() - started,
        }

    def _weights_metadata(self, *, selected_on: str, top1: float, top1_on: str, epoch: int) -> dict[str, str]:
        return {
            "dataset": self.data.image_set.name, "num_classes": str(len(self.classes)),
            "classes": json.dumps(list(self.classes)), "mean": json.dumps(self.mean), "std": json.dumps(self.std),
            "img_size": str(self.config.img_size), "resize": str(self.config.resize),
            "resize_mode": self.config.resize_mode, "bbox_crop": str(self.config.bbox_crop),
            "protocol": self.data.protocol, "selected_on": selected_on, f"{top1_on}_top1": f"{top1:.4f}",
            "epoch": str(epoch), "recipe": "resnetzoo.recipes.finetune",
        }

    def _log_start(self) -> None:
        if not self.dist.is_main:
            return
        val = len(self.data.val) if self.data.val is not None else 0
        logger.info("%s on %s: %s, %d train / %d validation / %d test images, %d classes; %s; %d steps/epoch of %d "
                    "images, lr %g (head x%g), BatchNorm %s, %s", self.config.arch, self.device,
                    self.data.image_set.name, len(self.train_set), val, len(self.data.test), len(self.classes),
                    self.data.protocol, self.steps_per_epoch, self.config.batch_size, self.config.lr,
                    self.config.head_lr_mult, self.config.bn, f"AMP {self.amp_dtype}" if self.amp_dtype else "fp32")
        for name, why in self.settings_chosen.items():
            logger.info("--%s %s", name.replace("_", "-"), why)

    def _summary(self, final: Evaluation, selected: float, averaged: Evaluation | None, *,
                 started: float) -> dict[str, Any]:
        split = self.data.selection_split
        last = self.history[-1] if self.history else {}
        chosen = self.history[self.best.epoch - 1] if self.best.epoch else {}
        summary: dict[str, Any] = {
            "protocol": self.data.protocol,
            "selected_on": "validation" if split == "val" else "test (optimistic: the test set chose the epoch)",
            "test_top1": final.top1, "test_top1_selected": selected, "selected_epoch": self.best.epoch,
            "test_top5": final.top5, "test_loss": final.loss,
            "val_top1": last.get("val_top1"), "val_top1_selected": chosen.get("val_top1"),
        }
        if averaged is not None:
            summary.update(test_top1_ema=averaged.top1, val_top1_ema=last.get(f"{split}_top1_ema"))
        val = self.data.val
        summary.update({
            "dataset": self.data.image_set.name, "num_classes": len(self.classes),
            "train_images": len(self.train_set), "val_images": len(val) if val is not None else 0,
            "test_images": len(self.data.test), "test_images_excluded": self.data.test_excluded,
            "val_images_trained": self.data.val_trained,
            "val_fraction": self.config.val_fraction if self.data.protocol == "validation split" else None,
            "epochs": len(self.history), "early_stop_patience": self.config.early_stop_patience,
            "stopped_early_at_epoch": len(self.history) if self.stopped_early else None,
            "time_s": self.elapsed_before + time.perf_counter() - started,
            "images_per_s": float(np.median([row["images_per_s"] for row in self.history])) if self.history else None,
            "lr_rule": self._lr_rule(), "bn": self.config.bn, "settings_chosen": self.settings_chosen,
            "world_size": self.dist.world_size,
            "amp": str(self.amp_dtype).removeprefix("torch.") if self.amp_dtype else "off",
            **device_info(self.device), "versions": versions(), "config": self.config.to_dict(),
            "output_dir": str(self.out),
        })
        return summary

    def _lr_rule(self) -> dict[str, Any]:
        config = self.config
        return {"lr": config.lr, "head_lr": float(config.lr or 0) * float(config.head_lr_mult or 1),
                "rule": "linear" if "lr" in self.settings_chosen else "given (--lr)", "lr_base": config.lr_base,
                "lr_base_size": config.lr_base_size, "batch_size": config.batch_size,
                "warmup_epochs": config.warmup, "warmup_steps": round(config.warmup * self.steps_per_epoch),
                "steps_per_epoch": self.steps_per_epoch}


# ------------------------------------------------------------------------ evaluate only
def evaluate_checkpoint(config: FinetuneConfig, *, dist: Dist, device: torch.device) -> dict[str, Any]:
    """Evaluate ``config.eval_only`` (a ``checkpoint.pt`` or a ``.safetensors`` file) on the test split.

    The checkpoint's class list is compared with the data's: the same classes in another
    order are matched by name (with a warning), other classes are refused.

    Returns:
        The test metrics and where they came from, also written to ``eval.json``.
    """
    path = Path(config.eval_only)  # type: ignore[arg-type]
    out = Path(config.output_dir)

    def check_output() -> None:
        if (out / "eval.json").exists() and not config.overwrite:
            raise ConfigError(f"{out / 'eval.json'} exists; pass --overwrite to replace it or choose another --output-dir")
        check_writable(out)

    main_process_first(dist, check_output, others=lambda: None)
    classes: list[str] | None
    protocol = None
    if path.suffix == ".safetensors":
        state, meta = read_checkpoint(path)  # a truncated or corrupt file is a CheckpointError
        config = dataclasses.replace(config, arch=_checkpoint_arch(config, meta.get("arch"), path))
        for name, kind in (("img_size", int), ("resize", int), ("resize_mode", str)):
            if name in meta:
                config = dataclasses.replace(config, **{name: kind(meta[name])})
        if "bbox_crop" in meta:
            config = dataclasses.replace(config, bbox_crop=meta["bbox_crop"] == "True")
        default_mean, default_std = _normalisation(config)
        mean = json.loads(meta["mean"]) if "mean" in meta else default_mean
        std = json.loads(meta["std"]) if "std" in meta else default_std
        classes = json.loads(meta["classes"]) if "classes" in meta else None
        protocol = meta.get("protocol")
    else:
        checkpoint = load_checkpoint(path)
        saved = type(config).from_dict(checkpoint["config"])
        config = dataclasses.replace(config, arch=_checkpoint_arch(config, saved.arch, path), img_size=saved.img_size,
                                     resize=saved.resize,
                                     resize_mode=saved.resize_mode, bbox_crop=saved.bbox_crop)
        mean, std, state, classes = checkpoint["mean"], checkpoint["std"], checkpoint["model"], checkpoint["classes"]
    show = config.progress and dist.is_main and sys.stderr.isatty()
    data = prepare_data(config, dist, training=False, progress=show)
    if classes is None:
        logger.warning("%s records no class names: the class order of the data cannot be checked against it", path)
    else:
        data.test.use_class_order(list(classes), source=str(path))
    model = build_model(config, num_classes=len(data.test.classes), load_pretrained=False)
    load_weights(model, state, strict=True, ignore_head=False)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    loader = eval_loader(data.test, dist=dist, workers=config.workers or 0, seed=config.seed, device=device,
                         batch_size=max(1, config.batch_size // dist.world_size))
    result = evaluate(model, loader, num_classes=len(data.test.classes), device=device, mean=mean, std=std,
                      amp_dtype=_amp_dtype(config, device), channels_last=bool(config.channels_last), progress=show,
                      distributed=dist.enabled, keep_predictions=True, desc="test")
    summary = {**result.metrics("test"), "checkpoint": str(path), "trained_with": protocol,
               "dataset": data.image_set.name, "test_images_excluded": data.test_excluded, "arch": config.arch,
               **device_info(device), "world_size": dist.world_size, "versions": versions(),
               "config": config.to_dict()}
    outputs = Outputs(out, enabled=dist.is_main)
    outputs.write_json("eval.json", summary)
    outputs.write_per_class("eval_per_class_accuracy.csv", data.test.classes, result.per_class_correct,
                            result.per_class_total)
    outputs.write_predictions("eval_predictions.csv", data.test.records, classes=data.test.classes,
                              predictions=result.predictions or [], confidences=result.confidences or [],
                              root=data.image_set.root, protocol=protocol or "")
    if dist.is_main:
        logger.info("%s: test top-1 %.2f %%, top-5 %.2f %% on %d images", path, result.top1, result.top5,
                    result.images)
    return summary


def _checkpoint_arch(config: FinetuneConfig, saved: str | None, path: Path) -> str:
    """The architecture to evaluate: the checkpoint's; an ``--arch`` given must name the same one."""
    if saved is None:
        if config.arch is None:
            raise ConfigError(f"--eval-only {path} records no architecture; name it with --arch")
        return config.arch
    if config.arch is not None and config.arch != saved:
        raise ConfigError(
            f"--eval-only {path} holds a {saved}, but --arch is {config.arch}; leave --arch out (or pass "
            f"--arch {saved}) to evaluate it, or give a {config.arch} checkpoint"
        )
    return saved


# ------------------------------------------------------------------------- public API
def train(config: FinetuneConfig) -> dict[str, Any]:
    """Run the recipe: fine-tune (or, with ``config.eval_only``, only evaluate) and write the outputs.

    Reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (set by ``torchrun``) to run as one
    process of a DistributedDataParallel group, initialising the process group if it
    is not already (NCCL on CUDA, gloo on CPU).

    Args:
        config: the settings; validated first.

    Returns:
        The summary also written to ``summary.json``: ``protocol``, ``test_top1`` (final
        weights), ``test_top1_selected`` (the weights of ``selected_epoch``, chosen on the
        validation split), ``val_top1``, ``test_top5``, ``test_loss``, image counts,
        ``epochs``, ``time_s``, ``images_per_s`` (median over epochs), ``lr_rule``,
        ``bn``, ``settings_chosen``, ``world_size``, ``amp``, ``device``, ``versions``
        and the resolved ``config``. With ``eval_only``: the test metrics, also
        written to ``eval.json``.

    Raises:
        ConfigError: an invalid setting, an output folder holding an earlier run, or
            ``resume`` with no checkpoint.
        DatasetError: a missing or broken data set.
        ClassListMismatchError: ``resume`` or ``eval_only`` with a checkpoint trained on
            other classes.
        TrainingDivergedError: the loss or the weights became NaN or infinite.
        CheckpointError: an unreadable checkpoint.
        ConnectionError, ChecksumError: the download failed.
        OSError: an output could not be written (a full disk).
    """
    config.validate()
    dist = dist_from_env()
    device = resolve_device(config.device, dist)
    config, chosen = resolve_settings(config, device=device, world_size=dist.world_size,
                                      default_workers=default_workers(), default_threads=default_threads())
    if config.bn == "sync" and device.type != "cuda":
        raise ConfigError("--bn sync (--sync-bn) needs CUDA devices: PyTorch's SyncBatchNorm does not run on the CPU")
    with process_group(dist, device), _cpu_threads(config.threads if device.type == "cpu" else None):
        if config.eval_only is not None:
            return evaluate_checkpoint(config, dist=dist, device=device)
        return Run(config, dist=dist, device=device, settings_chosen=chosen).fit()


@contextlib.contextmanager
def _cpu_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` for the block, then set back (None: unchanged)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _describe_os_error(error: OSError) -> str:
    return describe_os_error(
        error,
        full_disk="free some space or choose another --output-dir / --cache-dir; files written before are intact "
        "(an interrupted training continues with --resume)",
        not_writable="choose a folder you can write to (--output-dir, --cache-dir, --data-root)",
    )


def main(argv: list[str] | None = None, *, config_class: type[FinetuneConfig] = FinetuneConfig,
         parser: argparse.ArgumentParser | None = None) -> int:
    """Command-line entry point: ``python -m resnetzoo.recipes.finetune [flags]``.

    Args:
        argv: arguments without the program name; None reads ``sys.argv``.
        config_class: the config class (a preset's subclass sets its defaults).
        parser: the parser (a preset's, with its name and examples); default
            ``build_parser(config_class)``.

    Returns:
        0 on success; 2 on a usage, setting or data error; 1 when the run failed (it
        diverged, or an output could not be written); 130 when interrupted. Errors
        are one line on stderr, never a traceback.
    """
    try:
        config = parse_config(argv, config_class=config_class, parser=parser or build_parser(config_class))
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
        _print_result(config, summary)
    return 0


def _print_result(config: FinetuneConfig, summary: dict[str, Any]) -> None:
    if config.eval_only is not None:
        print(f"test top-1 {summary['test_top1']:.2f} %, top-5 {summary['test_top5']:.2f} % "
              f"({summary['test_images']} images); details in {Path(config.output_dir) / 'eval.json'}")
        return
    if summary["protocol"] == "test-set selection":
        chosen = (f"epoch {summary['selected_epoch']} chosen on the test set: {summary['test_top1_selected']:.2f} %, "
                  f"optimistic")
    else:
        chosen = (f"epoch {summary['selected_epoch']} chosen on the {summary['protocol']} "
                  f"({summary['val_top1_selected']:.2f} %): test top-1 {summary['test_top1_selected']:.2f} %")
    stopped = (f" (stopped early: no better validation top-1 for {summary['early_stop_patience']} epochs)"
               if summary.get("stopped_early_at_epoch") else "")
    print(f"test top-1 {summary['test_top1']:.2f} % after {summary['epochs']} epochs{stopped}; {chosen}; "
          f"results in {summary['output_dir']}")
