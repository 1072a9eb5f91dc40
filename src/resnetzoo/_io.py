"""File mechanics shared by the whole library: atomic writes, hashing, and HTTP downloads.

Each mechanism lives here once, so that a fix reaches every caller (the weights cache,
``save_weights``, the recipe's checkpoints and outputs, the data-set download):

- :func:`atomic_path` / :func:`write_text` / :func:`write_json`: a file appears under
  its name complete or not at all. The bytes go to a temporary name beside the target
  (same folder, so :func:`os.replace` is a rename on one file system) and are moved
  into place only when the write succeeded; an error or Ctrl-C removes the partial
  file and leaves the previous one intact. Temporaries orphaned by a killed process
  (``kill -9`` gives no chance to clean up) are removed by the next write of the same
  file. The file gets the permissions a plain ``open()`` would give (some writers,
  such as safetensors, create files owner-only).
- :func:`write_json` writes strict JSON: a NaN or infinity becomes ``null``, never the
  bare ``NaN`` that other JSON readers reject.
- :func:`sha256_file` hashes in chunks, once per unchanged file per process.
- :func:`http_download`: one download for every caller: verified against a sha256
  (or its prefix) before it is moved into place, bounded in size, resumable on
  request, refusing HTML error pages, and failing at once for a host that already
  proved unreachable in this process (offline, a firewall) instead of waiting out
  the same timeout again.
- :func:`probe_hosts` / :func:`check_reachable`: one quick connection attempt per host
  and process, several hosts at once, so that an offline machine learns within
  seconds that a host cannot be reached (no DNS, no route, a firewall), instead of
  waiting out a library's retries.
- :func:`open_regular`: open a file for reading only if it is a regular file, so a
  FIFO or device named ``x.pt`` cannot hang or flood a reader.

Internal to resnetzoo: the names here are public to the package's modules, not to users.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import io
import json
import math
import os
import re
import shutil
import socket
import stat
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from resnetzoo.errors import ChecksumError, DownloadError

__all__ = [
    "OFFLINE_VARIABLES",
    "PROBE_TIMEOUT_S",
    "atomic_path",
    "check_reachable",
    "describe_os_error",
    "file_digest",
    "forget_hosts",
    "http_download",
    "is_offline",
    "looks_like_html",
    "open_regular",
    "save_safetensors",
    "save_torch",
    "probe_hosts",
    "remove_orphans",
    "remove_orphans_in",
    "sha256_file",
    "temporary_name",
    "to_strict_json",
    "unreachable_reason",
    "write_bytes",
    "write_json",
    "write_text",
]

OFFLINE_VARIABLES = ("RESNETZOO_OFFLINE", "HF_HUB_OFFLINE")
_TRUE = ("1", "true", "yes", "on")
_CHUNK = 1 << 20
_HTML_START = (b"<!doctype", b"<html", b"<head", b"<body", b"<?xml")
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"
# Temporaries are named ".<target>.<host>.<pid>.<random>.<suffix>": the host and pid say
# whether the writer can still be alive, so the next writer may remove orphans safely
# (on a shared file system another host's pid means nothing here, so those are kept).
_TEMP = re.compile(r"\.(?P<target>.+)\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.(?:tmp|partial)")

# (algorithm, resolved path, inode, size, mtime_ns, header) -> hex digest.
_DIGESTS: dict[tuple[str, str, int, int, int, bytes], str] = {}
# host -> why it could not be reached; a second download from it fails at once.
_UNREACHABLE: dict[str, str] = {}
# hosts a connection reached in this process: not probed again.
_REACHABLE: set[str] = set()
#: Seconds one probe of a host may take (name lookup and TCP connection together).
PROBE_TIMEOUT_S = 3.0
# Errors of a file system that refused a write. A failed write() or close() carries no
# file name (``OSError.filename`` is None), so atomic_path names the file asked for.
_WRITE_REFUSED = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM})
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_NOT_WRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


# ------------------------------------------------------------------ environment
def is_offline() -> bool:
    """Whether offline mode is on: ``RESNETZOO_OFFLINE`` or ``HF_HUB_OFFLINE`` is truthy.

    Read at every call, so setting the variable at run time takes effect.
    """
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in OFFLINE_VARIABLES)


def looks_like_html(head: bytes) -> bool:
    """Tell whether the first bytes of a file or response are an HTML/XML page (an error page)."""
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").lower().startswith(_HTML_START)


# ---------------------------------------------------------------------- reading
def open_regular(path: str | os.PathLike[str]) -> IO[bytes]:
    """Open ``path`` for binary reading if, and only if, it is a regular file.

    The check is made on the opened descriptor (``O_NONBLOCK`` so that opening a FIFO
    cannot block), so the file cannot be swapped between check and read.

    Raises:
        FileNotFoundError: nothing is at ``path``.
        IsADirectoryError: ``path`` is a folder.
        ValueError: ``path`` is a FIFO, socket or device.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
        if not stat.S_ISREG(mode):
            kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "not a regular file (a socket or device)"
            raise ValueError(f"{path} is {kind}; only regular files are read")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_digest(path: str | os.PathLike[str], algorithm: str, *, header: bytes = b"") -> str:
    """Hex digest of ``header`` followed by a file's bytes, read in chunks.

    A file unchanged since it was last hashed in this process (same inode, size and
    modification time) is not read again: hashing 100 MB takes a noticeable time.

    Args:
        path: the file.
        algorithm: a :mod:`hashlib` name (``"sha256"``, ``"sha1"``).
        header: bytes hashed before the content (git's ``blob <size>\\0``).
    """
    path = Path(path)
    info = path.stat()
    key = (algorithm, str(path.resolve()), info.st_ino, info.st_size, info.st_mtime_ns, header)
    if key not in _DIGESTS:
        digest = hashlib.new(algorithm, header)
        with open_regular(path) as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest (64 lower-case hex digits) of a file."""
    return file_digest(path, "sha256")


# ---------------------------------------------------------------------- writing
def _default_permissions() -> int:
    # What open() would give a new file. Reading the umask means setting it; Linux
    # reports it without changing it, so prefer that where it is available.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else, or cannot tell: keep its file
    return True


def temporary_name(path: Path, *, suffix: str = "tmp") -> Path:
    """A unique temporary name beside ``path`` that :func:`remove_orphans` can recognise."""
    return path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}.{suffix}")


def _remove_orphans(folder: Path, *, target: str | None) -> list[Path]:
    removed: list[Path] = []
    try:
        siblings = list(folder.iterdir())
    except OSError:
        return removed
    for candidate in siblings:
        match = _TEMP.fullmatch(candidate.name)
        if (
            match is None
            or (target is not None and match["target"] != target)
            or match["host"] != _HOST
            or int(match["pid"]) == os.getpid()
            or _pid_alive(int(match["pid"]))
        ):
            continue
        with contextlib.suppress(OSError):
            if candidate.is_dir() and not candidate.is_symlink():
                shutil.rmtree(candidate)  # a staging folder (see temporary_name)
            else:
                candidate.unlink()
            removed.append(candidate)
    return removed


def remove_orphans(path: Path) -> list[Path]:
    """Remove temporaries of ``path`` left by processes of this host that no longer run.

    A temporary is a file, or a staging folder named by :func:`temporary_name`.

    Returns:
        the files and folders removed.
    """
    return _remove_orphans(path.parent, target=path.name)


def remove_orphans_in(folder: Path) -> list[Path]:
    """Remove every temporary in ``folder`` left by processes of this host that no longer run.

    One listing for the whole folder: for a folder of thousands of files written with
    ``atomic_path(..., clean=False)`` (a cache), sweep once instead of at every write.

    Returns:
        the files and folders removed.
    """
    return _remove_orphans(folder, target=None)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, clean: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces ``path`` only if the block succeeds.

    Use it for writers that take a path (``torch.save``, ``safetensors.torch.save_file``,
    ``figure.savefig``)::

        with atomic_path(out / "checkpoint.pt") as tmp:
            torch.save(state, tmp)

    The folder must exist. On any exception (including ``KeyboardInterrupt``) the
    temporary file is removed and ``path`` is left as it was; an ``OSError`` about the
    temporary, or from a write that names no file (a full disk), is raised again as the
    same kind of ``OSError`` naming ``path``. With ``clean`` (the
    default) temporaries of ``path`` orphaned by killed processes are removed first;
    pass ``clean=False`` where the folder is swept once with :func:`remove_orphans_in`.
    """
    path = Path(path)
    if clean:
        remove_orphans(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.chmod(tmp, _default_permissions())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and (
            exc.filename == str(tmp) or (exc.filename is None and exc.errno in _WRITE_REFUSED)
        ):
            # Name the file the caller asked for, not a temporary that no longer exists
            # (nor nothing: a full disk fails in write(), which names no file).
            raise OSError(exc.errno, exc.strerror, str(path)) from exc  # errno picks the subclass
        raise


def describe_os_error(
    error: OSError, *, full_disk: str, not_writable: str, otherwise: str = "check the path and the disk"
) -> str:
    """One line for a failed read or write: the file, the reason and what to do.

    ``"runs/best.safetensors: No space left on device; free some space ..."``. Each
    program words the fix in its own terms (its flags), so the fixes are arguments.

    Args:
        error: the error; its ``filename`` names the file (:func:`atomic_path` sets it).
        full_disk: the fix for a full disk or quota (``ENOSPC``, ``EDQUOT``, ``EFBIG``).
        not_writable: the fix for a place that cannot be written (``EACCES``, ``EPERM``,
            ``EROFS``).
        otherwise: the fix for any other error.

    Returns:
        the line; an error that is only a message (no ``strerror``) is returned as it is.
    """
    if error.strerror is None:
        return str(error)
    if error.errno in _DISK_FULL:
        fix = full_disk
    elif error.errno in _NOT_WRITABLE:
        fix = not_writable
    else:
        fix = otherwise
    where = f"{error.filename}: " if error.filename is not None else ""
    return f"{where}{error.strerror}; {fix}"


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 text to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike[str], data: bytes | memoryview) -> None:
    """Write bytes to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


# The two serialisers below build the file in memory and write it with write_bytes: on a
# full disk torch.save raises a RuntimeError without its cause and safetensors a
# SafetensorError, while a plain write raises the OSError (ENOSPC, EROFS) that callers
# and users understand. A ResNet's weights are at most a few hundred MB.
def save_torch(path: str | os.PathLike[str], obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically; a failed write is an ``OSError`` naming ``path``."""
    import torch  # here: the rest of this module is used where torch must not be imported yet

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getbuffer())


