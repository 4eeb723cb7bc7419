"""The benchmark's COCO file: writing it, reading its ground truth back as `detectcrop.Detections`, cutting
ground-truth crops, and reading the brand catalogue it records.

    >>> from pipelines.synthetic.coco import load_ground_truth, ground_truth_crops
    >>> photos = load_ground_truth("watches/annotations.json", split="photos")
    >>> crops = ground_truth_crops(photos)            # [GroundTruthCrop(image, label, ...), ...]
    >>> photos[0].detections.data["label"]            # brand names; xyxy in pixels
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detectcrop.coco import category_id, coco_annotation
from detectcrop.crops import CropPolicy, crop_image, select_crops
from detectcrop.detections import Detections
from pipelines.synthetic.brands import BrandSpec, Catalogue

#: The COCO (detector) category of every watch: a detector has no "watch" class, it finds clocks.
WATCH_COCO_CATEGORY = "clock"
DESCRIPTION = "Synthetic fine-grained watch benchmark (pipelines.make_watches)"


def build_coco(
    catalogue: Catalogue,
    specs: Sequence[BrandSpec],
    images: Iterable[tuple[str, str, str, Sequence[dict[str, Any]]]],
    size: tuple[int, int],
    seed: int,
) -> dict[str, Any]:
    """The COCO dict of a dataset whose ``images`` are ``(file_name, split, background, objects)`` in order.

    Categories are the brands (``specs``, ids from 1); each annotation also has ``rel_size`` (the box's longer side
    over the image's shorter side) and ``attributes``. ``catalogue`` holds every brand's definition and fingerprint.
    """
    width, height = size
    coco_images, annotations = [], []
    for image_id, (file_name, split, background, objects) in enumerate(images, start=1):
        coco_images.append({"id": image_id, "file_name": file_name, "width": width, "height": height, "split": split,
                            "background": background})  # fmt: skip
        for obj in objects:
            x, y, w, h = obj["bbox"]
            annotations.append(coco_annotation(len(annotations) + 1, image_id, obj["brand"] + 1, (x, y, x + w, y + h),
                                               rel_size=obj["rel_size"], attributes=obj["attributes"]))
    categories = [
        {"id": i + 1, "name": s.name, "supercategory": "watch", "spec": s.structure()} for i, s in enumerate(specs)
    ]
    info = {"description": DESCRIPTION, "seed": seed, "brand_seed": catalogue.seed}
    return {"info": info, "catalogue": catalogue.to_dict(), "images": coco_images, "annotations": annotations,
            "categories": categories}  # fmt: skip


def _load(annotations: str | os.PathLike[str] | dict[str, Any]) -> dict[str, Any]:
    if isinstance(annotations, dict):
        return annotations
    return json.loads(Path(annotations).read_text(encoding="utf-8"))


def read_catalogue(annotations: str | os.PathLike[str] | dict[str, Any]) -> Catalogue | None:
    """The brand catalogue recorded in a benchmark's annotations.json (``None`` for files that record none).

    Compare ``fingerprint`` (or use `Catalogue.differences`) to check that a test set shows the training set's brands.
    """
    coco = _load(annotations)
    return Catalogue.from_dict(coco["catalogue"]) if "catalogue" in coco else None


def find_catalogue(folder: str | os.PathLike[str]) -> Catalogue | None:
    """The catalogue of the benchmark a folder was made from, or ``None`` when none is found.

    ``folder`` may be a benchmark folder (holding ``annotations.json``), one of its subfolders (``photos/``), or a
    crop folder written by ``build_crops`` from either: its ``build_crops.json`` records the input folder, which is
    searched, then that folder's parent (``make_watches OUT`` + ``build_crops --input OUT/photos``).
    """
    folder = Path(folder)
    candidates = [folder, folder.parent]
    config = folder / "build_crops.json"
    if config.is_file():
        try:
            source = Path(json.loads(config.read_text(encoding="utf-8"))["input"])
        except (ValueError, KeyError, TypeError):
            source = None
        if source is not None:
            candidates = [source, source.parent]
    for candidate in candidates:
        annotations = candidate / "annotations.json"
        if annotations.is_file():
            try:
                return read_catalogue(annotations)
            except (ValueError, KeyError, TypeError):
                return None
    return None


@dataclass
class GroundTruthImage:
    """One image of the benchmark and its watches.

    ``detections``: ground-truth boxes in pixels (score 1, COCO class "clock"), with ``data["label"]`` (brand name),
    ``data["category_id"]`` (the file's brand category), ``data["annotation_id"]`` and ``data["rel_size"]``.
    """

    image_id: int
    file_name: str
    path: Path
    width: int
    height: int
    split: str
    background: str
    detections: Detections


def load_ground_truth(
    annotations_json: str | os.PathLike[str] | dict[str, Any],
    split: str | None = None,
    root: str | os.PathLike[str] | None = None,
) -> list[GroundTruthImage]:
    """Every image of a COCO file (in file order, also those without a watch), optionally of one ``split``
    ("photos" or "scenes"); ``path`` is ``root`` (default: the file's folder) / ``file_name``."""
    if root is None and isinstance(annotations_json, dict):
        raise ValueError("pass root= (the dataset folder) with an annotations dict")
    coco = _load(annotations_json)
    root = Path(annotations_json).parent if root is None else Path(root)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    per_image: dict[int, list[dict[str, Any]]] = {im["id"]: [] for im in coco["images"]}
    for ann in coco["annotations"]:
        per_image[ann["image_id"]].append(ann)
    clock = category_id(WATCH_COCO_CATEGORY)
    records = []
    for im in coco["images"]:
        image_split = im.get("split", im["file_name"].split("/")[0])
        if split is not None and image_split != split:
            continue
        anns = per_image[im["id"]]
        data = {
            "label": np.array([names[a["category_id"]] for a in anns], dtype=object),
            "category_id": np.array([a["category_id"] for a in anns], dtype=np.int64),
            "annotation_id": np.array([a["id"] for a in anns], dtype=np.int64),
            "rel_size": np.array([a.get("rel_size", np.nan) for a in anns], dtype=np.float64),
        }
        xywh = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        dets = Detections.from_xywh(xywh, np.ones(len(anns)), np.full(len(anns), clock), data=data)
        records.append(GroundTruthImage(im["id"], im["file_name"], root / im["file_name"], im["width"],
                                        im["height"], image_split, im.get("background", ""), dets))  # fmt: skip
    return records


@dataclass
class GroundTruthCrop:
    """The pixels of one ground-truth watch (``box``: integer ``x1, y1, x2, y2`` in its image)."""

    image: np.ndarray
    label: str
    category_id: int
    annotation_id: int
    file_name: str
    box: np.ndarray


def ground_truth_crops(
    records: Iterable[GroundTruthImage], policy: CropPolicy | None = None
) -> list[GroundTruthCrop]:
    """Cut every ground-truth watch of ``records`` from its image (decoded once) under ``policy`` (default: the box
    itself, rounded outwards to whole pixels); in record order, then annotation order."""
    from detectcrop.io.images import read_image

    policy = CropPolicy(pad=0.0, min_size=0) if policy is None else policy
    crops = []
    for rec in records:
        if not len(rec.detections):
            continue
        pixels = read_image(rec.path)
        kept, boxes = select_crops(rec.detections, pixels.shape[:2], policy)
        for i, box in enumerate(boxes):
            crops.append(GroundTruthCrop(crop_image(pixels, box), str(kept.data["label"][i]),
                                         int(kept.data["category_id"][i]), int(kept.data["annotation_id"][i]),
                                         rec.file_name, box))  # fmt: skip
    return crops
