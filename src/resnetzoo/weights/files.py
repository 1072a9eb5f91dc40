"""Reading checkpoint files safely.

Two formats are read: safetensors (preferred; it holds only tensors) and
``torch.save`` files (zip, or the legacy pickle format), the latter only with
``torch.load(weights_only=True)``. resnetzoo never unpickles with code execution
and never falls back to ``weights_only=False`` after a refusal: that fallback is
itself the attack (CVE-2025-32434, CVE-2026-24747).

The format is told from the file's first bytes, not its name, so a mislabelled
file still loads, and the common wrong files (empty, truncated, a git-lfs
pointer, an HTML error page) get an error naming the file and the fix instead of
an unpickling traceback. Only regular files are read (a FIFO named ``x.pt`` would
block the reader).

Work is bounded by the file's size: before torch reads a torch.save file, its pickle
is read with inert stand-ins (nothing runs) and every tensor it declares is checked
against the bytes the file holds for it, so a small file cannot make torch allocate
terabytes or pose a broadcast view as a huge classifier.

numpy arrays (detectron2's ``.pkl`` files are ``pickle.dump`` of ``{name: ndarray}``) are
read as tensors by default: a numeric dtype, a shape and the file's bytes are data, and
they are read without importing or calling numpy.

A training checkpoint refused because it also holds other Python objects (an
``argparse.Namespace``, an omegaconf config, numpy scalars, a whole pickled model) can
be *recovered* on request, ``unsafe_objects="stub"``: the tensors are rebuilt by
torch's own loader, and every other object becomes plain data describing it, without
importing or calling anything the file names.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open

from resnetzoo._io import looks_like_html, open_regular
from resnetzoo.errors import CheckpointError, WeightsUnavailableError
from resnetzoo.weights._unpickle import (
    NUMPY_ARRAY_GLOBALS,
    describe_refusal,
    is_legacy_torch_file,
    numpy_arrays_as_tensors,
    recover,
    resolve_stand_ins,
    scan_pickle,
    scan_torch_file,
)

__all__ = [
    "UNSAFE_OBJECTS",
    "LoadedCheckpoint",
    "UnsafeObjects",
    "read_checkpoint",
    "read_checkpoint_file",
    "read_training_checkpoint",
]

#: What to do with Python objects other than tensors in a pickled checkpoint:
#: ``"refuse"`` (the default) or ``"stub"`` (recover the tensors; see the module docstring).
UnsafeObjects = Literal["refuse", "stub"]
UNSAFE_OBJECTS: tuple[str, ...] = ("refuse", "stub")


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint read from a source.

    Attributes:
        obj: what the source holds: usually a dict of tensors, possibly a nested
            training checkpoint.
        metadata: the safetensors ``__metadata__`` (``{}`` otherwise), and for a
            transformers folder or Hub repo the fields of its ``config.json`` that
            decide what the weights compute.
        origin: where it came from, for messages and reports: ``"state dict"``, a
            path, a URL, an ``hf-hub:`` reference, or a weight name with its file.
        recovered: with ``unsafe_objects="stub"``, each Python object that was not
            a tensor, by its place in the checkpoint (``"checkpoint['args']"``), as
            plain data (``{"__class__": "argparse.Namespace", "lr": 0.1}``); else empty.
    """

    obj: Any
    metadata: dict[str, str]
    origin: str
    recovered: dict[str, Any] = field(default_factory=dict)


_LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"
_REDOWNLOAD = "Delete it and download it again."

# Files that are certainly not weights: what they are, and what to do.
_NOT_WEIGHTS = {
    "empty": "is empty (0 bytes): an interrupted download or copy. " + _REDOWNLOAD,
    "lfs-pointer": (
        "is a git-lfs pointer file, not the weights: the repository was cloned without git-lfs. "
        "Run `git lfs install && git lfs pull` in the clone, or download the file directly."
    ),
    "html": (
        "is an HTML page, not weights: a download saved an error or login page instead of the "
        "file. " + _REDOWNLOAD + " Check the URL, and for gated Hub repos that you are logged in."
    ),
}


