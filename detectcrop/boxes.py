"""Pure numpy box maths. Boxes are ``(N, 4)`` float arrays; ``xyxy`` = x1, y1, x2, y2 in pixels unless noted.

Image shapes are ``(height, width)`` (the first two entries of a numpy image's ``shape``).
"""

from __future__ import annotations

import numpy as np

Shape = tuple[int, int]


def as_boxes(boxes: np.ndarray) -> np.ndarray:
    """``boxes`` as an ``(N, 4)`` float64 array (a copy-free view when possible)."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {arr.shape}")
    return arr


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """``x1, y1, x2, y2`` -> ``x, y, width, height`` (COCO's ``bbox``)."""
    b = as_boxes(boxes).copy()
    b[:, 2:] -= b[:, :2]
    return b


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``x, y, width, height`` -> ``x1, y1, x2, y2``."""
    b = as_boxes(boxes).copy()
    b[:, 2:] += b[:, :2]
    return b


def normalized_to_pixel(boxes: np.ndarray, image_shape: Shape) -> np.ndarray:
    """``xyxy`` in ``[0, 1]`` of the image -> pixels."""
    h, w = image_shape[:2]
    return as_boxes(boxes) * np.array([w, h, w, h], dtype=np.float64)


def pixel_to_normalized(boxes: np.ndarray, image_shape: Shape) -> np.ndarray:
    """``xyxy`` in pixels -> fractions of the image's width and height."""
    h, w = image_shape[:2]
    if h <= 0 or w <= 0:
        raise ValueError(f"image shape must be positive, got {image_shape}")
    return as_boxes(boxes) / np.array([w, h, w, h], dtype=np.float64)


def yxyx_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """TF Object Detection API order ``ymin, xmin, ymax, xmax`` -> ``xyxy``."""
    return as_boxes(boxes)[:, [1, 0, 3, 2]]


def widths_heights(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Widths and heights of ``xyxy`` boxes (negative extents count as zero)."""
    b = as_boxes(boxes)
    return np.clip(b[:, 2] - b[:, 0], 0, None), np.clip(b[:, 3] - b[:, 1], 0, None)


def area(boxes: np.ndarray) -> np.ndarray:
    """Areas of ``xyxy`` boxes."""
    w, h = widths_heights(boxes)
    return w * h


def intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, M)`` intersection areas of two sets of ``xyxy`` boxes."""
    a, b = as_boxes(a), as_boxes(b)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    return wh[..., 0] * wh[..., 1]


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, M)`` intersection over union; 0 where both boxes are empty."""
    inter = intersection(a, b)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def ios(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, M)`` intersection over the smaller box's area (SAHI's IOS); 1 when one box holds the other."""
    inter = intersection(a, b)
    smaller = np.minimum(area(a)[:, None], area(b)[None, :])
    return np.divide(inter, smaller, out=np.zeros_like(inter), where=smaller > 0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.5, metric: str = "iou") -> np.ndarray:
    """Greedy non-maximum suppression. Returns kept indices, highest score first (ties: lower index first).

    ``metric`` is ``"iou"`` or ``"ios"`` (intersection over the smaller box: also removes a box inside another).
    """
    b = as_boxes(boxes)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(s) != len(b):
        raise ValueError(f"{len(b)} boxes but {len(s)} scores")
    overlap_fn = {"iou": iou, "ios": ios}.get(metric)
    if overlap_fn is None:
        raise ValueError(f"metric must be 'iou' or 'ios', got {metric!r}")
    order = np.argsort(-s, kind="stable")
    overlaps = overlap_fn(b[order], b[order])
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(order[i])
        suppressed |= overlaps[i] > iou_threshold
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float = 0.5, metric: str = "iou"
) -> np.ndarray:
    """Class-aware NMS: boxes of different classes never suppress each other. Kept indices, highest score first."""
    class_ids = np.asarray(class_ids).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    b = as_boxes(boxes)
    keep = []
    for c in np.unique(class_ids):
        idx = np.flatnonzero(class_ids == c)
        keep.append(idx[nms(b[idx], s[idx], iou_threshold, metric)])
    if not keep:
        return np.zeros(0, dtype=np.int64)
    kept = np.concatenate(keep)
    return kept[np.argsort(-s[kept], kind="stable")]


def pad(boxes: np.ndarray, fraction: float) -> np.ndarray:
    """Grow each box by ``fraction`` of its width on the left and right and of its height on top and bottom."""
    if fraction < 0:
        raise ValueError(f"pad fraction must be >= 0, got {fraction}")
    b = as_boxes(boxes).copy()
    w, h = widths_heights(b)
    b += np.stack([-w, -h, w, h], axis=1) * fraction
    return b


def square(boxes: np.ndarray) -> np.ndarray:
    """Expand each box about its centre so that its shorter side equals the longer."""
    b = as_boxes(boxes)
    w, h = widths_heights(b)
    side = np.maximum(w, h)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)


def shift_inside(boxes: np.ndarray, image_shape: Shape) -> np.ndarray:
    """Translate each box so that it lies inside the image where it fits (keeps its size; e.g. for square crops).

    A box larger than the image along an axis is centred on the image along that axis (then needs clipping).
    """
    h, w = image_shape[:2]
    b = as_boxes(boxes).copy()
    for lo, hi, size in ((0, 2, w), (1, 3, h)):
        extent = b[:, hi] - b[:, lo]
        fits = extent <= size
        shift = np.where(b[:, lo] < 0, -b[:, lo], np.where(b[:, hi] > size, size - b[:, hi], 0.0))
        shift = np.where(fits, shift, (size - extent) / 2 - b[:, lo])
        b[:, lo] += shift
        b[:, hi] += shift
    return b


def clip(boxes: np.ndarray, image_shape: Shape) -> np.ndarray:
    """Clip ``xyxy`` boxes to the image."""
    h, w = image_shape[:2]
    b = as_boxes(boxes).copy()
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h)
    return b


def to_int_pixels(boxes: np.ndarray, image_shape: Shape) -> np.ndarray:
    """Integer pixel boxes that cover ``boxes`` (floor the start, ceil the end), clipped to the image.

    A small tolerance keeps float noise (e.g. ``100.0000001``) from adding a pixel row.
    """
    b = as_boxes(boxes)
    eps = 1e-6
    out = np.concatenate([np.floor(b[:, :2] + eps), np.ceil(b[:, 2:] - eps)], axis=1)
    return clip(out, image_shape).astype(np.int64)
