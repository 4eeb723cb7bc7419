"""Crops as model input: paths or arrays read, converted to RGB uint8 and resized into one batch.

The one loader every classifier runner uses, for training and inference alike, so both see identical pixels. Needs
no TensorFlow (the LiteRT runner imports it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from detectcrop.images import read_image, resize_image

ImageItem = str | Path | np.ndarray


def as_rgb_uint8(item: ImageItem) -> np.ndarray:
    """A path or an array (greyscale, RGB or RGBA; uint8 or float in [0, 255]) as ``(H, W, 3)`` uint8 RGB."""
    if isinstance(item, str | Path):
        return read_image(item)
    image = np.asarray(item)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    image = image[..., :3]
    if image.dtype != np.uint8:
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image


def load_batch(items: Sequence[ImageItem], size: tuple[int, int]) -> np.ndarray:
    """Images (paths or arrays) as one ``(N, H, W, 3)`` uint8 batch resized to ``size``; the one loader used for
    training and inference, so both see identical pixels."""
    out = np.empty((len(items), *size, 3), dtype=np.uint8)
    for i, item in enumerate(items):
        out[i] = resize_image(as_rgb_uint8(item), size)
    return out


def iter_items(items: Sequence[ImageItem] | np.ndarray) -> Sequence[ImageItem]:
    """Accept a list of paths/arrays or one ``(N, H, W, 3)`` array."""
    if isinstance(items, np.ndarray) and items.ndim == 4:
        return list(items)
    if isinstance(items, str | Path):
        raise TypeError("pass a sequence of images, not a single path")
    return list(items)


__all__ = ["ImageItem", "as_rgb_uint8", "iter_items", "load_batch"]
