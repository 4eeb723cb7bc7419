"""Ground truth from the benchmark's COCO file: boxes as Detections, crops, and the recorded catalogue."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from detectcrop.images import read_image

from detectcrop import boxes as bx
from detectcrop.coco import category_id
from detectcrop.crops import CropPolicy
from pipelines.synthetic import (
    find_catalogue,
    generate,
    ground_truth_crops,
    load_ground_truth,
    make_catalogue,
    read_catalogue,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gt")
    generate(out, brands=2, photos_per_brand=3, scenes=4, seed=2, size=(240, 180))
    return out


def test_ground_truth_round_trips_the_coco_boxes(data: Path) -> None:
    coco = json.loads((data / "annotations.json").read_text())
    truth = load_ground_truth(data / "annotations.json")
    assert [gt.file_name for gt in truth] == [im["file_name"] for im in coco["images"]]  # empty scenes included
    names = {c["id"]: c["name"] for c in coco["categories"]}
    for gt, im in zip(truth, coco["images"], strict=True):
        anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        dets = gt.detections
        assert gt.path == data / im["file_name"] and gt.path.is_file() and gt.split == im["split"]
        assert len(dets) == len(anns)
        np.testing.assert_allclose(dets.xywh, np.array([a["bbox"] for a in anns]).reshape(-1, 4), atol=1e-3)
        assert list(dets.data["label"]) == [names[a["category_id"]] for a in anns]
        assert list(dets.data["annotation_id"]) == [a["id"] for a in anns]
        assert (dets.class_ids == category_id("clock")).all() and (dets.scores == 1).all()
    photos = load_ground_truth(data / "annotations.json", split="photos")
    assert len(photos) == 6 and all(gt.detections.data["label"][0] == gt.path.parent.name for gt in photos)


def test_ground_truth_crops_cut_the_boxes(data: Path) -> None:
    truth = load_ground_truth(data / "annotations.json")
    crops = ground_truth_crops(truth)
    assert len(crops) == sum(len(gt.detections) for gt in truth)
    by_file = {gt.file_name: gt for gt in truth}
    for crop in crops:
        gt = by_file[crop.file_name]
        (i,) = np.flatnonzero(gt.detections.data["annotation_id"] == crop.annotation_id)
        expected = bx.to_int_pixels(gt.detections.xyxy[i : i + 1], (gt.height, gt.width))[0]
        np.testing.assert_array_equal(crop.box, expected)
        x1, y1, x2, y2 = expected
        np.testing.assert_array_equal(crop.image, read_image(gt.path)[y1:y2, x1:x2])
        assert crop.label == gt.detections.data["label"][i]
    padded = ground_truth_crops(truth[:1], CropPolicy(pad=0.1, min_size=0))[0]
    assert padded.image.shape[0] > crops[0].image.shape[0] and padded.image.shape[1] > crops[0].image.shape[1]


def test_annotations_record_the_catalogue(data: Path) -> None:
    catalogue = read_catalogue(data / "annotations.json")
    assert catalogue == make_catalogue()
    coco = json.loads((data / "annotations.json").read_text())
    assert coco["catalogue"]["fingerprint"] == catalogue.fingerprint and coco["catalogue"]["seed"] == 0
    del coco["catalogue"]
    assert read_catalogue(coco) is None  # written before catalogues were recorded


def test_find_catalogue_follows_build_crops_json_to_the_benchmark(tmp_path: Path) -> None:
    generate(tmp_path / "bench", brands=2, photos_per_brand=1, seed=0, size=(96, 72))
    crops = tmp_path / "crops"
    crops.mkdir()
    assert find_catalogue(crops) is None
    (crops / "build_crops.json").write_text(json.dumps({"input": str(tmp_path / "bench" / "photos")}))
    expected = read_catalogue(tmp_path / "bench" / "annotations.json")
    assert expected is not None and find_catalogue(crops) == expected
    assert find_catalogue(tmp_path / "bench") == find_catalogue(tmp_path / "bench" / "photos") == expected
