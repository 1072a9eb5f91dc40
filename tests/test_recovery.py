"""Untrusted pickles: bounded reading before torch allocates, precise refusals, and the opt-in
recovery (``unsafe_objects="stub"``) that never runs anything from the file."""

from __future__ import annotations

import argparse
import collections
import io
import os
import pickle
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

import resnetzoo
from resnetzoo import cli
from resnetzoo.errors import CheckpointError
from resnetzoo.weights import (
    read_checkpoint,
    read_checkpoint_file,
    read_source,
    read_training_checkpoint,
)

FORMATS = ["zip", "legacy", "pickle"]


def _save(obj: object, path: Path, fmt: str) -> Path:
    if fmt == "pickle":
        with open(path, "wb") as f:
            pickle.dump(obj, f)
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=fmt == "zip")
    return path


def _load_trusted(path: Path, fmt: str) -> object:
    """What weights_only=False gives: only for files this test made itself."""
    if fmt == "pickle":
        with open(path, "rb") as f:
            return pickle.load(f)  # noqa: S301 (our own file)
    return torch.load(path, weights_only=False)


def _bits(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes()


def _assert_bit_identical(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
        assert _bits(got[key]) == _bits(value), key


class _Payload:
    """A classic pickle exploit: unpickling calls os.system, which would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    net = resnetzoo.ResNet(layers=(1, 1, 1, 1), widths=(4, 8, 8, 8), stem_width=8, num_classes=3)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if tensor.is_floating_point():
                values = torch.rand(tensor.shape, generator=gen) + 0.5 if "running_var" in name else torch.randn(
                    tensor.shape, generator=gen
                )
                tensor.copy_(values)
    return net.eval()


def _training_checkpoint(model: torch.nn.Module) -> dict[str, object]:
    from omegaconf import OmegaConf

    return {
        "state_dict": model.state_dict(),
        "args": argparse.Namespace(lr=0.1, arch="tiny", milestones=[30, 60]),
        "epoch": np.int64(7),
        "best_top1": np.float32(0.75),
        "config": OmegaConf.create({"optim": {"lr": 0.1}, "tags": ["a", "b"]}),
    }


# ---------------------------------------------------------------------- refusals
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_training_checkpoint_is_refused_by_default_naming_its_objects(tmp_path, model, fmt):
    path = _save(_training_checkpoint(model), tmp_path / "train.ckpt", fmt)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "refused for safety" in message and "argparse.Namespace" in message
    assert "unsafe_objects='stub'" in message


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_whole_pickled_model_is_refused_with_the_fix_where_it_was_made(tmp_path, model, fmt):
    path = _save(model, tmp_path / "model.pt", fmt)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "the file holds a whole pickled model (resnetzoo.resnet.ResNet), not a state dict" in message
    assert "save its weights instead: torch.save(model.state_dict(), 'weights.pth')" in message
    assert "['state_dict']" not in message  # torch.load(...)['state_dict'] fails on a module


# ---------------------------------------------------------------------- recovery
@pytest.mark.parametrize("fmt", FORMATS)
def test_recovered_tensors_are_bit_identical_to_weights_only_false(tmp_path, model, fmt):
    path = _save(_training_checkpoint(model), tmp_path / "train.ckpt", fmt)
    loaded = read_checkpoint_file(path, unsafe_objects="stub")
    trusted = _load_trusted(path, fmt)
    _assert_bit_identical(loaded.obj["state_dict"], trusted["state_dict"])
    assert loaded.recovered["checkpoint['args']"] == {
        "__class__": "argparse.Namespace", "lr": 0.1, "arch": "tiny", "milestones": [30, 60],
    }  # fmt: skip
    assert loaded.recovered["checkpoint['epoch']"] == 7 and loaded.obj["epoch"] == 7
    assert loaded.obj["best_top1"] == pytest.approx(0.75)
    assert loaded.recovered["checkpoint['config']"] == {"optim": {"lr": 0.1}, "tags": ["a", "b"]}


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_whole_pickled_model_is_recovered_as_its_state_dict(tmp_path, model, fmt):
    path = _save(model, tmp_path / "model.pt", fmt)
    obj, _ = read_checkpoint(path, unsafe_objects="stub")
    _assert_bit_identical(obj, _load_trusted(path, fmt).state_dict())


@pytest.mark.parametrize("fmt", FORMATS)
def test_load_weights_with_stubs_gives_the_same_outputs_and_reports_the_objects(tmp_path, model, fmt):
    path = _save(_training_checkpoint(model), tmp_path / "train.ckpt", fmt)
    target = resnetzoo.ResNet(layers=(1, 1, 1, 1), widths=(4, 8, 8, 8), stem_width=8, num_classes=3)
    report = resnetzoo.load_weights(target, path, unsafe_objects="stub")
    assert report.ok and report.recovered["checkpoint['epoch']"] == 7
    assert "Recovered as plain data (unsafe_objects='stub'; nothing from the file ran):" in str(report)
    assert "checkpoint['args']: {\"__class__\": \"argparse.Namespace\", \"lr\": 0.1" in str(report)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(target.eval()(x), model(x))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("mode", ["refuse", "stub"])
def test_a_malicious_reduce_never_runs(tmp_path, fmt, mode):
    marker = tmp_path / "pwned"
    path = _save({"state_dict": {"w": torch.ones(3)}, "trap": _Payload(marker)}, tmp_path / "evil.pth", fmt)
    if mode == "refuse":
        with pytest.raises(CheckpointError, match="refused for safety") as info:
            read_checkpoint(path)
        assert "system" in str(info.value)
    else:
        loaded = read_checkpoint_file(path, unsafe_objects="stub")
        trap = loaded.recovered["checkpoint['trap']"]
        assert trap["__class__"].endswith(".system") and trap["args"] == [f"touch {marker}"]
        assert torch.equal(loaded.obj["state_dict"]["w"], torch.ones(3))
    assert not marker.exists(), "the pickle's code ran"


def test_a_payload_that_calls_what_it_built_runs_nothing(tmp_path):
    # getattr(builtins, "exec")("...") : a two-step payload, both steps stand-ins.
    marker = tmp_path / "pwned"

    class TwoStep:
        def __reduce__(self):
            return getattr, (__builtins__ if isinstance(__builtins__, dict) else vars(__builtins__), "get")

    data = pickle.dumps({"x": TwoStep(), "code": f"open({str(marker)!r}, 'w')"})
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    obj, _ = read_checkpoint(path, unsafe_objects="stub")
    assert obj["x"]["__class__"] == "builtins.getattr" and not marker.exists()


def test_unsafe_objects_takes_only_the_two_words(tmp_path):
    with pytest.raises(ValueError, match="unsafe_objects must be one of"):
        read_checkpoint(tmp_path / "x.pt", unsafe_objects="allow")


def test_recovery_of_a_corrupt_pickle_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"a": list(range(100))})[:-20])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        read_checkpoint(path, unsafe_objects="stub")


def test_shared_references_cannot_blow_up_the_report(tmp_path):
    # Each list holds the previous one twice: 2**60 items when expanded, 60 objects in the file.
    value: list[object] = ["x"]
    for _ in range(60):
        value = [value, value]
    path = tmp_path / "laughs.pkl"
    path.write_bytes(pickle.dumps({"w": torch.ones(1), "bomb": argparse.Namespace(v=value)}))
    start = time.perf_counter()
    loaded = read_checkpoint_file(path, unsafe_objects="stub")
    assert time.perf_counter() - start < 5.0
    assert len(repr(loaded.recovered)) < 20_000


# ---------------------------------------------------------- declared vs held data
def _stride0_checkpoint(path: Path, fmt: str, classes: int = 250_000) -> Path:
    # A few KB that claim a 250,000-class classifier: one row, broadcast with stride 0.
    state = {"fc.weight": torch.zeros(512).expand(classes, 512), "fc.bias": torch.zeros(1).expand(classes)}
    torch.save(state, path, _use_new_zipfile_serialization=fmt == "zip")
    return path


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_a_broadcast_view_cannot_pose_as_a_huge_tensor(tmp_path, fmt):
    path = _stride0_checkpoint(tmp_path / "tiny.pt", fmt)
    assert path.stat().st_size < 50_000
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "declares more tensor data than it holds" in message and "stride-0" in message
    assert "checkpoint['fc.weight']" in message and "(250000, 512)" in message


def test_inspect_refuses_a_broadcast_view_in_one_line(tmp_path, capsys):
    path = _stride0_checkpoint(tmp_path / "tiny.pt", "zip")
    assert cli.main(["inspect", str(path), "--arch", "resnet18"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "declares more tensor data than it holds" in err[0]


class _Storage:
    """Stands for a storage in a hand-written legacy torch.save pickle."""


class _Tensor:
    def __init__(self, storage: _Storage, size: tuple[int, ...]) -> None:
        self.storage, self.size = storage, size

    def __reduce__(self):
        stride = tuple(int(np.prod(self.size[i + 1 :])) for i in range(len(self.size)))
        return torch._utils._rebuild_tensor_v2, (self.storage, 0, self.size, stride, False, collections.OrderedDict())


def _legacy_file(path: Path, *, declared: int, held: int) -> Path:
    """A legacy torch.save file whose storage declares ``declared`` floats but holds ``held``."""
    storage = _Storage()

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            if obj is storage:
                return ("storage", torch.FloatStorage, "0", "cpu", declared, None)
            return None

    buffer = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(header, buffer, protocol=2)
    Pickler(buffer, protocol=2).dump({"fc.weight": _Tensor(storage, (declared,))})
    pickle.dump(["0"], buffer, protocol=2)
    buffer.write(declared.to_bytes(8, "little") + b"\0" * (4 * held))
    path.write_bytes(buffer.getvalue())
    return path


def test_a_legacy_file_declaring_terabytes_is_refused_before_any_allocation(tmp_path):
    path = _legacy_file(tmp_path / "huge.pt", declared=2**40, held=4)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="declares more tensor data than it holds") as info:
        read_checkpoint(path)
    assert time.perf_counter() - start < 2.0
    assert "4,398,046,511,104 bytes" in str(info.value)
    with pytest.raises(CheckpointError, match="declares more tensor data than it holds"):
        read_checkpoint(path, unsafe_objects="stub")


def test_a_well_formed_hand_written_legacy_file_reads(tmp_path):
    path = _legacy_file(tmp_path / "ok.pt", declared=4, held=4)
    obj, _ = read_checkpoint(path)
    assert torch.equal(obj["fc.weight"], torch.zeros(4))


def test_compressed_records_are_refused(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(1000)}, plain)
    packed = tmp_path / "packed.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            dst.writestr(item.filename, src.read(item.filename))
    with pytest.raises(CheckpointError, match="compressed"):
        read_checkpoint(packed)


def test_a_fifo_config_beside_the_weights_does_not_hang(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    torch.save(torchvision.models.resnet18().state_dict(), folder / "pytorch_model.bin")
    os.mkfifo(folder / "config.json")
    outcome: list[object] = []
    worker = threading.Thread(target=lambda: outcome.append(_try(lambda: read_source(folder))), daemon=True)
    worker.start()
    worker.join(20)
    assert outcome, "reading a folder with a FIFO config.json hung"
    assert isinstance(outcome[0], CheckpointError) and "FIFO" in str(outcome[0])


def _try(fn):
    try:
        return fn()
    except Exception as exc:  # the test looks at what was raised
        return exc


# --------------------------------------------------------- training checkpoints
def test_read_training_checkpoint_reads_a_dict_safely(tmp_path):
    state = {"model": {"w": torch.ones(2)}, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}, "epoch": 3}
    torch.save(state, tmp_path / "checkpoint.pt")
    read = read_training_checkpoint(tmp_path / "checkpoint.pt")
    assert read["epoch"] == 3 and torch.equal(read["model"]["w"], torch.ones(2))
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a training checkpoint dict"):
        read_training_checkpoint(tmp_path / "list.pt")
    marker = tmp_path / "pwned"
    torch.save({"trap": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused for safety"):
        read_training_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_a_zip_directory_declaring_more_than_the_file_holds_is_refused(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(16)}, path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        record = next(i for i in archive.infolist() if i.filename.endswith("data/0"))
    # The central directory entry of data/0 (signature PK\1\2, name at offset 46): make it
    # declare 2**31 uncompressed bytes (the field at offset 24).
    name = record.filename.encode()
    at = data.find(b"PK\x01\x02")
    while data[at + 46 : at + 46 + len(name)] != name:
        at = data.find(b"PK\x01\x02", at + 4)
    data[at + 24 : at + 28] = (2**31).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="declares more data than the file holds"):
        read_checkpoint(path)


# ------------------------------------------------------------------ numpy arrays (detectron2 .pkl)
_ARRAYS = {
    "w": np.random.default_rng(0).standard_normal((4, 3, 2, 2)).astype(np.float32),
    "fortran": np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
    "half": np.linspace(-1, 1, 5).astype(np.float16),
    "count": np.array(7, dtype=np.int64),
    "mask": np.array([True, False]),
    "empty": np.zeros((0, 3), dtype=np.float32),
}


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("fmt", ["pickle", "zip"])
def test_numpy_arrays_are_read_as_tensors_by_default_without_calling_numpy(tmp_path, protocol, fmt, monkeypatch):
    checkpoint = {"model": dict(_ARRAYS), "__author__": "torchvision", "matching_heuristics": True}
    path = tmp_path / "R-50.pkl"
    if fmt == "pickle":  # as detectron2's convert-torchvision-to-d2.py writes it
        path.write_bytes(pickle.dumps(checkpoint, protocol=protocol))
    else:
        torch.save(checkpoint, path, pickle_protocol=min(protocol, 4))
    # numpy's own pickle hooks are never called: break them for the duration.
    import numpy._core.multiarray as multiarray
    import numpy._core.numeric as numeric

    def called(*args, **kwargs):
        raise AssertionError("numpy's pickle hook was called")

    monkeypatch.setattr(multiarray, "_reconstruct", called)
    monkeypatch.setattr(numeric, "_frombuffer", called)
    for mode in ("refuse", "stub"):
        loaded = read_checkpoint_file(path, unsafe_objects=mode)
        assert loaded.recovered == {} and loaded.obj["__author__"] == "torchvision"
        for key, array in _ARRAYS.items():
            got = loaded.obj["model"][key]
            assert isinstance(got, torch.Tensor) and got.shape == array.shape, key
            assert np.array_equal(got.numpy(), array) and got.numpy().dtype == array.dtype, key


@pytest.mark.parametrize(
    ("array", "reason"),
    [
        (np.array(["a", "b"]), "not a plain numeric array"),
        (np.arange(3, dtype=">f4"), "not a plain numeric array"),
        (np.array([1, "x"], dtype=object), "not a plain numeric array"),
    ],
    ids=["str", "big-endian", "object"],
)
def test_numpy_arrays_that_are_not_plain_numbers_are_refused(tmp_path, array, reason):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": array}}))
    with pytest.raises(CheckpointError, match=reason):
        read_checkpoint(path)


def test_numpy_arrays_beside_a_payload_are_still_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": np.ones(3, dtype=np.float32)}, "trap": _Payload(marker)}))
    with pytest.raises(CheckpointError, match="system"):
        read_checkpoint(path)
    assert not marker.exists()


def test_a_numpy_array_whose_shape_lies_about_its_bytes_is_refused(tmp_path):
    data = pickle.dumps({"w": np.ones(4, dtype=np.float32)}, protocol=4)
    # The shape tuple (4,) becomes (40000000,): the 16 bytes must not be read as 160 MB.
    data = data.replace(b"K\x04\x85", b"J\x00Z b\x85", 1)
    path = tmp_path / "lie.pkl"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="not a plain numeric array"):
        read_checkpoint(path)


class _CraftedArray:
    """Pickles as numpy's ``_reconstruct`` + ``__setstate__`` with whatever shape and flags it is given."""

    def __init__(self, shape, fortran: bool, data: bytes) -> None:
        self.state = (1, shape, np.dtype("<f4"), fortran, data)

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        return _reconstruct, (np.ndarray, (0,), b"b"), self.state


@pytest.mark.parametrize(
    ("shape", "fortran", "data", "expected"),
    [
        ((0, 2**70), False, b"", None),
        ((0,) + (10**9,) * 4, False, b"", None),
        ((1,) * 65, False, b"\0" * 4, None),
        ((), True, b"\0\0\x80\x3f", torch.tensor(1.0)),
        ((2,), True, b"\0\0\x80\x3f\0\0\0\x40", torch.tensor([1.0, 2.0])),
    ],
    ids=["empty-huge", "empty-overflowing", "too-many-dims", "0d-fortran", "1d-fortran"],
)
def test_crafted_numpy_shapes_are_refused_in_one_line_or_read_right(tmp_path, shape, fortran, data, expected):
    path = tmp_path / "crafted.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": _CraftedArray(shape, fortran, data)}}, protocol=4))
    if expected is None:
        with pytest.raises(CheckpointError, match="not a plain numeric array"):
            read_checkpoint(path)
    else:
        assert torch.equal(read_checkpoint_file(path).obj["model"]["w"], expected)


def test_a_python2_pickle_of_numpy_arrays_is_read(tmp_path):
    """Detectron's Python 2 era .pkl files hold byte strings (BINSTRING): read as latin1, as detectron2 does."""
    import io
    import struct

    class Python2Pickler(pickle._Pickler):
        dispatch = dict(pickle._Pickler.dispatch)

        def save_bytes(self, obj):
            opcode = pickle.SHORT_BINSTRING + bytes([len(obj)]) if len(obj) < 256 else (
                pickle.BINSTRING + struct.pack("<i", len(obj)))
            self.write(opcode + obj)
            self.memoize(obj)

        def save_str(self, obj):  # a Python 2 str is a byte string
            self.save_bytes(obj.encode("latin1"))

        dispatch[bytes], dispatch[str] = save_bytes, save_str

    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump({"blobs": {"res2_0_branch2a_w": array}})
    path = tmp_path / "R-50.pkl"
    path.write_bytes(buffer.getvalue())
    got = read_checkpoint_file(path).obj["blobs"]["res2_0_branch2a_w"]
    assert torch.equal(got, torch.from_numpy(array))

