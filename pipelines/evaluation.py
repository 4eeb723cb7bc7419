"""Score a `label` output against COCO ground truth: COCO box metrics per fine-grained class (pycocotools), detection
recall/precision, label accuracy and the unknown rate (``OUT/evaluation.json``), and the COCO results list keyed to
the ground truth's ids (``OUT/results.coco-gt.json``). Needs pycocotools (``pip install 'detectcrop[eval]'``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from detectcrop import boxes as bx
from pipelines.coco_results import load_coco
from pipelines.results import ImageResult, as_results


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


def evaluate_predictions(coco_gt: dict[str, Any] | str | os.PathLike,
                         rows: Iterable[ImageResult | Mapping[str, str]], image_prefix: str = "",
                         iou_threshold: float = 0.5) -> dict[str, Any]:
    """Compare a label output's images (`ImageResult` s, or its ``predictions.csv`` rows) with COCO ground truth.

    Args:
        coco_gt: the ground-truth dict or its JSON path (``file_name`` relative to some root).
        rows: the labeled images (``image`` relative to the labeled folder), or predictions.csv rows.
        image_prefix: prepended to a row's ``image`` to form the ground truth's ``file_name`` (e.g. ``"scenes/"``).

    Returns:
        ``n_images``, ``n_objects``, ``n_found``, ``recall``, ``n_predictions``, ``precision`` (of detections), and
        ``label_accuracy`` on the found objects (``None`` when none were found).
    """
    coco_gt = load_coco(coco_gt)
    names = {c["id"]: c["name"] for c in coco_gt["categories"]}
    gt_by_file: dict[str, list[tuple[list[float], str]]] = {}
    id_to_file = {im["id"]: im["file_name"] for im in coco_gt["images"]}
    preds = {image_prefix + im.image: im for im in as_results(rows)}
    for ann in coco_gt["annotations"]:
        file_name = id_to_file[ann["image_id"]]
        if file_name in preds:
            x, y, w, h = ann["bbox"]
            gt_by_file.setdefault(file_name, []).append(([x, y, x + w, y + h], names[ann["category_id"]]))
    n_objects = n_found = n_correct = n_pred = 0
    for file_name, labeled in preds.items():
        gt = gt_by_file.get(file_name, [])
        dets = labeled.detections
        matched = match_boxes(np.array([g[0] for g in gt]).reshape(-1, 4), dets.xyxy, dets.scores, iou_threshold)
        n_objects += len(gt)
        n_pred += len(dets)
        for (_, brand), m in zip(gt, matched, strict=True):
            if m >= 0:
                n_found += 1
                n_correct += labeled.labels[m] == brand
    return {
        "n_images": len(preds), "n_objects": n_objects, "n_found": n_found,
        "recall": n_found / n_objects if n_objects else None,
        "n_predictions": n_pred, "precision": n_found / n_pred if n_pred else None,
        "label_accuracy": n_correct / n_found if n_found else None,
    }


# ---- COCO detection metrics per fine-grained class (pycocotools) --------------------------------------------------

EVALUATION_JSON = "evaluation.json"
#: pycocotools' summary numbers, in its `stats` order.
COCO_STATS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100", "AR_small",
              "AR_medium", "AR_large")


def _nan_to_none(value: float) -> float | None:
    return None if value < 0 or not np.isfinite(value) else round(float(value), 6)


def coco_metrics(coco_gt: dict[str, Any], results: list[dict[str, Any]], image_ids: Iterable[int]) -> dict[str, Any]:
    """COCO box metrics of ``results`` on the ground-truth images ``image_ids`` (pycocotools' COCOeval).

    Returns ``{"coco": {AP, AP50, AP75, AP_small, ..., AR100, ...}, "per_class": {name: {AP, AP50, AP75, AR100,
    n_ground_truth, n_predictions}}}``; a metric with nothing to measure (e.g. no small objects) is ``None``.
    """
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    image_ids = sorted(set(image_ids))
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = {"images": coco_gt["images"], "annotations": coco_gt["annotations"],
                      "categories": coco_gt["categories"]}
        gt.createIndex()
        dt = gt.loadRes([dict(r) for r in results]) if results else COCO()
        if not results:
            dt.dataset = {"images": coco_gt["images"], "annotations": [], "categories": coco_gt["categories"]}
            dt.createIndex()
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = image_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    coco = {name: _nan_to_none(v) for name, v in zip(COCO_STATS, ev.stats, strict=True)}
    precision, recall = ev.eval["precision"], ev.eval["recall"]  # [T, R, K, A, M], [T, K, A, M]
    t50, t75 = (int(np.argmin(np.abs(ev.params.iouThrs - t))) for t in (0.5, 0.75))
    in_images = set(image_ids)
    per_class = {}
    for k, cat_id in enumerate(ev.params.catIds):
        def mean(values: np.ndarray) -> float | None:
            values = values[values > -1]
            return _nan_to_none(float(values.mean())) if values.size else None

        name = gt.cats[cat_id]["name"]
        n_gt = sum(1 for a in gt.imgToAnns.values() for ann in a
                   if ann["category_id"] == cat_id and ann["image_id"] in in_images)
        n_dt = sum(1 for r in results if r["category_id"] == cat_id)
        if not n_gt and not n_dt:
            continue
        per_class[name] = {"AP": mean(precision[:, :, k, 0, -1]), "AP50": mean(precision[t50, :, k, 0, -1]),
                           "AP75": mean(precision[t75, :, k, 0, -1]), "AR100": mean(recall[:, k, 0, -1]),
                           "n_ground_truth": n_gt, "n_predictions": n_dt}
    return {"coco": coco, "per_class": per_class}


def evaluate_folder(predictions: str | os.PathLike, coco_gt: dict[str, Any] | str | os.PathLike,
                    image_prefix: str | None = None, unknown_label: str = "unknown") -> dict[str, Any]:
    """Score a `label` output folder against COCO ground truth (see `pipelines.coco_results` for how images match).

    Returns the `coco_metrics` dict plus ``matching`` (images evaluated, labeled images with no ground truth, labels
    with no ground-truth category), ``labels`` (`evaluate_predictions` at IoU 0.5: detection recall/precision and
    label accuracy on matched objects) and ``unknown_rate`` (share of detected objects labeled ``unknown_label``).
    """
    from pipelines.coco_results import results_for_ground_truth
    from pipelines.results import read_results

    coco_gt = load_coco(coco_gt)
    results = read_results(predictions)
    keyed = results_for_ground_truth(results, coco_gt, image_prefix)
    if not keyed.image_ids:
        raise ValueError("no labeled image matches a ground-truth file_name; pass --image-prefix (the labeled "
                         "folder's path under the ground truth's root, e.g. 'scenes/')")
    by_id = {im["id"]: im["file_name"] for im in coco_gt["images"]}
    matched = [dataclasses.replace(r, source=by_id[keyed.image_ids[r.image]]) for r in results
               if r.image in keyed.image_ids]
    labels = [label for r in results if r.status == "ok" for label in r.labels]
    report = coco_metrics(coco_gt, keyed.results, keyed.image_ids.values())
    report["labels"] = evaluate_predictions(coco_gt, matched)
    report["unknown_rate"] = (sum(label == unknown_label for label in labels) / len(labels)) if labels else None
    report["matching"] = {"images_evaluated": len(keyed.image_ids), "images_without_ground_truth":
                          keyed.unmatched_images, "labels_without_category": keyed.unknown_labels,
                          "image_prefix": image_prefix, "score": "det_score * probability"}
    return report


def format_table(report: dict[str, Any]) -> list[str]:
    """The report as text lines: the COCO summary, then one row per class."""
    def cell(v: float | None) -> str:
        return "   -  " if v is None else f"{v:6.3f}"

    coco, labels = report["coco"], report["labels"]
    lines = ["  ".join(f"{k}={cell(coco[k]).strip()}" for k in ("AP", "AP50", "AP75", "AR100")),
             "  ".join(f"{k}={cell(coco[k]).strip()}" for k in ("AP_small", "AP_medium", "AP_large")),
             f"{'class':24s} {'AP':>6s} {'AP50':>6s} {'AP75':>6s} {'AR100':>6s} {'gt':>5s} {'pred':>5s}"]
    for name, m in sorted(report["per_class"].items()):
        lines.append(f"{name[:24]:24s} {cell(m['AP'])} {cell(m['AP50'])} {cell(m['AP75'])} {cell(m['AR100'])} "
                     f"{m['n_ground_truth']:5d} {m['n_predictions']:5d}")
    acc, rate = labels["label_accuracy"], report["unknown_rate"]
    lines.append(f"detection recall (IoU>=0.5, any label): {labels['n_found']}/{labels['n_objects']}; "
                 f"label accuracy on found objects: {'-' if acc is None else f'{acc:.1%}'}; "
                 f"unknown rate: {'-' if rate is None else f'{rate:.1%}'}")
    return lines


def write_evaluation(predictions: str | os.PathLike, coco_gt: dict[str, Any] | str | os.PathLike,
                     image_prefix: str | None = None, unknown_label: str = "unknown") -> tuple[dict[str, Any], Path]:
    """`evaluate_folder`, written to ``OUT/evaluation.json`` with ``OUT/results.coco-gt.json`` beside it (``OUT``:
    the label output folder, or the folder of the predictions.csv given); the report and its path."""
    from detectcrop.io import atomic_write_text
    from pipelines.coco_results import RESULTS_GT_JSON, write_ground_truth_results

    predictions = Path(predictions)
    out = predictions if predictions.is_dir() else predictions.parent
    report = evaluate_folder(predictions, coco_gt, image_prefix, unknown_label)
    write_ground_truth_results(predictions, coco_gt, out / RESULTS_GT_JSON, image_prefix)
    atomic_write_text(out / EVALUATION_JSON, json.dumps(report, indent=2) + "\n")
    return report, out / EVALUATION_JSON
