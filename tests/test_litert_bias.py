"""Bias correction of an int8 graph (`detectcrop.litert_bias`): a shift planted in one convolution's bias is found
and removed, and the layers downstream of it are not corrected for it a second time."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

import tensorflow as tf

from detectcrop import litert_bias
from detectcrop.litert import make_interpreter
from detectcrop.tflite_graph import Graph, read_model, write_model

RNG = np.random.default_rng(1)
W1 = tf.constant(RNG.normal(0, 0.5, (3, 3, 3, 8)).astype(np.float32))
B1 = tf.constant(RNG.normal(0.2, 0.1, 8).astype(np.float32))
DW = tf.constant(np.abs(RNG.normal(0, 0.5, (3, 3, 8, 1))).astype(np.float32))  # a shift passes on
W2 = tf.constant(RNG.normal(0, 0.5, (1, 1, 8, 6)).astype(np.float32))


@tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32)])
def _chain(x: tf.Tensor) -> tf.Tensor:
    """Three convolutions, each reading the one before: three dependency levels."""
    a = tf.nn.relu(tf.nn.conv2d(x, W1, 1, "SAME") + B1)
    d = tf.nn.relu(tf.nn.depthwise_conv2d(a, DW, [1, 1, 1, 1], "SAME"))
    return tf.nn.conv2d(d, W2, 1, "SAME")


def _images(n: int) -> list[np.ndarray]:
    return [RNG.uniform(0, 1, (1, 16, 16, 3)).astype(np.float32) for _ in range(n)]


@pytest.fixture(scope="module")
def graphs() -> tuple[bytes, bytes]:
    """``(float graph, its int8 quantisation)``: calibrated on the same kind of inputs as the tests run."""
    from tensorflow.lite.python import convert as tf_convert
    from tensorflow.lite.python.optimize import calibrator

    flat = tf.lite.TFLiteConverter.from_concrete_functions([_chain.get_concrete_function()], _chain).convert()
    calibrated = calibrator.Calibrator(flat).calibrate(lambda: ([x] for x in _images(8)))
    return flat, tf_convert.mlir_quantize(calibrated, fully_quantize=False)


def _convs(flatbuffer: bytes) -> list[dict]:
    """Per convolution, in graph order: int32 bias values, bias scales, output scale."""
    model = read_model(flatbuffer)
    graph = Graph.of(model)
    out = []
    for index, op in enumerate(graph.subgraph.operators):
        if graph.code(index) in (graph.ops.CONV_2D, graph.ops.DEPTHWISE_CONV_2D):
            bias = graph.subgraph.tensors[int(op.inputs[2])]
            data = np.asarray(model.buffers[bias.buffer].data, np.uint8).tobytes()
            out.append({"bias": int(op.inputs[2]), "values": np.frombuffer(data, np.int32).copy(),
                        "scale": np.asarray(bias.quantization.scale),
                        "out_scale": graph.subgraph.tensors[int(op.outputs[0])].quantization.scale[0]})
    return out


def _plant(flatbuffer: bytes, conv: int, channel: int, steps: float) -> bytes:
    """``flatbuffer`` with convolution ``conv``'s bias on ``channel`` raised by ``steps`` of its output's int8 step
    (given a buffer of its own: equal constants may share one)."""
    from tensorflow.lite.python import schema_py_generated as s

    model = read_model(flatbuffer)
    info = _convs(flatbuffer)[conv]
    values = info["values"].copy()
    values[channel] += round(float(steps * info["out_scale"] / info["scale"][channel]))
    buffer = s.BufferT()
    buffer.data = np.frombuffer(values.tobytes(), np.uint8)
    model.buffers.append(buffer)
    model.subgraphs[0].tensors[info["bias"]].buffer = len(model.buffers) - 1
    return write_model(model)


def _mean_error(flatbuffer: bytes, reference: bytes, images: list[np.ndarray]) -> np.ndarray:
    """Per output channel, the mean of int8 output minus float output over ``images``."""
    diffs = []
    for x in images:
        outs = []
        for fb in (flatbuffer, reference):
            interp = make_interpreter(fb, 1)
            interp.allocate_tensors()
            interp.set_tensor(interp.get_input_details()[0]["index"], x)
            interp.invoke()
            outs.append(interp.get_tensor(interp.get_output_details()[0]["index"]))
        diffs.append((outs[0] - outs[1]).reshape(-1, outs[0].shape[-1]).mean(axis=0))
    return np.mean(diffs, axis=0)


def test_a_planted_shift_is_removed_once(graphs):
    flat, quantized = graphs
    images, held_out = _images(8), _images(6)
    clean, _ = litert_bias.correct_biases(quantized, flat, images)
    planted = _plant(quantized, conv=0, channel=3, steps=12.0)
    fixed, count = litert_bias.correct_biases(planted, flat, images)
    assert count >= 1
    before, after, baseline = _convs(planted), _convs(fixed), _convs(clean)
    planted_units = before[0]["values"][3] - _convs(quantized)[0]["values"][3]
    # the first convolution's planted channel comes back to where the clean graph's correction put it
    assert abs(int(after[0]["values"][3]) - int(baseline[0]["values"][3])) < 0.15 * planted_units
    # downstream layers see the planted shift (a positive control: corrected all at once, they would move for it)...
    shift_seen = np.abs(_mean_error(planted, flat, held_out) - _mean_error(quantized, flat, held_out)).max()
    assert shift_seen > 2 * _convs(quantized)[-1]["out_scale"]
    # ...but corrected in order they end where the clean graph's correction put them, and so do the outputs
    for a, b in zip(after[1:], baseline[1:], strict=True):
        assert np.abs((a["values"] - b["values"]) * a["scale"]).max() < 0.25 * shift_seen
    assert np.abs(_mean_error(fixed, flat, held_out) - _mean_error(clean, flat, held_out)).max() < 0.25 * shift_seen


def test_correction_lowers_the_output_error_of_a_shifted_graph(graphs):
    flat, quantized = graphs
    planted = _plant(quantized, conv=1, channel=5, steps=-8.0)
    fixed, _ = litert_bias.correct_biases(planted, flat, _images(8))
    held_out = _images(6)
    assert np.abs(_mean_error(fixed, flat, held_out)).max() < 0.5 * np.abs(_mean_error(planted, flat, held_out)).max()


def test_nothing_to_correct_leaves_the_graph(graphs):
    flat, _ = graphs
    assert litert_bias.correct_biases(flat, flat, _images(2)) == (flat, 0)  # a float graph has no int8 convolution
