"""Calibration of saved train_fine runs on a large set of ground-truth crops (the test sets of a run are often too
small to see an ECE of a few percent).

    python -m bench.calibration_check --photos BIG RUN [RUN ...]

``BIG`` is a `pipelines.make_watches` output (``BIG/annotations.json``); every run is scored on the ground-truth crops
of the classes it knows, with its own saved temperature: accuracy, ECE before/after and NLL before/after
(`classify.calibration.calibration_report`), one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", type=Path, required=True, help="a make_watches output folder")
    p.add_argument("runs", type=Path, nargs="+", help="train_fine run folders")
    args = p.parse_args(argv)

    from classify import FineClassifier
    from classify.calibration import calibration_report
    from pipelines.synthetic import ground_truth_crops, load_ground_truth

    crops = list(ground_truth_crops(load_ground_truth(args.photos / "annotations.json", split="photos")))
    for run in args.runs:
        clf = FineClassifier.load(run)
        known = [c for c in crops if c.label in set(clf.classes_.tolist())]
        y = np.searchsorted(clf.classes_, np.array([c.label for c in known], dtype=object))
        logits, _ = clf.logits_and_features([c.image for c in known])
        report = calibration_report(logits, y, clf.temperature_, args.photos.name)
        print(json.dumps({"run": str(run), "accuracy": float(np.mean(logits.argmax(1) == y)), **report}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
