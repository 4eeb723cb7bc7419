"""The annotated copies of a label run (``OUT/annotated/``): each input with its objects drawn and labeled."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from detectcrop.crops import save_jpeg
from detectcrop.dataset import crop_basenames
from detectcrop.draw import draw_boxes
from detectcrop.io import OUTPUT_FULL_ERRNOS, inside, one_line, output_unwritable, printable
from detectcrop.io.images import read_image, resize_image
from pipelines.results import ImageResult

logger = logging.getLogger(__name__)

ANNOTATED_DIR = "annotated"
#: JPEG's largest side; larger annotated copies are scaled down to it.
JPEG_MAX_SIDE = 65500


def annotate_copy(path: Path, result: ImageResult, out: Path, name: str, read: dict[str, Any]) -> str:
    """Save a copy of ``path`` with the objects drawn as ``out/annotated/name`` (never outside ``out``), read with
    the run's limits ``read``; returns ``""`` or why it could not be saved (the predictions stand either way)."""
    try:
        target = inside(out, f"{ANNOTATED_DIR}/{name}")
        image = read_image(path, **read)
        dets = result.detections
        if len(dets):
            captions = [f"{label} {float(p):.2f}" for label, p in zip(result.labels, dets.data["probability"],
                                                                       strict=True)]
            image = draw_boxes(image, [tuple(float(v) for v in box) for box in dets.xyxy], captions,
                               colors_by=result.labels)
        h, w = image.shape[:2]
        if max(h, w) > JPEG_MAX_SIDE:  # JPEG cannot hold it: a smaller copy for review
            scale = JPEG_MAX_SIDE / max(h, w)
            image = resize_image(image, (max(1, round(h * scale)), max(1, round(w * scale))))
        save_jpeg(target, image, quality=90)
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno in OUTPUT_FULL_ERRNOS:  # the disk, not this image: stop the run
            raise output_unwritable(out, exc) from exc
        text = str(exc) if str(exc).startswith(type(exc).__name__) else f"{type(exc).__name__}: {exc}"
        reason = one_line(f"AnnotateError: no annotated copy: {text}")
        logger.warning("%s: %s", printable(path), reason)
        return reason
    return ""


def annotated_names(rels: list[str]) -> dict[str, str]:
    """Where each input's annotated copy goes under ``annotated/``: its folder and stem, ``.jpg`` (a short hash of
    the path is added when two inputs would share a name, or a name is too long)."""
    stems = crop_basenames(rels)
    names = {r: (Path(r).parent / f"{stems[r]}.jpg").as_posix() for r in rels}
    folders = {p.as_posix().casefold() for n in names.values() for p in Path(n).parents}
    for r, n in names.items():
        if n.casefold() in folders:  # a.png's copy would be a.jpg, the folder of a.jpg/b.jpg's copy
            names[r] = (Path(r).parent / f"{stems[r]}_{hashlib.sha1(r.encode('utf-8')).hexdigest()[:8]}.jpg").as_posix()
    return names
