"""The hard variant of the synthetic benchmark: its own fixed catalogue, brands a few fine details apart; the normal
variant unchanged (deterministic, and equal to its recorded summary: files, annotations, pixel statistics)."""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
from pathlib import Path

import cv2
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
NORMAL = {"brands": 3, "photos_per_brand": 2, "scenes": 2, "seed": 0, "size": SIZE}
#: `_summary` of ``generate(**NORMAL)``, recorded with the generator before the hard variant existed (its bytes then
#: hashed the same as now). Record it again after a deliberate change: ``python tests/test_synthetic_difficulty.py``.
NORMAL_SUMMARY = Path(__file__).parent / "data" / "synthetic_normal_summary.json"
GRID = 8  # pixel statistics: the mean colour of each cell of a GRID x GRID grid, each channel's mean and std, and
#: ``detail``, the mean absolute difference of neighbouring pixels (noise, blur, JPEG quality).
#: Build differences (OpenCV's warps and blurs, the JPEG codec) move a pixel by a level or two: even decoding and
#: encoding every photo again with Pillow moves a cell by 1.3 at most, ``std`` by 0.6, ``detail`` by 0.3. A change to
#: what the generator draws or where moves a cell or a box, a label or an attribute; more sensor noise or another JPEG
#: quality moves ``detail`` by 0.7 to 4.
PIXEL_TOLERANCE = {"cells": 3.0, "mean": 1.0, "std": 1.5, "detail": 0.5}
NUMBER_TOLERANCE = 0.02  # the annotations' floats are rounded to 2 decimals or finer: a rounding flip at most


def _tree_sha256(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _summary(root: Path) -> dict:
    """What the benchmark at ``root`` is, in terms that hold across OpenCV, Pillow and numpy builds: its files, its
    annotations.json, and per image its size and pixel statistics (see `GRID`)."""
    images = {}
    for path in sorted(root.rglob("*.jpg")):
        pixels = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        h, w = pixels.shape[:2]
        cells = pixels[: h - h % GRID, : w - w % GRID].astype(np.float64)
        cells = cells.reshape(GRID, h // GRID, GRID, w // GRID, 3).mean(axis=(1, 3))
        images[path.relative_to(root).as_posix()] = {"size": [w, h], "cells": np.round(cells, 1).tolist(),
                                                     "mean": np.round(pixels.mean(axis=(0, 1)), 2).tolist(),
                                                     "std": np.round(pixels.std(axis=(0, 1)), 2).tolist(),
                                                     "detail": round(float(np.abs(np.diff(pixels.astype(np.int16),
                                                                                          axis=1)).mean()), 3)}
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return {"files": files, "annotations": json.loads((root / "annotations.json").read_text()), "images": images}


def _assert_same_annotations(got, want, where: str = "annotations") -> None:
    """Equal, but for floats within `NUMBER_TOLERANCE`."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), where
        for key in want:
            _assert_same_annotations(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            _assert_same_annotations(a, b, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=NUMBER_TOLERANCE), where
    else:
        assert got == want and type(got) is type(want), where


def test_normal_output_is_deterministic_and_matches_its_recorded_summary(tmp_path: Path) -> None:
    generate(tmp_path / "a", **NORMAL)
    generate(tmp_path / "b", **NORMAL)
    assert _tree_sha256(tmp_path / "a") == _tree_sha256(tmp_path / "b")  # same arguments, same bytes
    assert "difficulty" not in json.loads((tmp_path / "a" / "annotations.json").read_text())["catalogue"]
    got, want = _summary(tmp_path / "a"), json.loads(NORMAL_SUMMARY.read_text())
    assert got["files"] == want["files"]
    _assert_same_annotations(got["annotations"], want["annotations"])  # boxes, labels, attributes, the catalogue
    assert sorted(got["images"]) == sorted(want["images"])
    for name, stats in want["images"].items():
        assert got["images"][name]["size"] == stats["size"], name
        for key, tolerance in PIXEL_TOLERANCE.items():
            np.testing.assert_allclose(got["images"][name][key], stats[key], rtol=0, atol=tolerance, err_msg=name)


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


if __name__ == "__main__":  # record NORMAL_SUMMARY again (after a deliberate change to the normal variant)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), **NORMAL)
        NORMAL_SUMMARY.write_text(json.dumps(_summary(Path(tmp)), indent=1, sort_keys=True) + "\n")
    print(f"wrote {NORMAL_SUMMARY}", file=sys.stderr)
