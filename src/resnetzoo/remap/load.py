"""Load any ResNet checkpoint into a model by name, with a report; save in the native format.

:func:`load_weights` reads a checkpoint (state dict, file, URL or ``hf-hub:``
name, through :func:`resnetzoo.weights.read_source`), renames it to native keys
(:mod:`resnetzoo.remap.conventions`), compares it with the model
(:mod:`resnetzoo.remap.report`) and copies what fits. :func:`diagnose` does the
same without touching the model. :func:`save_weights` writes a model as a
safetensors file that carries its architecture and naming convention.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from resnetzoo._io import save_safetensors
from resnetzoo._version import __version__
from resnetzoo.errors import WeightsLoadError
from resnetzoo.remap.checks import model_facts
from resnetzoo.remap.conventions import NATIVE, TIMM, to_native
from resnetzoo.remap.report import LoadReport, build_report
from resnetzoo.weights import LoadedCheckpoint, read_source
from resnetzoo.weights.files import UnsafeObjects

__all__ = ["diagnose", "load_weights", "save_weights"]

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------ helpers
def _check_model(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _head_prefix(model: nn.Module) -> str:
    """Module name of the classifier: ``get_classifier()``'s name when the model has one, else ``fc``."""
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head = get_classifier()
        for name, module in model.named_modules():
            if module is head and name:
                return name
    return "fc"


def _read(source: Any, unsafe_objects: UnsafeObjects) -> LoadedCheckpoint:
    # An already-read checkpoint (the CLI reads once to size the model) keeps its origin.
    return source if isinstance(source, LoadedCheckpoint) else read_source(source, unsafe_objects=unsafe_objects)


def _analyse(
    model: nn.Module,
    source: Any,
    *,
    head_left: bool,
    convention: str | None,
    unsafe_objects: UnsafeObjects,
    prefix: str | None = None,
) -> tuple[LoadReport, dict[str, torch.Tensor]]:
    """Read, remap and compare; return the report and the native state dict."""
    _check_model(model)
    loaded = _read(source, unsafe_objects)
    metadata = dict(loaded.metadata or {})
    if convention is None and metadata.get("convention") in (NATIVE.name, TIMM.name):
        convention = metadata["convention"]  # written by save_weights (or a timm/torchvision export): no guessing
    model_state = model.state_dict()
    remapped = to_native(loaded.obj, target_keys=model_state.keys(), convention=convention, prefix=prefix)
    report = build_report(
        remapped,
        model_state,
        origin=loaded.origin,
        metadata=metadata,
        model_arch=getattr(model, "arch", None),
        head_prefix=_head_prefix(model),
        head_left=head_left,
        facts=model_facts(model),
        recovered=loaded.recovered,
    )
    return report, remapped.state_dict


def _staged(
    model_state: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor], keys: list[str], zeroed: list[str]
) -> dict[str, torch.Tensor]:
    """Every value to copy, already of the model tensor's dtype and on its device.

    Converting is where a copy can fail (out of memory on the device, a tensor that
    refuses conversion); done for all values before the first copy, a failure leaves
    the model untouched.
    """
    staged = {}
    for key in keys:
        target = model_state[key]
        staged[key] = state_dict[key].detach().to(device=target.device, dtype=target.dtype)
    for key in zeroed:
        staged[key] = torch.zeros_like(model_state[key])
    return staged


def _copy_into(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], keys: list[str], zeroed: list[str], report: LoadReport
) -> None:
    """Copy ``state_dict[k]`` for ``keys``, and zeros for ``zeroed``, into the model in place, all or nothing."""
    try:
        staged = _staged(model.state_dict(), state_dict, keys, zeroed)
    except Exception as exc:  # any failure before the first copy: nothing was changed
        raise WeightsLoadError(
            f"cannot load {report.origin}: converting its tensors to the model's dtypes and devices failed "
            f"({type(exc).__name__}: {exc}); the model is unchanged",
            report,
        ) from exc
    # load_state_dict copies under no_grad into the existing tensors, and module hooks
    # (_load_from_state_dict) still run. Every key came from model.state_dict() with its
    # shape, dtype and values checked and converted, so nothing is rejected half-way.
    model.load_state_dict(staged, strict=False)


# --------------------------------------------------------------- public API
def diagnose(
    model: nn.Module,
    source: Any,
    *,
    convention: str | None = None,
    unsafe_objects: UnsafeObjects = "refuse",
    prefix: str | None = None,
) -> LoadReport:
    """Report how a checkpoint fits ``model`` without changing the model.

    Args:
        model: the network to compare with (any ``nn.Module``; tensors may be on the
            meta device, only names and shapes are used).
        source: a state dict or training checkpoint (mapping), a file path
            (``.safetensors``, ``.pth``, ``.pt``, ``.bin``, ``.ckpt``), an http(s) URL,
            ``"hf-hub:org/repo[@revision][:filename]"``, a
            :class:`~resnetzoo.weights.WeightSpec`, or a
            :class:`~resnetzoo.weights.LoadedCheckpoint` already read.
        convention: force a naming convention (see
            :data:`~resnetzoo.remap.conventions.CONVENTIONS`) instead of detecting one.
        unsafe_objects: for a pickled checkpoint that also holds Python objects other
            than tensors (an ``argparse.Namespace``, numpy scalars, a whole pickled
            model): ``"refuse"`` (default) or ``"stub"`` to recover its tensors without
            running anything from the file (see :func:`~resnetzoo.weights.read_checkpoint`);
            the objects appear as plain data in ``report.recovered``.
        prefix: take the checkpoint's keys under this prefix (``"module.encoder_k."``)
            instead of the sub-tree that fits the model best (see
            :func:`~resnetzoo.remap.conventions.discover`).

    Returns:
        the :class:`~resnetzoo.remap.report.LoadReport` (``loaded`` is ``False``).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        CheckpointError: the source cannot be read or holds no state dict.
        ArchitectureError: two sub-trees of the checkpoint fit equally well and
            ``prefix`` does not choose.
        WeightsUnavailableError: a remote source cannot be fetched.
    """
    report, _ = _analyse(
        model, source, head_left=False, convention=convention, unsafe_objects=unsafe_objects, prefix=prefix
    )
    return report


