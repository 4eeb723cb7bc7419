"""The synthetic watch benchmark on disk: determinism, COCO validity, balance, sizes, brands fixed by name."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import pytest

from pipelines.synthetic import generate, make_brands, read_catalogue
from pipelines.synthetic.generate import JobKind, plan_jobs
from pipelines.synthetic.palette import DIAL_COLOURS
from pipelines.synthetic.scenes import PHOTO_LARGE, PHOTO_SMALL, SCENE_SIZE, render_photo

SIZE = (320, 240)
BRANDS, PER_BRAND, SCENES = 3, 5, 6


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("watches")
    generate(out, brands=BRANDS, photos_per_brand=PER_BRAND, scenes=SCENES, seed=0, size=SIZE)
    return out, json.loads((out / "annotations.json").read_text())


def test_same_seed_same_bytes_whatever_the_workers_other_seed_differs(dataset: tuple[Path, dict], tmp_path: Path):
    root, _ = dataset
    generate(tmp_path / "again", brands=BRANDS, photos_per_brand=PER_BRAND, scenes=SCENES, seed=0, size=SIZE,
             workers=2)  # fmt: skip
    generate(tmp_path / "other", brands=BRANDS, photos_per_brand=2, scenes=0, seed=1, size=SIZE)
    first, again, other = _files(root), _files(tmp_path / "again"), _files(tmp_path / "other")
    assert first == again
    shared = [name for name in other if name.endswith(".jpg")]
    assert shared and all(other[name] != first[name] for name in shared)


def test_another_seed_and_brand_count_show_the_same_brands(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, coco = dataset
    held_out = generate(tmp_path / "test", brands=BRANDS - 1, photos_per_brand=2, seed=5, size=SIZE)
    test_coco = json.loads((tmp_path / "test" / "annotations.json").read_text())
    assert test_coco["categories"] == coco["categories"][: BRANDS - 1]  # same names, same designs
    assert held_out["brands"] == [c["name"] for c in coco["categories"][: BRANDS - 1]]
    assert read_catalogue(tmp_path / "test" / "annotations.json") == read_catalogue(root / "annotations.json")
    assert held_out["catalogue"]["fingerprint"] == coco["catalogue"]["fingerprint"]
    first, test = _files(root), _files(tmp_path / "test")
    shared = [name for name in test if name.endswith(".jpg")]
    assert shared and all(test[name] != first[name] for name in shared)  # new photos


def test_brand_seed_draws_new_designs(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    _, coco = dataset
    generate(tmp_path / "new", brands=BRANDS, photos_per_brand=1, seed=0, brand_seed=1, size=SIZE)
    new = json.loads((tmp_path / "new" / "annotations.json").read_text())
    assert [c["name"] for c in new["categories"]] == [c["name"] for c in coco["categories"]]
    assert new["catalogue"]["fingerprint"] != coco["catalogue"]["fingerprint"]
    assert read_catalogue(new).differences(read_catalogue(coco))
    assert new["info"]["brand_seed"] == 1 and coco["info"]["brand_seed"] == 0


def test_photo_bytes_do_not_depend_on_generation_order(dataset: tuple[Path, dict]) -> None:
    root, _ = dataset
    specs = make_brands(BRANDS)
    rendered = render_photo(specs, brand=2, index=3, seed=0, size=SIZE)
    assert rendered.jpeg == (root / "photos" / specs[2].name / f"{specs[2].name}_0003.jpg").read_bytes()
    assert len(rendered.objects) == 1 and rendered.objects[0]["brand"] == 2


def test_job_kinds_name_folders_and_splits(dataset: tuple[Path, dict]) -> None:
    _, coco = dataset
    jobs = plan_jobs(make_brands(BRANDS), PER_BRAND, SCENES)
    assert [j.file_name for j in jobs] == [img["file_name"] for img in coco["images"]]
    assert [j.kind.value for j in jobs] == [img["split"] for img in coco["images"]]
    assert all(j.file_name.startswith(j.kind.value + "/") for j in jobs)
    assert Counter(j.kind for j in jobs) == {JobKind.PHOTO: BRANDS * PER_BRAND, JobKind.SCENE: SCENES}


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
    assert list(cats.values()) == [s.name for s in make_brands(BRANDS)]
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


def test_generated_sizes_within_spec(dataset: tuple[Path, dict]) -> None:
    _, coco = dataset
    split = {img["id"]: img["split"] for img in coco["images"]}
    for ann in coco["annotations"]:
        lo, hi = (PHOTO_SMALL[0], PHOTO_LARGE[1]) if split[ann["image_id"]] == "photos" else SCENE_SIZE
        assert lo - 0.01 <= ann["rel_size"] <= hi + 0.01


def test_refuses_to_overwrite_and_checks_arguments(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = dataset
    with pytest.raises(FileExistsError):
        generate(root, brands=1, photos_per_brand=1, size=SIZE)
    mine = tmp_path / "project"
    (mine / "photos" / "vacation").mkdir(parents=True)
    (mine / "photos" / "vacation" / "IMG_0001.jpg").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="not a watch dataset"):  # not one made here: never removed
        generate(mine, brands=1, photos_per_brand=1, size=SIZE, overwrite=True)
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "photos").symlink_to(mine / "photos")
    with pytest.raises(FileExistsError, match="symbolic link"):
        generate(linked, brands=1, photos_per_brand=1, size=SIZE, overwrite=True)
    assert (mine / "photos" / "vacation" / "IMG_0001.jpg").read_bytes() == b"precious"
    with pytest.raises(ValueError, match="small_photo_fraction"):
        generate(root / "x", brands=1, photos_per_brand=1, size=SIZE, small_photo_fraction=2)
