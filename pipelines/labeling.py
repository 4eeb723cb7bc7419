"""Label a folder of photos with a `DetectThenClassify` pipeline: crash-safe, resumable outputs.

``OUT/predictions.csv`` has one row per labeled object and one row for every image with no detection or an error, so
every input file is accounted for. Each image's rows are appended in one write (after its annotated copy, if any, is
on disk), so a killed run leaves whole images only, and ``resume=True`` continues where it stopped. At the end,
``OUT/results.coco.json`` (COCO format, with scores: loads in FiftyOne and pycocotools) and ``OUT/summary.json`` are
derived from the CSV, so an interrupted-and-resumed run ends with the same files as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from detectcrop.coco import category_name
from detectcrop.crops import save_jpeg
from detectcrop.dataset import check_locations
from detectcrop.draw import draw_boxes
from detectcrop.images import ImageReadError, discover_images, read_image
from detectcrop.io import CsvManifest, OutputLocationError, atomic_write_text, prepare_output_dir
from pipelines.compose import DetectThenClassify, ImageResult

logger = logging.getLogger(__name__)

PREDICTIONS_CSV = "predictions.csv"
COCO_JSON = "results.coco.json"
SUMMARY_JSON = "summary.json"
CONFIG_JSON = "label_config.json"
ANNOTATED_DIR = "annotated"
COLUMNS = ["image", "status", "width", "height", "object", "x1", "y1", "x2", "y2", "det_score", "det_class",
           "label", "probability", "top_k", "error"]


@dataclass
class LabelSummary:
    n_images: int = 0
    n_ok: int = 0
    n_no_detection: int = 0
    n_error: int = 0
    n_objects: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    n_processed: int = 0
    seconds: float = 0.0
    images_per_s: float = 0.0

    def lines(self) -> list[str]:
        per_label = ", ".join(f"{k}: {v}" for k, v in sorted(self.labels.items())) or "none"
        return [
            f"images: {self.n_images} (ok {self.n_ok}, no detection {self.n_no_detection}, error {self.n_error})",
            f"objects: {self.n_objects} ({per_label})",
            f"processed this run: {self.n_processed} images in {self.seconds:.1f} s ({self.images_per_s:.2f} images/s)",
        ]


def prepare_output(input_path: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Check the input and prepare a writable output folder (not inside the input), before any model is loaded."""
    src = Path(input_path)
    if src.is_dir():
        return check_locations(src, output)[1]
    if not src.is_file():
        raise FileNotFoundError(f"--input does not exist: {input_path}")
    return prepare_output_dir(output)


def _inputs(input_path: Path) -> tuple[list[Path], list[str]]:
    if input_path.is_dir():
        paths = discover_images(input_path, extensions=None)
        return paths, [p.relative_to(input_path).as_posix() for p in paths]
    if input_path.is_file():
        return [input_path], [input_path.name]
    raise FileNotFoundError(f"--input does not exist: {input_path}")


def _rows(rel: str, result: ImageResult) -> list[list[Any]]:
    if result.status != "ok":
        return [[rel, result.status, result.width or "", result.height or "", "", "", "", "", "", "", "", "", "", "",
                 result.error]]
    rows = []
    for i, o in enumerate(result.objects):
        top = ";".join(f"{label}:{p:.4f}" for label, p in o.top_k)
        rows.append([rel, "ok", result.width, result.height, i, *(f"{v:.1f}" for v in o.xyxy), f"{o.score:.4f}",
                     category_name(o.class_id), o.label, f"{o.probability:.4f}", top, ""])
    return rows


def _annotate(path: Path, result: ImageResult, target: Path, max_pixels: int | None) -> None:
    try:
        image = read_image(path, max_pixels=max_pixels)
    except ImageReadError as exc:  # changed or removed since it was labeled: the predictions still stand
        logger.warning("%s: no annotated copy: %s", path, exc)
        return
    captions = [f"{o.label} {o.probability:.2f}" for o in result.objects]
    boxes = [o.xyxy for o in result.objects]
    save_jpeg(target, draw_boxes(image, boxes, captions, colors_by=result.labels) if boxes else image, quality=90)


def _annotated_name(rel: str) -> str:
    return rel if rel.lower().endswith((".jpg", ".jpeg")) else f"{rel}.jpg"


