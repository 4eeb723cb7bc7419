"""classify: stage 2 of detect-then-classify. Crops in -> fine-grained labels, with an F1 report.

The names below load on first use, so the LiteRT runner (`detectcrop.runtime.classifier`,
`detectcrop.runtime.classifier_cache`) runs without importing TensorFlow. `CropClassifier` (the saved Keras task model)
is registered with Keras when `classify.task` is imported: by ``from classify import CropClassifier``, by every
`FineClassifier` load, and by ``import classify`` itself once Keras is imported, so
``keras.saving.load_model("RUN/model.keras")`` needs nothing else::

    import keras
    import classify
    model = keras.saving.load_model("RUN/model.keras")
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

from detectcrop import _moved

if TYPE_CHECKING:
    from classify.backbones import Backbone
    from classify.data import ImageFolder, grouped_split, load_image_folder, split_image_folder
    from classify.model import FineClassifier
    from classify.prediction import ProbabilityPredictor
    from classify.task import CropClassifier

_LAZY = {
    "Backbone": "classify.backbones",
    "CropClassifier": "classify.task",
    "FineClassifier": "classify.model",
    "ImageFolder": "classify.data",
    "ProbabilityPredictor": "classify.prediction",
    "grouped_split": "classify.data",
    "load_image_folder": "classify.data",
    "split_image_folder": "classify.data",
}

__all__ = [
    "Backbone",
    "CropClassifier",
    "FineClassifier",
    "ImageFolder",
    "ProbabilityPredictor",
    "grouped_split",
    "load_image_folder",
    "split_image_folder",
]

if "keras" in sys.modules:  # Keras is loaded already: register the task model now, as an eager import would
    importlib.import_module("classify.task")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'classify' has no attribute {name!r}")


_moved.install()  # old module paths keep importing (detectcrop._moved)
