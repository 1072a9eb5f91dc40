"""Reading pickles without running them: an inert stand-in for every object a pickle asks for.

A pickle is a program: it names globals (``collections.OrderedDict``, but as easily
``os.system``) and calls them. ``torch.load(weights_only=True)`` calls only a fixed list
and refuses any other file. This module reads *any* pickle without calling anything
the file names: each global becomes a :class:`PickledObject` type that only records
its name, and each call, ``__setstate__``, item or append on one is recorded as data.
Nothing is imported, nothing of the file's choosing runs.

Three uses, all for :mod:`resnetzoo.weights.files`:

- :func:`scan_torch_file` reads a ``torch.save`` file's pickle and lists the storages
  it declares, the tensors it builds from them and the globals it names, *before*
  torch reads it; :meth:`TorchFileLayout.check_backed` then refuses a file whose
  tensors declare more data than the file holds (a 36 KB file must not make torch
  allocate 2 TB, nor a stride-0 view pose as a 250,000-class classifier).
- :func:`describe_refusal` turns what was found into an error message that names
  what the file asks for (a whole pickled model, an ``argparse.Namespace`` …).
- :func:`recover` is the opt-in recovery (``unsafe_objects="stub"``): tensors are
  rebuilt by torch's own loader and rebuild functions (so they are bit-identical to
  what ``weights_only=False`` would give), every other object is left a stand-in,
  and :func:`resolve_stand_ins` turns those into plain data (a whole pickled
  ``nn.Module`` becomes its state dict; numpy scalars become numbers).

Work is bounded by the file's size: every object the unpickler builds costs at least
one opcode of the file, each is visited once, and a size a file declares is checked
against the bytes that back it before anything of that size is allocated.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import math
import pickle
import struct
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import torch

from resnetzoo.errors import CheckpointError

__all__ = [
    "LEGACY_MAGIC",
    "NUMPY_ARRAY_GLOBALS",
    "PickledObject",
    "StorageRef",
    "TensorRef",
    "TorchFileLayout",
    "describe_refusal",
    "is_legacy_torch_file",
    "numpy_arrays_as_tensors",
    "plain_view",
    "recover",
    "resolve_stand_ins",
    "scan_pickle",
    "scan_torch_file",
]

#: The first pickle of a legacy (pre-1.6, ``_use_new_zipfile_serialization=False``) torch.save file.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_LEGACY_PREFIX = pickle.dumps(LEGACY_MAGIC, protocol=2)

# torch.save's storage classes (the pickle names them "torch.FloatStorage" …) -> dtype name.
_STORAGE_DTYPES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "ComplexDoubleStorage": "complex128", "ComplexFloatStorage": "complex64", "QInt8Storage": "qint8",
    "QUInt8Storage": "quint8", "QInt32Storage": "qint32", "QUInt4x2Storage": "quint4x2",
    "QUInt2x4Storage": "quint2x4", "UntypedStorage": "uint8",
}  # fmt: skip
# The rebuild functions whose arguments are (storage, storage_offset, size, stride, ...).
_STORAGE_REBUILDERS = frozenset(
    f"torch._utils.{name}"
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_qtensor")
)
# Globals that weights_only=True allows by default and that hold no code of the file's
# choosing: not worth naming in a refusal.
_TORCH_DATA_PREFIXES = ("torch._utils._rebuild_", "torch._tensor._rebuild_from_type_v2")
_TORCH_DATA_GLOBALS = frozenset(
    {"collections.OrderedDict", "torch.Size", "torch.device", "torch.nn.parameter.Parameter", "_codecs.encode"}
)
_MODULE_STATE_KEYS = ("_parameters", "_buffers", "_modules")
_NUMPY_SCALARS = frozenset({"numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"})
# numpy arrays as pickle writes them: _reconstruct(ndarray, (0,), b"b") then BUILD with
# (version, shape, dtype, is_fortran, raw bytes) (protocols 2-4), or, with protocol 5,
# _frombuffer(raw bytes, dtype, shape, order). Read as data, never called: see numpy_arrays_as_tensors.
_NUMPY_RECONSTRUCT = frozenset({"numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct"})
_NUMPY_FROMBUFFER = frozenset({"numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer"})
# (Protocol 2 spells an empty array's b"" as builtins.bytes().)
NUMPY_ARRAY_GLOBALS = _NUMPY_RECONSTRUCT | _NUMPY_FROMBUFFER | {"numpy.ndarray", "numpy.dtype", "builtins.bytes"}
# The numeric dtypes an array may have, by numpy's code; anything else stays a stand-in.
_NUMPY_TENSOR_DTYPES = {
    "f2": torch.float16, "f4": torch.float32, "f8": torch.float64, "i1": torch.int8, "i2": torch.int16,
    "i4": torch.int32, "i8": torch.int64, "u1": torch.uint8, "b1": torch.bool,
}  # fmt: skip
_NUMPY_FORMATS = {"f2": "e", "f4": "f", "f8": "d", "i1": "b", "i2": "h", "i4": "i", "i8": "q",
                  "u1": "B", "u2": "H", "u4": "I", "u8": "Q", "b1": "?"}  # fmt: skip
_MAX_DEPTH = 64  # nesting of the containers in a checkpoint; deeper is not a checkpoint
_MAX_PATH = 160  # characters of a path like checkpoint['model']['fc.weight'] shown in messages
_MAX_STAND_INS = 50  # stand-ins listed in a report (the rest are counted)


# ----------------------------------------------------------------- stand-ins
class PickledObject:
    """An inert stand-in for an object a pickle asked to build.

    The pickle's global (a class or function) becomes a subclass of this type, named by
    :attr:`global_name`; calling it, ``__new__``, ``__setstate__``, ``append``,
    ``extend``, ``add`` and item assignment only record what the pickle passed.

    Attributes:
        args: positional arguments of the call that made it (``REDUCE``/``NEWOBJ``).
        kwargs: keyword arguments (``NEWOBJ_EX``).
        state: what ``BUILD`` passed (usually the object's ``__dict__``), or ``None``.
        listitems: values appended.
        dictitems: ``(key, value)`` pairs assigned.
    """

    global_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledObject:
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs, None
        obj.listitems, obj.dictitems = [], []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # __new__ recorded the arguments; a REDUCE calls both

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.dictitems.append((key, value))

    def append(self, value: Any) -> None:
        self.listitems.append(value)

    def extend(self, values: Any) -> None:
        self.listitems.extend(values) if isinstance(values, list) else self.listitems.append(values)

    def add(self, value: Any) -> None:
        self.listitems.append(value)

    def __call__(self, *args: Any, **kwargs: Any) -> PickledObject:
        # A pickle may call what an earlier call returned (getattr(os, "system")("…")).
        return _stand_in_type(f"{self.global_name}(…)")(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<stand-in for {self.global_name}>"


def _stand_in_type(global_name: str) -> type[PickledObject]:
    # A fresh type per global: pickle's NEWOBJ needs a type, and the name stays with it.
    # __module__ names no importable module, so nothing (inspect included) finds source for it.
    return type("PickledGlobal", (PickledObject,), {"global_name": global_name, "__module__": "<pickle>"})


def _global_name(value: Any) -> str | None:
    """The global a stand-in (type or instance) stands for, else None."""
    is_stand_in = isinstance(value, PickledObject) or (isinstance(value, type) and issubclass(value, PickledObject))
    return value.global_name if is_stand_in else None


@dataclass(frozen=True)
class StorageRef:
    """A storage a torch.save pickle declares: ``numel`` elements of ``dtype`` under ``key``."""

    key: str
    dtype: str
    numel: int
    itemsize: int

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize


@dataclass(frozen=True)
class TensorRef:
    """A tensor a pickle builds from a storage: where it is in the checkpoint and its geometry."""

    path: str
    storage: StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


class _InertUnpickler(pickle.Unpickler):
    """An unpickler that resolves every global to a stand-in, except the ``real`` ones given."""

    def __init__(self, file: IO[bytes], *, real: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        # latin1 maps every byte: a Python 2 pickle's byte strings (detectron's .pkl files)
        # scan as text instead of failing, as detectron2 reads them. Python 3 pickles are
        # unaffected: their strings are UTF-8 by opcode, their bytes are bytes.
        kwargs.setdefault("encoding", "latin1")
        super().__init__(file, **kwargs)
        self.real = dict(real or {})
        self.globals_named: list[str] = []
        self._types: dict[str, type[PickledObject]] = {}
        # An attribute, not a method: pickle reads it from the instance, where torch's
        # loader installs its own (a method here would shadow that).
        self.persistent_load = _no_persistent_ids

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (protocol 2 pickles say "__builtin__"), mapped as pickle itself
        # would, without importing anything.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        full = f"{module}.{name}"
        if full not in self._types:
            self.globals_named.append(full)
        if full in self.real:
            return self.real[full]
        return self._types.setdefault(full, _stand_in_type(full))


def _no_persistent_ids(pid: Any) -> Any:
    raise pickle.UnpicklingError("this pickle refers to data outside itself (a persistent id)")


class _Bounded(io.RawIOBase):
    """A read-only view of ``file`` that never hands out more than ``limit`` bytes.

    pickle allocates the length a string opcode declares before reading it; with this
    wrapper a declared length is never more than the bytes left in the file.
    """

    def __init__(self, file: IO[bytes], limit: int) -> None:
        self.file, self.left = file, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)[: self.left]
        n = self.file.readinto(view) or 0
        self.left -= n
        return n

    def read(self, size: int = -1) -> bytes:
        size = self.left if size is None or size < 0 else min(size, self.left)
        data = self.file.read(size)
        self.left -= len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        size = self.left if size is None or size < 0 else min(size, self.left)
        line = self.file.readline(size)
        self.left -= len(line)
        return line


def _unpickle(
    file: IO[bytes], limit: int, *, real: Mapping[str, Any] | None = None,
    persistent_load: Callable[[Any], Any] | None = None,
) -> tuple[Any, _InertUnpickler]:
    """Unpickle one pickle from ``file`` (reading at most ``limit`` bytes) with stand-ins."""
    unpickler = _InertUnpickler(_Bounded(file, limit), real=real)
    if persistent_load is not None:
        unpickler.persistent_load = persistent_load  # as torch installs its own
    try:
        return unpickler.load(), unpickler
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, OverflowError, MemoryError, RecursionError, struct.error) as exc:  # fmt: skip
        raise CheckpointError(f"its pickle is corrupt or truncated ({type(exc).__name__}: {exc})") from exc


# -------------------------------------------------------- walking the objects
def _key(key: Any) -> str:
    text = repr(key)
    return text if len(text) <= 60 else text[:57] + "…'"


def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    """``(path suffix, child)`` for what a container or stand-in holds."""
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            yield f"[{_key(key)}]", value
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for i, value in enumerate(obj):
            yield f"[{i}]", value
    elif isinstance(obj, PickledObject):
        for i, value in enumerate(obj.args):
            yield f".args[{i}]", value
        for key, value in obj.kwargs.items():
            yield f".kwargs[{_key(key)}]", value
        if obj.state is not None:
            yield ".state", obj.state
        for i, value in enumerate(obj.listitems):
            yield f"[{i}]", value
        for key, value in obj.dictitems:
            yield f"[{_key(key)}]", value


def _join(path: str, suffix: str) -> str:
    # Paths stop growing past a screen's width, so deep nesting cannot make them quadratic.
    return path + suffix if len(path) < _MAX_PATH else path


def _walk(root: Any) -> Iterator[tuple[str, Any]]:
    """Every object reachable from ``root`` once, with a path to it; iterative, so depth costs no stack."""
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [("checkpoint", root)]
    while stack:
        path, obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        yield path, obj
        children = list(_children(obj))
        stack.extend((_join(path, suffix), child) for suffix, child in reversed(children))


def _ints(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, PickledObject) and value.global_name == "torch.Size" and value.args:
        value = value.args[0]
    if isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    return None


def _module_like(obj: Any) -> bool:
    """A stand-in for a pickled ``nn.Module``: its state holds ``_parameters``, ``_buffers``, ``_modules``."""
    return (
        isinstance(obj, PickledObject)
        and isinstance(obj.state, Mapping)
        and all(isinstance(obj.state.get(k), Mapping) for k in _MODULE_STATE_KEYS)
    )


# ------------------------------------------------------------ the file layout
@dataclass
class TorchFileLayout:
    """What a torch.save file declares, read without building anything.

    Attributes:
        root: the unpickled object, with stand-ins for every global.
        globals_named: every global the pickle names, in order of first use.
        storages: storage key -> :class:`StorageRef`.
        backing: storage key -> bytes the file holds for it.
        tensors: every tensor built from a storage.
        problems: sentences saying what is not backed by the file (empty when all is).
    """

    root: Any
    globals_named: list[str]
    storages: dict[str, StorageRef] = field(default_factory=dict)
    backing: dict[str, int] = field(default_factory=dict)
    tensors: list[TensorRef] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def unsafe_globals(self) -> list[str]:
        """Globals other than torch's tensor rebuilders, storages and plain containers."""
        return [
            g for g in self.globals_named
            if g not in _TORCH_DATA_GLOBALS
            and not g.startswith(_TORCH_DATA_PREFIXES)
            and not (g.startswith("torch.") and (g.endswith("Storage") or g.rsplit(".", 1)[1] in _DTYPES))
        ]  # fmt: skip

    def check_backed(self, path: object) -> None:
        """Raise :class:`CheckpointError` naming the first problems, if any."""
        if self.problems:
            shown = "; ".join(self.problems[:3]) + (f"; and {len(self.problems) - 3} more" if len(self.problems) > 3 else "")
            raise CheckpointError(
                f"{path} declares more tensor data than it holds, so it was not read: {shown}. A checkpoint "
                f"from torch.save or safetensors never does this; if you made it, save contiguous copies "
                f"of the tensors (t.contiguous().clone()) and save again."
            )


_DTYPES = frozenset(name for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype))


