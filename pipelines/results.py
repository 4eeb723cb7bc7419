"""What the pipeline returns for one image (`ImageResult` of `LabeledObject`), and stage 2 on stage 1's crops."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectcrop.core import ImageCrops
from detectcrop.detections import Detections
from detectcrop.io import one_line, printable

logger = logging.getLogger(__name__)


@dataclass
class LabeledObject:
    """One detected and classified object."""

    xyxy: tuple[float, float, float, float]  # detection box, source pixels
    crop_box: tuple[int, int, int, int]  # the pixels that were classified (padding/squaring applied)
    score: float  # detection score
    class_id: int  # COCO id of the detection
    label: str  # fine-grained label, or the unknown label (see classify.prediction for the rule)
    probability: float  # classifier probability of the top class (calibrated)
    top_k: list[tuple[str, float]] = field(default_factory=list)
    known_score: float | None = None  # the classifier's open-set score (higher: more like a known class)


@dataclass
class ImageResult:
    """What the pipeline found in one image; ``status`` is ``ok``, ``no_detection`` or ``error``."""

    source: str
    status: str
    objects: list[LabeledObject] = field(default_factory=list)
    width: int = 0
    height: int = 0
    error: str = ""

    @property
    def labels(self) -> list[str]:
        return [o.label for o in self.objects]

    def to_detections(self) -> Detections:
        """The objects as `Detections`, with ``label`` and ``probability`` in ``data``."""
        if not self.objects:
            return Detections.empty()
        return Detections(
            np.array([o.xyxy for o in self.objects]), np.array([o.score for o in self.objects]),
            np.array([o.class_id for o in self.objects]),
            {"label": np.array(self.labels, dtype=object),
             "probability": np.array([o.probability for o in self.objects], dtype=np.float32)},
        )


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
        result = ImageResult(item.source, item.status, width=item.width, height=item.height, error=item.error)
        for i, row in enumerate(proba[start : start + len(item.crops)]):
            order = np.argsort(-row, kind="stable")[: max(1, top_k)]
            top = [(classes[j], float(row[j])) for j in order]
            label, prob = top[0]
            if unknown[start + i]:
                label = unknown_label
            result.objects.append(LabeledObject(
                xyxy=tuple(float(v) for v in item.detections.xyxy[i]),
                crop_box=tuple(int(v) for v in item.boxes[i]),
                score=float(item.detections.scores[i]), class_id=int(item.detections.class_ids[i]),
                label=label, probability=prob, top_k=top[:top_k],
                known_score=None if score is None else float(score[start + i]),
            ))
        start += len(item.crops)
        yield result
