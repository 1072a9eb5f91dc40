"""Export a model to ONNX or to a ``torch.export`` program, verified before it is handed over.

:func:`export` traces the model once with ``torch.export`` (batch, height and width
dynamic), writes the artefact with the preprocessing, class names and architecture as
metadata, then checks it: the written graph must hold batch, height and width as
symbols (the guards torch added to them are reported), and running the artefact
(onnxruntime for ONNX, the loaded program for ``.pt2``) over a sweep of batch sizes
and image sizes must give the eager model's outputs within a tolerance. Only then is
the file moved to its path; otherwise :class:`~resnetzoo.errors.ExportError` carries
the :class:`ExportReport` that says what went wrong, and nothing is written.

Two choices, and why:

- Dimensions are traced with ``Dim.DYNAMIC`` under ``backed_size_oblivious``, as
  ``torch.onnx``'s own exporter does. Without it torch specialises every feature map
  that could be 1 pixel wide, so a ResNet's program rejects images under 33 px; and
  named ``Dim``s make the export of ResNet-D fail outright on a guard of the
  ``ceil_mode`` average pool that holds for every size but which torch cannot prove.
- The trace uses a batch of 2: torch specialises dimensions of size 0 and 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from resnetzoo._io import atomic_path
from resnetzoo._version import __version__
from resnetzoo.errors import ExportError, MissingDependencyError
from resnetzoo.inference.graph import CONVS, size_oblivious
from resnetzoo.inference.optimize import InferenceModel

if TYPE_CHECKING:
    from resnetzoo.weights import LoadedCheckpoint

__all__ = [
    "DEFAULT_SWEEP",
    "FORMATS",
    "SUFFIXES",
    "DimensionCheck",
    "ExportMetadata",
    "ExportReport",
    "Preprocessing",
    "ShapeCheck",
    "export",
    "export_format",
    "read_export_metadata",
    "recipe_metadata",
]

FORMATS = ("onnx", "pt2")
SUFFIXES = {".onnx": "onnx", ".pt2": "pt2"}
"""The file suffix of each format: :func:`export_format` reads a path's format from it."""
_RECIPE_FORMATS = "resnetzoo.recipes."  # the prefix of every checkpoint format the fine-tuning recipes write
METADATA_KEY = "resnetzoo"  # ONNX metadata_props key / name of the .pt2 extra file's JSON
METADATA_FORMAT = "resnetzoo.export/1"
_PT2_EXTRA = "resnetzoo.json"
_MAX_METADATA_BYTES = 64 * 2**20  # 1000 class names take ~20 KB
DEFAULT_SWEEP: tuple[tuple[int, int, int], ...] = tuple(
    (batch, height, width) for batch in (1, 3, 17) for height, width in ((224, 224), (225, 225), (448, 448), (321, 479))
)
_DIMS = {0: "batch", 2: "height", 3: "width"}
_TRACE_BATCH = 2
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- metadata
@dataclass(frozen=True)
class Preprocessing:
    """How images must be prepared for the exported model (torchvision's and timm's conventions).

    Attributes:
        input_size: ``(C, H, W)`` the model expects (it accepts other sizes too).
        mean: per-channel mean subtracted after scaling pixels to ``[0, 1]``.
        std: per-channel standard deviation divided by after that.
        interpolation: ``"bilinear"``, ``"bicubic"`` or ``"nearest"`` resize.
        resize_size: resize before the centre crop, or None to use
            ``input_size[1] / crop_pct``.
        crop_pct: centre-crop fraction.
        resize_mode: ``"shorter"`` (the shorter side to ``resize_size``, torchvision's
            evaluation transform) or ``"square"`` (both sides, as the CUB-200 recipe does).
    """

    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = _IMAGENET_MEAN
    std: tuple[float, ...] = _IMAGENET_STD
    interpolation: str = "bilinear"
    resize_size: int | None = None
    crop_pct: float = 0.875
    resize_mode: str = "shorter"

    @classmethod
    def from_spec(cls, spec: Any) -> Preprocessing:
        """The preprocessing of a :class:`~resnetzoo.weights.WeightSpec`."""
        return cls(input_size=tuple(spec.input_size), mean=tuple(spec.mean), std=tuple(spec.std),
                   interpolation=spec.interpolation, resize_size=spec.resize_size, crop_pct=spec.crop_pct)

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], *, in_chans: int = 3) -> Preprocessing:
        """The preprocessing a fine-tuning recipe saved in a ``.safetensors`` file's metadata.

        Reads ``mean`` and ``std`` (JSON lists), ``img_size``, ``resize`` and ``resize_mode``
        as ``resnetzoo.recipes`` writes them in ``best.safetensors``.

        Raises:
            ValueError: a value is missing or malformed.
        """
        try:
            size = int(metadata.get("img_size", 224))
            resize = int(metadata["resize"]) if "resize" in metadata else None
            return cls(input_size=(in_chans, size, size), mean=tuple(float(v) for v in json.loads(metadata["mean"])),
                       std=tuple(float(v) for v in json.loads(metadata["std"])), resize_size=resize,
                       crop_pct=size / resize if resize else 0.875,
                       resize_mode=metadata.get("resize_mode", "shorter"))
        except (KeyError, ValueError, TypeError) as err:
            raise ValueError(f"the checkpoint's preprocessing metadata is malformed ({type(err).__name__}: {err})") from err


