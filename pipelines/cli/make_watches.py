"""Write the synthetic fine-grained watch benchmark.

    python -m pipelines.make_watches OUT --brands 8 --photos-per-brand 40 --seed 0 [--scenes N] [--size 640x480]
        [--difficulty normal|hard]

Writes ``OUT/photos/<brand>/*.jpg`` (one watch per photo), ``OUT/scenes/*.jpg`` (0 or 2-4 watches) and
``OUT/annotations.json`` (COCO ground truth and the brand catalogue, written last). Same seed -> same bytes.
Brand names always mean the same watch designs (the default catalogue) unless ``--brand-seed`` draws another one.
``--difficulty hard`` writes the hard variant: 20 brands (by default) that differ in only 2-3 fine details, one
shared word on every dial, more variation within a brand, smaller, tilted, partly covered watches under harsher
light (`pipelines.synthetic.difficulty`); ``normal`` is the original benchmark.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence

from pipelines.synthetic import CATALOGUE_SEED, generate
from pipelines.synthetic.difficulty import DIFFICULTIES, HARD_BRANDS

logger = logging.getLogger(__name__)


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}") from None
    return width, height


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.make_watches", description=__doc__.split("\n")[0])
    parser.add_argument("out", help="output folder")
    parser.add_argument("--brands", type=int, default=None,
                        help="number of brands (classes): default 8 (normal, at most 26) or 20 (hard, at most 20)")
    parser.add_argument("--photos-per-brand", type=int, default=40, help="single-watch photos per brand")
    parser.add_argument("--scenes", type=int, default=0, help="multi-watch scenes for batch labeling")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--brand-seed", type=int, default=CATALOGUE_SEED,
                        help="seed of the brand catalogue (default: the fixed catalogue, whatever --seed); another "
                             "value draws new designs under the same names")
    parser.add_argument("--difficulty", choices=DIFFICULTIES, default="normal",
                        help="'normal' (the original benchmark) or 'hard' (fine-grained headroom)")
    parser.add_argument("--size", type=_size, default=(640, 480), help="image size WIDTHxHEIGHT (default 640x480)")
    parser.add_argument("--workers", type=int, default=1, help="processes (output does not depend on it)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a watch dataset made earlier in OUT (never other files)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    start = time.perf_counter()
    try:
        summary = generate(
            args.out,
            brands=args.brands if args.brands is not None else (HARD_BRANDS if args.difficulty == "hard" else 8),
            difficulty=args.difficulty,
            photos_per_brand=args.photos_per_brand,
            scenes=args.scenes,
            seed=args.seed,
            brand_seed=args.brand_seed,
            size=args.size,
            workers=args.workers,
            overwrite=args.overwrite,
            show_progress=not args.quiet,
        )
    except (FileExistsError, ValueError) as err:
        parser.error(str(err))
    seconds = time.perf_counter() - start
    n_images = summary["photos"] + summary["scenes"]
    logger.info("%d images in %.1f s (%.1f images/s)", n_images, seconds, n_images / max(seconds, 1e-9))
    logger.info("summary: %s", json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
