"""A stand-in detector and photos for it: red squares on noise, found by thresholding the red channel."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from detectcrop import Detections


class RedBlobDetector:
    """Finds saturated red blobs as "clocks" (score from blob size); sees only a ``resolution`` x ``resolution``
    copy of its input, like a fixed-input detector, and needs ``min_pixels`` there."""

    name = "red-blobs"

    def __init__(self, resolution: int | None = None, min_pixels: int = 4) -> None:
        self.resolution, self.min_pixels, self.calls = resolution, min_pixels, 0

    def detect(self, image: np.ndarray, min_score: float | None = None) -> Detections:
        self.calls += 1
        h, w = image.shape[:2]
        view = image if self.resolution is None else cv2.resize(image, (self.resolution,) * 2, cv2.INTER_AREA)
        mask = ((view[..., 0] > 180) & (view[..., 1] < 80) & (view[..., 2] < 80)).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        sx, sy = w / view.shape[1], h / view.shape[0]
        keep = [i for i in range(1, n) if stats[i, 4] >= self.min_pixels]
        xyxy = [[stats[i, 0] * sx, stats[i, 1] * sy, (stats[i, 0] + stats[i, 2]) * sx, (stats[i, 1] + stats[i, 3]) * sy]
                for i in keep]  # fmt: skip
        scores = [min(0.99, 0.5 + stats[i, 4] / mask.size) for i in keep]
        dets = Detections(np.reshape(xyxy, (-1, 4)), scores, [85] * len(keep))
        return dets if min_score is None else dets.by_score(min_score)


def red_photo(path: Path, boxes: list[tuple[int, int, int, int]], size=(240, 320), seed=0, mark=True) -> None:
    rng = np.random.default_rng(seed)
    img = (rng.random((*size, 3)) * 120).astype(np.uint8)
    for x1, y1, x2, y2 in boxes:
        img[y1:y2, x1:x2] = (230, 20, 20)
        if mark:  # some structure inside (the blob stays one piece)
            img[y1 + (y2 - y1) // 3 : y1 + (y2 - y1) // 2, x1 + (x2 - x1) // 4 : x2 - (x2 - x1) // 4] = (20, 20, 200)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(img).save(path)