def _storage_ref(storage_type: Any, key: Any, numel: Any) -> StorageRef:
    name = _global_name(storage_type) or ""
    dtype = _STORAGE_DTYPES.get(name.rsplit(".", 1)[-1])
    if dtype is None or not name.startswith("torch."):
        raise CheckpointError(f"it declares a storage of unknown type {name or type(storage_type).__name__!r}")
    if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
        raise CheckpointError(f"it declares a storage of {numel!r} elements")
    return StorageRef(str(key), dtype, numel, getattr(torch, dtype).itemsize)


def _find_tensors(layout: TorchFileLayout) -> None:
    """Record every storage-backed tensor and each one that declares more than its storage holds."""
    for path, obj in _walk(layout.root):
        if not isinstance(obj, PickledObject) or obj.global_name not in _STORAGE_REBUILDERS or len(obj.args) < 4:
            continue
        storage, offset, size, stride = obj.args[0], obj.args[1], _ints(obj.args[2]), _ints(obj.args[3])
        if not isinstance(storage, StorageRef) or not isinstance(offset, int) or size is None or stride is None:
            layout.problems.append(f"{path} is a tensor with malformed geometry")
            continue
        tensor = TensorRef(path, storage, offset, size, stride)
        layout.tensors.append(tensor)
        problem = _geometry_problem(tensor)
        if problem:
            layout.problems.append(problem)


