"""``predictions.csv`` read back: one `pipelines.results.ImageResult` per image (also named `LabeledImage` here).

Every tool that reads a `label` output (the COCO writers, evaluation, exports, reports) works on these, not on CSV
text: boxes are ``detections.xyxy`` in source pixels, ``scores`` the detection scores, ``class_ids`` the COCO ids of
the detected parent category, and ``data`` holds ``label`` (the fine-grained label), ``probability`` and ``top_k``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pipelines.results import COLUMNS, CONFIG_JSON, PREDICTIONS_CSV, ImageResult, read_predictions, read_results

#: An image read back from predictions.csv is an `ImageResult` (``image`` is its ``source``).
LabeledImage = ImageResult


def labeled_images(rows: Iterable[Mapping[str, str]]) -> list[ImageResult]:
    """Group prediction rows by image, in file order (`ImageResult.from_rows`)."""
    return ImageResult.from_rows(rows)


__all__ = ["COLUMNS", "CONFIG_JSON", "PREDICTIONS_CSV", "ImageResult", "LabeledImage", "labeled_images",
           "read_predictions", "read_results"]