@dataclass(frozen=True)
class ExportMetadata:
    """What an exported file says about itself; stored as JSON under the key ``"resnetzoo"``.

    ONNX: in the model's ``metadata_props`` (onnxruntime:
    ``session.get_modelmeta().custom_metadata_map["resnetzoo"]``). ``.pt2``: the extra
    file ``resnetzoo.json`` (``torch.export.load(path, extra_files={"resnetzoo.json": ""})``).

    Attributes:
        architecture: the model's architecture name (``model.arch``) or class name.
        num_classes: the classifier's width (0 for a backbone).
        class_names: class names in logit order, or None when unknown.
        preprocessing: the :class:`Preprocessing`.
        weights: the pretrained weight set's name, when the model has one.
        input_name: the graph input's name.
        output_names: the graph outputs' names.
        versions: ``{"resnetzoo": ..., "torch": ...}`` that wrote the file.
        format: ``"resnetzoo.export/1"``.
    """

    architecture: str
    num_classes: int
    class_names: tuple[str, ...] | None
    preprocessing: Preprocessing
    weights: str | None = None
    input_name: str = "images"
    output_names: tuple[str, ...] = ("logits",)
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    format: str = METADATA_FORMAT

    def to_json(self) -> str:
        """The metadata as one JSON string."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ExportMetadata:
        """Read back what :meth:`to_json` wrote.

        Raises:
            ValueError: the text is not resnetzoo export metadata.
        """
        try:
            raw = json.loads(text)
            if raw.get("format") != METADATA_FORMAT:
                raise ValueError(f"format is {raw.get('format')!r}, not {METADATA_FORMAT!r}")
            pre = raw.pop("preprocessing")
            names = raw.pop("class_names")
            return cls(
                **{**raw, "output_names": tuple(raw["output_names"])},
                class_names=None if names is None else tuple(names),
                preprocessing=Preprocessing(**{k: tuple(v) if isinstance(v, list) else v for k, v in pre.items()}),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise ValueError(f"not resnetzoo export metadata ({type(err).__name__}: {err})") from err


def recipe_metadata(checkpoint: LoadedCheckpoint, *,
                    in_chans: int = 3) -> tuple[tuple[str, ...] | None, Preprocessing | None]:
    """The class names and preprocessing that a fine-tuning run saved with its weights.

    Reads both files of ``resnetzoo.recipes.finetune`` that hold weights: the metadata
    of ``best.safetensors`` / ``ema.safetensors`` (JSON strings: ``classes``, ``mean``,
    ``std``, ``img_size``, ``resize``, ``resize_mode``), and the training checkpoint
    ``checkpoint.pt`` (the final weights), whose ``classes``, ``mean`` and ``std`` are
    lists and whose ``config`` holds ``img_size``, ``resize`` and ``resize_mode``. One
    rule reads both: the checkpoint's values are put in the safetensors form and parsed
    by :meth:`Preprocessing.from_metadata`.

    Args:
        checkpoint: what :func:`resnetzoo.weights.read_source` read (``.obj`` and
            ``.metadata`` are used).
        in_chans: the model's input channels.

    Returns:
        ``(class_names, preprocessing)``, each None where the checkpoint does not say
        (a plain state dict, a torchvision or timm file).

    Raises:
        ValueError: the checkpoint holds such metadata but it is malformed.
    """
    obj, fields = checkpoint.obj, dict(checkpoint.metadata)
    if isinstance(obj, Mapping) and str(obj.get("format", "")).startswith(_RECIPE_FORMATS):
        config = obj.get("config") if isinstance(obj.get("config"), Mapping) else {}
        try:
            fields = {key: json.dumps(list(obj[key])) for key in ("classes", "mean", "std") if obj.get(key) is not None}
        except TypeError as err:
            raise ValueError(f"the checkpoint's classes, mean or std are not lists ({err})") from err
        fields |= {key: str(config[key]) for key in ("img_size", "resize", "resize_mode")
                   if config.get(key) is not None}
    class_names = None
    if "classes" in fields:
        try:
            names = json.loads(fields["classes"])
        except ValueError as err:
            raise ValueError(f"the checkpoint's class names are not a JSON list ({err})") from err
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError("the checkpoint's class names are not a list of strings")
        class_names = tuple(names)
    preprocessing = Preprocessing.from_metadata(fields, in_chans=in_chans) if "mean" in fields else None
    return class_names, preprocessing


# ----------------------------------------------------------------------------- report
@dataclass(frozen=True)
class DimensionCheck:
    """One dynamic dimension of the input, as found in the written graph.

    Attributes:
        name: ``"batch"``, ``"height"`` or ``"width"``.
        symbolic: whether the written graph holds it as a symbol (not a fixed number).
        minimum: the smallest value torch's range allows.
        maximum: the largest, or None for unbounded.
        guards: torch's guards on the traced program that involve this dimension.
        rejected: sizes from 1 to 1024 that the guards reject (the others held at the
            trace's values), as text (``"1-32"``), or ``""`` when they reject none.
    """

    name: str
    symbolic: bool
    minimum: int
    maximum: int | None
    guards: tuple[str, ...] = ()
    rejected: str = ""

    def __str__(self) -> str:
        if not self.symbolic:
            return f"{self.name}: FIXED in the graph"
        top = "inf" if self.maximum is None else str(self.maximum)
        text = f"{self.name}: symbolic, range {self.minimum}..{top}"
        if self.rejected:
            text += f", guards reject {self.rejected}"
        return text + (f" ({len(self.guards)} guards)" if self.guards else "")


@dataclass(frozen=True)
class ShapeCheck:
    """The exported artefact against the eager model at one input shape.

    Attributes:
        batch, height, width: the input's shape (``(batch, C, height, width)``).
        max_abs: largest absolute difference of any output.
        max_rel: ``max_abs`` over the largest absolute eager output.
        ok: ``max_rel <= tolerance`` and no error.
        error: why the artefact could not run at this shape, or ``""``.
    """

    batch: int
    height: int
    width: int
    max_abs: float
    max_rel: float
    ok: bool
    error: str = ""


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export` wrote and how it was verified.

    Attributes:
        path: where the artefact is (or would have been).
        format: ``"onnx"`` or ``"pt2"``.
        metadata: the :class:`ExportMetadata` embedded in it.
        dimensions: one :class:`DimensionCheck` per dynamic dimension.
        checks: one :class:`ShapeCheck` per shape of the sweep.
        tolerance: the relative tolerance of the checks.
        seconds: time taken to trace, write and verify.
    """

    path: Path
    format: str
    metadata: ExportMetadata
    dimensions: tuple[DimensionCheck, ...]
    checks: tuple[ShapeCheck, ...]
    tolerance: float
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Every dimension symbolic and every shape of the sweep within tolerance."""
        return all(d.symbolic for d in self.dimensions) and bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def max_rel(self) -> float:
        """The largest relative difference over the sweep."""
        return max((c.max_rel for c in self.checks), default=float("nan"))

    def __str__(self) -> str:
        meta = self.metadata
        lines = [
            f"{'verified' if self.ok else 'FAILED'} {self.format} export of {meta.architecture} to {self.path}: "
            f"{sum(c.ok for c in self.checks)} of {len(self.checks)} shapes within {self.tolerance:.0e} relative "
            f"(worst {self.max_rel:.1e}) in {self.seconds:.1f} s",
            "  " + "; ".join(str(d) for d in self.dimensions),
            f"  metadata: {meta.num_classes} classes"
            f"{' with names' if meta.class_names else ' (outputs; no class names)'}, input {meta.preprocessing.input_size}, "
            f"mean {meta.preprocessing.mean}, std {meta.preprocessing.std}, {meta.preprocessing.interpolation}",
        ]
        for dim in self.dimensions:
            lines += [f"  guard on {dim.name}: {guard}" for guard in dim.guards if dim.rejected]
        for c in self.checks:
            if not c.ok:
                why = c.error or f"max relative difference {c.max_rel:.2e}"
                lines.append(f"  shape ({c.batch}, {meta.preprocessing.input_size[0]}, {c.height}, {c.width}): {why}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the report."""
        out = dataclasses.asdict(self)
        out["path"] = str(self.path)
        out["ok"] = self.ok
        return out


# ----------------------------------------------------------------------------- checks
def _require(module: str, *, what: str) -> Any:
    try:
        return __import__(module)
    except ImportError as err:
        raise MissingDependencyError(
            f"{what} needs the optional dependency {module!r}: pip install 'resnetzoo[export]'"
        ) from err


def export_format(path: str | os.PathLike[str], *, format: str | None = None) -> str:
    """The format to write ``path`` in: ``format`` when given, else the one its suffix names.

    The one rule of :func:`export` and ``resnetzoo export``: a file is never written
    in a format its name contradicts (an ONNX file named ``.pt2`` fails only when
    someone loads it).

    Args:
        path: the file to write.
        format: ``"onnx"``, ``"pt2"``, or None to take it from the suffix
            (:data:`SUFFIXES`: ``.onnx``, ``.pt2``, in any case).

    Returns:
        ``"onnx"`` or ``"pt2"``.

    Raises:
        ValueError: ``format`` is not one of :data:`FORMATS`; ``path``'s suffix names
            the other format; or ``format`` is None and the suffix names none.
    """
    if format is not None and format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(map(repr, FORMATS))}, got {format!r}")
    name = Path(path).name
    named = SUFFIXES.get(Path(path).suffix.lower())
    if format is None:
        if named is None:
            raise ValueError(f"cannot tell the export format from {name!r}; name it .onnx or .pt2, or give the "
                             f"format (format='onnx' or 'pt2'; --format on the command line)")
        return named
    if named is not None and named != format:
        raise ValueError(f"the suffix of {name!r} says {named}, but the format asked for is {format}; name it "
                         f"{Path(name).stem}.{format}, or leave the format out to write {named}")
    return format


