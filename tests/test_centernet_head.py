"""detectcrop.centernet_head: the CenterNet decoding outside the graph, against brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
from detectcrop.centernet_head import CenterNetHead, _max_pool, _top_k


def test_top_k_matches_a_sort_with_ties_to_the_lower_index():
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 300))
        if trial % 2:  # many ties, and zeros (non-peaks)
            values = rng.choice([0.0, 0.0, 0.0, 0.1, 0.5, 1.0], n).astype(np.float32)
        else:
            values = (rng.random(n) * (rng.random(n) > 0.7)).astype(np.float32)
        k = int(rng.integers(1, 120))
        expected = sorted(range(n), key=lambda i: (-values[i], i))[:k]
        assert _top_k(values, k).tolist() == expected


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_max_pool_matches_a_window_maximum(size):
    heat = np.random.default_rng(size).random((9, 11, 3)).astype(np.float32)
    before = size // 2
    expected = np.empty_like(heat)
    for y in range(9):
        for x in range(11):
            window = heat[max(0, y - before):y - before + size, max(0, x - before):x - before + size]
            expected[y, x] = window.max(axis=(0, 1))
    np.testing.assert_array_equal(_max_pool(heat, size), expected)


def _head(rng: np.random.Generator, depth: int = 8, classes: int = 5, top_k: int = 10) -> CenterNetHead:
    return CenterNetHead(rng.normal(size=(depth, classes)).astype(np.float32), rng.normal(size=classes).astype(
        np.float32), np.array([1, 3, 17, 47, 85], np.float32)[:classes], input_size=64, stride=4.0, top_k=top_k)


def test_decode_restricted_to_categories_keeps_what_decoding_everything_keeps(tmp_path):
    rng = np.random.default_rng(1)
    head = _head(rng, top_k=16 * 16 * 5)  # a top-k that never saturates: the two must agree exactly
    features = rng.normal(size=(1, 16, 16, 8)).astype(np.float32)
    wh = (rng.random((1, 16, 16, 4)) * 10).astype(np.float32)
    everything = head.decode(features, wh)
    for categories in [(17,), (1, 85), (2,)]:
        got = head.decode(features, wh, categories)
        keep = np.isin(everything["detection_classes"][0], categories) & (everything["detection_scores"][0] > 0)
        positive = got["detection_scores"][0] > 0
        assert set(got["detection_classes"][0][positive].tolist()) <= set(categories)
        np.testing.assert_array_equal(got["detection_scores"][0][positive], everything["detection_scores"][0][keep])
        np.testing.assert_array_equal(got["detection_boxes"][0][positive], everything["detection_boxes"][0][keep])
    head.save(tmp_path / "head.npz")
    again = CenterNetHead.load(tmp_path / "head.npz")
    np.testing.assert_array_equal(again.decode(features, wh)["detection_boxes"], everything["detection_boxes"])


def test_decode_box_arithmetic_by_hand():
    head = CenterNetHead(np.ones((1, 1), np.float32), np.zeros(1, np.float32), np.array([85], np.float32),
                         input_size=32, stride=4.0, top_k=1)
    features = np.full((1, 8, 8, 1), -5.0, np.float32)
    features[0, 2, 5, 0] = 3.0  # the one peak: row 2, column 5 -> centre (20, 8) in input pixels
    wh = np.zeros((1, 8, 8, 4), np.float32)
    wh[0, 2, 5] = [4, 2, 6, 8]  # left, top, right, bottom
    out = head.decode(features, wh)
    np.testing.assert_allclose(out["detection_boxes"][0, 0], np.array([8 - 2, 20 - 4, 8 + 8, 20 + 6]) / 32)
    np.testing.assert_allclose(out["detection_scores"][0, 0], 1 / (1 + np.exp(-3.0)), rtol=1e-6)
    assert out["detection_classes"][0, 0] == 85 and out["num_detections"][0] == 1
