"""`build_crops`: a photo folder in, a crop dataset out (class folders mirrored, manifests, duplicate groups).

Output layout::

    CROPS/<same subfolders as PHOTOS>/<stem>_<k>.jpg   crops, highest score first (k = 0, 1, ...)
    CROPS/images.csv      one row per input file: path, status (ok|no_detection|error), n_crops, error
    CROPS/crops.csv       one row per crop: crop_path, source_path, label, x1, y1, x2, y2, score, phash,
                          duplicate_group, dropped
    CROPS/build_crops.json  the settings the dataset was built with (checked on --resume)

Crash safety: each crop is written to a temporary file and renamed; an image's crops.csv rows are appended (one
write + fsync) only after its crops are on disk, and its images.csv row after that. ``resume=True`` skips images
already in images.csv, drops crops.csv rows of images that never got their images.csv row, and redoes those
images: crop names are deterministic, so the result is byte-identical to an uninterrupted run. Duplicate groups
need every crop, so they are computed at the end from the hashes in crops.csv and crops.csv is rewritten atomically.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detectcrop import dedupe
from detectcrop.core import DetectSteps, ImageCrops, StatusCounts, category_ids, process_image
from detectcrop.crop_writer import CropWorker, ImageRows, ManifestWriter, detector_config, label_of, stop_error
from detectcrop.crops import JPEG_QUALITY, CropPolicy
from detectcrop.decoding import DEFAULT_DECODE
from detectcrop.folder_job import FolderJob, check_locations, check_not_nested, decode_hint
from detectcrop.io import CsvManifest, OutputLocationError, inside
from detectcrop.io.images import DEFAULT_DECODE_BUDGET, DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_PIXELS
from detectcrop.io.inputs import InputEntry, read_entries
from detectcrop.io.locks import RUN_LOCK
from detectcrop.ray_engine import RayOptions
from detectcrop.tiling import SupportsDetect, TileConfig

logger = logging.getLogger(__name__)

__all__ = ["BuildSummary", "CropLedger", "OutputLocationError", "build_crops", "build_crops_into", "check_locations",
           "check_not_nested", "crop_basenames", "crop_output", "decode_hint"]

IMAGES_CSV = "images.csv"
CROPS_CSV = "crops.csv"
CONFIG_JSON = "build_crops.json"
IMAGES_COLUMNS = ("path", "status", "n_crops", "error")
CROPS_COLUMNS = ("crop_path", "source_path", "label", "x1", "y1", "x2", "y2", "score", "phash",
                 "duplicate_group", "dropped")
FORMAT_VERSION = 1
#: Names the output folder uses itself: a first-level input folder of one of these names cannot be mirrored.
RESERVED_NAMES = frozenset(n.casefold() for n in (IMAGES_CSV, CROPS_CSV, CONFIG_JSON, RUN_LOCK))
#: Longest crop base name (UTF-8 bytes): ``<stem>_<k>.jpg`` stays under the usual 255-byte file name limit.
MAX_STEM_BYTES = 200


@dataclass
class BuildSummary(StatusCounts):
    """What `build_crops` did. Counts cover the whole output folder (resumed runs included)."""

    n_files: int = 0
    n_resumed: int = 0
    errors: dict[str, int] = field(default_factory=dict)  #: error rows by kind (the reason's first word)
    n_crops: int = 0
    n_duplicate_groups: int = 0
    n_duplicates: int = 0
    n_dropped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """A short human summary."""
        out = [
            f"files: {self.n_files} ({self.status_text()}); "
            f"processed now {self.n_processed}, skipped as done {self.n_resumed}",
            f"crops: {self.n_crops}; near-duplicate groups: {self.n_duplicate_groups} "
            f"({self.n_duplicates} crops, {self.n_dropped} dropped)",
            f"speed: {self.images_per_s:.2f} images/s over {self.seconds:.1f} s",
        ]
        if self.errors:
            out.append("errors: " + ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())))
        return out


def _short_stem(stem: str, rel: str) -> str:
    """``stem``, or a prefix of it plus a hash of ``rel`` when it is too long for a file name."""
    raw = stem.encode("utf-8")
    if len(raw) <= MAX_STEM_BYTES:
        return stem
    head = raw[: MAX_STEM_BYTES - 9].decode("utf-8", "ignore")
    return f"{head}_{hashlib.sha1(rel.encode('utf-8')).hexdigest()[:8]}"


def crop_basenames(rel_paths: Sequence[str]) -> dict[str, str]:
    """Deterministic crop base names: the source's stem, plus a short hash of its relative path when two sources
    in one folder would share a stem (``a.jpg`` and ``a.png``, or ``A.jpg`` and ``a.JPG`` on a case-insensitive disk)
    or when the stem is too long for a file name."""
    def key(r: str) -> tuple[str, str]:
        return str(Path(r).parent).casefold(), _short_stem(Path(r).stem, r).casefold()

    keys = Counter(key(r) for r in rel_paths)
    out = {}
    for r in rel_paths:
        stem = _short_stem(Path(r).stem, r)
        if keys[key(r)] > 1:
            stem = f"{stem}_{hashlib.sha1(r.encode('utf-8')).hexdigest()[:8]}"
        out[r] = stem
    return out


def _entry_problem(entry: InputEntry) -> str:
    """Why an entry cannot be processed, known before reading it."""
    if entry.problem:
        return entry.problem
    label = label_of(entry.rel)
    if label.casefold() in RESERVED_NAMES:
        return f"the folder name {label!r} is reserved for an output file of build_crops; rename the folder"
    return ""


def _config(
    input_dir: Path, steps: DetectSteps, max_pixels: int | None, max_image_bytes: int | None, drop_duplicates: bool,
    max_distance: int,
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "input": str(input_dir),
        "detector": getattr(steps.detector, "name", type(steps.detector).__name__),
        **({} if getattr(steps.detector, "runtime", "tf") == "tf" else {"runtime": steps.detector.runtime}),
        **({} if getattr(steps.detector, "precision", "float") == "float" else {"precision": steps.detector.precision}),
        "categories": list(steps.category_ids or []),
        "min_score": steps.min_score,
        "policy": steps.policy.to_dict(),
        "tile": steps.tile.to_dict() if steps.tile else None,
        **({} if steps.decode == "full" else {"decode": steps.decode}),
        "max_pixels": max_pixels,
        "max_image_bytes": max_image_bytes,
        "jpeg_quality": JPEG_QUALITY,
        "dedupe": {"max_distance": max_distance, "drop_duplicates": drop_duplicates},
    }


class CropLedger:
    """What build_crops has written, for `FolderJob.start`: images.csv rows are finished images; crops.csv rows of
    images without one are a kill's leftovers."""

    holds = "a crop dataset"

    def __init__(self, out: Path) -> None:
        self.out = out
        self.images = CsvManifest(out / IMAGES_CSV, IMAGES_COLUMNS)
        self.crops = CsvManifest(out / CROPS_CSV, CROPS_COLUMNS)

    def has_results(self) -> bool:
        return self.images.path.exists() or self.crops.path.exists()

    def finished(self) -> set[str]:
        if self.crops.path.exists():
            self.crops.open()  # cuts a torn last line
        for r in self.crops.rows():
            inside(self.out, r["crop_path"])  # refuse a manifest that names files outside the output folder
        return {row["path"] for row in self.images.rows()}

    def settle(self, done: set[str]) -> None:
        if not self.crops.path.exists():
            return
        rows = self.crops.rows()
        kept = [r for r in rows if r["source_path"] in done]
        if len(kept) != len(rows):
            logger.info("dropping %d crops.csv rows of unfinished images", len(rows) - len(kept))
            self.crops.rewrite([[r[c] for c in CROPS_COLUMNS] for r in kept])


