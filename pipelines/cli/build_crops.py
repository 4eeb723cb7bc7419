"""Build a crop dataset: detect a COCO category in a photo folder and save the boxes as class-folder crops.

    python -m pipelines.build_crops --input PHOTOS --output CROPS --category clock \\
        --detector centernet_mobilenetv3_512 [--min-score 0.3] [--pad 0.1] [--square] [--tile] [--resume]

PHOTOS' subfolders are mirrored (PHOTOS/rolex/a.jpg -> CROPS/rolex/a_0.jpg); CROPS/images.csv accounts for every
input file and CROPS/crops.csv for every crop (see `detectcrop.dataset`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from detectcrop.crops import CropPolicy
from detectcrop.dataset import build_crops_into, crop_output
from detectcrop.dedupe import DEFAULT_MAX_DISTANCE
from detectcrop.folder_job import FolderJob
from detectcrop.ray_engine import RayError
from detectcrop.tiling import TileConfig
from pipelines import cli


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.build_crops",
        description="Detect a COCO category in every photo of a folder and save the detections as a crop dataset.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--input", required=True, help="photo folder (subfolders = class labels, mirrored in the output)")
    p.add_argument("--output", required=True, help="crop dataset folder (created if its parent exists)")
    cli.add_detection_args(p, what="crop")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --output")
    p.add_argument("--drop-duplicates", action="store_true",
                   help="delete all but the first crop of each near-duplicate group (crops.csv keeps them, dropped=1)")
    p.add_argument("--dedupe-distance", type=int, default=DEFAULT_MAX_DISTANCE,
                   help="perceptual-hash Hamming radius (of 64 bits) for near-duplicates")
    cli.add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    cli.setup_logging(args.log_level)
    try:
        categories, policy, tile = cli.detection_settings(args)
        cli.join_ray_cluster(args)
        with crop_output(args.input, args.output, engine=args.engine, ray=cli.ray_options(args),
                         show_progress=not args.no_progress) as job:  # before loading any model; a second run fails
            return _run(args, job, categories, policy, tile)
    except (ValueError, OSError, RayError) as exc:
        return cli.fail(exc)


def _run(args: argparse.Namespace, job: FolderJob, categories: list[int], policy: CropPolicy,
         tile: TileConfig | None) -> int:
    from detectcrop.detector import Detector, ModelUnavailableError

    try:
        detector = Detector.from_preset(args.detector, runtime=args.runtime, precision=args.detector_precision,
                                        representative_data=args.detector_representative_data)
    except (ModelUnavailableError, ValueError) as exc:
        return cli.fail(exc)
    summary = build_crops_into(
        job, detector, category=categories, min_score=args.min_score, policy=policy, tile=tile, resume=args.resume,
        drop_duplicates=args.drop_duplicates, max_distance=args.dedupe_distance, max_pixels=args.max_pixels or None,
        **cli.decode_limits(args), workers=args.workers, prefetch=args.prefetch, decode=args.decode,
    )
    for line in summary.lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
