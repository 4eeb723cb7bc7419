"""`ImageResult`: what the pipeline found in one image, from the classifier to predictions.csv, COCO and back."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectcrop.coco import category_name, coco_annotation
from detectcrop.detections import Detections
from pipelines.results.rows import class_id, format_top_k, parse_top_k


@dataclass
class LabeledObject:
    """One detected and classified object (a view of one object of `ImageResult.detections`)."""

    xyxy: tuple[float, float, float, float]  # detection box, source pixels
    crop_box: tuple[int, int, int, int] | None  # the pixels that were classified (None when read from rows)
    score: float  # detection score
    class_id: int  # COCO id of the detection
    label: str  # fine-grained label, or the unknown label (see classify.prediction for the rule)
    probability: float  # classifier probability of the top class (calibrated)
    top_k: list[tuple[str, float]] = field(default_factory=list)
    known_score: float | None = None  # the classifier's open-set score (higher: more like a known class)


def object_array(values: Sequence[Any]) -> np.ndarray:
    """A 1-D object array of ``values`` (lists stay elements, not a second axis)."""
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


@dataclass
class ImageResult:
    """What the pipeline found in one image.

    Attributes:
        source: the image (its path as given, or its path relative to the labeled folder when read from rows).
        status: ``ok``, ``no_detection`` or ``error``.
        width, height: the image size in pixels (0 when unknown).
        error: why the image could not be labeled, or a note on an image that was (e.g. no annotated copy).
        detections: the objects; ``data`` holds ``label``, ``probability`` and ``top_k`` (``(label, probability)``
            pairs), and from the pipeline also ``known_score`` (open-set score, NaN when the classifier has none)
            and ``crop_box`` (the ``(N, 4)`` pixels that were classified).
    """

    source: str
    status: str
    width: int = 0
    height: int = 0
    error: str = ""
    detections: Detections = field(default_factory=Detections.empty)

    @property
    def image(self) -> str:
        return self.source

    @property
    def labels(self) -> list[str]:
        return [str(v) for v in self.detections.data.get("label", [])]

    @property
    def scores(self) -> np.ndarray:
        """Detection score x label probability of each object (how sure the pipeline is of the labeled box)."""
        if not len(self.detections):
            return np.zeros(0)
        return self.detections.scores.astype(np.float64) * self.detections.data["probability"].astype(np.float64)

    @property
    def objects(self) -> list[LabeledObject]:
        """The objects one by one."""
        d = self.detections
        crop, known = d.data.get("crop_box"), d.data.get("known_score")
        return [LabeledObject(
            xyxy=tuple(float(v) for v in d.xyxy[i]),
            crop_box=None if crop is None else tuple(int(v) for v in crop[i]),
            score=float(d.scores[i]), class_id=int(d.class_ids[i]), label=str(d.data["label"][i]),
            probability=float(d.data["probability"][i]), top_k=list(d.data["top_k"][i]),
            known_score=None if known is None or np.isnan(known[i]) else float(known[i]),
        ) for i in range(len(d))]

    def to_detections(self) -> Detections:
        """The objects as `Detections` (``label``, ``probability`` and the rest in ``data``)."""
        return self.detections

    # -- predictions.csv --------------------------------------------------------------------------------------
    def to_rows(self, image: str | None = None) -> list[list[Any]]:
        """This image's predictions.csv rows (`pipelines.results.COLUMNS`), ``image`` naming it (default:
        ``source``): one per object, or one for an image with no detection or an error."""
        rel = self.source if image is None else image
        if self.status != "ok":
            return [[rel, self.status, self.width or "", self.height or "", *[""] * 10, self.error]]
        d = self.detections
        return [[rel, "ok", self.width, self.height, i, *(f"{float(v):.1f}" for v in d.xyxy[i]),
                 f"{float(d.scores[i]):.4f}", category_name(int(d.class_ids[i])), str(d.data["label"][i]),
                 f"{float(d.data['probability'][i]):.4f}", format_top_k(d.data["top_k"][i]), self.error]
                for i in range(len(d))]

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, str]]) -> list[ImageResult]:
        """Prediction rows (`pipelines.results.read_predictions`) grouped by image, in file order (an image's rows
        are consecutive); ``source`` is the ``image`` cell. A cell that cannot be read is a ``ValueError`` naming
        its row (the header is row 1) and column."""
        by_image: dict[str, list[tuple[int, Mapping[str, str]]]] = {}
        for line, row in enumerate(rows, 2):
            by_image.setdefault(row["image"], []).append((line, row))
        out = []
        for image, group in by_image.items():
            line, first = group[0]
            objects = [(n, r) for n, r in group if r["status"] == "ok"]
            dets = Detections.empty() if not objects else Detections(
                [[_number(r, k, n) for k in ("x1", "y1", "x2", "y2")] for n, r in objects],
                [_number(r, "det_score", n) for n, r in objects], [class_id(r["det_class"]) for _, r in objects],
                {"label": np.array([r["label"] for _, r in objects], dtype=object),
                 "probability": np.array([_number(r, "probability", n) for n, r in objects], dtype=np.float32),
                 "top_k": object_array([parse_top_k(r["top_k"]) for _, r in objects])},
            )
            out.append(cls(image, first["status"], _size(first, "width", line), _size(first, "height", line),
                           first["error"], dets))
        return out

    # -- COCO -------------------------------------------------------------------------------------------------
    def to_coco(self, image_id: int, category_ids: Mapping[str, int],
                first_annotation_id: int = 1) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """This image's entry of ``results.coco.json`` ``images`` and its ``annotations`` (ids from
        ``first_annotation_id``; ``score`` the label probability, ``detection_score`` the detector's)."""
        entry = {"id": image_id, "file_name": self.source, "width": self.width, "height": self.height}
        d = self.detections
        annotations = [coco_annotation(
            first_annotation_id + i, image_id, category_ids[label], d.xyxy[i], float(d.data["probability"][i]),
            detection_score=round(float(d.scores[i]), 6)) for i, label in enumerate(self.labels)]
        return entry, annotations


def as_results(items: Iterable[ImageResult | Mapping[str, str]]) -> list[ImageResult]:
    """``items`` as results: `ImageResult` s as they are, predictions.csv rows (dicts) grouped by `from_rows`."""
    items = list(items)
    if items and all(isinstance(i, ImageResult) for i in items):
        return items
    if any(isinstance(i, ImageResult) for i in items):
        raise TypeError("pass ImageResult objects or predictions.csv rows, not both")
    return ImageResult.from_rows(items)


def _number(row: Mapping[str, str], column: str, line: int, empty: float | None = None) -> float:
    """The number in ``row[column]`` (``empty`` for an empty cell where given)."""
    text = row[column]
    if text == "" and empty is not None:
        return empty
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"predictions row {line} (image {row['image']!r}): the {column} cell {text!r} is not a "
                         "number (an edited file?)") from None


def _size(row: Mapping[str, str], column: str, line: int) -> int:
    """The image size in ``row[column]`` (0 for an empty cell)."""
    value = _number(row, column, line, 0)
    if not (np.isfinite(value) and value >= 0 and value == int(value)):
        raise ValueError(f"predictions row {line} (image {row['image']!r}): the {column} cell {row[column]!r} is not a "
                         "size in pixels (an edited file?)")
    return int(value)
