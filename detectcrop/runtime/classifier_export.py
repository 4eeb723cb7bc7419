"""LiteRT export of a fitted `FineClassifier`: float32, dynamic-range quantised weights, or full-integer int8
quantised on representative crops, with an agreement check against the Keras model.

The exported model is the Keras model's serving graph (`classify.task.CropClassifier.serving_model`); label names,
the input size and the unknown rule go to the JSON sidecar that `detectcrop.runtime.classifier.LiteRTClassifier` reads.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from classify.batches import ImageItem, iter_items
from classify.model import FineClassifier
from classify.report import write_json
from detectcrop.io import atomic_write_bytes
from detectcrop.runtime.classifier import LiteRTClassifier, agreement, sidecar
from detectcrop.runtime.precision import EXPORTED_PRECISIONS, check_precision

logger = logging.getLogger(__name__)


def export_litert(
    clf: FineClassifier, path: str | Path, precision: str = "float", *, saved_model: Path | None = None,
    representative: np.ndarray | None = None, extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Convert ``clf``'s Keras model to a ``.tflite`` file (written atomically) plus its JSON sidecar.

    ``precision`` (`detectcrop.runtime.precision`): ``"float"`` keeps float32 weights; ``"dynamic"`` stores weights
    as int8 (activations stay float); ``"int8"`` is full-integer quantisation (weights and activations; float32 in
    and out) on the representative crops ``representative``, crops as ``(N, H, W, 3)`` float32 RGB in
    ``[0, 255]`` at the model's input size. ``saved_model``: an existing SavedModel export of ``clf.model_`` to
    convert from (saves re-tracing when exporting several variants). ``extra_meta`` goes into the sidecar.
    """
    check_precision(precision, EXPORTED_PRECISIONS, "an export")
    if precision == "int8" and (representative is None or not len(representative)):
        raise ValueError("int8 quantisation needs representative crops")
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        if saved_model is None:
            saved_model = Path(tmp) / "saved_model"
            clf.model_.serving_model().export(str(saved_model), format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        if precision in ("dynamic", "int8"):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if precision == "int8":
            samples = np.asarray(representative, dtype=np.float32)
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
            "precision": precision,
            "unknown_below": clf.unknown_below,
            "unknown_label": clf.unknown_label,
            "open_set_score": clf.model_.open_set_score,
            "open_set_threshold": clf.open_set_threshold_,
            "temperature": clf.temperature_,
            **(extra_meta or {}),
        },
    )
    logger.info("exported %s (%s, %.1f MB)", path, precision, len(flatbuffer) / 1e6)
    return path


def export_and_check(
    clf: FineClassifier,
    out_dir: str | Path,
    images: Sequence[ImageItem] | np.ndarray,
    *,
    stem: str = "model",
    precisions: Sequence[str] = ("float", "dynamic"),
) -> dict[str, dict[str, Any]]:
    """Export each precision to ``out_dir/<stem>[_<q>].tflite`` and compare its predictions on ``images`` with the
    Keras model's; returns ``{precision: {"path", "size_bytes", "argmax_agreement", "max_abs_diff", "n"}}``."""
    out_dir = Path(out_dir)
    images = iter_items(images)
    reference = clf.predict_proba(images)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "saved_model"
        clf.model_.serving_model().export(str(saved), format="tf_saved_model", verbose=False)
        for q in precisions:
            name = f"{stem}.tflite" if q == "float" else f"{stem}_{q}.tflite"
            path = export_litert(clf, out_dir / name, q, saved_model=saved)
            probs = LiteRTClassifier(path).predict_proba(images)
            results[q] = {"path": str(path), "size_bytes": path.stat().st_size, **agreement(reference, probs)}
            logger.info(
                "LiteRT %s: argmax agreement %.4f, max |dp| %.2e",
                q,
                results[q]["argmax_agreement"],
                results[q]["max_abs_diff"],
            )
    return results
