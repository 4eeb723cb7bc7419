"""Robust image reading for real photo folders: any common format in, upright 8-bit RGB out, clear errors.

`read_image` applies EXIF orientation, converts grayscale / alpha / palette / 16-bit / CMYK / ICC-tagged images to
8-bit sRGB-ish RGB, refuses images over a pixel limit (decompression bombs) and raises an `ImageReadError` subclass
for empty, corrupt, truncated or non-image files. `iter_images` decodes ahead on worker threads, in order.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

#: Extensions `discover_images` picks up (lower case). HEIC/HEIF decode through ``pillow-heif``.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".gif", ".heic", ".heif"}
)
HEIF_EXTENSIONS: frozenset[str] = frozenset({".heic", ".heif"})

#: Default pixel limit (width x height): 250 megapixels covers 200 MP phone photos; ~750 MB as RGB.
DEFAULT_MAX_PIXELS = 250_000_000

_OPEN_LOCK = threading.Lock()
_HEIF_STATE: dict[str, bool] = {}


class ImageReadError(Exception):
    """An input file could not be read as an image. ``str(err)`` is a one-line reason fit for a report."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())
        super().__init__(f"{type(self).__name__}: {self.reason}")


class EmptyFileError(ImageReadError):
    """The file has zero bytes."""


class NotAnImageError(ImageReadError):
    """The file is not in an image format we can decode (e.g. a text file named ``.jpg``)."""


class CorruptImageError(ImageReadError):
    """The file looks like an image but cannot be decoded (truncated, damaged)."""


class ImageTooLargeError(ImageReadError):
    """The image has more pixels than allowed (a possible decompression bomb)."""


def _heif_available() -> bool:
    """Register the ``pillow-heif`` opener on first use, if that optional package is installed."""
    if "ok" not in _HEIF_STATE:
        try:
            import pillow_heif  # type: ignore[import-not-found]

            pillow_heif.register_heif_opener()
            _HEIF_STATE["ok"] = True
        except ImportError:
            _HEIF_STATE["ok"] = False
    return _HEIF_STATE["ok"]


def _open(path: Path) -> Image.Image:
    """``Image.open`` with Pillow's global bomb check off: `read_image` applies its own, configurable limit."""
    with _OPEN_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _scale_to_uint8(arr: np.ndarray, full_scale: float) -> np.ndarray:
    arr = np.clip(arr.astype(np.float64), 0, full_scale)
    return np.rint(arr * (255.0 / full_scale)).astype(np.uint8)


def _composite_over_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _icc_to_srgb(im: Image.Image) -> Image.Image:
    """Convert an image tagged with a non-sRGB ICC profile (Adobe RGB, CMYK press profiles, ...) to sRGB."""
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK"):
        return im
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in (ImageCms.getProfileDescription(src) or "").lower().replace(" ", ""):
            return im
        mode = "RGBA" if im.mode == "RGBA" else "RGB"
        return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode=mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        logger.debug("ignoring an unusable ICC profile: %s", exc)
        return im


