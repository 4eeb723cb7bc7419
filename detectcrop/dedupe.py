"""Near-duplicate detection with perceptual hashes, so one watch photographed twice cannot sit on both sides of a split.

`phash` is the DCT hash (32x32 grayscale -> 8x8 low frequencies > their median), a 64-bit integer that survives
re-encoding, resizing and mild colour changes. `duplicate_groups` links hashes within ``max_distance`` bits
(transitively) and numbers the groups deterministically.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

HASH_BITS = 64
#: Default Hamming radius for "the same photo" (out of 64 bits).
DEFAULT_MAX_DISTANCE = 6


def phash(image: np.ndarray) -> int:
    """64-bit DCT perceptual hash of an RGB or grayscale uint8 image."""
    img = np.asarray(image)
    if img.size == 0:
        raise ValueError("cannot hash an empty image")
    if img.ndim == 3:
        img = cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(img.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8].reshape(-1)
    bits = low > np.median(low[1:])  # the DC term would dominate the median
    return int(np.packbits(bits).view(">u8")[0])


def hash_to_hex(h: int) -> str:
    return f"{int(h):016x}"


def hex_to_hash(text: str) -> int:
    return int(text, 16)


def hamming(a: int, b: int) -> int:
    return (int(a) ^ int(b)).bit_count()


def duplicate_groups(
    hashes: Sequence[int], max_distance: int = DEFAULT_MAX_DISTANCE, chunk: int | None = None
) -> np.ndarray:
    """Group near-identical hashes (Hamming distance ``<= max_distance``, linked transitively).

    Returns:
        ``(N,)`` int64: ``-1`` for an item with no near-duplicate, else its group number. Groups are numbered
        0, 1, ... in the order of their first member, so the result depends only on the hashes and their order.
    """
    h = np.asarray([int(x) for x in hashes], dtype=np.uint64)
    n = len(h)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    chunk = chunk or max(1, (1 << 22) // max(n, 1))  # about 32 MB of distances per block, whatever n
    for start in range(0, n, chunk):
        block = h[start : start + chunk]
        dist = np.bitwise_count(block[:, None] ^ h[None, :])
        rows, cols = np.nonzero(dist <= max_distance)
        for i, j in zip(rows + start, cols, strict=True):
            if j <= i:
                continue
            ri, rj = find(int(i)), find(int(j))
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([find(i) for i in range(n)], dtype=np.int64)
    counts = np.bincount(roots, minlength=n) if n else np.zeros(0, np.int64)
    groups = np.full(n, -1, dtype=np.int64)
    numbering: dict[int, int] = {}
    for i in range(n):
        r = int(roots[i])
        if counts[r] > 1:
            groups[i] = numbering.setdefault(r, len(numbering))
    return groups


def keep_mask(groups: np.ndarray) -> np.ndarray:
    """True for items to keep when dropping duplicates: unique items and the first member of each group."""
    groups = np.asarray(groups)
    keep = groups < 0
    seen: set[int] = set()
    for i, g in enumerate(groups):
        if g >= 0 and int(g) not in seen:
            seen.add(int(g))
            keep[i] = True
    return keep
