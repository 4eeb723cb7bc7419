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
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from detectcrop.core import StatusCounts
from detectcrop.folder_job import FolderJob, SettingsRules
from detectcrop.io import CsvManifest, OutputLocationError, atomic_write_text
from detectcrop.io.images import DEFAULT_DECODE_BUDGET, DEFAULT_MAX_IMAGE_BYTES
from detectcrop.io.inputs import InputEntry, read_entries
from detectcrop.ray_engine import RayOptions
from detectcrop.zoo.cache import tree_digest
from pipelines.annotated import ANNOTATED_DIR, annotate_copy, annotated_names
from pipelines.compose import DetectThenClassify
from pipelines.report_html import write_label_report
from pipelines.results import COLUMNS, CONFIG_JSON, PREDICTIONS_CSV, ImageResult

logger = logging.getLogger(__name__)

COCO_JSON = "results.coco.json"
SUMMARY_JSON = "summary.json"
#: Settings and fingerprints that label_config.json holds only since a later version (not compared when a resumed run
#: lacks them).
NOT_RECORDED_BEFORE = ("max_image_bytes", "classifier_options", "classifier_representative_data")
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


def check_label_output(out: Path) -> None:
    """Refuse an output folder that holds other files than a label run's, and an ``annotated`` entry that is not a
    plain folder (a link would take the copies elsewhere)."""
    annotated = out / ANNOTATED_DIR
    if annotated.is_symlink() or (annotated.exists() and not annotated.is_dir()):
        raise OutputLocationError(f"{annotated} is a link or a file, not a folder of the run's annotated copies; "
                                  "remove it or choose another --output")
    visible = [p.name for p in out.iterdir() if not p.name.startswith(".")]
    if visible and not {CONFIG_JSON, PREDICTIONS_CSV} & set(visible):
        raise OutputLocationError(f"the output folder {out} holds other files ({', '.join(sorted(visible)[:3])}"
                                  f"{', ...' if len(visible) > 3 else ''}) and no label run; choose an empty or new "
                                  "--output")


class PredictionLedger:
    """What label has written, for `FolderJob.start`: predictions.csv rows, an image's rows appended in one write;
    the last image's rows are redone on resume (a kill may have torn them)."""

    holds = "predictions"

    def __init__(self, out: Path) -> None:
        self.manifest = CsvManifest(out / PREDICTIONS_CSV, COLUMNS)

    def has_results(self) -> bool:
        return self.manifest.path.exists() and bool(self.manifest.rows())

    def finished(self) -> set[str]:
        images = list(dict.fromkeys(r["image"] for r in self.manifest.rows()))
        return set(images[:-1])

    def settle(self, done: set[str]) -> None:
        rows = self.manifest.open().rows()
        self.manifest.rewrite([[r[c] for c in COLUMNS] for r in rows if r["image"] in done])


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


#: How a resumed label run compares its settings with the recorded ones.
RESUME_RULES = SettingsRules(RENAMED, NOT_RECORDED_BEFORE, compare_as=_setting)


@contextlib.contextmanager
def label_output(input_path: str | os.PathLike, output: str | os.PathLike, *, engine: str = "local",
                 ray: RayOptions | None = None, show_progress: bool = False) -> Iterator[FolderJob]:
    """The `FolderJob` of a label run from ``input_path`` (a folder or one file) into ``output``: both checked
    (`check_label_output`) before any model loads, and the output's lock held for the block, so a second run into it
    fails at once."""
    with FolderJob.open("label", input_path, output, CONFIG_JSON, single_file=True, check=check_label_output,
                        engine=engine, ray=ray, show_progress=show_progress) as job:
        yield job


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
    """Label every entry under ``input_path`` (a folder, recursively, or one file) into ``output`` (`label_output`
    prepares and locks it, `label_into` labels into it).

    ``run_config`` (JSON-able) is recorded in ``label_config.json`` with the models' fingerprints; ``resume``
    requires the same config and fingerprints. ``engine="ray"`` labels on a Ray Data actor pool (``ray`` says where
    and how many; the pipeline's steps must be preset names or paths, and the output folder on storage every node
    shares); both engines write the same files.
    """
    with label_output(input_path, output, engine=engine, ray=ray, show_progress=show_progress) as job:
        return label_into(pipeline, job, resume=resume, annotate=annotate, workers=workers, prefetch=prefetch,
                          decode_budget=decode_budget, max_image_bytes=max_image_bytes, run_config=run_config)


def label_into(
    pipeline: DetectThenClassify,
    job: FolderJob,
    *,
    resume: bool = False,
    annotate: bool = False,
    workers: int = 2,
    prefetch: int = 8,
    decode_budget: int | None = DEFAULT_DECODE_BUDGET,
    max_image_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES,
    run_config: dict[str, Any] | None = None,
) -> LabelSummary:
    """`label_folder` into the folder of ``job`` (made by `label_output`, whose lock the caller holds), on its
    engine. ``run_config`` (JSON-able, e.g. ``pipeline.to_config()``) is recorded in ``label_config.json`` with the
    models' fingerprints and compared on ``resume``."""
    out = job.out
    pipeline.load()
    config = {"input": str(job.input.resolve()), "annotate": annotate, "fingerprints": _fingerprints(pipeline),
              "max_image_bytes": max_image_bytes, **(run_config or {})}
    if job.engine == "ray":
        try:
            pipeline_config = pipeline.to_config()
        except ValueError as exc:
            raise ValueError(f"engine 'ray' rebuilds the pipeline in each actor: {exc}") from exc
    entries = job.entries()
    ledger = PredictionLedger(out)
    todo = job.start(config, ledger, resume=resume, rules=RESUME_RULES, entries=entries)
    manifest = ledger.manifest.open()
    names = annotated_names([e.rel for e in entries]) if annotate else {}
    read = {"max_pixels": pipeline.max_pixels, "max_image_bytes": max_image_bytes}

    def local(todo: list[InputEntry]) -> Iterator[list[list[Any]]]:
        stream = read_entries(todo, workers=workers, prefetch=prefetch, decode_budget=decode_budget,
                              reduction=pipeline.steps_.reduction, **read)
        return labeled_rows(pipeline, out, todo, names, _sources(stream), read)

    worker = None if job.engine != "ray" else functools.partial(LabelWorker, str(out), pipeline_config, annotate,
                                                                  read)
    results = job.map(todo, local=local, worker=worker, item=lambda e: {"name": names.get(e.rel, "")},
                      result=lambda payload: payload["rows"])
    seconds = job.drain(results, manifest.append, len(todo))

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