def to_rgb8(im: Image.Image) -> np.ndarray:
    """Any Pillow image -> contiguous ``(H, W, 3)`` uint8 RGB (alpha composited over white, 16 bit scaled)."""
    mode = im.mode
    if mode.startswith("I;16"):
        gray = _scale_to_uint8(np.asarray(im), 65535.0)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    if mode == "I":
        arr = np.asarray(im)
        gray = _scale_to_uint8(arr, 255.0 if arr.max(initial=0) <= 255 else 65535.0)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    if mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float64))
        gray = _scale_to_uint8(arr, 1.0 if arr.max(initial=0) <= 1.0 else 255.0)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    im = _icc_to_srgb(im)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        im = _composite_over_white(im)
    elif im.mode != "RGB":
        im = im.convert("RGB")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def read_image(
    path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS, exif_orientation: bool = True
) -> np.ndarray:
    """Read an image file as upright ``(H, W, 3)`` uint8 RGB at its original resolution.

    Args:
        path: the file.
        max_pixels: refuse images with more pixels (width x height) than this (``None``: no limit).
        exif_orientation: rotate/flip according to the EXIF Orientation tag.

    Raises:
        EmptyFileError, NotAnImageError, CorruptImageError, ImageTooLargeError (all `ImageReadError`);
        ImageReadError for a missing or unreadable file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageReadError(path, f"cannot access the file ({exc.strerror or exc})") from exc
    if not path.is_file():
        raise ImageReadError(path, "not a regular file")
    if size == 0:
        raise EmptyFileError(path, "empty file (0 bytes)")
    if path.suffix.lower() in HEIF_EXTENSIONS and not _heif_available():
        raise NotAnImageError(path, "HEIC/HEIF needs the optional package pillow-heif, which is not installed")
    try:
        im = _open(path)
    except UnidentifiedImageError as exc:
        raise NotAnImageError(path, f"not a recognised image format ({size} bytes)") from exc
    except OSError as exc:
        raise ImageReadError(path, f"cannot open: {exc}") from exc
    with im:
        w, h = im.size
        if max_pixels is not None and w * h > max_pixels:
            raise ImageTooLargeError(
                path, f"{w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} (raise max_pixels to read it)"
            )
        try:
            im.load()
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
            raise CorruptImageError(path, f"cannot decode {im.format or 'image'} {w}x{h}: {exc}") from exc
        if exif_orientation:
            try:
                im = ImageOps.exif_transpose(im)
            except Exception as exc:  # a damaged EXIF block must not lose the photo
                logger.warning("%s: ignoring unreadable EXIF orientation (%s)", path, exc)
        try:
            return to_rgb8(im)
        except (OSError, ValueError) as exc:
            raise CorruptImageError(path, f"cannot convert mode {im.mode} to RGB: {exc}") from exc


def discover_images(
    root: str | os.PathLike[str], extensions: Iterable[str] | None = IMAGE_EXTENSIONS, include_hidden: bool = False
) -> list[Path]:
    """All files under ``root`` (recursively) with an image extension, sorted by relative POSIX path.

    ``extensions=None`` lists every file. Hidden files and folders (``.name``) are skipped unless
    ``include_hidden``; symlinked folders are not followed.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    exts = None if extensions is None else {e.lower() for e in extensions}
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        if not include_hidden:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not include_hidden and name.startswith("."):
                continue
            p = Path(dirpath, name)
            if exts is not None and p.suffix.lower() not in exts:
                continue
            if p.is_file():
                found.append((p.relative_to(root).as_posix(), p))
    found.sort(key=lambda t: t[0])
    return [p for _, p in found]


ReadResult = tuple[Path, "np.ndarray | ImageReadError"]


def iter_images(
    paths: Iterable[str | os.PathLike[str]],
    workers: int = 2,
    prefetch: int = 8,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    reader: Callable[..., np.ndarray] | None = None,
) -> Iterator[ReadResult]:
    """Yield ``(path, image or ImageReadError)`` in the order of ``paths``, decoding up to ``prefetch`` ahead.

    At most ``prefetch`` decoded images wait in memory. ``workers=0`` reads on the calling thread.
    An unexpected exception from the reader is reported as an `ImageReadError` too, never raised.
    """
    reader = reader or read_image

    def load(p: Path) -> np.ndarray | ImageReadError:
        try:
            return reader(p, max_pixels=max_pixels)
        except ImageReadError as exc:
            return exc
        except Exception as exc:  # reported per file, never fatal (MemoryError included)
            return ImageReadError(p, f"{type(exc).__name__}: {exc}")

    path_iter = (Path(p) for p in paths)
    if workers <= 0:
        for p in path_iter:
            yield p, load(p)
        return
    prefetch = max(1, prefetch)
    pending: deque[tuple[Path, Future]] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="detectcrop-read")
    try:
        for p in path_iter:
            pending.append((p, pool.submit(load, p)))
            if len(pending) >= prefetch:
                q, fut = pending.popleft()
                yield q, fut.result()
        while pending:
            q, fut = pending.popleft()
            yield q, fut.result()
    finally:
        for _, fut in pending:
            fut.cancel()
        with contextlib.suppress(Exception):
            pool.shutdown(wait=True, cancel_futures=True)


def resize_image(image: np.ndarray, size: tuple[int, int], interpolation: int | None = None) -> np.ndarray:
    """Resize an ``(H, W, C)`` image to ``size = (height, width)`` with OpenCV (area when shrinking)."""
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"target size must be positive, got {size}")
    if interpolation is None:
        shrinking = h * w < image.shape[0] * image.shape[1]
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interpolation)
