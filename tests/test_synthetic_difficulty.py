"""The hard variant of the synthetic benchmark: its own fixed catalogue, brands a few fine details apart; the normal
variant's bytes unchanged."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.synthetic import STRUCTURE, generate, make_catalogue, read_catalogue, sample_variant
from pipelines.synthetic.difficulty import (
    HARD_BRAND_DETAILS,
    HARD_BRANDS,
    HARD_FAMILY_DETAILS,
    HARD_FAMILY_SIZE,
    HARD_LOGO_WORD,
    HARD_MIN_DIFFERENCES,
    HARD_PHOTO_DETAILS,
    sample_hard_watch,
)

SIZE = (160, 120)
#: sha256 over (relative path, bytes) of every file of ``generate(brands=3, photos_per_brand=2, scenes=2, seed=0,
#: size=(160, 120))``, computed with the generator before the hard variant existed (OpenCV of requirements/lock.txt).
NORMAL_SHA256 = "ffd532fb59ceada29e73fccd4ff58341bdbeef6d82b05c7ae5a924b510fcbade"


def _tree_sha256(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_normal_output_is_byte_identical_to_before(tmp_path: Path) -> None:
    generate(tmp_path, brands=3, photos_per_brand=2, scenes=2, seed=0, size=SIZE)
    assert "difficulty" not in json.loads((tmp_path / "annotations.json").read_text())["catalogue"]
    assert _tree_sha256(tmp_path) == NORMAL_SHA256


def test_hard_catalogue_is_fixed_whatever_the_photo_seed(tmp_path: Path) -> None:
    for seed in (0, 1):
        generate(tmp_path / f"s{seed}", brands=3, photos_per_brand=1, scenes=1, seed=seed, size=SIZE,
                 difficulty="hard")  # fmt: skip
    first, second = (read_catalogue(tmp_path / f"s{s}" / "annotations.json") for s in (0, 1))
    assert first == second == make_catalogue(difficulty="hard")
    assert first.difficulty == "hard" and len(first.brands) == HARD_BRANDS
    assert first.fingerprint != make_catalogue().fingerprint
    assert _tree_sha256(tmp_path / "s0" / "photos") != _tree_sha256(tmp_path / "s1" / "photos")  # new photos
    with pytest.raises(ValueError, match="brands must be in"):
        generate(tmp_path / "too_many", brands=HARD_BRANDS + 1, photos_per_brand=1, size=SIZE, difficulty="hard")
    with pytest.raises(ValueError, match="difficulty"):
        make_catalogue(difficulty="extreme")


def test_hard_brands_differ_in_a_few_fine_details_only() -> None:
    brands = [b.structure() for b in make_catalogue(difficulty="hard").brands]
    gaps = {(i, j): sum(a[k] != b[k] for k in STRUCTURE) for (i, a), (j, b) in
            itertools.combinations(enumerate(brands), 2)}  # fmt: skip
    assert min(gaps.values()) >= HARD_MIN_DIFFERENCES
    for i in range(1, len(brands)):  # every brand has a near twin: 2-3 details apart
        assert min(gaps[tuple(sorted((i, j)))] for j in range(len(brands)) if j != i) <= 3
    for key in STRUCTURE:  # the fine details and the families' case and bezel tell brands apart, nothing else
        assert (len({b[key] for b in brands}) > 1) == (key in HARD_BRAND_DETAILS + HARD_FAMILY_DETAILS)
    for start in range(0, len(brands), HARD_FAMILY_SIZE):
        family = brands[start : start + HARD_FAMILY_SIZE]
        assert len({tuple(b[k] for k in HARD_FAMILY_DETAILS) for b in family}) == 1


def test_hard_watches_vary_within_a_brand_and_share_one_dial_word() -> None:
    spec = make_catalogue(difficulty="hard").brands[0]
    rng = np.random.default_rng(0)
    drawn = [sample_hard_watch(spec, rng) for _ in range(30)]
    assert all(v.logo_text == HARD_LOGO_WORD for _, v in drawn)
    for key in HARD_PHOTO_DETAILS:
        assert len({getattr(s, key) for s, _ in drawn}) > 1, key
    for key in HARD_BRAND_DETAILS:
        assert {getattr(s, key) for s, _ in drawn} == {getattr(spec, key)}
    assert sample_variant(spec, np.random.default_rng(0)).logo_text is None  # normal watches print the brand
