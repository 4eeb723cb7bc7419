"""Tiled detection: the grid, merging across tiles, nested boxes, and real small watches found by tiles."""

from __future__ import annotations

import collections
import itertools

import numpy as np
import pytest
from detectcrop.images import read_image
from red_blobs import RedBlobDetector, red_photo

from detectcrop import Detections
from detectcrop.crops import CropPolicy
from detectcrop.tiling import TileConfig, detect_tiled, tile_grid

MIN_SCORE = 0.3


def test_tile_grid_covers_the_image_with_overlap():
    tiles = tile_grid((480, 640), tile_fraction=0.5, overlap=0.25)
    assert (tiles[:, 2] - tiles[:, 0] == 240).all() and (tiles[:, 3] - tiles[:, 1] == 240).all()
    cover = np.zeros((480, 640), bool)
    for x1, y1, x2, y2 in tiles:
        cover[y1:y2, x1:x2] = True
    assert cover.all()
    xs = sorted(set(tiles[:, 0].tolist()))
    assert all(b - a <= 240 * 0.75 + 1 for a, b in itertools.pairwise(xs))
    assert tile_grid((100, 50), tile_fraction=1.0, overlap=0).tolist() == [[0, 0, 50, 50], [0, 50, 50, 100]]
    assert tile_grid((100, 50), tile_fraction=1.0).tolist() == [[0, 0, 50, 50], [0, 25, 50, 75], [0, 50, 50, 100]]
    with pytest.raises(ValueError):
        TileConfig(overlap=1.0)


def test_thin_and_elongated_images_get_a_bounded_number_of_tiles():
    from detectcrop.tiling import MAX_TILES, MIN_TILE_SIDE

    normal = len(tile_grid((480, 640)))
    for shape in [(400, 2), (5000, 1), (1, 3000), (900, 7), (65000, 2)]:
        assert len(tile_grid(shape)) == 0  # tiles of a pixel or two: the image is detected whole
    fine = tile_grid((1080, 1920), tile_fraction=0.15)
    assert (fine[:, 2] - fine[:, 0] == 162).all() and len(fine) > MAX_TILES  # a photo keeps the fraction asked for
    for shape in [(65000, 300), (300, 65000), (3000, 400)]:
        tiles = tile_grid(shape)
        assert normal < len(tiles) <= MAX_TILES
        assert ((tiles[:, 2:] - tiles[:, :2]) >= MIN_TILE_SIDE).all()
        cover = np.zeros(shape, bool)
        for x1, y1, x2, y2 in tiles:
            cover[y1:y2, x1:x2] = True
        assert cover.all()  # still the whole image
    det = RedBlobDetector(resolution=64, min_pixels=1)
    detect_tiled(det, np.zeros((400, 3, 3), np.uint8), TileConfig(include_full=False))
    assert det.calls == 1  # no tile and no whole-image pass asked for: the whole image all the same


def test_tiles_find_small_objects_once(tmp_path):
    red_photo(tmp_path / "p.png", [(200, 150, 214, 164), (20, 20, 140, 140)], size=(480, 640))
    img = read_image(tmp_path / "p.png")
    det = RedBlobDetector(resolution=64, min_pixels=4)  # a 14-px object is ~1.4 px at 64x64: invisible
    assert len(det.detect(img)) == 1
    tiled = detect_tiled(det, img, TileConfig(tile_fraction=0.25, overlap=0.25))
    assert len(tiled) == 2  # each object once: duplicates from overlapping tiles merged, cut boxes dropped
    small = tiled[np.argmin(tiled.area)]
    np.testing.assert_allclose(small.xyxy[0], [200, 150, 214, 164], atol=8)
    assert det.calls == 1 + 1 + len(tile_grid(img.shape, 0.25, 0.25))


def test_tiles_find_small_watches_the_whole_image_pass_misses(detector, tmp_path):
    """On photos whose watch is small, the real detector with tiles finds more of them than without (same photos,
    same threshold); and everything the whole-image pass found is still found."""
    from pipelines.evaluate import match_boxes

    from detectcrop.core import DetectSteps, detect_objects
    from pipelines.synthetic import generate, load_ground_truth

    generate(tmp_path, brands=2, photos_per_brand=6, scenes=0, seed=5, size=(1280, 960), small_photo_fraction=1.0)
    found = {}
    for tile in (None, TileConfig()):
        steps = DetectSteps(detector, (85,), MIN_SCORE, CropPolicy(), tile)
        hits = []
        for record in load_ground_truth(tmp_path / "annotations.json"):
            dets = detect_objects(read_image(record.path), steps)
            hits += [m >= 0 for m in match_boxes(record.detections.xyxy, dets.xyxy, dets.scores)]
        found["tiled" if tile else "whole"] = np.array(hits)
    assert found["tiled"].sum() > found["whole"].sum()  # tiles add watches
    assert (found["tiled"] >= found["whole"]).mean() >= 0.9  # and lose (almost) none


