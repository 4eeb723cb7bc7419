"""Preparing a float graph for int8 (`detectcrop.litert_prequant`): the rewrites change no float output, equalisation
evens out the channels' ranges, percentile ranges ignore outliers, and the offline detector's int8 graph has only
ops XNNPACK runs in int8."""

from __future__ import annotations

import collections

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

import tensorflow as tf
from detectcrop.litert import make_interpreter
from detectcrop.tflite_graph import read_model

from detectcrop import litert_prequant

RNG = np.random.default_rng(0)


def _const(*shape: int, scale: float = 0.5) -> tf.Tensor:
    return tf.constant(RNG.normal(0, scale, shape).astype(np.float32))


def _convert(fn) -> bytes:
    return tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn).convert()


def _run(flatbuffer: bytes, x: np.ndarray) -> np.ndarray:
    interp = make_interpreter(flatbuffer, 1)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return np.concatenate([interp.get_tensor(d["index"]).ravel() for d in interp.get_output_details()])


def _ops(flatbuffer: bytes) -> collections.Counter:
    return collections.Counter(op["op_name"] for op in make_interpreter(flatbuffer, 1)._get_ops_details())


def _images(n: int = 6) -> list[np.ndarray]:
    return [RNG.uniform(0, 1, (1, 16, 16, 3)).astype(np.float32) for _ in range(n)]


# channel gains from 0.05 to 20: one int8 scale for the depthwise output would crush the small channels
GAINS = np.geomspace(0.05, 20, 8).astype(np.float32)
W_IN, DW, DW_BIAS = _const(3, 3, 3, 8), _const(3, 3, 8, 1) * GAINS[None, None, :, None], _const(8) * GAINS
W_OUT, W_SE1, W_SE2, W_OUT2 = _const(1, 1, 8, 6), _const(1, 1, 8, 4), _const(1, 1, 4, 8), _const(1, 1, 8, 5)
W_CAT = _const(1, 1, 8, 8)


@tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32)])
def _blocks(x: tf.Tensor) -> dict[str, tf.Tensor]:
    """A depthwise convolution read by a 1x1 convolution and by a squeeze-excite block, then a ReLU after a
    concatenation of a convolution and an upsampled map (a CenterNet head's pattern)."""
    a = tf.nn.relu(tf.nn.conv2d(x, W_IN, 1, "SAME"))
    d = tf.nn.relu(tf.nn.depthwise_conv2d(a, DW, [1, 1, 1, 1], "SAME") + DW_BIAS)
    plain = tf.nn.conv2d(d, W_OUT, 1, "SAME")
    gate = tf.sigmoid(tf.nn.conv2d(tf.nn.relu(tf.nn.conv2d(tf.reduce_mean(d, [1, 2], keepdims=True), W_SE1, 1,
                                                            "SAME")), W_SE2, 1, "SAME"))
    excited = tf.nn.conv2d(d * gate, W_OUT2, 1, "SAME")
    small = tf.nn.conv2d(tf.nn.avg_pool2d(a, 2, 2, "VALID"), W_CAT, 1, "SAME")
    head = tf.nn.relu(tf.concat([tf.nn.conv2d(a, W_CAT, 1, "SAME"), tf.image.resize(small, (16, 16))], -1))
    return {"plain": plain, "excited": excited, "head": head}


def test_relu_as_depthwise_keeps_the_values():
    flatbuffer = _convert(_blocks)
    rewritten, count = litert_prequant.relu_as_depthwise(flatbuffer)
    before, after = _ops(flatbuffer), _ops(rewritten)
    assert count == before["RELU"] > 0 and after["RELU"] == 0
    assert after["DEPTHWISE_CONV_2D"] == before["DEPTHWISE_CONV_2D"] + count
    for x in _images(3):
        np.testing.assert_allclose(_run(rewritten, x), _run(flatbuffer, x), rtol=1e-6, atol=1e-6)
    assert litert_prequant.relu_as_depthwise(rewritten) == (rewritten, 0)
    # no operator code left unused (TensorFlow's calibrator refuses a model with one: RELU, once every ReLU went)
    model = read_model(rewritten)
    assert {op.opcodeIndex for op in model.subgraphs[0].operators} == set(range(len(model.operatorCodes)))
    from tensorflow.lite.python.optimize import calibrator

    calibrator.Calibrator(rewritten)


def _depthwise_peaks(flatbuffer: bytes, images: list[np.ndarray]) -> np.ndarray:
    """Per-channel largest value of the (first) depthwise convolution's output over ``images``."""
    interp = litert_prequant.tracing_interpreter(flatbuffer, 1)
    (op,) = [o for o in interp._get_ops_details() if o["op_name"] == "DEPTHWISE_CONV_2D"][:1]
    peak = 0
    for x in images:
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
        peak = np.maximum(peak, np.abs(interp.get_tensor(int(op["outputs"][0]))).max(axis=(0, 1, 2)))
    return peak


def test_equalisation_evens_out_channels_and_changes_no_output():
    flatbuffer = _convert(_blocks)
    images = _images()
    equalized, pairs = litert_prequant.equalize(flatbuffer, images)
    assert pairs == 1  # the depthwise convolution feeding a 1x1 convolution and a squeeze-excite block
    for x in _images(3):
        np.testing.assert_allclose(_run(equalized, x), _run(flatbuffer, x), rtol=1e-4, atol=1e-5)
    before, after = _depthwise_peaks(flatbuffer, images), _depthwise_peaks(equalized, images)
    live = before > 0  # a channel the ReLU always zeroes has no range to even out
    assert live.sum() >= 4 and np.array_equal(after > 0, live)
    spread = lambda peaks: peaks[live].max() / peaks[live].min()  # noqa: E731
    assert spread(after) < 0.5 * spread(before)


