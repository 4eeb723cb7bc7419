"""Score labeled predictions against COCO ground truth: detection recall/precision and label accuracy."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from detectcrop import boxes as bx


def match_boxes(gt: np.ndarray, pred: np.ndarray, pred_scores: np.ndarray, iou_threshold: float = 0.5) -> list[int]:
    """Greedy one-to-one matching, highest-scoring prediction first: for each ground-truth box the index of its
    matched prediction, or -1."""
    matched = [-1] * len(gt)
    if len(gt) == 0 or len(pred) == 0:
        return matched
    ious = bx.iou(np.asarray(pred, np.float64), np.asarray(gt, np.float64))
    for p in np.argsort(-np.asarray(pred_scores), kind="stable"):
        free = [g for g in range(len(gt)) if matched[g] < 0 and ious[p, g] >= iou_threshold]
        if free:
            matched[max(free, key=lambda g: ious[p, g])] = int(p)
    return matched


def evaluate_predictions(coco_gt: dict[str, Any] | str | os.PathLike, rows: Iterable[dict[str, str]],
                         image_prefix: str = "", iou_threshold: float = 0.5) -> dict[str, Any]:
    """Compare ``predictions.csv`` rows with COCO ground truth.

    Args:
        coco_gt: the ground-truth dict or its JSON path (``file_name`` relative to some root).
        rows: prediction rows (``image`` relative to the labeled folder).
        image_prefix: prepended to a row's ``image`` to form the ground truth's ``file_name`` (e.g. ``"scenes/"``).

    Returns:
        ``n_images``, ``n_objects``, ``n_found``, ``recall``, ``n_predictions``, ``precision`` (of detections), and
        ``label_accuracy`` on the found objects (``None`` when none were found).
    """
    if not isinstance(coco_gt, dict):
        coco_gt = json.loads(Path(coco_gt).read_text())
    names = {c["id"]: c["name"] for c in coco_gt["categories"]}
    gt_by_file: dict[str, list[tuple[list[float], str]]] = {}
    id_to_file = {im["id"]: im["file_name"] for im in coco_gt["images"]}
    preds: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        preds.setdefault(image_prefix + row["image"], [])
        if row["status"] == "ok":
            preds[image_prefix + row["image"]].append(row)
    files = set(preds)
    for ann in coco_gt["annotations"]:
        file_name = id_to_file[ann["image_id"]]
        if file_name in files:
            x, y, w, h = ann["bbox"]
            gt_by_file.setdefault(file_name, []).append(([x, y, x + w, y + h], names[ann["category_id"]]))
    n_objects = n_found = n_correct = n_pred = 0
    for file_name in files:
        gt = gt_by_file.get(file_name, [])
        rows_here = preds[file_name]
        pred_boxes = np.array([[float(r[k]) for k in ("x1", "y1", "x2", "y2")] for r in rows_here]).reshape(-1, 4)
        scores = np.array([float(r["det_score"]) for r in rows_here])
        matched = match_boxes(np.array([g[0] for g in gt]).reshape(-1, 4), pred_boxes, scores, iou_threshold)
        n_objects += len(gt)
        n_pred += len(rows_here)
        for (_, brand), m in zip(gt, matched, strict=True):
            if m >= 0:
                n_found += 1
                n_correct += rows_here[m]["label"] == brand
    return {
        "n_images": len(files), "n_objects": n_objects, "n_found": n_found,
        "recall": n_found / n_objects if n_objects else None,
        "n_predictions": n_pred, "precision": n_found / n_pred if n_pred else None,
        "label_accuracy": n_correct / n_found if n_found else None,
    }
