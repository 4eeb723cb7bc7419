"""The offline CenterNet's last layer and decoding in NumPy after a LiteRT trunk, for the requested classes only.

The CenterNet graph (`detectcrop.zoo.centernet`) ends in an 80-class heatmap (a 1x1 convolution over 128 features at
128x128), a sigmoid, a 3x3 max-pool peak test and a top-100 over all 128 x 128 x 80 values, then box arithmetic:
about a sixth of a detector pass, nearly all of it for classes nobody asked for. Beside the whole graph, the LiteRT
conversion keeps its trunk, cut at the features and the box-size map (`trunk_function`); a call about a few classes
runs the trunk and `CenterNetHead.decode` does the rest for those classes with the same arithmetic: their heatmap
channels, the same peak test, the top 100 (ties to the lower index, as TensorFlow's top-k) and the same boxes.

For the requested classes the result holds every detection the whole-graph decoding keeps (the whole graph's top
100 over all classes holds a class's peaks only down to its 100th value overall; restricted to that class, the top
100 reaches further down), and the same ones whenever the whole graph's 100th score is below the score threshold.
`Split.check` compares the NumPy decoding of every class with the graph's own at conversion time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: The cut, named by the suffix of the frozen graph's node names.
_FEATURES = "CenternetHead/centernet_cls_output/separable_conv2d/depthwise"
_LOGITS = "CenternetHead/centernet_cls_output/BiasAdd"
_WH = "tower_0/wh"
_POOL = "tower_0/max_pooling2d/MaxPool"
_TOPK = "tower_0/TopKV2"
_CLASS_MAP = "PartitionedCall/GatherV2"
HEAD_FILE = "head.npz"
TRUNK_FILE = "trunk.tflite"
#: Calls for more classes than this run the whole graph (its in-graph decoding is as fast as NumPy's by then).
MAX_SPLIT_CHANNELS = 8


@dataclass(frozen=True)
class CenterNetHead:
    """The class heatmap's 1x1 convolution and the decoding constants.

    ``weights`` ``(C, K)`` and ``bias`` ``(K,)`` map the features to K class logits; ``class_ids`` ``(K,)`` are the
    COCO ids of the K channels; boxes are ``stride`` input pixels per heatmap cell, normalised by ``input_size``.
    """

    weights: np.ndarray
    bias: np.ndarray
    class_ids: np.ndarray
    input_size: int
    stride: float
    pool: int = 3
    top_k: int = 100

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "wb") as f:
            np.savez(f, weights=self.weights, bias=self.bias, class_ids=self.class_ids,
                     scalars=np.array([self.input_size, self.stride, self.pool, self.top_k], np.float64))

    @classmethod
    def load(cls, path: str | os.PathLike) -> CenterNetHead:
        with np.load(path) as data:
            size, stride, pool, top_k = data["scalars"].tolist()
            return cls(data["weights"].astype(np.float32), data["bias"].astype(np.float32),
                       data["class_ids"].astype(np.float32), int(size), float(stride), int(pool), int(top_k))

    @classmethod
    def beside(cls, model: str | os.PathLike | bytes) -> CenterNetHead | None:
        """The head saved beside a ``.tflite`` file (`HEAD_FILE`), or ``None``."""
        if isinstance(model, bytes):
            return None
        path = Path(model).with_name(HEAD_FILE)
        return cls.load(path) if path.is_file() else None

    def channels(self, categories: Sequence[int] | None) -> np.ndarray:
        """The heatmap channels of COCO ids ``categories`` (``None``: all), ascending."""
        if categories is None:
            return np.arange(len(self.class_ids))
        return np.flatnonzero(np.isin(self.class_ids, np.asarray(list(categories), np.float32)))

    def decode(self, features: np.ndarray, wh: np.ndarray,
               categories: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """TF Hub detection outputs (batch of one) from the trunk's ``features`` ``[1, H, W, C]`` and box sizes
        ``wh`` ``[1, H, W, 4]`` (left, top, right, bottom distances in input pixels), for COCO ids ``categories``
        (``None``: every class)."""
        channels = self.channels(categories)
        if not len(channels):
            return self.empty()
        _, height, width, depth = features.shape
        flat = features.reshape(-1, depth)
        if len(channels) <= MAX_SPLIT_CHANNELS:  # NumPy's own loops (0.3 ms a class): BLAS worker threads would
            # spin on the cores the interpreters need
            columns = np.ascontiguousarray(self.weights[:, channels].T)  # a strided column is 4x slower
            logits = np.stack([np.einsum("nc,c->n", flat, column) for column in columns], axis=1)
            logits = logits.reshape(-1, len(channels)) + self.bias[channels]
        else:
            logits = flat @ self.weights[:, channels] + self.bias[channels]
        with np.errstate(over="ignore"):
            heat = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32).reshape(height, width, len(channels))
        heat *= heat == _max_pool(heat, self.pool)
        order = _top_k(heat.reshape(-1), self.top_k)
        scores = heat.reshape(-1)[order]
        channel, cell = order % len(channels), order // len(channels)
        y, x = cell // width, cell % width
        left, top, right, bottom = np.moveaxis(wh[0, y, x].astype(np.float32), -1, 0)
        cx, cy = x.astype(np.float32) * self.stride, y.astype(np.float32) * self.stride
        boxes = np.stack([cy - top, cx - left, cy + bottom, cx + right], axis=-1) / np.float32(self.input_size)
        return {
            "detection_boxes": np.clip(boxes, 0.0, 1.0)[None],
            "detection_scores": scores[None],
            "detection_classes": self.class_ids[channels][channel][None],
            "num_detections": np.array([len(order)], np.float32),
        }

    def empty(self) -> dict[str, np.ndarray]:
        """TF Hub detection outputs holding no detection."""
        return {"detection_boxes": np.zeros((1, 0, 4), np.float32), "detection_scores": np.zeros((1, 0), np.float32),
                "detection_classes": np.zeros((1, 0), np.float32), "num_detections": np.zeros(1, np.float32)}


def _max_pool(heat: np.ndarray, size: int) -> np.ndarray:
    """``size x size`` max-pool, stride 1, SAME padding (padding never wins), per channel."""
    before, after = size // 2, size - 1 - size // 2
    padded = np.pad(heat, ((before, after), (before, after), (0, 0)), constant_values=-np.inf)
    out = heat.copy()
    height, width = heat.shape[:2]
    for dy in range(size):
        for dx in range(size):
            np.maximum(out, padded[dy:dy + height, dx:dx + width], out=out)
    return out


def _top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest of non-negative ``values``, largest first, ties to the lower index (TensorFlow's
    ``top_k``). Only the positive values (the heatmap's peaks) are ranked; zeros fill in by index."""
    k = min(k, values.size)
    positive = np.flatnonzero(values > 0)
    if len(positive) >= k > 0:
        ranked = values[positive]
        kth = np.partition(ranked, len(ranked) - k)[len(ranked) - k]
        above = positive[ranked > kth]
        chosen = np.concatenate([above, positive[ranked == kth][: k - len(above)]])
    else:
        chosen = np.concatenate([positive, np.flatnonzero(values == 0)[: k - len(positive)]])
    return chosen[np.argsort(-values[chosen], kind="stable")]


