"""detectcrop: stage 1 of detect-then-classify. Images in -> `Detections` -> crops + manifests.

Also the base layer both stages share: robust image reading, the model cache and the model zoo.
"""

from detectcrop.coco import COCO_NAMES, category_id, category_name
from detectcrop.detections import Detections
from detectcrop.detector import Detector, ModelUnavailableError

__all__ = ["COCO_NAMES", "Detections", "Detector", "ModelUnavailableError", "category_id", "category_name"]
