"""Label whole folders of photos: detect the parent category, classify each crop, account for every file.

    python -m pipelines.label --input PHOTOS --model RUN --output OUT --detector centernet_mobilenetv3_512 \\
        [--category clock] [--tile] [--top-k 3] [--unknown-below 0.5] [--open-set on|off] [--annotate] [--resume]

An object is labeled ``unknown`` when the model's open-set score is below the threshold saved with it (train_fine
chooses it to keep 95% of known validation objects; ``--open-set off`` turns this rule off) or when its top
probability is below ``--unknown-below``: either rule is enough.

Writes OUT/predictions.csv (one row per object; one row per image with no detection or an error),
OUT/results.coco.json (COCO format with scores), OUT/summary.json and, with --annotate, OUT/annotated/; with
--coco-gt FILE, OUT/results.coco-gt.json (a COCO results list keyed to FILE's ids).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from detectcrop.crops import CropPolicy
from detectcrop.folder_job import FolderJob
from detectcrop.ray_engine import RayError
from detectcrop.runtime.precision import CLASSIFIER_PRECISIONS
from detectcrop.tiling import TileConfig
from pipelines import cli


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.label", description="Detect and classify objects in every photo of a folder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--input", required=True, help="a photo folder (searched recursively) or one photo")
    p.add_argument("--model", required=True, help="a train_fine run folder (holding model.keras) or a .keras file")
    p.add_argument("--output", required=True, help="output folder (created if its parent exists)")
    cli.add_detection_args(p, what="classify")
    p.add_argument("--top-k", type=int, default=3, help="labels with probabilities kept per object")
    p.add_argument("--unknown-below", type=float, default=None,
                   help="answer 'unknown' when the top probability is below this (default: the model's own, "
                        "from train_fine --unknown-below); either this or --open-set makes an object unknown")
    p.add_argument("--open-set", choices=("on", "off"), default="on",
                   help="'unknown' when the model's open-set score is below the threshold saved with it (chosen at "
                        "training to keep 95%% of known validation objects); off: the probability floor alone")
    p.add_argument("--precision", choices=CLASSIFIER_PRECISIONS, default="auto",
                   help="classifier precision on LiteRT (--runtime litert or auto): dynamic: int8 weights, float "
                        "activations; int8 needs the representative crops train_fine saves beside model.keras; auto "
                        "(default): int8 only where its held-out top-1 agreement with the float model is >= 99%%, "
                        "else float")
    p.add_argument("--batch-size", type=int, default=32, help="crops classified per batch")
    p.add_argument("--annotate", action="store_true", help="also save copies with boxes and labels drawn")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --output")
    p.add_argument("--coco-gt", type=Path, default=None,
                   help="COCO ground truth: also write OUT/results.coco-gt.json, the results keyed to its image and "
                        "category ids (COCO.loadRes reads it; see `detectcrop evaluate` for how images match)")
    p.add_argument("--image-prefix", default=None, help="with --coco-gt: file_name = PREFIX + image (e.g. 'scenes/')")
    cli.add_common_args(p)
    return p


def main(argv: Sequence[str] | argparse.Namespace | None = None) -> int:
    """Run ``label`` on ``argv`` (or on arguments already parsed by `get_args_parser`, as the console does)."""
    args = argv if isinstance(argv, argparse.Namespace) else get_args_parser().parse_args(argv)
    cli.setup_logging(args.log_level)
    from pipelines.labeling import label_output

    model = Path(args.model)
    try:
        categories, policy, tile = cli.detection_settings(args)
        if not (model / "model.keras").is_file() and not (model.suffix == ".keras" and model.is_file()):
            raise FileNotFoundError(f"--model must be a train_fine run folder or a .keras file: {model}")
        if args.top_k < 1:
            raise ValueError("--top-k must be >= 1")
        if args.coco_gt is not None and not args.coco_gt.is_file():
            raise FileNotFoundError(f"--coco-gt does not exist: {args.coco_gt}")
        cli.join_ray_cluster(args)
        with label_output(args.input, args.output, engine=args.engine, ray=cli.ray_options(args),
                          show_progress=not args.no_progress) as job:  # before loading any model; a second run fails
            return _run(args, job, model, categories, policy, tile)
    except (ValueError, OSError, RayError) as exc:
        return cli.fail(exc)


def _run(args: argparse.Namespace, job: FolderJob, model: Path, categories: list[int], policy: CropPolicy,
         tile: TileConfig | None) -> int:
    from detectcrop.detector import ModelUnavailableError
    from pipelines.compose import DetectThenClassify
    from pipelines.labeling import label_into

    pipe = DetectThenClassify(
        args.detector, str(model), category=categories, min_score=args.min_score, crop_policy=policy, tile=tile,
        top_k=args.top_k, unknown_below=args.unknown_below, open_set=args.open_set == "on",
        batch_size=args.batch_size,
        max_pixels=args.max_pixels or None, runtime=args.runtime, precision=args.precision, decode=args.decode,
        detector_precision=args.detector_precision, detector_representative_data=args.detector_representative_data,
    )
    try:
        summary = label_into(pipe.load(), job, resume=args.resume, annotate=args.annotate, workers=args.workers,
                             prefetch=args.prefetch, **cli.decode_limits(args), run_config=pipe.to_config())
    except ModelUnavailableError as exc:
        return cli.fail(exc)
    for line in summary.lines():
        print(line)
    print(f"predictions: {Path(args.output) / 'predictions.csv'}")
    if args.coco_gt is not None:
        from pipelines.coco_results import RESULTS_GT_JSON, write_ground_truth_results

        write_ground_truth_results(args.output, args.coco_gt, Path(args.output) / RESULTS_GT_JSON, args.image_prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
