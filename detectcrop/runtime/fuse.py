"""Hard-swish written as three element-wise ops, fused into LiteRT's one ``HARD_SWISH`` op in a converted flatbuffer.

MobileNetV3 graphs exported from other frameworks (the offline CenterNet's TF.js graph among them) spell
``hard_swish(x) = x * relu6(x + 3) / 6`` as ``ADD(x, 3)`` with a fused ReLU6, ``MUL(x, c)`` and ``MUL(., .)``, a
form the TFLite converter does not recognise; XNNPACK then makes three passes over memory where one suffices. The
constant ``c`` is often ``1/6`` rounded to half precision (0.16662598), so ``x * c * relu6(x + 3)`` equals
``k * hard_swish(x)`` with ``k = 6c`` (0.99976), not ``hard_swish(x)``. The factor is folded into what reads the
result: a convolution's filter (scaled by ``k``), through ``MEAN`` and a gating ``MUL`` (both linear in it), and
through a residual ``ADD`` whose other operand comes from a convolution (that one's filter and bias scaled by
``1/k``). A hard-swish whose factor cannot be folded that way is left as it was. Built on `detectcrop.runtime.graph`
(needs TensorFlow, like the conversion itself).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detectcrop.runtime.graph import Graph, opcode, read_model, schema, write_model

#: How far ``6c`` may be from 1 for ``MUL(x, c)`` to count as the ``/ 6`` of a hard-swish (half-precision rounding).
_SIXTH_TOLERANCE = 1e-3


@dataclass
class _Match:
    """One hard-swish: ``ADD`` and the ``1/6`` ``MUL`` to remove, the ``MUL`` that becomes ``HARD_SWISH(x)``."""

    add: int
    sixth: int
    product: int
    x: int
    k: float


def _match(graph: Graph, index: int) -> _Match | None:
    ops = graph.ops
    op = graph.subgraph.operators[index]
    if graph.code(index) != ops.ADD or graph.activation(index) != graph.acts.RELU6 or len(op.inputs) != 2:
        return None
    x, three = (int(t) for t in op.inputs)
    if graph.scalar(three) != 3.0:
        x, three = three, x
        if graph.scalar(three) != 3.0:
            return None
    relu = int(op.outputs[0])
    product = graph.only_reader(relu)
    if product is None or graph.code(product) != ops.MUL or graph.activation(product) != graph.acts.NONE:
        return None
    other = [int(t) for t in graph.subgraph.operators[product].inputs if int(t) != relu]
    if len(other) != 1 or other[0] not in graph.producer or graph.only_reader(other[0]) != product:
        return None
    sixth = graph.producer[other[0]]
    sixth_inputs = [int(t) for t in graph.subgraph.operators[sixth].inputs]
    if graph.code(sixth) != ops.MUL or graph.activation(sixth) != graph.acts.NONE \
            or len(sixth_inputs) != 2 or sixth_inputs.count(x) != 1:
        return None
    constant = graph.scalar(next(t for t in sixth_inputs if t != x))
    if constant is None or abs(6.0 * constant - 1.0) > _SIXTH_TOLERANCE:
        return None
    return _Match(index, sixth, product, x, 6.0 * constant)


def _fold(graph: Graph, tensor: int, plan: dict[int, int], seen: set[int]) -> bool:
    """Plan how every reader of ``tensor`` (which will hold ``true / k``) absorbs ``k``: ``plan[weight] = 1`` scales
    a convolution's filter by ``k``, ``-1`` (across a residual ``ADD``: the other branch's filter and bias) by
    ``1/k``. Returns ``False`` when some reader cannot absorb it."""
    ops = graph.ops
    linear = (graph.acts.NONE, graph.acts.RELU)  # activations that commute with a positive scale
    if tensor in seen or tensor in graph.outputs:
        return False
    seen.add(tensor)
    for reader in graph.consumers.get(tensor, []):
        op = graph.subgraph.operators[reader]
        inputs = [int(t) for t in op.inputs]
        code = graph.code(reader)
        if code in (ops.CONV_2D, ops.DEPTHWISE_CONV_2D) and inputs[0] == tensor and tensor not in inputs[1:]:
            if not graph.private_constant(inputs[1]) or inputs[1] in plan:
                return False
            plan[inputs[1]] = 1
        elif code == ops.MEAN and inputs[0] == tensor:
            if not _fold(graph, int(op.outputs[0]), plan, seen):
                return False
        elif code == ops.MUL and inputs.count(tensor) == 1 and graph.activation(reader) in linear:
            if not _fold(graph, int(op.outputs[0]), plan, seen):
                return False
        elif code == ops.ADD and inputs.count(tensor) == 1 and graph.activation(reader) in linear:
            branch = next(t for t in inputs if t != tensor)
            source = graph.producer.get(branch)
            if source is None or graph.only_reader(branch) != reader or graph.code(source) != ops.CONV_2D \
                    or graph.activation(source) not in linear:
                return False
            weights = [int(t) for t in graph.subgraph.operators[source].inputs[1:] if int(t) >= 0]
            if not weights or any(t in plan for t in weights) \
                    or not all(graph.private_constant(t) or _zeros(graph.constant(t)) for t in weights):
                return False  # (a weight already planned: a convolution reading the tensor on the other branch)
            plan.update({weight: -1 for weight in weights if not _zeros(graph.constant(weight))})
            if not _fold(graph, int(op.outputs[0]), plan, seen):
                return False
        else:
            return False
    return True


def _zeros(values: np.ndarray | None) -> bool:
    """Whether a constant is all zeros (a shared zero bias needs no scaling)."""
    return values is not None and not np.any(values)


def fuse_hard_swish(flatbuffer: bytes) -> tuple[bytes, int]:
    """``(flatbuffer, count)``: ``flatbuffer`` with every three-op hard-swish whose scale folds exactly replaced by
    one ``HARD_SWISH`` op, and how many were replaced (``0``: the input bytes unchanged)."""
    model = read_model(flatbuffer)
    total = 0
    for subgraph in model.subgraphs:
        graph = Graph.of(model, subgraph)
        remove: set[int] = set()
        scales: dict[int, float] = {}
        for index in range(len(subgraph.operators)):
            match = _match(graph, index)
            if match is None:
                continue
            plan: dict[int, int] = {}
            if match.k != 1.0 and not _fold(graph, int(subgraph.operators[match.product].outputs[0]), plan, set()):
                continue
            if any(tensor in scales for tensor in plan):
                continue  # a weight another fusion already scales: left as it is
            scales.update({tensor: match.k ** power for tensor, power in plan.items()})
            product = subgraph.operators[match.product]
            product.opcodeIndex = opcode(model, graph.ops.HARD_SWISH)
            product.inputs = [match.x]
            product.builtinOptionsType = schema().BuiltinOptions.NONE
            product.builtinOptions = None
            remove.update((match.add, match.sixth))
            total += 1
        for tensor, factor in scales.items():
            graph.set_constant(tensor, graph.constant(tensor) * np.float32(factor))
        subgraph.operators = [op for index, op in enumerate(subgraph.operators) if index not in remove]
    if total == 0:
        return flatbuffer, 0
    return write_model(model), total

