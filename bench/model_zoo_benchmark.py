"""Offline model zoo: model sizes, detector latency per image and backbone throughput on this machine.

    python -m bench.model_zoo_benchmark [--repeats 20]

Prints a Markdown table (paste into BENCHMARKS.md). Latency is the median of ``--repeats`` calls after one warm-up call;
the first call (graph tracing) is reported separately.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np
from skimage import data

from classify import Backbone
from detectcrop import Detector, zoo


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def _dir_mb(path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; date {time.strftime('%Y-%m-%d')}\n")
    print("| model | cached size |\n|---|---|")
    for name in zoo.OFFLINE_MODELS:
        print(f"| {name} | {_dir_mb(zoo.ensure(name)):.1f} MB |")

    t0 = time.perf_counter()
    detector = Detector.from_preset(zoo.OFFLINE_DETECTOR)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    images = {
        "astronaut 512x512": data.astronaut(),
        "coffee 600x400": data.coffee(),
        "photo 1024x768": rng.integers(0, 255, (768, 1024, 3), dtype=np.uint8),
        "photo 4032x3024": rng.integers(0, 255, (3024, 4032, 3), dtype=np.uint8),
    }
    t0 = time.perf_counter()
    detector.detect(images["astronaut 512x512"])
    first_ms = 1000 * (time.perf_counter() - t0)
    print(f"\n{zoo.OFFLINE_DETECTOR}: load {load_s:.2f} s, first call {first_ms:.0f} ms\n")
    print("| image | detect, median ms | images/s |\n|---|---|---|")
    for label, image in images.items():
        ms = _median_ms(lambda image=image: detector.detect(image), args.repeats)
        print(f"| {label} | {ms:.1f} | {1000 / ms:.1f} |")

    backbone = Backbone.from_preset(zoo.OFFLINE_BACKBONE)
    crops = [rng.integers(0, 255, (160, 160, 3), dtype=np.uint8) for _ in range(32)]
    backbone.predict(crops)
    ms = _median_ms(lambda: backbone.predict(crops), max(3, args.repeats // 4))
    print(f"\n{zoo.OFFLINE_BACKBONE}: batch of 32 crops {ms:.0f} ms = {32000 / ms:.1f} crops/s")


if __name__ == "__main__":
    main()