def _geometry_problem(t: TensorRef) -> str | None:
    if len(t.size) != len(t.stride) or any(n < 0 for n in t.size) or any(s < 0 for s in t.stride) or t.offset < 0:
        return f"{t.path} has an invalid shape {t.size} / stride {t.stride}"
    numel = math.prod(t.size)
    if numel == 0:
        return None
    span = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride, strict=True)) + 1
    if span > t.storage.numel:
        return f"{t.path} reaches element {span:,} of a storage of {t.storage.numel:,}"
    if numel > t.storage.numel:
        return (
            f"{t.path} declares shape {t.size} ({numel:,} values) over a storage of {t.storage.numel:,} "
            f"(a stride-0 or overlapping view, as expand() makes)"
        )
    return None


def _scan_zip(file: IO[bytes], size: int) -> TorchFileLayout:
    try:
        archive = zipfile.ZipFile(file)
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise CheckpointError(f"it is a truncated or corrupt zip archive ({exc})") from exc
    pickles = [i for i in infos if i.filename.endswith("/data.pkl") and i.filename.count("/") == 1]
    if len(pickles) != 1:
        raise CheckpointError("it is a zip archive but not a torch.save file (no single <name>/data.pkl)")
    prefix = pickles[0].filename[: -len("data.pkl")]
    compressed = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED]
    if compressed:
        raise CheckpointError(
            f"its records are compressed ({compressed[0]}), which torch.save never does: the archive was "
            f"re-packed by another tool, and compressed data could expand far beyond the file's size. "
            f"Load it where it was made and save it again with torch.save"
        )
    # A stored record's declared size must be the bytes it takes in the file: torch's
    # reader allocates what the directory declares.
    lying = [i.filename for i in infos if i.file_size != i.compress_size or i.header_offset + i.compress_size > size]
    if lying or sum(i.compress_size for i in infos) > size:
        raise CheckpointError(
            f"its zip directory declares more data than the file holds ({lying[0] if lying else 'in all'})"
        )
    try:
        data = archive.read(pickles[0])
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise CheckpointError(f"its pickle cannot be read from the archive ({exc})") from exc
    records = {i.filename[len(prefix) + len("data/") :]: i.file_size for i in infos if i.filename.startswith(prefix + "data/")}
    storages: dict[str, StorageRef] = {}

    def persistent_load(pid: Any) -> StorageRef:
        if not isinstance(pid, tuple) or len(pid) != 5 or pid[0] not in ("storage", b"storage"):
            raise CheckpointError(f"it holds an unknown persistent id {str(pid)[:80]!r}")
        ref = _storage_ref(pid[1], pid[2], pid[4])
        return storages.setdefault(ref.key, ref)

    unpickler_file = io.BytesIO(data)
    root, unpickler = _unpickle(unpickler_file, len(data), persistent_load=persistent_load)
    layout = TorchFileLayout(root, unpickler.globals_named, storages, backing=records)
    for key, ref in storages.items():
        held = records.get(key)
        if held is None:
            layout.problems.append(f"storage {key} has no data record")
        elif held != ref.nbytes:
            layout.problems.append(f"storage {key} declares {ref.nbytes:,} bytes, its record holds {held:,}")
    _find_tensors(layout)
    return layout