def _finish_duplicates(out: Path, drop: bool, max_distance: int) -> tuple[int, int, int]:
    """Group near-duplicate crops, rewrite crops.csv with the groups, delete dropped crops when ``drop``."""
    manifest = CsvManifest(out / CROPS_CSV, CROPS_COLUMNS)
    rows = manifest.rows()
    groups = dedupe.duplicate_groups([dedupe.hex_to_hash(r["phash"]) for r in rows], max_distance)
    keep = dedupe.keep_mask(groups) if drop else np.ones(len(rows), dtype=bool)
    new_rows = []
    for r, g, k in zip(rows, groups, keep, strict=True):
        r["duplicate_group"] = "" if g < 0 else str(int(g))
        r["dropped"] = "0" if k else "1"
        if not k:
            inside(out, r["crop_path"]).unlink(missing_ok=True)
        new_rows.append([r[c] for c in CROPS_COLUMNS])
    manifest.rewrite(new_rows)
    n_groups = int(groups.max()) + 1 if len(groups) and groups.max() >= 0 else 0
    return n_groups, int((groups >= 0).sum()), int((~keep).sum())


@contextlib.contextmanager
def crop_output(input_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str], *, engine: str = "local",
                ray: RayOptions | None = None, show_progress: bool = False) -> Iterator[FolderJob]:
    """The `FolderJob` of a build_crops run: input and output checked (before any model loads) and the output's
    lock held for the block, so a second run into it fails at once."""
    with FolderJob.open("build_crops", input_dir, output_dir, CONFIG_JSON, engine=engine, ray=ray,
                        show_progress=show_progress) as job:
        yield job


