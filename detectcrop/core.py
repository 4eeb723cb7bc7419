"""The per-image core shared by `build_crops` and labeling: read -> detect (whole or tiled) -> select -> crop.

`process_image` is a plain function of (image or read error, `DetectSteps`) -> `ImageCrops`; every failure of one
image is captured here, once, as an ``error`` result, so a folder run never stops on one file. The engines (a local
loop, a distributed one) and the outputs (crop datasets, predictions) are built on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from detectcrop.coco import category_id
from detectcrop.crops import CropPolicy, crop_image, select_crops
from detectcrop.decoding import DECODE_MODES, DEFAULT_DECODE, ReducedImage, Reduction, reduction_for
from detectcrop.detections import Detections
from detectcrop.io import one_line
from detectcrop.io.images import ImageReadError
from detectcrop.tiling import SupportsDetect, TileConfig, detect_tiled, run_detector


@dataclass
class StatusCounts:
    """How many inputs of a folder run ended ``ok``, ``no_detection`` and ``error``, and how fast this run went."""

    n_ok: int = 0
    n_no_detection: int = 0
    n_error: int = 0
    n_processed: int = 0
    seconds: float = 0.0
    images_per_s: float = 0.0

    def status_text(self) -> str:
        return f"ok {self.n_ok}, no detection {self.n_no_detection}, error {self.n_error}"


def category_ids(category: str | int | Sequence[str | int] | None) -> tuple[int, ...] | None:
    """COCO ids of one or several names or ids (``None``: every category)."""
    if category is None:
        return None
    items = [category] if isinstance(category, str | int) else list(category)
    return tuple(sorted({category_id(c) for c in items}))


@dataclass(frozen=True)
class DetectSteps:
    """What stage 1 does to every image.

    Args:
        detector: anything that `SupportsDetect`.
        category_ids: COCO ids to keep (``None``: every detection).
        min_score: minimum detection score.
        policy: how boxes become crops (`CropPolicy`).
        tile: detect on overlapping tiles too (`TileConfig`), or ``None``.
        decode: ``"full"``, ``"reduced"`` or ``"auto"``: how readers decode images for whole-image detection
            (`detectcrop.decoding`; crops always come from the full resolution).
    """

    detector: SupportsDetect
    category_ids: tuple[int, ...] | None = None
    min_score: float = 0.3
    policy: CropPolicy = field(default_factory=CropPolicy)
    tile: TileConfig | None = None
    decode: str = DEFAULT_DECODE

    def __post_init__(self) -> None:
        if self.decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {', '.join(DECODE_MODES)}, got {self.decode!r}")

    @property
    def reduction(self) -> Reduction | None:
        """How to decode images for these steps (`detectcrop.decoding.reduction_for`); ``None``: at full size."""
        return reduction_for(self.detector, self.tile is not None, self.decode)


@dataclass
class ImageCrops:
    """One image through stage 1: its kept detections (best first), their integer crop boxes and pixels, or an error.

    ``status`` is ``ok`` (at least one crop), ``no_detection`` or ``error`` (with ``error``, a one-line reason).
    ``reduced`` is set while the crops wait for the full-resolution decode of a reduced image (`finish`).
    """

    source: str
    status: str
    width: int = 0
    height: int = 0
    detections: Detections = field(default_factory=Detections.empty)
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    crops: list[np.ndarray] = field(default_factory=list)
    error: str = ""
    reduced: ReducedImage | None = field(default=None, repr=False)

    def finish(self) -> ImageCrops:
        """Decode the full-resolution image and cut the crops, when they wait for it (``process_image(...,
        defer=True)``); a failure of that decode makes this the ``error`` result a full-size read gives. Returns
        ``self``; safe to call from another thread, once the detector is done with the image."""
        reduced, self.reduced = self.reduced, None
        if reduced is None:
            return self
        try:
            full = _decode_full(reduced, self.source)
            self.crops = [crop_image(full, b) for b in self.boxes]
            del full
        except ImageReadError as exc:
            self._fail(str(exc))
            self.width = self.height = 0
        except Exception as exc:  # as `process_image` reports it
            self._fail(f"DetectionError: {type(exc).__name__}: {exc}")
        finally:
            if reduced.ticket is not None:
                reduced.ticket.unhold()
        return self

    def _fail(self, reason: str) -> None:
        self.status, self.error = "error", one_line(reason)
        self.detections, self.boxes, self.crops = Detections.empty(), np.zeros((0, 4), np.int64), []


def _decode_full(reduced: ReducedImage, source: str) -> np.ndarray:
    """The full-resolution image; any failure as the `ImageReadError` the reader gives a failed read (`iter_images`)."""
    try:
        return reduced.full()
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(source, f"{type(exc).__name__}: {exc}") from exc


def detect_objects(image: np.ndarray, steps: DetectSteps) -> Detections:
    """Detect on the whole image (or tiles + whole), keeping ``steps``' categories at ``steps.min_score``
    (`detectcrop.tiling.run_detector` applies the request, once)."""
    if steps.tile is not None:
        return detect_tiled(steps.detector, image, steps.tile, min_score=steps.min_score, categories=steps.category_ids)
    return run_detector(steps.detector, image, steps.min_score, steps.category_ids)


def process_image(
    source: str, image: np.ndarray | ReducedImage | ImageReadError, steps: DetectSteps, *, defer: bool = False
) -> ImageCrops:
    """Stage 1 for one image: detections, crop boxes and crops; any failure becomes an ``error`` result.

    A `ReducedImage` is detected on at its reduced size (whole image only), its boxes mapped to full-resolution
    pixels; the full image is decoded only when there is something to crop, and a failure of that decode is the same
    ``error`` result a full-size read would have given. With ``defer``, that decode is left to `ImageCrops.finish`
    (another thread may run it while the detector goes on; the reader's memory reservation is held until then).
    """
    if isinstance(image, ImageReadError):
        return ImageCrops(source, "error", error=one_line(str(image)))
    h, w = image.shape[:2]
    try:
        if isinstance(image, ReducedImage):
            if steps.tile is not None:
                raise ValueError("tiled detection needs the full-resolution image, not a reduced decode")
            dets = image.detections_to_full(detect_objects(image.image, steps))
        else:
            dets = detect_objects(image, steps)
        kept, boxes = select_crops(dets, (h, w), steps.policy)
        if isinstance(image, ReducedImage) and len(boxes):
            if image.ticket is not None:
                image.ticket.hold()
            job = ImageCrops(source, "ok", w, h, kept, boxes, reduced=image)
            return job if defer else job.finish()
        crops = [crop_image(image, b) for b in boxes]
    except Exception as exc:  # one bad image must not stop a folder
        return ImageCrops(source, "error", w, h, error=one_line(f"DetectionError: {type(exc).__name__}: {exc}"))
    return ImageCrops(source, "ok" if len(kept) else "no_detection", w, h, kept, boxes, crops)
