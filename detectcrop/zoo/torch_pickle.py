"""Read a legacy (non-zip) PyTorch ``.pth`` state dict into numpy arrays, without torch and without running code.

The legacy format is a sequence of pickles (magic number, protocol version, system info, the object, the storage keys)
followed by raw little-endian storage bytes. The object pickle is read by a restricted unpickler that resolves only the
globals a state dict needs; any other global is refused, so a malicious file cannot execute anything.
"""

from __future__ import annotations

import collections
import math
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
#: Limits on what a file may declare: elements per tensor or storage, and tensor rank.
MAX_ELEMENTS = 1 << 31
MAX_DIMS = 16

STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class TorchPickleError(pickle.UnpicklingError):
    """The file is not a legacy torch state dict, or it names a global this reader refuses."""


class _Storage:
    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype
        self.data: np.ndarray | None = None


class _TensorRef:
    """A tensor view on a storage, resolved to a numpy array once the storage bytes are read."""

    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def to_numpy(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise TorchPickleError("tensor refers to a storage that the file does not contain")
        if 0 in self.size:
            return np.zeros(self.size, data.dtype)
        span = 1 + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))  # Python ints: no overflow
        if self.offset + span > len(data):
            raise TorchPickleError("tensor view runs past the end of its storage (truncated or malformed file)")
        if not self.size:
            return np.array(data[self.offset])
        strides = [s * data.itemsize for s in self.stride]
        return np.lib.stride_tricks.as_strided(data[self.offset :], self.size, strides).copy()


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple | list) or len(value) > MAX_DIMS:
        raise TorchPickleError(f"tensor {what} must be a tuple of at most {MAX_DIMS} integers, got {value!r:.80}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_ELEMENTS for v in value):
        raise TorchPickleError(f"tensor {what} holds a negative, oversized or non-integer value: {value!r:.80}")
    return tuple(value)


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any) -> _TensorRef:
    """Validate a tensor's geometry (before any memory is touched) and record it."""
    if not isinstance(storage, _Storage):
        raise TorchPickleError(f"tensor storage is a {type(storage).__name__}, not a storage reference")
    (offset,) = _int_tuple((offset,), "offset")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise TorchPickleError(f"tensor size {size} and stride {stride} differ in length")
    if math.prod(size) > MAX_ELEMENTS:
        raise TorchPickleError(f"tensor of size {size} exceeds the limit of {MAX_ELEMENTS:,} elements")
    return _TensorRef(storage, offset, size, stride)


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only OrderedDict, torch's tensor rebuild functions and storage type names; refuses anything else."""

    ALLOWED: ClassVar[dict[tuple[str, str], Any]] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    }

    def __init__(self, file: BinaryIO, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return name
        raise TorchPickleError(f"refused global {module}.{name}: not part of a plain tensor state dict")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise TorchPickleError(f"unexpected persistent id {pid!r}")
        _, type_name, key, _location, _size = pid[:5]
        if type_name not in STORAGE_DTYPES:
            raise TorchPickleError(f"unsupported storage type {type_name!r}")
        if not isinstance(key, str):
            raise TorchPickleError(f"storage key must be text, got {key!r:.40}")
        if key not in self.storages:
            self.storages[key] = _Storage(STORAGE_DTYPES[type_name])
        return self.storages[key]


def _plain_load(f: BinaryIO) -> Any:
    """Load one of the format's header pickles, which may hold no globals at all."""
    return RestrictedUnpickler(f, {}).load()


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return ``{name: array}`` for every tensor of a legacy torch state dict (e.g. torchvision ``.pth`` files)."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        raise TorchPickleError(f"{path} is a zip-format torch checkpoint; only the legacy format is supported")
    storages: dict[str, _Storage] = {}
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        try:
            magic = _plain_load(f)
            if magic != LEGACY_MAGIC:
                raise TorchPickleError(f"{path} is not a legacy torch file (magic number {magic!r})")
            protocol = _plain_load(f)
            if protocol != LEGACY_PROTOCOL:
                raise TorchPickleError(f"{path}: unsupported torch protocol version {protocol!r}")
            _plain_load(f)  # system info: endianness and type sizes
            obj = RestrictedUnpickler(f, storages).load()
            keys = _plain_load(f)
        except (EOFError, struct.error) as exc:
            raise TorchPickleError(f"{path} is truncated") from exc
        except (ValueError, TypeError, IndexError, KeyError, AttributeError, MemoryError, RecursionError) as exc:
            raise TorchPickleError(f"{path} is malformed ({type(exc).__name__}: {exc})") from exc
        if not isinstance(keys, list | tuple):
            raise TorchPickleError(f"{path}: malformed storage key list")
        for key in keys:
            if not isinstance(key, str):
                raise TorchPickleError(f"{path}: malformed storage key {key!r:.40}")
            header = f.read(8)
            if len(header) < 8:
                raise TorchPickleError(f"{path} is truncated (storage {key})")
            (count,) = struct.unpack("<q", header)
            storage = storages.get(key)
            if storage is None:
                raise TorchPickleError(f"{path} lists storage {key!r}, which no tensor uses")
            nbytes = count * storage.dtype.itemsize
            if not 0 <= count <= MAX_ELEMENTS or nbytes > size - f.tell():
                raise TorchPickleError(f"{path} is truncated or malformed: storage {key} declares {count} elements")
            raw = f.read(nbytes)
            if len(raw) < nbytes:
                raise TorchPickleError(f"{path} is truncated (storage {key})")
            storage.data = np.frombuffer(raw, storage.dtype)
    if not isinstance(obj, dict):
        raise TorchPickleError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return {name: ref.to_numpy() for name, ref in obj.items() if isinstance(ref, _TensorRef)}
