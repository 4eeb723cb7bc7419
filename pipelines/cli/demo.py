"""The whole story offline, in minutes: synthetic watch photos -> crops -> brand classifier -> labeled scenes.

    python -m pipelines.demo [--output demo_out] [--brands 6] [--photos-per-brand 30] [--scenes 30]

Runs the same entry points users run (make_watches, build_crops, train_fine, label) with the offline presets, on a
synthetic benchmark with known boxes and brands, then scores the labeled scenes against the ground truth
(`detectcrop evaluate`: COCO AP per brand). A damaged upload is added to the scenes folder to show that every file
is accounted for.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from detectcrop.io import CsvManifest
from detectcrop.zoo import OFFLINE_BACKBONE, OFFLINE_DETECTOR
from pipelines.cli import build_crops, evaluate, label, setup_logging, train_fine
from pipelines.cli.evaluate import evaluate_predictions
from pipelines.labeling import COLUMNS
from pipelines.synthetic import generate

logger = logging.getLogger("pipelines.cli.demo")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.demo", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output", default="demo_out", help="folder for every output (replaced if it holds a demo)")
    p.add_argument("--brands", type=int, default=6)
    p.add_argument("--photos-per-brand", type=int, default=30)
    p.add_argument("--scenes", type=int, default=30, help="held-out multi-watch scenes to label")
    p.add_argument("--epochs", type=int, default=None, help="head-stage epochs (default: train_fine's)")
    p.add_argument("--fine-tune-blocks", default=None, metavar="K|auto",
                   help="backbone blocks to fine-tune (default: train_fine's, auto; 0: the head alone, faster)")
    p.add_argument("--input-size", type=int, default=None, metavar="PX",
                   help="classifier input size (default: train_fine's, the backbone preset's training size)")
    p.add_argument("--augment", default=None, metavar="PRESET|JSON",
                   help="training augmentation (default: train_fine's, the 'default' preset)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-level", default="ERROR",
                   help="logging level of the stages (the demo reports the damaged upload it adds itself)")
    p.add_argument("--benchmarks", type=Path, default=None, metavar="MARKDOWN",
                   help="also write the results table into this file, between its "
                        f"'{TABLE_START}' and '{TABLE_END}' lines (e.g. BENCHMARKS.md)")
    return p


TABLE_START, TABLE_END = "<!-- demo:start (written by `python -m pipelines.demo --benchmarks BENCHMARKS.md`) -->", \
    "<!-- demo:end -->"


def results_table(result: dict, command: str) -> str:
    """The demo's results as a Markdown table, with the command, machine and date."""
    rows = [
        ("watches found in the scenes (IoU >= 0.5)",
         f"**{result['scene_found']} / {result['scene_objects']} = {result['scene_detection_recall']:.1%}** "
         f"(precision {result['scene_detection_precision']:.1%})"),
        ("brand accuracy on the found watches", f"**{result['scene_label_accuracy']:.1%}** (`unknown` counted wrong: "
                                                f"{result['scene_unknown_share']:.1%} of the objects)"),
        ("the same, top class of every object (open-set rule off)", f"{result['scene_top_class_accuracy']:.1%}"),
        ("files accounted for in predictions.csv", f"{result['files_accounted_for']} (the truncated file as `error`)"),
        ("classifier macro-F1 on its validation crops", f"{result['val_macro_f1']:.3f}"),
        ("time", f"{result['seconds']:.0f} s for the whole demo (train {result['train_seconds']:.0f} s)"),
    ]
    head = (f"`{command}` on {result['date']} ({result['machine']}): backbone `{result['backbone']}`, "
            f"fine-tuning `{result['fine_tune_blocks']}`, detector `{result['detector']}`.\n\n")
    return head + "| | result |\n|---|---|\n" + "".join(f"| {a} | {b} |\n" for a, b in rows)


