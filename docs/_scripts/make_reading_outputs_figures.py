"""Make the pictures of ``docs/recipes/reading_outputs.md`` from a real run of the synthetic demo.

Runs ``python examples/cub200_finetune.py --synthetic`` (about half a minute on a CPU;
too long for every docs build, so the pictures are committed). The recipe writes the
error analysis itself after its final evaluation
(:func:`resnetzoo.recipes.finetune.analysis.write_error_analysis` on the final weights,
with each bounding box mapped through the same resize and centre crop as its image);
the files the page shows are copied into ``docs/_static/reading_outputs/``::

    python docs/_scripts/make_reading_outputs_figures.py            # run the demo, then copy
    python docs/_scripts/make_reading_outputs_figures.py --run-dir runs/demo   # reuse a run

It prints the numbers the page quotes.
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
        summary = json.loads((run_dir / "summary.json").read_text())
        print("test top-1 (final weights):", summary["test_top1"], "selected:", summary["test_top1_selected"])
        print("pointing game:", {k: v for k, v in summary.items() if k.startswith(("pointing", "cam_"))})
        index = (run_dir / "cam" / "index.csv").read_text().splitlines()
        first_wrong = next((line.split(",")[0] for line in index[1:] if "_wrong_" in line.split(",")[0]), None)
        STATIC.mkdir(parents=True, exist_ok=True)
        copies = {
            run_dir / "curves.png": "curves.png",
            run_dir / "confusion.png": "confusion.png",
            run_dir / "confused_pairs.csv": "confused_pairs.csv",
            run_dir / "cam" / "overview.png": "cam_overview.png",
        }
        if first_wrong:
            copies[run_dir / "cam" / first_wrong] = "cam_wrong.png"
        for source, name in copies.items():
            shutil.copyfile(source, STATIC / name)
            print(f"wrote {(STATIC / name).relative_to(ROOT)} ({(STATIC / name).stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
