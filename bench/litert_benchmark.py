"""TensorFlow vs LiteRT (float, int8) side by side in one process, on the same synthetic watch scenes.

    python -m bench.litert_benchmark [--scenes 24] [--rounds 3]

1. label_folder images/s, whole image and with tiles, for tf / litert float / litert auto (each stage int8 where
   its check holds) / litert int8 classifier + int8 detector (forced; the detector calibrated on 24 training
   photos; runs alternate; the median of paired ratios is reported), with detection recall (IoU >= 0.5 with a
   ground-truth watch) and label accuracy (matched watches labeled with their brand) on the held-out scenes.
2. Classifier crops/s on the scenes' ground-truth crops, with top-1 agreement against Keras.
3. The detector against the limit: its FLOPs (counted from the LiteRT graph's conv/depthwise/dense ops) over the
   GFLOP/s one core sustains on a large convolution under XNNPACK; float vs int8 detector; where tiled time
   goes. Also the int8 detector's recall check on the held-out scenes.
4. Decoding 12 MP JPEGs: full size vs Pillow's reduced-size JPEG decoding (draft) to the detector's scale.
5. Peak RSS and wall time of `python -m pipelines.label` (fresh processes) with each runtime, and whether it
   imported TensorFlow (LiteRT with cached exports does not).
"""

from __future__ import annotations

import argparse
import io
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
from detectcrop import Detector, TileConfig, boxes, read_image, zoo
from detectcrop.runtime import (
    LiteRTDetector,
    conversion_info,
    converted_detector,
    detector_flatbuffer,
    make_interpreter,
)
from detectcrop.runtime.classifier_cache import load_litert_classifier, resolve_precision, save_representative_data
from detectcrop.tiling import detect_tiled
from pipelines.compose import DetectThenClassify
from pipelines.labeling import label_folder
from pipelines.synthetic import generate, ground_truth_crops, load_ground_truth

#: (row, runtime, classifier precision, detector precision)
RUNTIMES = (("tf", "tf", "float", "float"), ("litert float", "litert", "float", "float"),
            ("litert auto", "litert", "auto", "auto"),
            ("litert int8 classifier + int8 detector (forced)", "litert", "int8", "int8"))


def _train(bench: Path, out: Path) -> tuple[Path, list]:
    crops = ground_truth_crops(load_ground_truth(bench / "annotations.json", split="photos"))
    clf = FineClassifier(zoo.OFFLINE_BACKBONE, epochs=30, augment_views=0, validation_fraction=0,
                          fine_tune_blocks=0, seed=0)
    run = clf.fit([c.image for c in crops], [c.label for c in crops]).save(out / "model.keras").parent
    return run, crops


def _detector_representative_data(bench: Path, truth: list, out: Path, n_photos: int = 24) -> Path:
    """A calibration folder: ``n_photos`` training photos, and the held-out scenes with their ground-truth boxes."""
    import json

    photos = sorted((bench / "photos").rglob("*.jpg"))[:n_photos]
    (out / "heldout").mkdir(parents=True, exist_ok=True)
    for p in photos:
        shutil.copy(p, out / f"{p.parent.name}_{p.name}")
    table = {}
    for rec in truth:
        shutil.copy(rec.path, out / "heldout" / Path(rec.path).name)
        table[Path(rec.path).name] = rec.detections.xyxy.tolist()
    (out / "heldout" / "boxes.json").write_text(json.dumps(table))
    return out


def _tile_profile(detector, images: list[np.ndarray], rounds: int = 3) -> dict[str, float]:
    """Where tiled time goes: detector passes per image and the time of one tiled image over one whole image."""
    from detectcrop.tiling import tile_grid

    passes = [1 + len(tile_grid(im.shape)) for im in images]
    whole, tiled = [], []
    for _ in range(rounds):
        for im in images:
            start = time.perf_counter()
            detector.detect(im)
            whole.append(time.perf_counter() - start)
            start = time.perf_counter()
            detect_tiled(detector, im, TileConfig())
            tiled.append(time.perf_counter() - start)
    return {"passes": float(np.median(passes)), "ratio": float(np.median(np.asarray(tiled) / np.asarray(whole))),
            "whole_ms": 1e3 * float(np.median(whole)), "tiled_ms": 1e3 * float(np.median(tiled))}


