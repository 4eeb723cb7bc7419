"""Label a folder of photos with a `DetectThenClassify` pipeline: crash-safe, resumable outputs.

``OUT/predictions.csv`` has one row per labeled object and one row for every entry with no detection or an error, so
every input is accounted for (`detectcrop.io.inputs.scan_inputs` says how links, hidden folders and special files
count). Each image's rows are appended in one write (after its annotated copy, if any, is on disk); ``resume=True``
redoes the last image of the file (a kill may have torn its rows) and continues after it, refusing when the settings or
the models' fingerprints (sha256 of their files) changed. At the end, ``OUT/results.coco.json`` (COCO format, with
scores: loads in FiftyOne and pycocotools) and ``OUT/summary.json`` are derived from the CSV, so an
interrupted-and-resumed run ends with the same files as an uninterrupted one; ``OUT/report.html``
(`pipelines.report_html`) is the page to review. One run at a time per output folder.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from detectcrop.core import StatusCounts
from detectcrop.dataset import check_locations, check_not_nested, decode_hint
from detectcrop.io import (
    CsvManifest,
    OutputLocationError,
    atomic_write_text,
    prepare_output_dir,
    remove_stale_temporaries,
)
from detectcrop.io import stamps as input_stamps
from detectcrop.io.images import DEFAULT_DECODE_BUDGET, DEFAULT_MAX_IMAGE_BYTES
from detectcrop.io.inputs import InputEntry, read_entries, scan_inputs
from detectcrop.io.locks import OutputLock
from detectcrop.ray_engine import RayOptions, ray_map
from detectcrop.zoo.cache import tree_digest
from pipelines.annotated import ANNOTATED_DIR, annotate_copy, annotated_names
from pipelines.compose import DetectThenClassify
from pipelines.report_html import write_label_report
from pipelines.results import COLUMNS, CONFIG_JSON, PREDICTIONS_CSV, ImageResult

logger = logging.getLogger(__name__)

COCO_JSON = "results.coco.json"
SUMMARY_JSON = "summary.json"
#: Settings that label_config.json holds only since a later version (not compared when a resumed run lacks them).
NOT_RECORDED_BEFORE = ("max_image_bytes", "classifier_options")
#: Settings and fingerprints recorded under another name by earlier versions: old name -> name now.
RENAMED = {"detector_calibration": "detector_representative_data",
           "classifier_calibration": "classifier_representative_data"}


@dataclass
class LabelSummary(StatusCounts):
    """What `label_folder` found in the whole output folder (resumed runs included)."""

    n_images: int = 0
    n_objects: int = 0
    labels: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        per_label = ", ".join(f"{k}: {v}" for k, v in sorted(self.labels.items())) or "none"
        return [
            f"images: {self.n_images} ({self.status_text()})",
            f"objects: {self.n_objects} ({per_label})",
            f"processed this run: {self.n_processed} images in {self.seconds:.1f} s ({self.images_per_s:.2f} images/s)",
        ]


def prepare_output(input_path: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Check the input and prepare a writable output folder (neither inside the other), before any model loads. A
    folder already holding other files than a label run's is refused, and so is an ``annotated`` entry that is not a
    plain folder (a link would take the copies elsewhere)."""
    src = Path(input_path)
    if src.is_dir():
        out = check_locations(src, output)[1]
    elif not src.is_file():
        raise FileNotFoundError(f"--input does not exist: {input_path}")
    else:
        if Path(output).resolve() in src.resolve().parents:
            check_not_nested(src, Path(output))
        out = prepare_output_dir(output)
    annotated = out / ANNOTATED_DIR
    if annotated.is_symlink() or (annotated.exists() and not annotated.is_dir()):
        raise OutputLocationError(f"{annotated} is a link or a file, not a folder of the run's annotated copies; "
                                  "remove it or choose another --output")
    visible = [p.name for p in out.iterdir() if not p.name.startswith(".")]
    if visible and not {CONFIG_JSON, PREDICTIONS_CSV} & set(visible):
        raise OutputLocationError(f"the output folder {output} holds other files ({', '.join(sorted(visible)[:3])}"
                                  f"{', ...' if len(visible) > 3 else ''}) and no label run; choose an empty or new "
                                  "--output")
    return out


def _inputs(input_path: Path) -> list[InputEntry]:
    if input_path.is_dir():
        return scan_inputs(input_path)
    if input_path.is_file():
        return [InputEntry(input_path.name, input_path)]
    raise FileNotFoundError(f"--input does not exist: {input_path}")


