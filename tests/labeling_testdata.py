"""Small label outputs for the evaluation, export and report tests: a COCO ground truth and predictions.csv rows
around it (no model involved)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from detectcrop.io import csv_text
from pipelines.labeling import COLUMNS

CLASSES = ["aurel", "brisk", "corvo"]


def ground_truth(seed: int = 0) -> dict:
    """Six scenes with 1-4 watches of small, medium and large size, and two photos of another split."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    names = [f"scenes/s{i}.jpg" for i in range(6)] + ["photos/s0.jpg", "photos/p1.jpg"]
    for image_id, name in enumerate(names, start=1):
        images.append({"id": image_id, "file_name": name, "width": 640, "height": 480})
        for _ in range(rng.integers(1, 5)):
            side = float(rng.choice([20, 60, 150]) * rng.uniform(0.8, 1.2))
            x, y = rng.uniform(0, 640 - side), rng.uniform(0, 480 - side)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(rng.integers(1, 4)),
                         "bbox": [round(x, 1), round(y, 1), round(side, 1), round(side, 1)],
                         "area": side * side, "iscrowd": 0})
    return {"images": images, "annotations": anns,
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]}


def predictions(gt: dict, seed: int = 1, noise: float = 0.08) -> list[list]:
    """predictions.csv rows for the scenes (relative to the scenes folder): jittered boxes, some wrong labels, some
    misses, false positives, an 'unknown', an image without ground truth and an unreadable file."""
    rng = np.random.default_rng(seed)
    names = {c["id"]: c["name"] for c in gt["categories"]}
    rows = []
    for im in gt["images"]:
        if not im["file_name"].startswith("scenes/"):
            continue
        rel = im["file_name"].removeprefix("scenes/")
        k = 0
        for ann in (a for a in gt["annotations"] if a["image_id"] == im["id"]):
            if rng.random() < 0.15:
                continue  # missed
            x, y, w, h = ann["bbox"]
            x1, y1 = x + rng.normal(0, noise * w), y + rng.normal(0, noise * h)
            x2, y2 = x + w + rng.normal(0, noise * w), y + h + rng.normal(0, noise * h)
            label = names[ann["category_id"]] if rng.random() < 0.8 else str(rng.choice([*CLASSES, "unknown"]))
            rows.append([rel, "ok", 640, 480, k, *(f"{v:.1f}" for v in (x1, y1, x2, y2)),
                         f"{rng.uniform(0.3, 1):.4f}", "clock", label, f"{rng.uniform(0.4, 1):.4f}", "", ""])
            k += 1
        if rng.random() < 0.5:  # a false positive
            rows.append([rel, "ok", 640, 480, k, "5.0", "5.0", "45.0", "45.0", "0.3100", "clock", "brisk", "0.5000",
                         "", ""])
    rows.append(["extra.jpg", "ok", 640, 480, 0, "1.0", "1.0", "30.0", "30.0", "0.9000", "clock", "aurel", "0.9000",
                 "", ""])
    rows.append(["broken.jpg", "error", "", "", "", "", "", "", "", "", "", "", "", "", "CorruptImageError: x"])
    return rows


def write_label_output(tmp_path: Path, gt: dict, rows: list[list]) -> tuple[Path, Path]:
    out = tmp_path / "labels"
    out.mkdir()
    (out / "predictions.csv").write_text(csv_text([COLUMNS, *rows]))
    gt_path = tmp_path / "annotations.json"
    gt_path.write_text(json.dumps(gt))
    return out, gt_path
