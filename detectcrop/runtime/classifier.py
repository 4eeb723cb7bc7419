"""Runs an exported ``.tflite`` classifier on the LiteRT interpreter (`LiteRTClassifier`), and compares two
runners' probabilities (`agreement`).

The model is the Keras model's serving graph (`classify.task.CropClassifier.serving_model`, exported by
`detectcrop.runtime.classifier_export`): ``(N, H, W, 3)`` float32 RGB in ``[0, 255]`` in (preprocessing inside); out,
the calibrated class probabilities ``(N, n_classes)`` and the open-set score ``(N,)``. Label names, the input size and
the unknown rule (probability floor, open-set score and threshold, temperature) are read from the JSON sidecar,
``<file>.tflite.json``. With the ``litert`` extra installed this module needs no TensorFlow.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from classify.prediction import ProbabilityPredictor
from detectcrop.runtime.interpreters import default_threads, litert_available, make_interpreter

#: Crops per interpreter call are chosen so that the largest activation of one call stays within this many bytes.
#: Measured on a 2-core AMD EPYC (float MobileNetV2 at 224 px, 4.8 MB per crop at its widest layer): 2 crops per
#: call took 4.3 ms per crop against 5.7 ms at 32 (the activations of a large batch leave the cache); the int8
#: export (1.2 MB per crop) was as fast at every batch size from 4 to 32.
CALL_BYTES = 10 * 2**20


def sidecar(path: str | Path) -> Path:
    """The JSON sidecar of a ``.tflite`` file: ``<file>.tflite.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _interpreter(model_path: str, num_threads: int | None) -> Any:
    """The LiteRT interpreter (the ``litert`` extra) with explicit threads; TensorFlow's deprecated copy without it."""
    if litert_available():
        return make_interpreter(model_path, num_threads)
    import tensorflow as tf

    with warnings.catch_warnings():  # tf.lite.Interpreter announces its move to the ai-edge-litert package
        warnings.simplefilter("ignore", UserWarning)
        return tf.lite.Interpreter(model_path=model_path, num_threads=num_threads or default_threads())


class LiteRTClassifier(ProbabilityPredictor):
    """Runs an exported ``.tflite`` classifier on images (paths or RGB arrays); ``predict_proba``, ``predict``,
    ``predict_topk`` and the unknown rule are `FineClassifier`'s (`classify.prediction.ProbabilityPredictor`)."""

    def __init__(self, path: str | Path, num_threads: int | None = None) -> None:
        self.path = Path(path)
        meta = json.loads(sidecar(self.path).read_text())
        self.classes_ = np.asarray(meta["class_names"], dtype=object)
        self.input_size_ = tuple(meta["input_size"])
        self.unknown_below = meta.get("unknown_below")
        self.unknown_label = meta.get("unknown_label", "unknown")
        self.open_set_threshold_ = meta.get("open_set_threshold")
        self.meta = meta
        self._interp = _interpreter(str(self.path), num_threads)
        self._input = self._interp.get_input_details()[0]["index"]
        outputs = self._interp.get_output_details()  # in no fixed order: told apart by rank
        self._output = next(o["index"] for o in outputs if len(o["shape"]) == 2)
        self._score = next((o["index"] for o in outputs if len(o["shape"]) == 1), None)
        self._batch = -1
        #: Crops per interpreter call (`CALL_BYTES`); a batch of more runs as several calls.
        self.call_size = max(1, CALL_BYTES // max(1, _widest_activation(self._interp)))

    def predict_batch(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        images = np.asarray(images, dtype=np.float32)
        parts = [self._invoke(images[i : i + self.call_size]) for i in range(0, len(images), self.call_size)]
        if not parts:
            return self._invoke(images)
        proba = np.concatenate([p for p, _ in parts])
        score = None if self._score is None else np.concatenate([s for _, s in parts])
        return proba, score

    def _invoke(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if len(images) != self._batch:  # resizing the batch keeps XNNPACK's packed weights: cheap
            self._interp.resize_tensor_input(self._input, list(images.shape))
            self._interp.allocate_tensors()
            self._batch = len(images)
        self._interp.set_tensor(self._input, np.ascontiguousarray(images))
        self._interp.invoke()
        proba = np.array(self._interp.get_tensor(self._output), dtype=np.float32)
        score = None if self._score is None else np.array(self._interp.get_tensor(self._score), dtype=np.float32)
        return proba, score


def _widest_activation(interp: Any) -> int:
    """Bytes of the largest tensor of one crop: the tensors with a dynamic batch dimension, or, in a graph exported
    with a fixed batch, those whose first dimension is the input's batch."""
    details = interp.get_tensor_details()
    batched = [d for d in details if len(d["shape_signature"]) > 1 and d["shape_signature"][0] == -1]
    if not batched:
        batch = int(interp.get_input_details()[0]["shape"][0])
        batched = [d for d in details if len(d["shape"]) > 1 and d["shape"][0] == batch]
    return max((int(np.prod(d["shape"][1:])) * np.dtype(d["dtype"]).itemsize for d in batched), default=0)


def agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """How closely two probability matrices agree: top-1 agreement and the largest absolute difference."""
    reference, other = np.asarray(reference), np.asarray(other)
    if reference.shape != other.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {other.shape}")
    return {
        "n": len(reference),
        "argmax_agreement": float(np.mean(reference.argmax(axis=1) == other.argmax(axis=1))) if len(reference) else 1.0,
        "max_abs_diff": float(np.max(np.abs(reference - other))) if len(reference) else 0.0,
    }


def served_precision(classifier: object) -> str:
    """The precision a classifier serves: its LiteRT export's (``float`` for a Keras model); sidecars of earlier
    versions record it as ``quantization``."""
    meta = getattr(classifier, "meta", {})
    return str(meta.get("precision", meta.get("quantization", "float")))
