"""Shared test fixtures."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from resnetzoo import _io


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Run torch on one intra-op thread throughout the suite.

    Tests use tiny inputs that gain nothing from threads, and on a busy 2-core machine
    OpenMP's spin-waiting hand-offs make a 64x64 ResNet-50 forward 50x slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _hosts_forgotten():
    """Each test starts with no host remembered as reachable or not.

    The memo is per process, and loopback servers reuse ports: a port one test found
    dead (or alive) may be the next test's server.
    """
    _io.forget_hosts()
    yield
    _io.forget_hosts()


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter and BatchNorm statistic random values, so parity tests can fail.

    Fresh models have all-ones/zeros norms and zero-initialised last norms, under which
    many wiring mistakes still give identical outputs.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif name.endswith(("weight", "running_mean", "bias")):
                scale = 0.5 if tensor.ndim <= 1 else (1.0 / max(tensor[0].numel(), 1)) ** 0.5
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * scale)
    return model


@pytest.fixture(scope="session")
def randomize():
    """Return a function that fills a model's weights and BN statistics with random values."""
    return _randomize


def _make_hub_repo(
    cache: Path, repo_id: str, files: dict[str, bytes], *, commit: str, blob_names: dict[str, str] | None = None
) -> None:
    """Lay out a Hugging Face Hub cache entry by hand, as huggingface_hub writes it.

    ``models--org--repo/blobs/<sha256>`` holds each file's bytes, the snapshot links to
    it, and ``refs/main`` names the commit. ``blob_names`` overrides a blob's name (to
    fake a corrupted blob).
    """
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs").mkdir()
    (repo / "snapshots" / commit).mkdir(parents=True)
    for filename, content in files.items():
        blob = (blob_names or {}).get(filename) or hashlib.sha256(content).hexdigest()
        (repo / "blobs" / blob).write_bytes(content)
        (repo / "snapshots" / commit / filename).symlink_to(f"../../blobs/{blob}")


@pytest.fixture(scope="session")
def make_hub_repo():
    """Return a function that lays out a Hub cache entry: ``make_hub_repo(cache, repo_id, files, commit=...)``."""
    return _make_hub_repo


# --------------------------------------------------------------------------- loopback HTTP
@dataclass
class Route:
    """What the loopback server sends for one path."""

    body: bytes
    content_type: str = "application/octet-stream"
    declared_length: int | None = None  # a Content-Length that lies (a truncated transfer)
    delay_s: float = 0.0  # pause between 256-byte chunks (overlapping downloads)
    ranges: bool = True  # honour "Range: bytes=N-" with a 206
    send_length: bool = True  # False: no Content-Length, the body ends when the connection closes


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        server: LoopbackServer = self.server.owner  # type: ignore[attr-defined]
        server.hits.append(self.path)
        server.ranges_asked.append(self.headers.get("Range"))
        route = server.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        start, header = 0, self.headers.get("Range")
        if header and route.ranges:
            start = int(header.removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(route.body) - 1}/{len(route.body)}")
        else:
            self.send_response(200)
        body = route.body[start:]
        self.send_header("Content-Type", route.content_type)
        if route.send_length:
            self.send_header("Content-Length", str(route.declared_length or len(body)))
        self.end_headers()
        for offset in range(0, len(body), 256):
            self.wfile.write(body[offset : offset + 256])
            if route.delay_s:
                time.sleep(route.delay_s)

    def log_message(self, *args: object) -> None:
        pass


class LoopbackServer:
    """A loopback HTTP server standing in for download hosts.

    ``add(path, body, ...)`` serves bytes at a path and returns its URL; ``hits`` lists
    the paths requested and ``ranges_asked`` the ``Range`` header of each request.
    """

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: list[str] = []
        self.ranges_asked: list[str | None] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def add(self, path: str, body: bytes, **options: object) -> str:
        self.routes[path] = Route(body, **options)  # type: ignore[arg-type]
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server():
    """A running :class:`LoopbackServer`, stopped after the test."""
    server = LoopbackServer()
    yield server
    server.stop()
