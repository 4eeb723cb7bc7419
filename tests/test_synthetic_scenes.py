"""Placing watches in photos: the size distribution of product photos."""

from __future__ import annotations

import numpy as np

from pipelines.synthetic.scenes import PHOTO_LARGE, PHOTO_SMALL, sample_photo_size


def test_size_distribution() -> None:
    rng = np.random.default_rng(0)
    sizes = np.array([sample_photo_size(rng) for _ in range(5000)])
    assert PHOTO_SMALL[0] <= sizes.min() and sizes.max() <= PHOTO_LARGE[1]
    assert 0.17 < np.mean(sizes < PHOTO_LARGE[0]) < 0.23  # about one photo in five is small
    assert np.mean(sizes < 0.15) > 0.05


def test_all_small_on_request() -> None:
    rng = np.random.default_rng(0)
    sizes = np.array([sample_photo_size(rng, small_p=1.0) for _ in range(500)])
    assert PHOTO_SMALL[0] <= sizes.min() and sizes.max() <= PHOTO_SMALL[1]
