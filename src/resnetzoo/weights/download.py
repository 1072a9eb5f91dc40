"""Fetching weight files from a URL or the Hugging Face Hub: cached, verified, offline-aware.

Two gaps in the usual tools are closed here (pytorch/pytorch#191194; huggingface_hub#2364, #3643):
``torch.hub`` checks a file's hash only while downloading, never a cached copy,
and ``huggingface_hub`` checks only a cached blob's size. Here every cached
file with a known checksum is hashed before use, and a Hub blob is checked
against its content address (its file name).

Downloads go to a temporary file in the destination folder and are moved into
place with :func:`os.replace` only after verification, so a partial or bad
download never appears under the final name, and processes downloading the
same file at once (DDP ranks) each finish with one complete, verified file.

Offline mode (``RESNETZOO_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``) never touches the
network: a missing file fails at once with instructions to supply it by hand.
"""

from __future__ import annotations

import logging
import os
import re
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

import torch.hub
from tqdm.auto import tqdm

from resnetzoo._io import file_digest, http_download, is_offline, sha256_file
from resnetzoo.errors import ChecksumError, DownloadError, WeightsUnavailableError

if TYPE_CHECKING:
    from resnetzoo.weights.records import WeightSpec

__all__ = [
    "cache_dir",
    "download_url",
    "fetch_weights",
    "file_name_from_url",
    "hash_prefix_from_name",
    "hub_download",
    "is_offline",
    "sha256_file",
]

logger = logging.getLogger(__name__)

_TIMEOUT_S = 30.0  # per socket operation: a dead server fails within this, never hangs
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.")
_SHA256_NAME = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1_NAME = re.compile(r"[0-9a-f]{40}")
_LOAD_BY_HAND = "resnetzoo.load_weights(model, '/path/to/file')"

def cache_dir() -> Path:
    """The folder downloaded weight files are kept in.

    ``$RESNETZOO_CACHE`` if set, else ``torch.hub.get_dir()/checkpoints``, the
    folder torchvision downloads to, so files it already fetched are reused.

    Returns:
        The folder (it may not exist yet).
    """
    override = os.environ.get("RESNETZOO_CACHE")
    if override:
        return Path(override).expanduser()
    return Path(torch.hub.get_dir()) / "checkpoints"


_default_cache_dir = cache_dir  # download_url's ``cache_dir`` argument shadows the function


def hash_prefix_from_name(file_name: str) -> str | None:
    """The sha256 prefix a file name carries, by torch.hub's ``name-<hex>.ext`` convention.

    Args:
        file_name: a file name such as ``"resnet50-0676ba61.pth"``.

    Returns:
        The 8 to 64 hex digits (``"0676ba61"``), or None when the name has none.
    """
    match = _HASH_IN_NAME.search(file_name)
    return match.group(1) if match else None


def _normalise_hex(value: str | None, *, argument: str, min_len: int) -> str | None:
    if value is None:
        return None
    lowered = value.strip().lower() if isinstance(value, str) else ""
    if not re.fullmatch(r"[0-9a-f]+", lowered) or not min_len <= len(lowered) <= 64:
        raise ValueError(f"{argument} must be {min_len} to 64 hex digits, got {value!r}")
    return lowered


def file_name_from_url(url: str) -> str:
    """The file name a URL points at: the last part of its path, unquoted.

    Raises:
        ValueError: the URL's path ends in ``/``.
    """
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    if not name:
        raise ValueError(f"cannot tell a file name from URL {url!r}; pass file_name=")
    return name


def _url_help(url: str, dest: Path) -> str:
    return (
        f"To supply it by hand: download {url} where you have access and save it as {dest} "
        f"(the folder is set by RESNETZOO_CACHE), or load any copy with {_LOAD_BY_HAND}."
    )


def _download_to(url: str, dest: Path, *, expected: str | None, progress: bool) -> None:
    with tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, disable=not progress) as bar:

        def show(received: int, total: int | None) -> None:
            bar.total = total
            bar.update(received - bar.n)

        try:
            http_download(url, dest, sha256=expected, timeout=_TIMEOUT_S, on_progress=show)
        except DownloadError as exc:
            raise WeightsUnavailableError(f"could not download {url}: {exc}. {_url_help(url, dest)}") from exc
    if expected is None:
        logger.warning("no checksum is known for %s; the download was not verified", url)


def _check_cached(path: Path, *, expected: str | None) -> None:
    if expected is None:
        return
    digest = sha256_file(path)
    if not digest.startswith(expected):
        raise ChecksumError(
            f"the cached file {path} has sha256 {digest}, but {expected} was expected: it is "
            f"corrupt, truncated or was replaced. resnetzoo does not delete your files; delete "
            f"it by hand and run again to download it afresh."
        )


