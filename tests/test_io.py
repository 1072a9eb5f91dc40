"""The shared file mechanics in ``resnetzoo._io``: atomic writes, strict JSON, regular files, downloads."""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import LoopbackServer

from resnetzoo import _io
from resnetzoo.errors import ChecksumError, DownloadError

BODY = bytes(range(256)) * 40
DIGEST = hashlib.sha256(BODY).hexdigest()


@pytest.fixture(autouse=True)
def _online(monkeypatch):
    for name in _io.OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------------------ atomic writes
def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), _io.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_a_successful_write_replaces_the_file_with_default_permissions(tmp_path: Path) -> None:
    target = tmp_path / "weights.bin"
    with _io.atomic_path(target) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)  # as safetensors creates files
        os.write(fd, b"new")
        os.close(fd)
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_orphans_of_dead_processes_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.pt"
    script = f"import os; from resnetzoo._io import temporary_name as t; print(os.getpid(), t({str(target)!r}))"
    dead = subprocess.run([sys.executable, "-c", script.replace(repr(str(target)), f"__import__('pathlib').Path({str(target)!r})")], capture_output=True, text=True, check=True)
    dead_pid, orphan_path = dead.stdout.split()
    orphan = Path(orphan_path)  # named by a process that has exited
    host = orphan.name.removeprefix(".checkpoint.pt.").split(".")[0]
    live = orphan.with_name(orphan.name.replace(f".{dead_pid}.", f".{os.getppid()}."))
    other_host = orphan.with_name(orphan.name.replace(f".{host}.", ".otherhost."))
    other_file = tmp_path / orphan.name.replace(".checkpoint.pt.", ".summary.json.")
    for path in (orphan, live, other_host, other_file):
        path.write_bytes(b"x")
    _io.write_text(target, "new")
    assert not orphan.exists()
    assert live.exists() and other_host.exists() and other_file.exists()


def test_a_whole_folder_is_swept_at_once_files_and_staging_folders(tmp_path: Path) -> None:
    def dead(path: Path) -> Path:  # a temporary name whose process no longer exists
        return Path(str(_io.temporary_name(path)).replace(f".{os.getpid()}.", ".999999999."))

    orphan_file, orphan_folder = dead(tmp_path / "1.npy"), dead(tmp_path / "CUB_200_2011")
    orphan_file.write_bytes(b"half")
    (orphan_folder / "images").mkdir(parents=True)
    live = _io.temporary_name(tmp_path / "2.npy")
    live.write_bytes(b"being written")
    mine = tmp_path / "3.npy"
    mine.write_bytes(b"done")
    assert sorted(_io.remove_orphans_in(tmp_path)) == sorted([orphan_file, orphan_folder])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "3.npy"])


def test_a_failed_write_names_the_file_asked_for(tmp_path: Path) -> None:
    import errno

    target = tmp_path / "summary.json"
    # A full disk fails in write(), and that error names no file.
    with pytest.raises(OSError) as caught, _io.atomic_path(target) as tmp, open(tmp, "wb"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []
    # An error about the temporary itself (open, rename) names the file asked for too.
    with pytest.raises(PermissionError) as caught, _io.atomic_path(target) as tmp:
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp))
    assert caught.value.filename == str(target)


def test_an_error_that_is_not_about_the_file_is_raised_as_it_is(tmp_path: Path) -> None:
    import errno

    reset = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    with pytest.raises(ConnectionResetError) as caught, _io.atomic_path(tmp_path / "w.bin"):
        raise reset
    assert caught.value is reset and caught.value.filename is None
    download = DownloadError("the server closed the connection")
    with pytest.raises(DownloadError) as caught, _io.atomic_path(tmp_path / "w.bin"):
        raise download
    assert caught.value is download


