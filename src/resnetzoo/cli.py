"""The ``resnetzoo`` command: inspect and convert checkpoints, list models, download weights.

Exit codes: 0 success; 1 a checkpoint does not fit the architecture (``inspect``,
``convert``); 2 bad usage or an error such as an unreadable file, a checkpoint that is
no ResNet, or no network, reported on stderr in one message, without a traceback.

Examples::

    resnetzoo inspect checkpoint.pth                 # tells the architecture from the tensors
    resnetzoo inspect moco.pth --prefix module.encoder_k.
    resnetzoo inspect pytorch_model.bin --arch resnet50 --json
    resnetzoo convert lightning.ckpt resnet50.safetensors
    resnetzoo convert resnet50d.pth out.safetensors --to timm
    resnetzoo convert mmpretrain.pth hf-folder --to transformers
    resnetzoo list 'resnet5*'
    resnetzoo download resnet50.tv2_in1k
    resnetzoo export runs/cub200/best.safetensors birds.onnx --arch resnet50

torch takes seconds to import on a busy machine, so this module imports it (and
everything that needs it) only inside the subcommands that use it: ``--help``,
``--version`` and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnetzoo._io import describe_os_error
from resnetzoo._version import __version__
from resnetzoo.errors import ResNetZooError, WeightsLoadError

if TYPE_CHECKING:
    import torch.nn as nn

    from resnetzoo.infer import InferredArchitecture
    from resnetzoo.remap import LoadReport
    from resnetzoo.weights import LoadedCheckpoint

__all__ = ["build_parser", "main"]

_EXIT_OK, _EXIT_MISFIT, _EXIT_ERROR = 0, 1, 2
# What `convert --to` writes; resnetzoo's own safetensors unless asked otherwise.
_TARGETS = ("resnetzoo", "torchvision", "timm", "transformers", "mmpretrain")


# ------------------------------------------------------------------ helpers
def _read(source: str, unsafe_objects: str = "refuse") -> LoadedCheckpoint:
    from resnetzoo.weights import read_source

    return read_source(source, unsafe_objects=unsafe_objects)


def _check_arch(name: str) -> None:
    """Refuse an unknown ``--arch`` before any file is read, pointing at ``resnetzoo list``."""
    from resnetzoo.registry import is_model, list_models, split_model_name

    arch, _ = split_model_name(name)
    if not is_model(arch):
        close = difflib.get_close_matches(arch, list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {arch!r}{hint} (see resnetzoo list)")


def _describe_os_error(exc: OSError, *, output: str | None) -> str:
    """One line for a failed read or write: the fix depends on whether the file was the output."""
    name = Path(exc.filename) if isinstance(exc.filename, str) else None
    writing = output is not None and name is not None and (name == Path(output) or name.is_relative_to(output))
    return describe_os_error(
        exc,
        full_disk="free some space or write the output to another disk; a file already there is unchanged",
        not_writable=("check its permissions, or write the output to a folder you can write to" if writing
                      else "check its permissions: resnetzoo must be able to read it"),
    )


def _named_model(args: argparse.Namespace, loaded: LoadedCheckpoint) -> nn.Module:
    """The architecture named by ``--arch``, sized like the checkpoint's classifier and stem."""
    from resnetzoo.registry import create_model
    from resnetzoo.remap.conventions import to_native

    shapes = {k: tuple(v.shape) for k, v in to_native(loaded.obj, prefix=args.prefix).state_dict.items()}
    fc = shapes.get("fc.weight")
    stem = shapes.get("conv1.weight") or shapes.get("conv1.0.weight")
    kwargs: dict[str, Any] = {"num_classes": fc[0] if fc and len(fc) == 2 else 0}
    if stem and len(stem) == 4:
        kwargs["in_chans"] = stem[1]
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    return create_model(args.arch, **kwargs)