def is_legacy_torch_file(head: bytes) -> bool:
    """Whether the first bytes are those of a legacy (non-zip) torch.save file."""
    return head.startswith(_LEGACY_PREFIX)


def _scan_legacy(file: IO[bytes], size: int) -> TorchFileLayout:
    magic, _ = _unpickle(file, size - file.tell())
    protocol, _ = _unpickle(file, size - file.tell())
    sys_info, _ = _unpickle(file, size - file.tell())
    if magic != LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL or not isinstance(sys_info, dict):
        raise CheckpointError("it starts like a legacy torch.save file but its header is not one")
    if sys_info.get("little_endian") is False:
        raise CheckpointError("it is a big-endian legacy torch.save file, which resnetzoo does not read")
    storages: dict[str, StorageRef] = {}

    def persistent_load(pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) == 4 and pid[0] in ("module", b"module"):
            return pid[1]  # a whole pickled module's class, as torch returns it
        if not isinstance(pid, tuple) or len(pid) != 6 or pid[0] not in ("storage", b"storage"):
            raise CheckpointError(f"it holds an unknown persistent id {str(pid)[:80]!r}")
        ref = _storage_ref(pid[1], pid[2], pid[4])
        ref = storages.setdefault(ref.key, ref)
        view = pid[5]
        if view is None:
            return ref
        if not (isinstance(view, tuple) and len(view) == 3 and all(isinstance(v, int) for v in view[1:])):
            raise CheckpointError("it declares a malformed storage view")
        view_key, offset, numel = view
        if offset < 0 or numel < 0 or offset + numel > ref.numel:
            raise CheckpointError(f"a storage view reaches past the end of storage {ref.key}")
        return StorageRef(str(view_key), ref.dtype, numel, ref.itemsize)

    root, unpickler = _unpickle(file, size - file.tell(), persistent_load=persistent_load)
    keys, _ = _unpickle(file, size - file.tell())
    layout = TorchFileLayout(root, unpickler.globals_named, storages)
    if not isinstance(keys, list) or {str(k) for k in keys} != set(storages):
        raise CheckpointError("its list of storages does not match the storages its pickle declares")
    # The data: for each storage, its element count (8 bytes, little-endian), then its bytes.
    offset = file.tell()
    for key in map(str, keys):
        ref = storages[key]
        file.seek(offset)
        header = file.read(8)
        count = int.from_bytes(header, "little") if len(header) == 8 else -1
        end = offset + 8 + ref.nbytes
        if count != ref.numel or end > size:
            layout.problems.append(
                f"storage {key} declares {ref.nbytes:,} bytes, the file holds {max(size - offset - 8, 0):,} after its header"
            )
            break
        layout.backing[key] = ref.nbytes
        offset = end
    _find_tensors(layout)
    return layout


def scan_pickle(file: IO[bytes], size: int) -> TorchFileLayout:
    """Read a plain pickle (``pickle.dump``) with stand-ins, to say what it holds; it declares no storages."""
    file.seek(0)
    root, unpickler = _unpickle(file, size)
    return TorchFileLayout(root, unpickler.globals_named)


def scan_torch_file(file: IO[bytes], size: int) -> TorchFileLayout:
    """Read what a torch.save file declares, calling nothing and allocating no tensor.

    Args:
        file: the open file, at any position (it is read from the start).
        size: the file's size in bytes.

    Returns:
        the :class:`TorchFileLayout`; :meth:`~TorchFileLayout.check_backed` says whether
        every declared byte is in the file.

    Raises:
        CheckpointError: the file is not a torch.save file or its pickle is corrupt.
    """
    file.seek(0)
    head = file.read(len(_LEGACY_PREFIX))
    file.seek(0)
    if head.startswith(b"PK"):
        return _scan_zip(file, size)
    if is_legacy_torch_file(head):
        return _scan_legacy(file, size)
    raise CheckpointError("it is neither a torch.save zip archive nor a legacy torch.save file")


# --------------------------------------------------------------- refusals
def _module_path(layout_root: Any) -> tuple[str, str] | None:
    for path, obj in _walk(layout_root):
        if _module_like(obj):
            return path, obj.global_name
    return None


