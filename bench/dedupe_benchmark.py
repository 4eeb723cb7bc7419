"""Near-duplicate grouping: the multi-index (`detectcrop.dedupe.duplicate_groups`) vs comparing all pairs.

    python -m bench.dedupe_benchmark [--sizes 10000 100000 1000000] [--all-pairs-up-to 100000]

Hashes: random 64-bit values with 10% near copies (0-8 bits flipped, some chained), radius 6. Both methods run on the
same hashes; the groups must be identical wherever both run. All pairs is quadratic: above ``--all-pairs-up-to`` its
time is extrapolated from the largest measured size (marked as such).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

from detectcrop.dedupe import DEFAULT_MAX_DISTANCE, duplicate_groups


def make_hashes(n: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    n_copies = n // 10
    src = rng.integers(0, n - n_copies, n_copies)
    flips = np.zeros(n_copies, np.uint64)
    for _ in range(8):
        bit = rng.integers(0, 64, n_copies).astype(np.uint64)
        flips ^= np.where(rng.random(n_copies) < 0.5, np.uint64(1) << bit, np.uint64(0))
    hashes[n - n_copies :] = hashes[src] ^ flips
    return [int(v) for v in hashes[rng.permutation(n)]]


def all_pairs_groups(hashes: Sequence[int], radius: int) -> np.ndarray:
    """The previous method: every hash against every other, in blocks of about 32 MB, then union-find."""
    h = np.asarray(hashes, dtype=np.uint64)
    n = len(h)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    chunk = max(1, (1 << 22) // max(n, 1))
    for start in range(0, n, chunk):
        rows, cols = np.nonzero(np.bitwise_count(h[start : start + chunk, None] ^ h[None, :]) <= radius)
        for i, j in zip(rows + start, cols, strict=True):
            if j > i:
                ri, rj = find(int(i)), find(int(j))
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([find(i) for i in range(n)])
    counts = np.bincount(roots, minlength=n)
    out, numbering = np.full(n, -1, np.int64), {}
    for i in range(n):
        if counts[roots[i]] > 1:
            out[i] = numbering.setdefault(int(roots[i]), len(numbering))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--all-pairs-up-to", type=int, default=100_000)
    args = parser.parse_args(argv)
    radius = DEFAULT_MAX_DISTANCE
    print(f"radius {radius} bits; 10% near copies\n")
    print("| hashes | multi-index (s) | all pairs (s) | groups | same groups |")
    print("|---|---|---|---|---|")
    last: tuple[int, float] | None = None
    for n in args.sizes:
        hashes = make_hashes(n)
        t = time.perf_counter()
        new = duplicate_groups(hashes, radius)
        t_new = time.perf_counter() - t
        if n <= args.all_pairs_up_to:
            t = time.perf_counter()
            old = all_pairs_groups(hashes, radius)
            t_old = time.perf_counter() - t
            last = (n, t_old)
            old_text, same = f"{t_old:.2f}", str(bool(np.array_equal(old, new)))
        else:
            assert last is not None
            old_text, same = f"~{last[1] * (n / last[0]) ** 2:,.0f} (extrapolated, n^2)", "not run"
        print(f"| {n:,} | {t_new:.2f} | {old_text} | {int(new.max()) + 1:,} | {same} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
