"""classify: stage 2 of detect-then-classify. Crops in -> fine-grained labels, with an F1 report.

Names load on first use, so importing a light submodule (``classify.data``) does not import TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from classify.backbones import Backbone
    from classify.data import ImageFolder, grouped_split, load_image_folder, split_image_folder
    from classify.model import FineClassifier

_LAZY = {
    "Backbone": "classify.backbones",
    "FineClassifier": "classify.model",
    "ImageFolder": "classify.data",
    "grouped_split": "classify.data",
    "load_image_folder": "classify.data",
    "split_image_folder": "classify.data",
}

__all__ = ["Backbone", "FineClassifier", "ImageFolder", "grouped_split", "load_image_folder", "split_image_folder"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'classify' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
