"""``predictions.csv`` read back: one `LabeledImage` per image, its objects as `detectcrop.Detections`.

Every tool that reads a `label` output (the COCO writers, evaluation, exports, reports) works on these, not on CSV
text: boxes are ``Detections.xyxy`` in source pixels, ``scores`` the detection scores, ``class_ids`` the COCO ids of
the detected parent category, and ``data`` holds ``label`` (the fine-grained label), ``probability`` and ``top_k``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detectcrop.coco import NAME_TO_ID
from detectcrop.detections import Detections
from detectcrop.io import csv_unsafe

PREDICTIONS_CSV = "predictions.csv"
#: The label run's settings and model fingerprints (`pipelines.labeling`).
CONFIG_JSON = "label_config.json"
#: The columns of predictions.csv: one row per object, or one per image with no detection or an error.
COLUMNS = ["image", "status", "width", "height", "object", "x1", "y1", "x2", "y2", "det_score", "det_class",
           "label", "probability", "top_k", "error"]


@dataclass
class LabeledImage:
    """One labeled image (``status`` ok, no_detection or error) and its objects."""

    image: str  #: path relative to the labeled folder
    status: str
    width: int
    height: int
    detections: Detections
    error: str = ""

    @property
    def labels(self) -> list[str]:
        return [str(v) for v in self.detections.data.get("label", [])]

    @property
    def scores(self) -> np.ndarray:
        """Detection score x label probability of each object (how sure the pipeline is of the labeled box)."""
        if not len(self.detections):
            return np.zeros(0)
        return self.detections.scores.astype(np.float64) * self.detections.data["probability"].astype(np.float64)


def read_predictions(out: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of ``OUT/predictions.csv`` (a label output folder) or of that CSV file itself, as written."""
    path = Path(out)
    path = path / PREDICTIONS_CSV if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no predictions file: {path} (pass a `label` output folder)")
    with path.open(encoding="utf-8-sig", newline="") as f:  # -sig: a copy saved by a spreadsheet starts with a BOM
        header, *rows = list(csv.reader(f)) or [[]]
    missing = [c for c in COLUMNS if c not in header]
    if header and missing:
        raise ValueError(f"{path} is not a `label` predictions.csv: it lacks the columns {', '.join(missing)}")
    short = next((i for i, r in enumerate(rows, 2) if len(r) < len(header)), None)
    if short is not None:
        raise ValueError(f"{path}, line {short}: fewer cells than columns (an edited or torn file)")
    return [dict(zip(header, (csv_unsafe(v) for v in r), strict=False)) for r in rows]


def _class_id(name: str) -> int:
    if name in NAME_TO_ID:
        return NAME_TO_ID[name]
    return int(name.removeprefix("class_")) if name.startswith("class_") and name[6:].isdigit() else -1


def labeled_images(rows: list[dict[str, str]]) -> list[LabeledImage]:
    """Group prediction rows by image, in file order (an image's rows are consecutive)."""
    by_image: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_image.setdefault(row["image"], []).append(row)
    out = []
    for image, group in by_image.items():
        first = group[0]
        objects = [r for r in group if r["status"] == "ok"]
        dets = Detections.empty() if not objects else Detections(
            [[float(r[k]) for k in ("x1", "y1", "x2", "y2")] for r in objects],
            [float(r["det_score"]) for r in objects], [_class_id(r["det_class"]) for r in objects],
            {"label": np.array([r["label"] for r in objects], dtype=object),
             "probability": np.array([float(r["probability"]) for r in objects], dtype=np.float32),
             "top_k": np.array([r["top_k"] for r in objects], dtype=object)},
        )
        out.append(LabeledImage(image, first["status"], int(first["width"] or 0), int(first["height"] or 0), dets,
                                first["error"]))
    return out