def save_safetensors(path: str | os.PathLike[str], tensors: dict[str, Any], *, metadata: dict[str, str] | None = None) -> None:
    """Write tensors as a safetensors file atomically; a failed write is an ``OSError`` naming ``path``."""
    from safetensors.torch import save  # imports torch: see save_torch

    write_bytes(path, save(tensors, metadata=metadata))


def to_strict_json(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) replaced by ``None``, recursively.

    JSON has no NaN; Python's ``json`` writes a bare ``NaN`` that other readers reject.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: to_strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_strict_json(v) for v in value]
    return value


def write_json(path: str | os.PathLike[str], value: Any, *, indent: int | None = 2) -> None:
    """Write ``value`` as strict JSON (non-finite floats as ``null``) to ``path`` atomically."""
    write_text(path, json.dumps(to_strict_json(value), indent=indent, allow_nan=False) + "\n")


# --------------------------------------------------------------------- download
def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc.lower()


def _remember_unreachable(url: str, reason: str) -> None:
    _UNREACHABLE[_host(url)] = reason


def forget_hosts() -> None:
    """Forget which hosts were found reachable or not: the next download probes again.

    For a long-running process whose network came back (or went away), and for tests,
    where one test's loopback port may be another's later.
    """
    _UNREACHABLE.clear()
    _REACHABLE.clear()


