"""Runs an exported ``.tflite`` classifier on the LiteRT interpreter (`TFLiteClassifier`), and compares two
runners' probabilities (`agreement`).

The model is the Keras model's serving graph (`classify.task.CropClassifier.serving_model`, exported by
`classify.tflite_export`): ``(N, H, W, 3)`` float32 RGB in ``[0, 255]`` in (preprocessing inside); out, the
calibrated class probabilities ``(N, n_classes)`` and the open-set score ``(N,)``. Label names, the input size and
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
from detectcrop.litert import default_threads, litert_available, make_interpreter


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


class TFLiteClassifier(ProbabilityPredictor):
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

    def predict_batch(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if len(images) != self._batch:
            self._interp.resize_tensor_input(self._input, list(images.shape))
            self._interp.allocate_tensors()
            self._batch = len(images)
        self._interp.set_tensor(self._input, np.ascontiguousarray(images, dtype=np.float32))
        self._interp.invoke()
        proba = np.array(self._interp.get_tensor(self._output), dtype=np.float32)
        score = None if self._score is None else np.array(self._interp.get_tensor(self._score), dtype=np.float32)
        return proba, score


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