def _check_arguments(model: Any, path: Any, format: Any, overwrite: bool, tolerance: Any,
                     check_shapes: Any) -> tuple[nn.Module, Path, str]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    format = export_format(path, format=format)
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give a file path such as {path / ('model.' + format)}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it, or choose another path")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"the folder {path.parent} does not exist; create it first")
    if not isinstance(tolerance, (int, float)) or not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be a number in (0, 1), got {tolerance!r}")
    if not check_shapes or any(
        len(s) != 3 or not all(isinstance(v, int) and v > 0 for v in s) for s in check_shapes
    ):
        raise ValueError(f"check_shapes must be a non-empty list of (batch, height, width) positive ints, "
                         f"got {check_shapes!r}")
    network = model.module if isinstance(model, InferenceModel) else model
    if model.training or network.training:
        raise ValueError("model is in training mode; call model.eval() first (export records the forward as it "
                         "runs now, and in training mode BatchNorm uses each batch's statistics)")
    dtypes = {p.dtype for p in network.parameters()} | {b.dtype for b in network.buffers() if b.is_floating_point()}
    if dtypes - {torch.float32}:
        raise ValueError(f"export a float32 model (this one holds {sorted(map(str, dtypes))}); for an optimised "
                         f"model call optimize_for_inference(model) without dtype= and export that")
    if isinstance(model, InferenceModel) and model.inference_report.dtype != torch.float32:
        raise ValueError("export a float32 model: call optimize_for_inference(model) without dtype=")
    return network, path, format