def _shape_profile(saved_model: Path, static: Path, rounds: int = 11) -> dict[str, float]:
    """LiteRT float detector on photos of ``rounds`` different sizes: the SavedModel's dynamic-shape graph (an
    interpreter is re-planned for every new size) vs the static 512x512 graph (resize outside), alternating."""
    import tensorflow as tf

    dynamic = LiteRTDetector(tf.lite.TFLiteConverter.from_saved_model(str(saved_model)).convert(), 1)
    fixed = LiteRTDetector(static, 1)
    rng = np.random.default_rng(0)
    sizes = [(480 + 7 * i, 640 - 5 * i) for i in range(rounds + 1)]
    a_times, b_times = [], []
    for i, (h, w) in enumerate(sizes):
        image = rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)
        start = time.perf_counter()
        dynamic(image)
        mid = time.perf_counter()
        fixed(image)
        if i:  # the first size warms both up
            a_times.append(mid - start)
            b_times.append(time.perf_counter() - mid)
    return {"dynamic_ms": 1e3 * float(np.median(a_times)), "static_ms": 1e3 * float(np.median(b_times)),
            "ratio": float(np.median(np.asarray(a_times) / np.asarray(b_times)))}


def _quality(pipe: DetectThenClassify, truth: list) -> dict[str, float]:
    """Recall of ground-truth watches (IoU >= 0.5) and the fraction of them labeled with their brand."""
    found = correct = total = 0
    for rec, result in zip(truth, pipe.run([r.path for r in truth], workers=1), strict=True):
        gt = rec.detections
        total += len(gt)
        if not len(gt) or not result.objects:
            continue
        pred = np.asarray([o.xyxy for o in result.objects], dtype=float)
        iou = boxes.iou(gt.xyxy, pred)
        for g in range(len(gt)):
            j = int(iou[g].argmax())
            if iou[g, j] >= 0.5:
                found += 1
                correct += result.objects[j].label == gt.data["label"][g]
    return {"recall": found / max(total, 1), "label_accuracy": correct / max(total, 1), "watches": total}


def _label_speed(pipes: dict[str, DetectThenClassify], scenes: Path, work: Path, rounds: int) -> dict[str, list]:
    times: dict[str, list[float]] = {k: [] for k in pipes}
    for r in range(rounds):
        for name, pipe in pipes.items():
            out = work / f"label_{r}_{name.replace(' ', '_')}"
            start = time.perf_counter()
            label_folder(pipe, scenes, out)
            times[name].append(time.perf_counter() - start)
            shutil.rmtree(out)
    return times


def _conv_gflops(threads: int = 1) -> float:
    """GFLOP/s of one large 3x3 convolution (56x56x128 -> 128, constant filter) under XNNPACK, best of 5 rounds.

    The filter must be a constant: a Keras layer's variable becomes a ``READ_VARIABLE`` feeding the convolution,
    which XNNPACK then does not run (about a quarter of the speed)."""
    import tensorflow as tf

    filters = tf.constant(np.random.default_rng(0).random((3, 3, 128, 128), np.float32))
    fn = tf.function(lambda x: tf.nn.conv2d(x, filters, 1, "SAME"),
                     input_signature=[tf.TensorSpec([1, 56, 56, 128], tf.float32)])
    flat = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()]).convert()
    interp = make_interpreter(flat, threads)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], np.random.rand(1, 56, 56, 128).astype(np.float32))
    interp.invoke()
    flops, best = 2 * 56 * 56 * 128 * 128 * 9, 0.0
    for _ in range(5):
        n, start = 10, time.perf_counter()
        for _ in range(n):
            interp.invoke()
        best = max(best, flops * n / (time.perf_counter() - start) / 1e9)
    return best


def _model_flops(tflite: Path, shape: tuple[int, int]) -> float:
    """Multiply-adds x 2 of the conv, depthwise-conv and dense ops at an input of ``shape``."""
    interp = make_interpreter(tflite, 1)
    interp.resize_tensor_input(interp.get_input_details()[0]["index"], [1, *shape, 3])
    interp.allocate_tensors()
    shapes = {t["index"]: t["shape"] for t in interp.get_tensor_details()}
    total = 0.0
    for op in interp._get_ops_details():
        name, ins, outs = op["op_name"], op["inputs"], op["outputs"]
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"):
            out = shapes[outs[0]]
            w = shapes[ins[1]]
            if name == "CONV_2D":
                total += 2 * np.prod(out) * np.prod(w[1:])
            elif name == "DEPTHWISE_CONV_2D":
                total += 2 * np.prod(out) * w[1] * w[2]
            elif name == "FULLY_CONNECTED":
                total += 2 * np.prod(out) * w[-1]
            else:
                total += 2 * np.prod(shapes[ins[2]]) * np.prod(w)
    return float(total)