def unreachable_reason(url: str) -> str | None:
    """Why the host of ``url`` could not be reached earlier in this process, or ``None``."""
    return _UNREACHABLE.get(_host(url))


def _probe_target(url: str) -> tuple[str, int]:
    """Where a request for ``url`` would connect first: the proxy for its scheme, if one is set."""
    parts = urllib.parse.urlsplit(url)
    hostname = parts.hostname or ""
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(hostname):
        proxied = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return proxied.hostname or "", proxied.port or (443 if proxied.scheme == "https" else 80)
    return hostname, parts.port or (443 if parts.scheme == "https" else 80)


def probe_hosts(urls: Iterable[str], *, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Probe, all at once, the hosts of ``urls`` not probed yet in this process.

    One name lookup and TCP connection per host (to the proxy, when one is configured
    for the URL's scheme), all bounded together by ``timeout`` seconds: a name lookup
    can block far longer than any socket timeout, so each runs in a helper thread that
    is abandoned when time is up. A host that answered is not probed again; one that
    did not is remembered (:func:`unreachable_reason`), so every later download from it
    fails at once. A server that answers but errors counts as reachable: its requests
    keep their own retries.
    """
    targets = {}
    for url in urls:
        host = _host(url)
        if host and host not in _UNREACHABLE and host not in _REACHABLE:
            targets[host] = _probe_target(url)
    outcomes: dict[str, BaseException | None] = {}

    def connect(host: str, target: tuple[str, int]) -> None:
        try:
            socket.create_connection(target, timeout=timeout).close()
            outcomes[host] = None
        except OSError as exc:
            outcomes[host] = exc

    workers = [
        threading.Thread(target=connect, args=(host, target), name=f"resnetzoo-probe-{host}", daemon=True)
        for host, target in targets.items()
    ]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + timeout
    for worker in workers:
        worker.join(max(deadline - time.monotonic(), 0.0))
    for host, target in targets.items():
        if host not in outcomes:
            _UNREACHABLE[host] = f"no answer from {target[0]} within {timeout:g} s"
        elif outcomes[host] is not None:
            _UNREACHABLE[host] = str(outcomes[host]) or type(outcomes[host]).__name__
        else:
            _REACHABLE.add(host)


def check_reachable(url: str, *, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail at once if the host of ``url`` cannot be reached; see :func:`probe_hosts`.

    Raises:
        DownloadError: the host cannot be resolved or connected to (now or earlier).
    """
    host = _host(url)
    if host in _UNREACHABLE:
        raise DownloadError(f"cannot reach {host} ({_UNREACHABLE[host]}; not retried in this process)")
    probe_hosts([url], timeout=timeout)
    if host in _UNREACHABLE:
        raise DownloadError(f"cannot reach {host} ({_UNREACHABLE[host]})")


def _connection_failed(exc: BaseException) -> bool:
    """The host cannot be resolved or connected to, as opposed to a server that answered."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return isinstance(reason, (socket.gaierror, ConnectionRefusedError, TimeoutError, socket.timeout)) or (
        isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH)
    )


def _open_url(url: str, *, start: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": "resnetzoo"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError:
        raise  # the server answered: the caller decides
    except urllib.error.URLError as exc:
        if _connection_failed(exc):
            _remember_unreachable(url, str(exc.reason))
        raise DownloadError(f"cannot reach {_host(url)} ({exc.reason})") from exc
    except (OSError, http.client.HTTPException) as exc:
        if _connection_failed(exc):
            _remember_unreachable(url, str(exc))
        raise DownloadError(f"cannot reach {_host(url)} ({type(exc).__name__}: {exc})") from exc


class _Transfer:
    """The bytes of one download: running digest and count, checked against the limits as they arrive."""

    def __init__(
        self, *, url: str, size: int | None, max_bytes: int | None,
        on_progress: Callable[[int, int | None], None] | None,
    ) -> None:
        self.url = url
        self.total = size
        self.max_bytes = max_bytes
        self.on_progress = on_progress
        self.digest = hashlib.sha256()
        self.received = 0

    def seed(self, part: Path) -> None:
        """Account for the bytes already in a partial file (a resumed download)."""
        with open_regular(part) as f:
            while chunk := f.read(_CHUNK):
                self.digest.update(chunk)
                self.received += len(chunk)

    def _check_headers(self, response: http.client.HTTPResponse) -> None:
        content_type = response.headers.get("Content-Type", "")
        if "text/html" in content_type.lower():
            raise DownloadError(f"{self.url}: the server sent an HTML page ({content_type}), not the file")
        length = response.headers.get("Content-Length", "")
        if self.total is None and length.isdigit():
            self.total = self.received + int(length)
        if self.max_bytes is not None and self.total is not None and self.total > self.max_bytes:
            raise DownloadError(f"{self.url} is {self.total:,} bytes, more than the limit of {self.max_bytes:,}")

    def _read(self, response: http.client.HTTPResponse) -> bytes:
        try:
            return response.read(_CHUNK)
        except (OSError, http.client.HTTPException) as exc:  # reset, timeout, incomplete read
            raise DownloadError(
                f"the connection to {_host(self.url)} broke off after {self.received:,} bytes "
                f"({type(exc).__name__}: {exc})"
            ) from exc

    def copy(self, response: http.client.HTTPResponse, out: IO[bytes]) -> None:
        """Copy the response body into ``out``; errors writing ``out`` (a full disk) stay ``OSError``."""
        self._check_headers(response)
        first = self.received == 0
        while chunk := self._read(response):
            if first and looks_like_html(chunk[:64]):
                raise DownloadError(f"{self.url}: the server sent an HTML page, not the file")
            first = False
            self.received += len(chunk)
            if self.max_bytes is not None and self.received > self.max_bytes:
                raise DownloadError(f"{self.url} sends more than the limit of {self.max_bytes:,} bytes")
            out.write(chunk)
            self.digest.update(chunk)
            if self.on_progress is not None:
                self.on_progress(self.received, self.total)
        if self.total is not None and self.received < self.total:
            raise DownloadError(
                f"the connection to {_host(self.url)} closed after {self.received:,} of {self.total:,} bytes"
            )


def _fetch(url: str, part: Path, transfer: _Transfer, *, resume: bool, size: int | None, timeout: float) -> None:
    """Bring ``part`` to the whole file, continuing a partial one when ``resume``."""
    start = part.stat().st_size if resume and part.exists() else 0
    if size is not None and start > size:
        start = 0  # longer than the real file: not a prefix of it
    if start and start == size:
        transfer.seed(part)
        return
    try:
        response = _open_url(url, start=start, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # nothing left to send: the verification decides
            transfer.seed(part)
            return
        raise DownloadError(f"{url}: HTTP error {exc.code} ({exc.reason})") from exc
    with response:
        if start and response.status != 206:
            start = 0  # the server ignored the Range header and sends the whole file
        if start:
            transfer.seed(part)
        with open(part, "ab" if start else "wb") as out:
            transfer.copy(response, out)


def http_download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    size: int | None = None,
    max_bytes: int | None = None,
    resume: bool = False,
    timeout: float = 30.0,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> str:
    """Download ``url`` to ``dest``, verified, atomically; return the sha256 of the file.

    The bytes go to a temporary file beside ``dest`` and are moved into place only
    once the whole file has arrived and matches ``sha256`` and ``size``: ``dest``
    never holds a partial or wrong file. Without ``resume`` the temporary name is
    unique and removed on any failure, so processes downloading the same file at once
    each finish with a complete file. With ``resume`` the partial file has the fixed
    name ``dest + ".partial"``; it is kept when the transfer breaks off and continued
    by the next call (HTTP ``Range``).

    Args:
        url: an ``http://`` or ``https://`` URL.
        dest: where the verified file goes; its folder must exist.
        sha256: the expected sha256 hex digest, or a prefix of it (8+ digits).
        size: the expected size in bytes.
        max_bytes: refuse a file larger than this (for files of unknown checksum).
        resume: keep and continue a partial download across calls.
        timeout: seconds to wait on each socket operation.
        on_progress: called as ``on_progress(bytes_so_far, total_or_None)`` after each chunk.

    Returns:
        the sha256 hex digest of the file now at ``dest``.

    Raises:
        ValueError: ``url`` is not an http(s) URL.
        DownloadError: offline mode is on, the host is unreachable (probed once per
            process with :func:`check_reachable`), the server answered with an error or an HTML page, or the
            transfer broke off or exceeded ``max_bytes`` (a ``ConnectionError``).
        ChecksumError: the complete file has another sha256 or size; it is deleted.
        OSError: the file cannot be written (a full disk, a read-only folder).
    """
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"a download needs an http:// or https:// URL, got {url!r}")
    dest = Path(dest)
    if is_offline():
        raise DownloadError(f"offline mode is on ({' or '.join(OFFLINE_VARIABLES)}), so {url} was not downloaded")
    check_reachable(url)
    remove_orphans(dest)
    part = dest.with_name(dest.name + ".partial") if resume else temporary_name(dest, suffix="partial")
    transfer = _Transfer(url=url, size=size, max_bytes=max_bytes, on_progress=on_progress)
    try:
        _fetch(url, part, transfer, resume=resume, size=size, timeout=timeout)
    except BaseException:
        if not resume:
            part.unlink(missing_ok=True)
        raise
    digest = transfer.digest.hexdigest()
    problem = None
    if size is not None and transfer.received != size:
        problem = f"{transfer.received:,} bytes, but {size:,} were expected"
    elif sha256 is not None and not digest.startswith(sha256.lower()):
        problem = f"sha256 {digest}, but {sha256.lower()} was expected"
    if problem is not None:
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"the file downloaded from {url} has {problem}; it was deleted and nothing was saved. "
            f"The server may be serving a different or corrupt file."
        )
    os.chmod(part, _default_permissions())
    os.replace(part, dest)
    return digest