def describe_refusal(root: Any, unsafe_globals: list[str]) -> str:
    """Say what a refused pickle holds besides tensors, and what to do about it, in a sentence or two."""
    module = _module_path(root)
    if module is not None:
        path, name = module
        where = "the file holds" if path == "checkpoint" else f"{path} is"
        return (
            f"{where} a whole pickled model ({name}), not a state dict: loading it would import and run "
            f"that class's code. Where the model was made, save its weights instead: "
            f"torch.save(model.state_dict(), 'weights.pth') (or resnetzoo.save_weights(model, "
            f"'weights.safetensors'))"
        )
    shown = ", ".join(unsafe_globals[:5]) + (f" and {len(unsafe_globals) - 5} more" if len(unsafe_globals) > 5 else "")
    return f"it holds Python objects other than tensors and plain containers ({shown or 'unknown'})"


# ---------------------------------------------------------------- recovery
def _plain_ints(value: Any, what: str) -> tuple[int, ...]:
    ints = _ints(value)
    if ints is None:
        raise CheckpointError(f"a tensor's {what} is not a tuple of integers")
    return ints


def _checked_storage(storage: Any, offset: Any, size: Any, stride: Any) -> tuple[Any, int, tuple[int, ...], tuple[int, ...]]:
    if not isinstance(storage, torch.storage.TypedStorage):
        raise CheckpointError(f"a tensor is built from {type(storage).__name__}, not from a storage of the file")
    if not isinstance(offset, int) or isinstance(offset, bool):
        raise CheckpointError("a tensor's storage offset is not an integer")
    size, stride = _plain_ints(size, "shape"), _plain_ints(stride, "stride")
    ref = StorageRef("?", str(storage.dtype), storage.size(), storage.element_size())
    problem = _geometry_problem(TensorRef("a tensor", ref, offset, size, stride))
    if problem:
        raise CheckpointError(problem)
    return storage, offset, size, stride


def _plain_metadata(metadata: Any) -> dict[str, bool] | None:
    # The conj/neg bits torch records; anything else is not applied.
    if isinstance(metadata, dict) and all(isinstance(k, str) and isinstance(v, bool) for k, v in metadata.items()):
        return metadata
    return None


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> torch.Tensor:
    return torch._utils._rebuild_tensor(*_checked_storage(storage, offset, size, stride))


def _rebuild_tensor_v2(
    storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False, hooks: Any = None, metadata: Any = None
) -> torch.Tensor:
    checked = _checked_storage(storage, offset, size, stride)
    # Hooks are never restored (torch itself only keeps them for compatibility).
    return torch._utils._rebuild_tensor_v2(
        *checked, requires_grad is True, collections.OrderedDict(), _plain_metadata(metadata)
    )


def _rebuild_tensor_v3(
    storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any, hooks: Any, dtype: Any, metadata: Any = None
) -> torch.Tensor:
    if not isinstance(dtype, torch.dtype):
        raise CheckpointError("a tensor's dtype is not a torch dtype")
    checked = _checked_storage(storage, offset, size, stride)
    return torch._utils._rebuild_tensor_v3(
        *checked, requires_grad is True, collections.OrderedDict(), dtype, _plain_metadata(metadata)
    )


def _rebuild_parameter(data: Any, requires_grad: Any, hooks: Any, state: Any = None) -> torch.Tensor:
    # Also stands for _rebuild_parameter_with_state: the state (Python attributes set on
    # the parameter) is not applied.
    if not isinstance(data, torch.Tensor):
        raise CheckpointError("a parameter holds no tensor")
    return torch._utils._rebuild_parameter(data, requires_grad is True, collections.OrderedDict())


def _ordered_dict(items: Any = ()) -> collections.OrderedDict[Any, Any]:
    if not isinstance(items, (list, tuple)):
        raise CheckpointError("an OrderedDict is built from something other than a list of pairs")
    return collections.OrderedDict(items)


def _size(dims: Any = ()) -> torch.Size:
    return torch.Size(_plain_ints(dims, "shape"))


def _latin1(text: Any, encoding: Any = "latin1") -> bytes:
    # How protocol-2 pickles (all torch.save files) spell a bytes object.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointError("a bytes object is encoded in an unexpected way")
    return text.encode("latin1")


def _sequence(kind: type) -> Callable[..., Any]:
    def build(items: Any = ()) -> Any:
        if not isinstance(items, (list, tuple)):
            raise CheckpointError(f"a {kind.__name__} is built from something other than a list")
        return kind(items)

    return build


def _complex(real: Any = 0.0, imag: Any = 0.0) -> complex:
    if not all(isinstance(v, (int, float)) for v in (real, imag)):
        raise CheckpointError("a complex number is built from something other than numbers")
    return complex(real, imag)


def _real_globals(storage_from_bytes: Callable[[Any], Any]) -> dict[str, Any]:
    """The few globals recovery calls for real: torch's tensor rebuilders and plain data types.

    Each is wrapped so that it checks its arguments are plain data first; everything
    else in the file stays a stand-in. ``storage_from_bytes`` reads the ``torch.save``
    bytes a plain pickle holds for each storage (``torch.storage._load_from_bytes``).
    """
    return {
        "torch._utils._rebuild_tensor": _rebuild_tensor,
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
        "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
        "torch.storage._load_from_bytes": storage_from_bytes,
        "collections.OrderedDict": _ordered_dict,
        "torch.Size": _size,
        "_codecs.encode": _latin1,
        "builtins.set": _sequence(set),
        "builtins.frozenset": _sequence(frozenset),
        "builtins.complex": _complex,
        **{f"torch.{name}": getattr(torch, name) for name in _DTYPES},
    }


