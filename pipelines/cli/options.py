"""What the command-line entry points share: the detection flags, their parsing, logging set-up."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from detectcrop import environment
from detectcrop.coco import category_id
from detectcrop.crops import CropPolicy
from detectcrop.decoding import DECODE_MODES, DEFAULT_DECODE
from detectcrop.io.images import DEFAULT_DECODE_BUDGET, DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_PIXELS
from detectcrop.ray_engine import RayOptions
from detectcrop.runtime.precision import DETECTOR_PRECISIONS
from detectcrop.tiling import TileConfig
from detectcrop.zoo import presets


def add_detection_args(p: argparse.ArgumentParser, what: str = "crop") -> None:
    """The detection and crop flags of build_crops and label (same names, same defaults)."""
    p.add_argument("--category", default="clock",
                   help=f"COCO category name or id to {what} (comma-separated for several)")
    p.add_argument("--detector", default=presets.default("detector"),
                   help=f"detector preset ({presets.describe('detector')}), a TF Hub or Kaggle Models handle or URL, "
                        "or a SavedModel path")
    p.add_argument("--min-score", type=float, default=0.3, help="minimum detection score")
    p.add_argument("--runtime", choices=("tf", "litert", "auto"), default="tf",
                   help="inference runtime: TensorFlow, LiteRT (CPU, XNNPACK; models converted once and cached; a "
                        "model that does not convert runs on TensorFlow) or auto (LiteRT without a GPU)")
    p.add_argument("--decode", choices=DECODE_MODES, default=DEFAULT_DECODE,
                   help="JPEG decoding for whole-image detection: full size, reduced (1/2-1/8 by DCT scaling, still "
                        "at least the detector's input size; crops still come from the full image, decoded only when "
                        "there is something to crop) or auto (reduced where it measurably pays)")
    p.add_argument("--detector-precision", choices=DETECTOR_PRECISIONS, default="auto",
                   help="detector precision on LiteRT (--runtime litert or auto): int8 needs "
                        "--detector-representative-data; auto (default): int8 only with it and where its held-out "
                        "detection recall is within 0.01 of float's, else float")
    p.add_argument("--detector-representative-data", default=None, metavar="FOLDER",
                   help="representative photos that set the int8 detector's activation ranges; FOLDER/heldout/ (with "
                        "optional heldout/boxes.json ground truth) measures it against float")
    p.add_argument("--detector-calibration", dest="detector_representative_data", help=argparse.SUPPRESS)
    p.add_argument("--pad", type=float, default=0.1, help="padding around each box, as a fraction of its size")
    p.add_argument("--square", action="store_true", help="square crops")
    p.add_argument("--min-size", type=int, default=32, help="skip boxes whose shorter side is under this (pixels)")
    p.add_argument("--max-crops", type=int, default=None, help="at most this many crops per image (best first)")
    p.add_argument("--tile", action="store_true", help="also detect on overlapping tiles (small objects; slower)")
    p.add_argument("--tile-fraction", type=float, default=TileConfig.tile_fraction,
                   help="tile side as a fraction of the image's shorter side (no tiles under 32 px; a very "
                        "elongated image gets larger tiles, at most 64)")
    p.add_argument("--tile-overlap", type=float, default=TileConfig.overlap, help="overlap between tiles")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="refuse images with more pixels (decompression bomb guard); 0 = no limit")
    p.add_argument("--max-image-mb", type=int, default=DEFAULT_MAX_IMAGE_BYTES // 2**20,
                   help="refuse images that need more memory than this to decode (MB; mode-aware); 0 = no limit")
    p.add_argument("--max-decode-mb", type=int, default=DEFAULT_DECODE_BUDGET // 2**20,
                   help="memory for images decoded ahead at once (MB); an image that needs more decodes alone")
    p.add_argument("--workers", type=int, default=2, help="image decoding threads")
    p.add_argument("--prefetch", type=int, default=8, help="images decoded ahead of the detector")
    g = p.add_argument_group("scale-out (Ray Data; needs the ray extra)")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process; ray: an actor pool on a local Ray or a cluster (same outputs)")
    g.add_argument("--ray-address", default=None,
                   help="join a Ray cluster ('auto' or HOST:PORT); default: start a local Ray on this machine's cores")
    g.add_argument("--actors", default="auto",
                   help="actors in the pool: N, MIN,MAX to scale with the work, or auto (1 up to one per "
                        "--cpus-per-actor cores of the cluster)")
    g.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPU cores per actor (its TensorFlow threads)")
    g.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs per actor (0: CPU only)")
    g.add_argument("--batch-per-actor", type=int, default=8, help="files per actor call")


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--log-level", default="INFO", help="logging level (DEBUG also shows TensorFlow's own logs)")


def detection_settings(args: argparse.Namespace) -> tuple[list[int], CropPolicy, TileConfig | None]:
    """``(category ids, crop policy, tile config or None)`` from parsed flags; ValueError on bad values."""
    categories = [category_id(c) for c in str(args.category).split(",") if c.strip()]
    if not categories:
        raise ValueError("--category names no category")
    policy = CropPolicy(pad=args.pad, square=args.square, min_size=args.min_size, max_crops=args.max_crops)
    tile = TileConfig(tile_fraction=args.tile_fraction, overlap=args.tile_overlap) if args.tile else None
    forced = [flag for flag in ("precision", "detector_precision") if getattr(args, flag, None) == "int8"]
    if forced and args.runtime in ("tf", "auto"):
        from detectcrop.runtime import resolve_runtime

        if resolve_runtime(args.runtime) == "tf":
            raise ValueError(f"--{forced[0].replace('_', '-')} int8 applies on LiteRT (--runtime litert, or auto "
                             "where LiteRT is installed and there is no GPU); TensorFlow runs float")
    return categories, policy, tile


def decode_limits(args: argparse.Namespace) -> dict[str, int | None]:
    """``max_image_bytes`` and ``decode_budget`` (bytes; ``None``: no limit) from ``--max-image-mb``,
    ``--max-decode-mb``."""
    return {"max_image_bytes": args.max_image_mb * 2**20 if args.max_image_mb > 0 else None,
            "decode_budget": args.max_decode_mb * 2**20 if args.max_decode_mb > 0 else None}


def ray_options(args: argparse.Namespace) -> RayOptions:
    """`RayOptions` from the scale-out flags (ValueError on bad values)."""
    return RayOptions(address=args.ray_address, actors=RayOptions.parse_actors(args.actors),
                      cpus_per_actor=args.cpus_per_actor, gpus_per_actor=args.gpus_per_actor,
                      batch_size=args.batch_per_actor)


def join_ray_cluster(args: argparse.Namespace) -> None:
    """With ``--engine ray --ray-address``, join the cluster now, before any model loads or output is written, so a
    cluster that is down or refuses this machine's token is one line (`RayConnectionError`) within seconds."""
    if args.engine == "ray" and args.ray_address:
        from detectcrop.ray_engine import connect

        connect(ray_options(args))


def whole_number(least: int, unit: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number (of ``unit``) >= ``least``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise argparse.ArgumentTypeError(f"expected a whole number{' of ' + unit if unit else ''} >= {least}, "
                                             f"got {text!r}")
        return value

    return parse


def probability(text: str) -> float:
    """An argparse type: a probability in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text!r}")
    return value


def setup_logging(level: str) -> None:
    """Configure logging for a command; below DEBUG, keep TensorFlow's own log lines out (before it is imported)."""
    environment.quiet_tensorflow(level)
    logging.basicConfig(level=level.upper(), format="%(levelname)s %(name)s: %(message)s")


def fail(message: object) -> int:
    """Report a usage or input error on stderr; the exit status for it."""
    print(f"error: {message}", file=sys.stderr)
    return 2
