from __future__ import annotations

import numpy as np
import pytest

from detectcrop import boxes as bx


def test_xyxy_xywh_round_trip():
    b = np.array([[10, 20, 50, 80], [0, 0, 1.5, 2.5]])
    xywh = bx.xyxy_to_xywh(b)
    np.testing.assert_allclose(xywh, [[10, 20, 40, 60], [0, 0, 1.5, 2.5]])
    np.testing.assert_allclose(bx.xywh_to_xyxy(xywh), b)


def test_normalized_pixel_round_trip_uses_height_width_order():
    shape = (200, 400)  # height, width
    px = bx.normalized_to_pixel([[0.25, 0.5, 0.75, 1.0]], shape)
    np.testing.assert_allclose(px, [[100, 100, 300, 200]])
    np.testing.assert_allclose(bx.pixel_to_normalized(px, (200, 400, 3)), [[0.25, 0.5, 0.75, 1.0]])
    np.testing.assert_allclose(bx.yxyx_to_xyxy([[1, 2, 3, 4]]), [[2, 1, 4, 3]])


def test_shapes_are_validated_and_empty_is_fine():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        bx.as_boxes(np.zeros((3, 3)))
    assert bx.as_boxes([]).shape == (0, 4)
    assert bx.iou([], [[0, 0, 1, 1]]).shape == (0, 1)
    assert bx.nms([], []).shape == (0,)
    assert bx.batched_nms(np.zeros((0, 4)), [], []).shape == (0,)


def test_iou_and_ios_known_values():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 5, 5]])
    np.testing.assert_allclose(bx.iou(a, b), [[50 / 150, 0, 25 / 100]])
    np.testing.assert_allclose(bx.ios(a, b), [[0.5, 0, 1.0]])
    assert bx.iou([[1, 1, 1, 1]], [[1, 1, 1, 1]])[0, 0] == 0  # empty boxes: no division by zero


def test_nms_keeps_best_of_overlapping_and_orders_by_score():
    b = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10]])
    s = np.array([0.6, 0.9, 0.5, 0.6])
    np.testing.assert_array_equal(bx.nms(b, s, 0.5), [1, 2])
    np.testing.assert_array_equal(bx.nms(b, s, 0.99), [1, 0, 2])  # exact duplicates (IoU 1) still suppressed
    # IOS also removes a small box lying inside a bigger, better one
    inner = np.array([[0, 0, 100, 100], [10, 10, 30, 30]])
    assert list(bx.nms(inner, [0.9, 0.8], 0.5)) == [0, 1]
    assert list(bx.nms(inner, [0.9, 0.8], 0.5, metric="ios")) == [0]
    with pytest.raises(ValueError, match="metric"):
        bx.nms(inner, [0.9, 0.8], metric="giou")


def test_batched_nms_is_class_aware():
    b = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    s = np.array([0.5, 0.9, 0.7])
    c = np.array([1, 2, 1])
    np.testing.assert_array_equal(bx.batched_nms(b, s, c, 0.5), [1, 2])


def test_pad_square_shift_clip():
    b = np.array([[10, 20, 30, 60]])  # 20 wide, 40 high
    np.testing.assert_allclose(bx.pad(b, 0.1), [[8, 16, 32, 64]])
    np.testing.assert_allclose(bx.square(b), [[0, 20, 40, 60]])
    with pytest.raises(ValueError):
        bx.pad(b, -0.1)
    # a square box past the left edge moves right and keeps its size
    np.testing.assert_allclose(bx.shift_inside([[-5, 0, 15, 20]], (100, 100)), [[0, 0, 20, 20]])
    np.testing.assert_allclose(bx.shift_inside([[90, 95, 110, 115]], (100, 100)), [[80, 80, 100, 100]])
    # too wide to fit: centred, then clip cuts it to the image
    np.testing.assert_allclose(bx.shift_inside([[0, 0, 120, 10]], (50, 100)), [[-10, 0, 110, 10]])
    np.testing.assert_allclose(bx.clip([[-10, -5, 110, 60]], (50, 100)), [[0, 0, 100, 50]])


def test_to_int_pixels_covers_the_box_and_ignores_float_noise():
    out = bx.to_int_pixels([[10.2, 5.7, 20.1, 30.0000001], [-3, -3, 500, 500]], (100, 200))
    np.testing.assert_array_equal(out, [[10, 5, 21, 30], [0, 0, 200, 100]])
    assert out.dtype == np.int64
