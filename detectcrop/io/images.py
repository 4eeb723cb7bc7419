"""Robust image reading for real photo folders: any common format in, upright 8-bit RGB out, clear errors.

`read_image` applies EXIF orientation, converts grayscale / alpha / palette / 16-bit / CMYK / ICC-tagged images to
8-bit sRGB-ish RGB, refuses images over a pixel limit (decompression bombs) and raises an `ImageReadError` subclass
for empty, corrupt, truncated or non-image files. `iter_images` decodes ahead on worker threads, in order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from detectcrop.io import printable
from detectcrop.io.budget import DecodeBudget, Ticket
from detectcrop.io.pixels import (  # noqa: F401 (the pixel conversions are part of this module's interface)
    _ORIENT,
    _composite_over_white,
    _has_alpha,
    decode_bytes,
    to_rgb8,
    upright_rgb8,
)

logger = logging.getLogger(__name__)

#: Extensions of image files (lower case). HEIC/HEIF decode through ``pillow-heif``.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".gif", ".heic", ".heif"}
)
HEIF_EXTENSIONS: frozenset[str] = frozenset({".heic", ".heif"})

#: Default pixel limit (width x height): 250 megapixels covers 200 MP phone photos; ~750 MB as RGB.
DEFAULT_MAX_PIXELS = 250_000_000
#: Default memory one image may need to decode (`decode_bytes`): a rotated 250 MP RGB photo needs 1.4 GiB.
DEFAULT_MAX_IMAGE_BYTES = 2048 * 2**20
#: Default memory for all images decoded ahead of the consumer (and the one it holds); an image that needs more
#: runs alone.
DEFAULT_DECODE_BUDGET = 1024 * 2**20

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


def _orientation(im: Image.Image, path: Path) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
        return value if value in _ORIENT else 1
    except Exception as exc:  # a damaged EXIF block must not lose the photo
        logger.warning("%s: ignoring unreadable EXIF orientation (%s)", printable(path), exc)
        return 1


def _check_entry(path: Path) -> int:
    """The size of a regular file; a clear `ImageReadError` for anything else (never opens a FIFO or device)."""
    try:
        st = path.stat()
    except OSError as exc:
        reason = "broken symbolic link" if path.is_symlink() else f"cannot access the file ({exc.strerror or exc})"
        raise ImageReadError(path, reason) from exc
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode)
                or stat.S_ISBLK(st.st_mode) else "not a regular file")
        raise ImageReadError(path, f"not a regular file: {kind}")
    if st.st_size == 0:
        raise EmptyFileError(path, "empty file (0 bytes)")
    return st.st_size


def read_image(
    path: str | os.PathLike[str],
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    exif_orientation: bool = True,
    max_image_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES,
    ticket: Ticket | None = None,
) -> np.ndarray:
    """Read an image file as upright ``(H, W, 3)`` uint8 RGB at its original resolution.

    Args:
        path: the file.
        max_pixels: refuse images with more pixels (width x height) than this (``None``: no limit).
        exif_orientation: rotate/flip according to the EXIF Orientation tag.
        max_image_bytes: refuse images whose decoding needs more memory than this (`decode_bytes`, known from the
            header before decoding; ``None``: no limit).
        ticket: a place in a shared `DecodeBudget` (`iter_images` passes one), reserved before decoding.

    Raises:
        ImageReadError: `EmptyFileError`, `NotAnImageError`, `CorruptImageError` or `ImageTooLargeError` (all
            `ImageReadError`); `ImageReadError` itself for a missing or unreadable file, or one that is not a regular
            file.
    """
    return decode_image(path, max_pixels=max_pixels, exif_orientation=exif_orientation,
                        max_image_bytes=max_image_bytes, ticket=ticket).image


#: JPEG decoders' DCT scaling factors (`PIL.Image.Image.draft`), largest first.
DRAFT_SCALES = (8, 4, 2, 1)


def draft_scale(size: tuple[int, int], min_side: int) -> int:
    """The largest JPEG reduction ``s`` (8, 4, 2 or 1) that leaves both sides of ``size = (width, height)`` at least
    ``min_side``: the reduced image is ``ceil(width / s) x ceil(height / s)`` (Pillow's own choice for
    ``draft("RGB", (min_side, min_side))``)."""
    if min_side <= 0:
        raise ValueError(f"min_side must be positive, got {min_side}")
    fit = min(int(size[0]) // min_side, int(size[1]) // min_side)
    return next((s for s in DRAFT_SCALES if s <= fit), 1)


@dataclass(frozen=True)
class DecodedImage:
    """What `decode_image` read: the upright RGB pixels, the JPEG reduction they were decoded at (1: full size),
    the EXIF orientation applied and the stored (un-rotated) ``(width, height)`` of the full image."""

    image: np.ndarray
    scale: int
    orientation: int
    stored_size: tuple[int, int]


def decode_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    exif_orientation: bool = True,
    max_image_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES,
    ticket: Ticket | None = None,
    min_side: int | None = None,
    min_scale: int = 2,
) -> DecodedImage:
    """`read_image`, optionally at reduced size: with ``min_side``, a JPEG whose `draft_scale` is at least
    ``min_scale`` is decoded straight from its DCT coefficients at 1/2, 1/4 or 1/8 of its size, both sides still at
    least ``min_side`` (any other file is read at full size). The checks (pixel limit, ``max_image_bytes``) and the
    errors are those of the full-size read; a reduced read keeps the full read's peak reserved in ``ticket``, so the
    full image can be decoded later, while the reduced one is held, within the same budget.
    """
    path = Path(path)
    size = _check_entry(path)
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
        orientation = _orientation(im, path) if exif_orientation else 1
        need = decode_bytes(im.mode, (w, h), rotated=orientation != 1)
        if max_image_bytes is not None and need > max_image_bytes:
            raise ImageTooLargeError(
                path, f"{w}x{h} {im.mode} needs {need / 2**20:,.0f} MB to decode, over the limit of "
                f"{max_image_bytes / 2**20:,.0f} MB per image (raise max_image_bytes to read it)"
            )
        scale = draft_scale((w, h), min_side) if min_side is not None and im.format == "JPEG" else 1
        if scale < max(2, min_scale):
            scale = 1
        if ticket is not None:
            ticket.reserve(need)
        if scale > 1:
            im.draft("RGB", (min_side, min_side))
            if im.size != (-(-w // scale), -(-h // scale)):  # not the DCT scaling expected: read it in full
                logger.debug("%s: reduced decode gave %s, reading at full size", path, im.size)
                return decode_image(path, max_pixels=max_pixels, exif_orientation=exif_orientation,
                                    max_image_bytes=max_image_bytes, ticket=None)
        try:
            im.load()
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
            raise CorruptImageError(path, f"cannot decode {im.format or 'image'} {w}x{h}: {exc}") from exc
        try:
            out = to_rgb8(im)
        except (OSError, ValueError) as exc:
            raise CorruptImageError(path, f"cannot convert mode {im.mode} to RGB: {exc}") from exc
    if orientation != 1:
        out = np.ascontiguousarray(_ORIENT[orientation](out))
    if ticket is not None and scale == 1:
        ticket.shrink(out.nbytes)
    return DecodedImage(out, scale, orientation, (w, h))


#: ``(path, image or read error)``; the image is whatever the reader returns (an array, or a
#: `detectcrop.decoding.ReducedImage` from a reduced-size reader).
ReadResult = tuple[Path, Any]


def iter_images(
    paths: Iterable[str | os.PathLike[str]],
    workers: int = 2,
    prefetch: int = 8,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    reader: Callable[..., Any] | None = None,
    decode_budget: int | None = DEFAULT_DECODE_BUDGET,
    max_image_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES,
) -> Iterator[ReadResult]:
    """Yield ``(path, image or ImageReadError)`` in the order of ``paths``, decoding up to ``prefetch`` ahead.

    Memory is bounded: at most ``prefetch`` images are decoded ahead, and together they (and the image the caller
    holds) use at most ``decode_budget`` bytes, counted before decoding (`decode_bytes`); an image that needs more
    waits and decodes alone; one that needs more than ``max_image_bytes`` is an `ImageTooLargeError`. The caller
    holds one image at a time: it is released when the next is requested. ``workers=0`` reads on the calling thread.
    ``reader`` is called as ``reader(path, max_pixels=..., max_image_bytes=..., ticket=...)``; an unexpected
    exception from it is reported as an `ImageReadError` too, never raised.
    """
    reader = reader or read_image
    budget = DecodeBudget(decode_budget) if decode_budget is not None else None

    def load(p: Path, ticket: Ticket | None) -> Any:
        try:
            return reader(p, max_pixels=max_pixels, max_image_bytes=max_image_bytes, ticket=ticket)
        except ImageReadError as exc:
            return exc
        except Exception as exc:  # reported per file, never fatal (MemoryError included)
            return ImageReadError(p, f"{type(exc).__name__}: {exc}")
        finally:
            if ticket is not None:
                ticket.done()

    def tickets() -> Iterator[tuple[Path, Ticket | None]]:
        for p in paths:
            yield Path(p), budget.ticket() if budget is not None else None

    held: Ticket | None = None
    pending: deque[tuple[Path, Ticket | None, Future]] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="detectcrop-read") if workers > 0 else None
    try:
        for p, ticket in tickets():
            if pool is None:
                if held is not None:
                    held.release()
                held = ticket
                yield p, load(p, ticket)
                continue
            pending.append((p, ticket, pool.submit(load, p, ticket)))
            if len(pending) >= max(1, prefetch):
                if held is not None:  # the caller asks for the next image: it is done with the one it held
                    held.release()
                q, held, fut = pending.popleft()
                yield q, fut.result()
                del fut  # the future holds the image: drop it before the next one is decoded
        while pending:
            if held is not None:
                held.release()
            q, held, fut = pending.popleft()
            yield q, fut.result()
            del fut
    finally:
        if budget is not None:
            budget.close()  # wakes any decoder still waiting, so the pool can shut down
        for _, _, fut in pending:
            fut.cancel()
        if pool is not None:
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
