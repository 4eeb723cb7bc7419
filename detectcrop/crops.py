"""Crop policy as pure functions: which detections become crops, and the exact pixel box of each.

Order of operations (`crop_boxes`): drop boxes whose shorter side is under ``min_size`` -> keep the ``max_crops``
highest scores -> pad by a fraction of the box -> optionally square (shifted inside the image when it fits) ->
round outwards to whole pixels and clip to the image. Crops are cut from the original-resolution image and saved as
JPEG quality 95 with 4:4:4 chroma (no subsampling), written atomically.
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from detectcrop import boxes as bx
from detectcrop.detections import Detections
from detectcrop.io import atomic_write_bytes

JPEG_QUALITY = 95


@dataclass(frozen=True)
class CropPolicy:
    """How detections become crops.

    Args:
        pad: grow each box by this fraction of its width (left and right) and height (top and bottom).
        square: make crops square (the shorter side grows to the longer; moved inside the image if it fits).
        min_size: skip detections whose shorter side is under this many source pixels (before padding).
        max_crops: at most this many crops per image, highest scores first (``None``: all).
    """

    pad: float = 0.1
    square: bool = False
    min_size: int = 32
    max_crops: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.pad <= 10:
            raise ValueError(f"pad must be a fraction in [0, 10], got {self.pad}")
        if self.min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {self.min_size}")
        if self.max_crops is not None and self.max_crops < 1:
            raise ValueError(f"max_crops must be >= 1 or None, got {self.max_crops}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def crop_boxes(
    xyxy: np.ndarray, scores: np.ndarray, image_shape: tuple[int, int], policy: CropPolicy
) -> tuple[np.ndarray, np.ndarray]:
    """Integer crop boxes for detections under ``policy``.

    Returns:
        ``(boxes, index)``: ``(K, 4)`` int64 ``x1, y1, x2, y2`` (end exclusive, inside the image, never empty),
        highest score first, and the index of each crop's detection in the inputs.
    """
    b = bx.as_boxes(xyxy)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    w, h = bx.widths_heights(b)
    idx = np.flatnonzero((np.minimum(w, h) >= policy.min_size) & (np.minimum(w, h) > 0))
    idx = idx[np.argsort(-s[idx], kind="stable")]
    if policy.max_crops is not None:
        idx = idx[: policy.max_crops]
    out = bx.pad(b[idx], policy.pad)
    if policy.square:
        out = bx.shift_inside(bx.square(out), image_shape)
    out = bx.to_int_pixels(out, image_shape)
    nonempty = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return out[nonempty], idx[nonempty]


def select_crops(
    detections: Detections, image_shape: tuple[int, int], policy: CropPolicy
) -> tuple[Detections, np.ndarray]:
    """`crop_boxes` on a `Detections`: the kept detections (highest score first) and their integer crop boxes."""
    boxes, idx = crop_boxes(detections.xyxy, detections.scores, image_shape, policy)
    return detections[idx], boxes


def crop_image(image: np.ndarray, box: np.ndarray | tuple[int, int, int, int]) -> np.ndarray:
    """The pixels inside an integer ``x1, y1, x2, y2`` box (end exclusive), as a contiguous copy."""
    x1, y1, x2, y2 = (int(v) for v in box)
    return np.ascontiguousarray(image[y1:y2, x1:x2])


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """RGB uint8 -> JPEG bytes with 4:4:4 chroma (no subsampling); deterministic for the same pixels."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def save_jpeg(path: str | os.PathLike[str], image: np.ndarray, quality: int = JPEG_QUALITY, fsync: bool = True) -> Path:
    """Save RGB uint8 as JPEG atomically (temporary sibling + rename): a crash never leaves half a file."""
    return atomic_write_bytes(path, encode_jpeg(image, quality), fsync=fsync)