def _inferred_model(args: argparse.Namespace, loaded: LoadedCheckpoint) -> tuple[nn.Module, InferredArchitecture]:
    from resnetzoo.registry import inspect_checkpoint
    from resnetzoo.resnet import ResNet

    inferred = inspect_checkpoint(loaded, prefix=args.prefix)
    kwargs = inferred.kwargs()
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    return ResNet(**kwargs), inferred


def _print_report(report: LoadReport, inferred: InferredArchitecture | None, *, as_json: bool) -> None:
    if as_json:
        data = report.to_dict(audience="cli")
        data["architecture"] = inferred.to_dict() if inferred is not None else None
        print(json.dumps(data, indent=2))
        return
    if inferred is not None:
        print(inferred)
        print()
    print(report.render(audience="cli"))


# ------------------------------------------------------------- subcommands
def _inspect(args: argparse.Namespace) -> int:
    import torch

    from resnetzoo.remap import diagnose

    loaded = _read(args.checkpoint, args.unsafe_objects)
    # The meta device gives names and shapes without allocating: all that a report needs.
    with torch.device("meta"):
        if args.arch:
            model, inferred = _named_model(args, loaded), None
        else:
            model, inferred = _inferred_model(args, loaded)
    report = diagnose(model, loaded, prefix=args.prefix)
    if inferred is not None:  # as create_model_from_checkpoint: what was left out on purpose is not unexpected
        report.unexpected = [key for key in report.unexpected if key not in inferred.left_out]
    _print_report(report, inferred, as_json=args.json)
    # A projection head or an empty classifier is left out, as create_model_from_checkpoint does.
    ignore_head = args.ignore_head or bool(inferred is not None and inferred.left_out)
    return _EXIT_MISFIT if report.problem_keys(ignore_head=ignore_head) else _EXIT_OK


def _check_output(args: argparse.Namespace) -> None:
    out = Path(args.output)
    if args.to == "resnetzoo" and out.suffix != ".safetensors":
        raise ValueError(
            f"{out}: convert writes resnetzoo weights as safetensors; name the output .safetensors, "
            f"or pass --to torchvision (or timm, mmpretrain) to write a .pth for that library"
        )
    # A mistyped folder is refused, not created: the output goes where the user said, or nowhere.
    if not out.parent.is_dir():
        raise FileNotFoundError(f"the folder {out.parent} does not exist; create it first, or check the path {out}")
    if args.overwrite:
        return
    if args.to == "transformers":
        taken = [p.name for p in (out / "config.json", out / "model.safetensors") if p.exists()]
        if taken or (out.exists() and not out.is_dir()):
            raise FileExistsError(f"{out} already holds {', '.join(taken) or 'a file'}; pass --overwrite to replace it")
    elif out.exists():
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")


def _model_with_weights(args: argparse.Namespace, loaded: LoadedCheckpoint, *, strict: bool) -> tuple[nn.Module, LoadReport]:
    """``--arch``'s architecture with the checkpoint loaded, or the architecture the checkpoint holds."""
    from resnetzoo.registry import create_model_from_checkpoint
    from resnetzoo.remap import load_weights

    if args.arch:
        model = _named_model(args, loaded)
        return model, load_weights(model, loaded, strict=strict, ignore_head=args.ignore_head, prefix=args.prefix)
    overrides = {} if args.num_classes is None else {"num_classes": args.num_classes}
    return create_model_from_checkpoint(loaded, prefix=args.prefix, strict=strict, ignore_head=args.ignore_head,
                                        **overrides)


def _misfit(exc: WeightsLoadError, *, what: str, partial_flag: bool) -> int:
    """Print why a checkpoint did not fit, worded for the shell (the flags, not Python keywords)."""
    partial = (", or --allow-partial to save it anyway (tensors that do not fit keep the model's initial values)"
               if partial_flag else "")
    print(exc.report.render(audience="cli"), file=sys.stderr)
    print(f"resnetzoo: not {what}: the checkpoint does not fit the architecture strictly; check --arch and "
          f"--num-classes, pass --ignore-head to leave a differing classifier out{partial}", file=sys.stderr)
    return _EXIT_MISFIT