def label_folder(
    pipeline: DetectThenClassify,
    input_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    resume: bool = False,
    annotate: bool = False,
    workers: int = 2,
    prefetch: int = 8,
    show_progress: bool = False,
    run_config: dict[str, Any] | None = None,
) -> LabelSummary:
    """Label every file under ``input_path`` (a folder, recursively, or one file) into ``output``.

    ``run_config`` (JSON-able) is recorded in ``label_config.json``; ``resume`` requires the same config.
    """
    src = Path(input_path)
    out = prepare_output(src, output)
    paths, rels = _inputs(src)
    config = {"input": str(src.resolve()), "annotate": annotate, **(run_config or {})}
    manifest = CsvManifest(out / PREDICTIONS_CSV, COLUMNS)
    done: set[str] = set()
    if manifest.path.exists() and manifest.rows():
        if not resume:
            raise OutputLocationError(f"{out} already holds predictions; pass --resume to continue, or a new output")
        previous = json.loads((out / CONFIG_JSON).read_text()) if (out / CONFIG_JSON).exists() else None
        if previous != config:
            raise OutputLocationError(f"{out} was labeled with other settings ({out / CONFIG_JSON}); use a new output")
        done = {row["image"] for row in manifest.open().rows()}
    atomic_write_text(out / CONFIG_JSON, json.dumps(config, indent=2, sort_keys=True) + "\n")
    manifest.open()

    todo = [(p, r) for p, r in zip(paths, rels, strict=True) if r not in done]
    logger.info("%d files, %d already labeled, %d to label", len(paths), len(paths) - len(todo), len(todo))
    rel_of = {os.fspath(p): r for p, r in todo}
    start = time.perf_counter()
    with tqdm(total=len(todo), unit="img", desc="label", disable=not show_progress) as bar:
        for result in pipeline.run([p for p, _ in todo], workers=workers, prefetch=prefetch):
            rel = rel_of[result.source]
            if annotate and result.status != "error":
                _annotate(Path(result.source), result, out / ANNOTATED_DIR / _annotated_name(rel), pipeline.max_pixels)
            manifest.append(_rows(rel, result))
            bar.update(1)
    seconds = time.perf_counter() - start

    rows = manifest.rows()
    write_coco(rows, pipeline, out / COCO_JSON)
    summary = summarize(rows, len(todo), seconds)
    atomic_write_text(out / SUMMARY_JSON, json.dumps(
        {k: v for k, v in asdict(summary).items() if k not in ("n_processed", "seconds", "images_per_s")},
        indent=2, sort_keys=True) + "\n")
    for line in summary.lines():
        logger.info(line)
    return summary


def summarize(rows: list[dict[str, str]], n_processed: int, seconds: float) -> LabelSummary:
    images: dict[str, str] = {}
    for row in rows:
        images.setdefault(row["image"], row["status"])
    status = Counter(images.values())
    labels = Counter(row["label"] for row in rows if row["status"] == "ok")
    return LabelSummary(
        n_images=len(images), n_ok=status["ok"], n_no_detection=status["no_detection"], n_error=status["error"],
        n_objects=sum(labels.values()), labels=dict(labels), n_processed=n_processed, seconds=round(seconds, 3),
        images_per_s=round(n_processed / seconds, 3) if seconds > 0 and n_processed else 0.0,
    )


def write_coco(rows: list[dict[str, str]], pipeline: DetectThenClassify, path: Path) -> None:
    """COCO-format results from the prediction rows: images (not the unreadable ones), labels, scored boxes."""
    classes = [str(c) for c in pipeline.classifier_.classes_]
    names = classes + sorted({r["label"] for r in rows if r["status"] == "ok"} - set(classes))
    cat_ids = {name: i + 1 for i, name in enumerate(names)}
    images: dict[str, dict[str, Any]] = {}
    annotations = []
    for row in rows:
        if row["status"] == "error":
            continue
        if row["image"] not in images:
            images[row["image"]] = {"id": len(images) + 1, "file_name": row["image"], "width": int(row["width"]),
                                    "height": int(row["height"])}
        if row["status"] != "ok":
            continue
        x1, y1, x2, y2 = (float(row[k]) for k in ("x1", "y1", "x2", "y2"))
        annotations.append({
            "id": len(annotations) + 1, "image_id": images[row["image"]]["id"], "category_id": cat_ids[row["label"]],
            "bbox": [x1, y1, round(x2 - x1, 1), round(y2 - y1, 1)], "area": round((x2 - x1) * (y2 - y1), 1),
            "iscrowd": 0, "score": float(row["probability"]), "detection_score": float(row["det_score"]),
        })
    coco = {"info": {"description": "detect-then-classify predictions"}, "images": list(images.values()),
            "categories": [{"id": i, "name": n} for n, i in cat_ids.items()], "annotations": annotations}
    atomic_write_text(path, json.dumps(coco, indent=1) + "\n")
