"""Does the fine-tuning recipe keep a GPU busy? Its training speed next to a bare loop's.

Runs, in one process:

1. the recipe itself (:func:`resnetzoo.recipes.cub200.train`, the CUB-200 preset of
   :mod:`resnetzoo.recipes.finetune`) on a generated CUB-layout tree of JPEG files with
   the decoded-image cache, ResNet-50 from scratch at ``--img-size`` (448), bf16
   autocast, channels-last, SGD, the validation split carved as in a real run, for
   about ``--steps`` optimizer steps spread over a few epochs; its images/s is the
   median over the epochs after the first (which pays for worker start-up and cuDNN
   tuning). The recipe's own flags (``--bn``, ``--ema-decay``, ``--cutmix-alpha``,
   ``--mixup-alpha``, ``--val-fraction``, ``--early-stop-patience``, ``--compile``) pass through, so each trick's
   cost can be measured; the settings the run chose (BatchNorm policy, learning-rate
   rule, workers) are printed and kept in the JSON;
2. a bare loop over torchvision's ``resnet50`` with the same settings on random
   tensors already on the GPU: no data loading at all, the upper bound.

and prints both and their ratio (goal: >= 0.95) with the card's name. On an H100 it
finishes in well under 5 minutes. Without a CUDA device it says so and exits with
status 0. ``--device cpu --steps 2 --img-size 64`` runs both loops on the CPU as a
smoke test.

    python benchmarks/gpu_recipe_check.py                 # on a CUDA machine
    python benchmarks/gpu_recipe_check.py --ema-decay 0.999 --cutmix-alpha 1.0 --json result.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["main"]


def _bare_images_per_s(
    *, device: torch.device, steps: int, warmup: int, batch_size: int, img_size: int, amp: torch.dtype | None,
    channels_last: bool,
) -> float:
    import torchvision

    model = torchvision.models.resnet50(num_classes=200).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.025, momentum=0.9, weight_decay=5e-4)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    images = torch.randn(batch_size, 3, img_size, img_size, device=device).to(memory_format=memory_format)
    labels = torch.randint(0, 200, (batch_size,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = criterion(model(images).float(), labels)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * batch_size / (time.perf_counter() - start)


def _recipe_images_per_s(
    *, device: torch.device, steps: int, batch_size: int, img_size: int, workers: int, workdir: Path,
    tricks: dict[str, Any],
) -> dict[str, Any]:
    from resnetzoo.recipes.cub200 import CUB200Config, make_synthetic_tree, train

    epochs = max(2, min(8, steps))
    steps_per_epoch = math.ceil(steps / epochs)
    val_fraction = tricks["val_fraction"]
    images = math.ceil(steps_per_epoch * batch_size / (1 - val_fraction)) + batch_size  # room for the held-out share
    num_classes = max(1, min(20, images // 2))  # two or more images per class: one can be held out
    resize = round(img_size * 512 / 448)
    started = time.perf_counter()
    tree = make_synthetic_tree(
        workdir / "tree", num_classes=num_classes, train_per_class=math.ceil(images / num_classes),
        test_per_class=1, image_size=(round(resize * 1.1), round(resize * 0.85)),
    )
    generated = time.perf_counter() - started
    config = CUB200Config(
        data_root=str(tree), arch="resnet50", pretrained="none", epochs=epochs, batch_size=batch_size,
        img_size=img_size, warmup_epochs=0.0, cache_dir=str(workdir / "cache"), workers=workers,
        device=str(device), output_dir=str(workdir / "run"), overwrite=True, progress=False, official_counts=False,
        **tricks,
    )
    summary = train(config)
    rows = [json.loads(line) for line in (workdir / "run" / "metrics.jsonl").read_text().splitlines()]
    later = sorted(row["images_per_s"] for row in rows[1:])
    return {
        "recipe_images_per_s": later[len(later) // 2],
        "recipe_steps": sum(row["train_images"] for row in rows) // batch_size,
        "recipe_epochs": epochs,
        "recipe_first_epoch_images_per_s": rows[0]["images_per_s"],
        "recipe_time_s": summary["time_s"],
        "recipe_protocol": summary["protocol"],
        "recipe_stopped_early_at_epoch": summary["stopped_early_at_epoch"],
        "recipe_bn": summary["bn"],
        "recipe_lr_rule": summary["lr_rule"],
        "recipe_settings_chosen": summary["settings_chosen"],
        "tricks": tricks,
        "tree_generation_s": generated,
        "amp": summary["amp"],
    }


def main(argv: list[str] | None = None) -> int:
    """Measure and print both loops' images/s; return the exit status (0, also without CUDA)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default: cuda)")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per loop (default: 300)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step (default: 64)")
    parser.add_argument("--img-size", type=int, default=448, help="crop size (default: 448)")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1), help="data workers")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the tree, cache and run (default: temp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    recipe = parser.add_argument_group("the recipe's flags (default: the published recipe)")
    recipe.add_argument("--bn", default="auto", choices=("auto", "train", "frozen", "sync"), help="BatchNorm policy")
    recipe.add_argument("--ema-decay", type=float, default=0.0, help="weight average decay (0: off)")
    recipe.add_argument("--cutmix-alpha", type=float, default=0.0, help="CutMix (0: off)")
    recipe.add_argument("--mixup-alpha", type=float, default=0.0, help="MixUp (0: off)")
    recipe.add_argument("--val-fraction", type=float, default=0.1, help="validation share (default: 0.1)")
    recipe.add_argument("--early-stop-patience", type=int, default=0,
                        help="stop after N epochs without a better validation top-1 (0: off)")
    recipe.add_argument("--compile", action="store_true", help="torch.compile the recipe's model")
    args = parser.parse_args(argv)
    if args.steps < 2 or args.batch_size < 1 or args.img_size < 32:
        parser.error("--steps must be >= 2, --batch-size >= 1 and --img-size >= 32")

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: nothing to measure. For a CPU smoke test of both loops run\n"
              "  python benchmarks/gpu_recipe_check.py --device cpu --steps 2 --img-size 64")
        return 0
    on_gpu = device.type == "cuda"
    amp = torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else (torch.float16 if on_gpu else None)
    if on_gpu:
        torch.backends.cudnn.benchmark = True

    with tempfile.TemporaryDirectory(prefix="cub200-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        tricks = {"bn": args.bn, "ema_decay": args.ema_decay, "cutmix_alpha": args.cutmix_alpha,
                  "mixup_alpha": args.mixup_alpha, "val_fraction": args.val_fraction,
                  "early_stop_patience": args.early_stop_patience, "compile": args.compile}
        result = _recipe_images_per_s(device=device, steps=args.steps, batch_size=args.batch_size,
                                      img_size=args.img_size, workers=args.workers, workdir=workdir, tricks=tricks)
    result["bare_images_per_s"] = _bare_images_per_s(
        device=device, steps=args.steps, warmup=min(20, args.steps), batch_size=args.batch_size,
        img_size=args.img_size, amp=amp, channels_last=on_gpu,
    )
    result.update(
        device=torch.cuda.get_device_name(device) if on_gpu else "cpu", torch=torch.__version__,
        batch_size=args.batch_size, img_size=args.img_size, workers=args.workers,
        ratio=result["recipe_images_per_s"] / result["bare_images_per_s"],
    )
    print(f"{result['device']}, torch {result['torch']}, batch {args.batch_size}, {args.img_size} px, "
          f"{result['amp']}, channels-last {'on' if on_gpu else 'off'}, {args.workers} workers")
    print(f"  recipe loop (cached JPEG tree, loader, eval excluded): {result['recipe_images_per_s']:8.1f} img/s "
          f"(median of epochs 2-{result['recipe_epochs']}, {result['recipe_steps']} steps)")
    print(f"  bare torchvision resnet50 loop (tensors on device):    {result['bare_images_per_s']:8.1f} img/s "
          f"({args.steps} steps)")
    print(f"  recipe / bare: {result['ratio']:.2f} (goal: >= 0.95)")
    print(f"  recipe settings: BatchNorm {result['recipe_bn']}, lr {result['recipe_lr_rule']['lr']:g} "
          f"({result['recipe_lr_rule']['rule']}), {result['recipe_protocol']}, tricks {result['tricks']}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