def _convert(args: argparse.Namespace) -> int:
    from resnetzoo.remap import save_weights
    from resnetzoo.remap.export import export_checkpoint

    _check_output(args)  # before reading: a file the user wrote is never at risk
    loaded = _read(args.input, args.unsafe_objects)
    try:
        model, report = _model_with_weights(args, loaded, strict=not args.allow_partial)
    except WeightsLoadError as exc:
        return _misfit(exc, what="converted", partial_flag=True)
    print(report.render(audience="cli"))
    if args.to == "resnetzoo":
        metadata = {"stride_in_1x1": "true"} if getattr(model, "stride_in_1x1", False) else None
        path = save_weights(model, args.output, metadata=metadata, overwrite=args.overwrite)
        print(f"wrote {path}")
        return _EXIT_OK
    exported = export_checkpoint(model, args.output, to=args.to, overwrite=args.overwrite)
    print(f"wrote {args.output} for {exported.library} ({exported.convention} names)")
    for note in exported.notes:
        print(f"note: {note}")
    print(f"load it with: {exported.load_with}")
    return _EXIT_OK


def _list(args: argparse.Namespace) -> int:
    # The tables, not the registry: both are pure data, so listing imports no torch (a
    # command-line process registers no models of its own).
    from resnetzoo.architectures import ARCHITECTURES, natural_key
    from resnetzoo.weights import list_pretrained

    pattern = args.pattern or "*"
    models = sorted(ARCHITECTURES, key=natural_key)
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


def _export(args: argparse.Namespace) -> int:
    from resnetzoo.inference import Preprocessing, export, export_format, recipe_metadata

    output = Path(args.output)
    fmt = export_format(output, format=args.format)
    if output.exists() and not args.overwrite:
        raise FileExistsError(f"{output} already exists; pass --overwrite to replace it")
    loaded = _read(args.checkpoint, args.unsafe_objects)
    try:
        model, _ = _model_with_weights(args, loaded, strict=True)
    except WeightsLoadError as exc:
        return _misfit(exc, what="exported", partial_flag=False)
    class_names, preprocessing = recipe_metadata(loaded, in_chans=model.in_chans)
    if args.ignore_head:
        class_names = None  # the checkpoint's classes belong to the head left out
    if preprocessing is None:
        default = Preprocessing()
        print(f"resnetzoo: warning: {args.checkpoint} says nothing of its preprocessing; the export's metadata "
              f"falls back to ImageNet's (input {default.input_size[1]} px, mean {default.mean}, std {default.std}, "
              f"resize {default.resize_mode} side){'' if class_names else ' without class names'}. To set them, "
              f"export the recipe's best.safetensors or checkpoint.pt, or call resnetzoo.export(model, path, "
              f"preprocessing=Preprocessing(...), class_names=[...]) in Python", file=sys.stderr)
    report = export(model.eval(), output, format=fmt, class_names=class_names, preprocessing=preprocessing,
                    overwrite=args.overwrite)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report)
    return _EXIT_OK


def _download(args: argparse.Namespace) -> int:
    import resnetzoo.weights

    print(resnetzoo.weights.fetch_weights(resnetzoo.weights.get_weights(args.name)))
    return _EXIT_OK