def build_crops(
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    detector: SupportsDetect | str | os.PathLike[str],
    *,
    category: str | int | Sequence[str | int] = "clock",
    min_score: float = 0.3,
    policy: CropPolicy | None = None,
    tile: TileConfig | None = None,
    resume: bool = False,
    drop_duplicates: bool = False,
    max_distance: int = dedupe.DEFAULT_MAX_DISTANCE,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_image_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES,
    decode_budget: int | None = DEFAULT_DECODE_BUDGET,
    workers: int = 2,
    prefetch: int = 8,
    engine: str = "local",
    ray: RayOptions | None = None,
    show_progress: bool = False,
    runtime: str = "tf",
    decode: str = DEFAULT_DECODE,
) -> BuildSummary:
    """Detect ``category`` in every photo under ``input_dir`` and save the crops under ``output_dir``.

    Every entry under ``input_dir`` gets one images.csv row (`detectcrop.io.inputs.scan_inputs` says how links, hidden
    folders and special files count). One run at a time per output folder (`detectcrop.io.locks.OutputLock`); the
    folders are checked and locked before a detector given by name loads (`crop_output` + `build_crops_into`).

    Args:
        input_dir: photo folder; its subfolders (class labels) are mirrored in ``output_dir``.
        output_dir: the crop dataset (created if its parent exists; must not contain or lie inside the input).
        detector: anything with ``detect(rgb_uint8, min_score=...) -> Detections`` in pixels (`detectcrop.Detector`),
            or a preset name, handle or path (loaded with ``runtime``).
        category: COCO name(s) or id(s) to crop.
        min_score: minimum detection score.
        policy: padding, squaring, minimum size and crops per image (`CropPolicy`).
        tile: detect on overlapping tiles too (`TileConfig`), for small objects.
        resume: continue an interrupted run in ``output_dir``.
        drop_duplicates: delete all but the first crop of each near-duplicate group (rows stay, ``dropped=1``).
        max_distance: Hamming radius (of 64 bits) for near-duplicates.
        max_pixels: refuse larger images (decompression bombs); ``None``: no limit.
        max_image_bytes: refuse images that need more memory to decode (`detectcrop.io.images.decode_bytes`).
        decode_budget: bytes of images decoded ahead at once (one that needs more decodes alone); ``None``: no limit.
        workers: decoding threads (local engine).
        prefetch: how many images the decoding threads may decode ahead (local engine).
        engine: ``"local"`` (this process) or ``"ray"`` (a Ray Data actor pool, see `detectcrop.ray_engine`); both
            write the same files.
        ray: Ray settings (address, actors, ...) for ``engine="ray"``.
        show_progress: a progress bar (images/s).
        runtime: ``"tf"``, ``"litert"`` or ``"auto"`` for a detector given by name (`Detector.from_preset`).
        decode: ``"full"``, ``"reduced"`` or ``"auto"``: decode large JPEGs at reduced size for whole-image detection
            (`detectcrop.decoding`; crops are cut from the full resolution, decoded only for images with crops).
    """
    with crop_output(input_dir, output_dir, engine=engine, ray=ray, show_progress=show_progress) as job:
        if isinstance(detector, str | os.PathLike):
            from detectcrop.detector import Detector

            detector = Detector.from_preset(detector, runtime=runtime)
        return build_crops_into(
            job, detector, category=category, min_score=min_score, policy=policy, tile=tile, resume=resume,
            drop_duplicates=drop_duplicates, max_distance=max_distance, max_pixels=max_pixels,
            max_image_bytes=max_image_bytes, decode_budget=decode_budget, workers=workers, prefetch=prefetch,
            decode=decode)


