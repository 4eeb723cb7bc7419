"""Stage 2 on stage 1's crops: the crops of several images classified in one batch, one `ImageResult` each."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from detectcrop.core import ImageCrops
from detectcrop.detections import Detections
from detectcrop.io import one_line, printable
from pipelines.results.image import ImageResult, object_array

logger = logging.getLogger(__name__)


def _predict(classifier: Any, crops: list) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities and open-set scores (``predict_scores``), or probabilities alone (``predict_proba``)."""
    if not crops:
        return np.zeros((0, 0)), None
    if hasattr(classifier, "predict_scores"):
        proba, score = classifier.predict_scores(crops)
        return np.asarray(proba), None if score is None else np.asarray(score)
    return np.asarray(classifier.predict_proba(crops)), None


def classify_crops(
    items: list[ImageCrops], classifier: Any, top_k: int, unknown_below: float | None, unknown_label: str,
    open_set_threshold: float | None = None,
) -> Iterator[ImageResult]:
    """Label the crops of several images in one batch (``classifier.predict_scores`` or ``predict_proba``); if the
    batch fails, image by image, and an image whose crops cannot be classified becomes an ``error`` result. In the
    order of ``items``. An object is ``unknown_label`` when its top probability is below ``unknown_below`` or its
    open-set score below ``open_set_threshold`` (`classify.prediction.is_unknown`)."""
    from classify.prediction import is_unknown

    crops = [c for item in items for c in item.crops]
    try:
        proba, score = _predict(classifier, crops)
    except Exception as exc:
        if len(items) > 1:
            for item in items:
                yield from classify_crops([item], classifier, top_k, unknown_below, unknown_label, open_set_threshold)
            return
        item = items[0]
        logger.warning("%s: classification failed: %s", printable(item.source), exc)
        yield ImageResult(item.source, "error", width=item.width, height=item.height,
                          error=one_line(f"ClassificationError: {type(exc).__name__}: {exc}"))
        return
    classes = [str(c) for c in getattr(classifier, "classes_", [])]
    unknown = is_unknown(proba, unknown_below, score, open_set_threshold)
    start = 0
    for item in items:
        n = len(item.crops)
        result = ImageResult(item.source, item.status, width=item.width, height=item.height, error=item.error)
        if n:
            tops = []
            for row in proba[start : start + n]:
                order = np.argsort(-row, kind="stable")[: max(1, top_k)]
                tops.append([(classes[j], float(row[j])) for j in order][:top_k])
            labels = [unknown_label if unknown[start + i] else top[0][0] for i, top in enumerate(tops)]
            found = item.detections[np.arange(n)]
            result.detections = Detections(found.xyxy, found.scores, found.class_ids, {
                "label": np.array(labels, dtype=object),
                "probability": np.array([top[0][1] for top in tops], dtype=np.float64),
                "top_k": object_array(tops),
                "known_score": np.full(n, np.nan) if score is None else np.asarray(score[start : start + n],
                                                                                  dtype=np.float64),
                "crop_box": np.array([[int(v) for v in box] for box in item.boxes[:n]], dtype=np.int64).reshape(-1, 4),
            })
        start += n
        yield result