@dataclass(frozen=True)
class Split:
    """The offline CenterNet cut at its features: the trunk as a concrete function (float ``[1, S, S, 3]`` ->
    ``{"features", "wh"}``), the head, and the graph's own decoding of trunk outputs (`reference`, for the check)."""

    function: Any
    keep_alive: Any
    head: CenterNetHead
    reference: Any

    def check(self, trunk_outputs: Sequence[dict[str, np.ndarray]]) -> str | None:
        """Why `CenterNetHead.decode` differs from the graph's decoding on these trunk outputs (``None``: agrees)."""
        for outputs in trunk_outputs:
            problem = check_split(self.reference(outputs["features"], outputs["wh"]),
                                  self.head.decode(outputs["features"], outputs["wh"]))
            if problem is not None:
                return problem
        return None


def trunk_function(graph: Any) -> Split | None:
    """The `Split` of a `detectcrop.runtime.fixed.FixedGraph` of the offline CenterNet; ``None`` for other graphs."""
    from tensorflow.python.framework import tensor_util

    nodes = {n.name: n for n in graph.graph_def.node}

    def find(suffix: str) -> Any:
        found = [n for name, n in nodes.items() if name.endswith(suffix)]
        return found[0] if len(found) == 1 else None

    def constant(name: str) -> np.ndarray | None:
        node = nodes.get(name.split(":")[0].lstrip("^"))
        while node is not None and node.op == "Identity":
            node = nodes.get(node.input[0].split(":")[0])
        return None if node is None or node.op != "Const" else tensor_util.MakeNdarray(node.attr["value"].tensor)

    features, logits, wh, pool, topk, class_map = (find(s) for s in (_FEATURES, _LOGITS, _WH, _POOL, _TOPK,
                                                                      _CLASS_MAP))
    if None in (features, logits, wh, pool, topk, class_map):
        return None
    conv = nodes.get(logits.input[0].split(":")[0])
    if conv is None or conv.op != "Conv2D" or conv.input[0].split(":")[0] != features.name:
        return None
    weights, bias = constant(conv.input[1]), constant(logits.input[1])
    class_ids, k = constant(class_map.input[0]), constant(topk.input[1])
    if any(v is None for v in (weights, bias, class_ids, k)) or weights.shape[:2] != (1, 1):
        return None
    size = graph.size[0]
    cut = {"features": f"{features.name}:0", "wh": f"{wh.name}:0"}
    function, keep_alive = graph.function(cut)
    height = int(function.structured_outputs["features"].shape[1])
    head = CenterNetHead(weights[0, 0].astype(np.float32), bias.astype(np.float32), class_ids.astype(np.float32),
                         size, size / height, int(pool.attr["ksize"].list.i[1]), int(k))
    tensors = graph.wrapped.graph.get_tensor_by_name
    decoding = graph.wrapped.prune(feeds=[tensors(cut["features"]), tensors(cut["wh"])],
                                   fetches=[tensors(t) for t in graph.output_tensors])

    def reference(features: np.ndarray, wh: np.ndarray) -> dict[str, np.ndarray]:
        import tensorflow as tf

        outputs = decoding(tf.constant(features), tf.constant(wh))
        return {k: np.asarray(v) for k, v in zip(graph.output_keys, outputs, strict=True)}

    return Split(function, keep_alive, head, reference)


def check_split(reference: dict[str, np.ndarray], split: dict[str, np.ndarray], min_score: float = 0.01) -> str | None:
    """Why the split decoding's outputs differ from the whole graph's on one image (``None``: they agree): the
    same scores (within 1e-4) and, for scores above ``min_score``, the same classes and boxes (within 1e-3)."""
    ref_scores, got_scores = np.asarray(reference["detection_scores"])[0], np.asarray(split["detection_scores"])[0]
    if ref_scores.shape != got_scores.shape:
        return f"{len(got_scores)} detections instead of {len(ref_scores)}"
    if not np.allclose(ref_scores, got_scores, atol=1e-4):
        return f"scores differ by up to {np.max(np.abs(ref_scores - got_scores)):.4g}"
    keep = ref_scores > min_score
    for key, atol in (("detection_classes", 0.0), ("detection_boxes", 1e-3)):
        a, b = np.asarray(reference[key])[0][keep], np.asarray(split[key])[0][keep]
        if not np.allclose(a, b, atol=atol):
            return f"{key} differ by up to {np.max(np.abs(a - b)):.4g}"
    return None
