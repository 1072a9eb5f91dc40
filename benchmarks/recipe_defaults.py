"""Do the recipe's defaults fit a small run from scratch? Test accuracy next to a bare loop's, on real scans.

The data are scikit-learn's handwritten digits (1,797 real 8 x 8 scans of 10 digits,
shipped inside scikit-learn: no download), enlarged to 40 x 40 JPEG files in class
folders, 25 % of each digit held out as the test set. Three runs train ResNet-18 from
scratch at 32 px for ``--epochs`` epochs with the same SGD (lr, momentum 0.9, weight
decay 5e-4, label smoothing 0.1, batch 64) and report test top-1:

1. the recipe with its defaults (``--dataset imagefolder:...``): the head learning-rate
   multiplier, crop padding and resize follow the run (1, 1 px, 37 px at 32 px from
   scratch), a warm-up of 5 % and a cosine decay, 10 % of the training images held out
   to choose the epoch;
2. the recipe with the settings meant for a pretrained ResNet-50 at 448 px, which it
   used to apply to every run: ``--head-lr-mult 10 --crop-padding 8 --resize 37``;
3. a bare torchvision loop: ``ImageFolder``, ``Resize(37) -> RandomCrop(32, padding=1)
   -> RandomHorizontalFlip -> ToTensor -> Normalize``, ``torchvision.models.resnet18``,
   a constant learning rate.

    python benchmarks/recipe_defaults.py                # ~3 min on 2 CPU cores
    python benchmarks/recipe_defaults.py --epochs 5 --json result.json

Needs scikit-learn (``pip install scikit-learn``) for the digits.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine_info  # noqa: E402  (a sibling file, not a package)

__all__ = ["main"]


def write_digits(root: Path, *, size: int = 40, test_share: float = 0.25, seed: int = 0) -> Path:
    """scikit-learn's digits as ``root/train/<digit>/*.jpg`` and ``root/test/<digit>/*.jpg``."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(digits.target.tolist()):
        by_class.setdefault(label, []).append(index)
    for label, indices in by_class.items():
        rng.shuffle(indices)
        cut = round(test_share * len(indices))
        for split, chosen in (("test", indices[:cut]), ("train", indices[cut:])):
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for index in chosen:
                pixels = (digits.images[index] * (255.0 / 16.0)).astype(np.uint8)
                image = Image.fromarray(pixels, mode="L").resize((size, size), Image.BILINEAR).convert("RGB")
                image.save(folder / f"{index:04d}.jpg", quality=95)
    return root


def _bare_run(root: Path, *, epochs: int, lr: float, batch_size: int) -> float:
    import torchvision
    from torchvision import transforms

    torch.manual_seed(0)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    train_set = torchvision.datasets.ImageFolder(str(root / "train"), transform=transforms.Compose([
        transforms.Resize((37, 37)), transforms.RandomCrop(32, padding=1), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(mean, std)]))
    test_set = torchvision.datasets.ImageFolder(str(root / "test"), transform=transforms.Compose([
        transforms.Resize((37, 37)), transforms.CenterCrop(32), transforms.ToTensor(), transforms.Normalize(mean, std)]))
    model = torchvision.models.resnet18(num_classes=len(train_set.classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True)
    for _ in range(epochs):
        model.train()
        for images, labels in loader:
            optimizer.zero_grad(set_to_none=True)
            criterion(model(images), labels).backward()
            optimizer.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in torch.utils.data.DataLoader(test_set, batch_size=256):
            correct += int((model(images).argmax(1) == labels).sum())
    return 100.0 * correct / len(test_set)


def _recipe_run(root: Path, out: Path, *, epochs: int, lr: float, batch_size: int, **settings: Any) -> dict[str, Any]:
    from resnetzoo.recipes.finetune import FinetuneConfig, train

    summary = train(FinetuneConfig(
        dataset=f"imagefolder:{root}", arch="resnet18", pretrained="none", img_size=32, epochs=epochs,
        batch_size=batch_size, lr=lr, workers=0, output_dir=str(out), progress=False, **settings))
    return {"test_top1": summary["test_top1"], "test_top1_selected": summary["test_top1_selected"],
            "settings_chosen": summary["settings_chosen"]}


def main(argv: list[str] | None = None) -> int:
    """Train the three runs and print their test top-1; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="training epochs of each run (default: 3)")
    parser.add_argument("--lr", type=float, default=0.05, help="learning rate of every run (default: 0.05)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step (default: 64)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    try:
        import sklearn  # noqa: F401
    except ImportError:
        parser.error("the digits come with scikit-learn: pip install scikit-learn")
    from resnetzoo.recipes.finetune._distributed import default_threads

    # The bare loop gets the threads the recipe chooses: on a busy machine torch's default
    # (one per core) makes every operation wait for a descheduled thread.
    torch.set_num_threads(default_threads()[0])
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="recipe-defaults-") as tmp:
        root = write_digits(Path(tmp) / "digits")
        common = {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size}
        for name, run in (
            ("recipe (defaults that follow the run)", lambda: _recipe_run(root, Path(tmp) / "a", **common)),
            ("recipe (ResNet-50 @ 448 px settings)", lambda: _recipe_run(
                root, Path(tmp) / "b", head_lr_mult=10.0, crop_padding=8, resize=37, **common)),
            ("bare torchvision loop", lambda: {"test_top1": _bare_run(root, **common)}),
        ):
            started = time.perf_counter()
            results[name] = {**run(), "time_s": time.perf_counter() - started}
    print(f"ResNet-18 from scratch, 32 px, {args.epochs} epochs, lr {args.lr}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads; scikit-learn digits (1,347 train / 450 test)")
    for name, result in results.items():
        chosen = f", chosen epoch {result['test_top1_selected']:.1f} %" if "test_top1_selected" in result else ""
        print(f"  {name:40s} test top-1 {result['test_top1']:5.1f} %{chosen}  ({result['time_s']:.0f} s)")
    if args.json is not None:
        args.json.write_text(json.dumps({"results": results, "settings": vars(args) | {"json": None},
                                         "machine": machine_info(torch.device("cpu"))}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
