"""How long the ``resnetzoo`` command takes, as a user sees it: a fresh process per call.

    python benchmarks/cli_latency.py                 # 5 rounds of every command
    python benchmarks/cli_latency.py --rounds 9 --json cli.json

Each row is a new Python process running what the installed ``resnetzoo`` script runs
(``from resnetzoo.cli import main; sys.exit(main())``), timed from start to exit:
``--help``, ``--version``, ``list``, and ``inspect`` on a ResNet-50 and a ResNet-152
checkpoint (torchvision's names, ``torch.save`` format, written to a temporary folder
first). The references are ``python -c "import resnetzoo"`` (the package root alone,
which loads no torch), ``python -c "import torch"`` and ``python -c "import resnetzoo,
torch"``: ``inspect`` has to import torch and read the file, so the last is the floor
it can approach. Commands are timed in turn, round after round (``_timing.alternate``),
so a burst of load from another process slows all of them alike; the table shows each
command's median and the machine it ran on.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# _timing sits next to this script; resnetzoo comes from src/ when it is not installed.
sys.path[:0] = [str(ROOT / "benchmarks")] + ([] if importlib.util.find_spec("resnetzoo") else [str(ROOT / "src")])

from _timing import alternate, machine_info, median  # noqa: E402

import resnetzoo  # noqa: E402

# What the console script `resnetzoo` runs (setuptools' entry-point wrapper does the same).
_SCRIPT = "import sys; from resnetzoo.cli import main; sys.exit(main())"
# The same, saying at exit which of the costly modules it imported (one untimed run each).
_HEAVY = ("torch", "torchvision", "torch._dynamo")
_SPY = (
    "import atexit, sys\n"
    f"atexit.register(lambda: sys.stderr.write('\\nIMPORTED ' + ' '.join(m for m in {_HEAVY!r} if m in sys.modules)))\n"
    + _SCRIPT.replace("; ", "\n")
)
# The goal: inspect within 1.5x of the reference.
_GOAL = 1.5


def _checkpoints(folder: Path) -> dict[str, Path]:
    """ResNet-50 and ResNet-152 state dicts in torchvision's names (zeros: only the format matters)."""
    paths = {}
    for arch in ("resnet50", "resnet152"):
        with torch.device("meta"):
            model = resnetzoo.create_model(arch)
        state = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in model.state_dict().items()}
        paths[arch] = folder / f"{arch}.pth"
        torch.save(state, paths[arch])
    return paths


def _command(argv: list[str], env: dict[str, str]):
    def run() -> None:
        result = subprocess.run(argv, env=env, capture_output=True, check=False)
        if result.returncode not in (0, 1):  # inspect exits 1 for a misfit, which is still an answer
            raise RuntimeError(f"{argv} failed ({result.returncode}): {result.stderr.decode()[-500:]}")

    return run


def _imports(argv: list[str], env: dict[str, str]) -> str:
    """Which of torch, torchvision, torch._dynamo one run of a command imports."""
    if argv[2] != _SCRIPT:
        return "torch" if "torch" in argv[2] else "-"
    result = subprocess.run([argv[0], "-c", _SPY, *argv[3:]], env=env, capture_output=True, text=True, check=False)
    found = result.stderr.rpartition("IMPORTED ")[2].strip()
    return ", ".join(found.split()) or "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first, to warm the OS file cache")
    parser.add_argument("--json", type=Path, help="also write the samples and the machine to this file")
    args = parser.parse_args(argv)

    env = dict(os.environ)
    src = str(Path(resnetzoo.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="resnetzoo-cli-bench-") as tmp:
        files = _checkpoints(Path(tmp))
        commands = {
            'python -c "import resnetzoo"': [py, "-c", "import resnetzoo"],
            'python -c "import torch"': [py, "-c", "import torch"],
            'python -c "import resnetzoo, torch"': [py, "-c", "import resnetzoo, torch"],
            "resnetzoo --help": [py, "-c", _SCRIPT, "--help"],
            "resnetzoo --version": [py, "-c", _SCRIPT, "--version"],
            "resnetzoo list": [py, "-c", _SCRIPT, "list"],
            "resnetzoo inspect resnet50.pth": [py, "-c", _SCRIPT, "inspect", str(files["resnet50"])],
            "resnetzoo inspect resnet152.pth": [py, "-c", _SCRIPT, "inspect", str(files["resnet152"])],
        }
        imported = {name: _imports(cmd, env) for name, cmd in commands.items()}
        load_before = os.getloadavg()
        samples = alternate(
            {name: _command(cmd, env) for name, cmd in commands.items()},
            rounds=args.rounds,
            warmup=args.warmup,
            device=torch.device("cpu"),
        )
    medians = {name: median(times) for name, times in samples.items()}
    import_only = medians['python -c "import resnetzoo"']
    with_torch = medians['python -c "import resnetzoo, torch"']

    info = machine_info(torch.device("cpu"))
    print(f"CPU: {info['cpu']} ({info['cpu_cores']} cores), load average {load_before[0]:.2f} at the start")
    print(f"python {info['python']}, torch {info['torch']}, resnetzoo {resnetzoo.__version__}; "
          f"median of {args.rounds} rounds\n")  # fmt: skip
    print("| command | median s | / import resnetzoo | / import resnetzoo, torch | imports |")
    print("|---|---:|---:|---:|---|")
    for name, value in medians.items():
        print(f"| `{name}` | {value:.2f} | {value / import_only:.1f}x | {value / with_torch:.2f}x | {imported[name]} |")
    print()
    for arch in ("resnet50", "resnet152"):
        value = medians[f"resnetzoo inspect {arch}.pth"]
        print(
            f"inspect {arch}: {value / with_torch:.2f}x `import resnetzoo, torch` "
            f"(goal <= {_GOAL}x: {'met' if value <= _GOAL * with_torch else 'NOT met'}); "
            f"{value / import_only:.0f}x the torch-free `import resnetzoo`"
        )
    if args.json:
        args.json.write_text(json.dumps({"medians": medians, "samples": samples, "imports": imported, "machine": info,
                                         "load_average": load_before}, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