class _RecoveryPickleModule:
    """What ``torch.load(pickle_module=...)`` needs: an ``Unpickler`` class and ``load``.

    torch's loader subclasses ``Unpickler`` and installs its own ``persistent_load``,
    which reads each storage from the file (checked beforehand by
    :func:`scan_torch_file`); ``find_class`` is ours, so no global of the file's choosing
    is ever imported or called.
    """

    __name__ = "resnetzoo.weights._unpickle"

    def __init__(self, real: Mapping[str, Any], limit: int) -> None:
        class Unpickler(_InertUnpickler):
            def __init__(self, file: IO[bytes], **kwargs: Any) -> None:
                super().__init__(_Bounded(file, limit) if hasattr(file, "readinto") else file, real=real, **kwargs)

        self.Unpickler = Unpickler

    def load(self, file: IO[bytes], **kwargs: Any) -> Any:
        return self.Unpickler(file, **kwargs).load()


class _Recovery:
    """One recovery: the globals called for real, and reading any container format with them.

    A plain pickle holds each storage as the bytes of a nested ``torch.save`` file; those
    are read by the same rules, so nesting changes nothing.
    """

    def __init__(self) -> None:
        self.real = _real_globals(self._storage_from_bytes)

    def _storage_from_bytes(self, data: Any) -> Any:
        if not isinstance(data, bytes):
            raise CheckpointError("a storage is built from something other than bytes")
        return self.read(io.BytesIO(data), len(data))

    def _read_torch_file(self, file: IO[bytes], size: int) -> Any:
        scan_torch_file(file, size).check_backed("the file")
        file.seek(0)
        module = _RecoveryPickleModule(self.real, size)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch warns about sources of pickled classes it cannot find
                return torch.load(file, map_location="cpu", weights_only=False, pickle_module=module)
        except CheckpointError:
            raise
        except Exception as exc:  # torch raises many types for a bad file; all mean the same here
            raise CheckpointError(f"it cannot be read even with stand-ins ({type(exc).__name__}: {exc})") from exc

    def read(self, file: IO[bytes], size: int) -> Any:
        file.seek(0)
        head = file.read(len(_LEGACY_PREFIX))
        file.seek(0)
        if head.startswith(b"PK") or is_legacy_torch_file(head):
            return self._read_torch_file(file, size)
        obj, _ = _unpickle(file, size, real=self.real)
        return obj


def recover(file: IO[bytes], size: int) -> Any:
    """Unpickle a torch.save file or a plain pickle, with stand-ins for every global but tensors.

    Tensors are rebuilt by torch's own loader (storages) and rebuild functions, so they
    are bit-identical to what ``torch.load(weights_only=False)`` gives; every other
    global the file names (a class, a function, a payload's ``os.system``) becomes a
    :class:`PickledObject` that records how it was called, and nothing runs.

    Args:
        file: the open file.
        size: its size in bytes.

    Returns:
        what the file holds, with stand-ins; see :func:`resolve_stand_ins`.

    Raises:
        CheckpointError: the file is corrupt, or declares data it does not hold.
    """
    return _Recovery().read(file, size)
# ------------------------------------------------------------ plain data
_NOT_DECODED = object()


def _numpy_scalar(obj: PickledObject) -> Any:
    if len(obj.args) != 2 or not isinstance(obj.args[1], bytes):
        return _NOT_DECODED
    dtype = obj.args[0]
    if not isinstance(dtype, PickledObject) or dtype.global_name != "numpy.dtype" or not dtype.args:
        return _NOT_DECODED
    code = _NUMPY_FORMATS.get(str(dtype.args[0]))
    order = dtype.state[1] if isinstance(dtype.state, tuple) and len(dtype.state) > 1 else "<"
    if code is None or order not in ("<", ">", "|", "="):
        return _NOT_DECODED
    try:
        (value,) = struct.unpack(("<" if order in "|=" else order) + code, obj.args[1])
    except struct.error:
        return _NOT_DECODED
    return value


def _numpy_dtype(dtype: Any) -> torch.dtype | None:
    """The torch dtype of a pickled ``numpy.dtype`` stand-in: little-endian numeric ones only."""
    if not isinstance(dtype, PickledObject) or dtype.global_name != "numpy.dtype" or not dtype.args:
        return None
    order = dtype.state[1] if isinstance(dtype.state, tuple) and len(dtype.state) > 1 else "<"
    code = dtype.args[0]
    if isinstance(code, str) and code[:1] in "<|=":  # numpy may spell the order in the code ("<f4")
        code = code[1:]
    return _NUMPY_TENSOR_DTYPES.get(code) if order in ("<", "|", "=") and isinstance(code, str) else None


def _raw_bytes(data: Any) -> bytes | None:
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, str):  # a Python 2 pickle's byte string, read as latin1 (see _InertUnpickler)
        return data.encode("latin1")
    if isinstance(data, PickledObject) and data.global_name == "builtins.bytes" and not data.args:
        return b""
    # Protocol 2 spells bytes as _codecs.encode(text, "latin1"); a stand-in when scanned.
    if isinstance(data, PickledObject) and data.global_name == "_codecs.encode" and len(data.args) == 2:
        text, encoding = data.args
        if isinstance(text, str) and encoding in ("latin1", "latin-1"):
            return text.encode("latin1")
    return None


_NUMPY_MAX_DIMS = 64  # numpy's own limit (NPY_MAXDIMS)


def _tensor_from_raw(raw: bytes, dtype: torch.dtype, shape: Any, fortran: bool) -> Any:
    dims = _ints(shape)
    if dims is None or len(dims) > _NUMPY_MAX_DIMS or any(n < 0 for n in dims):
        return _NOT_DECODED
    # The bytes come from the file, so checking the shape against them bounds the work; an
    # empty array holds no bytes, so its other dimensions are bounded on their own (a
    # crafted (0, 2**70) would overflow torch's size arithmetic).
    if math.prod(dims) * dtype.itemsize != len(raw) or math.prod(n for n in dims if n) >= 2**62:
        return _NOT_DECODED
    fortran = fortran and len(dims) > 1  # 0-d and 1-d arrays are the same in either order
    if not raw:
        return torch.empty(dims, dtype=dtype)
    flat = torch.frombuffer(bytearray(raw), dtype=dtype)
    if fortran:  # column-major: the reversed shape, transposed back
        return flat.reshape(dims[::-1]).permute(*reversed(range(len(dims)))).contiguous()
    return flat.reshape(dims)


