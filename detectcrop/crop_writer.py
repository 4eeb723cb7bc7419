"""Writing one image's crops and manifest rows: shared by the local writer thread and the Ray workers.

`save_image_crops` turns an `ImageCrops` into files and rows; a failure to write one image's crops (a name the file
system refuses, an image too large for JPEG, a subfolder it cannot create) becomes that image's ``error`` row and its
partial crops are removed. A full disk, a quota or a read-only file system (`OUTPUT_FULL_ERRNOS`) is no image's fault:
it stops the run (`detectcrop.io.OutputUnwritableError`), as a failure to append to the manifests does, and
``--resume`` continues.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detectcrop import dedupe
from detectcrop.core import DetectSteps, ImageCrops, process_image
from detectcrop.crops import JPEG_QUALITY, save_jpeg
from detectcrop.io import OUTPUT_FULL_ERRNOS, CsvManifest, inside, one_line, output_unwritable
from detectcrop.io.inputs import InputEntry, read_entries

logger = logging.getLogger(__name__)


@dataclass
class ImageRows:
    """One input's manifest rows: its images.csv row and its crops.csv rows (crops already on disk)."""

    image: list[Any]
    crops: list[list[Any]] = field(default_factory=list)


def stop_error(failure: BaseException) -> BaseException:
    """What the main thread raises for the writer thread's ``failure``: an `OSError` as it is (a one-line message
    for the command line), anything else wrapped."""
    if isinstance(failure, OSError):
        return failure
    return RuntimeError(f"writing the outputs failed: {failure}")


def label_of(rel_path: str) -> str:
    """The class of a photo: its first-level folder (``rolex/shop 2/b.jpg`` -> ``rolex``); none at the top level."""
    parts = Path(rel_path).parts
    return parts[0] if len(parts) > 1 else ""


def save_image_crops(out: Path, base_name: str, job: ImageCrops) -> ImageRows:
    """Write ``job``'s crops as ``<its folder>/<base_name>_<k>.jpg`` under ``out``; its rows, or an error row (crops
    waiting for a full-resolution decode are cut first, `ImageCrops.finish`)."""
    job.finish()
    if job.status == "error":
        logger.warning("%s: %s", job.source, job.error)
        return ImageRows([job.source, "error", 0, job.error])
    folder = Path(job.source).parent  # the input's subfolders, mirrored
    rows: list[list[Any]] = []
    written: list[Path] = []
    try:
        for k, (box, pixels) in enumerate(zip(job.boxes, job.crops, strict=True)):
            crop_rel = (folder / f"{base_name}_{k}.jpg").as_posix()
            written.append(save_jpeg(inside(out, crop_rel), pixels, JPEG_QUALITY))
            x1, y1, x2, y2 = (int(v) for v in box)
            rows.append([crop_rel, job.source, label_of(job.source), x1, y1, x2, y2,
                         f"{float(job.detections.scores[k]):.4f}", dedupe.hash_to_hex(dedupe.phash(pixels)), "", 0])
    except Exception as exc:  # this image's outputs cannot be written: its row says why, the run goes on
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        if isinstance(exc, OSError) and exc.errno in OUTPUT_FULL_ERRNOS:  # not this image's fault: stop the run
            raise output_unwritable(out, exc) from exc
        reason = one_line(f"WriteError: {type(exc).__name__}: {exc}")
        logger.warning("%s: %s", job.source, reason)
        return ImageRows([job.source, "error", 0, reason])
    return ImageRows([job.source, "ok" if rows else "no_detection", len(rows), ""], rows)


class ManifestWriter(threading.Thread):
    """Appends each input's rows (saving its crops first, for local jobs) in input order, off the detection thread."""

    def __init__(self, out: Path, names: dict[str, str], images: CsvManifest, crops: CsvManifest, depth: int) -> None:
        super().__init__(name="detectcrop-writer", daemon=True)
        self.out, self.names, self.images, self.crops = out, names, images, crops
        self.jobs: queue.Queue[ImageCrops | ImageRows | None] = queue.Queue(maxsize=max(1, depth))
        self.failure: BaseException | None = None
        self.stop_now = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop_now.is_set():
                job = self.jobs.get()
                if job is None:
                    return
                rows = job if isinstance(job, ImageRows) else save_image_crops(self.out, self.names[job.source], job)
                if rows.crops:
                    self.crops.append(rows.crops)
                self.images.append([rows.image])
        except BaseException as exc:  # handed to the main thread
            self.failure = exc

    def put(self, job: ImageCrops | ImageRows | None) -> None:
        while True:
            if self.failure is not None:
                raise stop_error(self.failure) from self.failure
            try:
                self.jobs.put(job, timeout=0.5)
                return
            except queue.Full:
                continue

    def abort(self) -> None:
        self.stop_now.set()
        with contextlib.suppress(queue.Full):
            self.jobs.put_nowait(None)


class CropWorker:
    """A Ray worker for build_crops: reads, detects, crops and writes each entry; returns its rows.

    Built in each actor from plain settings (the detector is rebuilt from its config), see `detectcrop.ray_engine`.
    """

    def __init__(self, out: str, detector: Any, steps: dict[str, Any], read: dict[str, Any]) -> None:
        from detectcrop.crops import CropPolicy
        from detectcrop.tiling import TileConfig

        self.out = Path(out)
        self.read = read
        self.steps = DetectSteps(
            _rebuild_detector(detector), tuple(steps["category_ids"]) if steps["category_ids"] is not None else None,
            steps["min_score"], CropPolicy(**steps["policy"]),
            TileConfig(**steps["tile"]) if steps["tile"] is not None else None, steps.get("decode", "full"),
        )

    def process(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Decoding runs ahead on a thread while the detector works (as in the local engine)."""
        entries = [InputEntry(i["key"], Path(i["path"]), i["problem"]) for i in items]
        names = {i["key"]: i["name"] for i in items}
        out = []
        for entry, image in read_entries(entries, image_types_only=True, workers=1, prefetch=2,
                                         reduction=self.steps.reduction, **self.read):
            rows = save_image_crops(self.out, names[entry.rel], process_image(entry.rel, image, self.steps))
            del image
            out.append({"image": rows.image, "crops": rows.crops})
        return out

    def died(self, item: dict[str, Any], tries: int) -> dict[str, Any]:
        reason = f"WorkerDied: processing this file killed its worker {tries} times"
        return {"image": [item["key"], "error", 0, reason], "crops": []}


def detector_config(detector: Any) -> Any:
    """What a worker needs to rebuild ``detector``: its config when it has one (`detectcrop.Detector`), else the
    object itself (which must then pickle)."""
    to_config = getattr(detector, "to_config", None)
    return {"detector_config": to_config()} if callable(to_config) else detector


def _rebuild_detector(spec: Any) -> Any:
    if isinstance(spec, dict) and "detector_config" in spec:
        from detectcrop.detector import Detector

        return Detector.from_config(spec["detector_config"])
    return spec
