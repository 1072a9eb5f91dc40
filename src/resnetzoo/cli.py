"""The ``resnetzoo`` command: inspect and convert checkpoints, list models, download weights.

Exit codes: 0 success; 1 a checkpoint does not fit the architecture (``inspect``,
``convert``); 2 bad usage or an error such as an unreadable file or no network,
reported on stderr in one message, without a traceback.

Examples::

    resnetzoo inspect checkpoint.pth                 # guesses the architecture
    resnetzoo inspect pytorch_model.bin --arch resnet50 --json
    resnetzoo convert lightning.ckpt resnet50.safetensors --arch resnet50
    resnetzoo list 'resnet5*'
    resnetzoo download resnet50.tv2_in1k
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from resnetzoo.errors import ResNetZooError, WeightsLoadError
from resnetzoo.remap import diagnose, guess_arch, load_weights, save_weights, to_native
from resnetzoo.remap.report import LoadReport, catalog_keys

__all__ = ["build_parser", "main"]

_EXIT_OK, _EXIT_MISFIT, _EXIT_ERROR = 0, 1, 2


# ------------------------------------------------------------------ helpers
class _UsageError(Exception):
    """Bad arguments the parser cannot see (an architecture that cannot be guessed)."""


def _checkpoint_head(obj: Any) -> tuple[str | None, int, int | None]:
    """Guess ``(arch, num_classes, in_chans)`` from a checkpoint's tensors."""
    state = to_native(obj, target_keys=catalog_keys()).state_dict
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    fc = shapes.get("fc.weight")
    stem = shapes.get("conv1.weight") or shapes.get("conv1.0.weight")
    return guess_arch(shapes, exact=False), fc[0] if fc else 0, stem[1] if stem and len(stem) == 4 else None


def _build_model(args: argparse.Namespace, loaded: Any, *, meta: bool) -> nn.Module:
    """The architecture named by ``--arch`` (or guessed), sized like the checkpoint's head and stem."""
    import resnetzoo

    arch, num_classes, in_chans = _checkpoint_head(loaded.obj)
    if args.arch is None:
        if arch is None:
            raise _UsageError("cannot guess the architecture from this checkpoint; give --arch NAME")
        print(f"guessed architecture: {arch} (use --arch to choose another)", file=sys.stderr)
    kwargs: dict[str, Any] = {"num_classes": num_classes if args.num_classes is None else args.num_classes}
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    # The meta device gives names and shapes without allocating: all that inspect needs.
    device = torch.device("meta") if meta else torch.device("cpu")
    with device:
        return resnetzoo.create_model(args.arch or arch, **kwargs)


def _read(source: str) -> Any:
    from resnetzoo.weights import read_source

    return read_source(source)


def _print_report(report: LoadReport, *, as_json: bool, file: Any = None) -> None:
    if as_json:
        print(json.dumps(report.to_dict(), indent=2), file=file or sys.stdout)
    else:
        print(report, file=file or sys.stdout)


# ------------------------------------------------------------- subcommands
def _inspect(args: argparse.Namespace) -> int:
    loaded = _read(args.checkpoint)
    model = _build_model(args, loaded, meta=True)
    report = diagnose(model, loaded)
    _print_report(report, as_json=args.json)
    return _EXIT_OK if report.ok else _EXIT_MISFIT


def _convert(args: argparse.Namespace) -> int:
    if Path(args.output).exists() and not args.overwrite:
        raise FileExistsError(f"{args.output} already exists; pass --overwrite to replace it")
    loaded = _read(args.input)
    model = _build_model(args, loaded, meta=False)
    try:
        report = load_weights(model, loaded, strict=not args.allow_partial)
    except WeightsLoadError as exc:
        print(exc.report, file=sys.stderr)
        print(
            "resnetzoo: not converted: the checkpoint does not fit the architecture strictly; "
            "check --arch and --num-classes, or pass --allow-partial to save it anyway (tensors "
            "that do not fit keep the model's initial values)",
            file=sys.stderr,
        )
        return _EXIT_MISFIT
    path = save_weights(model, args.output, overwrite=args.overwrite)
    print(report)
    print(f"wrote {path}")
    return _EXIT_OK