def _numpy_array(obj: PickledObject) -> Any:
    """A pickled numpy array as a tensor, from its dtype, shape and raw bytes; else ``_NOT_DECODED``.

    Nothing of numpy is imported or called: the pickle's ``_reconstruct``/``ndarray``/
    ``dtype`` calls were recorded by stand-ins, and what they recorded is read here as
    data (the same fields numpy's ``ndarray.__setstate__`` reads), for the numeric dtypes
    of :data:`_NUMPY_TENSOR_DTYPES` only, little-endian, with a shape that matches the bytes.
    """
    if obj.global_name in _NUMPY_RECONSTRUCT:
        state = obj.state
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1 and isinstance(state[3], bool)):
            return _NOT_DECODED
        _, shape, dtype, fortran, data = state
    elif obj.global_name in _NUMPY_FROMBUFFER and len(obj.args) == 4:
        data, dtype, shape, order = obj.args
        if order not in ("C", "F"):
            return _NOT_DECODED
        fortran = order == "F"
    else:
        return _NOT_DECODED
    torch_dtype, raw = _numpy_dtype(dtype), _raw_bytes(data)
    if torch_dtype is None or raw is None:
        return _NOT_DECODED
    return _tensor_from_raw(raw, torch_dtype, shape, fortran)


def numpy_arrays_as_tensors(obj: Any) -> Any:
    """Replace every pickled numpy array in ``obj`` (from :func:`recover`) by a tensor of its data.

    For a file whose only globals besides torch's are numpy's array builders (detectron2's
    ``.pkl`` files: ``pickle.dump({"model": {name: ndarray}})``). That is pure data, as a
    tensor's storage is: a dtype from a fixed numeric list, a shape, and bytes of the file,
    read without importing or calling numpy, so it is read by default, like the tensors
    ``torch.load(weights_only=True)`` reads. (torch itself leaves numpy off its default
    allow-list because it would *call* numpy's functions; nothing is called here.)

    Raises:
        CheckpointError: an array that is not plain numeric data (an object or string
            dtype, big-endian, a shape that does not match its bytes), or any other object.
    """
    memo: dict[int, Any] = {}

    def convert(value: Any, path: str, depth: int) -> Any:
        if value is None or isinstance(value, (bool, int, float, complex, str, bytes, torch.Tensor)):
            return value
        if id(value) in memo:
            return memo[id(value)]
        if depth > _MAX_DEPTH:
            raise CheckpointError(f"{path} is nested deeper than {_MAX_DEPTH} containers")
        if isinstance(value, PickledObject):
            tensor = _numpy_array(value)
            if tensor is _NOT_DECODED:
                raise CheckpointError(
                    f"{path} is a numpy array that is not a plain numeric array (dtypes "
                    f"{', '.join(_NUMPY_TENSOR_DTYPES)}, little-endian, shape matching its bytes), so it was not read"
                )
            memo[id(value)] = tensor
            return tensor
        if isinstance(value, Mapping):
            out: dict[Any, Any] = collections.OrderedDict() if isinstance(value, collections.OrderedDict) else {}
            memo[id(value)] = out
            for key, item in value.items():
                out[key] = convert(item, _join(path, f"[{_key(key)}]"), depth + 1)
            return out
        if isinstance(value, (list, tuple, set, frozenset)):
            items = [convert(item, _join(path, f"[{i}]"), depth + 1) for i, item in enumerate(value)]
            memo[id(value)] = result = items if isinstance(value, list) else type(value)(items)
            return result
        raise CheckpointError(f"{path} is a {type(value).__name__}, not data")

    return convert(obj, "checkpoint", 0)


def _decode(obj: PickledObject) -> Any:
    """What a well-known stand-in means as plain data, or ``_NOT_DECODED``.

    numpy scalars (``epoch = np.int64(3)``) become numbers, numpy arrays tensors; omegaconf
    configs their content (a ``DictConfig`` keeps it under ``_content``, each value node
    under ``_val``).
    """
    if obj.global_name in _NUMPY_SCALARS:
        return _numpy_scalar(obj)
    if obj.global_name in _NUMPY_RECONSTRUCT | _NUMPY_FROMBUFFER:
        return _numpy_array(obj)
    if obj.global_name.startswith("omegaconf.") and isinstance(obj.state, Mapping):
        for key in ("_content", "_val"):
            if key in obj.state:
                return obj.state[key]
    return _NOT_DECODED


def _state_dict_of(module: PickledObject) -> collections.OrderedDict[str, Any]:
    """``module.state_dict()`` of a pickled ``nn.Module``, from its recorded state, without its code.

    Parameters and persistent buffers of the module and its submodules, in registration
    order, named as ``state_dict()`` names them.
    """
    out: collections.OrderedDict[str, Any] = collections.OrderedDict()
    seen: set[int] = set()
    stack: list[tuple[str, PickledObject, int]] = [("", module, 0)]
    while stack:
        prefix, mod, depth = stack.pop()
        if id(mod) in seen or depth > _MAX_DEPTH:
            continue
        seen.add(id(mod))
        state = mod.state
        skip = state.get("_non_persistent_buffers_set")
        skip = set(skip) if isinstance(skip, (set, frozenset, list, tuple)) else set()
        for kind in ("_parameters", "_buffers"):
            for name, value in state[kind].items():
                if isinstance(value, torch.Tensor) and not (kind == "_buffers" and name in skip):
                    out[f"{prefix}{name}"] = value
        children = [(f"{prefix}{name}.", child, depth + 1) for name, child in state["_modules"].items()]
        stack.extend(child for child in reversed(children) if _module_like(child[1]))
    return out


