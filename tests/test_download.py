"""Downloading, caching and verifying weight files; the Hub path; offline behaviour.

Everything is local: a loopback HTTP server stands in for download hosts, and a
Hugging Face cache laid out by hand stands in for the Hub (read in a subprocess
with HF_HUB_OFFLINE and HF_HUB_CACHE set before huggingface_hub is imported).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import LoopbackServer
from safetensors.torch import save as safetensors_bytes

import resnetzoo
from resnetzoo.errors import ChecksumError, WeightsUnavailableError
from resnetzoo.weights import WeightSpec, download_url, fetch_weights, read_source
from resnetzoo.weights import download as download_module

STATE = {"conv.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 2, 2), "fc.bias": torch.ones(5)}
PAYLOAD = safetensors_bytes(STATE)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
NAME = f"weights-{DIGEST[:8]}.safetensors"


@pytest.fixture
def server(http_server):
    """The loopback server, serving PAYLOAD by default."""
    add = http_server.add
    http_server.add = lambda path, body=PAYLOAD, **options: add(path, body, **options)
    return http_server


@pytest.fixture(autouse=True)
def _online_and_isolated(monkeypatch, tmp_path):
    # Tests start online (offline variables cleared) with a private default cache.
    monkeypatch.delenv("RESNETZOO_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("RESNETZOO_CACHE", str(tmp_path / "default-cache"))


def _text(info: pytest.ExceptionInfo, tmp_path: Path) -> str:
    """The error message with the temporary folder (which holds the test's name) masked."""
    return str(info.value).replace(str(tmp_path), "<tmp>")


def _partials(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".partial")] if folder.exists() else []


# ----------------------------------------------------------------------------------------------
# download_url


def test_download_verifies_caches_and_reuses_without_network(server, tmp_path):
    url = server.add(f"/m/{NAME}")
    path = download_url(url, sha256=DIGEST, cache_dir=tmp_path, progress=False)
    assert path == tmp_path / NAME and path.read_bytes() == PAYLOAD
    assert _partials(tmp_path) == []
    server.stop()  # any network use now fails
    again = download_url(url, sha256=DIGEST, cache_dir=tmp_path, progress=False)
    assert again == path and server.hits == [f"/m/{NAME}"]


