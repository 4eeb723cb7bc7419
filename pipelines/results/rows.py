"""The ``predictions.csv`` of a `label` output: its columns, its cells, and reading it back.

A row is one labeled object, or one image with no detection or an error (``status``), so that every input is
accounted for; `pipelines.results.ImageResult` writes an image's rows (``to_rows``) and reads them back
(``from_rows``).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detectcrop.coco import NAME_TO_ID
from detectcrop.io import csv_unsafe

PREDICTIONS_CSV = "predictions.csv"
#: The label run's settings and model fingerprints (`pipelines.labeling`).
CONFIG_JSON = "label_config.json"
#: The columns of predictions.csv: one row per object, or one per image with no detection or an error.
COLUMNS = ["image", "status", "width", "height", "object", "x1", "y1", "x2", "y2", "det_score", "det_class",
           "label", "probability", "top_k", "error"]

_TOP_K = re.compile(r"(.*?):([-+]?(?:\d+\.?\d*(?:e[-+]?\d+)?|nan|inf))(?:;|$)", re.IGNORECASE | re.DOTALL)


def format_top_k(pairs: Sequence[tuple[str, float]]) -> str:
    """The ``top_k`` cell: ``label:probability`` pairs joined by ``;``, probabilities to 4 decimals."""
    return ";".join(f"{label}:{p:.4f}" for label, p in pairs)


def parse_top_k(text: str) -> list[tuple[str, float]]:
    """The pairs of a ``top_k`` cell (a label may hold ``:`` or ``;``; each pair ends in ``:`` and a number)."""
    return [(m.group(1), float(m.group(2))) for m in _TOP_K.finditer(text)]


def as_recorded(values: Any, decimals: int) -> np.ndarray:
    """``values`` as predictions.csv records them: rounded to ``decimals`` digits, as float64 (the numbers of the
    file itself, whatever precision they were held in)."""
    array = np.asarray(values)
    return np.array([float(f"{float(v):.{decimals}f}") for v in array.reshape(-1)], np.float64).reshape(array.shape)


def class_id(name: str) -> int:
    """The COCO id of a ``det_class`` cell (a COCO name, or ``class_N`` for an id without one); -1 if neither."""
    if name in NAME_TO_ID:
        return NAME_TO_ID[name]
    return int(name.removeprefix("class_")) if name.startswith("class_") and name[6:].isdigit() else -1


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


def read_results(out: str | os.PathLike) -> list:
    """The images of a label output (folder or predictions.csv) as `pipelines.results.ImageResult`, in file order."""
    from pipelines.results.image import ImageResult

    return ImageResult.from_rows(read_predictions(out))