def labeled_rows(
    pipeline: DetectThenClassify, out: Path, entries: list[InputEntry], names: dict[str, str],
    images: Iterator[tuple[str, Any]], read: dict[str, Any],
) -> Iterator[list[list[Any]]]:
    """Label ``images`` (``(path text, image or read error)`` of ``entries``, in order) and annotate them when
    ``names`` gives annotated copies' names (read again with the limits ``read``); one list of predictions.csv rows
    per entry (`ImageResult.to_rows`; an ok image's ``error`` cell holds why its annotated copy failed, if it did)."""
    by_source = {os.fspath(e.path): e for e in entries}
    for result in pipeline.label_images(images):
        entry = by_source[result.source]
        note = ""
        if names and result.status != "error":
            note = annotate_copy(entry.path, result, out, names[entry.rel], read)
        if result.status == "ok":
            result.error = note
        elif not result.error:
            result.error = note
        yield result.to_rows(entry.rel)


class LabelWorker:
    """A Ray worker for label: rebuilds the pipeline from its config, then reads, labels and annotates entries."""

    def __init__(self, out: str, pipeline: dict[str, Any], annotate: bool, read: dict[str, Any]) -> None:
        self.out, self.annotate, self.read = Path(out), annotate, read
        self.pipeline = DetectThenClassify.from_config(pipeline).load()

    def process(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        entries = [InputEntry(i["key"], Path(i["path"]), i["problem"]) for i in items]
        names = {i["key"]: i["name"] for i in items} if self.annotate else {}
        stream = read_entries(entries, workers=1, prefetch=2, reduction=self.pipeline.steps_.reduction,
                              **self.read)  # decoding runs ahead on a thread
        rows = labeled_rows(self.pipeline, self.out, entries, names, _sources(stream), self.read)
        return [{"rows": r} for r in rows]

    def died(self, item: dict[str, Any], tries: int) -> dict[str, Any]:
        result = ImageResult(item["path"], "error", error=f"WorkerDied: labeling this file killed its worker "
                                                          f"{tries} times")
        return {"rows": result.to_rows(item["key"])}


def _ray_rows(
    pipeline: DetectThenClassify, out: Path, todo: list[InputEntry], names: dict[str, str], read: dict[str, Any],
    options: RayOptions, show_progress: bool,
) -> Iterator[list[list[Any]]]:
    try:
        config = pipeline.to_config()
    except ValueError as exc:
        raise ValueError(f"engine 'ray' rebuilds the pipeline in each actor: {exc}") from exc
    worker = functools.partial(LabelWorker, str(out), config, bool(names), read)
    items = [{"key": e.rel, "path": os.fspath(e.path), "problem": e.problem, "name": names.get(e.rel, "")}
             for e in todo]
    for payload in ray_map(items, worker, options, show_progress=show_progress):
        yield payload["rows"]


def _sources(stream: Iterator[tuple[InputEntry, Any]]) -> Iterator[tuple[str, Any]]:
    """``(entry, image)`` pairs as ``(path text, image)``, not holding an image while the next one decodes."""
    for entry, image in stream:
        yield os.fspath(entry.path), image
        del image


def _fingerprints(pipeline: DetectThenClassify) -> dict[str, str]:
    """sha256 fingerprints of the models' files, so a resumed run notices a retrained model."""
    from detectcrop.detector import detector_fingerprint
    from detectcrop.runtime.classifier import served_precision
    from detectcrop.runtime.classifier_cache import representative_file

    out = {"detector": detector_fingerprint(pipeline.detector)}
    if isinstance(pipeline.classifier, str | os.PathLike):
        model = Path(pipeline.classifier)
        keras_file = model / "model.keras" if model.is_dir() else model
        out["classifier"] = tree_digest(keras_file)
        representative = representative_file(keras_file)
        if served_precision(pipeline.classifier_) == "int8" and representative.is_file():  # int8 is quantised on it
            out["classifier_representative_data"] = tree_digest(representative)
    return out


def _resume_state(out: Path, manifest: CsvManifest, config: dict[str, Any], resume: bool) -> set[str]:
    """The images a previous run finished (its last one excluded: a kill may have torn its rows)."""
    if not (manifest.path.exists() and manifest.rows()):
        return set()
    if not resume:
        raise OutputLocationError(f"{out} already holds predictions; pass --resume to continue, or a new output")
    previous = json.loads((out / CONFIG_JSON).read_text()) if (out / CONFIG_JSON).exists() else {}
    previous = {RENAMED.get(k, k): v for k, v in previous.items()}
    previous["fingerprints"] = {RENAMED.get(k, k): v for k, v in previous.get("fingerprints", {}).items()}
    # what a run recorded by an earlier version did not record cannot be compared: taken as unchanged
    for key in NOT_RECORDED_BEFORE:
        if key not in previous and key in config:
            logger.warning("%s does not record %s (an earlier version wrote it): not compared", CONFIG_JSON, key)
            previous[key] = config[key]
    recorded = previous.get("fingerprints", {})
    if "classifier_representative_data" in config["fingerprints"] and "classifier" in recorded:
        recorded.setdefault("classifier_representative_data", config["fingerprints"]["classifier_representative_data"])
    changed = sorted(k for k in set(previous) | set(config) if _setting(previous, k) != _setting(config, k))
    if "fingerprints" in changed:
        before, now = previous.get("fingerprints", {}), config["fingerprints"]
        which = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        raise OutputLocationError(
            f"cannot resume {out}: the {' and '.join(which)} model changed since the run started (its files' sha256 "
            "differs); label into a new output folder"
        )
    if changed:
        hint = decode_hint(previous) if "decode" in changed else ""
        raise OutputLocationError(f"cannot resume {out}: settings differ from the previous run ({', '.join(changed)}); "
                                  f"use a new output folder{hint}")
    rows = manifest.open().rows()
    last = rows[-1]["image"]
    kept = [r for r in rows if r["image"] != last]
    manifest.rewrite([[r[c] for c in COLUMNS] for r in kept])
    return {r["image"] for r in kept}


def _setting(config: dict[str, Any], key: str) -> Any:
    """A recorded setting as resume compares it: ``runtime="auto"`` as what it resolves to here, and a classifier
    given by path not by its spelling (its sha256 fingerprint is compared instead)."""
    from detectcrop.runtime import resolve_runtime

    value = config.get(key)
    if key == "runtime" and value == "auto":
        return resolve_runtime(value)
    if key == "classifier" and config.get("fingerprints", {}).get("classifier"):
        return None
    return value


@contextlib.contextmanager
def label_output(input_path: str | os.PathLike, output: str | os.PathLike) -> Iterator[Path]:
    """The prepared output folder of a label run (`prepare_output`, before any model loads), its lock held for the
    block: a second run into it fails at once."""
    out = prepare_output(input_path, output)
    with OutputLock(out, "label"):
        yield out


def label_folder(
    pipeline: DetectThenClassify,
    input_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    resume: bool = False,
    annotate: bool = False,
    workers: int = 2,
    prefetch: int = 8,
    decode_budget: int | None = DEFAULT_DECODE_BUDGET,
    max_image_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES,
    engine: str = "local",
    ray: RayOptions | None = None,
    show_progress: bool = False,
    run_config: dict[str, Any] | None = None,
) -> LabelSummary:
    """Label every entry under ``input_path`` (a folder, recursively, or one file) into ``output`` (prepared and
    locked by `label_output`; `label_into` labels into a folder the caller holds).

    ``run_config`` (JSON-able) is recorded in ``label_config.json`` with the models' fingerprints; ``resume``
    requires the same config and fingerprints. ``engine="ray"`` labels on a Ray Data actor pool (``ray`` says where
    and how many; the pipeline's steps must be preset names or paths, and the output folder on storage every node
    shares); both engines write the same files.
    """
    with label_output(input_path, output) as out:
        return label_into(pipeline, input_path, out, resume=resume, annotate=annotate, workers=workers,
                          prefetch=prefetch, decode_budget=decode_budget, max_image_bytes=max_image_bytes,
                          engine=engine, ray=ray, show_progress=show_progress, run_config=run_config)


def label_into(
    pipeline: DetectThenClassify,
    input_path: str | os.PathLike,
    out: Path,
    *,
    resume: bool = False,
    annotate: bool = False,
    workers: int = 2,
    prefetch: int = 8,
    decode_budget: int | None = DEFAULT_DECODE_BUDGET,
    max_image_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES,
    engine: str = "local",
    ray: RayOptions | None = None,
    show_progress: bool = False,
    run_config: dict[str, Any] | None = None,
) -> LabelSummary:
    """`label_folder` into ``out``, prepared by `label_output` whose lock the caller holds.

    ``run_config`` (JSON-able) is recorded in ``label_config.json`` with the models' fingerprints; ``resume``
    requires the same config and fingerprints. ``engine="ray"`` labels on a Ray Data actor pool (``ray`` says where
    and how many; the pipeline's steps must be preset names or paths, and the output folder on storage every node
    shares); both engines write the same files.
    """
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    src = Path(input_path)
    pipeline.load()
    entries = _inputs(src)
    n_tmp = remove_stale_temporaries(out)
    if n_tmp:
        logger.info("removed %d temporary files left by an interrupted run", n_tmp)
    config = {"input": str(src.resolve()), "annotate": annotate, "fingerprints": _fingerprints(pipeline),
              "max_image_bytes": max_image_bytes, **(run_config or {})}
    manifest = CsvManifest(out / PREDICTIONS_CSV, COLUMNS)
    if resume and manifest.path.exists():  # before anything is rewritten; the last image is redone anyway
        finished = list(dict.fromkeys(r["image"] for r in manifest.rows()))
        input_stamps.check_unchanged(out, entries, set(finished[:-1]))
    done = _resume_state(out, manifest, config, resume)
    input_stamps.record(out, entries, done)
    atomic_write_text(out / CONFIG_JSON, json.dumps(config, indent=2, sort_keys=True) + "\n")
    manifest.open()

    todo = [e for e in entries if e.rel not in done]
    logger.info("%d entries, %d already labeled, %d to label", len(entries), len(entries) - len(todo), len(todo))
    names = annotated_names([e.rel for e in entries]) if annotate else {}
    read = {"max_pixels": pipeline.max_pixels, "max_image_bytes": max_image_bytes}
    if engine == "ray":
        results = _ray_rows(pipeline, out, todo, names, read, ray or RayOptions(), show_progress)
    else:
        stream = read_entries(todo, workers=workers, prefetch=prefetch, decode_budget=decode_budget,
                              reduction=pipeline.steps_.reduction, **read)
        results = labeled_rows(pipeline, out, todo, names, _sources(stream), read)
    start = time.perf_counter()
    with tqdm(total=len(todo), unit="img", desc="label", disable=not show_progress) as bar:
        for rows in results:
            manifest.append(rows)
            bar.update(1)
    seconds = time.perf_counter() - start

    written = ImageResult.from_rows(manifest.rows())  # from the file: a resumed run ends with the same outputs
    write_coco(written, pipeline, out / COCO_JSON)
    summary = summarize(written, len(todo), seconds)
    atomic_write_text(out / SUMMARY_JSON, json.dumps(
        {k: v for k, v in asdict(summary).items() if k not in ("n_processed", "seconds", "images_per_s")},
        indent=2, sort_keys=True) + "\n")
    write_label_report(out)
    for line in summary.lines():
        logger.info(line)
    return summary


def summarize(results: list[ImageResult], n_processed: int, seconds: float) -> LabelSummary:
    status = Counter(r.status for r in results)
    labels = Counter(label for r in results if r.status == "ok" for label in r.labels)
    return LabelSummary(
        n_images=len(results), n_ok=status["ok"], n_no_detection=status["no_detection"], n_error=status["error"],
        n_objects=sum(labels.values()), labels=dict(labels), n_processed=n_processed, seconds=round(seconds, 3),
        images_per_s=round(n_processed / seconds, 3) if seconds > 0 and n_processed else 0.0,
    )


def write_coco(results: list[ImageResult], pipeline: DetectThenClassify, path: Path) -> None:
    """COCO-format results (`ImageResult.to_coco`): images (not the unreadable ones), labels, scored boxes."""
    classes = [str(c) for c in pipeline.classifier_.classes_]
    names = classes + sorted({label for r in results if r.status == "ok" for label in r.labels} - set(classes))
    cat_ids = {name: i + 1 for i, name in enumerate(names)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for result in results:
        if result.status == "error":
            continue
        entry, found = result.to_coco(len(images) + 1, cat_ids, len(annotations) + 1)
        images.append(entry)
        annotations.extend(found)
    coco = {"info": {"description": "detect-then-classify predictions"}, "images": images,
            "categories": [{"id": i, "name": n} for n, i in cat_ids.items()], "annotations": annotations}
    atomic_write_text(path, json.dumps(coco, indent=1) + "\n")
