"""Reduced-size JPEG decoding for whole-image detection: the scale rule, the exact map back to full-resolution pixels
under every EXIF orientation, the real detector on a reduced vs a full decode, and the error and memory promises."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from detectcrop.budget import DecodeBudget
from detectcrop.images import decode_bytes, draft_scale, iter_images, read_image
from PIL import Image
from red_blobs import RedBlobDetector
from skimage import data

from detectcrop import boxes
from detectcrop.core import DetectSteps, process_image
from detectcrop.crops import CropPolicy
from detectcrop.decoding import ReducedImage, Reduction, read_for_detection, reduction_for
from detectcrop.tiling import TileConfig


def test_draft_scale_is_the_largest_reduction_keeping_both_sides(tmp_path):
    assert draft_scale((4000, 3000), 512) == 4  # 1000x750; 1/8 would give 500x375
    assert draft_scale((4096, 4096), 512) == 8
    assert draft_scale((1023, 4000), 512) == 1
    assert draft_scale((1024, 768), 512) == 1 and draft_scale((1024, 1024), 512) == 2
    for size in [(1025, 777), (3001, 2999)]:  # Pillow's decoder makes the same choice, ceil(side / s) long
        Image.new("RGB", size).save(tmp_path / "a.jpg")
        with Image.open(tmp_path / "a.jpg") as im:
            im.draft("RGB", (256, 256))
            s = draft_scale(size, 256)
            assert im.size == (-(-size[0] // s), -(-size[1] // s)) and s > 1


class _Blobs(RedBlobDetector):
    input_size = (64, 64)


def _blob_jpeg(path, orientation: int, size=(1025, 777)):
    """A JPEG (4:4:4) of red squares on 8-pixel block edges, stored un-rotated with an EXIF orientation; the sides
    are 8k + 1 so that a 1/8 decode pads 7 pixels per side."""
    w, h = size
    rng = np.random.default_rng(orientation)
    img = (rng.random((h, w, 3)) * 100).astype(np.uint8)
    for x1, y1, x2, y2 in [(64, 48, 256, 200), (600, 400, 1000, 720), (800, 40, 960, 160)]:
        img[y1:y2, x1:x2] = (230, 20, 20)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(img).save(path, quality=95, subsampling=0, exif=exif)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_reduced_boxes_map_exactly_to_full_resolution(tmp_path, orientation):
    path = tmp_path / f"o{orientation}.jpg"
    _blob_jpeg(path, orientation)
    full = read_image(path)
    reduced = read_for_detection(path, Reduction(64))
    assert isinstance(reduced, ReducedImage) and reduced.scale == 8
    assert reduced.full_shape == full.shape[:2] and reduced.shape == full.shape
    expect = RedBlobDetector().detect(full)
    got = reduced.detections_to_full(RedBlobDetector().detect(reduced.image))
    order = lambda d: d.xyxy[np.lexsort(d.xyxy.T[::-1])]  # noqa: E731
    assert len(expect) == len(got) == 3
    assert np.abs(order(expect) - order(got)).max() <= 1.0  # exact up to JPEG rounding at the block edges
    assert np.allclose(reduced.to_reduced(got.xyxy), RedBlobDetector().detect(reduced.image).xyxy)  # the inverse
    # the naive map (normalised by the reduced and full sizes) is off by up to the 7 pixels of padding
    h, w = full.shape[:2]
    naive = RedBlobDetector().detect(reduced.image).xyxy * np.array([w, h, w, h]) / np.array(
        [*reduced.image.shape[1::-1], *reduced.image.shape[1::-1]])
    assert np.abs(np.sort(naive, axis=0) - np.sort(expect.xyxy, axis=0)).max() > 3.0


def test_reduction_rule_follows_the_detector_and_tiles(tmp_path):
    _blob_jpeg(tmp_path / "a.jpg", 1)  # 1025x777: 1/2 keeps 300-pixel sides, 1/4 would not
    assert read_for_detection(tmp_path / "a.jpg", Reduction(300, 2)).scale == 2
    assert isinstance(read_for_detection(tmp_path / "a.jpg", Reduction(300, 4)), np.ndarray)  # full size
    Image.fromarray(np.zeros((777, 1025, 3), np.uint8)).save(tmp_path / "a.png")
    assert isinstance(read_for_detection(tmp_path / "a.png", Reduction(64, 2)), np.ndarray)  # JPEG only
    assert reduction_for(_Blobs(), tiled=False, mode="reduced") == Reduction(64, 2)
    assert reduction_for(_Blobs(), tiled=False, mode="auto") == Reduction(64, 4)  # 1/2 does not pay (BENCHMARKS)
    assert reduction_for(_Blobs(), tiled=True, mode="reduced") is None  # tiles need the full resolution
    assert reduction_for(_Blobs(), tiled=False, mode="full") is None
    assert reduction_for(RedBlobDetector(), tiled=False, mode="reduced") is None  # input size unknown
    with pytest.raises(ValueError, match="decode"):
        DetectSteps(_Blobs(), decode="fast")


def test_real_detector_on_a_reduced_decode_finds_the_same_objects(tmp_path, detector):
    """The astronaut at 2051x2049 (odd sides, EXIF orientation 6): the 1/4 decode (513x513 stored, the detector's
    own input size) and the full decode give the same objects; the boxes differ by what the detector's resampling
    does, measured against an area-resized copy of the full image of the same size (the same geometry)."""
    stored = cv2.resize(np.rot90(data.astronaut(), 1), (2051, 2049), interpolation=cv2.INTER_CUBIC)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "astronaut.jpg"
    Image.fromarray(stored).save(path, quality=92, exif=exif)
    full = read_image(path)
    reduced = read_for_detection(path, reduction_for(detector, tiled=False, mode="reduced"))
    assert isinstance(reduced, ReducedImage) and reduced.scale == 4 and min(reduced.image.shape[:2]) >= 512
    a = detector.detect(full, min_score=0.5)
    b = reduced.detections_to_full(detector.detect(reduced.image, min_score=0.3))
    area = cv2.resize(full, reduced.image.shape[1::-1], interpolation=cv2.INTER_AREA)
    c = detector.detect(area, min_score=0.3)  # boxes normalised by the full size: the same geometry
    assert len(a) >= 1 and "person" in a.class_names
    for i in range(len(a)):
        iou_b, iou_c = boxes.iou(a.xyxy[i : i + 1], b.xyxy)[0], boxes.iou(a.xyxy[i : i + 1], c.xyxy)[0]
        j, k = int(iou_b.argmax()), int(iou_c.argmax())
        assert b.class_ids[j] == a.class_ids[i] and iou_b[j] > 0.9
        assert abs(b.scores[j] - a.scores[i]) < 0.1
        # within one detector input pixel of what the same-size area resize gives
        px = max(full.shape[:2]) / 512
        assert np.abs(b.xyxy[j] - a.xyxy[i]).max() <= np.abs(c.xyxy[k] - a.xyxy[i]).max() + px


def test_reduced_decode_crops_from_full_resolution_and_skips_the_full_decode(tmp_path, monkeypatch):
    path = tmp_path / "o1.jpg"
    _blob_jpeg(path, 1)
    full = read_image(path)
    steps = DetectSteps(_Blobs(), min_score=0.3, policy=CropPolicy(pad=0.0, min_size=8), decode="reduced")
    want = process_image("a", full, steps)
    got = process_image("a", read_for_detection(path, steps.reduction), steps)
    assert got.status == want.status == "ok" and (got.width, got.height) == (want.width, want.height)
    assert np.abs(got.boxes - want.boxes).max() <= 1
    for x, y in zip(got.crops, want.crops, strict=True):  # cut from the full-resolution pixels
        assert x.shape[0] >= y.shape[0] - 2 and x.shape[1] >= y.shape[1] - 2 and x.shape[0] > 100

    # nothing to crop: the full image is never decoded
    calls = []
    monkeypatch.setattr(ReducedImage, "full", lambda self: calls.append(1) or read_image(self.path))
    empty = tmp_path / "empty.jpg"
    Image.fromarray(np.full((777, 1025, 3), 90, np.uint8)).save(empty)
    result = process_image("e", read_for_detection(empty, steps.reduction), steps)
    assert result.status == "no_detection" and (result.width, result.height) == (1025, 777) and not calls


def test_full_decode_failing_after_a_reduced_decode_is_one_error_row(tmp_path):
    """A JPEG truncated after its reduced decode succeeded (the file changed, or damage only the full decode
    meets): one error row with the reason a full-size read gives, never an exception."""
    path = tmp_path / "o1.jpg"
    _blob_jpeg(path, 1)
    steps = DetectSteps(_Blobs(), min_score=0.3, policy=CropPolicy(pad=0.0, min_size=8), decode="reduced")
    reduced = read_for_detection(path, steps.reduction)
    data_ = path.read_bytes()
    path.write_bytes(data_[: len(data_) // 2])
    full_mode = next(iter_images([path], workers=0))[1]
    result = process_image("a", reduced, steps)
    assert result.status == "error" and result.error == str(full_mode) and "truncated" in result.error
    # a reduced read of the truncated file fails the same way, before any detection
    with pytest.raises(type(full_mode), match="truncated"):
        read_for_detection(path, steps.reduction)
    tiled = DetectSteps(_Blobs(), tile=TileConfig(), decode="reduced")
    assert process_image("t", reduced, tiled).status == "error"  # a reduced image never reaches the tiler


def test_reduced_read_keeps_the_full_decode_reserved_until_the_crops_are_cut(tmp_path):
    """The reduced image keeps the full decode's peak in the budget; a deferred full decode (`ImageCrops.finish`,
    run by another thread) holds it past the consumer's release, and gives it back when done."""
    path = tmp_path / "o1.jpg"
    _blob_jpeg(path, 1)
    budget = DecodeBudget(2**30)
    steps = DetectSteps(_Blobs(), min_score=0.3, policy=CropPolicy(pad=0.0, min_size=8), decode="reduced")
    ticket = budget.ticket()
    image = read_for_detection(path, steps.reduction, ticket=ticket)
    assert isinstance(image, ReducedImage)
    assert budget.used == decode_bytes("RGB", (1025, 777)) > image.image.nbytes
    job = process_image("a", image, steps, defer=True)
    assert job.status == "ok" and not job.crops and job.reduced is not None
    ticket.release()  # the consumer moves on: the reservation stays while the crops wait
    assert budget.used == decode_bytes("RGB", (1025, 777))
    assert job.finish() is job and len(job.crops) == 3 and job.reduced is None
    assert budget.used == 0
    other = budget.ticket()  # without a deferred decode, release gives everything back at once
    read_for_detection(path, steps.reduction, ticket=other)
    other.release()
    assert budget.used == 0