@pytest.mark.parametrize("where", ["after the depthwise", "after the gating"])
def test_equalisation_leaves_a_non_homogeneous_activation_alone(where):
    """ReLU6 clips at 6: scaling a channel before it would move the clip. The same graph with ReLU is equalised."""

    def graph(act):
        @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32)])
        def fn(x: tf.Tensor) -> tf.Tensor:
            d = tf.nn.depthwise_conv2d(tf.nn.conv2d(x, W_IN, 1, "SAME"), DW, [1, 1, 1, 1], "SAME")
            if where == "after the depthwise":
                return tf.nn.conv2d(act(d), W_OUT, 1, "SAME")
            gate = tf.sigmoid(tf.nn.conv2d(tf.nn.relu(tf.nn.conv2d(tf.reduce_mean(d, [1, 2], keepdims=True), W_SE1,
                                                                    1, "SAME")), W_SE2, 1, "SAME"))
            return tf.nn.conv2d(act(d * gate), W_OUT, 1, "SAME")

        return _convert(fn)

    clipped = graph(tf.nn.relu6)
    assert litert_prequant.equalize(clipped, _images()) == (clipped, 0)
    assert litert_prequant.equalize(graph(tf.nn.relu), _images())[1] == 1


def test_percentile_ranges_ignore_outliers_but_keep_what_the_float_part_reads():
    from tensorflow.lite.python.optimize import calibrator

    @tf.function(input_signature=[tf.TensorSpec([1, 64, 64, 32], tf.float32)])
    def two_convs(x: tf.Tensor) -> tf.Tensor:
        hidden = tf.nn.relu(tf.nn.conv2d(x, tf.eye(32, batch_shape=[1, 1]), 1, "SAME"))  # 131072 values
        return tf.nn.conv2d(hidden, tf.eye(32, batch_shape=[1, 1]), 1, "SAME")

    images = [RNG.uniform(0, 1, (1, 64, 64, 32)).astype(np.float32) for _ in range(4)]
    images[0][0, 5, 5, 3] = 1000.0  # one outlying value
    calibrated = calibrator.Calibrator(_convert(two_convs)).calibrate(lambda: ([x] for x in images))

    def ranges(flatbuffer: bytes) -> dict[str, tuple[float, float]]:
        model = read_model(flatbuffer)
        return {t.name.decode(): (t.quantization.min[0], t.quantization.max[0]) for t in model.subgraphs[0].tensors
                if t.quantization is not None and t.quantization.min is not None and len(t.quantization.min) == 1
                and int(np.prod(t.shape)) >= litert_prequant.PERCENTILE_MIN_SIZE}

    before = ranges(calibrated)
    assert len(before) >= 2 and max(hi for _, hi in before.values()) >= 1000
    kept = min(before, key=len)  # any one tensor may be kept whole
    narrowed, count = litert_prequant.percentile_ranges(calibrated, images, keep=lambda name: name == kept)
    after = ranges(narrowed)
    assert count == len(before) - 1 and after[kept] == before[kept]
    for name in set(before) - {kept}:  # the values are uniform in [0, 1] but for the outlier
        assert 0.99 <= after[name][1] <= before[name][1] and (before[name][1] < 2 or after[name][1] < 2)


def test_the_stem_is_the_highest_resolution():
    from detectcrop.litert_int8 import stem_nodes

    flatbuffer = _convert(_blocks)  # every op at 16x16 but the pooled branch's convolution (8x8)
    interp = make_interpreter(flatbuffer, 1)
    shapes = {t["name"]: tuple(t["shape"]) for t in interp.get_tensor_details()}
    stem = stem_nodes(flatbuffer)
    assert stem and all(shapes[name][1:3] == (16, 16) for name in stem)
    first_conv = next(op for op in interp._get_ops_details() if op["op_name"] == "CONV_2D")
    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    assert names[int(first_conv["outputs"][0])] in stem
    small = [t["name"] for t in interp.get_tensor_details()
             if len(t["shape"]) == 4 and tuple(t["shape"][1:3]) == (8, 8)]
    assert small and not set(small) & set(stem)


def test_equalisation_and_ranges_take_inputs_of_any_size():
    """A dynamic-shape graph (a SavedModel that converts as it is) is measured on calibration photos of several
    sizes."""
    from tensorflow.lite.python.optimize import calibrator

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32)])
    def dynamic(x: tf.Tensor) -> tf.Tensor:
        d = tf.nn.relu(tf.nn.depthwise_conv2d(tf.nn.conv2d(x, W_IN, 1, "SAME"), DW, [1, 1, 1, 1], "SAME") + DW_BIAS)
        return tf.nn.conv2d(d, W_OUT, 1, "SAME")

    flatbuffer = _convert(dynamic)
    images = [RNG.uniform(0, 1, (1, h, w, 3)).astype(np.float32) for h, w in ((128, 160), (96, 120), (128, 160))]
    equalized, pairs = litert_prequant.equalize(flatbuffer, images)
    assert pairs == 1
    interp_a, interp_b = make_interpreter(flatbuffer, 1), make_interpreter(equalized, 1)
    for interp in (interp_a, interp_b):
        litert_prequant.run_batch(interp, images[1])
    np.testing.assert_allclose(interp_b.get_tensor(interp_b.get_output_details()[0]["index"]),
                               interp_a.get_tensor(interp_a.get_output_details()[0]["index"]), rtol=1e-4, atol=1e-5)
    calibrated = calibrator.Calibrator(equalized).calibrate(lambda: ([x] for x in images))
    assert litert_prequant.percentile_ranges(calibrated, images, keep=lambda name: False)[1] >= 1
