"""Turning "where the weights are" into a loaded checkpoint.

A weight source may be a state dict already in memory, a file path, an
``http(s)://`` URL, an ``hf-hub:org/repo[@revision][:file]`` reference, or a
:class:`~resnetzoo.weights.WeightSpec`. :func:`read_source` fetches (cached and
verified) and reads (safely) any of them, and says where the result came from.
Unwrapping nested training checkpoints and renaming keys is the remap module's job.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from resnetzoo._io import open_regular
from resnetzoo.errors import CheckpointError, WeightsUnavailableError
from resnetzoo.weights.download import (
    download_url,
    fetch_weights,
    file_name_from_url,
    hash_prefix_from_name,
    hub_download,
)
from resnetzoo.weights.files import LoadedCheckpoint, UnsafeObjects, read_checkpoint_file
from resnetzoo.weights.records import WeightSpec, get_weights

__all__ = ["pretrained_source", "read_source"]

_HF_PREFIX = "hf-hub:"
_HF_REFERENCE = re.compile(r"hf-hub:(?P<repo>[^@:\s]+)(?:@(?P<revision>[^:\s]+))?(?::(?P<file>\S+))?")
_HF_DEFAULT_FILES = ("model.safetensors", "pytorch_model.bin")
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# Every field of transformers' ResNetConfig that changes what the weights compute or how
# they are laid out; passed on as metadata so that the load report can honour or refuse
# each one (remap.report checks them against the model).
_HF_CONFIG_FIELDS = (
    "model_type", "layer_type", "depths", "hidden_sizes", "embedding_size", "num_channels", "hidden_act",
    "downsample_in_first_stage", "downsample_in_bottleneck",
)
_MAX_CONFIG_BYTES = 1 << 20  # a config.json is a few KB
# A string that is meant as a file: it has a folder part, a home folder or a checkpoint suffix.
_PATH_LIKE = re.compile(r"[/\\~]|\.(?:pth|pt|bin|ckpt|safetensors|tar|pkl)$", re.IGNORECASE)
# The words pretrained= takes as a string, in any case (a shell passes only strings).
_NO_WEIGHTS = ("none", "false")
_DEFAULT_WEIGHTS = ("true",)
_ACCEPTED = (
    "a state dict (Mapping), a file path, a save_pretrained folder, an http(s):// URL, "
    "'hf-hub:org/repo[@revision][:file]', or a WeightSpec (resnetzoo.weights.get_weights)"
)


def _config_metadata(config_path: Path | None) -> dict[str, str]:
    if config_path is None or not config_path.exists():
        return {}
    try:
        with open_regular(config_path) as f:
            text = f.read(_MAX_CONFIG_BYTES + 1)
    except (OSError, ValueError) as exc:  # a folder, FIFO or device: never block on it
        raise CheckpointError(f"cannot read {config_path}: {exc}") from exc
    try:
        config = json.loads(text.decode("utf-8")) if len(text) <= _MAX_CONFIG_BYTES else None
    except ValueError:
        config = None
    if not isinstance(config, dict):
        # The config decides what the weights compute (v1 or v1.5, the activation ...):
        # loading without it could give outputs that look right and are not.
        raise CheckpointError(
            f"{config_path} is not a readable JSON config (corrupt, or over {_MAX_CONFIG_BYTES:,} bytes); "
            f"fix or remove it, or pass the weights file itself"
        )
    return {
        k: config[k] if isinstance(config[k], str) else json.dumps(config[k])
        for k in _HF_CONFIG_FIELDS
        if k in config
    }


def _from_file(
    path: Path, origin: str, *, config: Path | None = None, unsafe_objects: UnsafeObjects = "refuse"
) -> LoadedCheckpoint:
    if path.is_dir():
        return _from_folder(path, origin, unsafe_objects=unsafe_objects)
    loaded = read_checkpoint_file(path, unsafe_objects=unsafe_objects)
    return LoadedCheckpoint(loaded.obj, {**_config_metadata(config), **loaded.metadata}, origin, loaded.recovered)


def _from_folder(folder: Path, origin: str, *, unsafe_objects: UnsafeObjects) -> LoadedCheckpoint:
    # A transformers save_pretrained() folder: the weights file and the config beside it.
    for name in _HF_DEFAULT_FILES:
        if (folder / name).is_file():
            return _from_file(
                folder / name, f"{origin}/{name}", config=folder / "config.json", unsafe_objects=unsafe_objects
            )
    raise WeightsUnavailableError(
        f"{folder} is a folder without {' or '.join(_HF_DEFAULT_FILES)}; pass the weights file itself"
    )


def _hub_config(repo: str, revision: str | None) -> Path | None:
    try:
        return hub_download(repo, "config.json", revision=revision, progress=False)
    except WeightsUnavailableError:
        return None  # optional: repos of plain checkpoints have no config


def _from_url(url: str, *, unsafe_objects: UnsafeObjects) -> LoadedCheckpoint:
    # torch.hub's convention: "name-<sha256 prefix>.ext"; verify when the name carries one.
    path = download_url(url, sha256_prefix=hash_prefix_from_name(file_name_from_url(url)))
    return _from_file(path, url, unsafe_objects=unsafe_objects)


def _missing_file(exc: WeightsUnavailableError) -> bool:
    from huggingface_hub.errors import EntryNotFoundError

    return isinstance(exc.__cause__, EntryNotFoundError)


def _from_hub(reference: str, *, unsafe_objects: UnsafeObjects) -> LoadedCheckpoint:
    match = _HF_REFERENCE.fullmatch(reference)
    if match is None:
        raise ValueError(
            f"malformed Hub reference {reference!r}; expected 'hf-hub:org/repo', "
            f"'hf-hub:org/repo@revision' or 'hf-hub:org/repo[@revision]:path/to/file'"
        )
    repo, revision, file = match.group("repo", "revision", "file")
    at = f"@{revision}" if revision else ""
    if file is not None:
        return _from_file(
            hub_download(repo, file, revision=revision), f"hf-hub:{repo}{at}:{file}", unsafe_objects=unsafe_objects
        )
    config = _hub_config(repo, revision)
    failures: list[str] = []
    for candidate in _HF_DEFAULT_FILES:
        try:
            path = hub_download(repo, candidate, revision=revision)
        except WeightsUnavailableError as exc:
            if not _missing_file(exc):
                raise
            failures.append(f"  {candidate}: {exc}")
            continue
        return _from_file(path, f"hf-hub:{repo}{at}:{candidate}", config=config, unsafe_objects=unsafe_objects)
    raise WeightsUnavailableError(
        f"hf-hub:{repo}{at} has none of the default weight files, or they are not cached:\n"
        + "\n".join(failures)
        + f"\nName the file explicitly: 'hf-hub:{repo}{at}:<file>'."
    )


def read_source(
    source: Mapping[str, Any] | str | os.PathLike[str] | WeightSpec, *, unsafe_objects: UnsafeObjects = "refuse"
) -> LoadedCheckpoint:
    """Fetch and read weights from any supported source.

    Args:
        source: one of

            * a Mapping (a state dict already in memory; returned as is),
            * a ``str`` or ``os.PathLike`` path to a checkpoint file, or to a
              transformers ``save_pretrained`` folder (its ``config.json`` becomes
              metadata, so that e.g. v1 stride placement is reported),
            * an ``http://`` / ``https://`` URL, downloaded into
              :func:`~resnetzoo.weights.cache_dir` and checked against the sha256
              prefix in its file name when it has one (``name-<hex>.pth``),
            * ``"hf-hub:org/repo[@revision][:file]"``; without ``:file``,
              ``model.safetensors``, else ``pytorch_model.bin``, with the repo's
              ``config.json`` (when it has one) as metadata,
            * a :class:`~resnetzoo.weights.WeightSpec`, fetched with
              :func:`~resnetzoo.weights.fetch_weights`.
        unsafe_objects: for pickled files, ``"refuse"`` (default) or ``"stub"``; see
            :func:`~resnetzoo.weights.read_checkpoint`.

    Returns:
        The :class:`LoadedCheckpoint`.

    Raises:
        TypeError: ``source`` is none of the accepted types.
        ValueError: a string with an unsupported URL scheme or a malformed ``hf-hub:``
            reference.
        WeightsUnavailableError: the file cannot be found or fetched.
        CheckpointError: the file cannot be read safely (see
            :func:`~resnetzoo.weights.read_checkpoint`), including ChecksumError.
    """
    if isinstance(source, WeightSpec):
        path = fetch_weights(source)
        return _from_file(path, f"{source.name} ({path})", unsafe_objects=unsafe_objects)
    if isinstance(source, Mapping):
        return LoadedCheckpoint(source, {}, "state dict")
    if isinstance(source, os.PathLike):
        return _from_file(Path(source), os.fspath(source), unsafe_objects=unsafe_objects)
    if isinstance(source, str):
        if source.startswith(_HF_PREFIX):
            return _from_hub(source, unsafe_objects=unsafe_objects)
        if source.startswith(("http://", "https://")):
            return _from_url(source, unsafe_objects=unsafe_objects)
        if _URL_SCHEME.match(source):
            raise ValueError(f"unsupported URL scheme in {source!r}; accepted sources: {_ACCEPTED}")
        return _from_file(Path(source), source, unsafe_objects=unsafe_objects)
    raise TypeError(f"cannot read weights from a {type(source).__name__}; accepted sources: {_ACCEPTED}")


def pretrained_source(
    arch: str, pretrained: bool | str | os.PathLike[str] | None
) -> WeightSpec | str | os.PathLike[str] | None:
    """What ``pretrained=...`` asks for, for a model of architecture ``arch``.

    One vocabulary for every entry point (the constructors, :func:`~resnetzoo.create_model`
    and the recipe's ``--pretrained``):

    ==================================================  ======================================
    ``pretrained``                                      meaning
    ==================================================  ======================================
    ``False``, ``None``, ``"none"``, ``"false"``        no weights (returns ``None``)
    ``True``, ``"true"``                                the architecture's default weight set
    a tag (``"tv2_in1k"``) or full name                 that weight record
    (``"resnet50.tv2_in1k"``)
    a path (``str`` or ``os.PathLike``), an             that checkpoint, read by
    ``"hf-hub:org/repo[@rev][:file]"`` reference,       :func:`read_source` and remapped by
    or an ``http(s)://`` URL                            :func:`~resnetzoo.load_weights`
    ==================================================  ======================================

    The words ``"none"``, ``"false"`` and ``"true"`` are read in any case and around
    spaces, as a shell passes them (``--pretrained True``); a file of that name is
    ``./true``. An empty string is refused: it is a forgotten value more often than a
    choice, and ``None`` says "no weights" unambiguously. Another string is taken as
    a path when it looks like one (a folder separator, ``~``, or a checkpoint suffix
    such as ``.pth``/``.safetensors``), or when such a file exists and the string is
    not a tag of ``arch``.

    Args:
        arch: the architecture the weights are for, e.g. ``"resnet50"``.
        pretrained: the value given by the user.

    Returns:
        ``None``, a :class:`~resnetzoo.weights.WeightSpec`, or the source to read.

    Raises:
        TypeError: ``pretrained`` is of another type.
        ValueError: an empty string, an unknown tag (the message lists the known ones),
            or a full name of another architecture's weights.
    """
    if pretrained is None or pretrained is False:
        return None
    if pretrained is True:
        return get_weights(arch)
    if isinstance(pretrained, os.PathLike):
        return pretrained
    if not isinstance(pretrained, str):
        raise TypeError(
            f"pretrained must be True/False/None, a weight tag, a checkpoint path, an hf-hub: reference "
            f"or a URL, got {type(pretrained).__name__}"
        )
    value = pretrained.strip()
    if not value:
        raise ValueError(
            f"pretrained={pretrained!r} is empty; pass None or 'none' for no weights, True or 'true' for the "
            f"default weights, a tag, a checkpoint path, an hf-hub: reference or a URL"
        )
    if value.lower() in _NO_WEIGHTS:
        return None
    if value.lower() in _DEFAULT_WEIGHTS:
        return get_weights(arch)
    if value.startswith(_HF_PREFIX) or _URL_SCHEME.match(value) or _PATH_LIKE.search(value):
        return value
    name_arch, dot, tag = value.partition(".")
    if dot and name_arch != arch:
        if Path(value).exists():
            return value
        raise ValueError(
            f"pretrained={value!r} names weights of {name_arch}, but the model is {arch}; "
            f"build {name_arch} instead, or pass a tag of {arch} (resnetzoo list '{arch}.*')"
        )
    try:
        return get_weights(arch, tag if dot else value)
    except ValueError as exc:
        if Path(value).exists():
            return value  # not a tag of this architecture, but a file of that name is there
        raise ValueError(f"{exc} pretrained= also takes a checkpoint path, an hf-hub: reference or a URL.") from exc
