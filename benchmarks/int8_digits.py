"""int8 on real images: fine-tune with the recipe on scikit-learn's digits, then quantize, export and check.

    pip install scikit-learn 'resnetzoo[export,quantize]'
    python benchmarks/int8_digits.py                 # ~10 min on 2 CPU cores
    python benchmarks/int8_digits.py --epochs 3      # a quicker, less accurate model

scikit-learn ships the UCI handwritten digits: 1,797 real 8 x 8 grey-level scans of
ten classes. This script writes them as class folders (upscaled to 36 px, a stratified
75/25 train/test split), fine-tunes ResNet-18 on them from scratch with the recipe
(``python -m resnetzoo.recipes.finetune --dataset imagefolder:PATH``, 32 px crops), loads
the recipe's ``best.safetensors`` and then, as ``docs/deploy.md`` walks through:

- ``resnetzoo.quantize``: calibrated on 256 training images, checked on the 450 test
  images with their labels (top-1 agreement with float32, accuracy change);
- ``resnetzoo.export`` to ONNX, verified over the shape sweep.

It prints both reports and writes ``int8_digits.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [] if importlib.util.find_spec("resnetzoo") else [str(ROOT / "src")]

import resnetzoo  # noqa: E402
from resnetzoo.inference import Preprocessing  # noqa: E402
from resnetzoo.recipes.finetune.images import build_transforms, normalize_batch  # noqa: E402

SIZE, RESIZE = 32, 36


def write_digits_folders(root: Path, *, seed: int = 0) -> list[str]:
    """scikit-learn's digits as ``root/{train,test}/<class>/*.png``; returns the class names."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    indices = list(range(len(digits.target)))
    train, _ = train_test_split(indices, test_size=0.25, stratify=digits.target, random_state=seed)
    train = set(train)
    classes = [f"digit_{c}" for c in range(10)]
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        folder = root / ("train" if i in train else "test") / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        grey = Image.fromarray((image * (255 / 16)).astype("uint8"), mode="L").resize((RESIZE, RESIZE), Image.BILINEAR)
        grey.convert("RGB").save(folder / f"digit_{i:04d}.png")
    return classes


def batches(root: Path, split: str, classes: list[str], *, mean: list[float], std: list[float],
            limit: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(images, labels)`` batches of 64 through the recipe's evaluation transform, normalised."""
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    crop = build_transforms(train=False, img_size=SIZE)
    items = [(path, label) for label, name in enumerate(classes) for path in sorted((root / split / name).glob("*.png"))]
    random.Random(0).shuffle(items)  # every class in every batch (and in the first ``limit`` images)
    items = items[:limit] if limit is not None else items
    out = []
    for start in range(0, len(items), 64):
        chunk = items[start:start + 64]
        images = torch.stack([crop(pil_to_tensor(Image.open(path).convert("RGB"))) for path, _ in chunk])
        out.append((normalize_batch(images, mean=mean, std=std), torch.tensor([label for _, label in chunk])))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=8, help="recipe epochs (default 8)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="output folder")
    p.add_argument("--work", type=Path, default=None, help="keep the tree and the run here (default: a temp folder)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        tree, run = work / "digits", work / "run"
        classes = write_digits_folders(tree)
        subprocess.run([
            sys.executable, "-m", "resnetzoo.recipes.finetune", "--dataset", f"imagefolder:{tree}", "--arch", "resnet18",
            "--pretrained", "none", "--img-size", str(SIZE), "--resize", str(RESIZE), "--crop-padding", "4",
            "--epochs", str(args.epochs), "--batch-size", "64", "--lr", "0.1", "--head-lr-mult", "1", "--warmup-epochs", "1",
            "--device", "cpu", "--workers", "0", "--no-progress", "--output-dir", str(run), "--overwrite",
        ], check=True)
        model = resnetzoo.create_model("resnet18", num_classes=len(classes))
        resnetzoo.load_weights(model, run / "best.safetensors", strict=True)
        from safetensors import safe_open

        with safe_open(str(run / "best.safetensors"), "pt") as handle:  # the recipe's classes and normalisation
            meta = handle.metadata()
        mean, std = json.loads(meta["mean"]), json.loads(meta["std"])
        model.eval()
        calibration = [images for images, _ in batches(tree, "train", classes, mean=mean, std=std, limit=256)]
        held_out = batches(tree, "test", classes, mean=mean, std=std)
        quantized, qreport = resnetzoo.quantize(model, calibration, eval_data=held_out, allow_slower=True)
        print(qreport)
        ereport = resnetzoo.export(model, work / "digits.onnx", class_names=classes, overwrite=True,
                                   preprocessing=Preprocessing.from_metadata(meta))
        print(ereport)
        result = {
            "epochs": args.epochs, "recipe_metadata": meta,
            "quantization": {k: v for k, v in qreport.__dict__.items() if k not in ("layers",)},
            "outliers": list(qreport.outliers), "export": ereport.to_dict(),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "int8_digits.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 0 if qreport.agreement >= 99.0 and ereport.ok else 1


if __name__ == "__main__":
    sys.exit(main())
