"""Synthetic watch benchmark: generation speed, "clock" detection recall by size, and how fine-grained the brands are.

    python -m bench.watches_benchmark --data /tmp/watches [--brands 8 --photos-per-brand 40 --scenes 40 --seed 0]

1. Generates the dataset (unless ``--data`` already holds one) and times it.
2. Runs the offline COCO detector on every photo and scene: a ground-truth watch counts as found when a "clock"
   detection with score >= ``--min-score`` overlaps it with IoU >= 0.5 (one-to-one, highest score first, as in
   `pipelines.cli.evaluate.match_boxes`). Reports
   recall per size bucket (watch side / image's shorter side: < 15%, 15-25%, >= 25%), precision (matched clock
   detections / all clock detections at that score), the spread of each watch's best clock score, recall per
   background, and what the detector called the watches it missed.
3. On ground-truth crops of photos/: logistic regression on a colour histogram vs on frozen backbone features,
   5-fold stratified cross-validation, macro-F1.
4. With ``--test-photos-per-brand N``: a separate-seed test set of the same catalogue (``--test-seed``, generated in
   ``DATA_test`` unless there) and the same two models fitted on all of DATA's crops, scored on its crops (the linear
   probe of `classify.probe`).

    python -m bench.watches_benchmark --data /tmp/hard --difficulty hard --photos-per-brand 30 --scenes 0 \
        --test-photos-per-brand 10 --no-detection

Writes ``--output`` (default ``DATA/benchmark.json``) and prints a Markdown summary for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from detectcrop import boxes
from detectcrop.coco import COCO_NAMES, category_id
from detectcrop.io.images import read_image
from pipelines.cli.evaluate import match_boxes
from pipelines.synthetic import GroundTruthImage, generate, ground_truth_crops, load_ground_truth, read_catalogue

logger = logging.getLogger(__name__)

BUCKETS = (("<15%", 0.0, 0.15), ("15-25%", 0.15, 0.25), (">=25%", 0.25, 10.0))
CLOCK = category_id("clock")


# ---------------------------------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------------------------------
def detect_all(truth: Sequence[GroundTruthImage], preset: str) -> list[dict[str, Any]]:
    """Run the detector on every image; per image: ground truth and all detections with score >= 0.05."""
    from detectcrop import Detector

    detector = Detector.from_preset(preset)
    results = []
    for gt in tqdm(truth, desc="detect", unit="img"):
        dets = detector.detect(read_image(gt.path), min_score=0.05)
        results.append({
            "image": {"file_name": gt.file_name, "split": gt.split, "background": gt.background},
            "gt": gt.detections.xyxy.astype(np.float64),
            "rel_size": gt.detections.data["rel_size"].astype(np.float64),
            "xyxy": dets.xyxy.astype(np.float64),
            "scores": dets.scores.astype(np.float64),
            "class_ids": dets.class_ids,
        })  # fmt: skip
    return results


def _spread(scores: np.ndarray) -> dict[str, float]:
    if not len(scores):
        return {}
    qs = np.percentile(scores, [0, 10, 25, 50, 75, 90, 100])
    return dict(zip(("min", "p10", "p25", "median", "p75", "p90", "max"), np.round(qs, 3).tolist(), strict=True))


def detection_metrics(results: Sequence[dict[str, Any]], min_score: float = 0.3) -> dict[str, Any]:
    """Recall per size bucket, precision, best-score spread, recall per background, misses' best-overlap classes."""
    sizes, found, best, backgrounds, files, missed_as = [], [], [], [], [], Counter()
    tp = fp = 0
    for r in results:
        clock = (r["class_ids"] == CLOCK) & (r["scores"] >= min_score)
        hit = np.array(match_boxes(r["gt"], r["xyxy"][clock], r["scores"][clock]), int) >= 0
        tp, fp = tp + int(hit.sum()), fp + int(clock.sum() - hit.sum())
        all_clock = r["class_ids"] == CLOCK
        ious = boxes.iou(r["gt"], r["xyxy"]) if len(r["gt"]) and len(r["scores"]) else np.zeros((len(r["gt"]), 0))
        for g in range(len(r["gt"])):
            ok = all_clock & (ious[g] >= 0.5)
            best.append(float(r["scores"][ok].max()) if ok.any() else 0.0)
            if not hit[g] and ious.shape[1]:
                j = int(np.argmax(ious[g]))
                missed_as[COCO_NAMES.get(int(r["class_ids"][j]), "?") if ious[g, j] >= 0.5 else "nothing"] += 1
            elif not hit[g]:
                missed_as["nothing"] += 1
        sizes += r["rel_size"].tolist()
        found += hit.tolist()
        backgrounds += [r["image"].get("background", "?")] * len(r["gt"])
        files += [r["image"]["file_name"]] * len(r["gt"])
    sizes, found, best, backgrounds = np.array(sizes), np.array(found, bool), np.array(best), np.array(backgrounds)
    buckets = {}
    for name, lo, hi in BUCKETS:
        m = (sizes >= lo) & (sizes < hi)
        buckets[name] = {"n": int(m.sum()), "recall": round(float(found[m].mean()), 4) if m.any() else None,
                         "best_clock_score": _spread(best[m])}  # fmt: skip
    large = sizes >= 0.25
    by_background = {}
    for b in sorted(set(backgrounds[large])):
        m = large & (backgrounds == b)
        by_background[b] = {"n": int(m.sum()), "recall": round(float(found[m].mean()), 3)}
    return {
        "min_score": min_score, "min_iou": 0.5, "n_watches": len(sizes), "buckets": buckets,
        "recall_all": round(float(found.mean()), 4) if len(found) else None,
        "precision": round(tp / (tp + fp), 4) if tp + fp else None, "true_positives": tp, "false_positives": fp,
        "recall_ge25_by_background": by_background, "missed_best_overlap_class": dict(missed_as.most_common()),
        "per_watch": [{"file_name": f, "rel_size": round(float(s), 4), "best_clock_score": round(float(b), 4),
                       "found": bool(h)} for f, s, b, h in zip(files, sizes, best, found, strict=True)],
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# Fine-grained baseline
# ---------------------------------------------------------------------------------------------------------------------
def colour_histograms(crops: Sequence[np.ndarray], bins: int = 8) -> np.ndarray:
    """Joint RGB histograms (``bins``^3), L1-normalised then square-rooted (Hellinger)."""
    feats = []
    for crop in crops:
        hist = cv2.calcHist([crop], [0, 1, 2], None, [bins] * 3, [0, 256] * 3).ravel()
        feats.append(np.sqrt(hist / max(hist.sum(), 1.0)))
    return np.array(feats, np.float32)


def macro_f1_cv(features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Logistic regression (standardised features), stratified k-fold; pooled and per-fold macro-F1."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=1.0))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    pred = cross_val_predict(model, features, labels, cv=cv)
    per_fold = [f1_score(labels[test], pred[test], average="macro") for _, test in cv.split(features, labels)]
    return {
        "macro_f1": round(float(f1_score(labels, pred, average="macro")), 4),
        "fold_mean": round(float(np.mean(per_fold)), 4), "fold_std": round(float(np.std(per_fold)), 4),
        "feature_dim": int(features.shape[1]), "n": len(labels), "folds": folds,
    }  # fmt: skip


def fine_grained_metrics(truth: Sequence[GroundTruthImage], backbone_preset: str) -> dict[str, Any]:
    """Colour histogram vs backbone features on the ground-truth crops of ``truth`` (the product photos)."""
    from classify import Backbone

    gt = ground_truth_crops(truth)
    crops, labels = [c.image for c in gt], np.array([c.category_id for c in gt])
    hist = macro_f1_cv(colour_histograms(crops), labels)
    backbone = Backbone.from_preset(backbone_preset, include_top=False)
    t0 = time.perf_counter()
    feats = backbone.predict(crops)
    logger.info("backbone features for %d crops in %.1fs", len(crops), time.perf_counter() - t0)
    return {"colour_histogram_logreg": hist, f"{backbone_preset}_features_logreg": macro_f1_cv(feats, labels),
            "chance_macro_f1": round(1 / len(set(labels.tolist())), 4)}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------------------
def separate_seed_metrics(train: Sequence[GroundTruthImage], test: Sequence[GroundTruthImage],
                          backbone_preset: str) -> dict[str, Any]:
    """Colour-histogram logistic regression and the linear probe on backbone features, fitted on ``train``'s crops and
    scored (macro-F1) on ``test``'s."""
    from classify import Backbone
    from classify.probe import fit_linear_probe

    backbone = Backbone.from_preset(backbone_preset, include_top=False)
    sides = {}
    for name, truth in (("train", train), ("test", test)):
        gt = ground_truth_crops(truth)
        crops = [c.image for c in gt]
        sides[name] = (colour_histograms(crops), backbone.predict(crops), np.array([c.label for c in gt]))
    out: dict[str, Any] = {"n_train": len(sides["train"][2]), "n_test": len(sides["test"][2]),
                           "chance_macro_f1": round(1 / len(set(sides["train"][2].tolist())), 4)}  # fmt: skip
    for i, key in ((0, "colour_histogram_logreg"), (1, f"{backbone_preset}_linear_probe")):
        model = fit_linear_probe(sides["train"][i], sides["train"][2])
        predicted = model.predict(sides["test"][i])
        out[key] = round(float(f1_score(sides["test"][2], predicted, average="macro")), 4)
    return out


def _markdown(report: dict[str, Any]) -> str:
    if "detection_photos" not in report:
        return json.dumps({k: report[k] for k in ("fine_grained", "separate_seed") if k in report}, indent=1)
    det = report["detection_photos"]
    lines = ["| size bucket | watches | recall | best clock score min / p10 / median / p90 |", "|---|---|---|---|"]
    for name, b in det["buckets"].items():
        s = b["best_clock_score"]
        spread = f"{s['min']:.2f} / {s['p10']:.2f} / {s['median']:.2f} / {s['p90']:.2f}" if s else "-"
        lines.append(f"| {name} | {b['n']} | {b['recall']} | {spread} |")
    lines.append(f"\nphotos: precision {det['precision']} ({det['true_positives']} TP, {det['false_positives']} FP)")
    if "detection_scenes" in report:
        sc = report["detection_scenes"]
        lines.append(f"scenes: recall {sc['recall_all']} ({sc['n_watches']} watches), precision {sc['precision']}")
    for key, value in report.get("fine_grained", {}).items():
        if isinstance(value, dict):
            lines.append(f"{key}: macro-F1 {value['macro_f1']} (folds {value['fold_mean']} +- {value['fold_std']})")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.watches_benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="dataset folder (generated there unless it holds one)")
    parser.add_argument("--brands", type=int, default=8)
    parser.add_argument("--photos-per-brand", type=int, default=40)
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--detector", default="centernet_mobilenetv3_512")
    parser.add_argument("--backbone", default="mobilenet_v2_torchvision")
    parser.add_argument("--min-score", type=float, default=0.3)
    parser.add_argument("--no-fine-grained", action="store_true", help="detection only")
    parser.add_argument("--no-detection", action="store_true", help="fine-grained baselines only")
    parser.add_argument("--difficulty", choices=("normal", "hard"), default="normal")
    parser.add_argument("--test-photos-per-brand", type=int, default=0,
                        help="also score the baselines on a separate-seed test set of this size (0: off)")
    parser.add_argument("--test-seed", type=int, default=1)
    parser.add_argument("--output", help="JSON report (default DATA/benchmark.json)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    root = Path(args.data)
    report: dict[str, Any] = {"machine": f"{os.cpu_count()} CPU cores", "date": time.strftime("%Y-%m-%d")}
    if not (root / "annotations.json").exists():
        start = time.perf_counter()
        report["generation"] = generate(
            root, brands=args.brands, photos_per_brand=args.photos_per_brand, scenes=args.scenes, seed=args.seed,
            workers=args.workers, show_progress=True, difficulty=args.difficulty,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        n_images = report["generation"]["photos"] + report["generation"]["scenes"]
        report["generation"] |= {"seconds": round(seconds, 2), "images_per_s": round(n_images / seconds, 2)}
    truth = load_ground_truth(root / "annotations.json")
    if not args.no_detection:
        results = detect_all(truth, args.detector)
        photos = [r for r in results if r["image"]["split"] == "photos"]
        scenes = [r for r in results if r["image"]["split"] == "scenes"]
        report["detection_photos"] = detection_metrics(photos, args.min_score)
        if scenes:
            report["detection_scenes"] = detection_metrics(scenes, args.min_score)
    if not args.no_fine_grained:
        report["fine_grained"] = fine_grained_metrics([gt for gt in truth if gt.split == "photos"], args.backbone)
    if args.test_photos_per_brand:
        test_root = root.with_name(root.name + "_test")
        if not (test_root / "annotations.json").exists():
            generate(test_root, brands=args.brands, photos_per_brand=args.test_photos_per_brand, seed=args.test_seed,
                     workers=args.workers, difficulty=args.difficulty)  # fmt: skip
        if read_catalogue(test_root / "annotations.json") != read_catalogue(root / "annotations.json"):
            raise SystemExit(f"{test_root} was drawn from another catalogue than {root}")
        report["separate_seed"] = separate_seed_metrics(
            [gt for gt in truth if gt.split == "photos"],
            load_ground_truth(test_root / "annotations.json", split="photos"), args.backbone,
        )
    out = Path(args.output) if args.output else root / "benchmark.json"
    out.write_text(json.dumps(report, indent=1))
    print(_markdown(report))
    logger.info("report written to %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
