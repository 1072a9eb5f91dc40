"""Reading checkpoint files safely.

Two formats are read: safetensors (preferred; it holds only tensors) and
``torch.save`` files (zip, or the legacy pickle format), the latter only with
``torch.load(weights_only=True)``. resnetzoo never unpickles with code execution
and never falls back to ``weights_only=False`` after a refusal: that fallback is
itself the attack (CVE-2025-32434, CVE-2026-24747).

The format is told from the file's first bytes, not its name, so a mislabelled
file still loads, and the common wrong files (empty, truncated, a git-lfs
pointer, an HTML error page) get an error naming the file and the fix instead of
an unpickling traceback.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from resnetzoo._io import looks_like_html, open_regular
from resnetzoo.errors import CheckpointError, WeightsUnavailableError

__all__ = ["read_checkpoint"]

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


def _refusal_detail(message: str) -> str:
    # torch's message is long; the name of the global it blocked is the useful part.
    match = re.search(r"GLOBAL ([\w.]+)", message)
    return f" (it asks for {match.group(1)})" if match else ""


def _read_torch(path: Path) -> Any:
    try:
        # An open file, not the path: torch 2.14 hands any "*.safetensors" path to
        # safetensors by its name, and here the content has already said it is not one.
        with open_regular(path) as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if "Weights only load failed" not in message:
            raise CheckpointError(f"{path} is a corrupt pickle ({exc}). {_REDOWNLOAD}") from exc
        if "Unsupported operand" in message:
            # torch.save writes pickle protocol 2; newer opcodes mean a plain pickle.dump.
            raise CheckpointError(
                f"{path} is a pickle but not a torch.save file (it uses pickle opcodes that "
                f"torch.save never writes, as pickle.dump does); save the state dict with "
                f"torch.save or safetensors.torch.save_file."
            ) from exc
        raise CheckpointError(
            f"{path} was refused for safety: it contains Python objects other than tensors and "
            f"plain containers{_refusal_detail(message)}, and loading those would run code from "
            f"the file. resnetzoo never unpickles code. If you trust the file, convert it once "
            f"in a trusted environment, e.g. `sd = torch.load(path, weights_only=False)"
            f"['state_dict']; safetensors.torch.save_file(sd, 'model.safetensors')`, or, if what "
            f"it asks for is a plain data class (not a function), allow it with "
            f"torch.serialization.add_safe_globals([...])."
        ) from exc
    except EOFError as exc:
        raise CheckpointError(f"{path} ends too early: a truncated download or copy. {_REDOWNLOAD}") from exc
    except RuntimeError as exc:
        message = str(exc)
        if "PytorchStreamReader" in message or "zip archive" in message:
            raise CheckpointError(
                f"{path} is a truncated or corrupt torch.save archive (torch: {message.splitlines()[0]}). "
                f"This usually means an incomplete download. {_REDOWNLOAD}"
            ) from exc
        if "magic number" in message:
            raise CheckpointError(
                f"{path} is a pickle but not a torch.save file; save the state dict with torch.save "
                f"or safetensors.torch.save_file."
            ) from exc
        raise CheckpointError(f"cannot read {path}: {message.splitlines()[0]}") from exc


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[Any, dict[str, str]]:
    """Read a checkpoint file without executing code from it.

    Args:
        path: a ``.safetensors`` file or a ``torch.save`` file (``.pth``, ``.pt``,
            ``.bin``, ``.ckpt`` …); the format is told from the content.

    Returns:
        ``(obj, metadata)``: ``obj`` is what the file holds, usually a dict of
        tensors, possibly nested (a training checkpoint) or another container;
        unwrapping is the caller's job. ``metadata`` is the safetensors header's
        ``__metadata__`` (``{}`` for torch.save files).

    Raises:
        TypeError: ``path`` is not a str or os.PathLike.
        WeightsUnavailableError: the file does not exist (a FileNotFoundError).
        CheckpointError: the file is a folder, empty, truncated or corrupt, a git-lfs
            pointer, an HTML page, an unknown format, or a pickle refused for safety;
            the message names the file and the fix.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"read_checkpoint expects a file path, got {type(path).__name__}")
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
        return _read_safetensors(path)
    if kind in ("zip", "pickle"):
        return _read_torch(path), {}
    raise CheckpointError(
        f"{path} is not a checkpoint format resnetzoo reads (safetensors, or torch.save zip or "
        f"pickle); it starts with {head[:16]!r}."
    )