def test_describe_os_error_names_the_file_and_the_fix() -> None:
    import errno

    fixes = {"full_disk": "free some space", "not_writable": "choose another folder"}
    full = OSError(errno.ENOSPC, "No space left on device", "/runs/best.safetensors")
    assert _io.describe_os_error(full, **fixes) == "/runs/best.safetensors: No space left on device; free some space"
    read_only = OSError(errno.EROFS, "Read-only file system", "/ro/x")
    assert _io.describe_os_error(read_only, **fixes) == "/ro/x: Read-only file system; choose another folder"
    assert _io.describe_os_error(OSError(errno.EIO, "Input/output error"), **fixes) == (
        "Input/output error; check the path and the disk"
    )
    assert _io.describe_os_error(FileExistsError("out.pt already exists; pass --overwrite"), **fixes) == (
        "out.pt already exists; pass --overwrite"
    )


def test_write_json_writes_null_for_non_finite_numbers(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    _io.write_json(path, {"loss": math.nan, "lr": [math.inf, 0.1], "nested": {"x": -math.inf}, "ok": 1.5})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"loss": None, "lr": [None, 0.1], "nested": {"x": None}, "ok": 1.5}


# ------------------------------------------------------------------------------ reading
def test_open_regular_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "x.pt"
    os.mkfifo(fifo)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="FIFO"):
        _io.open_regular(fifo)
    assert time.perf_counter() - start < 2
    with pytest.raises(IsADirectoryError):
        _io.open_regular(tmp_path)


def test_sha256_file_is_recomputed_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"one")
    assert _io.sha256_file(path) == hashlib.sha256(b"one").hexdigest()
    path.write_bytes(b"two!")
    assert _io.sha256_file(path) == hashlib.sha256(b"two!").hexdigest()