# --------------------------------------------------------------- public API
def build_parser() -> argparse.ArgumentParser:
    """Return the ``resnetzoo`` argument parser (subcommands inspect, convert, list, download, export)."""
    parser = argparse.ArgumentParser(prog="resnetzoo", description="ResNet checkpoints and weights.")
    parser.add_argument("--version", action="version", version=f"resnetzoo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def model_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--arch", help="architecture (resnetzoo list); without it, told from the checkpoint's names and shapes"
        )
        p.add_argument(
            "--num-classes", type=int, metavar="N", help="classifier size of the model (default: the checkpoint's)"
        )
        p.add_argument(
            "--prefix",
            metavar="PREFIX",
            help="read the network under this key prefix, e.g. module.encoder_k. (default: the sub-tree that fits best)",
        )
        p.add_argument(
            "--ignore-head",
            action="store_true",
            help="a classifier that differs (other class count, or absent) is left out instead of failing",
        )

    def unsafe_objects_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--unsafe-objects",
            choices=("refuse", "stub"),
            default="refuse",
            help="a pickled checkpoint that also holds other Python objects (an argparse.Namespace ...): "
            "refuse it (default), or stub: recover its tensors without running anything from the file, "
            "and show the other objects as plain data",
        )

    p = sub.add_parser(
        "inspect",
        help="tell a checkpoint's architecture and report how it fits",
        description=(
            "Tell the architecture a checkpoint holds (the constructor call that builds it, and what its "
            "shapes cannot tell), or compare it with --arch, and report how it fits. Exit 0 if it loads "
            "strictly (with --ignore-head: all but the classifier), 1 if not."
        ),
    )
    p.add_argument("checkpoint", help="file (.safetensors, .pth, .pt, .bin, .ckpt), folder, URL or hf-hub:org/repo")
    model_options(p)
    p.add_argument("--json", action="store_true", help="print the report (and architecture) as JSON")
    unsafe_objects_option(p)
    p.set_defaults(run=_inspect)

    p = sub.add_parser(
        "convert",
        help="load a checkpoint from any convention and write it for resnetzoo or another library",
        description=(
            "Load a checkpoint from any supported convention and write it: as resnetzoo safetensors "
            "(native names; the default), or for torchvision, timm, transformers (a save_pretrained "
            "folder) or mmpretrain. A network the target library cannot express is refused with the reason."
        ),
    )
    p.add_argument("input", help="checkpoint file, folder, URL or hf-hub:org/repo")
    p.add_argument("output", help="destination: .safetensors (resnetzoo), .pth/.safetensors, or a folder (transformers)")
    p.add_argument("--to", choices=_TARGETS, default="resnetzoo", help="the library to write for (default: resnetzoo)")
    model_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument(
        "--allow-partial", action="store_true", help="save even if some tensors do not fit (they keep their init)"
    )
    unsafe_objects_option(p)
    p.set_defaults(run=_convert)

    p = sub.add_parser("list", help="list architectures and pretrained weight sets")
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'resnet5*' or '*.tv2_in1k'")
    p.set_defaults(run=_list)

    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX or a torch.export program, verified against the eager model",
        description="Load a checkpoint strictly, export it with dynamic batch, height and width, and check the "
        "written file against the eager model over a sweep of shapes before keeping it. Class names and "
        "normalisation saved by the fine-tuning recipe go into the file's metadata. ONNX needs "
        "pip install 'resnetzoo[export]'.",
    )
    p.add_argument("checkpoint", help="file (.safetensors, .pth, .pt, .bin, .ckpt), URL or hf-hub:org/repo")
    p.add_argument("output", help="destination .onnx or .pt2 file")
    model_options(p)
    p.add_argument("--format", choices=("onnx", "pt2"), help="default: from the output's suffix")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--json", action="store_true", help="print the export report as JSON")
    unsafe_objects_option(p)
    p.set_defaults(run=_export)

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
    except SystemExit as exc:  # argparse exits on --help/--version (0) and on bad usage (2)
        return exc.code if isinstance(exc.code, int) else _EXIT_ERROR
    if args.command is None:
        parser.print_help(sys.stderr)
        return _EXIT_ERROR
    try:
        if getattr(args, "arch", None):
            _check_arch(args.arch)
        return args.run(args)
    except (ResNetZooError, ValueError) as exc:
        # User-facing failures (unreadable file, not a ResNet, offline, unknown name): one line, no traceback.
        print(f"resnetzoo: error: {exc}", file=sys.stderr)
        return _EXIT_ERROR
    except OSError as exc:  # a full disk, a read-only folder: the file and the fix, in one line
        print(f"resnetzoo: error: {_describe_os_error(exc, output=getattr(args, 'output', None))}", file=sys.stderr)
        return _EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
