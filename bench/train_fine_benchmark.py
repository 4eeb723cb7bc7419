"""Stage 2 benchmark: cached frozen features vs the seed's recipe, and the acceptance run of train_fine.

    python -m bench.train_fine_benchmark --work /tmp/fine_bench --json bench_train_fine.json  # Markdown on stdout

Data: the synthetic watch benchmark (``pipelines.synthetic``), a training set (``--train-seed``) and a test set drawn
with a separate seed (``--test-seed``) but the same brand definitions, both cut into crops by
``python -m pipelines.build_crops --detector centernet_mobilenetv3_512`` (``--crops gt``: ground-truth boxes instead).

1. Speed (``--stage speed``), side by side in one process on the same crops, split, backbone and epochs:
   - seed recipe: frozen backbone + GAP head, ``Model.fit`` on the images every epoch (Adam(0.005),
     ReduceLROnPlateau, best checkpoint on val_accuracy, no augmentation, as in seed 001);
   - cached: `FineClassifier` with the backbone run once per image (``augment_views=0``, same data as the seed),
     and once more per augmented view (``--views``, the library default);
   wall time (images read and resized inside each timing) and test macro-F1 of each. Early stopping is off in both
   so the epoch counts are equal.
2. Acceptance (``--stage acceptance``): the train_fine CLI with library defaults and the offline backbone; its
   test macro-F1 and the TFLite agreement it reports.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("bench.train_fine")


def make_photos(out: Path, brands: int, photos_per_brand: int, seed: int) -> Path:
    """Synthetic product photos drawn with ``seed`` for the first ``brands`` brands of the default catalogue (a test
    set with a separate seed shows the training set's brands; their catalogues are checked equal afterwards)."""
    from pipelines.synthetic import generate

    if not (out / "annotations.json").exists():
        generate(out, brands=brands, photos_per_brand=photos_per_brand, seed=seed, overwrite=True)
    return out


def _brands(photos: Path) -> tuple[list, Any]:
    """The categories and the recorded brand catalogue of a photo set."""
    from pipelines.synthetic import read_catalogue

    coco = json.loads((photos / "annotations.json").read_text())
    return coco["categories"], read_catalogue(coco)


def make_crops(photos: Path, out: Path, mode: str) -> tuple[Path, str]:
    """Crops of ``photos/photos/<brand>/*.jpg``: by build_crops with the offline detector, or from the ground truth."""
    if mode == "detector":
        cmd = [
            sys.executable,
            "-m",
            "pipelines.cli.build_crops",
            "--input",
            str(photos / "photos"),
            "--output",
            str(out),
            "--category",
            "clock",
            "--detector",
            "centernet_mobilenetv3_512",
            "--no-progress",
        ]
        if not (out / "crops.csv").exists():
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return out, " ".join(["python", *cmd[1:]])
    from detectcrop.crops import CropPolicy, save_jpeg
    from pipelines.synthetic import ground_truth_crops, load_ground_truth

    if not (out / "crops.csv").exists():
        truth = load_ground_truth(photos / "annotations.json", split="photos")
        rows = ["crop_path,source_path,label\n"]
        for crop in ground_truth_crops(truth, CropPolicy(pad=0.1, min_size=0)):
            rel = f"{crop.label}/{Path(crop.file_name).stem}_{crop.annotation_id}.jpg"
            (out / crop.label).mkdir(parents=True, exist_ok=True)
            save_jpeg(out / rel, crop.image, fsync=False)
            rows.append(f"{rel},{crop.file_name},{crop.label}\n")
        (out / "crops.csv").write_text("".join(rows))
    return out, f"ground-truth boxes from {photos}/annotations.json, pad 0.1"


def seed_recipe(backbone: Any, train: Any, val: Any, epochs: int, batch_size: int, seed: int) -> tuple[float, Any]:
    """The seed's training: Model.fit on images every epoch through the frozen backbone. Returns (seconds, model)."""
    import keras

    from classify.batches import load_batch

    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    size = tuple(backbone.input_size)
    x_train = load_batch(train.paths, size).astype(np.float32)
    x_val = load_batch(val.paths, size).astype(np.float32)
    backbone.model.trainable = False
    inputs = keras.Input((*size, 3))
    x = backbone.model(inputs)
    x = keras.layers.Dense(128, activation="relu")(x)
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(len(train.class_names), activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.005), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    with tempfile.TemporaryDirectory() as tmp:
        best = str(Path(tmp) / "best.weights.h5")
        callbacks = [
            keras.callbacks.ModelCheckpoint(best, monitor="val_accuracy", save_best_only=True, save_weights_only=True),
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3, patience=4, min_lr=1e-6),
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda e, logs: logger.info(
                    "seed recipe epoch %d/%d: val_accuracy %.3f (%.0fs)",
                    e + 1,
                    epochs,
                    logs["val_accuracy"],
                    time.perf_counter() - start,
                )
            ),
        ]
        model.fit(
            x_train,
            train.labels,
            validation_data=(x_val, val.labels),
            epochs=epochs,
            batch_size=batch_size,
            verbose=0,
            callbacks=callbacks,
        )
        model.load_weights(best)
    return time.perf_counter() - start, model


