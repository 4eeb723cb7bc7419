"""Decoded pixels to upright 8-bit RGB: grayscale, alpha, palette, 16-bit, CMYK and ICC-tagged images converted in
bands (`to_rgb8`), EXIF orientation applied (`upright_rgb8`), and the memory a decode needs (`decode_bytes`)."""

from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image, ImageCms

logger = logging.getLogger("detectcrop.io.images")


#: Rows converted at a time, so conversions never hold a second full-size copy of an image.
_BAND_ROWS = 256
#: Bytes per pixel of Pillow modes (anything else counts as 4).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "La": 2, "PA": 2, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2,
               "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3}  # fmt: skip
_GRAY_MODES = ("I;16", "I", "F")


def decode_bytes(mode: str, size: tuple[int, int], rotated: bool = False) -> int:
    """Peak memory of `read_image` for an image of ``mode`` and ``size = (width, height)``.

    The decoded source, the RGB output and, for 16-bit and float images, one working copy; conversions run in bands
    of rows, and an EXIF rotation happens after the source is freed (output + rotated copy).
    """
    px = int(size[0]) * int(size[1])
    src = _MODE_BYTES.get(mode, 4)
    work = src + 1 if mode.startswith(_GRAY_MODES) else 0
    return px * max(src + work + 3, 6 if rotated else 0)


def _gray_to_rgb(arr: np.ndarray, full_scale: float) -> np.ndarray:
    """A one-channel array scaled from ``[0, full_scale]`` to 8-bit RGB, band by band (no float copy of it all)."""
    out = np.empty((*arr.shape[:2], 3), np.uint8)
    for y in range(0, arr.shape[0], _BAND_ROWS):
        band = np.clip(np.nan_to_num(arr[y : y + _BAND_ROWS].astype(np.float64)), 0, full_scale)
        out[y : y + _BAND_ROWS] = np.rint(band * (255.0 / full_scale)).astype(np.uint8)[..., None]
    return out


def _composite_over_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _srgb_transform(im: Image.Image) -> ImageCms.ImageCmsTransform | None:
    """A transform to sRGB for an image tagged with a non-sRGB ICC profile (Adobe RGB, CMYK press profiles, ...)."""
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK"):
        return None
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in (ImageCms.getProfileDescription(src) or "").lower().replace(" ", ""):
            return None
        mode = "RGBA" if im.mode == "RGBA" else "RGB"
        return ImageCms.buildTransform(src, ImageCms.createProfile("sRGB"), im.mode, mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        logger.debug("ignoring an unusable ICC profile: %s", exc)
        return None


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)


def to_rgb8(im: Image.Image) -> np.ndarray:
    """Any Pillow image -> contiguous ``(H, W, 3)`` uint8 RGB (alpha composited over white, 16 bit scaled).

    Converted in bands of rows: the peak is the source plus the output (see `decode_bytes`).
    """
    mode = im.mode
    if mode.startswith("I;16"):
        return _gray_to_rgb(np.asarray(im), 65535.0)
    if mode == "I":
        arr = np.asarray(im)
        return _gray_to_rgb(arr, 255.0 if arr.max(initial=0) <= 255 else 65535.0)
    if mode == "F":
        arr = np.asarray(im)
        return _gray_to_rgb(arr, 1.0 if np.nan_to_num(arr).max(initial=0) <= 1.0 else 255.0)
    transform = _srgb_transform(im)
    w, h = im.size
    out = np.empty((h, w, 3), np.uint8)
    for y in range(0, h, _BAND_ROWS):
        band = im.crop((0, y, w, min(h, y + _BAND_ROWS)))
        if transform is not None:
            band = ImageCms.applyTransform(band, transform)
        if _has_alpha(band):
            band = _composite_over_white(band)
        elif band.mode != "RGB":
            band = band.convert("RGB")
        out[y : y + band.height] = np.asarray(band, dtype=np.uint8)
    return out


#: EXIF orientation -> the numpy view that shows the image upright (the same as `PIL.ImageOps.exif_transpose`).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def upright_rgb8(im: Image.Image) -> np.ndarray:
    """A Pillow image already open in memory as `read_image` would give its file: `to_rgb8`, turned upright by its
    EXIF orientation."""
    arr = to_rgb8(im)
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # a damaged EXIF block: as stored
        orientation = 1
    return np.ascontiguousarray(_ORIENT[orientation](arr)) if orientation in _ORIENT else arr
