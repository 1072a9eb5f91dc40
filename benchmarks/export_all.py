"""Export every registered architecture with resnetzoo.export and print one verification table.

    python benchmarks/export_all.py                       # every architecture, ONNX and .pt2, full sweep
    python benchmarks/export_all.py --models resnet18 resnet50d --formats onnx --quick

Each model is built at full width with its default initialisation and evaluated in
eval mode; ``resnetzoo.export`` traces it, writes it to a temporary folder and checks
the written file against the eager model over the shape sweep (batch {1, 3, 17} x
{224, 225, 448, 321x479}; ``--quick``: batch {1, 3} x {224, 321x479}). Writes
``export_all.md`` and ``export_all.json`` to ``--out``. Needs ``pip install
'resnetzoo[export]'`` for ONNX. A failure is a row of the table, not a crash.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [] if importlib.util.find_spec("resnetzoo") else [str(ROOT / "src")]

import resnetzoo  # noqa: E402
from resnetzoo.inference import cpu_features, export  # noqa: E402

QUICK_SWEEP = [(1, 224, 224), (3, 224, 224), (1, 321, 479), (3, 321, 479)]


def _write(rows: list[dict], out: Path, status: str) -> str:
    """Write ``export_all.md`` and ``export_all.json`` for the rows so far; return the table."""
    lines = [
        "| architecture | format | shapes within 1e-4 | worst relative difference | dimensions | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        worst = "—" if r["worst"] is None else f"{r['worst']:.1e}"
        seconds = "—" if r["seconds"] is None else f"{r['seconds']:.0f}"
        lines.append(f"| {r['arch']} | {r['format']} | {r['shapes']}{'' if r['ok'] else ' **FAILED** ' + r['error']} "
                     f"| {worst} | {r['dims']} | {seconds} |")
    header = (f"CPU features: {cpu_features()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
              f"{status}")
    table = header + "\n\n" + "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "export_all.md").write_text(table)
    (out / "export_all.json").write_text(json.dumps({"header": header, "rows": rows}, indent=1) + "\n")
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=None, help="architectures (default: every registered one)")
    p.add_argument("--formats", nargs="+", choices=("onnx", "pt2"), default=["onnx", "pt2"])
    p.add_argument("--quick", action="store_true", help="a 4-shape sweep instead of the 12-shape one")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="output folder")
    args = p.parse_args(argv)
    models = args.models or resnetzoo.list_models()
    rows = []
    started = time.perf_counter()
    for arch in models:
        torch.manual_seed(0)
        model = resnetzoo.create_model(arch).eval()
        for fmt in args.formats:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    report = export(model, Path(tmp) / f"{arch}.{fmt}", format=fmt,
                                    check_shapes=QUICK_SWEEP if args.quick else None)
                except Exception as err:  # reported in the table
                    failed = getattr(err, "report", None)
                    rows.append({"arch": arch, "format": fmt, "ok": False,
                                 "shapes": f"{sum(c.ok for c in failed.checks)}/{len(failed.checks)}" if failed else "—",
                                 "worst": failed.max_rel if failed else None, "dims": "",
                                 "seconds": None, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"})
                else:
                    rows.append({"arch": arch, "format": fmt, "ok": report.ok,
                                 "shapes": f"{sum(c.ok for c in report.checks)}/{len(report.checks)}",
                                 "worst": report.max_rel, "seconds": report.seconds, "error": "",
                                 "dims": ", ".join(f"{d.name} {'symbolic' if d.symbolic else 'FIXED'}"
                                                   + (f" (rejects {d.rejected})" if d.rejected else "")
                                                   for d in report.dimensions)})
            row = rows[-1]
            print(f"{arch} {fmt}: {'ok' if row['ok'] else 'FAILED'} {row['shapes']} {row['error']}", file=sys.stderr)
            _write(rows, args.out, "in progress")  # an interrupted run keeps what it measured
    table = _write(rows, args.out, f"{len(rows)} exports in {time.perf_counter() - started:.0f} s")
    print(table)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
