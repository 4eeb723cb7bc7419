"""Export a `label` output folder for review tools: Label Studio pre-annotations and YOLO txt.

    python -m pipelines.export --predictions OUT --format labelstudio [--image-url PREFIX] [--model-version V]
    python -m pipelines.export --predictions OUT --format yolo [--confidence]
    detectcrop export ...   # the same

What each format writes, and how review tools read it: `pipelines.exports`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.exports import (
    LABELSTUDIO_JSON,
    LABELSTUDIO_XML,
    YOLO_DIR,
    check_target,
    class_names,
    labelstudio_config,
    labelstudio_tasks,
    write_labelstudio,
    write_yolo,
    yolo_lines,
)

__all__ = ["LABELSTUDIO_JSON", "LABELSTUDIO_XML", "YOLO_DIR", "check_target", "class_names", "get_args_parser",
           "labelstudio_config", "labelstudio_tasks", "main", "write_labelstudio", "write_yolo", "yolo_lines"]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.export",
                                description="Export a `label` output folder for review tools.")
    p.add_argument("--predictions", required=True, type=Path, help="a `label` output folder (its predictions.csv)")
    p.add_argument("--format", required=True, choices=["labelstudio", "yolo"])
    p.add_argument("--output", type=Path, default=None,
                   help=f"where to write (default: OUT/{LABELSTUDIO_JSON} with OUT/{LABELSTUDIO_XML} beside it, "
                        f"or OUT/{YOLO_DIR}/)")
    p.add_argument("--image-url", default="",
                   help="labelstudio: prefix of each image's relative path in data.image "
                        "(e.g. '/data/local-files/?d=photos/')")
    p.add_argument("--model-version", default="detectcrop", help="labelstudio: the predictions' model_version")
    p.add_argument("--confidence", action="store_true", help="yolo: a sixth column with the confidence")
    p.add_argument("--log-level", default="WARNING", help="logging level")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    from pipelines.cli import fail, setup_logging

    setup_logging(args.log_level)
    try:
        if not args.predictions.is_dir():
            raise FileNotFoundError(f"--predictions must be a `label` output folder: {args.predictions}")
        if args.format == "labelstudio":
            path = write_labelstudio(args.predictions, args.output, image_url=args.image_url,
                                     model_version=args.model_version)
        else:
            path = write_yolo(args.predictions, args.output, confidence=args.confidence)
    except (ValueError, OSError) as exc:
        return fail(exc)
    print(f"{args.format}: {path}")
    if args.format == "labelstudio":
        print(f"labelstudio label config: {path.with_suffix('.xml')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
