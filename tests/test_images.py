from __future__ import annotations

import io
import threading
import time

import cv2
import numpy as np
import pytest
from detectcrop.images import (
    CorruptImageError,
    EmptyFileError,
    ImageReadError,
    ImageTooLargeError,
    NotAnImageError,
    iter_images,
    read_image,
    resize_image,
)
from PIL import Image
from skimage import data

from detectcrop import images as im
from detectcrop.io import pixels


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[::4, ::4])  # 128x128 RGB


@pytest.mark.parametrize(("fmt", "ext", "lossless"), [
    ("PNG", ".png", True), ("BMP", ".bmp", True), ("TIFF", ".tif", True), ("WEBP", ".webp", True),
    ("JPEG", ".jpg", False),
])  # fmt: skip
def test_reads_common_formats_as_rgb_uint8(tmp_path, photo, fmt, ext, lossless):
    path = tmp_path / f"x{ext}"
    kwargs = {"lossless": True} if fmt == "WEBP" else {"quality": 95} if fmt == "JPEG" else {}
    Image.fromarray(photo).save(path, fmt, **kwargs)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == photo.shape and out.flags["C_CONTIGUOUS"]
    if lossless:
        np.testing.assert_array_equal(out, photo)
    else:
        assert np.abs(out.astype(int) - photo).mean() < 4


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(tmp_path, photo, fmt):
    upright = photo[:, :96]  # not square, so a missed rotation changes the shape
    stored = np.ascontiguousarray(np.rot90(upright))  # rotated 90 degrees counter-clockwise on disk
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / f"rot.{fmt.lower()}"
    Image.fromarray(stored).save(path, fmt, exif=exif, **({"quality": 98, "subsampling": 0} if fmt == "JPEG" else {}))
    out = read_image(path)
    assert out.shape == upright.shape
    if fmt == "PNG":
        np.testing.assert_array_equal(out, upright)
    else:
        assert np.abs(out.astype(int) - upright).mean() < 3
    assert read_image(path, exif_orientation=False).shape == stored.shape


def test_grayscale_palette_and_alpha_become_rgb(tmp_path, photo):
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (*gray.shape, 3)
    np.testing.assert_array_equal(out[..., 0], gray)
    np.testing.assert_array_equal(out[..., 2], gray)

    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    rgba[:10, :, 3] = 0  # fully transparent rows -> white
    rgba[10:20, :, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert (out[:10] == 255).all()
    np.testing.assert_array_equal(out[20:], photo[20:])
    expected = np.rint(photo[10:20] * (128 / 255) + 255 * (127 / 255))
    assert np.abs(out[10:20].astype(int) - expected).max() <= 1

    Image.fromarray(np.dstack([gray, rgba[..., 3]]), "LA").save(tmp_path / "la.png")
    assert (read_image(tmp_path / "la.png")[:10] == 255).all()

    pal = Image.fromarray(photo).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    out = read_image(tmp_path / "p.png")
    assert out.shape == photo.shape and out.dtype == np.uint8


def test_16_bit_images_are_scaled_to_8_bit(tmp_path, photo):
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(tmp_path / "g16.png"), gray.astype(np.uint16) * 257)
    out = read_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(out[..., 1], gray)
    rgb16 = photo.astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16[..., ::-1])  # OpenCV writes BGR
    out = read_image(tmp_path / "c16.png")
    assert np.abs(out.astype(int) - photo).max() <= 1


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red ink
    cmyk.save(tmp_path / "c.jpg", quality=95)
    out = read_image(tmp_path / "c.jpg")
    assert out.shape == (32, 32, 3)
    assert out[..., 0].mean() > 230 and out[..., 1].mean() < 25 and out[..., 2].mean() < 25