class _WatchAndDialDetector:
    """Boxes the red 'watch' (score 0.9) and, separately, the blue 'dial' inside it (score 0.5), as a detector that
    sometimes sees only part of an object does."""

    def detect(self, image, *, min_score=None):
        out = []
        for channel, score in ((0, 0.9), (2, 0.5)):
            ys, xs = np.nonzero(image[..., channel] > 200)
            if len(xs):
                out.append(([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], score))
        return Detections([b for b, _ in out], [s for _, s in out], [85] * len(out))


def test_tiles_drop_boxes_nested_in_a_better_box():
    img = np.zeros((480, 640, 3), np.uint8)
    img[100:300, 200:400, 0] = 255  # the watch
    img[150:250, 250:350] = (0, 0, 255)  # its dial
    nested = detect_tiled(_WatchAndDialDetector(), img, TileConfig(containment_threshold=None))
    assert len(nested) == 2
    merged = detect_tiled(_WatchAndDialDetector(), img, TileConfig())
    assert len(merged) == 1 and merged.scores[0] == pytest.approx(0.9)
    np.testing.assert_allclose(merged.xyxy[0], [200, 100, 400, 300])


class _ThreadRecorder:
    """A detector that runs ``workers`` single-threaded calls at once and records each call's thread count and
    thread; its detections are one box per call at the call's image size, so the merge shows every pass."""

    def __init__(self, workers: int) -> None:
        import threading

        self.concurrent_calls, self.calls, self._lock = workers, [], threading.Lock()

    def detect(self, image, *, min_score=None, num_threads=None):
        import threading

        with self._lock:
            self.calls.append((image.shape[:2], num_threads, threading.current_thread() is threading.main_thread()))
        h, w = image.shape[:2]
        return Detections(np.array([[1.0, 1.0, w - 1.0, h - 1.0]]), np.array([0.9]), np.array([1]))


@pytest.mark.parametrize(("workers", "threads"), [(2, {None: 1, 1: 6}), (3, {None: 1, 1: 6}), (4, {1: 7}),
                                                  (5, {2: 2, 1: 5})])
def test_passes_left_over_after_full_rounds_share_the_threads(workers, threads):
    """7 passes (6 tiles + the whole image): with 2 or 3 workers the whole image runs alone on the caller's thread
    with the detector's own threads (``None``); with 4 there is no thread to share (3 left over) and every pass is
    single-threaded; with 5, the 2 left over get 2 threads each. Results are the same in every case."""
    image = np.zeros((480, 640, 3), np.uint8)
    assert len(tile_grid(image.shape)) == 6
    reference = detect_tiled(_ThreadRecorder(1), image, TileConfig(containment_threshold=None, iou_threshold=0.99))
    detector = _ThreadRecorder(workers)
    got = detect_tiled(detector, image, TileConfig(containment_threshold=None, iou_threshold=0.99))
    assert dict(collections.Counter(n for _, n, _ in detector.calls)) == threads  # thread count -> passes
    on_caller = [shape for shape, n, main in detector.calls if main]
    assert on_caller == ([(480, 640)] if None in threads else [])  # the whole image, on the caller's thread
    np.testing.assert_array_equal(got.xyxy, reference.xyxy)
    np.testing.assert_array_equal(got.data["tile"], reference.data["tile"])


class _Fixed:
    """Returns the same three detections whatever it is asked (two clocks, one low, and a person)."""

    def __init__(self, applies_request: bool) -> None:
        self.applies_request, self.calls = applies_request, []

    def detect(self, image: np.ndarray, *, min_score: float | None = None, **kwargs) -> Detections:
        self.calls.append({"min_score": min_score, **kwargs})
        return Detections(np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32),
                          np.array([0.9, 0.1, 0.8], np.float32), np.array([85, 85, 1]))


def test_the_detection_request_is_applied_once_by_the_detector_that_takes_it_else_after_it():
    from detectcrop.core import DetectSteps, detect_objects

    image = np.zeros((64, 64, 3), np.uint8)
    for tile in (None, TileConfig(include_full=True)):
        plain, taking = _Fixed(False), _Fixed(True)
        got = detect_objects(image, DetectSteps(plain, (85,), 0.3, CropPolicy(), tile))
        assert got.class_ids.tolist() == [85] and got.scores.tolist() == pytest.approx([0.9])  # filtered here
        assert all("categories" not in c and c["min_score"] == 0.3 for c in plain.calls)  # it was not asked for them
        trusted = detect_objects(image, DetectSteps(taking, (85,), 0.3, CropPolicy(), tile))
        assert all(c["categories"] == (85,) and c["min_score"] == 0.3 for c in taking.calls)
        assert len(trusted) > len(got)  # what a detector that takes the request returns is not filtered again
