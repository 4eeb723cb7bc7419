"""Peak memory of build_crops on huge palette PNGs (small files, 225 MP each): with and without the decode budget.

    python -m bench.decode_memory_benchmark [--work DIR] [--count 6] [--side 15000]

Runs ``python -m pipelines.build_crops`` under ``/usr/bin/time -v`` on a folder of ``count`` palette PNGs of
``side`` x ``side`` pixels, once with the default decode budget and once with ``--max-decode-mb 0`` (no budget), and
prints the maximum resident set size of each run as a Markdown table.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from detectcrop import zoo
from detectcrop.io.images import DEFAULT_DECODE_BUDGET, decode_bytes


def make_photos(folder: Path, count: int, side: int) -> int:
    """``count`` copies of a ``side``-pixel palette PNG with a few shapes; returns the file size."""
    folder.mkdir(parents=True, exist_ok=True)
    im = Image.new("P", (side, side), 0)
    im.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    draw = ImageDraw.Draw(im)
    for k in range(8):
        x, y = (k * side) // 9, (k * side) // 11
        draw.ellipse((x, y, x + side // 10, y + side // 10), fill=40 + 20 * k)
    first = folder / "p0.png"
    im.save(first, optimize=False)
    for i in range(1, count):
        shutil.copyfile(first, folder / f"p{i}.png")
    return first.stat().st_size


def peak_rss_mb(args: list[str]) -> tuple[float, str]:
    proc = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "pipelines.cli.build_crops", *args],
                          capture_output=True, text=True, check=False)
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"build_crops failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return int(match.group(1)) / 1024, proc.stdout.strip().splitlines()[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "detectcrop_decode_bench")
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--side", type=int, default=15000)
    args = parser.parse_args(argv)
    photos = args.work / "photos"
    shutil.rmtree(args.work, ignore_errors=True)
    size = make_photos(photos, args.count, args.side)
    need = decode_bytes("P", (args.side, args.side)) / 2**20
    print(f"{args.count} palette PNGs of {args.side}x{args.side} ({size / 1024:.0f} KB each; decoding one needs "
          f"{need:.0f} MB); build_crops --detector {zoo.OFFLINE_DETECTOR}, default --workers 2 --prefetch 8\n")
    print("| decode budget | peak RSS (MB) | images.csv |")
    print("|---|---|---|")
    for label, extra in ((f"default ({DEFAULT_DECODE_BUDGET // 2**20} MB)", []), ("none (--max-decode-mb 0)",
                                                                                 ["--max-decode-mb", "0"])):
        out = args.work / f"crops{len(extra)}"
        rss, first = peak_rss_mb(["--input", str(photos), "--output", str(out), "--detector", zoo.OFFLINE_DETECTOR,
                                  "--no-progress", "--log-level", "WARNING", *extra])
        print(f"| {label} | {rss:,.0f} | {first} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