def test_bad_files_raise_clear_errors(tmp_path, photo):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(EmptyFileError, match="0 bytes"):
        read_image(tmp_path / "empty.jpg")
    (tmp_path / "text.jpg").write_text("not a picture\n")
    with pytest.raises(NotAnImageError, match="not a recognised image"):
        read_image(tmp_path / "text.jpg")
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG", quality=95)
    (tmp_path / "trunc.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(CorruptImageError, match="truncated"):
        read_image(tmp_path / "trunc.jpg")
    with pytest.raises(ImageReadError, match="cannot access"):
        read_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageReadError) as info:
        read_image(tmp_path / "text.jpg")
    err = info.value
    assert str(err).startswith("NotAnImageError: ") and "\n" not in str(err)


def test_pixel_limit_is_ours_not_pillows(tmp_path, photo, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(photo).save(path)
    with pytest.raises(ImageTooLargeError, match="128x128 = 16,384 pixels exceeds the limit of 10,000"):
        read_image(path, max_pixels=10_000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # Pillow alone would call this a bomb
    assert read_image(path, max_pixels=None).shape == photo.shape
    assert Image.MAX_IMAGE_PIXELS == 1_000  # restored


def test_heic_photo_is_read_with_exif_rotation(tmp_path):
    assert im._heif_available()  # pillow-heif is a dependency
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :30] = (200, 30, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(pixels).save(tmp_path / "phone photo.HEIC", quality=95, exif=exif.tobytes())
    out = read_image(tmp_path / "phone photo.HEIC")
    assert out.shape == (60, 40, 3) and out.dtype == np.uint8
    assert out[:30, :, 0].mean() > 150 and out[30:, :, 0].mean() < 60  # the red half is now on top


def test_heic_without_plugin_is_reported(tmp_path, monkeypatch):
    monkeypatch.setitem(im._HEIF_STATE, "ok", False)
    (tmp_path / "x.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    with pytest.raises(NotAnImageError, match="pillow-heif"):
        read_image(tmp_path / "x.heic")


def test_iter_images_keeps_order_reports_errors_and_bounds_memory(tmp_path, photo):
    paths = []
    for i in range(12):
        p = tmp_path / f"{i:02d}.png"
        if i == 5:
            p.write_text("oops")
        else:
            Image.fromarray(np.roll(photo, i, axis=1)).save(p)
        paths.append(p)
    live, peak, lock = [0], [0], threading.Lock()

    def slow_reader(path, max_pixels=None, max_image_bytes=None, ticket=None):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.01 * (int(path.stem) % 3))  # finish out of order
        if path.stem == "07":
            raise RuntimeError("boom")
        return read_image(path, max_pixels=max_pixels, ticket=ticket)

    results = []
    for path, result in iter_images(paths, workers=3, prefetch=4, reader=slow_reader):
        results.append((path, result))
        with lock:
            live[0] -= 1
    assert [p for p, _ in results] == paths
    assert isinstance(results[5][1], NotAnImageError)
    assert isinstance(results[7][1], ImageReadError) and "boom" in str(results[7][1])
    np.testing.assert_array_equal(results[3][1], np.roll(photo, 3, axis=1))
    assert peak[0] <= 4 + 1  # prefetch window plus the one being consumed
    sync = list(iter_images(paths[:3], workers=0))
    assert [p for p, _ in sync] == paths[:3]


def test_iter_images_can_be_abandoned(tmp_path, photo):
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(photo).save(paths[-1])
    gen = iter_images(paths, workers=2, prefetch=2)
    next(gen)
    gen.close()  # shuts the pool down without hanging


def test_resize_image(photo):
    small = resize_image(photo, (32, 48))
    assert small.shape == (32, 48, 3) and small.dtype == np.uint8
    assert resize_image(photo, (256, 256)).shape == (256, 256, 3)
    with pytest.raises(ValueError):
        resize_image(photo, (0, 10))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(tmp_path, photo, orientation):
    from PIL import ImageOps

    stored = photo[:, :96]
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    Image.fromarray(stored).save(path, exif=exif)
    with Image.open(path) as pil:
        expected = np.asarray(ImageOps.exif_transpose(pil).convert("RGB"))
    np.testing.assert_array_equal(read_image(path), expected)


@pytest.mark.parametrize("mode", ["P", "PA", "LA", "L", "CMYK", "I;16", "RGBA"])
def test_band_conversion_equals_whole_image_conversion(tmp_path, photo, mode, monkeypatch):
    """Converting in bands of rows gives the pixels a one-shot conversion gives (bands smaller than the image)."""
    monkeypatch.setattr(pixels, "_BAND_ROWS", 7)
    rgba = np.dstack([photo, np.linspace(0, 255, photo.shape[1], dtype=np.uint8)[None].repeat(128, 0)])
    source = Image.fromarray(rgba, "RGBA")
    if mode == "P":
        source = source.convert("RGB").quantize(64)
        source.info["transparency"] = 3
    elif mode == "I;16":
        source = Image.fromarray(photo[..., 0].astype(np.uint16) * 257)
        assert source.mode.startswith("I;16")
    else:
        source = source.convert(mode)
    out = im.to_rgb8(source)
    if mode == "I;16":
        np.testing.assert_array_equal(out[..., 1], photo[..., 0])
        return
    whole = (im._composite_over_white(source) if im._has_alpha(source) else source.convert("RGB"))
    np.testing.assert_array_equal(out, np.asarray(whole))


def test_an_image_that_needs_more_memory_than_allowed_is_refused(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("P", (3000, 2000)).save(path)
    need = im.decode_bytes("P", (3000, 2000))
    assert need == 3000 * 2000 * 4  # palette indices + RGB output
    assert read_image(path, max_image_bytes=need).shape == (2000, 3000, 3)
    with pytest.raises(ImageTooLargeError, match="MB to decode"):
        read_image(path, max_image_bytes=need - 1)
    results = dict(iter_images([path], max_image_bytes=need - 1))
    assert isinstance(results[path], ImageTooLargeError)
    results = dict(iter_images([path, path], decode_budget=need - 1))  # over the shared budget: decoded alone
    assert all(r.shape == (2000, 3000, 3) for r in results.values())


def test_iter_images_keeps_decoded_bytes_within_the_budget(tmp_path, photo, monkeypatch):
    """With a budget of two images, never more than two are reserved at once, whatever the prefetch window."""
    paths = []
    for i in range(10):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.roll(photo, i, axis=0)).save(paths[-1])
    one = im.decode_bytes("RGB", photo.shape[1::-1])
    peaks = []
    real_reserve = im.DecodeBudget._reserve

    def watch(self, seq, nbytes):
        real_reserve(self, seq, nbytes)
        peaks.append(self.used)

    monkeypatch.setattr(im.DecodeBudget, "_reserve", watch)

    def slowly(budget):  # a slow consumer, so the decoders run as far ahead as they may
        out = []
        for p, _ in iter_images(paths, workers=3, prefetch=8, decode_budget=budget):
            time.sleep(0.02)
            out.append(p)
        return out

    assert slowly(2 * one) == paths and len(peaks) == 10
    assert max(peaks) <= 2 * one
    unbounded = []
    monkeypatch.setattr(im.DecodeBudget, "_reserve", lambda self, seq, n: (real_reserve(self, seq, n),
                                                                             unbounded.append(self.used)))
    slowly(100 * one)
    assert max(unbounded) > 2 * one  # the baseline: without the bound, more images are held at once


def test_iter_images_never_waits_on_the_image_the_caller_has_finished_with(tmp_path, photo):
    """A budget that fits one image and a half: each image must be released when the next is asked for."""
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(photo).save(paths[-1])
    one = im.decode_bytes("RGB", photo.shape[1::-1])
    done = []

    def consume():
        done.extend(p for p, _ in iter_images(paths, workers=2, prefetch=4, decode_budget=one * 3 // 2))

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    t.join(timeout=30)
    assert done == paths