def _in_chans(model: nn.Module) -> int:
    in_chans = getattr(model, "in_chans", None)
    if isinstance(in_chans, int):
        return in_chans
    conv = next((m for m in model.modules() if isinstance(m, CONVS)), None)
    if conv is None:
        raise ValueError(f"cannot tell how many input channels {type(model).__name__} takes (no convolution)")
    return conv.in_channels


def _metadata(model: nn.Module, *, class_names: Sequence[str] | None,
              preprocessing: Preprocessing | None) -> ExportMetadata:
    """The metadata to embed: given values first, then the model's weight record, then timm's config."""
    spec = getattr(model, "weight_spec", None)  # resnetzoo: the WeightSpec the weights came from
    num_classes = getattr(model, "num_classes", None)
    if not isinstance(num_classes, int):
        fc = getattr(model, "fc", None)
        num_classes = fc.out_features if isinstance(fc, nn.Linear) else 0
    if class_names is None and spec is not None and getattr(spec, "num_classes", None) == num_classes:
        class_names = spec.categories
    if class_names is not None:
        class_names = tuple(class_names)
        if not all(isinstance(n, str) for n in class_names):
            raise TypeError("class_names must be a sequence of str")
        if len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but the model has {num_classes} classes")
    if preprocessing is None:
        cfg = getattr(model, "pretrained_cfg", None)  # timm's models (and resnetzoo's) describe their input
        if spec is not None:
            preprocessing = Preprocessing.from_spec(spec)
        elif isinstance(cfg, dict) and {"input_size", "mean", "std"} <= set(cfg):
            preprocessing = Preprocessing(input_size=tuple(cfg["input_size"]), mean=tuple(cfg["mean"]),
                                          std=tuple(cfg["std"]), interpolation=cfg.get("interpolation", "bilinear"),
                                          crop_pct=cfg.get("crop_pct", 0.875))
        else:
            preprocessing = Preprocessing()
    elif not isinstance(preprocessing, Preprocessing):
        raise TypeError(f"preprocessing must be a resnetzoo.inference.Preprocessing, got {type(preprocessing).__name__}")
    in_chans = _in_chans(model)
    if preprocessing.input_size[0] != in_chans or len(preprocessing.mean) != in_chans:
        raise ValueError(f"preprocessing describes {preprocessing.input_size[0]}-channel images with "
                         f"{len(preprocessing.mean)} means, but the model takes {in_chans} channels")
    return ExportMetadata(
        architecture=str(getattr(model, "arch", None) or type(model).__name__),
        num_classes=num_classes,
        class_names=class_names,
        preprocessing=preprocessing,
        weights=getattr(spec, "name", None),
        versions={"resnetzoo": __version__, "torch": torch.__version__},
    )


