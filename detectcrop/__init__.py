"""detectcrop: stage 1 of detect-then-classify. Images in -> `Detections` -> crops + manifests.

Also the base layer both stages share: robust image reading, the model cache and the model zoo.
"""

from detectcrop.coco import COCO_NAMES, category_id, category_name
from detectcrop.crops import CropPolicy
from detectcrop.dataset import BuildSummary, build_crops
from detectcrop.detections import Detections
from detectcrop.detector import Detector, ModelUnavailableError
from detectcrop.images import ImageReadError, discover_images, iter_images, read_image
from detectcrop.tiling import TileConfig, detect_tiled

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
]
