"""Fetching weight files from a URL or the Hugging Face Hub: cached, verified, offline-aware.

Two gaps in the usual tools are closed here (pytorch/pytorch#191194; huggingface_hub#2364, #3643):
``torch.hub`` checks a file's hash only while downloading, never a cached copy,
and ``huggingface_hub`` checks only a cached blob's size. Here every cached
file is hashed before use: against the checksum the caller gives, or, for a file
whose source publishes none, against the sha256 recorded when it was downloaded; a
Hub blob is checked against its content address (its file name).

The cache is keyed by the whole source, never by a file name alone: two URLs that
both end in ``model.safetensors`` are two entries. Only a *content-addressed* name
(torch.hub's ``name-<sha256 prefix>.ext``, verified against that prefix) is stored
flat under its name, which keeps torchvision's cache layout: files torchvision
downloaded are reused, verified. Every other URL's file lives under
``by-source/<sha256 of the URL>/``, with a ``.source.json`` record of its URL, size
and sha256. A file found by name only (written by an older resnetzoo or by hand) is
used only when the caller's checksum proves it is the right one.

Downloads go to a temporary file in the destination folder and are moved into
place with :func:`os.replace` only after verification, so a partial or bad
download never appears under the final name, and processes downloading the
same file at once (DDP ranks) each finish with one complete, verified file. A
download without a checksum is capped in size (:data:`UNVERIFIED_MAX_BYTES`).

Offline mode (``RESNETZOO_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``) never touches the
network: a missing file fails at once with instructions to supply it by hand.
Without it, a host that cannot be reached is found out with one quick probe per
process, so an offline machine fails in seconds instead of waiting out
huggingface_hub's retries.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch.hub
from tqdm.auto import tqdm

from resnetzoo._io import (
    OFFLINE_VARIABLES,
    check_reachable,
    file_digest,
    http_download,
    is_offline,
    open_regular,
    probe_hosts,
    sha256_file,
    write_json,
)
from resnetzoo.errors import ChecksumError, DownloadError, WeightsUnavailableError

if TYPE_CHECKING:
    from resnetzoo.weights.records import WeightSpec

__all__ = [
    "UNVERIFIED_MAX_BYTES",
    "CacheEntry",
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
_BY_SOURCE = "by-source"
_RECORD_SUFFIX = ".source.json"
_MAX_RECORD_BYTES = 1 << 16
#: Largest download accepted from a source that publishes no checksum (the largest
#: ResNet weights, wide_resnet101_2, are 0.5 GB); pass ``max_bytes`` to change it.
UNVERIFIED_MAX_BYTES = 2 << 30
_OFFLINE_TIP = (
    f"If this machine is offline, set {OFFLINE_VARIABLES[0]}=1 (or {OFFLINE_VARIABLES[1]}=1): "
    f"then only the caches are used, and nothing waits for the network."
)


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


@dataclass(frozen=True)
class CacheEntry:
    """Where one source's file lives in the cache, and how a cached copy is verified.

    Attributes:
        url: the source.
        name: the file name to store it under.
        expected: the sha256 (or a prefix of 8+ hex digits) the caller knows, or None.
        folder: the cache folder.
    """

    url: str
    name: str
    expected: str | None
    folder: Path

    @property
    def content_named(self) -> bool:
        """Whether the name carries the expected sha256 prefix (torch.hub's ``name-<hex>.ext``).

        Such a name says what the file must hash to, so the flat ``folder/name`` cannot
        mix up two sources: it is what torchvision uses, and shared with it.
        """
        in_name = hash_prefix_from_name(self.name)
        return bool(self.expected and in_name and (self.expected.startswith(in_name) or in_name.startswith(self.expected)))

    @property
    def path(self) -> Path:
        """The file: ``folder/name`` when content-named, else ``folder/by-source/<sha256(url)[:32]>/name``."""
        if self.content_named:
            return self.folder / self.name
        key = hashlib.sha256(self.url.encode("utf-8")).hexdigest()[:32]
        return self.folder / _BY_SOURCE / key / self.name

    @property
    def record(self) -> Path:
        """The ``.source.json`` beside a source-keyed file: its URL, size and sha256."""
        return self.path.with_name(self.name + _RECORD_SUFFIX)

    def _read_record(self) -> dict[str, object] | None:
        try:
            with open_regular(self.record) as f:
                record = json.loads(f.read(_MAX_RECORD_BYTES).decode("utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _verify(self, path: Path, digest: str) -> None:
        if not digest.startswith(self.expected or ""):
            raise ChecksumError(
                f"the cached file {path} has sha256 {digest}, but {self.expected} was expected: it is "
                f"corrupt, truncated or was replaced. resnetzoo does not delete your files; delete "
                f"it by hand and run again to download it afresh."
            )

    def find(self) -> Path | None:
        """The verified cached file, or None when there is none to trust (no network is used).

        Raises:
            ChecksumError: a cached file fails verification (it is left for you to delete).
        """
        path = self.path
        if path.is_file():
            if self.content_named:
                self._verify(path, sha256_file(path))
                return path
            record = self._read_record()
            if record is None or record.get("source") != self.url or not isinstance(record.get("sha256"), str):
                # Written by hand or interrupted before its record: no proof of where it came from.
                if self.expected is None:
                    logger.info("%s has no source record; it is not trusted and will be downloaded again", path)
                    return None
                self._verify(path, sha256_file(path))
                self._write_record(sha256_file(path))
                return path
            digest = sha256_file(path)
            if digest != record["sha256"]:
                raise ChecksumError(
                    f"the cached file {path} has sha256 {digest}, but {record['sha256']} was recorded when it "
                    f"was downloaded from {self.url}: it is corrupt or was replaced. resnetzoo does not delete "
                    f"your files; delete it by hand and run again to download it afresh."
                )
            self._verify(path, digest)
            return path
        return self._legacy()

    def _legacy(self) -> Path | None:
        # A file stored under its bare name (older resnetzoo, or put there by hand): another
        # source's file may have the same name, so only a matching checksum makes it this one.
        legacy = self.folder / self.name
        if self.content_named or not legacy.is_file():
            return None
        if self.expected is not None and sha256_file(legacy).startswith(self.expected):
            return legacy
        logger.info("ignoring %s: found by its name only, it cannot be shown to come from %s", legacy, self.url)
        return None

    def _write_record(self, digest: str) -> None:
        size = self.path.stat().st_size
        write_json(self.record, {"source": self.url, "file": self.name, "size": size, "sha256": digest})

    def help(self) -> str:
        """How to supply the file by hand, for error messages."""
        if self.content_named:
            return (
                f"To supply it by hand: download {self.url} where you have access and save it as "
                f"{self.path} (the folder is set by RESNETZOO_CACHE), or load any copy with {_LOAD_BY_HAND}."
            )
        return f"To supply it by hand: download {self.url} where you have access and load it with {_LOAD_BY_HAND}."

    def download(self, *, progress: bool, max_bytes: int | None) -> Path:
        """Download into the cache, verified; record the sha256 of a source-keyed file."""
        path = self.path
        created = [p for p in (path.parent.parent, path.parent) if not p.exists() and p != self.folder]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WeightsUnavailableError(
                f"cannot create the cache folder {path.parent} ({exc}); set RESNETZOO_CACHE to a writable folder"
            ) from exc
        bars: list[tqdm] = []  # made when the first bytes arrive: a failed connection shows none

        def show(received: int, total: int | None) -> None:
            if not bars:
                bars.append(tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc=self.name, disable=not progress))
            bars[0].total = total
            bars[0].update(received - bars[0].n)

        try:
            digest = http_download(
                self.url, path, sha256=self.expected, max_bytes=max_bytes, timeout=_TIMEOUT_S, on_progress=show
            )
        except BaseException as exc:
            for folder in reversed(created):  # leave the cache as it was
                with contextlib.suppress(OSError):
                    folder.rmdir()
            if isinstance(exc, DownloadError):
                tip = f" {_OFFLINE_TIP}" if "cannot reach" in str(exc) else ""
                if "more than the limit" in str(exc) and self.expected is None:
                    tip = (
                        " Without a published checksum a download is capped in size; pass the file's "
                        "sha256= (or a larger max_bytes=) to download_url if you know it is right."
                    )
                raise WeightsUnavailableError(f"could not download {self.url}: {exc}.{tip} {self.help()}") from exc
            raise
        finally:
            for bar in bars:
                bar.close()
        if not self.content_named:
            self._write_record(digest)
        if self.expected is None:
            logger.warning(
                "no checksum is published for %s; its sha256 %s was recorded and is checked on every later use",
                self.url,
                digest,
            )
        return path


def download_url(
    url: str,
    *,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    file_name: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    max_bytes: int | None = None,
) -> Path:
    """Download a file into the cache once, verify it, and return its path.

    The cache is keyed by the whole URL (see the module docstring): two URLs ending in
    the same file name never share an entry. A file already in the cache is verified
    and returned without touching the network: against ``sha256``/``sha256_prefix``
    when given, else against the sha256 recorded when it was downloaded.

    Args:
        url: an ``http://`` or ``https://`` URL.
        sha256: the file's full sha256 hex digest, if known.
        sha256_prefix: leading hex digits (8 or more) of the digest, if that is all that is known.
        file_name: name to save under; default: the last part of the URL's path.
        cache_dir: folder to save in; default: :func:`resnetzoo.weights.cache_dir`.
        progress: show a tqdm progress bar while downloading.
        max_bytes: refuse a download larger than this; default: no limit when a
            checksum is given, :data:`UNVERIFIED_MAX_BYTES` when not.

    Returns:
        Path of the verified file in the cache.

    Raises:
        ValueError: a malformed URL, file name, checksum or ``max_bytes``.
        ChecksumError: the cached or downloaded file does not match the checksum, or a
            cached file no longer has the sha256 recorded at download (a bad download is
            discarded; a bad cached file is left for you to delete).
        WeightsUnavailableError: offline and not cached, the server is unreachable,
            answers with an error or an HTML page, or sends more than ``max_bytes``; the
            message says how to supply the file by hand.
    """
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"download_url needs an http:// or https:// URL, got {url!r}")
    sha256 = _normalise_hex(sha256, argument="sha256", min_len=64)
    sha256_prefix = _normalise_hex(sha256_prefix, argument="sha256_prefix", min_len=8)
    if max_bytes is not None and (not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1):
        raise ValueError(f"max_bytes must be a positive int or None, got {max_bytes!r}")
    expected = sha256 or sha256_prefix
    name = file_name if file_name is not None else file_name_from_url(url)
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.endswith(_RECORD_SUFFIX):
        raise ValueError(f"file_name must be a plain file name without folders, got {name!r}")
    folder = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir()
    entry = CacheEntry(url, name, expected, folder)

    found = entry.find()
    if found is not None:
        return found
    if is_offline():
        raise WeightsUnavailableError(
            f"{name} is not in the cache and offline mode is on (RESNETZOO_OFFLINE or "
            f"HF_HUB_OFFLINE), so {url} was not downloaded. {entry.help()}"
        )
    limit = max_bytes if max_bytes is not None else (None if expected else UNVERIFIED_MAX_BYTES)
    return entry.download(progress=progress, max_bytes=limit)


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

    Uses :func:`huggingface_hub.hf_hub_download`; when :func:`is_offline`, or when the
    Hub's host cannot be reached (one quick probe per process instead of
    huggingface_hub's retries), only looks the file up in the Hugging Face cache
    (:func:`huggingface_hub.try_to_load_from_cache`, no network). Then hashes the
    cached blob and compares it with the blob's name, which is the content's sha256
    for LFS files.
    The Hub cache is keyed by repository, revision and file.

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
    from huggingface_hub import constants as hf_constants
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    where = f"{filename} from the Hugging Face repo {repo_id}" + (f" at revision {revision}" if revision else "")
    # Without the network, only the cache is read, by a lookup that cannot touch the network
    # (hf_hub_download(local_files_only=True) still fetches an agent registry from the Hub).
    # Online, one probe tells an unreachable Hub at once, instead of huggingface_hub's five
    # retries with back-off (about 30 s); a Hub that answers keeps its retries.
    no_network = None
    if is_offline():
        no_network = f"offline mode is on ({' or '.join(OFFLINE_VARIABLES)})"
    else:
        try:
            check_reachable(hf_constants.ENDPOINT)
        except DownloadError as exc:
            no_network = f"the Hub is out of reach: {exc}"
    try:
        if no_network is None:
            path = hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                library_name="resnetzoo",
                tqdm_class=None if progress else _SilentTqdm,
            )
        else:
            cached = try_to_load_from_cache(repo_id, filename, revision=revision)
            if not isinstance(cached, str):
                raise hf_errors.LocalEntryNotFoundError(f"{filename} of {repo_id} is not in the Hugging Face cache")
            path = cached
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
        reason = f"it is not in the local cache and {no_network or 'the Hub could not be reached'}"
        tip = f" {_OFFLINE_TIP}" if no_network is not None and not is_offline() else ""
        raise WeightsUnavailableError(f"cannot get {where}: {reason}.{tip} {_hub_help(repo_id, filename)}") from exc
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
    cache is used first), then the URL. Every file is verified. A host that cannot
    be reached is probed once, so an offline machine gets the error in seconds.

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

    if spec.url is not None:
        cached = CacheEntry(
            spec.url, file_name_from_url(spec.url), spec.sha256 or spec.sha256_prefix, _default_cache_dir()
        ).find()
        if cached is not None:
            return cached
    if not is_offline():
        # Both sources' hosts at once: offline, the two probes then cost one timeout, not two.
        from huggingface_hub import constants as hf_constants

        probe_hosts([u for u in (hf_constants.ENDPOINT if spec.hf_hub_id else None, spec.url) if u])
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
    # Each attempt may carry the offline tip; say it once, at the end.
    listing = "\n".join(
        f"  {i}. {attempt.replace(' ' + _OFFLINE_TIP, '')}" for i, attempt in enumerate(attempts, 1)
    )
    offline = f"\n{_OFFLINE_TIP}" if any(_OFFLINE_TIP in a for a in attempts) else ""
    raise WeightsUnavailableError(
        f"could not get the weights {spec.name} from any source:\n{listing}\n"
        f"If you have the file, load it directly: {_LOAD_BY_HAND}.{offline}"
    )
