"""Fine-tuning recipe, piece by piece: the validation split, the learning-rate rule and schedule, BatchNorm
policies, CutMix/MixUp, the weight average, and the settings chosen to fit the run."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from resnetzoo import ResNet
from resnetzoo.recipes.finetune import (
    ConfigError,
    FinetuneConfig,
    ImageRecord,
    ImageSet,
    resolve_settings,
)
from resnetzoo.recipes.finetune._batchnorm import apply_bn_policy, freeze_bn_statistics
from resnetzoo.recipes.finetune._distributed import (
    cpus_per_process,
    default_threads,
    default_workers,
)
from resnetzoo.recipes.finetune._ema import build_ema
from resnetzoo.recipes.finetune._mixing import build_mixing
from resnetzoo.recipes.finetune._optim import build_optimizer
from resnetzoo.recipes.finetune._splits import carve_validation, drop_excluded

CPU = torch.device("cpu")


def _tiny(num_classes: int = 3) -> ResNet:
    return ResNet(layers=(1, 1, 1, 1), widths=(8, 8, 8, 8), block="basic", num_classes=num_classes)


def _records(per_class: dict[int, int], *, split: str = "train") -> list[ImageRecord]:
    return [ImageRecord(key=f"{label}-{i}", path=Path(f"/d/{label}/{i}.jpg"), label=label, split=split)
            for label, count in per_class.items() for i in range(count)]


# ----------------------------------------------------------------------- validation split
def test_validation_split_is_stratified_seeded_and_order_independent() -> None:
    records = _records({0: 20, 1: 10, 2: 3, 3: 1})
    classes = ["a", "b", "c", "d"]
    train, val = carve_validation(records, classes=classes, fraction=0.1, seed=0)
    per_class = {label: sum(r.label == label for r in val) for label in range(4)}
    assert per_class == {0: 2, 1: 1, 2: 1, 3: 0}  # 10 %, at least one where a class has two, none from a single
    assert {r.key for r in train} | {r.key for r in val} == {r.key for r in records}
    assert not {r.key for r in train} & {r.key for r in val}
    again = carve_validation(list(reversed(records)), classes=classes, fraction=0.1, seed=0)[1]
    assert {r.key for r in again} == {r.key for r in val}  # not the order of the records
    # not the label numbering either: the same classes listed in another order
    relabelled = [dataclasses.replace(r, label=3 - r.label) for r in records]
    moved = carve_validation(relabelled, classes=classes[::-1], fraction=0.1, seed=0)[1]
    assert {r.key for r in moved} == {r.key for r in val}
    other_seed = carve_validation(records, classes=classes, fraction=0.1, seed=1)[1]
    assert {r.key for r in other_seed} != {r.key for r in val}


def test_exclude_test_list_drops_named_images_and_refuses_unknown_ones(tmp_path: Path) -> None:
    root = tmp_path / "CUB_200_2011"
    test = [ImageRecord(key=str(i), path=root / "images" / f"001.A/a_{i}.jpg", label=0, split="test")
            for i in range(1, 5)]
    image_set = ImageSet(name="cub200", root=root, classes=("A",), records=tuple(test))
    listing = tmp_path / "overlap.txt"
    listing.write_text("# test images also in ImageNet\n2\n001.A/a_3.jpg   # by path under images/\n\n")
    kept, dropped = drop_excluded(test, image_set=image_set, path=listing)
    assert [r.key for r in kept] == ["1", "4"] and dropped == 2
    listing.write_text("2\n17\n")
    with pytest.raises(ConfigError, match=r"overlap\.txt:2: '17' is not a test image"):
        drop_excluded(test, image_set=image_set, path=listing)


# ---------------------------------------------------------------- learning rate, schedule
def test_learning_rates_warm_up_then_follow_a_cosine_per_step() -> None:
    model = _tiny()
    optimizer, scheduler = build_optimizer(model, lr=0.1, head_lr_mult=10.0, momentum=0.9, nesterov=False,
                                           weight_decay=0.0, warmup_steps=10, total_steps=50)
    backbone, head = optimizer.param_groups
    assert {id(p) for p in head["params"]} == {id(p) for p in model.fc.parameters()}
    assert len(backbone["params"]) + len(head["params"]) == len(list(model.parameters()))
    lrs = []
    for _ in range(50):
        lrs.append((backbone["lr"], head["lr"]))
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx((0.01, 0.1))  # step 1 of a 10-step warm-up
    assert lrs[9] == pytest.approx((0.1, 1.0))  # warm-up done: the peak
    assert lrs[29] == pytest.approx((0.05, 0.5), rel=0.1)  # half-way through the cosine
    assert all(a[0] >= b[0] for a, b in zip(lrs[9:], lrs[10:], strict=False)) and lrs[-1][0] < 1e-3


def _resolve(config: FinetuneConfig, *, world_size: int = 1, device: torch.device = CPU):
    return resolve_settings(config, device=device, world_size=world_size, default_workers=2, default_threads=(2, ""))


def test_learning_rate_follows_the_global_batch_by_the_linear_rule() -> None:
    recipe, why = _resolve(FinetuneConfig())
    assert recipe.lr == pytest.approx(0.025) and "linear scaling rule" in why["lr"]  # 0.1 x 64 / 256, as published
    assert _resolve(FinetuneConfig(batch_size=512))[0].lr == pytest.approx(0.2)
    assert _resolve(FinetuneConfig(batch_size=512), world_size=8)[0].lr == pytest.approx(0.2)  # not the GPU count
    given, why = _resolve(FinetuneConfig(batch_size=512, lr=0.03))
    assert given.lr == 0.03 and "lr" not in why
    assert _resolve(FinetuneConfig(lr_base=0.2, lr_base_size=128))[0].lr == pytest.approx(0.1)


def test_defaults_follow_the_run() -> None:
    recipe, why = _resolve(FinetuneConfig())  # pretrained ResNet-50 at 448 px
    assert (recipe.head_lr_mult, recipe.resize, recipe.crop_padding, recipe.warmup_epochs) == (10.0, 512, 8, 5.0)
    small, why = _resolve(FinetuneConfig(pretrained="none", img_size=32, epochs=3))
    assert (small.head_lr_mult, small.resize, small.crop_padding) == (1.0, 37, 1)
    assert small.warmup_epochs == pytest.approx(0.15)
    assert "from scratch" in why["head_lr_mult"] and "scaled to --img-size 32" in why["crop_padding"]
    given, _ = _resolve(FinetuneConfig(pretrained="none", head_lr_mult=5.0, crop_padding=4, resize=40, img_size=32))
    assert (given.head_lr_mult, given.crop_padding, given.resize) == (5.0, 4, 40)  # given values are kept


def test_default_warm_up_fits_the_run() -> None:
    assert FinetuneConfig().warmup == 5.0  # the recipe: 5 of 100 epochs
    assert FinetuneConfig(epochs=1).warmup == pytest.approx(0.05)
    assert FinetuneConfig(epochs=300).warmup == 5.0
    assert FinetuneConfig(epochs=1, warmup_epochs=0.5).warmup == 0.5


# ---------------------------------------------------------------------------- BatchNorm
@pytest.mark.parametrize(
    "batch, world, device, pretrained, expected",
    [
        (64, 1, "cpu", "tv_in1k", "train"),  # the published recipe: 64 images in one BatchNorm batch
        (64, 8, "cuda", "tv_in1k", "sync"),  # 8 per GPU: synchronised over the 8 GPUs, 64 as published
        (8, 1, "cpu", "tv_in1k", "frozen"),  # 8 images, no other GPU: keep the pretrained statistics
        (8, 1, "cpu", "none", "train"),  # ... unless there are none to keep
        (32, 4, "cpu", "tv_in1k", "frozen"),  # SyncBatchNorm needs CUDA
    ],
)
def test_bn_auto_follows_the_images_per_process(batch, world, device, pretrained, expected) -> None:
    config = FinetuneConfig(batch_size=batch, pretrained=pretrained)
    resolved, why = _resolve(config, world_size=world, device=torch.device(device))
    assert resolved.bn == expected and why["bn"].startswith(expected)
    assert _resolve(dataclasses.replace(config, bn="train"), world_size=world)[0].bn == "train"  # given: kept
    assert _resolve(dataclasses.replace(config, sync_bn=True), world_size=world)[0].bn == "sync"  # the 0.1 flag


def test_frozen_bn_keeps_the_statistics_and_learns_scale_and_shift() -> None:
    torch.manual_seed(0)
    model = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    weight = model.bn1.weight.detach().clone()
    model.train()
    assert freeze_bn_statistics(model) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32) * 3 + 1), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # statistics kept
    assert not torch.equal(weight, model.bn1.weight)  # scale still learns
    model.train()  # without freezing again the statistics move
    model(torch.randn(4, 3, 32, 32) * 3 + 1)
    assert not torch.equal(before["bn1.running_mean"], model.state_dict()["bn1.running_mean"])


def test_sync_bn_converts_the_layers_and_needs_cuda() -> None:
    model = _tiny()
    synced = apply_bn_policy(model, "sync", distributed=True, device_type="cuda")
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
    assert not any(type(m) is nn.BatchNorm2d for m in synced.modules())
    assert apply_bn_policy(model, "sync", distributed=False, device_type="cuda") is model  # one process: nothing
    with pytest.raises(ConfigError, match="needs CUDA"):
        apply_bn_policy(model, "sync", distributed=True, device_type="cpu")


# ------------------------------------------------------------------------ CutMix, MixUp
def test_cutmix_pastes_a_box_and_mixes_labels_by_its_area() -> None:
    torch.manual_seed(3)
    mixing = build_mixing(cutmix_alpha=1.0, mixup_alpha=0.0, num_classes=4)
    images = torch.stack([torch.full((3, 16, 16), float(i)) for i in range(4)])  # image i is all i
    labels = torch.tensor([0, 1, 2, 3])
    mixed, targets = mixing(images, labels)
    assert targets.shape == (4, 4) and torch.allclose(targets.sum(1), torch.ones(4))
    for i in range(4):
        partner = (i - 1) % 4  # torchvision pairs each image with the previous one (batch.roll(1))
        pasted = (mixed[i, 0] == partner).float().mean()
        assert set(mixed[i].unique().tolist()) <= {float(i), float(partner)}
        assert targets[i, partner] == pytest.approx(pasted.item()) and targets[i, i] == pytest.approx(1 - pasted.item())


def test_mixup_blends_images_and_labels_with_one_weight() -> None:
    torch.manual_seed(0)
    mixing = build_mixing(cutmix_alpha=0.0, mixup_alpha=0.4, num_classes=3)
    images, labels = torch.rand(3, 3, 8, 8), torch.tensor([0, 1, 2])
    mixed, targets = mixing(images.clone(), labels)
    lam = targets[0, 0].item()
    assert torch.allclose(mixed, lam * images + (1 - lam) * images.roll(1, 0), atol=1e-6)
    assert torch.allclose(targets, lam * torch.eye(3) + (1 - lam) * torch.eye(3).roll(1, 0))
    assert build_mixing(cutmix_alpha=0.0, mixup_alpha=0.0, num_classes=3) is None
    assert build_mixing(cutmix_alpha=1.0, mixup_alpha=0.2, num_classes=3) is not None  # one of them per batch


# ---------------------------------------------------------------------- weight average
def test_ema_is_the_hand_computed_average() -> None:
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = build_ema(model, decay=0.5)
    seen = []
    for value in (2.0, 4.0):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update_parameters(model)
        seen.append(ema.module.weight[0, 0].item())
    # PyTorch's AveragedModel copies the weights at its first update: 2, then 0.5 x 2 + 0.5 x 4 = 3.
    assert seen == [2.0, 3.0]
    assert build_ema(model, decay=0.0) is None


# --------------------------------------------------------------------- the machine
def test_workers_and_threads_follow_the_cpus_this_process_may_use(monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert cpus_per_process() == 2 and default_workers() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert default_workers() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(96)), raising=False)
    assert default_workers() == 8  # 48 per process, at most 8
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.1, 0.1))
    assert default_threads()[0] == 2  # idle: every CPU
    monkeypatch.setattr(os, "getloadavg", lambda: (9.7, 8.0, 6.0))
    threads, why = default_threads()
    assert threads == 1 and "busy (load average 9.7)" in why  # OpenMP threads would wait on each other
    monkeypatch.delattr(os, "getloadavg")
    assert default_threads()[0] == 2  # no load average (Windows): every CPU
