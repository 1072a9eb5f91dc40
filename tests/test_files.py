"""Reading checkpoint files safely, and reading weights from every kind of source."""

from __future__ import annotations

import argparse
import builtins
import hashlib
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from resnetzoo.errors import CheckpointError, WeightsUnavailableError
from resnetzoo.weights import LoadedCheckpoint, WeightSpec, read_checkpoint, read_source

STATE = {"conv1.weight": torch.randn(4, 3, 3, 3), "bn1.running_mean": torch.randn(4), "fc.bias": torch.zeros(2)}


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _CreatesFile:
    """Unpickling this would create ``marker``: the canonical code-executing pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (str(self.marker), "w"))


# ----------------------------------------------------------------------------------------------
# Good files


def test_safetensors_round_trip_with_metadata(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(STATE, path, metadata={"format": "pt", "convention": "torchvision"})
    obj, metadata = read_checkpoint(path)
    assert _same_tensors(obj, STATE)
    assert metadata == {"format": "pt", "convention": "torchvision"}


def test_safetensors_whose_header_length_starts_like_a_pickle(tmp_path):
    # A header of 0x80 + 256 * n bytes starts with byte 0x80, a pickle's first byte; the
    # file must still be read as safetensors (ResNet-50's header is such a size).
    for pad in range(300):
        path = tmp_path / "model.bin"
        save_file(STATE, path, metadata={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no padding gave a header length starting with 0x80")
    obj, metadata = read_checkpoint(path)
    assert _same_tensors(obj, STATE) and metadata["pad"] == "x" * pad


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_save_files_load_with_empty_metadata(tmp_path, zip_format):
    path = tmp_path / "model.pth"
    torch.save(STATE, path, _use_new_zipfile_serialization=zip_format)
    obj, metadata = read_checkpoint(str(path))
    assert _same_tensors(obj, STATE) and metadata == {}


def test_nested_training_checkpoint_loads_as_nested_dict(tmp_path):
    path = tmp_path / "last.ckpt"
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(1, 3)).sum().backward()
    optimizer.step()
    torch.save({"epoch": 7, "state_dict": OrderedDict(model.state_dict()), "optimizer": optimizer.state_dict()}, path)
    obj, _ = read_checkpoint(path)
    assert obj["epoch"] == 7
    assert _same_tensors(obj["state_dict"], model.state_dict())
    assert "state" in obj["optimizer"]


def test_format_comes_from_content_not_extension(tmp_path):
    safetensors_named_pth = tmp_path / "really-safetensors.pth"
    save_file(STATE, safetensors_named_pth, metadata={"k": "v"})
    obj, metadata = read_checkpoint(safetensors_named_pth)
    assert _same_tensors(obj, STATE) and metadata == {"k": "v"}
    zip_named_safetensors = tmp_path / "really-zip.safetensors"
    torch.save(STATE, zip_named_safetensors)
    obj, metadata = read_checkpoint(zip_named_safetensors)
    assert _same_tensors(obj, STATE) and metadata == {}


# ----------------------------------------------------------------------------------------------
# Bad files: each gets a CheckpointError (a ValueError) naming the file and the fix


def _expect(path: Path, *phrases: str) -> str:
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    # The path holds the test's name; look for the phrases in the rest of the message.
    rest = message.replace(str(path), "<path>")
    for phrase in phrases:
        assert phrase in rest, f"{phrase!r} not in {rest!r}"
    return rest


def test_missing_file_is_a_file_not_found_naming_it(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth") as info:
        read_checkpoint(path)
    assert isinstance(info.value, WeightsUnavailableError)


def test_folder_and_non_path(tmp_path):
    _expect(tmp_path, "folder")
    with pytest.raises(TypeError, match="file path"):
        read_checkpoint(123)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    _expect(path, "empty", "download it again")


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_truncated_download(tmp_path, zip_format):
    whole = tmp_path / "whole.pth"
    torch.save(STATE, whole, _use_new_zipfile_serialization=zip_format)
    path = tmp_path / "half.pth"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    message = _expect(path, "download it again")
    assert "truncated" in message


def test_git_lfs_pointer(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_text(
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
        "size 102469840\n"
    )
    _expect(path, "git-lfs pointer", "git lfs pull")


@pytest.mark.parametrize("page", [b"<!DOCTYPE html><html></html>", b"\n  <html><body>403</body></html>", b"<?xml version='1.0'?><Error/>"])
def test_html_page_saved_as_weights(tmp_path, page):
    path = tmp_path / "resnet50.pth"
    path.write_bytes(page)
    _expect(path, "HTML page")


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_code_executing_pickle_is_refused_and_never_runs(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"weight": torch.ones(1), "trap": _CreatesFile(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    assert not marker.exists()
    _expect(path, "refused for safety", "never unpickles", "safetensors")
    assert not marker.exists(), "the pickle's code ran"


def test_refusal_names_the_blocked_class(tmp_path):
    path = tmp_path / "train.pth"
    torch.save({"args": argparse.Namespace(lr=0.1), "state_dict": STATE}, path)
    _expect(path, "argparse.Namespace", "add_safe_globals")


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_plain_pickle_of_data_is_not_a_torch_file(tmp_path, protocol):
    path = tmp_path / "plain.pkl"
    with open(path, "wb") as f:
        pickle.dump({"a": 1}, f, protocol=protocol)
    _expect(path, "not a torch.save file")


def test_corrupt_safetensors_header(tmp_path):
    good = tmp_path / "good.safetensors"
    save_file(STATE, good)
    data = good.read_bytes()
    garbled = tmp_path / "garbled.safetensors"
    garbled.write_bytes(data[:8] + b"{not json" + data[17:])
    _expect(garbled, "corrupt", "safetensors")
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    _expect(huge, "corrupt", "safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:-10])
    _expect(cut, "safetensors")


def test_unknown_format(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"\x00\x01 definitely not weights" * 4)
    _expect(path, "not a checkpoint format")


def test_checkpoint_errors_are_value_errors():
    assert issubclass(CheckpointError, ValueError)


# ----------------------------------------------------------------------------------------------
# read_source: every accepted form, and clear errors for the rest


def test_read_source_state_dict_is_passed_through():
    loaded = read_source(STATE)
    assert loaded == LoadedCheckpoint(STATE, {}, "state dict") and loaded.obj is STATE


def test_read_source_paths(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file(STATE, path, metadata={"a": "b"})
    from_path = read_source(path)
    from_str = read_source(str(path))
    assert from_path.origin == from_str.origin == str(path)
    assert from_path.metadata == {"a": "b"} and _same_tensors(from_str.obj, STATE)
    with pytest.raises(FileNotFoundError):
        read_source(str(tmp_path / "missing.pth"))


def test_read_source_weight_spec_uses_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RESNETZOO_CACHE", str(tmp_path))
    monkeypatch.setenv("RESNETZOO_OFFLINE", "1")
    torch.save(STATE, tmp_path / "testnet.pth")
    digest = hashlib.sha256((tmp_path / "testnet.pth").read_bytes()).hexdigest()
    # Found by its name only, the file is used because the record's checksum proves it.
    spec = WeightSpec(arch="testnet", tag="local", url="https://example.invalid/testnet.pth", sha256=digest)
    loaded = read_source(spec)
    assert loaded.origin.startswith("testnet.local (") and _same_tensors(loaded.obj, STATE)
    # Without a checksum nothing proves that the file of that name came from this URL.
    unverified = WeightSpec(arch="testnet", tag="other", url="https://example.invalid/testnet.pth")
    with pytest.raises(WeightsUnavailableError, match="not in the cache"):
        read_source(unverified)


@pytest.mark.parametrize(
    ("source", "error", "match"),
    [
        ("s3://bucket/model.pth", ValueError, "unsupported URL scheme"),
        ("hf-hub:", ValueError, "malformed Hub reference"),
        ("hf-hub:org/repo@", ValueError, "malformed Hub reference"),
        (42, TypeError, "accepted sources"),
        (b"/path/model.pth", TypeError, "accepted sources"),
        ([("fc.bias", torch.zeros(1))], TypeError, "state dict"),
    ],
)
def test_read_source_rejects_other_forms(source, error, match):
    with pytest.raises(error, match=match):
        read_source(source)
