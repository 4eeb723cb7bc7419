"""Crops as model input: paths or arrays read, converted to RGB uint8 and resized into one batch.

The one loader every classifier runner uses, for training and inference alike, so both see identical pixels. Needs
no TensorFlow (the LiteRT runner imports it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from detectcrop.io.images import read_image, resize_image, upright_rgb8

ImageItem = str | Path | np.ndarray | Image.Image


def as_rgb_uint8(item: ImageItem) -> np.ndarray:
    """A path, a Pillow image or an array as ``(H, W, 3)`` uint8 RGB, by the rules `read_image` applies to files:
    greyscale repeated, alpha composited over white, uint16 scaled from 65535, bool as 0 / 255, float scaled from 1
    when no value exceeds 1 (else taken as 0-255), other integers clipped to 0-255; a Pillow image converted by its
    mode and turned upright by its EXIF orientation."""
    if isinstance(item, str | Path):
        return read_image(item)
    if isinstance(item, Image.Image):
        return upright_rgb8(item)
    image = np.asarray(item)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W, 3) RGB image (or greyscale, or RGBA), got shape {image.shape}")
    if not image.size:
        raise ValueError(f"empty image: shape {image.shape}")
    if image.dtype == np.uint8:
        unit = image.astype(np.float32) / 255.0 if image.shape[-1] == 4 else None
    elif image.dtype == bool:
        unit = image.astype(np.float32)
    elif image.dtype == np.uint16:
        unit = image.astype(np.float32) / 65535.0
    elif np.issubdtype(image.dtype, np.floating):
        image = np.nan_to_num(image.astype(np.float32))
        unit = np.clip(image, 0, 1) if image.max() <= 1.0 else np.clip(image, 0, 255) / 255.0
    elif np.issubdtype(image.dtype, np.integer):
        unit = np.clip(image, 0, 255).astype(np.float32) / 255.0
    else:
        raise ValueError(f"expected a numeric image array, got dtype {image.dtype}")
    if unit is not None:
        if unit.shape[-1] == 4:  # over white, as for files with transparency
            unit = unit[..., :3] * unit[..., 3:] + (1.0 - unit[..., 3:])
        image = np.rint(unit * 255.0).astype(np.uint8)
    image = image[..., :3]
    return np.ascontiguousarray(np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image)


def load_batch(items: Sequence[ImageItem], size: tuple[int, int]) -> np.ndarray:
    """Images (paths or arrays) as one ``(N, H, W, 3)`` uint8 batch resized to ``size``; the one loader used for
    training and inference, so both see identical pixels."""
    out = np.empty((len(items), *size, 3), dtype=np.uint8)
    for i, item in enumerate(items):
        out[i] = resize_image(as_rgb_uint8(item), size)
    return out


def iter_items(items: Sequence[ImageItem] | np.ndarray) -> Sequence[ImageItem]:
    """Accept a list of paths/arrays/Pillow images or one ``(N, H, W, C)`` array (``(N, H, W)``: greyscale)."""
    if isinstance(items, np.ndarray) and items.ndim == 4:
        return list(items)
    if isinstance(items, np.ndarray) and items.ndim == 3 and items.shape[-1] in (1, 3, 4):
        raise TypeError(f"pass a list of images ([image]), not a single {items.shape} image array")
    if isinstance(items, str | Path | Image.Image):
        raise TypeError("pass a sequence of images ([image]), not a single image or path")
    return list(items)


__all__ = ["ImageItem", "as_rgb_uint8", "iter_items", "load_batch"]
