"""Does the fine-tuning recipe train as fast as a bare torchvision loop on the same data? (CPU or GPU)

Both train the same network on the same JPEG files, epoch for epoch, alternately:

1. the recipe: a :class:`resnetzoo.recipes.finetune.Run` on ``--dataset imagefolder:TREE``,
   driven epoch by epoch through its own methods (``begin_epoch``, ``train_epoch``), so
   everything the recipe does per step is in the time: seeded per-image augmentation,
   ``uint8`` batches normalised on the device, label smoothing, the schedule, the
   non-finite-loss check, the metric totals;
2. a bare loop as a user would write it: :class:`torchvision.datasets.ImageFolder` with
   ``Resize -> RandomCrop(padding) -> RandomHorizontalFlip -> ToTensor -> Normalize``, a
   shuffled :class:`~torch.utils.data.DataLoader`, ``torchvision.models.<arch>``, SGD with
   momentum and weight decay, cross-entropy with label smoothing.

Same images per step, same worker processes, same intra-op threads. The recipe's
validation share (10 %) is not trained on, so the rates are images per second. Each
round times one epoch of each (the order alternates); the ratio is the median of the
per-round ratios, so a burst of load from another process cancels. The first round
(worker start-up, allocator warm-up) is not counted.

    python benchmarks/recipe_throughput.py                          # ResNet-18, 32 px, CPU (~3 min on 2 cores)
    python benchmarks/recipe_throughput.py --arch resnet50 --img-size 64 --rounds 5
    python benchmarks/recipe_throughput.py --device cuda --img-size 224 --batch-size 64 --workers 8

The default is the setting the recipe was first found slower in: ResNet-18 from
scratch at 32 px, batch 64, on a CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine_info  # noqa: E402  (a sibling file, not a package)

__all__ = ["main"]


def _bare_epoch_runner(tree: Path, *, arch: str, num_classes: int, img_size: int, resize: int, padding: int,
                       batch_size: int, workers: int, lr: float, device: torch.device) -> Any:
    """One epoch of the bare loop per call; returns images per second of that epoch."""
    import torchvision
    from torchvision import transforms

    transform = transforms.Compose([
        transforms.Resize((resize, resize)), transforms.RandomCrop(img_size, padding=padding),
        transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    dataset = torchvision.datasets.ImageFolder(str(tree / "train"), transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                         num_workers=workers, persistent_workers=workers > 0,
                                         pin_memory=device.type == "cuda")
    model = getattr(torchvision.models, arch)(num_classes=num_classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def epoch() -> float:
        model.train()
        count = 0
        start = time.perf_counter()
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
            count += labels.numel()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return count / (time.perf_counter() - start)

    return epoch


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Alternate recipe and bare epochs; return the rates and their per-round ratios."""
    from resnetzoo.recipes.finetune import (
        FinetuneConfig,
        Run,
        make_synthetic_tree,
        resolve_settings,
    )
    from resnetzoo.recipes.finetune._distributed import Dist

    device = torch.device(args.device)
    side = round(args.img_size * 1.3)
    tree = make_synthetic_tree(workdir / "tree", num_classes=args.classes, train_per_class=args.images_per_class,
                               test_per_class=1, image_size=(round(side * 1.1), side), layout="imagefolder")
    config = FinetuneConfig(
        dataset=f"imagefolder:{tree}", arch=args.arch, pretrained="none", img_size=args.img_size,
        epochs=args.rounds + 1, batch_size=args.batch_size, lr=args.lr, warmup_epochs=0.0, workers=args.workers,
        threads=args.threads, device=str(device), output_dir=str(workdir / "run"), progress=False,
        official_counts=False, amp="off", channels_last=False,
    )
    config.validate()
    config, _ = resolve_settings(config, device=device, world_size=1, default_workers=args.workers)
    run = Run(config, dist=Dist(), device=device)
    bare = _bare_epoch_runner(tree, arch=args.arch, num_classes=args.classes, img_size=args.img_size,
                              resize=int(config.resize or args.img_size), padding=int(config.crop_padding or 0),
                              batch_size=args.batch_size, workers=args.workers, lr=float(config.lr), device=device)

    def recipe_epoch(epoch: int) -> float:
        run.begin_epoch(epoch)
        return float(run.train_epoch(epoch)["images_per_s"])

    rates: dict[str, list[float]] = {"recipe": [], "bare": []}
    for round_ in range(args.rounds + 1):  # round 0 warms both up and is not counted
        order = ("recipe", "bare") if round_ % 2 == 0 else ("bare", "recipe")
        for name in order:
            rate = recipe_epoch(round_) if name == "recipe" else bare()
            if round_:
                rates[name].append(rate)
    ratios = [r / b for r, b in zip(rates["recipe"], rates["bare"], strict=True)]
    return {
        "recipe_images_per_s": statistics.median(rates["recipe"]), "bare_images_per_s": statistics.median(rates["bare"]),
        "ratio": statistics.median(ratios), "ratios": ratios, "samples": rates,
        "recipe_train_images": len(run.train_set), "bare_train_images": args.classes * args.images_per_class,
    }


def main(argv: list[str] | None = None) -> int:
    """Measure and print both loops' images/s and their ratio; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet18", help="a torchvision/resnetzoo architecture (default: resnet18)")
    parser.add_argument("--img-size", type=int, default=32, help="crop size (default: 32)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step (default: 64)")
    parser.add_argument("--classes", type=int, default=10, help="classes of the generated tree (default: 10)")
    parser.add_argument("--images-per-class", type=int, default=64, help="training images per class (default: 64)")
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs of each loop (default: 5)")
    parser.add_argument("--workers", type=int, default=0, help="data-loading workers of both loops (default: 0)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads of both loops (default: the recipe's choice for this machine)")
    parser.add_argument("--lr", type=float, default=0.05, help="learning rate of both loops (default: 0.05)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.img_size < 16 or args.batch_size < 1:
        parser.error("--rounds must be >= 1, --img-size >= 16, --batch-size >= 1")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    if args.threads is None:
        from resnetzoo.recipes.finetune._distributed import default_threads

        args.threads = default_threads()[0]
    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with tempfile.TemporaryDirectory(prefix="recipe-throughput-") as tmp:
            result = measure(args, Path(tmp))
    finally:
        torch.set_num_threads(before)
    result.update(settings={k: v for k, v in vars(args).items() if k != "json"},
                  machine=machine_info(torch.device(args.device)))
    print(f"{args.arch} at {args.img_size} px, batch {args.batch_size}, {args.workers} workers, {args.threads} "
          f"threads, {args.device}; load average {result['machine']['load_average']}")
    print(f"  recipe (Run.train_epoch):        {result['recipe_images_per_s']:8.1f} img/s")
    print(f"  bare torchvision loop:           {result['bare_images_per_s']:8.1f} img/s")
    spread = f"{min(result['ratios']):.2f}-{max(result['ratios']):.2f}"
    print(f"  recipe / bare: {result['ratio']:.3f} (median of {args.rounds} rounds; {spread})")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0 if math.isfinite(result["ratio"]) else 1


if __name__ == "__main__":
    sys.exit(main())
