"""TFLite export of a fitted `FineClassifier` (float32, dynamic-range quantised weights, or full-integer int8
calibrated on representative crops), a small runner on the LiteRT interpreter, and an agreement check against the
Keras model.

The exported model is the Keras model's serving graph (`classify.task.CropClassifier.serving_model`):
``(N, H, W, 3)`` float32 RGB in ``[0, 255]`` in (preprocessing inside); out, the calibrated class probabilities
``(N, n_classes)`` and the open-set score ``(N,)``. Label names, the input size and the unknown rule (probability
floor, open-set score and threshold, temperature) go to a JSON sidecar, ``<file>.tflite.json``, which
`TFLiteClassifier` reads.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tensorflow as tf

from classify.features import ImageItem, iter_items
from classify.model import FineClassifier
from classify.prediction import ProbabilityPredictor
from classify.report import write_json
from detectcrop.io import atomic_write_bytes
from detectcrop.litert import default_threads, litert_available, make_interpreter

logger = logging.getLogger(__name__)

Quantization = Literal["float", "dynamic", "int8"]
QUANTIZATIONS: tuple[str, ...] = ("float", "dynamic", "int8")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def export_tflite(
    clf: FineClassifier, path: str | Path, quantization: Quantization = "float", *, saved_model: Path | None = None,
    calibration: np.ndarray | None = None, extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Convert ``clf``'s Keras model to a ``.tflite`` file (written atomically) plus its JSON sidecar.

    ``quantization``: ``"float"`` keeps float32 weights; ``"dynamic"`` stores weights as int8 (dynamic-range
    quantisation: about 4x smaller, activations stay float); ``"int8"`` is full-integer quantisation (weights and
    activations; float32 in and out) calibrated on ``calibration``, crops as ``(N, H, W, 3)`` float32 RGB in
    ``[0, 255]`` at the model's input size. ``saved_model``: an existing SavedModel export of ``clf.model_`` to
    convert from (saves re-tracing when exporting several variants). ``extra_meta`` goes into the sidecar.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    if quantization == "int8" and (calibration is None or not len(calibration)):
        raise ValueError("int8 quantisation needs calibration crops")
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        if saved_model is None:
            saved_model = Path(tmp) / "saved_model"
            clf.model_.serving_model().export(str(saved_model), format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        if quantization in ("dynamic", "int8"):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "int8":
            samples = np.asarray(calibration, dtype=np.float32)
            converter.representative_dataset = lambda: ([s[None]] for s in samples)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        flatbuffer = converter.convert()
    atomic_write_bytes(path, flatbuffer, fsync=False)
    write_json(
        _sidecar(path),
        {
            "class_names": [str(c) for c in clf.classes_],
            "input_size": list(clf.input_size_),
            "input": "RGB float32 in [0, 255]",
            "quantization": quantization,
            "unknown_below": clf.unknown_below,
            "unknown_label": clf.unknown_label,
            "open_set_score": clf.model_.open_set_score,
            "open_set_threshold": clf.open_set_threshold_,
            "temperature": clf.temperature_,
            **(extra_meta or {}),
        },
    )
    logger.info("exported %s (%s, %.1f MB)", path, quantization, len(flatbuffer) / 1e6)
    return path


def _interpreter(model_path: str, num_threads: int | None) -> Any:
    """The LiteRT interpreter (the ``litert`` extra) with explicit threads; TensorFlow's deprecated copy without it."""
    if litert_available():
        return make_interpreter(model_path, num_threads)
    with warnings.catch_warnings():  # tf.lite.Interpreter announces its move to the ai-edge-litert package
        warnings.simplefilter("ignore", UserWarning)
        return tf.lite.Interpreter(model_path=model_path, num_threads=num_threads or default_threads())


class TFLiteClassifier(ProbabilityPredictor):
    """Runs an exported ``.tflite`` classifier on images (paths or RGB arrays); ``predict_proba``, ``predict``,
    ``predict_topk`` and the unknown rule are `FineClassifier`'s (`classify.prediction.ProbabilityPredictor`)."""

    def __init__(self, path: str | Path, num_threads: int | None = None) -> None:
        self.path = Path(path)
        meta = json.loads(_sidecar(self.path).read_text())
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


def export_and_check(
    clf: FineClassifier,
    out_dir: str | Path,
    images: Sequence[ImageItem] | np.ndarray,
    *,
    stem: str = "model",
    quantizations: Sequence[Quantization] = ("float", "dynamic"),
) -> dict[str, dict[str, Any]]:
    """Export each quantisation to ``out_dir/<stem>[_<q>].tflite`` and compare its predictions on ``images`` with the
    Keras model's; returns ``{quantization: {"path", "size_bytes", "argmax_agreement", "max_abs_diff", "n"}}``."""
    out_dir = Path(out_dir)
    images = iter_items(images)
    reference = clf.predict_proba(images)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "saved_model"
        clf.model_.serving_model().export(str(saved), format="tf_saved_model", verbose=False)
        for q in quantizations:
            name = f"{stem}.tflite" if q == "float" else f"{stem}_{q}.tflite"
            path = export_tflite(clf, out_dir / name, q, saved_model=saved)
            probs = TFLiteClassifier(path).predict_proba(images)
            results[q] = {"path": str(path), "size_bytes": path.stat().st_size, **agreement(reference, probs)}
            logger.info(
                "tflite %s: argmax agreement %.4f, max |dp| %.2e",
                q,
                results[q]["argmax_agreement"],
                results[q]["max_abs_diff"],
            )
    return results