def test_download_accepts_a_sha256_prefix(server, tmp_path):
    url = server.add(f"/{NAME}")
    path = download_url(url, sha256_prefix=DIGEST[:8].upper(), cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD


@pytest.mark.parametrize("kwargs", [{"sha256": "0" * 64}, {"sha256_prefix": "deadbeef"}])
def test_checksum_mismatch_raises_and_leaves_nothing(server, tmp_path, kwargs):
    url = server.add(f"/{NAME}")
    with pytest.raises(ChecksumError, match="expected") as info:
        download_url(url, cache_dir=tmp_path, progress=False, **kwargs)
    assert url in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_cached_file_raises_and_is_not_deleted(server, tmp_path):
    url = server.add(f"/{NAME}")
    cached = tmp_path / NAME
    cached.write_bytes(PAYLOAD[:-1] + b"X")
    with pytest.raises(ChecksumError) as info:
        download_url(url, sha256_prefix=DIGEST[:8], cache_dir=tmp_path, progress=False)
    assert str(cached) in str(info.value) and "delete it" in _text(info, tmp_path)
    assert cached.exists() and server.hits == []


def test_a_file_found_by_name_only_is_never_trusted_without_a_checksum(server, tmp_path):
    # An older cache (or a user) put a file of that name there; nothing says it came from this URL.
    url = server.add("/org/plain.pth")
    (tmp_path / "plain.pth").write_bytes(b"mine")
    path = download_url(url, cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD and server.hits == ["/org/plain.pth"]
    assert (tmp_path / "plain.pth").read_bytes() == b"mine"  # the user's file is left alone


def test_a_file_found_by_name_is_used_when_the_checksum_proves_it(server, tmp_path):
    url = server.add("/org/model.safetensors")
    (tmp_path / "model.safetensors").write_bytes(PAYLOAD)
    assert download_url(url, sha256=DIGEST, cache_dir=tmp_path, progress=False) == tmp_path / "model.safetensors"
    assert server.hits == []


def test_two_urls_with_the_same_file_name_are_two_cache_entries(server, tmp_path):
    other = safetensors_bytes({"conv.weight": torch.zeros(2, 3, 2, 2), "fc.bias": torch.zeros(5)})
    url_a = server.add("/orgA/model.safetensors")
    url_b = server.add("/orgB/model.safetensors", other)
    path_a = download_url(url_a, cache_dir=tmp_path, progress=False)
    path_b = download_url(url_b, cache_dir=tmp_path, progress=False)
    assert path_a != path_b and path_a.name == path_b.name == "model.safetensors"
    assert path_a.read_bytes() == PAYLOAD and path_b.read_bytes() == other
    # Cached: both come back without the network, each its own.
    server.stop()
    assert download_url(url_b, cache_dir=tmp_path, progress=False).read_bytes() == other
    assert download_url(url_a, cache_dir=tmp_path, progress=False).read_bytes() == PAYLOAD


def test_two_urls_with_the_same_file_name_load_their_own_weights(server, monkeypatch, tmp_path):
    # The path a user takes: read_source, then the report, which must name and hold the right file.
    monkeypatch.setenv("RESNETZOO_CACHE", str(tmp_path))
    other_state = {"conv.weight": torch.zeros(2, 3, 2, 2), "fc.bias": torch.zeros(5)}
    url_a = server.add("/orgA/model.safetensors")
    url_b = server.add("/orgB/model.safetensors", safetensors_bytes(other_state))
    assert torch.equal(read_source(url_a).obj["conv.weight"], STATE["conv.weight"])
    loaded_b = read_source(url_b)
    assert loaded_b.origin == url_b and torch.equal(loaded_b.obj["conv.weight"], other_state["conv.weight"])


def test_an_unverified_download_records_its_sha256_and_checks_it_on_every_use(server, tmp_path):
    url = server.add("/org/plain.pth")
    path = download_url(url, cache_dir=tmp_path, progress=False)
    record = json.loads(path.with_name(path.name + ".source.json").read_text())
    assert record == {"source": url, "file": "plain.pth", "size": len(PAYLOAD), "sha256": DIGEST}
    path.write_bytes(PAYLOAD[:-1] + b"X")  # corrupted (or replaced) in the cache
    with pytest.raises(ChecksumError, match="was recorded when it was downloaded") as info:
        download_url(url, cache_dir=tmp_path, progress=False)
    assert str(path) in str(info.value) and path.exists()  # named, never deleted for you
    assert server.hits == ["/org/plain.pth"]


def test_an_unverified_download_is_capped_in_size(server, monkeypatch, tmp_path):
    url = server.add("/org/big.pth")
    with pytest.raises(WeightsUnavailableError, match="more than the limit of 100") as info:
        download_url(url, cache_dir=tmp_path, progress=False, max_bytes=100)
    assert "Without a published checksum a download is capped" in str(info.value)
    assert list(tmp_path.iterdir()) == []
    seen: dict[str, object] = {}

    def spy(url: str, dest: Path, **kwargs: object) -> str:
        seen.update(kwargs)
        dest.write_bytes(PAYLOAD)
        return DIGEST

    monkeypatch.setattr(download_module, "http_download", spy)
    download_url(server.add("/org/default-cap.pth"), cache_dir=tmp_path, progress=False)
    assert seen["max_bytes"] == download_module.UNVERIFIED_MAX_BYTES == 2 << 30
    download_url(server.add("/org/verified.pth"), sha256=DIGEST, cache_dir=tmp_path, progress=False)
    assert seen["max_bytes"] is None  # the checksum bounds what is accepted


@pytest.mark.parametrize("variable", ["RESNETZOO_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_and_not_cached_fails_fast_naming_the_file(monkeypatch, tmp_path, variable):
    monkeypatch.setenv(variable, "1")
    url = "http://10.255.255.1/models/resnet50-0676ba61.pth"  # unroutable: a network try would hang
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        download_url(url, sha256_prefix="0676ba61", cache_dir=tmp_path, progress=False)
    assert time.perf_counter() - start < 1.0
    message = _text(info, tmp_path)
    assert "resnet50-0676ba61.pth" in message and url in message and "offline mode is on" in message
    assert str(tmp_path / "resnet50-0676ba61.pth") in str(info.value)  # where to put it by hand


def test_http_404_is_unavailable_and_saves_nothing(server, tmp_path):
    url = server.add("/exists.pth").replace("/exists.pth", "/missing.pth")
    with pytest.raises(WeightsUnavailableError) as info:
        download_url(url, cache_dir=tmp_path, progress=False)
    assert "HTTP error 404" in _text(info, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/octet-stream"])
def test_html_page_is_never_saved_as_weights(server, tmp_path, content_type):
    url = server.add("/w.pth", b"<!DOCTYPE html><html><body>Sign in</body></html>", content_type=content_type)
    with pytest.raises(WeightsUnavailableError) as info:
        download_url(url, cache_dir=tmp_path, progress=False)
    assert "HTML page" in _text(info, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_truncated_transfer_is_unavailable_and_saves_nothing(server, tmp_path):
    url = server.add("/w.pth", PAYLOAD, declared_length=len(PAYLOAD) + 1000)
    with pytest.raises(WeightsUnavailableError) as info:
        download_url(url, cache_dir=tmp_path, progress=False)
    assert "could not download" in _text(info, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_is_unavailable(tmp_path):
    dead = LoopbackServer()
    url = dead.add("/w.pth", PAYLOAD)
    dead.stop()
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        download_url(url, cache_dir=tmp_path, progress=False)
    assert time.perf_counter() - start < 5.0
    assert "cannot reach" in _text(info, tmp_path) and "load_weights" in _text(info, tmp_path)


def test_concurrent_downloads_end_with_one_good_file(server, tmp_path):
    url = server.add(f"/{NAME}", delay_s=0.002)  # slow enough for the downloads to overlap
    results: list[object] = []

    def worker() -> None:
        try:
            results.append(download_url(url, sha256=DIGEST, cache_dir=tmp_path, progress=False))
        except Exception as exc:  # collected, so the assertion below shows it
            results.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [tmp_path / NAME] * 4
    assert (tmp_path / NAME).read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME]  # no temp leftovers


@pytest.mark.parametrize(
    ("url", "kwargs", "match"),
    [
        ("ftp://host/w.pth", {}, "http"),
        ("https://host/w.pth", {"sha256": "abc"}, "sha256"),
        ("https://host/w.pth", {"sha256_prefix": "nothex!!"}, "sha256_prefix"),
        ("https://host/w.pth", {"file_name": "../escape.pth"}, "plain file name"),
        ("https://host/", {}, "file name"),
    ],
)
def test_bad_arguments_are_value_errors(tmp_path, url, kwargs, match):
    with pytest.raises(ValueError, match=match):
        download_url(url, cache_dir=tmp_path, progress=False, **kwargs)


def test_cache_dir_defaults_to_torch_hub_checkpoints(monkeypatch, tmp_path):
    monkeypatch.delenv("RESNETZOO_CACHE")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    assert download_module.cache_dir() == tmp_path / "torch-home" / "hub" / "checkpoints"
    monkeypatch.setenv("RESNETZOO_CACHE", str(tmp_path / "mine"))
    assert download_module.cache_dir() == tmp_path / "mine"


# ----------------------------------------------------------------------------------------------
# fetch_weights and read_source over URLs


def _spec(url: str | None, hf_hub_id: str | None = "resnetzoo-tests/absent") -> WeightSpec:
    return WeightSpec(arch="testnet", tag="t", url=url, hf_hub_id=hf_hub_id, sha256=DIGEST)


def test_fetch_uses_the_cached_url_file_before_the_hub(monkeypatch, server, tmp_path):
    url = server.add(f"/{NAME}")
    (tmp_path / "default-cache").mkdir()
    (tmp_path / "default-cache" / NAME).write_bytes(PAYLOAD)

    def no_hub(*args: object, **kwargs: object) -> Path:
        raise AssertionError("the Hub must not be asked when the URL's file is cached")

    monkeypatch.setattr(download_module, "hub_download", no_hub)
    assert fetch_weights(_spec(url), progress=False) == tmp_path / "default-cache" / NAME
    assert server.hits == []


def test_fetch_falls_back_from_hub_to_url(monkeypatch, server, tmp_path):
    url = server.add(f"/{NAME}")
    asked: list[str] = []

    def hub_down(repo_id: str, filename: str, **kwargs: object) -> Path:
        asked.append(f"{repo_id}/{filename}")
        raise WeightsUnavailableError("hub is down")

    monkeypatch.setattr(download_module, "hub_download", hub_down)
    path = fetch_weights(_spec(url), progress=False)
    assert asked == ["resnetzoo-tests/absent/model.safetensors"]
    assert path.read_bytes() == PAYLOAD


def test_fetch_reports_every_failed_source(monkeypatch):
    monkeypatch.setenv("RESNETZOO_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        fetch_weights(_spec(f"http://10.255.255.1/{NAME}"), progress=False)
    assert time.perf_counter() - start < 5.0
    message = str(info.value)
    assert "testnet.t" in message
    assert "1. Hugging Face Hub" in message and "resnetzoo-tests/absent" in message
    assert "2. URL" in message and NAME in message
    assert "load_weights(model, '/path/to/file')" in message


def test_hub_download_stays_local_when_resnetzoo_offline(monkeypatch, tmp_path):
    # RESNETZOO_OFFLINE alone (huggingface_hub itself online) must still keep the Hub call local:
    # not even hf_hub_download(local_files_only=True), which fetches an agent registry from the Hub.
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def no_network(*args: object, **kwargs: object) -> str:
        raise AssertionError("hf_hub_download must not be called offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("RESNETZOO_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="offline mode is on") as info:
        download_module.hub_download("org/repo", "model.safetensors", progress=False)
    assert "hf download org/repo model.safetensors" in str(info.value)
    assert isinstance(info.value.__cause__, LocalEntryNotFoundError)


def test_fetch_rejects_non_specs():
    with pytest.raises(TypeError, match="WeightSpec"):
        fetch_weights("resnet50")


def test_read_source_from_url_checks_the_hash_in_the_name(server):
    good = read_source(server.add(f"/{NAME}"))
    assert good.origin.endswith(NAME) and good.metadata == {}
    assert torch.equal(good.obj["conv.weight"], STATE["conv.weight"])
    wrong = server.add("/weights-deadbeef.safetensors")
    with pytest.raises(ChecksumError):
        read_source(wrong)


# ----------------------------------------------------------------------------------------------
# The Hub, from a cache laid out by hand, in a fresh interpreter


_HUB_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from resnetzoo.weights import WeightSpec, fetch_weights, hub_download, read_source

    def attempt(fn):
        start = time.perf_counter()
        try:
            value = fn()
            return {"ok": value, "seconds": time.perf_counter() - start}
        except Exception as exc:
            return {"error": type(exc).__name__, "message": str(exc), "seconds": time.perf_counter() - start}

    commit = sys.argv[1]
    spec = WeightSpec(arch="testnet", tag="hub", hf_hub_id="org/good")
    print(json.dumps({
        "good": attempt(lambda: str(hub_download("org/good", "model.safetensors", progress=False))),
        "default_file": attempt(lambda: sorted(read_source("hf-hub:org/good").obj)),
        "pinned": attempt(lambda: read_source(f"hf-hub:org/good@{commit}:model.safetensors").origin),
        "bin_fallback": attempt(lambda: read_source("hf-hub:org/binonly").origin),
        "bad_blob": attempt(lambda: hub_download("org/bad", "model.safetensors", progress=False)),
        "absent": attempt(lambda: hub_download("org/absent", "model.safetensors", progress=False)),
        "spec": attempt(lambda: str(fetch_weights(spec, progress=False))),
    }))
    """
)


@pytest.fixture(scope="module")
def hub_results(tmp_path_factory, make_hub_repo):
    root = tmp_path_factory.mktemp("hub")
    cache = root / "hub-cache"
    commit = "0123456789abcdef0123456789abcdef01234567"
    make_hub_repo(cache, "org/good", {"model.safetensors": PAYLOAD}, commit=commit)
    make_hub_repo(cache, "org/binonly", {"pytorch_model.bin": _torch_bytes(root)}, commit=commit)
    tampered = PAYLOAD[:-1] + b"X"  # same size: huggingface_hub's own size check cannot see it
    make_hub_repo(cache, "org/bad", {"model.safetensors": tampered}, commit=commit, blob_names={"model.safetensors": DIGEST})
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(cache),
        "RESNETZOO_CACHE": str(root / "rz-cache"),
        "PYTHONPATH": str(Path(resnetzoo.__file__).parents[1]),
    }
    env.pop("RESNETZOO_OFFLINE", None)
    done = subprocess.run(
        [sys.executable, "-c", _HUB_SCRIPT, commit], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    results["_snapshot"] = str(cache / "models--org--good" / "snapshots" / commit / "model.safetensors")
    return results


def _torch_bytes(folder: Path) -> bytes:
    path = folder / "tmp.bin"
    torch.save(STATE, path)
    return path.read_bytes()


def test_hub_download_finds_and_verifies_the_offline_cache(hub_results):
    assert hub_results["good"] == {"ok": hub_results["_snapshot"], "seconds": pytest.approx(0, abs=5)}
    assert hub_results["default_file"]["ok"] == sorted(STATE)
    assert hub_results["pinned"]["ok"].startswith("hf-hub:org/good@0123456789abcdef")


def test_hub_reference_falls_back_to_pytorch_model_bin(hub_results):
    assert hub_results["bin_fallback"]["ok"] == "hf-hub:org/binonly:pytorch_model.bin"


def test_hub_blob_that_does_not_match_its_name_raises(hub_results):
    bad = hub_results["bad_blob"]
    assert bad["error"] == "ChecksumError"
    assert DIGEST in bad["message"] and "org/bad" in bad["message"]


def test_hub_repo_not_in_cache_is_unavailable_quickly(hub_results):
    absent = hub_results["absent"]
    assert absent["error"] == "WeightsUnavailableError"
    assert "org/absent" in absent["message"] and "offline mode is on" in absent["message"]
    assert absent["seconds"] < 2.0


def test_fetch_weights_uses_the_hub_cache_offline(hub_results):
    assert hub_results["spec"]["ok"] == hub_results["_snapshot"]


# ----------------------------------------------------------------------------------------------
# An unreachable Hub is found out by one probe; a Hub that answers keeps huggingface_hub's retries


def test_an_unreachable_hub_is_not_asked_and_its_cache_is_read(monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    dead = LoopbackServer()
    endpoint = dead.add("/", b"")
    dead.stop()
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint.rstrip("/"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    def must_not_run(*args: object, **kwargs: object) -> str:
        raise AssertionError("hf_hub_download retries a dead host for about 30 s; it must not be called")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", must_not_run)
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        download_module.hub_download("org/repo", "model.safetensors", progress=False)
    assert time.perf_counter() - start < 5.0
    message = str(info.value)
    assert "the Hub is out of reach: cannot reach 127.0.0.1" in message and "RESNETZOO_OFFLINE=1" in message
    assert isinstance(info.value.__cause__, LocalEntryNotFoundError)


def test_a_hub_that_answers_is_asked_with_its_own_retries(http_server, monkeypatch):
    import huggingface_hub

    endpoint = http_server.add("/", b"")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint.rstrip("/"))
    asked: list[tuple[str, str]] = []

    def answered(repo_id: str, filename: str, **kwargs: object) -> str:
        asked.append((repo_id, filename))
        assert "local_files_only" not in kwargs  # a real download, with huggingface_hub's retries
        raise huggingface_hub.errors.EntryNotFoundError("no such file")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", answered)
    with pytest.raises(WeightsUnavailableError, match="the repository has no such file"):
        download_module.hub_download("org/repo", "model.safetensors", progress=False)
    assert asked == [("org/repo", "model.safetensors")]
