"""A detector's float graph made ready for int8: exact rewrites before its ranges are measured, percentile ranges after.

Post-training int8 of the offline CenterNet lost every detection, and its int8 graph was no faster than float. What
this module changes, each measured on the watch benchmark (BENCHMARKS.md):

- `relu_as_depthwise`: XNNPACK runs int8 ``RELU`` and ``HARD_SWISH`` outside its kernels (a standalone int8 ReLU over
  a 128x128x128 map took 12 ms, against 0.3 ms in float). A standalone ReLU becomes an identity 1x1 depthwise
  convolution with a fused ReLU: the same values, and XNNPACK runs it. (Hard-swish stays the converter's three
  element-wise ops for int8, which XNNPACK runs.)
- `equalize`: cross-layer equalisation (Nagel et al., ICCV 2019) of each depthwise convolution whose output reaches
  1x1 convolutions through ReLU or nothing (directly, or through a squeeze-excite ``MEAN`` and a per-channel gating
  ``MUL``). One int8 scale serves a whole tensor, and the offline CenterNet's first depthwise output has channels
  whose largest values range from 7 to 90: the small ones lose most of their precision. Channel ``c`` of the
  depthwise output is divided by ``s_c`` (its filter and bias) and the readers' input channel ``c`` multiplied by it,
  which changes nothing in float (ReLU commutes with a positive scale); ``s_c`` is proportional to
  ``sqrt(a_c / w_c)`` (geometric mean 1), with ``a_c`` the channel's largest activation on the representative photos
  and ``w_c`` the largest reader weight on that channel, so activation and weight ranges meet in the middle.
- `percentile_ranges`: the calibrator's min/max of each large activation tensor becomes the 0.01th and 99.99th
  percentile of its values on the representative photos, so a few outlying pixels no longer stretch the int8 step of a
  whole map, except the tensors the float post-processing reads (peak logits and box sizes keep their full range).

Built on `detectcrop.runtime.graph` (needs TensorFlow, like the conversion itself).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from detectcrop.runtime.graph import Graph, add_constant, drop_unused_opcodes, opcode, read_model, schema, write_model

#: Activation tensors with at least this many values get percentile ranges (small ones keep min/max).
PERCENTILE_MIN_SIZE = 100_000
PERCENTILE = 99.99
_SAMPLES_PER_IMAGE = 50_000
_SAMPLES_PER_TENSOR = 2_000_000  # values kept per tensor over all images (memory)


def tracing_interpreter(flatbuffer: bytes, num_threads: int) -> Any:
    """An interpreter that keeps every intermediate tensor readable after ``invoke``."""
    import warnings

    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():  # it warns that keeping every tensor is meant for debugging: it is, here
        warnings.simplefilter("ignore", UserWarning)
        interp = Interpreter(model_content=flatbuffer, num_threads=num_threads,
                             experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    return interp


def run_batch(interp: Any, image: np.ndarray) -> None:
    """Run ``interp`` on one input batch, resizing a dynamic-shape input to it first."""
    detail = interp.get_input_details()[0]
    if tuple(detail["shape"]) != image.shape:
        interp.resize_tensor_input(detail["index"], list(image.shape))
        interp.allocate_tensors()
    interp.set_tensor(detail["index"], image)
    interp.invoke()


def relu_as_depthwise(flatbuffer: bytes, keep: Callable[[str], bool] = lambda name: False) -> tuple[bytes, int]:
    """``(flatbuffer, count)``: every ReLU of a 4-D float tensor replaced by an identity 1x1 depthwise convolution
    with a fused ReLU (same values), except ReLUs whose output name ``keep`` accepts (those the float
    post-processing computes)."""
    s, model = schema(), read_model(flatbuffer)
    graph, subgraph, count = Graph.of(model), model.subgraphs[0], 0
    for index, op in enumerate(subgraph.operators):
        x = subgraph.tensors[int(op.inputs[0])] if graph.code(index) == graph.ops.RELU else None
        if x is None or len(x.shape) != 4 or x.type != 0 or keep(subgraph.tensors[int(op.outputs[0])].name.decode()):
            continue
        channels = int(x.shape[-1])
        weights = add_constant(model, np.ones((1, 1, 1, channels), np.float32), f"relu_as_depthwise_{index}/filter")
        bias = add_constant(model, np.zeros(channels, np.float32), f"relu_as_depthwise_{index}/bias")
        options = s.DepthwiseConv2DOptionsT()
        options.padding, options.strideW, options.strideH, options.depthMultiplier = s.Padding.SAME, 1, 1, 1
        options.dilationWFactor = options.dilationHFactor = 1
        options.fusedActivationFunction = graph.acts.RELU
        op.opcodeIndex = opcode(model, graph.ops.DEPTHWISE_CONV_2D)
        op.inputs = [int(op.inputs[0]), weights, bias]
        op.builtinOptionsType, op.builtinOptions = s.BuiltinOptions.DepthwiseConv2DOptions, options
        count += 1
    if not count:
        return flatbuffer, 0
    drop_unused_opcodes(model)  # RELU's, when every ReLU went
    return write_model(model), count


def _readers(graph: Graph, depthwise: int) -> list[int] | None:
    """The 1x1 convolutions whose input channels carry ``depthwise``'s output channels (directly, through a
    squeeze-excite ``MEAN`` or a per-channel gating ``MUL``), or ``None`` when the output goes anywhere else."""
    ops, subgraph = graph.ops, graph.subgraph
    out = int(subgraph.operators[depthwise].outputs[0])
    channels = int(subgraph.tensors[out].shape[-1])
    if out in graph.outputs or graph.activation(depthwise) not in (0, 1):  # NONE, RELU: commute with a scale
        return None
    convs = []  # (reader convolution, the tensor it reads)
    for reader in graph.consumers.get(out, []):
        op, code = subgraph.operators[reader], graph.code(reader)
        if code == ops.CONV_2D:
            convs.append((reader, out))
            continue
        result = int(op.outputs[0])
        if code == ops.MUL:  # gating: the other operand one value per channel, no clipping activation
            other = [int(t) for t in op.inputs if int(t) != out]
            if (len(other) != 1 or tuple(subgraph.tensors[other[0]].shape) != (1, 1, 1, channels)
                    or graph.activation(reader) not in (0, 1)):
                return None
        elif code != ops.MEAN or tuple(subgraph.tensors[result].shape) != (1, 1, 1, channels):
            return None  # a MEAN over the spatial axes only, dimensions kept
        nxt = graph.consumers.get(result, [])
        if result in graph.outputs or len(nxt) != 1 or graph.code(nxt[0]) != ops.CONV_2D:
            return None
        convs.append((nxt[0], result))
    for conv, tensor in convs:  # each a 1x1 convolution reading the channels as its input, not as its filter
        op = subgraph.operators[conv]
        if int(op.inputs[0]) != tensor or tuple(subgraph.tensors[int(op.inputs[1])].shape)[1:] != (1, 1, channels):
            return None
    return [conv for conv, _ in convs] or None


def _scalable_bias(graph: Graph, op: Any) -> bool:
    """The depthwise convolution has no bias, a bias of its own, or a shared bias of zeros (scaling changes none)."""
    if len(op.inputs) < 3 or op.inputs[2] < 0:
        return True
    bias = int(op.inputs[2])
    values = graph.constant(bias)
    return graph.private_constant(bias) or (values is not None and not values.any())


def equalize(flatbuffer: bytes, images: Iterable[np.ndarray], num_threads: int = 2) -> tuple[bytes, int]:
    """``(flatbuffer, pairs)``: cross-layer equalisation of every depthwise convolution `_readers` accepts, with
    activation maxima measured on ``images`` (model inputs, one batch each); the float outputs do not change."""
    model = read_model(flatbuffer)
    graph, subgraph = Graph.of(model), model.subgraphs[0]
    plans = {}
    for index, op in enumerate(subgraph.operators):
        if graph.code(index) != graph.ops.DEPTHWISE_CONV_2D:
            continue
        convs = _readers(graph, index)
        weights = [int(op.inputs[1]), *(int(subgraph.operators[c].inputs[1]) for c in convs or [])]
        if convs and all(graph.private_constant(w) for w in weights) and _scalable_bias(graph, op):
            plans[index] = convs
    images = list(images)
    if not plans or not images:
        return flatbuffer, 0
    interp = tracing_interpreter(flatbuffer, num_threads)
    peak: dict[int, np.ndarray] = {}
    outputs = {index: int(subgraph.operators[index].outputs[0]) for index in plans}
    for image in images:
        run_batch(interp, image)
        for index, tensor in outputs.items():
            values = np.abs(interp.get_tensor(tensor))
            peak[index] = np.maximum(peak.get(index, 0), values.reshape(-1, values.shape[-1]).max(axis=0))

    def scaled(tensor: int, factor: np.ndarray) -> None:
        graph.set_constant(tensor, graph.constant(tensor).reshape(tuple(subgraph.tensors[tensor].shape)) * factor)

    for index, convs in plans.items():
        op = subgraph.operators[index]
        reader_weights = [int(subgraph.operators[c].inputs[1]) for c in convs]
        width = np.max([np.abs(graph.constant(w).reshape(tuple(subgraph.tensors[w].shape))).max(axis=(0, 1, 2))
                        for w in reader_weights], axis=0)
        act = peak[index]
        s = np.where((act > 1e-6) & (width > 1e-9), np.sqrt(act / np.maximum(width, 1e-9)), 1.0)
        s = (s / np.exp(np.mean(np.log(s)))).astype(np.float32)  # geometric mean 1: the overall scale stays
        scaled(int(op.inputs[1]), 1 / s)
        if len(op.inputs) > 2 and op.inputs[2] >= 0 and graph.private_constant(int(op.inputs[2])):
            scaled(int(op.inputs[2]), 1 / s)
        for w in reader_weights:
            scaled(w, s)  # [out, 1, 1, in]: the input channel
    return write_model(model), len(plans)


def percentile_ranges(calibrated: bytes, images: Iterable[np.ndarray], keep: Callable[[str], bool],
                      percentile: float = PERCENTILE, num_threads: int = 2) -> tuple[bytes, int]:
    """``(calibrated flatbuffer, count)``: the recorded min/max of every float activation with at least
    `PERCENTILE_MIN_SIZE` values narrowed to the ``100 - percentile`` / ``percentile`` percentiles of its values on
    ``images`` (sampled), except tensors whose name ``keep`` accepts."""
    model = read_model(calibrated)
    subgraph = model.subgraphs[0]
    interp = tracing_interpreter(calibrated, num_threads)
    names = {d["index"]: d["name"] for d in interp.get_tensor_details()}
    ranged = [t for t, info in enumerate(subgraph.tensors)
              if info.quantization is not None and info.quantization.min is not None
              and len(info.quantization.min) == 1 and not keep(names.get(t, ""))]
    images = list(images)
    per_image = max(1000, min(_SAMPLES_PER_IMAGE, _SAMPLES_PER_TENSOR // max(1, len(images))))
    rng = np.random.default_rng(0)
    samples: dict[int, list[np.ndarray]] = {}
    for number, image in enumerate(images):
        run_batch(interp, image)
        if number == 0:  # sizes as run (a dynamic-shape graph's flatbuffer holds placeholder shapes)
            samples = {t: [] for t in ranged if interp.get_tensor(t).size >= PERCENTILE_MIN_SIZE}
        for t, kept in samples.items():
            values = interp.get_tensor(t).ravel()
            kept.append(values[rng.integers(0, values.size, min(values.size, per_image))])
    chosen = list(samples)
    for t in chosen:
        values, quant = np.concatenate(samples[t]), subgraph.tensors[t].quantization
        quant.min = [float(max(quant.min[0], np.percentile(values, 100 - percentile)))]
        quant.max = [float(min(quant.max[0], np.percentile(values, percentile)))]
    return (write_model(model), len(chosen)) if chosen else (calibrated, 0)
