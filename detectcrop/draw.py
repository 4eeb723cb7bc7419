"""Draw labeled boxes on a copy of an image (for review of detections and predictions)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import cv2
import numpy as np


def label_color(label: str) -> tuple[int, int, int]:
    """A stable, saturated RGB colour per label (the same label gets the same colour in every image)."""
    hue = int.from_bytes(hashlib.md5(label.encode("utf-8")).digest()[:2], "little") % 180
    hsv = np.uint8([[[hue, 200, 230]]])
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def draw_boxes(image: np.ndarray, xyxy: np.ndarray, captions: Sequence[str],
               colors_by: Sequence[str] | None = None) -> np.ndarray:
    """A copy of RGB ``image`` with each box outlined and captioned; line width and text scale follow image size."""
    out = np.ascontiguousarray(image.copy())
    h, w = out.shape[:2]
    thickness = max(1, round(min(h, w) / 300))
    scale = max(0.4, min(h, w) / 900)
    keys = colors_by if colors_by is not None else captions
    for box, caption, key in zip(np.asarray(xyxy).reshape(-1, 4), captions, keys, strict=True):
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        color = label_color(str(key))
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else min(h - 1, y2 + th + 4)
        cv2.rectangle(out, (x1, ty - th - base), (min(w - 1, x1 + tw + 4), ty + base // 2), color, -1)
        cv2.putText(out, caption, (x1 + 2, ty - base // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    thickness, cv2.LINE_AA)
    return out
