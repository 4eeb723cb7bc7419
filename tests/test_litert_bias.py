"""Bias correction of an int8 graph (`detectcrop.litert_bias`): a shift planted in one convolution's bias is found
and removed, the layers downstream of it are not corrected for it a second time, the mean of an output clipped at
int8's limits is restored, and convolutions sharing a bias buffer are corrected each on its own."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

import tensorflow as tf
from detectcrop.litert import make_interpreter
from detectcrop.litert_prequant import run_batch, tracing_interpreter
from detectcrop.tflite_graph import Graph, read_model, write_model

from detectcrop import litert_bias

RNG = np.random.default_rng(1)
W1 = RNG.normal(0, 0.5, (3, 3, 3, 8)).astype(np.float32)
B1 = RNG.normal(0.2, 0.1, 8).astype(np.float32)
DW = np.abs(RNG.normal(0, 0.5, (3, 3, 8, 1))).astype(np.float32)  # positive: a shift passes on
W2 = RNG.normal(0, 0.5, (1, 1, 8, 6)).astype(np.float32)


@tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32)])
def _chain(x: tf.Tensor) -> tf.Tensor:
    """Three convolutions, each reading the one before: three dependency levels (the last one the graph's output,
    which the int8 graph dequantises under another name)."""
    a = tf.nn.relu(tf.nn.conv2d(x, W1, 1, "SAME") + B1)
    d = tf.nn.relu(tf.nn.depthwise_conv2d(a, DW, [1, 1, 1, 1], "SAME"))
    return tf.nn.conv2d(d, W2, 1, "SAME")


def _images(n: int) -> list[np.ndarray]:
    return [RNG.uniform(0, 1, (1, 16, 16, 3)).astype(np.float32) for _ in range(n)]


def _quantize(fn, images: list[np.ndarray]) -> tuple[bytes, bytes]:
    """``(float graph, its int8 quantisation calibrated on images)``."""
    from tensorflow.lite.python import convert as tf_convert
    from tensorflow.lite.python.optimize import calibrator

    flat = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn).convert()
    calibrated = calibrator.Calibrator(flat).calibrate(lambda: ([x] for x in images))
    return flat, tf_convert.mlir_quantize(calibrated, fully_quantize=False)


@pytest.fixture(scope="module")
def graphs() -> tuple[bytes, bytes]:
    return _quantize(_chain, _images(8))


def _busiest_channel(level: int) -> int:
    """The channel of the first (0) or second (1) convolution's output with the largest mean (alive after ReLU)."""
    x = tf.constant(np.concatenate(_images(4)))
    a = tf.nn.relu(tf.nn.conv2d(x, W1, 1, "SAME") + B1)
    out = a if level == 0 else tf.nn.relu(tf.nn.depthwise_conv2d(a, DW, [1, 1, 1, 1], "SAME"))
    return int(np.argmax(out.numpy().mean(axis=(0, 1, 2))))


def _convs(flatbuffer: bytes) -> list[dict]:
    """Per convolution, in graph order: int32 bias values, bias scales, output tensor and its scale."""
    model = read_model(flatbuffer)
    graph = Graph.of(model)
    out = []
    for index, op in enumerate(graph.subgraph.operators):
        if graph.code(index) in (graph.ops.CONV_2D, graph.ops.DEPTHWISE_CONV_2D):
            bias = graph.subgraph.tensors[int(op.inputs[2])]
            data = np.asarray(model.buffers[bias.buffer].data, np.uint8).tobytes()
            out.append({"bias": int(op.inputs[2]), "buffer": bias.buffer,
                        "values": np.frombuffer(data, np.int32).copy(),
                        "scale": np.asarray(bias.quantization.scale), "output": int(op.outputs[0]),
                        "out_scale": graph.subgraph.tensors[int(op.outputs[0])].quantization.scale[0]})
    return out


def _plant(flatbuffer: bytes, conv: int, channel: int, steps: float) -> bytes:
    """``flatbuffer`` with convolution ``conv``'s bias on ``channel`` raised by ``steps`` of its output's int8 step
    (given a buffer of its own: equal constants may share one)."""
    model = read_model(flatbuffer)
    graph, info = Graph.of(model), _convs(flatbuffer)[conv]
    values = info["values"].copy()
    values[channel] += round(float(steps * info["out_scale"] / info["scale"][channel]))
    graph.private_buffer(info["bias"])
    graph.set_values(info["bias"], values)
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
    clean, count = litert_bias.correct_biases(quantized, flat, images)
    assert count == 3  # every level, the graph output's convolution included
    channel = _busiest_channel(0)
    planted = _plant(quantized, conv=0, channel=channel, steps=12.0)
    fixed, _ = litert_bias.correct_biases(planted, flat, images)
    before, after, baseline = _convs(planted), _convs(fixed), _convs(clean)
    planted_units = before[0]["values"][channel] - _convs(quantized)[0]["values"][channel]
    # the first convolution's planted channel comes back to where the clean graph's correction put it
    assert abs(int(after[0]["values"][channel]) - int(baseline[0]["values"][channel])) < 0.15 * planted_units
    # downstream layers see the planted shift (a positive control: corrected all at once, they would move for it)...
    shift_seen = np.abs(_mean_error(planted, flat, held_out) - _mean_error(quantized, flat, held_out)).max()
    assert shift_seen > 2 * _convs(quantized)[-1]["out_scale"]
    # ...but corrected in order they end where the clean graph's correction put them, and so do the outputs
    for a, b in zip(after[1:], baseline[1:], strict=True):
        assert np.abs((a["values"] - b["values"]) * a["scale"]).max() < 0.25 * shift_seen
    assert np.abs(_mean_error(fixed, flat, held_out) - _mean_error(clean, flat, held_out)).max() < 0.25 * shift_seen


