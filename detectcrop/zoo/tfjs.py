"""Load a TensorFlow.js graph model (``model.json`` + weight shards) as a TensorFlow concrete function.

No tensorflowjs dependency: the topology is a GraphDef in JSON, the weights are raw little-endian shards described by
``weightsManifest`` (optionally uint8/uint16/float16 quantised). TF.js' fused kernels (``_FusedConv2D``,
``FusedDepthwiseConv2dNative``) are split back into the plain ops core TensorFlow runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.framework import graph_pb2

_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_ACTIVATIONS = ("Relu", "Relu6", "Elu", "Sigmoid", "Tanh")
_CONV_ATTRS = ("strides", "padding", "data_format", "dilations", "T", "explicit_paddings")


class TfjsFormatError(ValueError):
    """The files are not a TF.js graph model this loader understands."""


def read_weights(model_dir: Path, manifest: list[dict]) -> dict[str, np.ndarray]:
    """Decode every weight listed in ``weightsManifest``, dequantising where needed."""
    out: dict[str, np.ndarray] = {}
    for group in manifest:
        buf = b"".join((model_dir / p).read_bytes() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            shape = [int(s) for s in spec["shape"]]
            count = int(np.prod(shape)) if shape else 1
            if spec["dtype"] not in _DTYPES:
                raise TfjsFormatError(f"unsupported weight dtype {spec['dtype']!r} for {spec['name']}")
            quant = spec.get("quantization")
            stored = np.dtype(quant["dtype"]) if quant else np.dtype(_DTYPES[spec["dtype"]])
            nbytes = count * stored.itemsize
            if offset + nbytes > len(buf):
                raise TfjsFormatError(f"weight shards too short for {spec['name']} (truncated file?)")
            raw = np.frombuffer(buf, dtype=stored.newbyteorder("<"), count=count, offset=offset)
            offset += nbytes
            if quant and quant["dtype"] != "float16":
                values = raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])
            else:
                values = raw.astype(np.float32) if quant else raw.copy()
            out[spec["name"]] = values.astype(_DTYPES[spec["dtype"]]).reshape(shape)
    return out


def split_fused_ops(graph_def: graph_pb2.GraphDef) -> graph_pb2.GraphDef:
    """Rewrite TF.js fused convolutions into Conv2D/DepthwiseConv2dNative followed by BiasAdd and activations."""
    new = graph_pb2.GraphDef()
    new.versions.CopyFrom(graph_def.versions)
    for node in graph_def.node:
        if node.op not in ("FusedDepthwiseConv2dNative", "_FusedConv2D"):
            new.node.add().CopyFrom(node)
            continue
        fused = [s.decode() for s in node.attr["fused_ops"].list.s]
        conv = new.node.add()
        conv.name = node.name if not fused else f"{node.name}/__conv"
        conv.op = "DepthwiseConv2dNative" if node.op == "FusedDepthwiseConv2dNative" else "Conv2D"
        conv.input.extend(node.input[:2])
        for key in _CONV_ATTRS:
            if key in node.attr:
                conv.attr[key].CopyFrom(node.attr[key])
        if conv.op == "DepthwiseConv2dNative" and not conv.attr["explicit_paddings"].list.i:
            del conv.attr["explicit_paddings"]
        last, extra = conv.name, list(node.input[2:])
        for i, op in enumerate(fused):
            step = new.node.add()
            step.name = node.name if i == len(fused) - 1 else f"{node.name}/__{op}"
            step.attr["T"].CopyFrom(node.attr["T"])
            if op == "BiasAdd":
                step.op = "BiasAdd"
                step.input.extend([last, extra.pop(0)])
                step.attr["data_format"].CopyFrom(node.attr["data_format"])
            elif op in _ACTIVATIONS:
                step.op = op
                step.input.append(last)
            elif op == "LeakyRelu":
                step.op = op
                step.input.append(last)
                step.attr["alpha"].f = node.attr["leakyrelu_alpha"].f
            else:
                raise TfjsFormatError(f"unsupported fused op {op!r} in {node.name}")
            last = step.name
    return new


def load_graph_model(model_json: str | Path) -> tuple[Callable[..., dict[str, tf.Tensor]], list[str], list[str]]:
    """Load ``model.json`` and its shards; return ``(fn, input_names, output_keys)``.

    ``fn(*inputs)`` returns a dict keyed by the signature's output names.
    """
    model_json = Path(model_json)
    spec = json.loads(model_json.read_text())
    if "modelTopology" not in spec or "weightsManifest" not in spec:
        raise TfjsFormatError(f"{model_json} is not a TF.js graph model (no modelTopology / weightsManifest)")
    topology = dict(spec["modelTopology"])
    topology.pop("library", None)
    graph_def = json_format.ParseDict(topology, graph_pb2.GraphDef())
    weights = read_weights(model_json.parent, spec["weightsManifest"])
    for node in graph_def.node:
        node.device = ""
        if node.name in weights:
            value = weights[node.name]
            if node.attr["dtype"].type:  # TF.js stores int64 as int32: restore the graph's dtype
                value = value.astype(tf.dtypes.as_dtype(node.attr["dtype"].type).as_numpy_dtype)
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
    graph_def = split_fused_ops(graph_def)

    def _import() -> None:
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(_import, [])
    graph = wrapped.graph

    def tensor(name: str) -> tf.Tensor:
        return graph.get_tensor_by_name(name if ":" in name else f"{name}:0")

    signature = spec["signature"]
    inputs = [v["name"] for v in signature["inputs"].values()]
    outputs = {k: tensor(v["name"]) for k, v in signature["outputs"].items()}
    fn = wrapped.prune([tensor(n) for n in inputs], outputs)
    return fn, inputs, list(outputs)
