"""`Detections`: the one currency between stages (boxes in pixels, scores, COCO class ids)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectcrop.coco import category_name


@dataclass
class Detections:
    """Detected objects in one image.

    Attributes:
        xyxy: ``(N, 4)`` float32 boxes ``x1, y1, x2, y2`` in pixels of the source image.
        scores: ``(N,)`` float32 confidences in ``[0, 1]``.
        class_ids: ``(N,)`` int64 COCO category ids (the 90-id map; clock is 85).
        data: extra per-object arrays of length N (kept aligned by indexing).
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
        for key, value in self.data.items():
            value = np.asarray(value)
            if len(value) != n:
                raise ValueError(f"Detections.data[{key!r}] has length {len(value)}, expected {n}")
            self.data[key] = value

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

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
