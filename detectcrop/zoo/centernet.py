"""Convert the TF.js MobileNetV3-CenterNet (COCO-80) into a SavedModel with the TF Hub object-detection contract.

The exported ``__call__`` (also the ``serving_default`` signature) takes uint8 ``[1, H, W, 3]`` and returns
``detection_boxes`` (normalised ymin, xmin, ymax, xmax), ``detection_classes`` (COCO 90-id map, float),
``detection_scores`` and ``num_detections``, so one adapter serves it and every TF Hub detector.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from detectcrop.coco import COCO80_TO_COCO91
from detectcrop.zoo.tfjs import load_graph_model

INPUT_SIZE = 512


class CenterNetModule(tf.Module):
    """The TF.js graph behind the detector contract: resize to 512x512 (pixels stay 0..255), remap classes."""

    def __init__(self, graph_fn, output_key: str = "tower_0/detections") -> None:
        super().__init__()
        self._graph_fn = graph_fn
        self._output_key = output_key
        self._coco_ids = tf.constant(COCO80_TO_COCO91, dtype=tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8, name="input_tensor")])
    def __call__(self, input_tensor: tf.Tensor) -> dict[str, tf.Tensor]:
        x = tf.image.resize(tf.cast(input_tensor, tf.float32), (INPUT_SIZE, INPUT_SIZE))
        det = self._graph_fn(x)[self._output_key][0]  # [100, 6]: x1, y1, x2, y2 (512 px), score, class index
        boxes = tf.clip_by_value(tf.stack([det[:, 1], det[:, 0], det[:, 3], det[:, 2]], axis=-1) / INPUT_SIZE, 0.0, 1.0)
        index = tf.clip_by_value(tf.cast(det[:, 5], tf.int32), 0, len(COCO80_TO_COCO91) - 1)
        return {
            "detection_boxes": boxes[None],
            "detection_scores": det[None, :, 4],
            "detection_classes": tf.gather(self._coco_ids, index)[None],
            "num_detections": tf.cast(tf.shape(det)[0:1], tf.float32),
        }


def export_centernet_savedmodel(model_json: str | Path, out_dir: str | Path) -> Path:
    """Load the TF.js graph at ``model_json`` and save the wrapped detector to ``out_dir``."""
    fn, _, outputs = load_graph_model(model_json)
    if "tower_0/detections" not in outputs:
        raise ValueError(f"{model_json} has no 'tower_0/detections' output; outputs: {outputs}")
    module = CenterNetModule(fn)
    out_dir = Path(out_dir)
    tf.saved_model.save(module, str(out_dir), signatures={"serving_default": module.__call__})
    return out_dir