def _decode(paths: list[Path], target: int = 512) -> dict[str, float]:
    from PIL import Image

    full, reduced = [], []
    for p in paths:
        start = time.perf_counter()
        read_image(p)
        full.append(time.perf_counter() - start)
        start = time.perf_counter()
        with Image.open(p) as im:
            im.draft("RGB", (target, target))  # JPEG DCT scaling: 1/2 .. 1/8, still >= target
            np.asarray(im.convert("RGB"))
        reduced.append(time.perf_counter() - start)
    return {"full_ms": 1e3 * float(np.median(full)), "reduced_ms": 1e3 * float(np.median(reduced))}


def _peak_rss(model: Path, scenes: Path, runtime: str, precision: str, work: Path) -> tuple[float, float, bool]:
    """``(peak RSS MB, wall s, whether TensorFlow was imported)`` of one fresh ``pipelines.cli.label`` process."""
    out = work / f"rss_{runtime}_{precision}"
    code = ("import sys, runpy; sys.argv = sys.argv[1:]; \n"
            "try:\n    runpy.run_module('pipelines.cli.label', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('tensorflow' in sys.modules, "
            "[l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])")
    cmd = [sys.executable, "-c", code, "label", "--input", str(scenes), "--model", str(model), "--output", str(out),
           "--detector", zoo.OFFLINE_DETECTOR, "--runtime", runtime, "--precision", precision, "--no-progress",
           "--log-level", "WARNING"]
    start = time.perf_counter()
    text = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ}).stdout
    wall = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    imported, kb = text.strip().splitlines()[-1].split()
    return int(kb) / 1024, wall, imported == "True"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="litert_bench_"))
    bench = work / "watches"
    if not (bench / "annotations.json").exists():
        generate(bench, brands=4, photos_per_brand=10, scenes=args.scenes, seed=11, overwrite=True)
    run, train_crops = _train(bench, work / "run")
    truth = load_ground_truth(bench / "annotations.json", split="scenes")
    held = [c.image for c in ground_truth_crops(truth)]
    clf = FineClassifier.load(run)
    save_representative_data(run, [c.image for c in train_crops][:300], held, clf.input_size_)
    scenes = bench / "scenes"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; date {time.strftime('%Y-%m-%d')}")
    print(f"command: python -m bench.litert_benchmark --scenes {args.scenes} --rounds {args.rounds}\n")

    representative = _detector_representative_data(bench, truth, work / "detector_representative_data")
    served = Detector.from_preset(zoo.OFFLINE_DETECTOR, runtime="litert", precision="auto",
                                  representative_data=representative)
    print(f"(litert auto serves the classifier {resolve_precision(run, 'auto')}, the detector {served.precision})\n")
    print("| mode | runtime | label images/s | speed-up vs tf (median of paired ratios) | recall | label accuracy |")
    print("|---|---|---|---|---|---|")
    for mode, tile in (("whole image", None), ("tiles", TileConfig())):
        pipes = {name: DetectThenClassify(zoo.OFFLINE_DETECTOR, str(run), category="clock", tile=tile,
                                          runtime=rt, precision=prec, detector_precision=dprec,
                                          detector_representative_data=str(representative)).load()
                 for name, rt, prec, dprec in RUNTIMES}
        quality = {name: _quality(pipe, truth) for name, pipe in pipes.items()}  # also the warm-up
        times = _label_speed(pipes, scenes, work, args.rounds)
        n = len(list(scenes.glob("*.jpg")))
        for name in pipes:
            ratio = float(np.median(np.asarray(times["tf"]) / np.asarray(times[name])))
            q = quality[name]
            print(f"| {mode} | {name} | {n / np.median(times[name]):.2f} | {ratio:.2f}x | {q['recall']:.3f} | "
                  f"{q['label_accuracy']:.3f} |")

    print("\n| classifier | crops/s | speed-up vs Keras (median of paired ratios) | top-1 agreement with Keras |")
    print("|---|---|---|---|")
    runners = {"keras (tf)": clf, "litert float": load_litert_classifier(run, "float"),
               "litert int8": load_litert_classifier(run, "int8")}
    reference = clf.predict_proba(held).argmax(1)
    ctimes: dict[str, list[float]] = {k: [] for k in runners}
    agree = {}
    for r in range(args.rounds + 1):
        for name, runner in runners.items():
            start = time.perf_counter()
            proba = runner.predict_proba(held)
            if r:  # the first round warms up
                ctimes[name].append(time.perf_counter() - start)
            agree[name] = float(np.mean(proba.argmax(1) == reference))
    for name in runners:
        ratio = float(np.median(np.asarray(ctimes["keras (tf)"]) / np.asarray(ctimes[name])))
        print(f"| {name} | {len(held) / np.median(ctimes[name]):.1f} | {ratio:.2f}x | {agree[name]:.3f} |")

    saved_model = zoo.ensure(zoo.OFFLINE_DETECTOR) / "saved_model"
    tflite = converted_detector(saved_model)
    int8_path, _ = detector_flatbuffer(saved_model, "int8", representative)
    info = conversion_info(int8_path)
    print(f"\nint8 detector check (held-out scenes, ground truth, score >= {info['min_score']}): recall float "
          f"{info['float_recall']:.3f}, int8 {info['int8_recall']:.3f} -> auto serves "
          f"{'int8' if info['int8_default'] else 'float'}")
    flops = _model_flops(tflite, (512, 512))
    per_core = _conv_gflops(1)
    image = np.ascontiguousarray(read_image(sorted(scenes.glob("*.jpg"))[0]))
    batch = np.ascontiguousarray(image[None])
    models = {(p, t): LiteRTDetector(f, t) for p, f in (("float", tflite), ("int8", int8_path)) for t in (1, 2)}
    ts: dict[tuple, list[float]] = {k: [] for k in models}
    for model in models.values():
        model(batch)
    for _ in range(7):  # alternating, so the machine's load hits all alike
        for key, model in models.items():
            start = time.perf_counter()
            model(batch)
            ts[key].append(time.perf_counter() - start)
    det_times = {t: float(np.median(ts[("float", t)])) for t in (1, 2)}
    int8_ratio = float(np.median(np.asarray(ts[("float", 1)]) / np.asarray(ts[("int8", 1)])))
    print(f"\ndetector: {flops / 1e9:.2f} GFLOP per image (conv/depthwise/dense at 512x512); one core sustains "
          f"{per_core:.1f} GFLOP/s on a 3x3 conv under XNNPACK, so the floor is {1e3 * flops / 1e9 / per_core:.0f} ms "
          f"on one core; measured LiteRT: {1e3 * det_times[1]:.0f} ms on 1 thread "
          f"({flops / 1e9 / det_times[1]:.1f} GFLOP/s, {flops / 1e9 / det_times[1] / per_core:.0%} of the core), "
          f"{1e3 * det_times[2]:.0f} ms on 2 threads; int8 detector {1e3 * np.median(ts[('int8', 1)]):.0f} ms on 1 "
          f"thread ({int8_ratio:.2f}x float, median of paired ratios)")
    tp = _tile_profile(Detector.from_preset(zoo.OFFLINE_DETECTOR, runtime="litert"),
                       [read_image(p) for p in sorted(scenes.glob("*.jpg"))[:4]])
    sp = _shape_profile(saved_model, tflite)
    print(f"photos of 11 different sizes, 1 thread: dynamic-shape graph {sp['dynamic_ms']:.0f} ms, static 512x512 "
          f"graph {sp['static_ms']:.0f} ms per image ({sp['ratio']:.2f}x, median of paired ratios)")
    print(f"tiles: {tp['passes']:.0f} detector passes per 640x480 image (6 tiles + the whole image); tiled "
          f"{tp['tiled_ms']:.0f} ms vs whole {tp['whole_ms']:.0f} ms ({tp['ratio']:.2f}x, LiteRT float)")

    big = work / "big"
    big.mkdir(exist_ok=True)
    from PIL import Image

    photos = []
    for i, p in enumerate(sorted(scenes.glob("*.jpg"))[:4]):
        im = Image.open(p).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        im.save(buffer, "JPEG", quality=92)
        (big / f"{i}.jpg").write_bytes(buffer.getvalue())
        photos.append(big / f"{i}.jpg")
    d = _decode(photos)
    print(f"\ndecode of 12 MP JPEGs (median of {len(photos)}): full {d['full_ms']:.0f} ms, reduced (draft to >= 512 "
          f"px) {d['reduced_ms']:.0f} ms")

    print("\n| runtime | peak RSS of pipelines.cli.label, MB | wall s (fresh process) | TensorFlow imported |"
          "\n|---|---|---|---|")
    for name, rt, prec, _ in RUNTIMES[:3]:
        rss, wall, imported = _peak_rss(run, scenes, rt, prec, work)
        print(f"| {name} | {rss:.0f} | {wall:.1f} | {'yes' if imported else 'no'} |")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
