"""Decoding large JPEGs for whole-image detection: full size vs Pillow's DCT-scaled (reduced) decode, side by side.

    python -m bench.decode_benchmark [--scenes 16] [--rounds 3] [--noise 3]

Data: synthetic watch scenes (0-4 watches each) rendered at 4000x3000 (12 MP) by `pipelines.synthetic.generate`, with
Gaussian sensor noise added (``--noise``, in grey levels) so that the files weigh what camera JPEGs weigh; the
classifier for label is trained on 640x480 product photos of the same brands.

1. Decode of the 12 MP JPEGs: `read_image` (full) vs `read_for_detection` at each reduction (1/2, 1/4 = the offline
   detector's 512 input, 1/8): median milliseconds and the median of per-file paired ratios, alternating.
2. The offline detector (`centernet_mobilenetv3_512`, which resizes any input to 512x512 itself) on the full array vs
   the 1/4 one.
3. End to end, alternating in one process: build_crops and label on the folder with ``decode="full"``, ``"auto"``
   (1/4 for this detector) and a forced 1/2 (the detector wrapped to declare a 1500-pixel input, as a 1024-input
   detector such as Faster R-CNN gets on 12 MP photos); files/s (median of paired ratios vs full), detection recall
   against the ground truth (IoU >= 0.5) and label accuracy.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from classify import FineClassifier
from detectcrop import Detector, boxes, build_crops, zoo
from detectcrop.core import DetectSteps, process_image
from detectcrop.crops import CropPolicy
from detectcrop.dataset import CROPS_COLUMNS, CROPS_CSV
from detectcrop.decoding import ReducedImage, Reduction, read_for_detection
from detectcrop.io import CsvManifest
from detectcrop.io.images import decode_image, read_image
from pipelines.compose import DetectThenClassify
from pipelines.labeling import label_folder
from pipelines.predictions import labeled_images, read_predictions
from pipelines.synthetic import generate, ground_truth_crops, load_ground_truth

SIZE = (4000, 3000)


class DeclaredInput:
    """A detector that declares another input side (so that `detectcrop.decoding` picks another reduction)."""

    def __init__(self, detector: Detector, side: int) -> None:
        self.detector, self.input_size, self.name = detector, (side, side), f"{detector.name}@{side}"

    def detect(self, image: np.ndarray, *, min_score: float | None = None) -> Any:
        return self.detector.detect(image, min_score=min_score)


def _data(work: Path, scenes: int, noise: float) -> tuple[Path, Path]:
    """Large noisy scenes (``work/large``) and small product photos to train on (``work/train``)."""
    large, train = work / "large", work / "train"
    if not (large / "annotations.json").exists():
        generate(large, brands=4, photos_per_brand=0, scenes=scenes, seed=5, size=SIZE, workers=2, overwrite=True)
        rng = np.random.default_rng(0)
        for path in sorted((large / "scenes").glob("*.jpg")):
            img = read_image(path).astype(np.float32) + rng.normal(0, noise, (SIZE[1], SIZE[0], 3))
            Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8)).save(path, quality=92)
    if not (train / "annotations.json").exists():
        generate(train, brands=4, photos_per_brand=10, scenes=0, seed=11, overwrite=True)
    return large, train


def _paired(fa: Callable[[], Any], fb: Callable[[], Any], rounds: int) -> tuple[float, float, float]:
    """Median seconds of ``fa`` and ``fb`` run alternately, and the median of the paired ratios a / b."""
    ta, tb = [], []
    for r in range(rounds):
        for f, t in [(fa, ta), (fb, tb)][:: 1 if r % 2 == 0 else -1]:
            start = time.perf_counter()
            f()
            t.append(time.perf_counter() - start)
    return float(np.median(ta)), float(np.median(tb)), float(np.median(np.array(ta) / np.array(tb)))


def _recall(found: dict[str, np.ndarray], truth: list, labels: dict[str, list[str]] | None = None) -> tuple[float, ...]:
    """Recall of ground-truth watches (IoU >= 0.5 with a found box) and, with ``labels``, the fraction labeled with
    their brand."""
    hit = right = total = 0
    for rec in truth:
        gt, pred = rec.detections, found.get(rec.path.name, np.zeros((0, 4)))
        total += len(gt)
        if not len(gt) or not len(pred):
            continue
        iou = boxes.iou(gt.xyxy, pred)
        for g in range(len(gt)):
            j = int(iou[g].argmax())
            if iou[g, j] >= 0.5:
                hit += 1
                right += labels is not None and labels[rec.path.name][j] == gt.data["label"][g]
    return hit / max(total, 1), right / max(total, 1)


def _built(out: Path) -> dict[str, np.ndarray]:
    rows = CsvManifest(out / CROPS_CSV, CROPS_COLUMNS).rows()
    found: dict[str, list] = {}
    for r in rows:
        found.setdefault(Path(r["source_path"]).name, []).append([float(r[k]) for k in ("x1", "y1", "x2", "y2")])
    return {k: np.asarray(v) for k, v in found.items()}


def _labeled(out: Path) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    images = [li for li in labeled_images(read_predictions(out)) if li.status == "ok"]
    return ({Path(li.image).name: li.detections.xyxy for li in images},
            {Path(li.image).name: li.labels for li in images})


def _decode_table(paths: list[Path], rounds: int) -> None:
    print("| decode (12 MP JPEG) | reduced size | median ms | full / this (median of paired ratios) |")
    print("|---|---|---|---|")
    full_ms = []
    for scale in (2, 4, 8):
        red = Reduction(min(SIZE) // scale)
        ratios, times, fulls = [], [], []
        for _ in range(rounds):
            for p in paths:
                t0 = time.perf_counter()
                read_image(p)
                t1 = time.perf_counter()
                got = decode_image(p, min_side=red.min_side)
                t2 = time.perf_counter()
                assert got.scale == scale
                fulls.append(t1 - t0)
                times.append(t2 - t1)
                ratios.append((t1 - t0) / (t2 - t1))
        full_ms += fulls
        h, w = got.image.shape[:2]
        print(f"| 1/{scale} | {w}x{h} | {1e3 * np.median(times):.1f} | {np.median(ratios):.2f}x |")
    print(f"| full | {SIZE[0]}x{SIZE[1]} | {1e3 * np.median(full_ms):.1f} | 1.00x |\n")


def _detector_table(detector: Detector, paths: list[Path], rounds: int) -> None:
    ta, tb = [], []
    for p in paths:
        full = read_image(p)
        small = read_for_detection(p, Reduction(512))
        assert isinstance(small, ReducedImage)
        a, b, _ = _paired(lambda f=full: detector.detect(f), lambda s=small.image: detector.detect(s), rounds)
        ta.append(a)
        tb.append(b)
    ratio = float(np.median(np.array(ta) / np.array(tb)))
    print(f"detector on the full 12 MP array: {1e3 * np.median(ta):.1f} ms; on the 1/4 array (1000x750): "
          f"{1e3 * np.median(tb):.1f} ms; full / reduced {ratio:.2f}x (median over files of medians)\n")


def _per_image_table(detector: Detector, paths: list[Path], rounds: int) -> None:
    """Stage 1 for one image on one thread (`process_image`: read, detect, crop), full vs auto (1/4) vs a forced 1/2,
    alternating per file: the cost of an image with something to crop and of one without, and where each reduced
    decode breaks even."""
    steps = {"full": DetectSteps(detector, (85,), 0.3, CropPolicy(pad=0.0), decode="full"),
             "auto (1/4)": DetectSteps(detector, (85,), 0.3, CropPolicy(pad=0.0), decode="auto"),
             "reduced 1/2": DetectSteps(DeclaredInput(detector, 1500), (85,), 0.3, CropPolicy(pad=0.0),
                                        decode="reduced")}
    costs: dict[tuple[str, bool], list[float]] = {}
    ratios: dict[tuple[str, bool], list[float]] = {}
    for r in range(rounds):
        for p in paths:
            t = {}
            for mode in list(steps)[:: 1 if r % 2 == 0 else -1]:
                start = time.perf_counter()
                job = process_image(p.name, read_for_detection(p, steps[mode].reduction), steps[mode])
                t[mode] = time.perf_counter() - start
            crops = job.status == "ok"
            for mode in t:
                costs.setdefault((mode, crops), []).append(t[mode])
                ratios.setdefault((mode, crops), []).append(t["full"] / t[mode])
    print("| image (one thread: read, detect, crop) | decode | files | ms | full / this (median of paired ratios) |")
    print("|---|---|---|---|---|")
    med = {k: 1e3 * float(np.median(v)) for k, v in costs.items()}
    for crops in (True, False):
        for mode in steps:
            if (mode, crops) in ratios:
                print(f"| {'with' if crops else 'without'} something to crop | {mode} | "
                      f"{len(ratios[mode, crops]) // rounds} | {med[mode, crops]:.1f} | "
                      f"{np.median(ratios[mode, crops]):.2f}x |")
    if ("full", True) in costs and ("full", False) in costs:
        full = 1e3 * float(np.median(costs["full", True] + costs["full", False]))
        for mode in list(steps)[1:]:
            gain, loss = full - med[mode, False], med[mode, True] - full
            share = 1.0 if loss <= 0 else gain / (gain + loss)
            print(f"\nbreak-even, {mode}: less CPU than full while under {100 * share:.0f}% of the images have "
                  "something to crop")
    print()


def _end_to_end(detector: Detector, work: Path, train: Path, scenes: Path, truth: list, rounds: int) -> None:
    """build_crops and label on the folder: full vs auto (1/4) vs a forced 1/2, alternating."""
    paths = sorted(scenes.glob("*.jpg"))
    crops = ground_truth_crops(load_ground_truth(train / "annotations.json", split="photos"))
    clf = FineClassifier(zoo.OFFLINE_BACKBONE, epochs=20, augment_views=0, validation_fraction=0, seed=0)
    run = clf.fit([c.image for c in crops], [c.label for c in crops]).save(work / "run" / "model.keras").parent

    settings = {"full": ("full", detector), "auto (1/4)": ("auto", detector),
                "reduced 1/2": ("reduced", DeclaredInput(detector, 1500))}
    pipes = {k: DetectThenClassify(det, str(run), category="clock", decode=mode).load()
             for k, (mode, det) in settings.items()}
    detector.detect(np.zeros((64, 64, 3), np.uint8))  # warm-up
    print("| tool | decode | files/s (wall) | files/s (per-image loop) | loop speed-up vs full (median of paired "
          "ratios) | recall | label accuracy |")
    print("|---|---|---|---|---|---|---|")
    for tool in ("build_crops", "label"):
        seconds: dict[str, list[float]] = {k: [] for k in settings}
        loops: dict[str, list[float]] = {k: [] for k in settings}
        quality: dict[str, tuple[float, ...]] = {}
        for r in range(rounds):
            order = list(settings) if r % 2 == 0 else list(settings)[::-1]
            for name in order:
                out = work / f"{tool}_{r}_{name.split()[0]}"
                start = time.perf_counter()
                if tool == "build_crops":
                    mode, det = settings[name]
                    summary: Any = build_crops(scenes, out, det, category="clock", policy=CropPolicy(pad=0.0),
                                               decode=mode)
                    loops[name].append(summary.n_processed / summary.images_per_s)
                else:
                    loops[name].append(label_folder(pipes[name], scenes, out).seconds)
                seconds[name].append(time.perf_counter() - start)
                if tool == "build_crops":
                    quality[name] = _recall(_built(out), truth)
                else:
                    found, labels = _labeled(out)
                    quality[name] = _recall(found, truth, labels)
                shutil.rmtree(out)
        base = np.array(loops["full"])
        for name in settings:
            t, loop = np.array(seconds[name]), np.array(loops[name])
            acc = f"{quality[name][1]:.3f}" if tool == "label" else "-"
            print(f"| {tool} | {name} | {len(paths) / np.median(t):.2f} | {len(paths) / np.median(loop):.2f} | "
                  f"{np.median(base / loop):.2f}x | {quality[name][0]:.3f} | {acc} |")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--noise", type=float, default=3.0, help="sensor noise (grey levels) added to the scenes")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--only-cpu", action="store_true", help="stop after the per-image (one-thread) tables")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="decode_bench_"))
    large, train = _data(work, args.scenes, args.noise)
    scenes = large / "scenes"
    paths = sorted(scenes.glob("*.jpg"))
    truth = load_ground_truth(large / "annotations.json", split="scenes")
    mb = np.mean([p.stat().st_size for p in paths]) / 2**20
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; date {time.strftime('%Y-%m-%d')}")
    print(f"command: python -m bench.decode_benchmark --scenes {args.scenes} --rounds {args.rounds} "
          f"--noise {args.noise}")
    print(f"{len(paths)} scenes {SIZE[0]}x{SIZE[1]}, {mb:.1f} MB each on average, "
          f"{sum(len(r.detections) for r in truth)} watches, {sum(not len(r.detections) for r in truth)} scenes "
          "without a watch\n")

    _decode_table(paths[:6], args.rounds)
    detector = Detector.from_preset(zoo.OFFLINE_DETECTOR)
    _detector_table(detector, paths[:4], args.rounds)
    _per_image_table(detector, paths, args.rounds)
    if not args.only_cpu:
        _end_to_end(detector, work, train, scenes, truth, args.rounds)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