def download_url(
    url: str,
    *,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    file_name: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Path:
    """Download a file into the cache once, verify it, and return its path.

    A file already in the cache is verified (when a checksum is given) and
    returned without touching the network.

    Args:
        url: an ``http://`` or ``https://`` URL.
        sha256: the file's full sha256 hex digest, if known.
        sha256_prefix: leading hex digits (8 or more) of the digest, if that is all that is known.
        file_name: name to save under; default: the last part of the URL's path.
        cache_dir: folder to save in; default: :func:`resnetzoo.weights.cache_dir`.
        progress: show a tqdm progress bar while downloading.

    Returns:
        Path of the verified file in the cache.

    Raises:
        ValueError: a malformed URL, file name or checksum.
        ChecksumError: the cached or downloaded file does not match the checksum
            (a bad download is discarded; a bad cached file is left for you to delete).
        WeightsUnavailableError: offline and not cached, the server is unreachable or
            answers with an error or an HTML page; the message says where to put the
            file by hand.
    """
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"download_url needs an http:// or https:// URL, got {url!r}")
    sha256 = _normalise_hex(sha256, argument="sha256", min_len=64)
    sha256_prefix = _normalise_hex(sha256_prefix, argument="sha256_prefix", min_len=8)
    expected = sha256 or sha256_prefix
    name = file_name if file_name is not None else file_name_from_url(url)
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"file_name must be a plain file name without folders, got {name!r}")
    folder = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir()
    dest = folder / name

    if dest.is_file():
        _check_cached(dest, expected=expected)
        return dest
    if is_offline():
        raise WeightsUnavailableError(
            f"{name} is not in the cache and offline mode is on (RESNETZOO_OFFLINE or "
            f"HF_HUB_OFFLINE), so {url} was not downloaded. {_url_help(url, dest)}"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsUnavailableError(
            f"cannot create the cache folder {folder} ({exc}); set RESNETZOO_CACHE to a writable folder"
        ) from exc
    _download_to(url, dest, expected=expected, progress=progress)
    return dest


class _SilentTqdm(tqdm):
    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def _hub_help(repo_id: str, filename: str) -> str:
    return (
        f"To supply it by hand: where you have access, run `hf download {repo_id} {filename}` and "
        f"copy the Hugging Face cache folder (HF_HUB_CACHE) here, or download the file and load "
        f"it with {_LOAD_BY_HAND}."
    )


def _check_hub_blob(path: Path, *, repo_id: str, filename: str) -> None:
    # In the Hub cache, snapshots/<commit>/<file> links to blobs/<name>, where <name> is the
    # sha256 of the content for LFS files and the git blob sha1 for small files.
    blob = Path(os.path.realpath(path))
    if blob.parent.name != "blobs":
        logger.debug("%s is not a content-addressed blob (no symlinks?); content not verified", path)
        return
    if _SHA256_NAME.fullmatch(blob.name):
        digest = sha256_file(blob)
    elif _GIT_SHA1_NAME.fullmatch(blob.name):
        digest = file_digest(blob, "sha1", header=f"blob {blob.stat().st_size}\0".encode())
    else:
        return
    if digest != blob.name:
        raise ChecksumError(
            f"{filename} from the Hugging Face repo {repo_id} is corrupt in the cache: the blob "
            f"{blob} has content hash {digest}, but its name says {blob.name}. Delete that blob "
            f"and the link {path}, then run again to download it afresh (resnetzoo does not "
            f"delete cache files itself)."
        )


def hub_download(
    repo_id: str, filename: str, *, revision: str | None = None, progress: bool = True
) -> Path:
    """Fetch one file from the Hugging Face Hub (or its cache) and verify its content.

    Uses :func:`huggingface_hub.hf_hub_download`, with ``local_files_only`` when
    :func:`is_offline`; then hashes the cached blob and compares it with the
    blob's name, which is the content's sha256 for LFS files.

    Args:
        repo_id: Hub repository, e.g. ``"timm/resnet50.a1_in1k"``.
        filename: file in the repository, e.g. ``"model.safetensors"``.
        revision: branch, tag or commit; None for the default branch.
        progress: show huggingface_hub's progress bar.

    Returns:
        Path of the file in the Hub cache.

    Raises:
        ValueError: ``repo_id`` is not a valid repository name.
        ChecksumError: the cached blob's content does not match its name.
        WeightsUnavailableError: the repository, revision or file does not exist, is
            gated, or cannot be reached and is not cached; the message says how to
            supply it by hand. ``__cause__`` holds huggingface_hub's own error.
    """
    for argument, value in (("repo_id", repo_id), ("filename", filename)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"hub_download needs a non-empty string {argument}, got {value!r}")
    # Imported here: huggingface_hub reads HF_HUB_OFFLINE and HF_HUB_CACHE when it is first
    # imported, so importing it late lets users set them after importing resnetzoo.
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import hf_hub_download

    where = f"{filename} from the Hugging Face repo {repo_id}" + (f" at revision {revision}" if revision else "")
    try:
        path = hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            local_files_only=is_offline(),
            library_name="resnetzoo",
            tqdm_class=None if progress else _SilentTqdm,
        )
    except hf_errors.HFValidationError as exc:
        raise ValueError(f"invalid Hugging Face repo id {repo_id!r}: {exc}") from exc
    except hf_errors.GatedRepoError as exc:
        reason = "the repository is gated: accept its terms on huggingface.co and log in (`hf auth login`)"
        raise WeightsUnavailableError(f"cannot get {where}: {reason}. {_hub_help(repo_id, filename)}") from exc
    except hf_errors.RepositoryNotFoundError as exc:
        reason = "the repository does not exist, or is private and you are not logged in"
        raise WeightsUnavailableError(f"cannot get {where}: {reason}.") from exc
    except hf_errors.RevisionNotFoundError as exc:
        raise WeightsUnavailableError(f"cannot get {where}: the revision does not exist.") from exc
    except hf_errors.LocalEntryNotFoundError as exc:
        reason = (
            "it is not in the local cache and offline mode is on (RESNETZOO_OFFLINE or HF_HUB_OFFLINE)"
            if is_offline()
            else "it is not in the local cache and the Hub could not be reached"
        )
        raise WeightsUnavailableError(f"cannot get {where}: {reason}. {_hub_help(repo_id, filename)}") from exc
    except hf_errors.EntryNotFoundError as exc:
        raise WeightsUnavailableError(f"cannot get {where}: the repository has no such file.") from exc
    except (hf_errors.OfflineModeIsEnabled, hf_errors.HfHubHTTPError, OSError) as exc:
        raise WeightsUnavailableError(
            f"cannot get {where}: {type(exc).__name__}: {exc}. {_hub_help(repo_id, filename)}"
        ) from exc
    path = Path(path)
    _check_hub_blob(path, repo_id=repo_id, filename=filename)
    return path


