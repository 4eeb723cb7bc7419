"""A label output's images keyed to a ground-truth COCO file: image matching and the COCO *results* list.

Matching rule (one for every tool that compares ``predictions.csv`` with ground truth): an image's name (relative to
the labeled folder) names the ground-truth image whose ``file_name`` is ``image_prefix + image``. Without a prefix,
an image matches the ``file_name`` equal to it or, failing that, the one ending in ``"/" + image`` (the labeled folder
is a subfolder of the ground truth's root, e.g. ``scenes/``); a name that two ``file_name`` s end in is an error (pass
``--image-prefix``). Labeled images with no ground-truth entry are left out of the evaluation and counted.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detectcrop.coco import coco_annotation
from pipelines.results import ImageResult, as_results, read_results

logger = logging.getLogger(__name__)

RESULTS_GT_JSON = "results.coco-gt.json"
#: The fields of a COCO detection result (``COCO.loadRes`` adds ``id``, ``area`` and ``iscrowd`` itself).
RESULT_KEYS = ("image_id", "category_id", "bbox", "score")


def load_coco(coco_gt: dict[str, Any] | str | os.PathLike) -> dict[str, Any]:
    """A COCO ground-truth dict (given, or read from its JSON path), checked: ``images``, ``annotations`` and
    ``categories`` lists with integer ids, unique file names and category names, four-number boxes (``area`` and
    ``iscrowd`` filled in where missing); a ``ValueError`` naming the file and the problem otherwise."""
    where = "the ground truth" if isinstance(coco_gt, dict) else str(coco_gt)
    if not isinstance(coco_gt, dict):
        try:
            coco_gt = json.loads(Path(coco_gt).read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{where} is not JSON: {exc}") from exc
    if not isinstance(coco_gt, dict) or not all(isinstance(coco_gt.get(k), list)
                                                for k in ("images", "annotations", "categories")):
        raise ValueError(f"{where} is not COCO ground truth (a JSON object with images, annotations and categories "
                         "lists; a results file is a list)")
    _check_entries(coco_gt, where)
    return coco_gt


def _check_entries(coco: dict[str, Any], where: str) -> None:
    def bad(what: str) -> ValueError:
        return ValueError(f"{where}: {what}")

    images, categories = coco["images"], coco["categories"]
    if not all(isinstance(i, dict) and type(i.get("id")) is int and isinstance(i.get("file_name"), str)
               for i in images):
        raise bad("every image needs an integer id and a file_name")
    if not all(isinstance(c, dict) and type(c.get("id")) is int and isinstance(c.get("name"), str)
               for c in categories):
        raise bad("every category needs an integer id and a name")
    listed = {"image id": [i["id"] for i in images], "file_name": [i["file_name"] for i in images],
              "category id": [c["id"] for c in categories], "category name": [c["name"] for c in categories]}
    for key, values in listed.items():
        twice = sorted((v for v, n in Counter(values).items() if n > 1), key=str)
        if twice:
            raise bad(f"the {key} {twice[0]!r} appears more than once")
    image_ids, category_ids = {i["id"] for i in images}, {c["id"] for c in categories}
    for a in coco["annotations"]:
        box = a.get("bbox") if isinstance(a, dict) else None
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box)):
            raise bad(f"annotation {a.get('id') if isinstance(a, dict) else a!r} needs a bbox of four numbers")
        if a.get("image_id") not in image_ids or a.get("category_id") not in category_ids:
            raise bad(f"annotation {a.get('id')!r} names an image or category that is not listed")
        a.setdefault("area", float(box[2] * box[3]))
        a.setdefault("iscrowd", 0)
    if not coco["annotations"]:
        logger.warning("%s has no annotations: every prediction will count as a false positive", where)


def match_images(rels: Iterable[str], coco_gt: dict[str, Any], image_prefix: str | None = None) -> dict[str, int]:
    """The ground-truth image id of each labeled image name that has one (see the module's matching rule)."""
    by_name = {im["file_name"]: im["id"] for im in coco_gt["images"]}
    matched: dict[str, int] = {}
    for rel in dict.fromkeys(rels):
        if image_prefix is not None:
            if image_prefix + rel in by_name:
                matched[rel] = by_name[image_prefix + rel]
            continue
        if rel in by_name:
            matched[rel] = by_name[rel]
            continue
        ends = [name for name in by_name if name.endswith("/" + rel)]
        if len(ends) > 1:
            raise ValueError(f"{rel!r} matches several ground-truth images ({', '.join(sorted(ends)[:3])}, ...); "
                             "pass --image-prefix (the labeled folder's path under the ground truth's root)")
        if ends:
            matched[rel] = by_name[ends[0]]
    return matched


@dataclass
class GroundTruthResults:
    """A COCO results list keyed to a ground-truth file, and what could not be keyed."""

    results: list[dict[str, Any]]
    image_ids: dict[str, int]  #: labeled image -> ground-truth image id
    unmatched_images: list[str] = field(default_factory=list)
    unknown_labels: dict[str, int] = field(default_factory=dict)  #: labels with no ground-truth category: count


def results_for_ground_truth(results: Iterable[ImageResult | Mapping[str, str]], coco_gt: dict[str, Any],
                             image_prefix: str | None = None) -> GroundTruthResults:
    """``[{"image_id", "category_id", "bbox", "score"}]`` for ``COCO.loadRes``: ids from ``coco_gt``, categories by
    label name, ``bbox`` as ``[x, y, w, h]`` pixels, ``score`` = detection score x label probability. Objects whose
    label is no ground-truth category (e.g. ``unknown``) are left out and counted. ``results`` are a label output's
    images (`pipelines.results.read_results`) or its predictions.csv rows."""
    results = as_results(results)
    image_ids = match_images((r.image for r in results), coco_gt, image_prefix)
    categories = {c["name"]: c["id"] for c in coco_gt["categories"]}
    keyed: list[dict[str, Any]] = []
    unknown: dict[str, int] = {}
    for result in results:
        if result.image not in image_ids:
            continue
        for box, label, score in zip(result.detections.xyxy, result.labels, result.scores, strict=True):
            if label not in categories:
                unknown[label] = unknown.get(label, 0) + 1
                continue
            ann = coco_annotation(0, image_ids[result.image], categories[label], box, score)
            keyed.append({k: ann[k] for k in RESULT_KEYS})
    unmatched = sorted({r.image for r in results} - set(image_ids))
    return GroundTruthResults(keyed, image_ids, unmatched, unknown)


def write_ground_truth_results(predictions: str | os.PathLike, coco_gt: dict[str, Any] | str | os.PathLike,
                               path: str | os.PathLike, image_prefix: str | None = None) -> GroundTruthResults:
    """Write the results list of a `label` output (folder or predictions.csv) keyed to ``coco_gt`` to ``path``
    (``COCO(gt).loadRes(path)`` reads it as is)."""
    from detectcrop.io import atomic_write_text

    keyed = results_for_ground_truth(read_results(predictions), load_coco(coco_gt), image_prefix)
    atomic_write_text(path, json.dumps(keyed.results) + "\n")
    return keyed