def _sniff(head: bytes, size: int) -> str:
    """Name the format from the first bytes: safetensors, zip, pickle, or a _NOT_WEIGHTS key."""
    if size == 0:
        return "empty"
    if head.startswith(_LFS_POINTER):
        return "lfs-pointer"
    if looks_like_html(head):
        return "html"
    # safetensors first: its 8-byte little-endian header length, then a JSON header. The
    # length's first byte can be anything, 0x80 (a pickle's first byte) included.
    if size > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8:
        return "safetensors"
    if head.startswith(b"PK"):
        return "zip"  # torch.save's default format since torch 1.6
    if head.startswith(b"\x80"):
        return "pickle"  # pickle protocol >= 2: legacy torch.save, or a plain pickle
    return "unknown"


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except SafetensorError as exc:
        raise CheckpointError(
            f"{path} is a corrupt or truncated safetensors file ({exc}). {_REDOWNLOAD}"
        ) from exc
    return tensors, metadata


_RECOVER_HINT = (
    "To recover the tensors without running anything from the file, pass unsafe_objects='stub' "
    "(e.g. resnetzoo.load_weights(model, path, unsafe_objects='stub'); on the command line "
    "--unsafe-objects stub): every other object is kept as plain data in the report."
)


def _refusal(path: Path, layout_root: Any, unsafe_globals: list[str]) -> CheckpointError:
    what = describe_refusal(layout_root, unsafe_globals)
    return CheckpointError(
        f"{path} was refused for safety: {what}. resnetzoo never unpickles code. {_RECOVER_HINT} "
        f"If you trust the file, you can also convert it once in a trusted environment "
        f"(torch.load(path, weights_only=False), then save the tensors with torch.save or "
        f"safetensors), or allow a plain data class with torch.serialization.add_safe_globals([...])."
    )


def _torch_error(path: Path, exc: Exception) -> CheckpointError:
    message = str(exc)
    if isinstance(exc, EOFError):
        return CheckpointError(f"{path} ends too early: a truncated download or copy. {_REDOWNLOAD}")
    if "PytorchStreamReader" in message or "zip archive" in message or "record size" in message:
        return CheckpointError(
            f"{path} is a truncated or corrupt torch.save archive (torch: {message.splitlines()[0]}). "
            f"This usually means an incomplete download. {_REDOWNLOAD}"
        )
    first = message.splitlines()[0] if message else type(exc).__name__
    return CheckpointError(f"cannot read {path}: {first}")


def _only_numpy_arrays(unsafe_globals: list[str]) -> bool:
    return bool(unsafe_globals) and set(unsafe_globals) <= NUMPY_ARRAY_GLOBALS


def _read_numpy_arrays(path: Path, f: Any, size: int) -> Any:
    """A pickle whose only objects besides tensors are numpy arrays (detectron2's ``.pkl``): arrays become tensors.

    Read by default: an array is pure data (a numeric dtype, a shape and the file's bytes),
    read without importing or calling numpy; see ``numpy_arrays_as_tensors``.
    """
    try:
        return numpy_arrays_as_tensors(recover(f, size))
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc


