"""Drawing primitives as pure functions: anti-aliased OpenCV shapes with sub-pixel coordinates, colour helpers, and
dial geometry (hour directions, case outlines)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from pipelines.synthetic.palette import RGB

SHIFT = 4  # sub-pixel bits for cv2 drawing
AA = cv2.LINE_AA


def fix(points: np.ndarray) -> np.ndarray:
    """Float pixel points -> int32 fixed point for cv2's ``shift`` argument."""
    return np.round(np.asarray(points, np.float64) * (1 << SHIFT)).astype(np.int32).reshape(-1, 1, 2)


def fill(img: np.ndarray, points: np.ndarray, colour: RGB | int) -> None:
    """Fill the polygon ``points`` (float pixels) in place."""
    cv2.fillPoly(img, [fix(points)], colour, AA, SHIFT)


def polyline(img: np.ndarray, points: np.ndarray, colour: RGB, thickness: int) -> None:
    """Closed outline of the polygon ``points`` in place."""
    cv2.polylines(img, [fix(points)], True, colour, thickness, AA, SHIFT)


def line(img: np.ndarray, p: Sequence[float], q: Sequence[float], colour: RGB, thickness: int) -> None:
    pts = fix(np.array([p, q]))
    cv2.line(img, tuple(pts[0, 0]), tuple(pts[1, 0]), colour, max(1, thickness), AA, SHIFT)


def circle(img: np.ndarray, centre: Sequence[float], radius: float, colour: RGB, thickness: int = -1) -> None:
    c = fix(np.array([centre]))[0, 0]
    cv2.circle(img, (int(c[0]), int(c[1])), round(radius * (1 << SHIFT)), colour, thickness, AA, SHIFT)


def text(
    img: np.ndarray, label: str, centre: Sequence[float], height: float, colour: RGB, font: int, thickness: int = 1
) -> None:
    """``label`` centred on ``centre``, scaled so that its cap height is ``height`` pixels."""
    (_, h), _ = cv2.getTextSize(label, font, 1.0, thickness)
    scale = height / max(h, 1)
    (w, h), _ = cv2.getTextSize(label, font, scale, thickness)
    org = (round(centre[0] - w / 2), round(centre[1] + h / 2))
    cv2.putText(img, label, org, font, scale, colour, thickness, AA)


def off(point: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``point`` shifted by (dx, dy)."""
    return point + np.array([dx, dy])


def lum(colour: RGB) -> float:
    return 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]


def shade(colour: RGB, factor: float) -> RGB:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in colour)  # type: ignore[return-value]


def hour_dir(hour: float) -> np.ndarray:
    """Unit vector pointing from the centre to ``hour`` on the dial (screen coordinates, y down)."""
    a = hour / 12 * 2 * math.pi
    return np.array([math.sin(a), -math.cos(a)])


@functools.cache
def polar(h: int, w: int, cx: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
    """Radius and angle (radians, clockwise from 3 o'clock) of every pixel of an ``h`` x ``w`` canvas."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xs -= cx
    ys -= cy
    return np.hypot(xs, ys), np.arctan2(ys, xs)


def _round(theta: np.ndarray) -> np.ndarray:
    return np.ones_like(theta)


def _cushion(theta: np.ndarray) -> np.ndarray:
    """Rounded square: superellipse |x|^3 + |y|^3 = 0.93^3."""
    return 0.93 / (np.abs(np.cos(theta)) ** 3 + np.abs(np.sin(theta)) ** 3) ** (1 / 3)


def _octagon(theta: np.ndarray) -> np.ndarray:
    """Flats facing 12/3/6/9."""
    return math.cos(math.pi / 8) / np.cos(np.mod(theta + math.pi / 8, math.pi / 4) - math.pi / 8)


#: Case shapes: radius of a unit case at a screen angle.
CASE_SHAPES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "round": _round, "cushion": _cushion, "octagon": _octagon,
}  # fmt: skip


def shape_radius(shape: str, theta: np.ndarray) -> np.ndarray:
    """Radius of a unit case of ``shape`` at screen angle ``theta`` (radians, clockwise from 3 o'clock)."""
    if shape not in CASE_SHAPES:
        raise ValueError(f"unknown case shape {shape!r}")
    return CASE_SHAPES[shape](np.asarray(theta, np.float64))


def outline(shape: str, centre: np.ndarray, radius: float, n: int = 128) -> np.ndarray:
    """``n`` points around a case of ``shape`` and ``radius`` centred on ``centre``."""
    theta = np.linspace(0, 2 * math.pi, n, endpoint=False)
    r = radius * shape_radius(shape, theta)
    return centre + np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
