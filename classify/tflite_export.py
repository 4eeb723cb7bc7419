"""TFLite export of a fitted `FineClassifier`: float32, dynamic-range quantised weights, or full-integer int8
calibrated on representative crops, with an agreement check against the Keras model.

The exported model is the Keras model's serving graph (`classify.task.CropClassifier.serving_model`); label names,
the input size and the unknown rule go to the JSON sidecar that `classify.tflite.TFLiteClassifier` reads.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tensorflow as tf

from classify.batches import ImageItem, iter_items
from classify.model import FineClassifier
from classify.report import write_json
from classify.tflite import TFLiteClassifier, agreement, sidecar
from detectcrop.io import atomic_write_bytes

logger = logging.getLogger(__name__)

Quantization = Literal["float", "dynamic", "int8"]
QUANTIZATIONS: tuple[str, ...] = ("float", "dynamic", "int8")


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
        sidecar(path),
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