def load_weights(
    model: nn.Module,
    source: Any,
    *,
    strict: bool = True,
    ignore_head: bool = False,
    convention: str | None = None,
    unsafe_objects: UnsafeObjects = "refuse",
    prefix: str | None = None,
) -> LoadReport:
    """Load a checkpoint into ``model`` by name, whatever library saved it.

    The checkpoint is unwrapped (``{"state_dict": …}``, ``module.`` …), renamed to
    native keys and compared with ``model.state_dict()``. Values are copied in place
    under ``torch.no_grad()`` and keep the model's dtype and device.
    ``num_batches_tracked`` buffers absent from the checkpoint are set to zero.

    Loading is all or nothing: every value is checked (names, shapes, dtypes, finite
    values, real data) and converted first, and only then copied, so a load that fails
    leaves the model exactly as it was.

    Args:
        model: the network to load into.
        source: as for :func:`diagnose`.
        strict: ``True``: load only if every key fits with usable values and no recorded
            setting conflicts with the model, else raise and leave the model unchanged.
            ``False``: load every tensor whose name, shape and values fit, report the rest.
        ignore_head: allow the classifier to differ (other class count, or absent on
            one side, as with ``num_classes=0``) even when strict; it keeps its
            initialisation. A classifier that fits is still loaded.
        convention: force a naming convention instead of detecting one.
        unsafe_objects: ``"refuse"`` (default) or ``"stub"``; as for :func:`diagnose`.
        prefix: take the checkpoint's keys under this prefix instead of the sub-tree
            that fits best (as for :func:`diagnose`).

    Returns:
        the :class:`~resnetzoo.remap.report.LoadReport`, also stored as
        ``model.load_report`` and logged at INFO on the ``resnetzoo`` logger.

    Raises:
        WeightsLoadError: ``strict`` and something does not fit, or the values cannot
            be converted to the model's; ``.report`` holds the report and the model is
            unchanged.
        TypeError: ``model`` is not an ``nn.Module``.
        CheckpointError, WeightsUnavailableError: as for :func:`diagnose`.
    """
    report, state_dict = _analyse(
        model,
        source,
        head_left=ignore_head or not strict,
        convention=convention,
        unsafe_objects=unsafe_objects,
        prefix=prefix,
    )
    if strict and (report.problem_keys(ignore_head=ignore_head) or report.conflicts):
        raise WeightsLoadError(
            f"checkpoint does not fit the model: {report}\nPass strict=False to load what fits.",
            report,
        )
    _copy_into(model, state_dict, report.matched, report.filled, report)
    report.loaded = True
    model.load_report = report
    logger.info("%s%s", report.summary, "".join(f"\n  - {h}" for h in report.hints))
    return report


def _savable(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors with no two sharing memory (safetensors refuses shared storage)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[str, int]] = set()
    for key, tensor in state.items():
        t = tensor.detach()
        storage = (str(t.device), t.untyped_storage().data_ptr())
        if t.numel() and storage in seen:
            t = t.clone()
        seen.add(storage)
        out[key] = t.to("cpu").contiguous()
    return out


def save_weights(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model.state_dict()`` as a safetensors file with native key names.

    The file's metadata records ``format`` (``"pt"``), ``resnetzoo_version``,
    ``arch`` and ``stride_in_1x1`` (when the model has them) and ``convention``
    (``"torchvision"``, the native names), plus ``metadata``; :func:`load_weights` reads them back, so the
    file loads without convention detection and a different ``arch`` gets a hint.
    The file is written to a temporary name next to ``path`` and moved into place,
    so an interrupted save never leaves half a file under ``path``.

    Args:
        model: the network to save.
        path: destination; must end in ``.safetensors``.
        metadata: extra ``str`` → ``str`` entries (a user entry overrides a default one).
        overwrite: replace an existing file at ``path``.

    Returns:
        the path written.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is ``False``.
        ValueError: ``path`` does not end in ``.safetensors``.
        TypeError: ``model`` is not an ``nn.Module`` or ``metadata`` is not ``str`` → ``str``.
    """
    _check_model(model)
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_weights writes safetensors; give a path ending in .safetensors, got {str(path)!r}")
    extra = dict(metadata or {})
    bad = [k for k, v in extra.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise TypeError(f"metadata must map str to str; entries {bad!r} are not (convert values with str())")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    header = {"format": "pt", "resnetzoo_version": __version__, "convention": NATIVE.name}
    arch = getattr(model, "arch", None)
    if isinstance(arch, str) and arch:
        header["arch"] = arch
    stride_in_1x1 = getattr(model, "stride_in_1x1", None)
    if isinstance(stride_in_1x1, bool):  # v1 or v1.5: the weights alone cannot tell
        header["stride_in_1x1"] = str(stride_in_1x1).lower()
    header.update(extra)

    path.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(path, _savable(model.state_dict()), metadata=header)
    return path