# ------------------------------------------------------------------------------ downloads
def test_download_verifies_and_moves_into_place(http_server, tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    url = http_server.add("/a/model.bin", BODY)
    digest = _io.http_download(url, tmp_path / "model.bin", sha256=DIGEST[:8], on_progress=lambda n, t: seen.append((n, t)))
    assert digest == DIGEST and (tmp_path / "model.bin").read_bytes() == BODY
    assert seen[-1] == (len(BODY), len(BODY))
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def test_a_wrong_checksum_deletes_the_download(http_server, tmp_path: Path) -> None:
    url = http_server.add("/m.bin", BODY)
    with pytest.raises(ChecksumError, match="was expected"):
        _io.http_download(url, tmp_path / "m.bin", sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_max_bytes_stops_a_large_download_of_known_or_unknown_length(http_server, tmp_path: Path) -> None:
    declared = http_server.add("/big.bin", BODY)
    with pytest.raises(DownloadError, match="more than the limit"):
        _io.http_download(declared, tmp_path / "big.bin", max_bytes=1000)
    undeclared = http_server.add("/stream.bin", BODY, send_length=False)
    with pytest.raises(DownloadError, match="more than the limit"):
        _io.http_download(undeclared, tmp_path / "stream.bin", max_bytes=1000)
    assert list(tmp_path.iterdir()) == []
    assert _io.http_download(undeclared, tmp_path / "stream.bin", max_bytes=len(BODY)) == DIGEST


def test_html_pages_are_refused(http_server, tmp_path: Path) -> None:
    by_type = http_server.add("/login", b"<html>sign in</html>", content_type="text/html")
    by_content = http_server.add("/page.bin", b"\n<!DOCTYPE html><html></html>")
    for url in (by_type, by_content):
        with pytest.raises(DownloadError, match="HTML"):
            _io.http_download(url, tmp_path / "x.bin")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ranges", [True, False])
def test_resume_continues_a_partial_file(http_server, tmp_path: Path, ranges: bool) -> None:
    url = http_server.add("/data.tgz", BODY, ranges=ranges)
    (tmp_path / "data.tgz.partial").write_bytes(BODY[:1000])
    assert _io.http_download(url, tmp_path / "data.tgz", sha256=DIGEST, size=len(BODY), resume=True) == DIGEST
    assert http_server.ranges_asked == ["bytes=1000-"]
    assert (tmp_path / "data.tgz").read_bytes() == BODY and not (tmp_path / "data.tgz.partial").exists()


def test_a_broken_resumable_transfer_keeps_its_partial_file(http_server, tmp_path: Path) -> None:
    url = http_server.add("/data.tgz", BODY[:3000], declared_length=len(BODY))  # closes early
    with pytest.raises(DownloadError, match="closed after 3,000"):
        _io.http_download(url, tmp_path / "data.tgz", resume=True)
    assert (tmp_path / "data.tgz.partial").stat().st_size == 3000


def test_an_unreachable_host_fails_at_once_the_second_time(tmp_path: Path) -> None:
    dead = LoopbackServer()
    url = dead.add("/w.bin", BODY)
    dead.stop()
    with pytest.raises(DownloadError, match="cannot reach"):
        _io.http_download(url, tmp_path / "w.bin")
    assert _io.unreachable_reason(url) is not None
    with pytest.raises(DownloadError, match="not retried in this process"):
        _io.http_download(url.replace("/w.bin", "/other.bin"), tmp_path / "other.bin")


def test_offline_mode_downloads_nothing(http_server, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RESNETZOO_OFFLINE", "1")
    with pytest.raises(DownloadError, match="offline mode"):
        _io.http_download(http_server.add("/w.bin", BODY), tmp_path / "w.bin")
    assert http_server.hits == []


# ------------------------------------------------------------------------------ reachability
def _slow_lookup(monkeypatch, slow_hosts: set[str], seconds: float = 5.0) -> list[str]:
    """Make name lookups of ``slow_hosts`` hang (a resolver that does not answer); return the hosts looked up."""
    import socket

    real = socket.getaddrinfo
    asked: list[str] = []

    def lookup(host, *args, **kwargs):
        asked.append(host)
        if host in slow_hosts:
            time.sleep(seconds)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    return asked


def test_a_host_whose_name_lookup_hangs_is_given_up_within_the_probe_timeout(monkeypatch) -> None:
    asked = _slow_lookup(monkeypatch, {"hang-1.invalid"})
    start = time.perf_counter()
    with pytest.raises(DownloadError, match=r"cannot reach hang-1.invalid \(no answer from hang-1.invalid within 0.3 s\)"):
        _io.check_reachable("https://hang-1.invalid/w.bin", timeout=0.3)
    assert time.perf_counter() - start < 1.5
    with pytest.raises(DownloadError, match="not retried in this process"):
        _io.check_reachable("https://hang-1.invalid/other.bin", timeout=0.3)
    assert asked == ["hang-1.invalid"]  # remembered: asked once per process


def test_several_hosts_are_probed_at_once(monkeypatch) -> None:
    _slow_lookup(monkeypatch, {"hang-2.invalid", "hang-3.invalid"})
    start = time.perf_counter()
    _io.probe_hosts(["https://hang-2.invalid/a", "https://hang-3.invalid/b"], timeout=0.5)
    assert time.perf_counter() - start < 1.2  # not 2 x 0.5 s
    assert _io.unreachable_reason("https://hang-2.invalid/") and _io.unreachable_reason("https://hang-3.invalid/")


def test_a_host_that_answers_is_probed_once_and_then_trusted(http_server, monkeypatch) -> None:
    import socket

    url = http_server.add("/w.bin", BODY)
    connections: list[object] = []
    real = socket.create_connection
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: connections.append(a) or real(*a, **k))
    _io.check_reachable(url)
    _io.check_reachable(url)
    assert len(connections) == 1 and _io.unreachable_reason(url) is None


def test_the_probe_goes_to_the_proxy_when_one_is_set(http_server, monkeypatch) -> None:
    # Behind a proxy only the proxy must answer: the host itself may not even resolve here.
    proxy = http_server.add("/", b"")
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    _io.check_reachable("https://behind-a-proxy.invalid/w.bin", timeout=2.0)
