"""Static-shape LiteRT graphs for detectors that squash every input to one square size (the offline CenterNet).

Such a SavedModel starts with ``Cast(uint8 -> float)`` then ``ResizeBilinear`` to a constant ``S x S`` (half-pixel
centres, no corner alignment). The graph is frozen and pruned at the resize's output, so the LiteRT model takes float
``[1, S, S, 3]``; `resize_like_tf` does the same resize outside (OpenCV's bilinear on float32 uses the same sampling
grid), and boxes stay normalised, so they map back to the original pixels exactly. One static shape means one XNNPACK
plan per thread whatever the photos' sizes (re-planning a dynamic-shape interpreter for a new size costs more than an
inference), and int8's representative data sees the shape it will run.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

logger = logging.getLogger(__name__)


def resize_like_tf(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``[1, H, W, 3]`` -> float32 ``[1, h, w, 3]``, as ``tf.image.resize(tf.cast(x, tf.float32), size)``."""
    image = np.asarray(images[0], dtype=np.float32)
    if image.shape[:2] == tuple(size):
        return image[None]
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)[None]


def _consumers(graph_def: Any, name: str) -> list[Any]:
    """The nodes reading ``name``'s output, looking through Identity nodes (function-call boundaries)."""
    found = []
    for node in graph_def.node:
        if any(i.split(":")[0].lstrip("^") == name for i in node.input):
            found.extend(_consumers(graph_def, node.name) if node.op == "Identity" else [node])
    return found


@dataclass(frozen=True)
class FixedGraph:
    """A SavedModel's frozen ``serving_default`` that can be fed at its resize's output (see the module doc)."""

    wrapped: Any  #: the frozen graph as a wrapped function (for ``prune``)
    graph_def: Any
    resized: str  #: the resize's output tensor: the new input, float ``[1, S, S, 3]``
    size: tuple[int, int]
    output_keys: list[str]  #: the signature's output names, key-sorted like ``output_tensors``
    output_tensors: list[str]

    def function(self, fetches: dict[str, str]) -> tuple[Any, Any]:
        """``(concrete function float [1, S, S, 3] -> {name: tensor}, object to keep alive)`` for tensor names."""
        import tensorflow as tf

        graph = self.wrapped.graph
        pruned = self.wrapped.prune(feeds=[graph.get_tensor_by_name(self.resized)],
                                    fetches=[graph.get_tensor_by_name(t) for t in fetches.values()])
        keys = list(fetches)

        @tf.function(input_signature=[tf.TensorSpec([1, *self.size, 3], tf.float32, name="resized")])
        def fixed(resized: tf.Tensor) -> dict[str, tf.Tensor]:
            return dict(zip(keys, pruned(resized), strict=True))

        return fixed.get_concrete_function(), pruned


def fixed_size_graph(saved_model: str | os.PathLike) -> FixedGraph | None:
    """The frozen graph when the model's ``serving_default`` begins with a cast and a constant-size bilinear resize
    of its only input, else ``None``."""
    import tensorflow as tf
    from tensorflow.python.framework import tensor_util
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    signature = tf.saved_model.load(os.fspath(saved_model)).signatures["serving_default"]
    frozen = convert_variables_to_constants_v2(signature)
    graph_def = frozen.graph.as_graph_def()
    nodes = {n.name: n for n in graph_def.node}
    placeholders = [n for n in graph_def.node if n.op == "Placeholder"]
    if len(placeholders) != 1:
        return None
    first = _consumers(graph_def, placeholders[0].name)
    if len(first) != 1 or first[0].op != "Cast":
        return None
    second = _consumers(graph_def, first[0].name)
    if len(second) != 1 or second[0].op != "ResizeBilinear":
        return None
    resize = second[0]
    size_node = nodes.get(resize.input[1].split(":")[0])
    if (size_node is None or size_node.op != "Const" or resize.attr["align_corners"].b
            or not resize.attr["half_pixel_centers"].b):
        return None
    size = tuple(int(v) for v in tensor_util.MakeNdarray(size_node.attr["value"].tensor))
    wrapped = tf.compat.v1.wrap_function(lambda: tf.graph_util.import_graph_def(graph_def, name=""), [])
    return FixedGraph(wrapped, graph_def, f"{resize.name}:0", size, sorted(signature.structured_outputs),
                      [t.name for t in frozen.outputs])  # frozen.outputs follow the key-sorted outputs


def fixed_size_function(saved_model: str | os.PathLike) -> tuple[Any, Any, tuple[int, int]] | None:
    """``(concrete function float [1, S, S, 3] -> outputs, object to keep alive, (S, S))`` for a model that
    `fixed_size_graph` accepts, else ``None``."""
    graph = fixed_size_graph(saved_model)
    if graph is None:
        return None
    function, keep_alive = graph.function(dict(zip(graph.output_keys, graph.output_tensors, strict=True)))
    return function, keep_alive, graph.size
