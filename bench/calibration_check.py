"""Calibration of saved train_fine runs on a large set of ground-truth crops (the test sets of a run are often too
small to see an ECE of a few percent), and what recalibration on crops from another photo set changes.

    python -m bench.calibration_check --photos BIG [--recalibrate-on CAL] RUN [RUN ...]

``BIG`` (and ``CAL``) are `pipelines.cli.make_watches` outputs. Every run is scored on the ground-truth crops of ``BIG``
of the classes it knows, with its own saved temperature: accuracy, ECE before/after and NLL before/after
(`classify.calibration.calibration_report`), and the share of those known crops its open-set rule marks unknown
(and of ``BIG``'s crops of brands it does not know, with the AUROC). With ``--recalibrate-on``, the run is also
recalibrated (`classify.recalibration.recalibrate`, nothing saved) on ``CAL``'s crops and scored again on ``BIG``:
crops the recalibration never saw. One JSON line per run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def _crops(photos: Path, classes: set[str]) -> tuple[list, list, list]:
    """``(known images, their labels, images of other classes)`` of a make_watches output's ground truth."""
    from pipelines.synthetic import ground_truth_crops, load_ground_truth

    crops = ground_truth_crops(load_ground_truth(photos / "annotations.json", split="photos"))
    known = [c for c in crops if c.label in classes]
    return [c.image for c in known], [c.label for c in known], [c.image for c in crops if c.label not in classes]


def _score(clf: Any, images: list, labels: list, unseen: list, split: str) -> dict[str, Any]:
    from classify.calibration import calibration_report
    from classify.recalibration import ScoredCrops, calibration_state

    crops = ScoredCrops.of(clf, images, labels, unseen)
    return {"accuracy": float(np.mean(crops.logits.argmax(1) == crops.y)), "n_unseen": len(unseen),
            **calibration_report(crops.logits, crops.y, clf.temperature_, split),
            **calibration_state(clf, crops, clf.temperature_, clf.open_set_threshold_)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", type=Path, required=True, help="a make_watches output folder to score on")
    p.add_argument("--recalibrate-on", type=Path, default=None, help="a make_watches output folder to recalibrate on")
    p.add_argument("runs", type=Path, nargs="+", help="train_fine run folders")
    args = p.parse_args(argv)

    from classify import FineClassifier
    from classify.recalibration import recalibrate

    for run in args.runs:
        clf = FineClassifier.load(run)
        classes = set(clf.classes_.tolist())
        images, labels, unseen = _crops(args.photos, classes)
        result = {"run": str(run), "as_trained": _score(clf, images, labels, unseen, args.photos.name)}
        if args.recalibrate_on is not None:
            cal_images, cal_labels, cal_unseen = _crops(args.recalibrate_on, classes)
            fit = recalibrate(clf, cal_images, cal_labels, unseen=cal_unseen, split=args.recalibrate_on.name)
            result["recalibration_in_sample"] = fit.report
            result["recalibrated"] = _score(clf, images, labels, unseen, args.photos.name)
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
