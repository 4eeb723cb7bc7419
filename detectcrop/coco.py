"""The COCO label maps: the 90-id map used by TF Object Detection API exports and the 80 contiguous classes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: COCO category id -> name, as in the 2017 annotations (ids 1..90 with gaps).
COCO_NAMES: dict[int, str] = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train", 8: "truck",
    9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign", 14: "parking meter", 15: "bench",
    16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear",
    24: "zebra", 25: "giraffe", 27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase",
    34: "frisbee", 35: "skis", 36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat",
    40: "baseball glove", 41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle", 46: "wine glass",
    47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple", 54: "sandwich",
    55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza", 60: "donut", 61: "cake", 62: "chair",
    63: "couch", 64: "potted plant", 65: "bed", 67: "dining table", 70: "toilet", 72: "tv", 73: "laptop",
    74: "mouse", 75: "remote", 76: "keyboard", 77: "cell phone", 78: "microwave", 79: "oven", 80: "toaster",
    81: "sink", 82: "refrigerator", 84: "book", 85: "clock", 86: "vase", 87: "scissors", 88: "teddy bear",
    89: "hair drier", 90: "toothbrush",
}

#: The 80 contiguous training classes (index 0..79) mapped to COCO ids, in the standard order.
COCO80_TO_COCO91: tuple[int, ...] = tuple(COCO_NAMES)

NAME_TO_ID: dict[str, int] = {name: cid for cid, name in COCO_NAMES.items()}


def category_id(category: str | int) -> int:
    """Resolve a COCO category name or id to its id; unknown names raise a ValueError listing the valid ones."""
    if isinstance(category, int | float) and not isinstance(category, bool):
        cid = int(category)
        if cid not in COCO_NAMES:
            raise ValueError(f"unknown COCO category id {cid}; valid ids are {sorted(COCO_NAMES)}")
        return cid
    key = str(category).strip().lower()
    if key.isdigit():
        return category_id(int(key))
    if key not in NAME_TO_ID:
        raise ValueError(f"unknown COCO category {category!r}; valid names: {', '.join(sorted(NAME_TO_ID))}")
    return NAME_TO_ID[key]


def category_name(class_id: int) -> str:
    """The COCO name for an id, or ``"class_<id>"`` for ids outside the map."""
    return COCO_NAMES.get(int(class_id), f"class_{int(class_id)}")


def coco_annotation(
    ann_id: int, image_id: int | str, category_id: int, xyxy: Sequence[float], score: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One COCO annotation (or, with ``score``, one detection result): ``bbox`` ``[x, y, w, h]`` and ``area`` in
    pixels rounded to 0.01, ``iscrowd`` 0, then ``extra`` fields. Every COCO file written here goes through it."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    w, h = x2 - x1, y2 - y1
    ann = {"id": int(ann_id), "image_id": image_id, "category_id": int(category_id),
           "bbox": [round(x1, 2), round(y1, 2), round(w, 2), round(h, 2)], "area": round(w * h, 2), "iscrowd": 0}
    if score is not None:
        ann["score"] = round(float(score), 6)
    return {**ann, **extra}
