"""Reduced-size JPEG decoding for whole-image detection, and the exact map of its boxes to full-resolution pixels.

A detector with a fixed input (512x512 for the offline CenterNet, 1024x1024 for Faster R-CNN) shrinks a 12 MP photo
several times anyway. A JPEG decoder can produce the image at 1/2, 1/4 or 1/8 of its size straight from the DCT
coefficients (Pillow's ``Image.draft``), several times faster than a full decode. `read_for_detection` decodes at the
largest such reduction that keeps both sides at least the detector's input side, and returns a `ReducedImage`: the
small upright array, the map of its pixels to the full image's, and how to decode the full image when there is
something to crop (`ReducedImage.full`), so photos with nothing to crop never pay the full decode.

Geometry: at reduction ``s`` the decoder's output pixel ``i`` covers full pixels ``[s*i, s*(i+1))`` of the stored
(un-rotated) image; a side ``n`` that ``s`` does not divide comes out ``ceil(n / s)`` pixels long, its last pixel also
covering the encoder's padding beyond the image. So a coordinate maps as ``x_full = s * x_reduced`` along a stored
axis, and, where the EXIF orientation flips that axis, ``x_full = s * x_reduced - (s * ceil(n / s) - n)``. Mapping
normalised coordinates by the image sizes instead would be off by up to ``s - 1`` pixels.

Decode modes (``--decode``): ``full`` always decodes at full size; ``reduced`` decodes JPEGs at any reduction of at
least 1/2 for whole-image detection; ``auto`` (the default) only at 1/4 or 1/8 (`AUTO_MIN_SCALE`), i.e. photos at
least 4 times the detector's input side on both sides (2048 pixels for a 512 input, 4096 for 1024). Tiled detection
always decodes at full size (tiles need the full resolution). An image with something to crop is decoded twice
(reduced, then full for the crops, off the detector's thread when the caller defers it, `detectcrop.core`); one with
nothing to crop only at reduced size. Measured on 12 MP photos with the 512 CenterNet (BENCHMARKS.md, "Decoding
large JPEGs for whole-image detection"): per image on one thread, 1/4 costs 0.96x of full with crops and 1.7x less
without; 1/2 costs 0.87x and 1.13x less: 1/2 does not pay, 1/4 pays unless nearly every photo has a target.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detectcrop.detections import Detections
from detectcrop.io.images import _ORIENT, DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_PIXELS, decode_image, read_image
from detectcrop.zoo import presets

DECODE_MODES = ("full", "reduced", "auto")
#: The default decode mode of build_crops, label and `DetectThenClassify`.
DEFAULT_DECODE = "auto"
#: ``auto`` decodes at reduced size only when the JPEG reduction is at least this (1/``AUTO_MIN_SCALE``); see
#: BENCHMARKS.md ("Decoding large JPEGs for whole-image detection") for the measurements behind it.
AUTO_MIN_SCALE = 4


@dataclass(frozen=True)
class Reduction:
    """How to decode images for whole-image detection: JPEGs at the largest DCT reduction of at least ``min_scale``
    that keeps both sides at least ``min_side`` pixels."""

    min_side: int
    min_scale: int = 2

    def __post_init__(self) -> None:
        if self.min_side < 1 or self.min_scale < 2:
            raise ValueError(f"a Reduction needs min_side >= 1 and min_scale >= 2, got {self}")


def detector_input_side(detector: Any) -> int | None:
    """The largest side of the image a detector feeds its model: its ``input_size`` attribute, else its preset's
    (by ``detector.name``); ``None`` when unknown (a custom SavedModel)."""
    size = getattr(detector, "input_size", None)
    if size is None:
        preset = presets.PRESETS.get(str(getattr(detector, "name", "")))
        size = preset.input_size if preset is not None and preset.kind == "detector" else None
    return int(max(size)) if size else None


def reduction_for(detector: Any, tiled: bool, mode: str) -> Reduction | None:
    """The `Reduction` for detecting with ``detector`` in decode ``mode``; ``None`` (full size) for ``full``, for
    tiled detection and for a detector whose input size is unknown."""
    if mode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {', '.join(DECODE_MODES)}, got {mode!r}")
    side = detector_input_side(detector)
    if mode == "full" or tiled or side is None:
        return None
    return Reduction(side, AUTO_MIN_SCALE if mode == "auto" else 2)


def _axis_offsets(orientation: int, pads: tuple[int, int]) -> tuple[int, int]:
    """``(x, y)`` offsets of the upright axes: the padding (``pads`` per stored axis: rows, columns) of each stored
    axis that the orientation flips, found by orienting the 2x2 grid of stored corner indices."""
    corners = np.stack(np.indices((2, 2)), axis=-1)  # corners[i, j] = (row i, column j)
    up = _ORIENT[orientation](corners) if orientation in _ORIENT else corners
    origin = up[0, 0]
    offsets = []
    for step in (up[0, 1] - origin, up[1, 0] - origin):  # the upright x axis, then the upright y axis
        axis = int(np.flatnonzero(step)[0])  # the stored axis it runs along
        offsets.append(pads[axis] if origin[axis] == 1 else 0)
    return offsets[0], offsets[1]


@dataclass
class ReducedImage:
    """An image decoded at 1/``scale`` of its size for detection, with the way back to its full resolution.

    Attributes:
        image: the upright reduced RGB pixels ``(h, w, 3)``.
        scale: the JPEG reduction (2, 4 or 8).
        full_shape: the upright full image's ``(height, width)``.
        offset: ``(x, y)`` subtracted after scaling (the padding of a flipped axis), in full pixels.
        path: the file, decoded again at full size by `full`.
        read_options: `read_image`'s options for that (pixel limit, memory limit, EXIF orientation).
        ticket: the reader's place in a `detectcrop.io.budget.DecodeBudget` (it holds the full decode's peak), or
            ``None``.
    """

    image: np.ndarray
    scale: int
    full_shape: tuple[int, int]
    offset: tuple[int, int]
    path: Path
    read_options: dict[str, Any] = field(default_factory=dict)
    ticket: Any = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The full image's shape ``(height, width, 3)``."""
        return (*self.full_shape, 3)

    def to_full(self, xyxy: np.ndarray) -> np.ndarray:
        """``xyxy`` boxes in reduced pixels -> full-resolution pixels (clipped to the image)."""
        b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4) * self.scale
        b -= np.array([*self.offset, *self.offset], dtype=np.float64)
        h, w = self.full_shape
        return np.clip(b, 0, np.array([w, h, w, h], dtype=np.float64))

    def to_reduced(self, xyxy: np.ndarray) -> np.ndarray:
        """Full-resolution ``xyxy`` boxes -> pixels of `image` (the inverse of `to_full`, before clipping)."""
        b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4) + np.array([*self.offset, *self.offset], np.float64)
        return b / self.scale

    def detections_to_full(self, dets: Detections) -> Detections:
        """``dets`` found on `image`, with their boxes in full-resolution pixels."""
        return Detections(self.to_full(dets.xyxy), dets.scores, dets.class_ids, dict(dets.data))

    def full(self) -> np.ndarray:
        """Decode the image at full size (its memory is already reserved in the reader's budget); raises the
        `ImageReadError` a full-size read would."""
        return read_image(self.path, **self.read_options)


def read_for_detection(
    path: str | os.PathLike[str],
    reduction: Reduction | None,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    exif_orientation: bool = True,
    max_image_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES,
    ticket: Any = None,
) -> np.ndarray | ReducedImage:
    """Read ``path`` for detection: a `ReducedImage` where ``reduction`` applies (a JPEG large enough), else the
    full-size array of `read_image`. Same checks, errors and budget as `read_image`."""
    options = {"max_pixels": max_pixels, "exif_orientation": exif_orientation, "max_image_bytes": max_image_bytes}
    if reduction is None:
        return read_image(path, ticket=ticket, **options)
    got = decode_image(path, ticket=ticket, min_side=reduction.min_side, min_scale=reduction.min_scale, **options)
    if got.scale == 1:
        return got.image
    s, (w, h) = got.scale, got.stored_size
    pads = (s * -(-h // s) - h, s * -(-w // s) - w)
    upright = (w, h) if got.orientation in (1, 2, 3, 4) else (h, w)
    return ReducedImage(got.image, s, (upright[1], upright[0]), _axis_offsets(got.orientation, pads), Path(path),
                        options, ticket)
