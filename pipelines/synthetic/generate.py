"""`generate`: write the synthetic watch benchmark (photos, scenes, COCO annotations) to a folder."""

from __future__ import annotations

import enum
import json
import logging
import multiprocessing
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from detectcrop.io import atomic_write_bytes
from pipelines.synthetic.backgrounds import background_sources
from pipelines.synthetic.brands import CATALOGUE_SEED, BrandSpec, make_catalogue
from pipelines.synthetic.coco import build_coco
from pipelines.synthetic.scenes import PHOTO_SMALL_P, Rendered, render_photo, render_scene

logger = logging.getLogger(__name__)


class JobKind(enum.Enum):
    """What an image shows; the value is its folder and its COCO ``split``."""

    PHOTO = "photos"  # one watch, in the brand's folder
    SCENE = "scenes"  # 0 or 2-4 watches of different brands


@dataclass(frozen=True)
class Job:
    kind: JobKind
    index: int  # photo index within its brand / scene index
    brand: int  # brand index for photos, -1 for scenes
    file_name: str


@dataclass(frozen=True)
class _Settings:
    specs: tuple[BrandSpec, ...]
    seed: int
    size: tuple[int, int]
    out_dir: str
    small_p: float
    difficulty: str = "normal"


def plan_jobs(specs: Sequence[BrandSpec], photos_per_brand: int, scenes: int) -> list[Job]:
    """Every image of the dataset, in output order: each brand's photos, then the scenes."""
    jobs = [
        Job(JobKind.PHOTO, i, b, f"photos/{spec.name}/{spec.name}_{i:04d}.jpg")
        for b, spec in enumerate(specs)
        for i in range(photos_per_brand)
    ]
    return jobs + [Job(JobKind.SCENE, i, -1, f"scenes/scene_{i:04d}.jpg") for i in range(scenes)]


def _run_job(args: tuple[Job, _Settings]) -> tuple[Job, Rendered]:
    job, s = args
    if job.kind is JobKind.PHOTO:
        rendered = render_photo(s.specs, job.brand, job.index, s.seed, s.size, s.small_p, s.difficulty)
    else:
        rendered = render_scene(s.specs, job.index, s.seed, s.size, s.difficulty)
    atomic_write_bytes(Path(s.out_dir) / job.file_name, rendered.jpeg, fsync=False)
    rendered.jpeg = b""  # written; do not ship it back between processes
    return job, rendered


def _execute(tasks: list[tuple[Job, _Settings]], workers: int, show_progress: bool) -> Iterator[tuple[Job, Rendered]]:
    """Results in task order, whatever the number of worker processes (started fresh: no forked state)."""
    bar = tqdm(total=len(tasks), desc="watches", unit="img", disable=not show_progress)
    try:
        if workers <= 1:
            for task in tasks:
                yield _run_job(task)
                bar.update()
        else:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                for result in pool.map(_run_job, tasks, chunksize=4):
                    yield result
                    bar.update()
    finally:
        bar.close()


def _prepare(out: Path, overwrite: bool) -> None:
    """Make room for a dataset in ``out``: an earlier watch dataset there is replaced only with ``overwrite``; a
    ``photos``/``scenes`` entry that is a link, or that is not part of a watch dataset, is never removed."""
    parts = [out / name for name in ("annotations.json", "photos", "scenes")]
    if not any(p.exists() or p.is_symlink() for p in parts):
        return
    for p in parts:
        if p.is_symlink():
            raise FileExistsError(f"{p} is a symbolic link; make_watches writes only into a folder of its own")
    try:
        ours = "catalogue" in json.loads((out / "annotations.json").read_text())
    except (OSError, ValueError, TypeError):
        ours = False
    if not ours:
        raise FileExistsError(f"{out} holds photos/, scenes/ or annotations.json that are not a watch dataset made "
                              "here; choose another output folder")
    if not overwrite:
        raise FileExistsError(f"{out} already holds a watch dataset; pass overwrite=True (--overwrite) to replace it")
    for sub in ("photos", "scenes"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    (out / "annotations.json").unlink(missing_ok=True)


def generate(
    out_dir: str | os.PathLike[str],
    brands: int = 8,
    photos_per_brand: int = 40,
    scenes: int = 0,
    seed: int = 0,
    size: tuple[int, int] = (640, 480),
    workers: int = 1,
    overwrite: bool = False,
    show_progress: bool = False,
    brand_seed: int | None = CATALOGUE_SEED,
    small_photo_fraction: float = PHOTO_SMALL_P,
    difficulty: str = "normal",
) -> dict[str, Any]:
    """Write the synthetic watch benchmark to ``out_dir`` and return a summary.

    The brands are the first ``brands`` of the catalogue drawn from ``brand_seed`` (``None``: the default catalogue),
    so a brand name means the same watch design whatever ``seed`` and ``brands``; ``seed`` draws the photos.
    ``small_photo_fraction``: share of product photos whose watch is small (10-25% of the shorter side; not used by
    ``difficulty="hard"``, whose sizes are its own). ``difficulty``: ``"normal"`` or ``"hard"`` (its own catalogue of
    20 brands that differ in 2-3 fine details, harder photos; see `pipelines.synthetic.difficulty`).

    Layout: ``photos/<brand>/<brand>_NNNN.jpg`` (one watch each), ``scenes/scene_NNNN.jpg`` (0 or 2-4 watches) and
    ``annotations.json`` (COCO, written last; categories = brands; each annotation also has ``rel_size``, the head
    box's longer side over the image's shorter side; ``catalogue`` = every brand's definition and its fingerprint).
    ``size`` is (width, height). Same arguments -> same bytes, whatever ``workers``.
    """
    if photos_per_brand < 0 or scenes < 0:
        raise ValueError("photos_per_brand and scenes must be >= 0")
    if min(size) < 32:
        raise ValueError(f"size must be at least 32x32, got {size}")
    if not 0 <= small_photo_fraction <= 1:
        raise ValueError(f"small_photo_fraction must be in [0, 1], got {small_photo_fraction}")
    size = (int(size[0]), int(size[1]))
    catalogue = make_catalogue(CATALOGUE_SEED if brand_seed is None else brand_seed, difficulty=difficulty)
    specs = catalogue.first(brands)
    out = Path(out_dir)
    _prepare(out, overwrite)
    for spec in specs:
        (out / JobKind.PHOTO.value / spec.name).mkdir(parents=True, exist_ok=True)
    if scenes:
        (out / JobKind.SCENE.value).mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(specs, photos_per_brand, scenes)
    if workers <= 1:
        background_sources()  # load the photos once, before the progress bar starts
    settings = _Settings(specs, seed, size, str(out), small_photo_fraction, difficulty)
    results = list(_execute([(job, settings) for job in jobs], workers, show_progress))
    images = [(job.file_name, job.kind.value, r.background, r.objects) for job, r in results]
    coco = build_coco(catalogue, specs, images, size, seed)
    atomic_write_bytes(out / "annotations.json", json.dumps(coco, indent=1).encode())
    logger.info("wrote %d images (%d annotations) to %s", len(jobs), len(coco["annotations"]), out)
    return {
        "out_dir": str(out),
        "brands": [s.name for s in specs],
        "photos": brands * photos_per_brand,
        "scenes": scenes,
        "annotations": len(coco["annotations"]),
        "catalogue": {"seed": catalogue.seed, "fingerprint": catalogue.fingerprint},
        "difficulty": difficulty,
    }
