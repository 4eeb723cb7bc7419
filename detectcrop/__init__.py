"""detectcrop: stage 1 of detect-then-classify. Images in -> `Detections` -> crops + manifests.

Also the base layer both stages share: robust image reading, the model cache and the model zoo. Names that need
TensorFlow or the image libraries load on first use, so ``python -m detectcrop.zoo`` and light imports stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from detectcrop import _moved
from detectcrop.coco import COCO_NAMES, category_id, category_name
from detectcrop.detections import Detections

if TYPE_CHECKING:
    from detectcrop.crops import CropPolicy
    from detectcrop.dataset import BuildSummary, build_crops
    from detectcrop.detector import Detector
    from detectcrop.io.images import ImageReadError, iter_images, read_image
    from detectcrop.io.inputs import discover_images, scan_inputs
    from detectcrop.tiling import TileConfig, detect_tiled
    from detectcrop.zoo import ModelUnavailableError

_LAZY = {
    "CropPolicy": "detectcrop.crops",
    "BuildSummary": "detectcrop.dataset",
    "build_crops": "detectcrop.dataset",
    "Detector": "detectcrop.detector",
    "ModelUnavailableError": "detectcrop.zoo",
    "ImageReadError": "detectcrop.io.images",
    "discover_images": "detectcrop.io.inputs",
    "scan_inputs": "detectcrop.io.inputs",
    "iter_images": "detectcrop.io.images",
    "read_image": "detectcrop.io.images",
    "TileConfig": "detectcrop.tiling",
    "detect_tiled": "detectcrop.tiling",
}

__all__ = [
    "COCO_NAMES",
    "BuildSummary",
    "CropPolicy",
    "Detections",
    "Detector",
    "ImageReadError",
    "ModelUnavailableError",
    "TileConfig",
    "build_crops",
    "category_id",
    "category_name",
    "detect_tiled",
    "discover_images",
    "iter_images",
    "read_image",
    "scan_inputs",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'detectcrop' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


_moved.install()  # old module paths keep importing (detectcrop._moved)