def fetch_weights(spec: WeightSpec, *, progress: bool = True) -> Path:
    """Get the file for a weight record, from the cheapest source that has it.

    Order: the URL's file if it is already in :func:`cache_dir` (e.g. downloaded
    by torchvision; no network), then the Hub (``spec.hf_hub_id``, whose own
    cache is used first), then the URL. Every file is verified.

    Args:
        spec: the weight record (see :func:`resnetzoo.weights.get_weights`).
        progress: show progress bars while downloading.

    Returns:
        Path of the verified file.

    Raises:
        TypeError: ``spec`` is not a WeightSpec.
        ChecksumError: a file failed verification (not hidden by trying another source).
        WeightsUnavailableError: no source worked; the message lists each attempt and
            its reason, and how to supply the file by hand.
    """
    from resnetzoo.weights.records import WeightSpec  # records is data; keep this import one-way

    if not isinstance(spec, WeightSpec):
        raise TypeError(f"fetch_weights expects a WeightSpec (see get_weights), got {type(spec).__name__}")

    def from_url() -> Path:
        return download_url(spec.url, sha256=spec.sha256, sha256_prefix=spec.sha256_prefix, progress=progress)

    if spec.url is not None and (_default_cache_dir() / file_name_from_url(spec.url)).is_file():
        return from_url()
    attempts: list[str] = []
    if spec.hf_hub_id is not None:
        try:
            return hub_download(spec.hf_hub_id, spec.hf_filename, revision=spec.hf_revision, progress=progress)
        except WeightsUnavailableError as exc:
            attempts.append(f"Hugging Face Hub: {exc}")
    if spec.url is not None:
        try:
            return from_url()
        except WeightsUnavailableError as exc:
            attempts.append(f"URL: {exc}")
    listing = "\n".join(f"  {i}. {attempt}" for i, attempt in enumerate(attempts, 1))
    raise WeightsUnavailableError(
        f"could not get the weights {spec.name} from any source:\n{listing}\n"
        f"If you have the file, load it directly: {_LOAD_BY_HAND}."
    )