def write_between_markers(path: Path, table: str) -> None:
    """Replace what lies between the demo's start and end marker lines of ``path`` with ``table`` (atomically)."""
    from detectcrop.io import atomic_write_text

    text = path.read_text(encoding="utf-8")
    start, end = _section(path, text)
    atomic_write_text(path, text[: start + len(TABLE_START)] + "\n" + table + text[end:])


def _section(path: Path, text: str) -> tuple[int, int]:
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"{path} has no '{TABLE_START}' ... '{TABLE_END}' section to write the results into")
    return start, end


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    setup_logging(args.log_level)
    if args.benchmarks is not None:  # before minutes of work
        try:
            _section(args.benchmarks, args.benchmarks.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"error: --benchmarks: {exc}", file=sys.stderr)
            return 2
    out = Path(args.output)
    if out.exists():
        if not (out / "demo.json").exists() and any(out.iterdir()):
            print(f"error: {out} exists and is not a demo folder; choose another --output", file=sys.stderr)
            return 2
        shutil.rmtree(out)
    out.mkdir(parents=True)
    data, crops, run, labels = out / "watches", out / "crops", out / "run", out / "labels"
    quiet = ["--no-progress", "--log-level", args.log_level]
    started = time.perf_counter()

    t = _step(f"1/4 synthetic benchmark: {args.brands} brands x {args.photos_per_brand} photos + {args.scenes} scenes")
    gen = generate(data, brands=args.brands, photos_per_brand=args.photos_per_brand, scenes=args.scenes,
                   seed=args.seed)
    (data / "scenes" / "damaged_upload.jpg").write_bytes(
        (data / "scenes" / "scene_0000.jpg").read_bytes()[:2000])  # a truncated JPEG
    print(f"   {gen['photos']} photos, {gen['scenes']} scenes (+1 damaged file) in {time.perf_counter() - t:.1f} s")

    t = _step(f"2/4 build_crops: detect 'clock' with {OFFLINE_DETECTOR} and crop")
    if build_crops.main(["--input", str(data / "photos"), "--output", str(crops), "--category", "clock",
                         "--detector", OFFLINE_DETECTOR, *quiet]) != 0:
        return 1
    images = CsvManifest(crops / "images.csv", ["path", "status", "n_crops", "error"]).rows()
    found = sum(r["status"] == "ok" for r in images)
    crop_seconds = time.perf_counter() - t

    options = [*(["--epochs", str(args.epochs)] if args.epochs is not None else []),
               *(["--fine-tune-blocks", str(args.fine_tune_blocks)] if args.fine_tune_blocks is not None else []),
               *(["--input-size", str(args.input_size)] if args.input_size is not None else []),
               *(["--augment", args.augment] if args.augment is not None else [])]
    recipe = " ".join(options) if options else "a Dense(512) head, then its top blocks fine-tuned (the default recipe)"
    t = _step(f"3/4 train_fine: {OFFLINE_BACKBONE}, {recipe}")
    if train_fine.main(["--data", str(crops), "--output", str(run), "--backbone", OFFLINE_BACKBONE,
                        "--seed", str(args.seed), *options, *quiet]) != 0:  # prints the macro-F1
        return 1
    report = json.loads((run / "report.json").read_text())
    train_seconds = time.perf_counter() - t

    t = _step("4/4 label: held-out scenes, tiled detection, annotated copies")
    if label.main(["--input", str(data / "scenes"), "--model", str(run), "--output", str(labels), "--detector",
                   OFFLINE_DETECTOR, "--tile", "--annotate", *quiet]) != 0:
        return 1
    rows = CsvManifest(labels / "predictions.csv", COLUMNS).rows()
    scores = evaluate_predictions(data / "annotations.json", rows, image_prefix="scenes/")
    # the same objects judged by their top class alone (label --open-set off, no probability floor)
    top_class = evaluate_predictions(data / "annotations.json", [_top_class(r) for r in rows], image_prefix="scenes/")
    summary = json.loads((labels / "summary.json").read_text())
    label_seconds = time.perf_counter() - t

    result = {
        "photos_with_a_watch_found": found / len(images),
        "val_macro_f1": report["val"]["macro_f1"],
        "scene_detection_recall": scores["recall"],
        "scene_detection_precision": scores["precision"],
        "scene_label_accuracy": scores["label_accuracy"],
        "scene_top_class_accuracy": top_class["label_accuracy"],
        "scene_unknown_share": _share(rows, "unknown"),
        "build_crops_images_per_s": len(images) / crop_seconds,
        "label_images_per_s": summary["n_images"] / label_seconds,
        "files_accounted_for": f"{summary['n_images']} of {args.scenes + 1}",
        "scene_found": scores["n_found"], "scene_objects": scores["n_objects"],
        "backbone": OFFLINE_BACKBONE, "detector": OFFLINE_DETECTOR,
        "fine_tune_blocks": json.loads((run / "config.json").read_text())["classifier"]["fine_tune_blocks"],
        "train_seconds": round(train_seconds, 1),
        "date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "demo.json").write_text(json.dumps(result, indent=2) + "\n")
    table = results_table(result, " ".join(["python -m pipelines.demo", *(argv if argv is not None else sys.argv[1:])]))
    (out / "demo.md").write_text(table)
    if args.benchmarks is not None:
        write_between_markers(args.benchmarks, table)
    print("\n== results")
    print(f"   photos where a watch was detected and cropped: {result['photos_with_a_watch_found']:.1%}")
    print(f"   classifier macro-F1 (validation crops):        {result['val_macro_f1']:.3f}")
    print(f"   scenes: watches found (IoU >= 0.5):             {scores['n_found']}/{scores['n_objects']} = "
          f"{result['scene_detection_recall']:.1%} (precision {result['scene_detection_precision']:.1%})")
    print(f"   scenes: brand accuracy on the found watches:    {result['scene_label_accuracy']:.1%} "
          f"('unknown' counted wrong: {result['scene_unknown_share']:.1%} of the objects)")
    print(f"   the same with the open-set rule off:           {result['scene_top_class_accuracy']:.1%} "
          "(top class of every object)")
    print(f"   files accounted for in predictions.csv:         {result['files_accounted_for']} "
          f"({summary['n_error']} error)")
    for row in rows:
        if row["status"] == "error":
            print(f"      {row['image']}: status error, {row['error']}")
    print(f"   speed: build_crops {result['build_crops_images_per_s']:.1f} images/s (incl. model load), "
          f"label with tiles {result['label_images_per_s']:.2f} images/s; train {train_seconds:.0f} s")
    print(f"   total {result['seconds']:.0f} s")
    print(f"\n== detectcrop evaluate --predictions {labels} --ground-truth {data / 'annotations.json'} "
          "--image-prefix scenes/")
    if evaluate.main(["--predictions", str(labels), "--ground-truth", str(data / "annotations.json"),
                      "--image-prefix", "scenes/"]) != 0:
        return 1
    print("\n== outputs")
    outputs = [("crops + manifests", crops), ("model + report", run), ("predictions", labels / "predictions.csv"),
               ("COCO results", labels / "results.coco.json"), ("annotated scenes", labels / "annotated"),
               ("review pages", f"{run / 'report.html'}, {labels / 'report.html'}"),
               ("COCO metrics", labels / "evaluation.json")]
    for what, path in outputs:
        print(f"   {what:18s} {path}")
    return 0


def _top_class(row: dict[str, str]) -> dict[str, str]:
    """A predictions.csv row labeled with its top class (the first of ``top_k``), as ``--open-set off`` would."""
    if row["status"] != "ok" or not row["top_k"]:
        return row
    return {**row, "label": row["top_k"].split(";")[0].rsplit(":", 1)[0]}


def _share(rows: list[dict[str, str]], label: str) -> float:
    objects = [r for r in rows if r["status"] == "ok"]
    return sum(r["label"] == label for r in objects) / len(objects) if objects else 0.0


if __name__ == "__main__":
    sys.exit(main())