@pytest.mark.parametrize("conv", [1, 2])
def test_correction_lowers_the_output_error_of_a_shifted_graph(graphs, conv):
    flat, quantized = graphs
    channel = _busiest_channel(1) if conv == 1 else 5
    planted = _plant(quantized, conv=conv, channel=channel, steps=-8.0)
    held_out = _images(6)
    error = np.abs(_mean_error(planted, flat, held_out)).max()
    assert error > 2 * np.abs(_mean_error(quantized, flat, held_out)).max()  # the plant shows at the output
    fixed, _ = litert_bias.correct_biases(planted, flat, _images(8))
    assert np.abs(_mean_error(fixed, flat, held_out)).max() < 0.5 * error


def test_the_mean_of_an_output_clipped_at_int8_limits_is_restored(graphs):
    """Values clipped at 127 count: the layers downstream read them as they are, so the correction aims at the mean
    of the clipped output (which clipping pulled down), not at the unclipped values alone."""
    flat, quantized = graphs
    model = read_model(quantized)
    first = _convs(quantized)[0]
    quant = model.subgraphs[0].tensors[first["output"]].quantization
    quant.scale = list(np.asarray(quant.scale) / 2)  # half the range: the larger values clip at 127
    narrow = write_model(model)
    fixed, _ = litert_bias.correct_biases(narrow, flat, _images(8))
    reference = tracing_interpreter(flat, 1)
    name = model.subgraphs[0].tensors[first["output"]].name.decode()
    index = {d["name"]: d["index"] for d in reference.get_tensor_details()}[name]
    errors = {}
    for tag, fb in (("narrow", narrow), ("fixed", fixed)):
        interp, diffs, clipped = tracing_interpreter(fb, 1), [], []
        for x in _images(6):
            run_batch(interp, x)
            run_batch(reference, x)
            q = interp.get_tensor(first["output"])
            y = (q.astype(np.float32) - quant.zeroPoint[0]) * quant.scale[0]
            diffs.append((y - reference.get_tensor(index)).reshape(-1, q.shape[-1]).mean(axis=0))
            clipped.append(np.mean(q == 127))
        errors[tag] = np.abs(np.mean(diffs, axis=0)) / quant.scale[0]  # per channel, in int8 steps
        if tag == "narrow":
            assert np.mean(clipped) > 0.01  # the case this test is about: values do clip
    # clipped channels cannot come all the way back (a larger bias does not raise a value stuck at 127), but no
    # channel gets worse and the worst one gets better
    assert errors["narrow"].max() > 2 and errors["fixed"].max() < 0.9 * errors["narrow"].max()
    assert np.all(errors["fixed"] <= errors["narrow"] + 0.5)


def test_convolutions_sharing_a_bias_buffer_are_corrected_each_on_its_own():
    wa = RNG.normal(0, 0.5, (3, 3, 3, 8)).astype(np.float32)
    wb = wa[::-1, ::-1].copy()  # the same weight scales: the two zero biases quantise to one shared buffer

    @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32)])
    def pair(x: tf.Tensor) -> tf.Tensor:
        return tf.nn.relu(tf.nn.conv2d(x, wa, 1, "SAME")) + tf.nn.conv2d(x, wb, 1, "SAME")

    images = _images(8)
    flat, quantized = _quantize(pair, images)
    convs = _convs(quantized)
    assert len(convs) == 2 and convs[0]["buffer"] == convs[1]["buffer"]  # the case this test is about
    fixed, count = litert_bias.correct_biases(quantized, flat, images)
    after = _convs(fixed)
    assert count == 2 and after[0]["buffer"] != after[1]["buffer"]
    assert not np.array_equal(after[0]["values"], after[1]["values"])  # one correction did not overwrite the other


def test_nothing_to_correct_leaves_the_graph_and_the_result_is_deterministic(graphs):
    flat, quantized = graphs
    assert litert_bias.correct_biases(flat, flat, _images(2)) == (flat, 0)  # a float graph has no int8 convolution
    assert litert_bias.correct_biases(quantized, flat, []) == (quantized, 0)
    images = _images(4)
    assert litert_bias.correct_biases(quantized, flat, images) == litert_bias.correct_biases(quantized, flat, images)
