"""Empirical bias correction of an int8 graph against the float graph it was quantised from.

Rounding to int8 does not only add noise: it shifts means (activations clipped to their percentile ranges, ReLUs
that cut rounded values, rounding that does not average out over a filter). On the offline CenterNet most `clock`
scores came out lower in int8 (53 of 68 held-out watches, median 0.90x float's), enough to drop watches below the
score threshold. Each int8 convolution's int32 bias is moved by the mean difference, per output channel, between
its dequantised output and the same tensor of the float graph on representative photos (the empirical bias correction
of Nagel et al., ICCV 2019, section 4.2). Only values inside the fused activation's open range in both graphs
count (a value the activation clipped says nothing about the shift before it); values clipped at int8's own limits
(the percentile ranges of `detectcrop.runtime.prequant`) do count, because the layers downstream read them as they
are: on the offline CenterNet, leaving them out kept fewer watches (held-out recall 0.956 against 0.971). A
convolution whose output has no float counterpart of the same name and shape is left alone.

Convolutions are corrected one dependency level at a time from the input on, each measured after every
convolution upstream of it was corrected: corrected all at once, a shift made upstream is corrected again in every
layer it reaches (on the offline CenterNet that found no watch at all; four chained layers at a time, 20% of them).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from detectcrop.runtime.graph import Graph, read_model, write_model
from detectcrop.runtime.prequant import run_batch, tracing_interpreter

logger = logging.getLogger(__name__)

#: Images (spread over the calibration set) the correction is measured on; each level runs both graphs on each.
MAX_IMAGES = 8
#: Values of a channel (inside the activation's range, over all images) a correction needs.
MIN_SAMPLES = 32
_INT8, _INT32 = 9, 2  # TensorType
_OPEN_RANGE = {0: (-np.inf, np.inf), 1: (0.0, np.inf), 2: (-1.0, 1.0), 3: (0.0, 6.0)}  # fused activation -> range


def correct_biases(quantized: bytes, reference: bytes, images: Sequence[np.ndarray],
                   num_threads: int = 2) -> tuple[bytes, int]:
    """``(flatbuffer, convolutions corrected)``: ``quantized`` with each int8 convolution's bias corrected by its
    mean output error against ``reference`` (the float graph ``quantized`` came from: same tensor names) on up to
    `MAX_IMAGES` of ``images`` (model inputs, one batch each), spread over them."""
    model = read_model(quantized)
    graph = Graph.of(model)
    if not len(images):
        return quantized, 0
    reference_interp = tracing_interpreter(reference, num_threads)
    reference_index = {d["name"]: d["index"] for d in reference_interp.get_tensor_details()}
    matched = _matched(graph, reference_index)
    levels = _levels(graph, matched)
    if not levels:
        return quantized, 0
    picks = np.unique(np.linspace(0, len(images) - 1, min(MAX_IMAGES, len(images))).round().astype(int))
    images = [images[i] for i in picks]
    tensors = graph.subgraph.tensors
    for op in matched:
        graph.private_buffer(int(graph.subgraph.operators[op].inputs[2]))
    corrected = skipped = 0
    for level in sorted(levels):
        group = levels[level]
        interp = None  # the previous level's interpreter (every tensor kept) goes before the next one is built
        interp = tracing_interpreter(write_model(model), num_threads)
        sums: dict[int, np.ndarray] = {}
        counts: dict[int, np.ndarray] = {}
        for image in images:
            run_batch(reference_interp, image)
            run_batch(interp, image)
            for op in list(group):
                out = int(graph.subgraph.operators[op].outputs[0])
                quant = tensors[out].quantization
                q = interp.get_tensor(out)
                f = reference_interp.get_tensor(reference_index[matched[op]])
                if f.shape != q.shape:  # the same name, another tensor: leave this convolution alone
                    group.remove(op)
                    skipped += 1
                    continue
                y = (q.astype(np.float32) - quant.zeroPoint[0]) * quant.scale[0]
                low, high = _OPEN_RANGE[graph.activation(op)]
                # values clipped by the activation say nothing about the shift before it; values clipped at int8's
                # limits count: the next layers read them, and it is the mean of what they read that is corrected
                inside = (f > low) & (f < high) & (y > low) & (y < high)
                channels = y.shape[-1]
                sums[op] = sums.get(op, 0) + np.where(inside, y - f, 0).reshape(-1, channels).sum(axis=0)
                counts[op] = counts.get(op, 0) + inside.reshape(-1, channels).sum(axis=0)
        for op in group:
            bias = int(graph.subgraph.operators[op].inputs[2])
            scale = np.broadcast_to(np.asarray(tensors[bias].quantization.scale, np.float64), sums[op].shape)
            shift = np.where(counts[op] >= MIN_SAMPLES, sums[op] / np.maximum(counts[op], 1) / scale, 0.0)
            limits = np.iinfo(np.int32)
            graph.set_values(bias, np.clip(graph.values(bias) - np.round(shift), limits.min, limits.max))
            corrected += bool(np.any(np.round(shift)))
    logger.info("int8 bias correction: %d of %d convolutions corrected (%d skipped: not the float tensor's shape)",
                corrected, len(matched), skipped)
    return write_model(model), corrected


def _matched(graph: Graph, reference_index: dict[str, int]) -> dict[int, str]:
    """The correctable convolutions (`_correctable`) and the name of their output in the float graph: the same
    name, or, for an output the int8 graph dequantises into a graph output, the dequantised tensor's name."""
    ops, tensors = graph.ops, graph.subgraph.tensors
    matched = {}
    for index, op in enumerate(graph.subgraph.operators):
        if graph.code(index) not in (ops.CONV_2D, ops.DEPTHWISE_CONV_2D) or not _correctable(graph, index):
            continue
        name = tensors[int(op.outputs[0])].name.decode()
        readers = graph.consumers.get(int(op.outputs[0]), [])
        if name not in reference_index and len(readers) == 1 and graph.code(readers[0]) == ops.DEQUANTIZE:
            name = tensors[int(graph.subgraph.operators[readers[0]].outputs[0])].name.decode()
        if name in reference_index:
            matched[index] = name
    return matched


def _levels(graph: Graph, convolutions: Iterable[int]) -> dict[int, list[int]]:
    """``convolutions`` grouped by dependency level: a level's convolutions read only tensors computed before its
    level's first convolution ran (none is upstream of another in the same level)."""
    convolutions = set(convolutions)
    level_of: dict[int, int] = {}
    levels: dict[int, list[int]] = defaultdict(list)
    for index, op in enumerate(graph.subgraph.operators):
        level = max((level_of.get(int(t), 0) for t in op.inputs if t >= 0), default=0)
        if index in convolutions:
            level += 1
            levels[level].append(index)
        for t in op.outputs:
            level_of[int(t)] = level
    return dict(levels)


def _correctable(graph: Graph, index: int) -> bool:
    """An int8 output with one scale, an int32 constant bias of its own with its scales, an activation with a
    known range."""
    op, tensors = graph.subgraph.operators[index], graph.subgraph.tensors
    if len(op.inputs) < 3 or op.inputs[2] < 0 or graph.activation(index) not in _OPEN_RANGE:
        return False
    out, bias = tensors[int(op.outputs[0])], tensors[int(op.inputs[2])]
    return (out.type == _INT8 and out.quantization is not None and out.quantization.scale is not None
            and len(out.quantization.scale) == 1 and bias.type == _INT32 and bias.quantization is not None
            and bias.quantization.scale is not None and graph.values(int(op.inputs[2])) is not None
            and len(graph.consumers.get(int(op.inputs[2]), [])) == 1)