def _list(args: argparse.Namespace) -> int:
    import resnetzoo
    from resnetzoo.weights import list_pretrained

    pattern = args.pattern or "*"
    models = resnetzoo.list_models()
    specs = [s for s in list_pretrained() if fnmatch.fnmatchcase(s.name, pattern) or fnmatch.fnmatchcase(s.arch, pattern)]
    shown = [m for m in models if fnmatch.fnmatchcase(m, pattern) or any(s.arch == m for s in specs)]
    print(f"Models ({len(shown)}):")
    for name in shown:
        print(f"  {name}")
    print(f"Weights ({len(specs)}):")
    width = max((len(s.name) for s in specs), default=0)
    for s in specs:
        top1 = f"top-1 {s.top1:.2f}%" if s.top1 is not None else "top-1 n/a"
        size = s.input_size[-1]
        test = f", test {s.test_input_size[-1]}" if s.test_input_size else ""
        print(f"  {s.name:<{width}}  {top1:<13}  input {size}{test}  {s.dataset}")
    return _EXIT_OK


def _download(args: argparse.Namespace) -> int:
    from resnetzoo.weights import fetch_weights, get_weights

    print(fetch_weights(get_weights(args.name)))
    return _EXIT_OK


# --------------------------------------------------------------- public API
def build_parser() -> argparse.ArgumentParser:
    """Return the ``resnetzoo`` argument parser (subcommands inspect, convert, list, download)."""
    parser = argparse.ArgumentParser(prog="resnetzoo", description="ResNet checkpoints and weights.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def model_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--arch", help="architecture (resnetzoo list); guessed from the checkpoint if omitted")
        p.add_argument(
            "--num-classes", type=int, metavar="N", help="classifier size of the model (default: the checkpoint's)"
        )

    p = sub.add_parser(
        "inspect",
        help="report how a checkpoint fits an architecture",
        description="Report how a checkpoint fits an architecture. Exit 0 if it loads strictly, 1 if not.",
    )
    p.add_argument("checkpoint", help="file (.safetensors, .pth, .pt, .bin, .ckpt), URL or hf-hub:org/repo")
    model_options(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=_inspect)

    p = sub.add_parser(
        "convert",
        help="rename a checkpoint to native keys and save it as safetensors",
        description="Load a checkpoint from any supported convention and save it with native keys.",
    )
    p.add_argument("input", help="checkpoint file, URL or hf-hub:org/repo")
    p.add_argument("output", help="destination .safetensors file")
    model_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument(
        "--allow-partial", action="store_true", help="save even if some tensors do not fit (they keep their init)"
    )
    p.set_defaults(run=_convert)

    p = sub.add_parser("list", help="list architectures and pretrained weight sets")
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'resnet5*' or '*.tv2_in1k'")
    p.set_defaults(run=_list)

    p = sub.add_parser("download", help="download (or find in the cache) a weight set and print its path")
    p.add_argument("name", help="weight set, e.g. resnet50.tv2_in1k, or an architecture for its default")
    p.set_defaults(run=_download)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``resnetzoo`` command.

    Args:
        argv: arguments without the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        the exit code: 0 success, 1 the checkpoint does not fit, 2 usage or other error.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on bad usage (2)
        return exc.code if isinstance(exc.code, int) else _EXIT_ERROR
    if args.command is None:
        parser.print_help(sys.stderr)
        return _EXIT_ERROR
    try:
        return args.run(args)
    except (ResNetZooError, ValueError, OSError, _UsageError) as exc:
        # User-facing failures (unreadable file, offline, unknown name): one line, no traceback.
        print(f"resnetzoo: error: {exc}", file=sys.stderr)
        return _EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