def _read_torch(path: Path, *, unsafe_objects: UnsafeObjects) -> tuple[Any, dict[str, Any]]:
    """Read a torch.save file (or, when recovering, a plain pickle); return ``(obj, recovered)``."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(64)
        is_torch_file = head.startswith(b"PK") or is_legacy_torch_file(head)
        if unsafe_objects == "stub":
            try:
                obj = recover(f, size)
            except CheckpointError as exc:
                raise CheckpointError(f"{path}: {exc}") from exc
            return resolve_stand_ins(obj)
        if not is_torch_file:
            try:
                layout = scan_pickle(f, size)
            except CheckpointError as exc:
                raise CheckpointError(f"{path} is a corrupt pickle ({exc}). {_REDOWNLOAD}") from exc
            if _only_numpy_arrays(layout.unsafe_globals()):
                return _read_numpy_arrays(path, f, size), {}
            if layout.unsafe_globals():
                raise _refusal(path, layout.root, layout.unsafe_globals())
            raise CheckpointError(
                f"{path} is a pickle but not a torch.save file (as pickle.dump writes); save the state dict "
                f"with torch.save or safetensors.torch.save_file. {_RECOVER_HINT}"
            )
        try:
            layout = scan_torch_file(f, size)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}. {_REDOWNLOAD}") from exc
        layout.check_backed(path)
        if _only_numpy_arrays(layout.unsafe_globals()):
            return _read_numpy_arrays(path, f, size), {}
        f.seek(0)
        try:
            return torch.load(f, map_location="cpu", weights_only=True), {}
        except pickle.UnpicklingError as exc:
            if "Weights only load failed" in str(exc):
                raise _refusal(path, layout.root, layout.unsafe_globals()) from exc
            raise CheckpointError(f"{path} is a corrupt pickle ({exc}). {_REDOWNLOAD}") from exc
        except (EOFError, RuntimeError, ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
            raise _torch_error(path, exc) from exc


def _check_unsafe_objects(value: Any) -> UnsafeObjects:
    if value not in UNSAFE_OBJECTS:
        raise ValueError(f"unsafe_objects must be one of {UNSAFE_OBJECTS}, got {value!r}")
    return value


def read_checkpoint_file(path: str | os.PathLike[str], *, unsafe_objects: UnsafeObjects = "refuse") -> LoadedCheckpoint:
    """Read a checkpoint file without executing code from it; see :func:`read_checkpoint`.

    Returns:
        the :class:`LoadedCheckpoint`, with the path as its origin and, with
        ``unsafe_objects="stub"``, the recovered objects.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"read_checkpoint expects a file path, got {type(path).__name__}")
    unsafe_objects = _check_unsafe_objects(unsafe_objects)
    path = Path(path).expanduser()
    if not path.exists():
        raise WeightsUnavailableError(f"checkpoint file not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass the weight file inside it (e.g. model.safetensors)")
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(64)
    except ValueError as exc:  # a FIFO or device: reading it could block or never end
        raise CheckpointError(f"{exc}; pass a checkpoint file") from exc
    kind = _sniff(head, size)
    if kind == "unknown" and path.suffix == ".safetensors":
        kind = "safetensors"  # let safetensors say what is wrong with the header
    if kind in _NOT_WEIGHTS:
        raise CheckpointError(f"{path} {_NOT_WEIGHTS[kind]}")
    if kind == "safetensors":
        tensors, metadata = _read_safetensors(path)
        return LoadedCheckpoint(tensors, metadata, str(path))
    if kind in ("zip", "pickle"):
        obj, recovered = _read_torch(path, unsafe_objects=unsafe_objects)
        return LoadedCheckpoint(obj, {}, str(path), recovered)
    raise CheckpointError(
        f"{path} is not a checkpoint format resnetzoo reads (safetensors, or torch.save zip or "
        f"pickle); it starts with {head[:16]!r}."
    )


def read_checkpoint(
    path: str | os.PathLike[str], *, unsafe_objects: UnsafeObjects = "refuse"
) -> tuple[Any, dict[str, str]]:
    """Read a checkpoint file without executing code from it.

    Args:
        path: a ``.safetensors`` file or a ``torch.save`` file (``.pth``, ``.pt``,
            ``.bin``, ``.ckpt`` …); the format is told from the content.
        unsafe_objects: what to do with Python objects other than tensors and plain
            containers in a pickled file. ``"refuse"`` (default): raise
            :class:`~resnetzoo.CheckpointError` naming them. ``"stub"``: recover the
            tensors (rebuilt by torch's own loader, bit-identical to
            ``weights_only=False``) and turn every other object into plain data that
            describes it, without importing or calling anything the file names; a whole
            pickled ``nn.Module`` becomes its state dict, numpy scalars numbers. Plain
            ``pickle.dump`` files are read too. Use :func:`read_checkpoint_file` to see
            the recovered objects.

    Returns:
        ``(obj, metadata)``: ``obj`` is what the file holds, usually a dict of
        tensors, possibly nested (a training checkpoint) or another container;
        unwrapping is the caller's job. ``metadata`` is the safetensors header's
        ``__metadata__`` (``{}`` for torch.save files).

    Raises:
        TypeError: ``path`` is not a str or os.PathLike.
        ValueError: ``unsafe_objects`` is not ``"refuse"`` or ``"stub"``.
        WeightsUnavailableError: the file does not exist (a FileNotFoundError).
        CheckpointError: the file is a folder, a FIFO or device, empty, truncated or
            corrupt, a git-lfs pointer, an HTML page, an unknown format, declares more
            tensor data than it holds, or is a pickle refused for safety; the message
            names the file and the fix.
    """
    loaded = read_checkpoint_file(path, unsafe_objects=unsafe_objects)
    return loaded.obj, loaded.metadata


def read_training_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training checkpoint you wrote (model, optimizer, epoch …) as a dict, safely.

    The one reader for resuming training: the same checks as :func:`read_checkpoint`
    (``weights_only=True``, size bounds, clear errors for truncated or wrong files), and
    the file must hold a dict, as ``torch.save({"model": ..., "optimizer": ...}, path)``
    writes. Tensors, numbers, strings and plain containers come back as saved.

    Raises:
        WeightsUnavailableError: the file does not exist (a FileNotFoundError).
        CheckpointError: the file cannot be read safely, or does not hold a dict.
    """
    obj, _ = read_checkpoint(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a training checkpoint dict")
    return dict(obj)
