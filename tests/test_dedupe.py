from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from detectcrop.dedupe import duplicate_groups, hamming, hash_to_hex, hex_to_hash, keep_mask, phash


def _jpeg_round_trip(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def test_phash_survives_resize_recompression_and_brightness():
    img = data.astronaut()
    h = phash(img)
    assert hamming(h, phash(cv2.resize(img, (200, 170), interpolation=cv2.INTER_AREA))) <= 4
    assert hamming(h, phash(_jpeg_round_trip(img, 60))) <= 4
    assert hamming(h, phash(np.clip(img.astype(int) + 20, 0, 255).astype(np.uint8))) <= 4
    assert hamming(h, phash(img[..., 0])) <= 8  # grayscale input works


def test_phash_separates_different_photos():
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), np.dstack([data.camera()] * 3)]
    hashes = [phash(p) for p in photos]
    dists = [hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1 :]]
    assert min(dists) > 12
    with pytest.raises(ValueError):
        phash(np.zeros((0, 0, 3), np.uint8))


def test_hex_round_trip():
    h = phash(data.coffee())
    assert len(hash_to_hex(h)) == 16 and hex_to_hash(hash_to_hex(h)) == h


def test_groups_are_transitive_and_numbered_by_first_member():
    base = 0b1111_0000
    hashes = [base ^ (1 << 40), 0xFFFF_0000_0000, base, base ^ 0b11, 0xFFFF_0000_0000 ^ 1, 12345 << 20]
    groups = duplicate_groups(hashes, max_distance=2)
    # 0-2 at distance 1, 2-3 at 2, 0-3 at 3: one group by transitivity
    assert groups.tolist() == [0, 1, 0, 0, 1, -1]
    assert keep_mask(groups).tolist() == [True, True, False, False, False, True]
    assert duplicate_groups([]).tolist() == []


def test_same_photo_twice_is_one_group():
    a, b = data.astronaut(), data.coffee()
    hashes = [phash(x) for x in (a, b, _jpeg_round_trip(a, 80), cv2.resize(b, (300, 200)))]
    assert duplicate_groups(hashes).tolist() == [0, 1, 0, 1]


def _all_pairs_groups(hashes: list[int], radius: int) -> list[int]:
    """The reference: compare every pair, union-find, number groups by first member."""
    parent = list(range(len(hashes)))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(hashes)):
        for j in range(i + 1, len(hashes)):
            if hamming(hashes[i], hashes[j]) <= radius:
                parent[max(find(i), find(j))] = min(find(i), find(j))
    roots = [find(i) for i in range(len(hashes))]
    numbering: dict[int, int] = {}
    return [numbering.setdefault(r, len(numbering)) if roots.count(r) > 1 else -1 for r in roots]


@pytest.mark.parametrize(("radius", "seed"), [(0, 0), (3, 1), (6, 2), (10, 3)])
def test_multi_index_groups_equal_all_pairs(radius, seed):
    rng = np.random.default_rng(seed)
    base = [int(v) for v in rng.integers(0, 2**63, 300, dtype=np.int64)]
    hashes = list(base)
    for _ in range(300):  # near copies at every distance around the radius, some chained, some exact
        src = hashes[int(rng.integers(len(hashes)))]
        flips = rng.choice(64, int(rng.integers(0, radius + 3)), replace=False)
        hashes.append(src ^ sum(1 << int(b) for b in flips))
    hashes = [hashes[i] for i in rng.permutation(len(hashes))]
    got = duplicate_groups(hashes, max_distance=radius).tolist()
    assert got == _all_pairs_groups(hashes, radius)
    assert max(got) > 10  # the data holds groups: the comparison is not between two empty answers
