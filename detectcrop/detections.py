"""`Detections`: the one currency between stages (boxes in pixels, scores, COCO class ids)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectcrop import boxes as bx
from detectcrop.coco import category_id, category_name, coco_annotation


@dataclass
class Detections:
    """Detected objects in one image.

    Attributes:
        xyxy: ``(N, 4)`` float32 boxes ``x1, y1, x2, y2`` in pixels of the source image.
        scores: ``(N,)`` float32 confidences in ``[0, 1]``.
        class_ids: ``(N,)`` int64 COCO category ids (the 90-id map; clock is 85).
        data: extra per-object arrays of length N (kept aligned by indexing).

    Index with a boolean mask, integer array, slice or int: ``dets[dets.scores > 0.5]``.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    data: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        n = len(self.xyxy)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
        if len(self.scores) != n or len(self.class_ids) != n:
            raise ValueError(
                f"Detections fields disagree in length: xyxy {n}, scores {len(self.scores)}, "
                f"class_ids {len(self.class_ids)}"
            )
        if not np.isfinite(self.xyxy).all():
            raise ValueError("Detections.xyxy holds NaN or infinite coordinates")
        for key, value in self.data.items():
            value = np.asarray(value)
            if len(value) != n:
                raise ValueError(f"Detections.data[{key!r}] has length {len(value)}, expected {n}")
            self.data[key] = value

    # -- construction -------------------------------------------------------------------------------------------
    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    @classmethod
    def from_xywh(cls, xywh: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, **kwargs: Any) -> Detections:
        """Build from ``x, y, width, height`` pixel boxes (COCO ``bbox``)."""
        return cls(bx.xywh_to_xyxy(xywh), scores, class_ids, **kwargs)

    @classmethod
    def from_normalized(
        cls,
        xyxy: np.ndarray,
        scores: np.ndarray,
        class_ids: np.ndarray,
        image_shape: tuple[int, int],
        **kwargs: Any,
    ) -> Detections:
        """Build from ``xyxy`` boxes in fractions of an image of ``image_shape`` ``(height, width)``."""
        return cls(bx.normalized_to_pixel(xyxy, image_shape), scores, class_ids, **kwargs)

    @classmethod
    def from_tfhub(cls, outputs: Mapping[str, Any], image_shape: tuple[int, ...]) -> Detections:
        """From the TF Hub object-detection outputs of one image (batch of 1): ``detection_boxes`` (normalised
        ``ymin, xmin, ymax, xmax``), ``detection_scores``, ``detection_classes`` (COCO ids), ``num_detections``;
        boxes in pixels of an image of ``image_shape`` ``(height, width, ...)``, clipped to it."""
        n = int(np.asarray(outputs["num_detections"]).reshape(-1)[0])
        xyxy = bx.clip(bx.normalized_to_pixel(bx.yxyx_to_xyxy(np.asarray(outputs["detection_boxes"])[0, :n]),
                                              image_shape), image_shape)
        scores = np.asarray(outputs["detection_scores"])[0, :n]
        class_ids = np.rint(np.asarray(outputs["detection_classes"])[0, :n]).astype(np.int64)
        return cls(xyxy, scores, class_ids)

    @classmethod
    def concatenate(cls, items: Iterable[Detections]) -> Detections:
        """Join several Detections (e.g. from image tiles); ``data`` keys must agree."""
        items = list(items)
        if not items:
            return cls.empty()
        keys = set(items[0].data)
        if any(set(d.data) != keys for d in items):
            raise ValueError("cannot concatenate Detections whose data keys differ")
        return cls(
            np.concatenate([d.xyxy for d in items]),
            np.concatenate([d.scores for d in items]),
            np.concatenate([d.class_ids for d in items]),
            {k: np.concatenate([d.data[k] for d in items]) for k in sorted(keys)},
        )

    # -- access -------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: Any) -> Detections:
        """Index by a boolean mask, an integer array, a slice or an int (kept as a 1-object Detections)."""
        if isinstance(index, int | np.integer):
            index = [int(index)]
        return Detections(
            self.xyxy[index], self.scores[index], self.class_ids[index], {k: v[index] for k, v in self.data.items()}
        )

    @property
    def class_names(self) -> np.ndarray:
        """COCO names of ``class_ids``."""
        return np.array([category_name(c) for c in self.class_ids], dtype=object)

    @property
    def xywh(self) -> np.ndarray:
        """Boxes as ``x, y, width, height`` (float32)."""
        return bx.xyxy_to_xywh(self.xyxy).astype(np.float32)

    @property
    def widths(self) -> np.ndarray:
        return bx.widths_heights(self.xyxy)[0].astype(np.float32)

    @property
    def heights(self) -> np.ndarray:
        return bx.widths_heights(self.xyxy)[1].astype(np.float32)

    @property
    def area(self) -> np.ndarray:
        return bx.area(self.xyxy).astype(np.float32)

    def normalized(self, image_shape: tuple[int, int]) -> np.ndarray:
        """``xyxy`` as fractions of an image of ``image_shape`` ``(height, width)``."""
        return bx.pixel_to_normalized(self.xyxy, image_shape).astype(np.float32)

    # -- transforms (each returns a new Detections) -------------------------------------------------------------
    def with_boxes(self, xyxy: np.ndarray) -> Detections:
        """The same objects with new boxes."""
        return Detections(xyxy, self.scores, self.class_ids, dict(self.data))

    def shift(self, dx: float, dy: float) -> Detections:
        """Translate the boxes (e.g. from tile to image coordinates)."""
        return self.with_boxes(self.xyxy + np.array([dx, dy, dx, dy], dtype=np.float32))

    def scale(self, sx: float, sy: float | None = None) -> Detections:
        """Scale the boxes (e.g. from a resized image back to the original)."""
        sy = sx if sy is None else sy
        return self.with_boxes(self.xyxy * np.array([sx, sy, sx, sy], dtype=np.float32))

    def clip(self, image_shape: tuple[int, int]) -> Detections:
        return self.with_boxes(bx.clip(self.xyxy, image_shape))

    def sorted_by_score(self) -> Detections:
        """Highest score first (stable for ties)."""
        return self[np.argsort(-self.scores, kind="stable")]

    def top_k(self, k: int | None) -> Detections:
        """The ``k`` highest-scoring objects (all when ``k`` is None)."""
        return self.sorted_by_score() if k is None else self.sorted_by_score()[: max(int(k), 0)]

    # -- filters ------------------------------------------------------------------------------------------------
    def by_category(self, categories: str | int | Sequence[str | int]) -> Detections:
        """Keep the given COCO categories (names or ids). An unknown name raises a ValueError listing valid ones."""
        if isinstance(categories, str | int | np.integer):
            categories = [categories]
        ids = [category_id(c) for c in categories]
        return self[np.isin(self.class_ids, ids)]

    def by_score(self, min_score: float) -> Detections:
        """Keep objects with ``score >= min_score``."""
        return self[self.scores >= min_score]

    def by_size(
        self, min_size: float = 0.0, max_size: float | None = None, min_area: float = 0.0
    ) -> Detections:
        """Keep boxes with shorter side ``>= min_size``, longer side ``<= max_size`` and area ``>= min_area``."""
        w, h = bx.widths_heights(self.xyxy)
        keep = (np.minimum(w, h) >= min_size) & (w * h >= min_area)
        if max_size is not None:
            keep &= np.maximum(w, h) <= max_size
        return self[keep]

    def filter(
        self,
        category: str | int | Sequence[str | int] | None = None,
        min_score: float | None = None,
        min_size: float = 0.0,
    ) -> Detections:
        """Category, score and size filters in one call (None / 0 disables each)."""
        out = self
        if category is not None:
            out = out.by_category(category)
        if min_score is not None:
            out = out.by_score(min_score)
        if min_size:
            out = out.by_size(min_size)
        return out

    def nms(self, iou_threshold: float = 0.5, class_agnostic: bool = False, metric: str = "iou") -> Detections:
        """Non-maximum suppression, per class unless ``class_agnostic``; result sorted by score."""
        if class_agnostic:
            keep = bx.nms(self.xyxy, self.scores, iou_threshold, metric)
        else:
            keep = bx.batched_nms(self.xyxy, self.scores, self.class_ids, iou_threshold, metric)
        return self[keep]

    # -- export -------------------------------------------------------------------------------------------------
    def to_coco(self, image_id: int | str, start_id: int = 1) -> list[dict[str, Any]]:
        """COCO result/annotation dicts (`detectcrop.coco.coco_annotation`): ``id, image_id, category_id,
        bbox (x, y, w, h), area, iscrowd, score``."""
        return [coco_annotation(start_id + i, image_id, int(self.class_ids[i]), self.xyxy[i], float(self.scores[i]))
                for i in range(len(self))]
