"""Score labeled predictions against COCO ground truth: COCO box metrics per fine-grained class (pycocotools),
detection recall/precision, label accuracy and the unknown rate.

    python -m pipelines.evaluate --predictions OUT --ground-truth annotations.json [--image-prefix scenes/]
    detectcrop evaluate ...   # the same

Writes ``OUT/evaluation.json`` (``coco``: AP, AP50, AP75, AP per size, AR; ``per_class``; ``labels``;
``unknown_rate``; ``matching``) and ``OUT/results.coco-gt.json`` (the COCO results list keyed to the ground truth's
ids), and prints a table. Needs pycocotools (``pip install 'detectcrop[eval]'``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.evaluation import (
    COCO_STATS,
    EVALUATION_JSON,
    coco_metrics,
    evaluate_folder,
    evaluate_predictions,
    format_table,
    match_boxes,
    write_evaluation,
)

__all__ = ["COCO_STATS", "EVALUATION_JSON", "coco_metrics", "evaluate_folder", "evaluate_predictions",
           "format_table", "get_args_parser", "main", "match_boxes", "write_evaluation"]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.evaluate",
        description="COCO detection metrics per fine-grained class (pycocotools) of a `label` output folder against "
                    "COCO ground truth, plus label accuracy and the unknown rate. Writes OUT/evaluation.json and "
                    "OUT/results.coco-gt.json.",
    )
    p.add_argument("--predictions", required=True, type=Path, help="a `label` output folder (its predictions.csv)")
    p.add_argument("--ground-truth", required=True, type=Path, help="COCO annotations JSON (categories = labels)")
    p.add_argument("--image-prefix", default=None,
                   help="the labeled folder's path under the ground truth's root (e.g. 'scenes/'): file_name = "
                        "PREFIX + image; default: exact name, else the unique file_name ending in '/' + image")
    p.add_argument("--unknown-label", default="unknown", help="the label the classifier answers when unsure")
    p.add_argument("--log-level", default="WARNING", help="logging level")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    from pipelines.cli import fail, setup_logging

    setup_logging(args.log_level)
    try:
        report, path = write_evaluation(args.predictions, args.ground_truth, args.image_prefix, args.unknown_label)
    except ImportError as exc:
        return fail(ValueError(f"{exc}; install the eval extra: pip install 'detectcrop[eval]'"))
    except (ValueError, OSError, KeyError) as exc:
        return fail(exc)
    for line in format_table(report):
        print(line)
    print(f"evaluation: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
