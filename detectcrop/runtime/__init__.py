"""LiteRT, the CPU runtime of both stages: conversion, export, int8, bias correction, graph editing, interpreters.

- `interpreters`: the runtime choice (``tf`` / ``litert`` / ``auto``) and XNNPACK interpreters;
- `precision`: one vocabulary for both stages (``float``, ``dynamic``, ``int8``, ``auto``);
- `convert` (detector SavedModels to cached ``.tflite``), `detector` (`LiteRTDetector`, the TF Hub contract);
- `int8` (representative photos, the quantised conversion, the recall rule), `prequant` (graph preparation and
  percentile ranges), `bias` (bias correction), `fuse` (hard-swish fusion), `fixed` (static-shape graphs), `graph`
  (the flatbuffer as an editable graph);
- `classifier` (`LiteRTClassifier`), `classifier_export` (Keras model to ``.tflite``), `classifier_cache` (exports
  cached beside ``model.keras``, and the int8 agreement rule).

Names load on first use: the classifier's interpreter needs neither TensorFlow nor Keras.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    **dict.fromkeys(("Runtime", "RUNTIMES", "ConversionError", "litert_available", "resolve_runtime",
                     "default_threads", "make_interpreter", "bare_interpreter"), "interpreters"),
    **dict.fromkeys(("Precision", "PRECISIONS", "DETECTOR_PRECISIONS", "CLASSIFIER_PRECISIONS", "EXPORTED_PRECISIONS",
                     "check_precision"),
                    "precision"),
    **dict.fromkeys(("CONVERSION_VERSION", "INT8_VERSION", "detector_converter", "convert_saved_model",
                     "convert_trunk", "fuse_checked", "converted_detector", "conversion_info",
                     "detector_flatbuffer"), "convert"),
    **dict.fromkeys(("LiteRTDetector", "MAX_SHAPES"), "detector"),
    **dict.fromkeys(("RepresentativeData", "INT8_MAX_RECALL_DROP", "detection_recall", "int8_detector_check"), "int8"),
    **dict.fromkeys(("LiteRTClassifier", "agreement", "sidecar"), "classifier"),
    **dict.fromkeys(("export_litert", "export_and_check"), "classifier_export"),
    **dict.fromkeys(("REPRESENTATIVE_FILE", "INT8_MIN_AGREEMENT", "save_representative_data", "representative_file",
                     "exported_path", "export_cached", "resolve_precision", "load_litert_classifier"),
                    "classifier_cache"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
