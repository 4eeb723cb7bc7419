"""The TF.js graph-model loader on a small model written here in the TF.js format (fused ops, quantised weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from detectcrop.tfjs import TfjsFormatError, load_graph_model
from google.protobuf import json_format
from tensorflow.core.framework import graph_pb2


def _node(graph, name, op, inputs=(), **attrs):
    node = graph.node.add(name=name, op=op)
    node.input.extend(inputs)
    for key, value in attrs.items():
        attr = node.attr[key]
        if isinstance(value, tf.DType):
            attr.type = value.as_datatype_enum
        elif isinstance(value, bytes):
            attr.s = value
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            attr.list.s.extend(value)
        elif isinstance(value, list):
            attr.list.i.extend(value)
        elif isinstance(value, float):
            attr.f = value
    return node


def _const(graph, name, dtype=tf.float32):
    node = _node(graph, name, "Const", dtype=dtype)
    node.attr["value"].tensor.dtype = dtype.as_datatype_enum
    return node


def _write_model(tmp_path, rng):
    w = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    b_q = rng.integers(0, 256, size=4).astype(np.uint8)  # uint8-quantised: value = q * scale + min
    dw = rng.normal(size=(3, 3, 4, 1)).astype(np.float16)  # float16-quantised
    db = rng.normal(size=4).astype(np.float32)
    scale, minimum = 0.01, -1.0

    g = graph_pb2.GraphDef()
    _node(g, "image", "Placeholder", dtype=tf.float32)
    for name in ("w", "b", "dw", "db"):
        _const(g, name)
    conv_attrs = dict(T=tf.float32, strides=[1, 1, 1, 1], padding=b"SAME", data_format=b"NHWC",
                      dilations=[1, 1, 1, 1])
    _node(g, "conv", "_FusedConv2D", ["image", "w", "b"], fused_ops=[b"BiasAdd", b"Relu6"], **conv_attrs)
    _node(g, "dconv", "FusedDepthwiseConv2dNative", ["conv", "dw", "db"], fused_ops=[b"BiasAdd", b"Relu"],
          **conv_attrs)
    _node(g, "out", "Identity", ["dconv"], T=tf.float32)

    blob = w.tobytes() + b_q.tobytes() + dw.tobytes() + db.tobytes()
    (tmp_path / "group1-shard1of1.bin").write_bytes(blob)
    manifest = [{"paths": ["group1-shard1of1.bin"], "weights": [
        {"name": "w", "shape": list(w.shape), "dtype": "float32"},
        {"name": "b", "shape": [4], "dtype": "float32",
         "quantization": {"dtype": "uint8", "scale": scale, "min": minimum}},
        {"name": "dw", "shape": list(dw.shape), "dtype": "float32", "quantization": {"dtype": "float16"}},
        {"name": "db", "shape": [4], "dtype": "float32"},
    ]}]
    spec = {
        "format": "graph-model",
        "modelTopology": json_format.MessageToDict(g),
        "weightsManifest": manifest,
        "signature": {"inputs": {"image": {"name": "image:0"}}, "outputs": {"out": {"name": "out:0"}}},
    }
    path = tmp_path / "model.json"
    path.write_text(json.dumps(spec))
    b = b_q.astype(np.float32) * np.float32(scale) + np.float32(minimum)
    return path, (w, b, dw.astype(np.float32), db)


def test_fused_ops_and_quantised_weights_match_plain_tensorflow(tmp_path):
    rng = np.random.default_rng(0)
    path, (w, b, dw, db) = _write_model(tmp_path, rng)
    fn, inputs, outputs = load_graph_model(path)
    assert inputs == ["image:0"] and outputs == ["out"]
    x = rng.normal(size=(1, 8, 8, 3)).astype(np.float32)
    got = fn(tf.constant(x))["out"].numpy()
    y = tf.nn.relu6(tf.nn.conv2d(x, w, 1, "SAME") + b)
    want = tf.nn.relu(tf.nn.depthwise_conv2d(y, dw, [1, 1, 1, 1], "SAME") + db).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_truncated_weights_are_reported(tmp_path):
    path, _ = _write_model(tmp_path, np.random.default_rng(0))
    shard = tmp_path / "group1-shard1of1.bin"
    shard.write_bytes(shard.read_bytes()[:-8])
    with pytest.raises(TfjsFormatError, match="truncated"):
        load_graph_model(path)


def test_not_a_graph_model(tmp_path):
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"format": "layers-model"}))
    with pytest.raises(TfjsFormatError, match=r"not a TF\.js graph model"):
        load_graph_model(path)
