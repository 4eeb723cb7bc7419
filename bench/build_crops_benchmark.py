"""Stage 1 benchmark: detection recall per object size with and without tiles, and build_crops throughput.

    python -m bench.build_crops_benchmark --work /tmp/bc_bench --json bench_build_crops.json

1. Recall: the synthetic watch benchmark (``pipelines.synthetic.generate``: small-watch product photos and scenes on
   real photos, COCO boxes) through the offline detector, whole image vs tiles + whole image; a ground-truth watch
   counts as found when a "clock" box with ``score >= --min-score`` overlaps it with IoU >= 0.5. Buckets are the
   watch's longer side over the image's shorter side (``rel_size``). Cost: images/s of each mode.
2. Throughput: ``build_crops`` images/s (decode + detect + crop + JPEG + manifests, fsynced) against the detector
   alone on the same images already decoded in memory, measured alternately, ``--repeats`` times each; also the
   process CPU seconds per image of each (the overhead in CPU terms, less sensitive to a busy machine).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from detectcrop import boxes as bx
from detectcrop.dataset import build_crops
from detectcrop.io.images import read_image
from detectcrop.tiling import TileConfig, detect_tiled, run_detector

logger = logging.getLogger("bench.build_crops")
BUCKETS = ((0.0, 0.10), (0.10, 0.15), (0.15, 0.25), (0.25, 0.40), (0.40, 1.01))


def _bucket(rel: float) -> str:
    for lo, hi in BUCKETS:
        if lo <= rel < hi:
            return f"{lo:.2f}-{min(hi, 1.0):.2f}"
    return "other"


def make_data(work: Path, brands: int, photos_per_brand: int, scenes: int, seed: int, small: bool = False) -> Path:
    """The synthetic benchmark; ``small=True``: every product photo draws its watch from the generator's small-size
    range (``PHOTO_SMALL``, 10-25% of the shorter side) instead of one photo in five."""
    from pipelines.synthetic import generate
    from pipelines.synthetic.scenes import PHOTO_SMALL_P

    data = work / ("watches_small" if small else "watches")
    if not (data / "annotations.json").exists():
        generate(data, brands=brands, photos_per_brand=photos_per_brand, scenes=scenes, seed=seed, overwrite=True,
                 small_photo_fraction=1.0 if small else PHOTO_SMALL_P)  # fmt: skip
    return data


def recall_benchmark(detector: Any, data: Path, min_score: float, tile: TileConfig) -> dict[str, Any]:
    from pipelines.synthetic import load_ground_truth

    truth = load_ground_truth(data / "annotations.json")
    images = [(gt, read_image(gt.path)) for gt in truth]
    result: dict[str, Any] = {"n_images": len(images), "n_objects": sum(len(gt.detections) for gt in truth),
                              "modes": {}}  # fmt: skip
    for mode in ("whole image", "tiles + whole image"):
        found: dict[str, list[bool]] = {}
        start = time.perf_counter()
        for gt, pixels in images:
            if mode == "whole image":
                dets = run_detector(detector, pixels, min_score)
            else:
                dets = detect_tiled(detector, pixels, tile, min_score=min_score)
            dets = dets.by_category("clock")
            for box, rel_size in zip(gt.detections.xyxy, gt.detections.data["rel_size"], strict=True):
                hit = len(dets) > 0 and bool((bx.iou(box[None], dets.xyxy) >= 0.5).any())
                found.setdefault(_bucket(float(rel_size)), []).append(hit)
        seconds = time.perf_counter() - start
        result["modes"][mode] = {
            "images_per_s": round(len(images) / seconds, 3),
            "recall": {k: {"recall": round(float(np.mean(v)), 3), "n": len(v)} for k, v in sorted(found.items())},
            "recall_all": round(float(np.mean([h for v in found.values() for h in v])), 3),
        }
        logger.info("%s: %s", mode, result["modes"][mode])
    return result


def throughput_benchmark(detector: Any, data: Path, work: Path, min_score: float, repeats: int,
                         workers: int) -> dict[str, Any]:  # fmt: skip
    photos = data / "photos"
    paths = sorted(photos.rglob("*.jpg"))
    decoded = [read_image(p) for p in paths]
    run_detector(detector, decoded[0], min_score)  # warm-up
    detector_rates, build_rates, build_wall, detector_cpu, build_cpu = [], [], [], [], []
    for r in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        for img in decoded:
            run_detector(detector, img, min_score)
        detector_rates.append(len(decoded) / (time.perf_counter() - start))
        detector_cpu.append((time.process_time() - cpu) / len(decoded))
        out = work / f"crops_{r}"
        shutil.rmtree(out, ignore_errors=True)
        start, cpu = time.perf_counter(), time.process_time()
        summary = build_crops(photos, out, detector, min_score=min_score, workers=workers, show_progress=False)
        build_wall.append(len(paths) / (time.perf_counter() - start))
        build_cpu.append((time.process_time() - cpu) / len(paths))
        build_rates.append(summary.images_per_s)
        logger.info("repeat %d: detector-only %.2f images/s, build_crops %.2f images/s (%.2f incl. setup+dedupe)",
                    r, detector_rates[-1], build_rates[-1], build_wall[-1])
    det, build = statistics.median(detector_rates), statistics.median(build_rates)
    return {
        "n_images": len(paths),
        "image_size": list(decoded[0].shape[:2]),
        "detector_only_images_per_s": [round(v, 3) for v in detector_rates],
        "build_crops_images_per_s": [round(v, 3) for v in build_rates],
        "build_crops_wall_images_per_s": [round(v, 3) for v in build_wall],
        "median_ratio": round(statistics.median(b / d for b, d in zip(build_rates, detector_rates, strict=True)), 3),
        "ratio_of_medians": round(build / det, 3),
        "cpu_s_per_image_detector_only": [round(v, 4) for v in detector_cpu],
        "cpu_s_per_image_build_crops": [round(v, 4) for v in build_cpu],
        "median_cpu_ratio": round(statistics.median(build_cpu) / statistics.median(detector_cpu), 3),
        "ratios": [round(b / d, 3) for b, d in zip(build_rates, detector_rates, strict=True)],
    }


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="scratch folder (the synthetic data is cached there)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--detector", default="centernet_mobilenetv3_512")
    p.add_argument("--brands", type=int, default=4)
    p.add_argument("--photos-per-brand", type=int, default=20, help="throughput set (ordinary product photos)")
    p.add_argument("--small-photos-per-brand", type=int, default=15, help="recall set: small-watch photos")
    p.add_argument("--scenes", type=int, default=15, help="recall set: scenes with 0 or 2-4 watches")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-score", type=float, default=0.3)
    p.add_argument("--tile-fraction", type=float, default=TileConfig.tile_fraction)
    p.add_argument("--tile-overlap", type=float, default=TileConfig.overlap)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--skip", choices=["recall", "throughput"], action="append", default=[])
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from detectcrop import Detector

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    detector = Detector.from_preset(args.detector)
    results: dict[str, Any] = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0], "detector": args.detector, "min_score": args.min_score,
        "data": {"brands": args.brands, "photos_per_brand": args.photos_per_brand, "scenes": args.scenes,
                 "small_photos_per_brand": args.small_photos_per_brand, "seed": args.seed},
        "tile": TileConfig(args.tile_fraction, args.tile_overlap).to_dict(),
    }  # fmt: skip
    if "recall" not in args.skip:
        small = make_data(work, args.brands, args.small_photos_per_brand, args.scenes, args.seed, small=True)
        results["recall"] = recall_benchmark(detector, small, args.min_score,
                                             TileConfig(args.tile_fraction, args.tile_overlap))  # fmt: skip
    if "throughput" not in args.skip:
        data = make_data(work, args.brands, args.photos_per_brand, 0, args.seed)
        results["throughput"] = throughput_benchmark(detector, data, work, args.min_score, args.repeats,
                                                     args.workers)  # fmt: skip
    results["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    text = json.dumps(results, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
