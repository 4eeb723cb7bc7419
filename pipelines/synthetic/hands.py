"""Hands: hour and minute hand shapes (`HANDS`), seconds-hand styles (`SECONDS`), and the centre cap."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from pipelines.synthetic.canvas import Canvas
from pipelines.synthetic.draw import circle, fill, hour_dir, line, lum, polyline, shade

# Hand outlines in local coordinates: x across, y along the hand towards its tip, for a hand of length L, width w.


def baton(L: float, w: float) -> np.ndarray:
    return np.array([(-w / 2, -0.12 * L), (w / 2, -0.12 * L), (w / 2, L), (-w / 2, L)])


def sword(L: float, w: float) -> np.ndarray:
    return np.array([(-0.3 * w, -0.1 * L), (0.3 * w, -0.1 * L), (0.55 * w, 0.6 * L), (0, L), (-0.55 * w, 0.6 * L)])


def dauphine(L: float, w: float) -> np.ndarray:
    return np.array([(0, -0.1 * L), (0.75 * w, 0.22 * L), (0, L), (-0.75 * w, 0.22 * L)])


def arrow(L: float, w: float) -> np.ndarray:
    return np.array([(-w / 3, -0.1 * L), (w / 3, -0.1 * L), (w / 3, 0.72 * L), (w, 0.72 * L), (0, L),
                     (-w, 0.72 * L), (-w / 3, 0.72 * L)])  # fmt: skip


def leaf(L: float, w: float) -> np.ndarray:
    t = np.linspace(0, 1, 16)
    right = np.stack([0.8 * w * np.sin(math.pi * t**0.8), -0.08 * L + 1.08 * L * t], 1)
    return np.concatenate([right, right[::-1] * [-1, 1]])


#: Hour and minute hand shapes: (length, width) -> outline; "skeleton" is a sword with an open centre.
HANDS: dict[str, Callable[[float, float], np.ndarray]] = {
    "baton": baton, "sword": sword, "dauphine": dauphine, "arrow": arrow, "leaf": leaf, "skeleton": sword,
}  # fmt: skip
SKELETON = frozenset({"skeleton"})


def place(cv: Canvas, local: np.ndarray, hour: float) -> np.ndarray:
    """A local hand outline turned to point at ``hour`` from the dial centre."""
    d = hour_dir(hour)
    across = np.array([-d[1], d[0]])
    return cv.c + local[:, :1] * across + local[:, 1:] * d


def _seconds_colour(cv: Canvas) -> tuple[int, int, int]:
    return cv.hand


def _red(cv: Canvas) -> tuple[int, int, int]:
    return (205, 36, 30)


class _Seconds:
    """A centre seconds hand: its colour and whether it carries a lollipop."""

    def __init__(self, colour: Callable[[Canvas], tuple[int, int, int]] | None, lollipop: bool = False) -> None:
        self.colour, self.lollipop = colour, lollipop

    def __call__(self, cv: Canvas) -> None:
        if self.colour is None or cv.spec.subdials == "small_seconds":  # no centre seconds
            return
        colour, rd = self.colour(cv), cv.rd
        d = hour_dir(cv.v.second / 5)
        line(cv.rgb, cv.c - 0.2 * rd * d, cv.c + 0.86 * rd * d, colour, cv.thick)
        if self.lollipop:
            circle(cv.rgb, cv.c + 0.66 * rd * d, 0.045 * rd, colour)


#: Seconds-hand styles (none with a small-seconds sub-dial).
SECONDS: dict[str, Callable[[Canvas], None]] = {
    "red": _Seconds(_red), "same": _Seconds(_seconds_colour), "lollipop": _Seconds(_seconds_colour, lollipop=True),
    "none": _Seconds(None),
}  # fmt: skip


def draw_hands(cv: Canvas) -> None:
    """Hour and minute hands at the variant's time, the seconds hand, and the centre cap."""
    rd, v, shape = cv.rd, cv.v, HANDS[cv.spec.hands]
    hour_pos = (v.hour + v.minute / 60) % 12
    edge = shade(cv.hand, 0.5) if lum(cv.hand) > 128 else (200, 200, 200)
    for pos, length, width in ((hour_pos, 0.5 * rd, 0.1 * rd), (v.minute / 5, 0.8 * rd, 0.075 * rd)):
        local = shape(length, width)
        poly = place(cv, local, pos)
        fill(cv.rgb, poly, cv.hand)
        polyline(cv.rgb, poly, edge, 1)
        if cv.spec.hands in SKELETON:
            fill(cv.rgb, place(cv, local * [0.45, 0.8] + [0, 0.12 * length], pos), cv.dial)
    SECONDS[cv.spec.seconds](cv)
    circle(cv.rgb, cv.c, 0.045 * rd, cv.hand)
    circle(cv.rgb, cv.c, 0.045 * rd, edge, 1)