def test_build_crops_reduced_matches_full_and_the_ray_worker(tmp_path):
    """A folder of large JPEGs (blobs, none, truncated) through build_crops with ``decode="full"`` and ``"reduced"``:
    the same rows (boxes within a pixel); the Ray engine's worker rebuilds the same steps and writes the same rows."""
    from detectcrop.crop_writer import CropWorker
    from detectcrop.dataset import CROPS_COLUMNS, CROPS_CSV, IMAGES_COLUMNS, IMAGES_CSV, build_crops, crop_basenames
    from detectcrop.io import CsvManifest

    photos = tmp_path / "photos" / "a"
    photos.mkdir(parents=True)
    for o in (1, 6):
        _blob_jpeg(photos / f"blobs{o}.jpg", o)
    Image.fromarray(np.full((777, 1025, 3), 90, np.uint8)).save(photos / "empty.jpg")
    good = (photos / "blobs1.jpg").read_bytes()
    (photos / "truncated.jpg").write_bytes(good[: len(good) // 2])
    policy = CropPolicy(pad=0.0, min_size=8)
    runs = {}
    for mode in ("full", "reduced"):
        out = tmp_path / mode
        build_crops(tmp_path / "photos", out, _Blobs(), category="clock", policy=policy, decode=mode, workers=1)
        runs[mode] = (CsvManifest(out / IMAGES_CSV, IMAGES_COLUMNS).rows(), CsvManifest(out / CROPS_CSV,
                                                                                     CROPS_COLUMNS).rows())
    (full_images, full_crops), (red_images, red_crops) = runs["full"], runs["reduced"]
    with pytest.raises(ValueError, match=r"decode.*pass --decode full"):  # a run made in full says how to resume it
        build_crops(tmp_path / "photos", tmp_path / "full", _Blobs(), category="clock", policy=policy, decode="auto",
                    resume=True, workers=1)
    assert CsvManifest(tmp_path / "full" / IMAGES_CSV, IMAGES_COLUMNS).rows() == full_images
    assert full_images == red_images and [r["status"] for r in red_images] == ["ok", "ok", "no_detection", "error"]
    assert len(full_crops) == len(red_crops) == 6
    for a, b in zip(full_crops, red_crops, strict=True):
        assert a["crop_path"] == b["crop_path"]
        assert max(abs(int(a[k]) - int(b[k])) for k in ("x1", "y1", "x2", "y2")) <= 1

    rels = [f"a/{p.name}" for p in sorted(photos.iterdir())]
    names = crop_basenames(rels)
    worker = CropWorker(str(tmp_path / "ray"), _Blobs(), {"category_ids": [85], "min_score": 0.3,
                                                         "policy": policy.to_dict(), "tile": None,
                                                         "decode": "reduced"}, {})
    assert worker.steps.reduction == Reduction(64, 2)
    got = worker.process([{"key": r, "path": str(tmp_path / "photos" / r), "name": names[r], "problem": ""}
                          for r in rels])
    assert [[str(v) for v in g["image"]] for g in got] == [[r[c] for c in IMAGES_COLUMNS] for r in red_images]
    assert [[str(v) for v in c[:8]] for g in got for c in g["crops"]] == [[r[c] for c in CROPS_COLUMNS[:8]]
                                                                          for r in red_crops]


class _Constant:
    """A stand-in classifier: every crop is ``"a"``."""

    classes_ = np.array(["a", "b"])

    def predict_proba(self, crops):
        return np.tile([0.9, 0.1], (len(crops), 1))


def test_label_images_cut_crops_of_reduced_images_off_the_detector_thread(tmp_path):
    """DetectThenClassify on reduced images: crops from the full decode (run on its own thread), and a full decode
    that fails after the reduced one succeeded is one error result with the full-size read's reason."""
    from pipelines.compose import DetectThenClassify

    for name in ("good.jpg", "bad.jpg"):
        _blob_jpeg(tmp_path / name, 1)
    pipe = DetectThenClassify(_Blobs(), _Constant(), category="clock", crop_policy=CropPolicy(pad=0.0, min_size=8),
                              decode="reduced")
    reduction = pipe.load().steps_.reduction
    items = [(name, read_for_detection(tmp_path / name, reduction)) for name in ("good.jpg", "bad.jpg")]
    data_ = (tmp_path / "bad.jpg").read_bytes()
    (tmp_path / "bad.jpg").write_bytes(data_[: len(data_) // 2])
    good, bad = pipe.label_images(items)
    assert good.status == "ok" and len(good.objects) == 3 and {o.label for o in good.objects} == {"a"}
    assert bad.status == "error" and bad.error == str(next(iter_images([tmp_path / "bad.jpg"], workers=0))[1])
    assert [o.xyxy for o in pipe(tmp_path / "good.jpg").objects] == [o.xyxy for o in good.objects]
