"""A converted ``.tflite`` flatbuffer as an editable graph: reading and writing the model (TensorFlow's flatbuffer
object API), a subgraph with its producer and consumer maps, constants read and rewritten in place (given a buffer
of their own first where one is shared), and the operator-code table. The graph rewrites of `detectcrop.runtime.fuse`,
`detectcrop.runtime.prequant` and `detectcrop.runtime.bias` are built on it. Needs TensorFlow (its flatbuffer
schema), like the conversion itself.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: TensorType -> numpy dtype of the constants `Graph.values` reads.
_DTYPES = {0: np.float32, 2: np.int32, 3: np.uint8, 4: np.int64, 7: np.int16, 9: np.int8}


def schema() -> Any:
    """TensorFlow's generated TFLite schema module (operators, activations, option types)."""
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def read_model(flatbuffer: bytes) -> Any:
    """The model of a flatbuffer in the object API (``ModelT``)."""
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))


def write_model(model: Any) -> bytes:
    """The flatbuffer of a ``ModelT``."""
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


@dataclass
class Graph:
    """One subgraph of a model in the flatbuffer object API, with producer and consumer maps."""

    model: Any
    subgraph: Any
    ops: Any  # the schema's BuiltinOperator
    acts: Any  # the schema's ActivationFunctionType
    producer: dict[int, int] = field(default_factory=dict)
    consumers: dict[int, list[int]] = field(default_factory=dict)
    outputs: set[int] = field(default_factory=set)  # the subgraph's outputs
    buffer_users: Counter = field(default_factory=Counter)  # tensors per buffer, over every subgraph

    @classmethod
    def of(cls, model: Any, subgraph: Any = None) -> Graph:
        """The graph of ``subgraph`` (default: the model's first)."""
        s = schema()
        return cls(model, model.subgraphs[0] if subgraph is None else subgraph, s.BuiltinOperator,
                   s.ActivationFunctionType)

    def __post_init__(self) -> None:
        self.outputs = {int(t) for t in self.subgraph.outputs}
        self.buffer_users = Counter(info.buffer for subgraph in self.model.subgraphs for info in subgraph.tensors)
        for index, op in enumerate(self.subgraph.operators):
            for tensor in op.outputs:
                self.producer[int(tensor)] = index
            for tensor in op.inputs:
                if tensor >= 0:
                    self.consumers.setdefault(int(tensor), []).append(index)

    def code(self, index: int) -> int:
        entry = self.model.operatorCodes[self.subgraph.operators[index].opcodeIndex]
        return max(int(entry.builtinCode), int(entry.deprecatedBuiltinCode))

    def activation(self, index: int) -> int:
        return int(getattr(self.subgraph.operators[index].builtinOptions, "fusedActivationFunction", 0) or 0)

    def constant(self, tensor: int) -> np.ndarray | None:
        """A float32 constant's values (a view of its buffer), or ``None`` for anything else."""
        return self.values(tensor) if self.subgraph.tensors[tensor].type == 0 else None  # 0: FLOAT32

    def set_constant(self, tensor: int, values: np.ndarray) -> None:
        """Rewrite a float32 constant's buffer with ``values`` (as many as it holds)."""
        assert self.subgraph.tensors[tensor].type == 0
        self.set_values(tensor, values)

    def values(self, tensor: int) -> np.ndarray | None:
        """A constant's values in its own type (float32, int32, int8, ...; flat), or ``None`` without data."""
        info = self.subgraph.tensors[tensor]
        data = self.model.buffers[info.buffer].data
        if data is None or len(data) == 0 or info.type not in _DTYPES:
            return None
        return np.frombuffer(np.asarray(data, dtype=np.uint8).tobytes(), dtype=_DTYPES[info.type])

    def set_values(self, tensor: int, values: np.ndarray) -> None:
        """Rewrite a constant's buffer with ``values`` in its own type (as many as it holds)."""
        info = self.subgraph.tensors[tensor]
        values = np.asarray(values, _DTYPES[info.type])
        assert values.size == int(np.prod(info.shape))
        self.model.buffers[info.buffer].data = np.frombuffer(values.tobytes(), dtype=np.uint8)

    def private_buffer(self, tensor: int) -> None:
        """Give ``tensor`` a buffer of its own (converters share one buffer between equal constants)."""
        info = self.subgraph.tensors[tensor]
        if self.buffer_users[info.buffer] > 1:
            buffer = schema().BufferT()
            buffer.data = np.array(self.model.buffers[info.buffer].data, np.uint8)
            self.model.buffers.append(buffer)
            self.buffer_users[info.buffer] -= 1
            info.buffer = len(self.model.buffers) - 1
            self.buffer_users[info.buffer] = 1

    def scalar(self, tensor: int) -> float | None:
        """The value of a one-element float32 constant, else ``None``."""
        values = self.constant(tensor)
        return float(values[0]) if values is not None and values.size == 1 else None

    def only_reader(self, tensor: int) -> int | None:
        """The single op reading ``tensor``, when exactly one does and it is not a graph output."""
        readers = self.consumers.get(tensor, [])
        if len(readers) != 1 or tensor in self.outputs:
            return None
        return readers[0]

    def private_constant(self, tensor: int) -> bool:
        """Whether ``tensor`` is a float constant no other tensor shares a buffer with and only one op reads."""
        if self.constant(tensor) is None or len(self.consumers.get(tensor, [])) != 1:
            return False
        return self.buffer_users[self.subgraph.tensors[tensor].buffer] == 1


def add_constant(model: Any, values: np.ndarray, name: str, subgraph: Any = None) -> int:
    """Append a float32 constant tensor (and its buffer) to ``subgraph`` (default: the first); its index."""
    s, subgraph = schema(), model.subgraphs[0] if subgraph is None else subgraph
    buffer = s.BufferT()
    buffer.data = np.frombuffer(np.asarray(values, np.float32).tobytes(), dtype=np.uint8)
    model.buffers.append(buffer)
    tensor = s.TensorT()
    tensor.shape, tensor.type, tensor.buffer, tensor.name = list(values.shape), 0, len(model.buffers) - 1, name.encode()
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def opcode(model: Any, builtin: int) -> int:
    """The index of ``builtin`` in the model's operator codes, added when missing."""
    for index, entry in enumerate(model.operatorCodes):
        if max(int(entry.builtinCode), int(entry.deprecatedBuiltinCode)) == builtin:
            return index
    entry = schema().OperatorCodeT()
    entry.builtinCode = builtin
    entry.deprecatedBuiltinCode = min(builtin, 127)
    entry.version = 1
    model.operatorCodes.append(entry)
    return len(model.operatorCodes) - 1


def drop_unused_opcodes(model: Any) -> None:
    """Remove the operator codes no op uses (TensorFlow's calibrator refuses a model that has one)."""
    used = sorted({op.opcodeIndex for subgraph in model.subgraphs for op in subgraph.operators})
    remap = {old: new for new, old in enumerate(used)}
    model.operatorCodes = [model.operatorCodes[i] for i in used]
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            op.opcodeIndex = remap[op.opcodeIndex]