def build_crops_into(
    job: FolderJob,
    detector: SupportsDetect,
    *,
    category: str | int | Sequence[str | int] = "clock",
    min_score: float = 0.3,
    policy: CropPolicy | None = None,
    tile: TileConfig | None = None,
    resume: bool = False,
    drop_duplicates: bool = False,
    max_distance: int = dedupe.DEFAULT_MAX_DISTANCE,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_image_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES,
    decode_budget: int | None = DEFAULT_DECODE_BUDGET,
    workers: int = 2,
    prefetch: int = 8,
    decode: str = DEFAULT_DECODE,
) -> BuildSummary:
    """`build_crops` into the folder of ``job`` (made by `crop_output`, whose lock the caller holds), on its
    engine; the settings are `build_crops`'s."""
    started = time.perf_counter()
    steps = DetectSteps(detector, category_ids([category] if isinstance(category, str | int) else category),
                        min_score, policy or CropPolicy(), tile, decode)
    out = job.out
    config = _config(job.input, steps, max_pixels, max_image_bytes, drop_duplicates, max_distance)
    read = {"max_pixels": max_pixels, "max_image_bytes": max_image_bytes}
    worker = None if job.engine != "ray" else functools.partial(  # the actors rebuild the detector from its config
        CropWorker, str(out), detector_config(steps.detector),
        {"category_ids": steps.category_ids, "min_score": steps.min_score, "policy": steps.policy.to_dict(),
         "tile": steps.tile.to_dict() if steps.tile else None, "decode": steps.decode}, read,
    )  # before anything is written: a detector the actors cannot rebuild is refused first
    entries = job.entries()
    todo = [InputEntry(e.rel, e.path, _entry_problem(e))
            for e in job.start(config, CropLedger(out), resume=resume, entries=entries)]
    names = crop_basenames([e.rel for e in entries])
    results = job.map(todo, local=lambda todo: _local_results(todo, steps, read, decode_budget, workers, prefetch),
                      worker=worker, item=lambda e: {"name": names[e.rel]},
                      result=lambda payload: ImageRows(payload["image"], payload["crops"]))
    loop_seconds = _write(job, names, len(todo), results, prefetch)
    n_groups, n_dups, n_dropped = _finish_duplicates(out, drop_duplicates, max_distance)
    summary = _summarize(out, len(entries), len(todo), loop_seconds, time.perf_counter() - started)
    summary.n_duplicate_groups, summary.n_duplicates, summary.n_dropped = n_groups, n_dups, n_dropped
    logger.info("build_crops finished: %d files, %d crops, %d errors, %.2f images/s", summary.n_files,
                summary.n_crops, summary.n_error, summary.images_per_s)
    for line in summary.lines():
        logger.debug(line)
    return summary


def _local_results(
    todo: list[InputEntry], steps: DetectSteps, read: dict[str, Any], decode_budget: int | None, workers: int,
    prefetch: int,
) -> Iterator[ImageCrops]:
    """The local engine: decode ahead on threads, detect and crop here, in order."""
    reader = read_entries(todo, image_types_only=True, workers=workers, prefetch=prefetch,
                          decode_budget=decode_budget, reduction=steps.reduction, **read)
    try:
        for entry, image in reader:
            yield process_image(entry.rel, image, steps, defer=True)  # the writer thread decodes a reduced image's
            del image  # full resolution for its crops (`ImageCrops.finish`); not held while the next image decodes
    finally:
        reader.close()


def _write(job: FolderJob, names: dict[str, str], total: int, results: Iterator[ImageCrops | ImageRows],
           prefetch: int) -> float:
    """Write each input's crops and rows in order (on a writer thread; the Ray engine's actors wrote their crops and
    send the rows); returns the seconds the loop took."""
    images = CsvManifest(job.out / IMAGES_CSV, IMAGES_COLUMNS).open()
    crops = CsvManifest(job.out / CROPS_CSV, CROPS_COLUMNS).open()
    writer = ManifestWriter(job.out, names, images, crops, depth=prefetch)
    writer.start()
    try:
        seconds = job.drain(results, writer.put, total)
        writer.put(None)
    except BaseException:
        writer.abort()
        raise
    finally:
        writer.join()
    if writer.failure is not None:
        raise stop_error(writer.failure) from writer.failure
    return seconds


def _summarize(out: Path, n_files: int, n_processed: int, loop_seconds: float, seconds: float) -> BuildSummary:
    rows = CsvManifest(out / IMAGES_CSV, IMAGES_COLUMNS).rows()
    status = Counter(r["status"] for r in rows)
    errors = Counter(r["error"].split(":", 1)[0] for r in rows if r["status"] == "error")
    return BuildSummary(
        n_files=n_files,
        n_ok=status["ok"],
        n_no_detection=status["no_detection"],
        n_error=status["error"],
        n_crops=sum(int(r["n_crops"]) for r in rows),
        n_processed=n_processed,
        n_resumed=n_files - n_processed,
        seconds=round(seconds, 3),
        images_per_s=round(n_processed / loop_seconds, 3) if loop_seconds > 0 and n_processed else 0.0,
        errors=dict(errors),
    )
