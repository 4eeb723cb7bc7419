"""Build a crop dataset: detect a COCO category in a photo folder and save the boxes as class-folder crops.

    python -m pipelines.build_crops --input PHOTOS --output CROPS --category clock \\
        --detector centernet_mobilenetv3_512 [--min-score 0.3] [--pad 0.1] [--square] [--tile] [--resume]

PHOTOS' subfolders are mirrored (PHOTOS/rolex/a.jpg -> CROPS/rolex/a_0.jpg); CROPS/images.csv accounts for every
input file and CROPS/crops.csv for every crop (see `detectcrop.dataset`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from detectcrop.coco import category_id
from detectcrop.crops import CropPolicy
from detectcrop.dataset import OutputLocationError, build_crops, check_locations
from detectcrop.dedupe import DEFAULT_MAX_DISTANCE
from detectcrop.images import DEFAULT_MAX_PIXELS
from detectcrop.tiling import TileConfig
from detectcrop.zoo import DEFAULT_DETECTOR, OFFLINE_DETECTOR

logger = logging.getLogger("pipelines.build_crops")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.build_crops",
        description="Detect a COCO category in every photo of a folder and save the detections as a crop dataset.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--input", required=True, help="photo folder (subfolders = class labels, mirrored in the output)")
    p.add_argument("--output", required=True, help="crop dataset folder (created if its parent exists)")
    p.add_argument("--category", default="clock", help="COCO category name or id to crop (comma-separated for several)")
    p.add_argument("--detector", default=DEFAULT_DETECTOR,
                   help=f"detector preset, TF Hub handle or SavedModel path (offline: {OFFLINE_DETECTOR})")
    p.add_argument("--min-score", type=float, default=0.3, help="minimum detection score")
    p.add_argument("--pad", type=float, default=0.1, help="padding around each box, as a fraction of its size")
    p.add_argument("--square", action="store_true", help="square crops")
    p.add_argument("--min-size", type=int, default=32, help="skip boxes whose shorter side is under this (pixels)")
    p.add_argument("--max-crops", type=int, default=None, help="at most this many crops per image (best first)")
    p.add_argument("--tile", action="store_true", help="also detect on overlapping tiles (small objects; slower)")
    p.add_argument("--tile-fraction", type=float, default=TileConfig.tile_fraction,
                   help="tile side as a fraction of the image's shorter side")
    p.add_argument("--tile-overlap", type=float, default=TileConfig.overlap, help="overlap between tiles")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --output")
    p.add_argument("--drop-duplicates", action="store_true",
                   help="delete all but the first crop of each near-duplicate group (crops.csv keeps them, dropped=1)")
    p.add_argument("--dedupe-distance", type=int, default=DEFAULT_MAX_DISTANCE,
                   help="perceptual-hash Hamming radius (of 64 bits) for near-duplicates")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="refuse images with more pixels (decompression bomb guard); 0 = no limit")
    p.add_argument("--workers", type=int, default=2, help="image decoding threads")
    p.add_argument("--prefetch", type=int, default=8, help="images decoded ahead of the detector")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--log-level", default="INFO", help="logging level")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        categories = [category_id(c) for c in str(args.category).split(",") if c.strip()]
        policy = CropPolicy(pad=args.pad, square=args.square, min_size=args.min_size, max_crops=args.max_crops)
        tile = TileConfig(tile_fraction=args.tile_fraction, overlap=args.tile_overlap) if args.tile else None
        check_locations(args.input, args.output)  # before loading any model
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from detectcrop.detector import Detector, ModelUnavailableError

    try:
        detector = Detector.from_preset(args.detector)
    except (ModelUnavailableError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        summary = build_crops(
            args.input, args.output, detector, category=categories, min_score=args.min_score, policy=policy,
            tile=tile, resume=args.resume, drop_duplicates=args.drop_duplicates, max_distance=args.dedupe_distance,
            max_pixels=args.max_pixels or None, workers=args.workers, prefetch=args.prefetch,
            show_progress=not args.no_progress,
        )
    except (OutputLocationError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in summary.lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