# ----------------------------------------------------------------------------- tracing
@contextlib.contextmanager
def _module_stack(model: nn.Module) -> Iterator[list[str]]:
    """The names of the modules running right now, innermost last (to say where a trace failed)."""
    stack: list[str] = []

    def enter(name: str) -> None:
        stack.append(name)

    def leave() -> None:  # a hook that returned something would replace the module's output
        if stack:
            stack.pop()

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(lambda m, a, name=name: enter(name)))
        handles.append(module.register_forward_hook(lambda m, a, o: leave()))
    try:
        yield stack
    finally:
        for handle in handles:
            handle.remove()


def _trace(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` with batch, height and width dynamic; a clear error naming the failing module."""
    from torch.export import Dim

    dynamic = ({axis: Dim.DYNAMIC for axis in _DIMS},)
    with _module_stack(model) as stack, size_oblivious():
        try:
            return torch.export.export(model, (example,), dynamic_shapes=dynamic)
        except Exception as err:
            where = stack[-1] if stack else ""
            module = model.get_submodule(where) if where else model
            first = (str(err).strip().splitlines() or [""])[0][:300]
            raise ExportError(
                f"torch.export could not trace {type(module).__name__}"
                f"{f' at {where!r}' if where else ''} ({type(err).__name__}: {first}); make its forward "
                f"traceable (no Python branching on tensor values, no .item() or .tolist(); torch.cond "
                f"for data-dependent branches) and export again"
            ) from err


def _guards(program: torch.export.ExportedProgram) -> list[str]:
    # ExportedProgram keeps its input guards as source text in a private attribute; without it
    # (another torch version) the report lists no guards rather than guessing.
    guards = getattr(program, "_guards_code", None)
    return [g for g in guards if isinstance(g, str)] if isinstance(guards, (list, tuple)) else []


class _Sizes:
    """Stands in for ``L['x']`` when a guard's source text is evaluated for some input size."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def size(self) -> tuple[int, ...]:
        return self.shape


def _rejected(guards: list[str], example_shape: tuple[int, ...], axis: int) -> str:
    """Sizes 1..1024 of ``axis`` that ``guards`` reject, the other sizes as traced, as compact text."""
    code = [compile(g, "<guard>", "eval") for g in guards if "L['x']" in g]
    bad = []
    for size in range(1, 1025):
        shape = list(example_shape)
        shape[axis] = size
        scope = {"L": {"x": _Sizes(tuple(shape))}, "__builtins__": {}}
        try:
            ok = all(eval(c, scope) for c in code)  # torch's own guard text, for the program just traced
        except Exception:
            ok = False
        if not ok:
            bad.append(size)
    runs: list[list[int]] = []
    for size in bad:
        if runs and runs[-1][1] == size - 1:
            runs[-1][1] = size
        else:
            runs.append([size, size])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _dimensions(program: torch.export.ExportedProgram, symbolic_in_file: dict[int, bool],
                example_shape: tuple[int, ...]) -> tuple[DimensionCheck, ...]:
    placeholder = next(n for n in program.graph.nodes
                       if n.op == "placeholder" and n.name in program.graph_signature.user_inputs)
    shape = placeholder.meta["val"].shape
    ranges = {str(sym): vr for sym, vr in program.range_constraints.items()}
    guards = _guards(program)
    checks = []
    for axis, name in _DIMS.items():
        size = shape[axis]
        traced_symbolic = isinstance(size, torch.SymInt)
        vr = ranges.get(str(size)) if traced_symbolic else None
        lower = int(vr.lower) if vr is not None else int(size) if not traced_symbolic else 0
        upper = None if vr is None or not str(vr.upper).isdigit() else int(vr.upper)
        index = f"L['x'].size()[{axis}]"
        mine = tuple(g for g in guards if index in g)
        checks.append(DimensionCheck(
            name=name,
            symbolic=traced_symbolic and symbolic_in_file[axis],
            minimum=lower,
            maximum=upper if traced_symbolic else int(size),
            guards=mine,
            rejected=_rejected(list(mine), example_shape, axis) if mine else "",
        ))
    return tuple(checks)


# ----------------------------------------------------------------------------- writing
def _write_onnx(program: torch.export.ExportedProgram, example: torch.Tensor, tmp: Path,
                meta: ExportMetadata, opset: int | None) -> dict[int, bool]:
    """Write the ONNX file; return, per dynamic axis, whether the written graph holds it as a symbol."""
    _require("onnxscript", what="ONNX export")
    onnx = _require("onnx", what="ONNX export")
    placeholder = next(n for n in program.graph.nodes
                       if n.op == "placeholder" and n.name in program.graph_signature.user_inputs)
    names = {str(size): _DIMS[axis] for axis, size in enumerate(placeholder.meta["val"].shape)
             if axis in _DIMS and isinstance(size, torch.SymInt)}
    onnx_program = torch.onnx.export(program, (example,), dynamo=True, verbose=False, opset_version=opset,
                                     input_names=[meta.input_name], output_names=list(meta.output_names))
    onnx_program.rename_axes(names)
    onnx_program.model.metadata_props[METADATA_KEY] = meta.to_json()
    onnx_program.save(tmp, external_data=False)
    written = onnx.load(str(tmp), load_external_data=False)
    dims = written.graph.input[0].type.tensor_type.shape.dim
    return {axis: bool(dims[axis].dim_param) and not dims[axis].HasField("dim_value") for axis in _DIMS}


def _write_pt2(program: torch.export.ExportedProgram, tmp: Path,
               meta: ExportMetadata) -> tuple[dict[int, bool], Callable[[torch.Tensor], list[torch.Tensor]]]:
    """Write the ``.pt2`` file; return which axes it holds as symbols, and a function running what was written."""
    # Through file objects: torch.export checks that a path ends in .pt2, and the staging name does not.
    with open(tmp, "wb") as handle:
        torch.export.save(program, handle, extra_files={_PT2_EXTRA: meta.to_json()})
    with open(tmp, "rb") as handle:
        written = torch.export.load(handle)
    placeholder = next(n for n in written.graph.nodes
                       if n.op == "placeholder" and n.name in written.graph_signature.user_inputs)
    shape = placeholder.meta["val"].shape
    module = written.module()

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return _flat(module(x))

    return {axis: isinstance(shape[axis], torch.SymInt) for axis in _DIMS}, run


def _onnx_runner(tmp: Path) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """A function running the written ONNX file in onnxruntime on CPU."""
    ort = _require("onnxruntime", what="verifying an ONNX export")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(tmp), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.from_numpy(y) for y in session.run(None, {name: x.numpy()})]

    return run


def _flat(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [t for item in value for t in _flat(item)]


def _sweep(model: nn.Module, run: Callable[[torch.Tensor], list[torch.Tensor]], shapes: Sequence[tuple[int, int, int]], in_chans: int,
           tolerance: float) -> tuple[ShapeCheck, ...]:
    gen = torch.Generator().manual_seed(0)
    checks = []
    for batch, height, width in shapes:
        x = torch.randn(batch, in_chans, height, width, generator=gen)
        with torch.no_grad():
            expected = _flat(model(x))
        try:
            actual = run(x)
        except Exception as err:  # the artefact refused this shape: a result, reported
            first = (str(err).strip().splitlines() or [""])[0][:300]
            checks.append(ShapeCheck(batch, height, width, float("inf"), float("inf"), False,
                                     f"{type(err).__name__}: {first}"))
            continue
        if [t.shape for t in actual] != [t.shape for t in expected]:
            checks.append(ShapeCheck(batch, height, width, float("inf"), float("inf"), False,
                                     f"output shapes {[tuple(t.shape) for t in actual]}, eager "
                                     f"{[tuple(t.shape) for t in expected]}"))
            continue
        max_abs = max((a.float() - e.float()).abs().max().item() for a, e in zip(actual, expected, strict=True))
        scale = max(e.float().abs().max().item() for e in expected)
        max_rel = max_abs / scale if scale > 0 else max_abs
        ok = max_rel <= tolerance and all(torch.isfinite(a).all() for a in actual)
        checks.append(ShapeCheck(batch, height, width, max_abs, max_rel, bool(ok)))
    return tuple(checks)


def export(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    class_names: Sequence[str] | None = None,
    preprocessing: Preprocessing | None = None,
    check_shapes: Sequence[tuple[int, int, int]] | None = None,
    tolerance: float = 1e-4,
    opset: int | None = None,
    overwrite: bool = False,
) -> ExportReport:
    """Export ``model`` to ONNX or a ``torch.export`` program, verified against the eager model first.

    The model is traced with a batch of 2 at its input size, with batch, height and
    width dynamic; the written graph is checked to hold them as symbols; then the
    artefact runs (onnxruntime on CPU for ONNX, the loaded program for ``.pt2``) on
    every shape of ``check_shapes`` and is compared with ``model`` in fp32. Only when
    every shape is within ``tolerance`` is the file moved to ``path``.

    Args:
        model: a float32 network in eval mode (any registered architecture, a custom
            one that ``torch.export`` can trace, or the result of
            :func:`~resnetzoo.inference.optimize_for_inference` without ``dtype``).
            It is not modified.
        path: the file to write: ``.onnx`` or ``.pt2`` (another suffix needs ``format``).
        format: ``"onnx"`` (needs ``pip install 'resnetzoo[export]'``) or ``"pt2"``
            (``torch.export.save``; load with ``torch.export.load(path).module()``);
            default: the one ``path``'s suffix names (:func:`export_format`). A
            format that the suffix contradicts is refused.
        class_names: class names in logit order; default: the pretrained weights'
            (``model.weight_spec``) when the head still has their classes.
        preprocessing: default: the pretrained weights', else the model's
            ``pretrained_cfg`` (timm's convention), else ImageNet's at 224 px.
        check_shapes: ``(batch, height, width)`` shapes to verify; default
            (:data:`DEFAULT_SWEEP`) batch {1, 3, 17} x {224, 225, 448, 321x479}.
        tolerance: the largest relative difference accepted (max abs difference over
            the largest absolute eager output).
        opset: ONNX opset (default: torch's).
        overwrite: replace ``path`` if it exists.

    Returns:
        The :class:`ExportReport` (``ok`` is True).

    Raises:
        TypeError, ValueError: bad arguments (a suffix that names no format, or the
            other one), a model in training mode or not in float32.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        MissingDependencyError: onnx / onnxscript / onnxruntime are not installed.
        ExportError: the model cannot be traced, or the artefact does not compute what
            the model does (``err.report`` says where); nothing is written then.
    """
    started = time.perf_counter()
    check_shapes = DEFAULT_SWEEP if check_shapes is None else check_shapes
    network, path, format = _check_arguments(model, path, format, overwrite, tolerance, check_shapes)
    if format == "onnx":  # fail before minutes of tracing, not after
        for module in ("onnx", "onnxscript", "onnxruntime"):
            _require(module, what="ONNX export")
    meta = _metadata(network, class_names=class_names, preprocessing=preprocessing)
    in_chans, height, width = meta.preprocessing.input_size
    example = torch.randn(_TRACE_BATCH, in_chans, height, width)
    with torch.no_grad():
        program = _trace(network, example)
    outputs = len(program.graph_signature.user_outputs)
    if outputs > 1 or not meta.num_classes:
        names = ("features",) if outputs == 1 else tuple(f"features_{i}" for i in range(outputs))
        meta = dataclasses.replace(meta, output_names=names)
    with atomic_path(path) as tmp:  # moved into place only if the block ends without an exception
        if format == "onnx":
            symbolic = _write_onnx(program, example, tmp, meta, opset)
            run = _onnx_runner(tmp)
        else:
            symbolic, run = _write_pt2(program, tmp, meta)
        dims = _dimensions(program, symbolic, tuple(example.shape))
        checks = _sweep(network, run, check_shapes, in_chans, tolerance)
        report = ExportReport(path=path, format=format, metadata=meta, dimensions=dims, checks=checks,
                              tolerance=tolerance, seconds=time.perf_counter() - started)
        if not report.ok:
            raise ExportError(f"not written: the exported model does not compute what the model does\n{report}",
                              report)
    return report


def read_export_metadata(path: str | os.PathLike[str]) -> ExportMetadata:
    """The :class:`ExportMetadata` embedded in a file written by :func:`export`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds no resnetzoo metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if zipfile.is_zipfile(path):  # .pt2: read the one member, never the pickled parts
        with zipfile.ZipFile(path) as archive:
            member = next((i for i in archive.infolist() if i.filename.endswith(f"/extra/{_PT2_EXTRA}")), None)
            if member is not None and member.file_size > _MAX_METADATA_BYTES:
                raise ValueError(f"{path}: its {_PT2_EXTRA} is {member.file_size} bytes, more than metadata takes")
            text = archive.read(member).decode("utf-8") if member is not None else ""
    else:
        onnx = _require("onnx", what="reading ONNX metadata")
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        text = props.get(METADATA_KEY, "")
    if not text:
        raise ValueError(f"{path} holds no resnetzoo metadata (was it written by resnetzoo.export?)")
    return ExportMetadata.from_json(text)
