"""Fusing three-op hard-swish into LiteRT's HARD_SWISH: the same outputs, fewer passes, unfoldable cases left alone,
and a fused graph that differs is not used."""

from __future__ import annotations

import collections
import logging
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from detectcrop import litert, litert_fuse

pytest.importorskip("ai_edge_litert")

#: 1/6 in half precision, as exported MobileNetV3 graphs spell the hard-swish's ``/ 6``.
SIXTH = np.float32(0.16662598)


def _hswish(x: tf.Tensor, sixth: np.float32 = SIXTH) -> tf.Tensor:
    return (x * sixth) * tf.nn.relu6(x + 3.0)


def _flatbuffer(tmp_path: Path, with_output_hswish: bool = False) -> bytes:
    """A small graph with the hard-swish read by a convolution, a depthwise convolution, a squeeze-excite block (MEAN
    and a gating MUL) and a residual ADD; optionally two whose scale cannot be folded: one that is a graph output,
    one whose residual branch is a convolution of the same tensor (its filter would need two scales)."""
    rng = np.random.default_rng(0)

    def weights(*shape: int) -> tf.Tensor:
        return tf.constant(rng.normal(0, 0.5, shape).astype(np.float32))

    w1, w2, w3, w_se1, w_se2, w4 = (weights(3, 3, 3, 8), weights(1, 1, 8, 8), weights(1, 1, 8, 8),
                                     weights(1, 1, 8, 4), weights(1, 1, 4, 8), weights(1, 1, 8, 6))
    dw, b1, b3 = weights(3, 3, 8, 1), weights(8), weights(8)

    @tf.function(input_signature=[tf.TensorSpec([1, 24, 24, 3], tf.float32)])
    def model(x: tf.Tensor) -> dict[str, tf.Tensor]:
        a = _hswish(tf.nn.conv2d(x, w1, 1, "SAME") + b1)  # read by a depthwise conv and a residual ADD
        b = tf.nn.depthwise_conv2d(a, dw, [1, 1, 1, 1], "SAME")
        c = tf.nn.conv2d(b, w2, 1, "SAME") + a  # the residual's other branch: a convolution
        d = _hswish(tf.nn.conv2d(c, w3, 1, "SAME") + b3)  # squeeze-excite
        gate = tf.sigmoid(tf.nn.conv2d(tf.nn.relu(tf.nn.conv2d(tf.reduce_mean(d, [1, 2], keepdims=True), w_se1, 1,
                                                                "SAME")), w_se2, 1, "SAME"))
        out = {"out": tf.nn.conv2d(d * gate, w4, 1, "SAME")}
        if with_output_hswish:
            out["raw"] = _hswish(tf.nn.conv2d(x, w1, 1, "SAME") * 0.5)
            e = _hswish(tf.nn.conv2d(x, w1 * 0.7, 1, "SAME"))  # the residual's convolution reads the same tensor
            out["residual"] = tf.nn.conv2d(tf.nn.conv2d(e, w2 * 0.9, 1, "SAME") + e, w4 * 1.1, 1, "SAME")
        return out

    module = tf.Module()
    module.model = model
    folder = tmp_path / f"saved_model_{int(with_output_hswish)}"
    tf.saved_model.save(module, str(folder), signatures={"serving_default": model})
    return tf.lite.TFLiteConverter.from_saved_model(str(folder)).convert()


def _ops(flatbuffer: bytes) -> collections.Counter:
    return collections.Counter(op["op_name"] for op in litert.bare_interpreter(flatbuffer)._get_ops_details())


def _run(flatbuffer: bytes, x: np.ndarray) -> dict[str, np.ndarray]:
    interp = litert.make_interpreter(flatbuffer, 1)
    runner = interp.get_signature_runner("serving_default")
    return {k: np.array(v) for k, v in runner(x=x).items()}


def test_fused_hard_swish_gives_the_same_outputs_with_fewer_ops(tmp_path):
    original = _flatbuffer(tmp_path)
    fused, count = litert_fuse.fuse_hard_swish(original)
    before, after = _ops(original), _ops(fused)
    assert count == 2 and after["HARD_SWISH"] == before["HARD_SWISH"] + 2
    assert after["MUL"] == before["MUL"] - 4 and after["ADD"] == before["ADD"] - 2
    x = np.random.default_rng(1).normal(0, 2, (1, 24, 24, 3)).astype(np.float32)
    ref, got = _run(original, x), _run(fused, x)
    scale = np.abs(ref["out"]).max()
    np.testing.assert_allclose(got["out"], ref["out"], atol=1e-5 * scale)


def test_a_hard_swish_whose_scale_cannot_be_folded_is_left_alone(tmp_path):
    original = _flatbuffer(tmp_path, with_output_hswish=True)
    fused, count = litert_fuse.fuse_hard_swish(original)
    assert count == 2  # the graph output and the residual read by its own branch keep their three ops
    x = np.random.default_rng(2).normal(0, 2, (1, 24, 24, 3)).astype(np.float32)
    ref, got = _run(original, x), _run(fused, x)
    np.testing.assert_array_equal(got["raw"], ref["raw"])
    np.testing.assert_array_equal(got["residual"], ref["residual"])
    np.testing.assert_allclose(got["out"], ref["out"], atol=1e-5 * np.abs(ref["out"]).max())


def test_a_graph_without_the_pattern_comes_back_unchanged(tmp_path):
    original = _flatbuffer(tmp_path)
    fused, _ = litert_fuse.fuse_hard_swish(original)
    assert litert_fuse.fuse_hard_swish(fused) == (fused, 0)


def test_the_offline_detector_is_served_fused():
    from detectcrop import zoo

    model = litert.converted_detector(zoo.ensure(zoo.OFFLINE_DETECTOR) / "saved_model")
    for path in (model, model.with_name("trunk.tflite")):
        assert _ops(Path(path).read_bytes())["HARD_SWISH"] > 0


def test_a_fused_graph_that_differs_is_not_used(tmp_path, monkeypatch, caplog):
    """The conversion compares the fused graph with the unfused one on check images and keeps the unfused one
    when they differ (here a fusion that forgets to fold its scale: off by 0.024% per hard-swish)."""
    original = _flatbuffer(tmp_path)
    assert litert.fuse_checked(original, "test model") != original
    monkeypatch.setattr(litert_fuse, "_fold", lambda graph, tensor, plan, seen: True)
    with caplog.at_level(logging.WARNING, logger="detectcrop.litert"):
        kept = litert.fuse_checked(original, "test model")
    assert kept == original
    assert "hard-swish not fused (out differs" in caplog.text


def test_op_profile_times_every_op_of_a_graph(tmp_path):
    """`bench.litert_op_profile` turns each op into a one-op model that runs: every op of the fused graph is timed,
    and the report names the op types with their counts."""
    from bench.litert_op_profile import op_times, report

    fused, _ = litert_fuse.fuse_hard_swish(_flatbuffer(tmp_path))
    rows, whole = op_times(fused, threads=1, rounds=2)
    counts = collections.Counter(r["op"] for r in rows)
    assert counts["HARD_SWISH"] == 2 and counts["CONV_2D"] >= 4 and counts["DEPTHWISE_CONV_2D"] == 1
    assert whole > 0 and all(r["ms"] is not None and r["ms"] >= 0 for r in rows)
    path = tmp_path / "model.tflite"
    path.write_bytes(fused)
    text = "\n".join(report(path, threads=1, rounds=2, top=3))
    assert "| HARD_SWISH | 2 |" in text and f"its {len(rows)} ops timed alone" in text
