"""One result per image, end to end: `ImageResult` (source, status, size, error and a `detectcrop.Detections` whose
``data`` carries the labels), its ``predictions.csv`` rows (`ImageResult.to_rows` / `ImageResult.from_rows`) and its
COCO entries (`ImageResult.to_coco`). The pipeline returns it, `label` writes it, and every reader of a label output
(COCO results, evaluation, exports, the HTML report) reads it back.
"""

from pipelines.results.classification import classify_crops
from pipelines.results.image import ImageResult, LabeledObject, as_results
from pipelines.results.rows import COLUMNS, CONFIG_JSON, PREDICTIONS_CSV, read_predictions, read_results

__all__ = ["COLUMNS", "CONFIG_JSON", "PREDICTIONS_CSV", "ImageResult", "LabeledObject", "as_results", "classify_crops",
           "read_predictions", "read_results"]
