"""The synthetic watch benchmark: determinism, COCO validity, balance, sizes, and brands told apart by structure."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines import make_watches
from pipelines.watches import (
    DIAL_COLOURS,
    PHOTO_LARGE,
    PHOTO_SMALL,
    SCENE_SIZE,
    STRUCTURE,
    generate,
    make_brands,
    render_photo,
    render_watch,
    sample_photo_size,
    sample_variant,
)

SIZE = (320, 240)
BRANDS, PER_BRAND, SCENES = 3, 5, 6


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("watches")
    generate(out, brands=BRANDS, photos_per_brand=PER_BRAND, scenes=SCENES, seed=0, size=SIZE)
    return out, json.loads((out / "annotations.json").read_text())


def test_same_seed_same_bytes_other_seed_differs(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = dataset
    generate(tmp_path / "again", brands=BRANDS, photos_per_brand=PER_BRAND, scenes=SCENES, seed=0, size=SIZE)
    generate(tmp_path / "other", brands=BRANDS, photos_per_brand=2, scenes=0, seed=1, size=SIZE)
    first, again, other = _files(root), _files(tmp_path / "again"), _files(tmp_path / "other")
    assert first == again
    shared = [name for name in other if name.endswith(".jpg")]
    assert shared and all(other[name] != first[name] for name in shared)


def test_brand_seed_gives_new_photos_of_the_same_brands(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, coco = dataset
    held_out = generate(tmp_path / "test", brands=BRANDS, photos_per_brand=2, seed=5, brand_seed=0, size=SIZE)
    test_coco = json.loads((tmp_path / "test" / "annotations.json").read_text())
    assert test_coco["categories"] == coco["categories"]
    assert held_out["brands"] == [c["name"] for c in coco["categories"]]
    assert test_coco["info"]["brands"] == coco["info"]["brands"] and test_coco["info"]["brand_seed"] == 0
    first, test = _files(root), _files(tmp_path / "test")
    shared = [name for name in test if name.endswith(".jpg")]
    assert shared and all(test[name] != first[name] for name in shared)  # new photos
    other = json.loads(json.dumps(make_brands(BRANDS, seed=5)[0].to_dict()))
    assert other != coco["info"]["brands"][0]  # without brand_seed, seed 5 would define other brands


def test_photo_bytes_do_not_depend_on_generation_order(dataset: tuple[Path, dict]) -> None:
    root, _ = dataset
    specs = make_brands(BRANDS, seed=0)
    rendered = render_photo(specs, brand=2, index=3, seed=0, size=SIZE)
    assert rendered.jpeg == (root / "photos" / specs[2].name / f"{specs[2].name}_0003.jpg").read_bytes()
    assert len(rendered.objects) == 1 and rendered.objects[0]["brand"] == 2


def test_every_file_annotated_and_boxes_inside(dataset: tuple[Path, dict]) -> None:
    root, coco = dataset
    on_disk = {name for name in _files(root) if name.endswith(".jpg")}
    images = {img["id"]: img for img in coco["images"]}
    assert on_disk == {img["file_name"] for img in images.values()}
    assert len(images) == len(coco["images"]) == BRANDS * PER_BRAND + SCENES
    for img in images.values():
        decoded = cv2.imread(str(root / img["file_name"]))
        assert decoded.shape[:2] == (img["height"], img["width"]) == (SIZE[1], SIZE[0])
    ids = [a["id"] for a in coco["annotations"]]
    assert len(set(ids)) == len(ids)
    for ann in coco["annotations"]:
        img = images[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert w > 4 and h > 4 and x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"]
        assert ann["area"] == pytest.approx(w * h, rel=1e-3)
        assert ann["rel_size"] == pytest.approx(max(w, h) / min(SIZE), abs=2e-3)
        assert ann["attributes"]["dial"] in DIAL_COLOURS


def test_categories_are_brands_and_photos_match_their_folder(dataset: tuple[Path, dict]) -> None:
    _, coco = dataset
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    assert sorted(cats) == list(range(1, BRANDS + 1))
    assert list(cats.values()) == [s.name for s in make_brands(BRANDS, seed=0)]
    per_image: dict[int, list[dict]] = {img["id"]: [] for img in coco["images"]}
    for ann in coco["annotations"]:
        per_image[ann["image_id"]].append(ann)
    for img in coco["images"]:
        anns = per_image[img["id"]]
        if img["split"] == "photos":
            assert len(anns) == 1
            assert cats[anns[0]["category_id"]] == img["file_name"].split("/")[1]
        else:
            assert len(anns) == 0 or 2 <= len(anns) <= min(4, BRANDS)
            assert len({a["category_id"] for a in anns}) == len(anns)  # different brands


def test_brands_are_balanced(dataset: tuple[Path, dict]) -> None:
    _, coco = dataset
    photo_ids = {img["id"] for img in coco["images"] if img["split"] == "photos"}
    counts = Counter(a["category_id"] for a in coco["annotations"] if a["image_id"] in photo_ids)
    assert counts == dict.fromkeys(range(1, BRANDS + 1), PER_BRAND)


def test_size_distribution() -> None:
    rng = np.random.default_rng(0)
    sizes = np.array([sample_photo_size(rng) for _ in range(5000)])
    assert PHOTO_SMALL[0] <= sizes.min() and sizes.max() <= PHOTO_LARGE[1]
    assert 0.17 < np.mean(sizes < PHOTO_LARGE[0]) < 0.23  # about one photo in five is small
    assert np.mean(sizes < 0.15) > 0.05


def test_generated_sizes_within_spec(dataset: tuple[Path, dict]) -> None:
    _, coco = dataset
    split = {img["id"]: img["split"] for img in coco["images"]}
    for ann in coco["annotations"]:
        lo, hi = (PHOTO_SMALL[0], PHOTO_LARGE[1]) if split[ann["image_id"]] == "photos" else SCENE_SIZE
        assert lo - 0.01 <= ann["rel_size"] <= hi + 0.01


def test_brands_differ_in_structure_and_share_dial_colours() -> None:
    specs = make_brands(8, seed=0)
    assert specs == make_brands(8, seed=0) and specs != make_brands(8, seed=1)
    assert len({s.name for s in specs}) == 8
    for i, a in enumerate(specs):
        for b in specs[i + 1 :]:
            assert sum(a.structure()[k] != b.structure()[k] for k in STRUCTURE) >= 5
    # colour does not give the brand away: every brand shares a dial colour with another brand
    for a in specs:
        assert any(set(a.dial_colours) & set(b.dial_colours) for b in specs if b is not a)


def test_render_watch_is_premultiplied_and_brand_specific() -> None:
    a, b = make_brands(2, seed=0)
    variant = sample_variant(a, np.random.default_rng(0))
    sprite = render_watch(a, np.random.default_rng(1), variant)
    rgba = sprite.rgba
    assert rgba.dtype == np.uint8 and rgba.shape[2] == 4
    assert (rgba[..., 3] == 0).any() and (rgba[..., 3] == 255).any()
    assert (rgba[..., :3] <= rgba[..., 3:]).all()
    same = render_watch(a, np.random.default_rng(1), variant).rgba
    other = render_watch(b, np.random.default_rng(1), variant).rgba
    assert np.array_equal(rgba, same)
    h, w = min(rgba.shape[0], other.shape[0]), min(rgba.shape[1], other.shape[1])  # case shapes may differ in size
    assert np.abs(rgba[:h, :w].astype(int) - other[:h, :w]).mean() > 5


def test_cli_writes_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    argv = [str(out), "--brands", "2", "--photos-per-brand", "1", "--size", "160x120", "--quiet"]
    assert make_watches.main(argv) == 0
    coco = json.loads((out / "annotations.json").read_text())
    assert len(coco["images"]) == 2
    with pytest.raises(SystemExit):
        make_watches.main(argv)
    assert make_watches.main([*argv, "--overwrite", "--scenes", "1"]) == 0
    assert len(json.loads((out / "annotations.json").read_text())["images"]) == 3
