"""Labeling throughput against the models' own compute, and peak memory as the folder grows.

    python -m bench.label_benchmark [--scenes 40] [--sizes 200 2000]

1. Throughput: the same scenes are labeled by `label_folder` (decoding, detection, cropping, batched classification,
   CSV/COCO writing) and by the models alone on images already decoded in memory (detector + classifier on the same
   crops, same batching). The ratio is the pipeline's overhead. Measured without and with tiles.
2. Memory: `python -m pipelines.label` runs in a fresh process on folders of 200 and 2,000 photos (copies of the
   scenes); each reports its own peak RSS (VmHWM: ru_maxrss would include the parent's at fork).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from classify import FineClassifier
from detectcrop import TileConfig, read_image, zoo
from detectcrop.crops import crop_image, select_crops
from pipelines.compose import DetectThenClassify
from pipelines.labeling import label_folder
from pipelines.synthetic import generate, ground_truth_crops, load_ground_truth


def _train(bench: Path, out: Path) -> Path:
    crops = ground_truth_crops(load_ground_truth(bench / "annotations.json", split="photos"))
    clf = FineClassifier(zoo.OFFLINE_BACKBONE, epochs=30, augment_views=0, validation_fraction=0,
                          fine_tune_blocks=0, seed=0)
    return clf.fit([c.image for c in crops], [c.label for c in crops]).save(out / "model.keras").parent


def _models_only(pipe: DetectThenClassify, images: list[np.ndarray]) -> float:
    """Seconds for the models alone: detection (+ tiles) and batched classification of the same crops."""
    clf = pipe.classifier_
    start = time.perf_counter()
    batch: list[np.ndarray] = []
    for image in images:
        _, boxes = select_crops(pipe.detect(image), image.shape[:2], pipe.crop_policy)
        batch.extend(crop_image(image, b) for b in boxes)
        if len(batch) >= pipe.batch_size:
            clf.predict_proba(batch)
            batch = []
    if batch:
        clf.predict_proba(batch)
    return time.perf_counter() - start


def _throughput(pipe: DetectThenClassify, scenes: Path, work: Path, rounds: int = 2) -> dict[str, float]:
    paths = sorted(scenes.glob("*.jpg"))
    images = [read_image(p) for p in paths]
    _models_only(pipe, images[:2])  # warm-up: graph tracing
    best_models = min(_models_only(pipe, images) for _ in range(rounds))
    best_label = float("inf")
    for r in range(rounds):
        out = work / f"label_{r}"
        start = time.perf_counter()
        label_folder(pipe, scenes, out)
        best_label = min(best_label, time.perf_counter() - start)
        shutil.rmtree(out)
    return {"images": len(paths), "models_only_images_per_s": len(paths) / best_models,
            "label_images_per_s": len(paths) / best_label, "overhead": best_label / best_models - 1}


def _peak_rss(model: Path, scenes: Path, n: int, work: Path) -> dict[str, float]:
    folder = work / f"photos_{n}"
    folder.mkdir()
    sources = sorted(scenes.glob("*.jpg"))
    for i in range(n):
        os.link(sources[i % len(sources)], folder / f"{i:05d}.jpg")
    code = (
        "import json, sys, time\n"
        "from pipelines import label\n"
        "t = time.perf_counter()\n"
        f"rc = label.main(['--input', {str(folder)!r}, '--model', {str(model)!r}, '--output', "
        f"{str(work / f'out_{n}')!r}, '--detector', {zoo.OFFLINE_DETECTOR!r}, '--no-progress', '--log-level', "
        "'WARNING'])\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "print(json.dumps({'rc': rc, 'seconds': time.perf_counter() - t, 'peak_rss_mb': int(hwm) / 1024}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"images": n, **result}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--sizes", type=int, nargs="*", default=[200, 2000])
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="label_bench_"))
    bench = work / "watches"
    generate(bench, brands=4, photos_per_brand=12, scenes=args.scenes, seed=11, overwrite=True)
    model = _train(bench, work / "run")
    scenes = bench / "scenes"

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; date {time.strftime('%Y-%m-%d')}")
    print(f"command: python -m bench.label_benchmark --scenes {args.scenes} --sizes {' '.join(map(str, args.sizes))}")
    print("\n| mode | images | models alone, images/s | label_folder, images/s | overhead |\n|---|---|---|---|---|")
    for mode, tile in (("whole image", None), ("tiles", TileConfig())):
        pipe = DetectThenClassify(zoo.OFFLINE_DETECTOR, str(model), category="clock", tile=tile)
        r = _throughput(pipe, scenes, work)
        print(f"| {mode} | {r['images']} | {r['models_only_images_per_s']:.2f} | {r['label_images_per_s']:.2f} | "
              f"{r['overhead']:+.1%} |")
    print("\n| photos | wall s | images/s | peak RSS MB |\n|---|---|---|---|")
    for n in args.sizes:
        r = _peak_rss(model, scenes, n, work)
        print(f"| {n} | {r['seconds']:.0f} | {n / r['seconds']:.1f} | {r['peak_rss_mb']:.0f} |")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