def resolve_stand_ins(obj: Any) -> tuple[Any, dict[str, Any]]:
    """Turn stand-ins into plain data, keeping every tensor.

    A pickled ``nn.Module`` becomes its state dict; a numpy scalar its value; an
    omegaconf config its content; any other stand-in a dict ``{"__class__": name, ...}``
    of what the pickle recorded (an ``argparse.Namespace``: its fields). Shared objects
    stay shared; cycles and nesting deeper than 64 are cut.

    Returns:
        ``(resolved, stand_ins)``: the object, and for the outermost stand-ins (up to
        50), their path in the checkpoint -> :func:`plain_view`.
    """
    stand_ins: dict[str, Any] = {}
    memo: dict[int, Any] = {}
    hidden = 0

    def resolve(value: Any, path: str, depth: int, inside: bool) -> Any:
        nonlocal hidden
        if value is None or isinstance(value, (bool, int, float, complex, str, bytes, torch.Tensor)):
            return value
        if id(value) in memo:
            return memo[id(value)]
        if depth > _MAX_DEPTH:
            return "…"
        if isinstance(value, type) and issubclass(value, PickledObject):
            return f"<global {value.global_name}>"
        if isinstance(value, PickledObject):
            array = _numpy_array(value)
            if array is not _NOT_DECODED:  # data, as a tensor is: not an object to report
                memo[id(value)] = array
                return array
            if not inside:
                if len(stand_ins) < _MAX_STAND_INS:
                    stand_ins[path] = plain_view(value)
                else:
                    hidden += 1
            if _module_like(value):
                memo[id(value)] = result = _state_dict_of(value)
                return result
            decoded = _decode(value)
            if decoded is not _NOT_DECODED:
                memo[id(value)] = result = resolve(decoded, path, depth + 1, True)
                return result
            memo[id(value)] = result = {"__class__": value.global_name}
            for suffix, child in _children(value):
                if suffix == ".state" and isinstance(child, Mapping):
                    for key, item in child.items():
                        result[str(key)] = resolve(item, _join(path, f".{key}"), depth + 1, True)
                else:
                    result[suffix.lstrip(".")] = resolve(child, _join(path, suffix), depth + 1, True)
            return result
        if isinstance(value, Mapping):
            memo[id(value)] = result = collections.OrderedDict() if isinstance(value, collections.OrderedDict) else {}
            for key, item in value.items():
                result[key] = resolve(item, _join(path, f"[{_key(key)}]"), depth + 1, inside)
            return result
        if isinstance(value, (list, tuple, set, frozenset)):
            memo[id(value)] = items = []
            items.extend(resolve(item, _join(path, f"[{i}]"), depth + 1, inside) for i, item in enumerate(value))
            if isinstance(value, tuple):
                memo[id(value)] = items = tuple(items)
            return items
        return repr(value)[:200]

    resolved = resolve(obj, "checkpoint", 0, False)
    if hidden:
        stand_ins["…"] = f"{hidden} more"
    return resolved, stand_ins


def plain_view(obj: Any, *, max_items: int = 20, max_nodes: int = 200, max_text: int = 200) -> Any:
    """A small JSON-ready picture of ``obj``: at most ``max_nodes`` values, ``max_items`` per container.

    Tensors are described (``"tensor(float32, (64, 3, 7, 7))"``), stand-ins shown as
    ``{"__class__": name, ...}`` with what was recorded (an ``argparse.Namespace`` with
    its fields), well-known ones decoded (numpy scalars, omegaconf configs).
    """
    budget = max_nodes

    def view(value: Any, depth: int) -> Any:
        nonlocal budget
        budget -= 1
        if value is None or isinstance(value, (bool, int)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else str(value)
        if isinstance(value, str):
            return value if len(value) <= max_text else value[:max_text] + "…"
        if isinstance(value, bytes):
            return f"<{len(value)} bytes>"
        if isinstance(value, torch.Tensor):
            return f"tensor({str(value.dtype).removeprefix('torch.')}, {tuple(value.shape)})"
        if isinstance(value, type) and issubclass(value, PickledObject):
            return f"<global {value.global_name}>"
        if budget <= 0 or depth > 8:
            return "…"
        if isinstance(value, PickledObject):
            decoded = _decode(value)
            if decoded is not _NOT_DECODED:
                return view(decoded, depth + 1)
            out: dict[str, Any] = {"__class__": value.global_name}
            if _module_like(value):
                out["state"] = "a whole nn.Module: its parameters, buffers and submodules"
                return out
            if value.args:
                out["args"] = view(list(value.args), depth + 1)
            if value.kwargs:
                out["kwargs"] = view(dict(value.kwargs), depth + 1)
            if isinstance(value.state, Mapping):
                out.update(view(dict(value.state), depth + 1))
            elif value.state is not None:
                out["state"] = view(value.state, depth + 1)
            if value.listitems:
                out["items"] = view(value.listitems, depth + 1)
            if value.dictitems:
                out["entries"] = view(dict(value.dictitems[:max_items]), depth + 1)
            return out
        if isinstance(value, Mapping):
            items = list(value.items())
            out = {str(k)[:max_text]: view(v, depth + 1) for k, v in items[:max_items]}
            if len(items) > max_items:
                out["…"] = f"{len(items) - max_items} more"
            return out
        if isinstance(value, (list, tuple, set, frozenset)):
            items = list(value)
            shown = [view(v, depth + 1) for v in items[:max_items]]
            return shown + ([f"… {len(items) - max_items} more"] if len(items) > max_items else [])
        return repr(value)[:max_text]

    return view(obj, 0)