def speed(args: argparse.Namespace, train_crops: Path, test_crops: Path) -> dict[str, Any]:
    from classify import Backbone, FineClassifier, load_image_folder, split_image_folder
    from classify.batches import load_batch
    from classify.report import classification_metrics

    data = load_image_folder(train_crops, min_per_class=2)
    train, val = split_image_folder(data, val_fraction=0.2, seed=args.seed)
    test = load_image_folder(test_crops, class_names=data.class_names)
    backbone = Backbone.from_preset(args.backbone)
    names = np.asarray(data.class_names, dtype=object)
    results: dict[str, Any] = {"n_train": len(train), "n_val": len(val), "n_test": len(test), "epochs": args.epochs}

    def record(name: str, seconds: float, predicted: np.ndarray, extra: dict | None = None) -> None:
        m = classification_metrics(test.label_names, predicted, data.class_names)
        results[name] = {
            "seconds": seconds,
            "test_macro_f1": m["macro_f1"],
            "test_accuracy": m["accuracy"],
            **(extra or {}),
        }
        logger.info("%s: %.1fs, test macro-F1 %.4f", name, seconds, m["macro_f1"])

    # Warm-up (not timed): process-wide one-time costs (TF runtime, first graph traces) would otherwise fall on
    # whichever method runs first.
    few_train = train.subset(np.linspace(0, len(train) - 1, 16).astype(int))
    few_val = val.subset(np.linspace(0, len(val) - 1, 8).astype(int))
    FineClassifier(backbone, epochs=2, augment_views=1, fine_tune_blocks=0, seed=args.seed).fit(
        few_train.paths, few_train.label_names, validation_data=(few_val.paths, few_val.label_names)
    )
    seed_recipe(backbone, few_train, few_val, 1, 32, args.seed)
    for views in (0, args.views):
        clf = FineClassifier(backbone, epochs=args.epochs, augment_views=views, patience=0, fine_tune_blocks=0,
                             seed=args.seed)
        start = time.perf_counter()
        clf.fit(train.paths, train.label_names, validation_data=(val.paths, val.label_names))
        record(f"cached_views{views}", time.perf_counter() - start, clf.predict(test.paths), {"timings": clf.timings_})
    seconds, model = seed_recipe(backbone, train, val, args.epochs, 32, args.seed)
    probs = model.predict(load_batch(test.paths, tuple(backbone.input_size)).astype(np.float32), verbose=0)
    record("seed_recipe", seconds, names[probs.argmax(1)])
    for views in (0, args.views):
        results[f"cached_views{views}"]["speedup"] = seconds / results[f"cached_views{views}"]["seconds"]
    return results


