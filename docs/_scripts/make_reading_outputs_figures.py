"""Make the pictures of ``docs/recipes/reading_outputs.md`` from a real run of the synthetic demo.

Runs ``python examples/cub200_finetune.py --synthetic`` (about a minute on a CPU;
too long for every docs build, so the pictures are committed), loads the run's
``best.safetensors``, predicts the demo's test images, maps each bounding box
through the same resize and centre crop as its image, and calls
:func:`resnetzoo.recipes.finetune.analysis.write_error_analysis`. The files the page
shows are copied into ``docs/_static/reading_outputs/``::

    python docs/_scripts/make_reading_outputs_figures.py            # run the demo, then analyse
    python docs/_scripts/make_reading_outputs_figures.py --run-dir runs/demo   # reuse a run

It prints the pointing-game score and the time each step took.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "docs" / "_static" / "reading_outputs"


def run_demo(run_dir: Path) -> None:
    command = [sys.executable, str(ROOT / "examples" / "cub200_finetune.py"), "--synthetic",
               "--output-dir", str(run_dir), "--overwrite"]
    print("$", " ".join(command[1:]))
    subprocess.run(command, check=True)


def analyse(run_dir: Path, out: Path) -> dict:
    import torch
    from PIL import Image
    from safetensors import safe_open
    from safetensors.torch import load_file
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    import resnetzoo
    from resnetzoo.recipes.cub200 import CUB200, build_transforms, normalize_batch
    from resnetzoo.recipes.finetune.analysis import write_error_analysis

    summary = json.loads((run_dir / "summary.json").read_text())
    config = summary["config"]
    with safe_open(run_dir / "best.safetensors", framework="pt") as f:
        meta = f.metadata()
    classes, mean, std = json.loads(meta["classes"]), json.loads(meta["mean"]), json.loads(meta["std"])
    model = resnetzoo.create_model(config["arch"], num_classes=len(classes))
    model.load_state_dict(load_file(run_dir / "best.safetensors"), strict=True)
    model.eval()

    test_transform = build_transforms(train=False, img_size=config["img_size"])
    test_set = CUB200(run_dir / "synthetic_data", split="test", transform=test_transform,
                      resize=config["resize"], resize_mode=config["resize_mode"])
    if test_set.classes != classes:
        raise SystemExit("the weights' class list differs from the data's: wrong run folder?")
    images = torch.stack([test_set[i][0] for i in range(len(test_set))])
    labels = torch.tensor(test_set.targets)
    with torch.no_grad():
        predictions = model(normalize_batch(images, mean=mean, std=std)).argmax(dim=1)

    # Each box goes through the same resize and centre crop as its image.
    resize = v2.Resize([config["resize"]] * 2 if config["resize_mode"] == "square" else config["resize"])
    boxes = []
    for record in test_set.records:
        with Image.open(test_set.tree.root / "images" / record.path) as img:
            width, height = img.size
        box = tv_tensors.BoundingBoxes([record.bbox], format="XYWH", canvas_size=(height, width))
        boxes.append(test_transform(resize(box))[0].tolist())

    start = time.perf_counter()
    result = write_error_analysis(
        out, model=model, images=images, labels=labels, predictions=predictions, classes=classes,
        image_ids=[r.image_id for r in test_set.records], mean=mean, std=std, boxes=boxes, overwrite=True,
    )
    print(f"write_error_analysis: {time.perf_counter() - start:.1f} s, {len(result.paths)} files")
    print("summary:", json.dumps(result.summary()))
    print(f"test top-1 {100.0 * float((predictions == labels).float().mean()):.1f} % on {len(labels)} images")
    return {"result": result, "top1": summary["test_top1"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, help="a finished synthetic demo run to reuse")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run_dir
        if run_dir is None:
            run_dir = Path(tmp) / "demo"
            start = time.perf_counter()
            run_demo(run_dir)
            print(f"demo run: {time.perf_counter() - start:.1f} s")
        out = Path(tmp) / "analysis"
        done = analyse(run_dir, out)
        index = (out / "cam" / "index.csv").read_text().splitlines()
        first_wrong = next((line.split(",")[0] for line in index[1:] if "_wrong_" in line.split(",")[0]), None)
        STATIC.mkdir(parents=True, exist_ok=True)
        copies = {
            run_dir / "curves.png": "curves.png",
            out / "confusion.png": "confusion.png",
            out / "confused_pairs.csv": "confused_pairs.csv",
            out / "cam" / "overview.png": "cam_overview.png",
        }
        if first_wrong:
            copies[out / "cam" / first_wrong] = "cam_wrong.png"
        for source, name in copies.items():
            shutil.copyfile(source, STATIC / name)
            print(f"wrote {(STATIC / name).relative_to(ROOT)} ({(STATIC / name).stat().st_size // 1024} KiB)")
        del done
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
