"""Near-duplicate detection with perceptual hashes, so one watch photographed twice cannot sit on both sides of a split.

`phash` is the DCT hash (32x32 grayscale -> 8x8 low frequencies > their median), a 64-bit integer that survives
re-encoding, resizing and mild colour changes. `duplicate_groups` links hashes within ``max_distance`` bits
(transitively) through a multi-index (no comparison of all pairs) and numbers the groups deterministically.
"""

from __future__ import annotations

import itertools
import math
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


def duplicate_groups(hashes: Sequence[int], max_distance: int = DEFAULT_MAX_DISTANCE) -> np.ndarray:
    """Group near-identical hashes (Hamming distance ``<= max_distance``, linked transitively).

    Candidates come from a multi-index: the 64 bits are cut into ``m`` chunks, and two hashes within the radius agree
    exactly on at least ``m - max_distance`` of them (pigeonhole), so sorting by every such combination of chunks
    brings each near pair next to each other; only those pairs are compared. Time grows about linearly with the
    number of hashes (10^6 in seconds) and the groups are exactly those of comparing all pairs.

    Returns:
        ``(N,)`` int64: ``-1`` for an item with no near-duplicate, else its group number. Groups are numbered
        0, 1, ... in the order of their first member, so the result depends only on the hashes and their order.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    h = np.asarray([int(x) for x in hashes], dtype=np.uint64)
    n = len(h)
    if n == 0:
        return np.zeros(0, np.int64)
    unique, inverse = np.unique(h, return_inverse=True)  # identical hashes: one node
    pairs = _near_pairs(unique, max_distance)
    u = len(unique)
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(u, u))
    _, component = connected_components(graph, directed=False)
    labels = component[inverse.reshape(-1)]
    grouped = np.bincount(labels)[labels] > 1
    members = labels[grouped]
    ids, first = np.unique(members, return_index=True)  # each group's first member (within the grouped items)
    number = np.full(labels.max() + 1, -1, np.int64)
    number[ids[np.argsort(first)]] = np.arange(len(ids))  # numbered in the order of their first members
    out = np.full(n, -1, np.int64)
    out[grouped] = number[members]
    return out


def _chunking(n: int, radius: int) -> tuple[int, int]:
    """``(m, k)``: cut 64 bits into ``m`` chunks and require ``k = m - radius`` exact chunk matches, chosen so the
    keys (``k`` chunks) are about as long as ``log2(n)`` bits, balancing sorts against candidate pairs."""
    best = (float("inf"), radius + 1, 1)
    for m in range(radius + 1, min(HASH_BITS, radius + 16) + 1):
        k = m - radius
        key_bits = HASH_BITS * k / m
        combos = math.comb(m, k)
        cost = combos * (n + n * n / 2.0**key_bits)  # sorts + expected candidate pairs
        if cost < best[0]:
            best = (cost, m, k)
    return best[1], best[2]


def _near_pairs(unique: np.ndarray, radius: int) -> np.ndarray:
    """``(P, 2)`` index pairs ``i < j`` of distinct hashes within ``radius`` bits (each pair once)."""
    u = len(unique)
    if u < 2 or radius < 0:
        return np.zeros((0, 2), np.int64)
    m, k = _chunking(u, radius)
    bounds = np.linspace(0, HASH_BITS, m + 1).round().astype(int)
    chunks = [(unique >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1) for lo, hi in itertools.pairwise(bounds)]
    widths = np.diff(bounds)
    found = []
    for combo in itertools.combinations(range(m), k):
        key = np.zeros(u, np.uint64)
        for c in combo:
            key = (key << np.uint64(widths[c])) | chunks[c]
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        for d in range(1, u):  # pairs d apart in the sorted order that share the key
            same = sorted_key[d:] == sorted_key[:-d]
            if not same.any():
                break
            i, j = order[:-d][same], order[d:][same]
            close = np.bitwise_count(unique[i] ^ unique[j]) <= radius
            found.append(np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1)[close])
    if not found:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(found), axis=0)


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