def acceptance(args: argparse.Namespace, train_crops: Path, test_crops: Path) -> dict[str, Any]:
    run = args.work / "run_acceptance"
    shutil.rmtree(run, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "pipelines.cli.train_fine",
        "--data",
        str(train_crops),
        "--test-data",
        str(test_crops),
        "--output",
        str(run),
        "--backbone",
        args.backbone,
        "--seed",
        str(args.seed),
        "--litert",
        "--no-progress",
    ]
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    seconds = time.perf_counter() - start
    report = json.loads((run / "report.json").read_text())
    return {
        "command": " ".join(["python", *cmd[1:]]),
        "last_line": out.strip().splitlines()[-1],
        "seconds": seconds,
        "val_macro_f1": report["val"]["macro_f1"],
        "test_macro_f1": report["test"]["macro_f1"],
        "test_accuracy": report["test"]["accuracy"],
        "test_n": report["test"]["n"],
        "best_epoch": report["best_epoch"],
        "tflite": {q: {k: v for k, v in r.items() if k != "path"} for q, r in report.get("litert", {}).items()},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench.train_fine_benchmark", description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "fine_bench")
    p.add_argument("--stage", choices=["all", "data", "speed", "acceptance"], default="all")
    p.add_argument("--brands", type=int, default=8)
    p.add_argument("--train-photos", type=int, default=40, help="photos per brand in the training set")
    p.add_argument("--test-photos", type=int, default=20, help="photos per brand in the test set")
    p.add_argument("--train-seed", type=int, default=0)
    p.add_argument("--test-seed", type=int, default=1)
    p.add_argument("--crops", choices=["detector", "gt"], default="detector")
    p.add_argument("--backbone", default="mobilenet_v2_torchvision")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    args.work.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    work, brands = args.work, args.brands
    train_photos = make_photos(work / f"photos_s{args.train_seed}", brands, args.train_photos, args.train_seed)
    test_photos = make_photos(work / f"photos_s{args.test_seed}", brands, args.test_photos, args.test_seed)
    if _brands(train_photos) != _brands(test_photos):
        raise RuntimeError("train and test sets disagree on the brand definitions")
    train_crops, crop_cmd = make_crops(train_photos, args.work / f"crops_{args.crops}_s{args.train_seed}", args.crops)
    test_crops, _ = make_crops(test_photos, args.work / f"crops_{args.crops}_s{args.test_seed}", args.crops)
    logger.info("data ready in %.0fs", time.perf_counter() - start)

    result: dict[str, Any] = {
        "date": date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible (shared)",
        "python": platform.python_version(),
        "data": {
            "brands": args.brands,
            "train_photos_per_brand": args.train_photos,
            "test_photos_per_brand": args.test_photos,
            "train_seed": args.train_seed,
            "test_seed": args.test_seed,
            "crops": args.crops,
            "crop_command": crop_cmd,
            "train_crops": sum(1 for _ in train_crops.glob("*/*.jpg")),
            "test_crops": sum(1 for _ in test_crops.glob("*/*.jpg")),
        },
    }
    if args.stage in ("all", "speed"):
        result["speed"] = speed(args, train_crops, test_crops)
    if args.stage in ("all", "acceptance"):
        result["acceptance"] = acceptance(args, train_crops, test_crops)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    """The results as the Markdown tables of BENCHMARKS.md's Stage 2 section."""
    d = result["data"]
    lines = [
        f"{result['date']}, {result['machine']}, Python {result['python']}. Data: {d['brands']} brands, "
        f"{d['train_photos_per_brand']} training photos per brand (seed {d['train_seed']}) -> "
        f"{d['train_crops']} crops, "
        f"{d['test_photos_per_brand']} test photos per brand (seed {d['test_seed']}, same brands) -> "
        f"{d['test_crops']} crops; crops: `{d['crop_command']}`.",
    ]
    if "speed" in result:
        s = result["speed"]
        lines += [
            "",
            f"Speed ({s['n_train']} train / {s['n_val']} val crops, {s['epochs']} epochs each, test macro-F1 on "
            f"{s['n_test']} crops):",
            "",
            "| method | wall time | speed-up | test macro-F1 |",
            "|---|---|---|---|",
            f"| seed recipe (fit on images every epoch) | {s['seed_recipe']['seconds']:.1f} s | 1x | "
            f"{s['seed_recipe']['test_macro_f1']:.3f} |",
        ]
        for key in sorted(k for k in s if k.startswith("cached_views")):
            r = s[key]
            lines.append(
                f"| cached features, {key.removeprefix('cached_views')} augmented views | {r['seconds']:.1f} s | "
                f"{r['speedup']:.1f}x | {r['test_macro_f1']:.3f} |"
            )
    if "acceptance" in result:
        a = result["acceptance"]
        lines += ["", f"Acceptance: `{a['command']}`", "", "| | value |", "|---|---|"]
        lines.append(f"| test macro-F1 ({a['test_n']} crops) | {a['test_macro_f1']:.4f} |")
        lines.append(f"| validation macro-F1 | {a['val_macro_f1']:.4f} |")
        lines.append(f"| wall time | {a['seconds']:.0f} s |")
        for q, r in a["tflite"].items():
            lines.append(
                f"| TFLite {q} vs Keras | top-1 agreement {r['argmax_agreement']:.4f}, "
                f"max abs difference {r['max_abs_diff']:.2g}, {r['size_bytes'] / 1e6:.1f} MB |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
