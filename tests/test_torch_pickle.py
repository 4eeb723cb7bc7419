"""The legacy torch state-dict reader: real layout written by hand, and refusal of any other global."""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import sys
import types

import numpy as np
import pytest
from detectcrop.torch_pickle import (
    LEGACY_MAGIC,
    LEGACY_PROTOCOL,
    RestrictedUnpickler,
    TorchPickleError,
    load_state_dict,
)


class _FakeStorage:
    def __init__(self, key: str, type_name: str, data: np.ndarray) -> None:
        self.key, self.type_name, self.data = key, type_name, data


class _FakeTensor:
    def __init__(self, storage: _FakeStorage, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return (sys.modules["torch._utils"]._rebuild_tensor_v2, self.args)


@pytest.fixture
def fake_torch(monkeypatch):
    """Stand-in ``torch`` modules so the pickler writes the same globals real torch files name."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # pragma: no cover - never called, only named
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "LongStorage"):
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch, name, cls)
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def _write_legacy(path, state: dict, storages: list[_FakeStorage], torch_module) -> None:
    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _FakeStorage):
                return ("storage", getattr(torch_module, obj.type_name), obj.key, "cpu", obj.data.size, None)
            return None

    buf = io.BytesIO()
    for header in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"little_endian": True}):
        pickle.dump(header, buf, protocol=2)
    Pickler(buf, protocol=2).dump(state)
    pickle.dump([s.key for s in storages], buf, protocol=2)
    for s in storages:
        buf.write(struct.pack("<q", s.data.size))
        buf.write(s.data.tobytes())
    path.write_bytes(buf.getvalue())


def test_reads_tensors_views_and_scalars(tmp_path, fake_torch):
    weights = np.arange(24, dtype=np.float32)
    counts = np.array([7], dtype=np.int64)
    s0, s1 = _FakeStorage("0", "FloatStorage", weights), _FakeStorage("1", "LongStorage", counts)
    state = collections.OrderedDict(
        conv=_FakeTensor(s0, 0, (2, 3, 4), (12, 4, 1)),
        transposed=_FakeTensor(s0, 0, (4, 3), (1, 4)),  # a non-contiguous view of the same storage
        tail=_FakeTensor(s0, 20, (4,), (1,)),
        steps=_FakeTensor(s1, 0, (), ()),
    )
    path = tmp_path / "w.pth"
    _write_legacy(path, state, [s0, s1], fake_torch)

    out = load_state_dict(path)
    np.testing.assert_array_equal(out["conv"], weights.reshape(2, 3, 4))
    np.testing.assert_array_equal(out["transposed"], weights[:12].reshape(3, 4).T)
    np.testing.assert_array_equal(out["tail"], weights[20:])
    assert out["steps"].shape == () and out["steps"] == 7 and out["steps"].dtype == np.int64


def test_truncated_file_is_an_error(tmp_path, fake_torch):
    s0 = _FakeStorage("0", "FloatStorage", np.ones(100, np.float32))
    path = tmp_path / "w.pth"
    _write_legacy(path, {"w": _FakeTensor(s0, 0, (100,), (1,))}, [s0], fake_torch)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(TorchPickleError, match="truncated"):
        load_state_dict(path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_refuses_any_other_global(tmp_path, fake_torch):
    with pytest.raises(TorchPickleError, match="refused global"):
        RestrictedUnpickler(io.BytesIO(pickle.dumps(_Evil(), protocol=2)), {}).load()
    with pytest.raises(TorchPickleError, match="refused global"):
        RestrictedUnpickler(io.BytesIO(pickle.dumps({"x": np.float32}, protocol=2)), {}).load()
    # The same payload in the object position of an otherwise valid legacy file.
    path = tmp_path / "evil.pth"
    _write_legacy(path, collections.OrderedDict(x=_Evil()), [], fake_torch)
    with pytest.raises(TorchPickleError, match=r"refused global (posix|os)\.system"):
        load_state_dict(path)


def test_rejects_non_torch_files(tmp_path):
    path = tmp_path / "not.pth"
    path.write_bytes(pickle.dumps(12345))
    with pytest.raises(TorchPickleError, match="magic"):
        load_state_dict(path)


@pytest.mark.parametrize(
    ("offset", "size", "stride", "match"),
    [
        (0, (4,), (-1,), "negative"),
        (-8, (4,), (1,), "negative"),
        (0, (4, 4), (1,), "differ in length"),
        (0, (1 << 20, 1 << 20), (1, 1), "exceeds the limit"),
        (0, (4,), (1 << 40,), "oversized"),
        (6, (4,), (1,), "past the end"),
        (0, (3, 3), (3, 1 << 30), "past the end"),
        (0, ("4",), (1,), "non-integer"),
    ],
)
def test_refuses_bad_geometry_before_touching_memory(tmp_path, fake_torch, offset, size, stride, match):
    s0 = _FakeStorage("0", "FloatStorage", np.arange(8, dtype=np.float32))
    path = tmp_path / "w.pth"
    _write_legacy(path, {"w": _FakeTensor(s0, offset, size, stride)}, [s0], fake_torch)
    with pytest.raises(TorchPickleError, match=match):
        load_state_dict(path)


@pytest.mark.parametrize("count", [-1, -(1 << 62), 1 << 40, 9])
def test_refuses_storage_counts_the_file_cannot_hold(tmp_path, fake_torch, count):
    s0 = _FakeStorage("0", "FloatStorage", np.arange(8, dtype=np.float32))
    path = tmp_path / "w.pth"
    _write_legacy(path, {"w": _FakeTensor(s0, 0, (8,), (1,))}, [s0], fake_torch)
    data = bytearray(path.read_bytes())
    at = len(data) - 8 * 4 - 8  # the storage's element count, just before its bytes
    assert struct.unpack("<q", data[at : at + 8]) == (8,)
    data[at : at + 8] = struct.pack("<q", count)
    path.write_bytes(bytes(data))
    with pytest.raises(TorchPickleError, match="declares"):
        load_state_dict(path)
