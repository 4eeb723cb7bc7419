"""The watch's silhouette and metalwork: strap stubs (`STRAPS`), case, lugs and crown, and bezels (`BEZELS`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import cv2
import numpy as np

from pipelines.synthetic import draw
from pipelines.synthetic.canvas import BEZEL_OUT, CASE_R, STUB_END, Canvas
from pipelines.synthetic.draw import circle, fill, line, off, polar, polyline, shade, shape_radius, text
from pipelines.synthetic.palette import INSERT_COLOURS, METALS, RGB, STRAP_COLOURS


# -- straps ---------------------------------------------------------------------------------------------------------
def _leather_colour(cv: Canvas) -> RGB:
    return STRAP_COLOURS[cv.v.strap_colour]


def _bracelet_colour(cv: Canvas) -> RGB:
    return METALS[cv.v.metal]


def _rubber_colour(cv: Canvas) -> RGB:
    colour = STRAP_COLOURS[cv.v.strap_colour]
    return (34, 34, 36) if cv.v.strap_colour in ("black", "navy") else shade(colour, 0.7)


def _leather_detail(cv: Canvas, y0: float, y1: float, colour: RGB) -> None:
    """Stitching along both edges."""
    rc, cx = cv.rc, cv.c[0]
    stitch = shade(colour, 1.6) if draw.lum(colour) < 90 else shade(colour, 0.6)
    for x in (cx - 0.4 * rc, cx + 0.4 * rc):
        for t in np.arange(0.0, 1.0, 0.09):
            ya, yb = y0 + (y1 - y0) * t, y0 + (y1 - y0) * (t + 0.05)
            line(cv.rgb, (x, ya), (x, yb), stitch, cv.thick)


def _bracelet_detail(cv: Canvas, y0: float, y1: float, colour: RGB) -> None:
    """Links: rows and two columns."""
    rc, cx = cv.rc, cv.c[0]
    dark = shade(colour, 0.6)
    for t in np.arange(0.12, 1.0, 0.16):
        y = y0 + (y1 - y0) * t
        line(cv.rgb, (cx - 0.5 * rc, y), (cx + 0.5 * rc, y), dark, cv.thick)
    for x in (cx - 0.17 * rc, cx + 0.17 * rc):
        line(cv.rgb, (x, y0), (x, y1), dark, cv.thick)


def _rubber_detail(cv: Canvas, y0: float, y1: float, colour: RGB) -> None:
    """Light ribs across."""
    rc, cx = cv.rc, cv.c[0]
    ribs = shade(colour, 1.8)
    for t in np.arange(0.15, 1.0, 0.2):
        y = y0 + (y1 - y0) * t
        line(cv.rgb, (cx - 0.3 * rc, y), (cx + 0.3 * rc, y), ribs, cv.thick)


class StrapStyle(NamedTuple):
    colour: Callable[[Canvas], RGB]
    detail: Callable[[Canvas, float, float, RGB], None]


#: Strap kinds (`palette.STRAP_KINDS`): the stub colour and its surface detail.
STRAPS: dict[str, StrapStyle] = {
    "leather": StrapStyle(_leather_colour, _leather_detail),
    "bracelet": StrapStyle(_bracelet_colour, _bracelet_detail),
    "rubber": StrapStyle(_rubber_colour, _rubber_detail),
}


def draw_straps(cv: Canvas) -> None:
    """Strap stubs above and below the case."""
    rc, c = cv.rc, cv.c
    style = STRAPS[cv.v.strap]
    colour = style.colour(cv)
    sw = 1.0 * rc
    for sign in (-1, 1):
        y0, y1 = c[1] + sign * 0.7 * rc, c[1] + sign * STUB_END * rc
        quad = np.array([[c[0] - sw / 2, y0], [c[0] + sw / 2, y0], [c[0] + 0.46 * rc, y1], [c[0] - 0.46 * rc, y1]])
        fill(cv.rgb, quad, colour)
        fill(cv.alpha, quad, 255)
        style.detail(cv, y0, y1, colour)


# -- case -----------------------------------------------------------------------------------------------------------
def draw_case(cv: Canvas) -> np.ndarray:
    """Lugs, crown and case of the brand's shape, with a soft highlight; returns the case outline."""
    rc, c, metal = cv.rc, cv.c, cv.metal
    lug = np.array([[0.46, 0.5], [0.64, 0.5], [0.62, 1.02], [0.5, 1.02]])
    lugs = [c + lug * [sx, sy] * rc for sx in (-1, 1) for sy in (-1, 1)]
    crown = c + np.array([[0.9, -0.12], [1.12, -0.12], [1.12, 0.12], [0.9, 0.12]]) * rc
    case = draw.outline(cv.spec.case, c, rc * CASE_R)
    parts = [(p, shade(metal, 0.85)) for p in lugs] + [(crown, shade(metal, 0.9)), (case, metal)]
    for poly, colour in parts:
        fill(cv.rgb, poly, colour)
        fill(cv.alpha, poly, 255)
    for k in range(1, 5):  # crown grooves
        x = c[0] + (0.9 + 0.22 * k / 5) * rc
        line(cv.rgb, (x, c[1] - 0.11 * rc), (x, c[1] + 0.11 * rc), shade(metal, 0.6), 1)
    polyline(cv.rgb, case, shade(metal, 0.55), cv.thick)
    _metal_light(cv)
    return case


def _metal_light(cv: Canvas) -> None:
    """A soft diagonal highlight across the metal parts."""
    h, w = cv.alpha.shape
    r, theta = polar(h, w, float(cv.c[0]), float(cv.c[1]))
    gain = 1.0 + 0.22 * np.cos(theta + 2.2) * np.minimum(r / cv.rc, 1.2)
    cv.rgb[:] = np.clip(cv.rgb * gain[..., None], 0, 255).astype(np.uint8)


# -- bezels ---------------------------------------------------------------------------------------------------------
def _ring(cv: Canvas, hour: float) -> tuple[float, float]:
    """Inner and outer bezel radius along ``hour``."""
    theta = (hour / 12) * 2 * math.pi - math.pi / 2
    return cv.rd, cv.rc * BEZEL_OUT * float(shape_radius(cv.spec.case, np.array(theta)))


def _triangle(cv: Canvas, r_in: float, r_out: float, mark: RGB) -> None:
    """The bezel's 12 o'clock triangle, pointing to the centre."""
    span = r_out - r_in
    base = cv.at(0, r_out - 0.15 * span)
    fill(cv.rgb, np.array([off(base, -0.3 * span, 0), off(base, 0.3 * span, 0), cv.at(0, r_in + 0.22 * span)]), mark)


def _plain(cv: Canvas, mark: RGB) -> None:
    pass


def _diver(cv: Canvas, mark: RGB) -> None:
    """60-minute scale: triangle, numbers at 15/30/45, bars every 5, ticks in the first quarter."""
    for i in range(60):
        h = i / 5
        r_in, r_out = _ring(cv, h)
        mid, span = (r_in + r_out) / 2, r_out - r_in
        if i == 0:
            _triangle(cv, r_in, r_out, mark)
        elif i % 15 == 0:
            text(cv.rgb, str(i), cv.at(h, mid), 0.32 * span, mark, cv2.FONT_HERSHEY_SIMPLEX, cv.thick)
        elif i % 5 == 0:
            line(cv.rgb, cv.at(h, mid - 0.25 * span), cv.at(h, r_out - 0.2 * span), mark, 2 * cv.thick)
        elif i < 15:
            line(cv.rgb, cv.at(h, r_out - 0.35 * span), cv.at(h, r_out - 0.15 * span), mark, cv.thick)


def _tachymeter(cv: Canvas, mark: RGB) -> None:
    """Fine ticks and speed figures."""
    for i in range(120):
        h = i / 10
        r_in, r_out = _ring(cv, h)
        span = r_out - r_in
        length = 0.45 if i % 10 == 0 else 0.22
        line(cv.rgb, cv.at(h, r_out - 0.1 * span), cv.at(h, r_out - length * span), mark, 1)
    labels = ("500", "300", "200", "150", "120", "100", "80", "70")
    for h, label in zip((1, 2, 4, 5, 7, 8, 10, 11), labels, strict=True):
        r_in, r_out = _ring(cv, h)
        span = r_out - r_in
        text(cv.rgb, label, cv.at(h, r_in + 0.32 * span), 0.22 * span, mark, cv2.FONT_HERSHEY_SIMPLEX)


def _fluted(cv: Canvas, mark: RGB) -> None:
    """Alternating light and dark radial grooves."""
    light = shade(cv.metal, 1.25)
    for i in range(72):
        h = i / 6
        r_in, r_out = _ring(cv, h)
        span = r_out - r_in
        colour = mark if i % 2 else light
        line(cv.rgb, cv.at(h, r_in + 0.08 * span), cv.at(h, r_out - 0.05 * span), colour, 2 * cv.thick)


def _gmt(cv: Canvas, mark: RGB) -> None:
    """24-hour scale on a two-tone insert."""
    for i in range(12):
        r_in, r_out = _ring(cv, i)
        mid, span = (r_in + r_out) / 2, r_out - r_in
        if i == 0:
            _triangle(cv, r_in, r_out, mark)
        else:
            text(cv.rgb, str(2 * i), cv.at(i, mid), 0.34 * span, mark, cv2.FONT_HERSHEY_SIMPLEX, cv.thick)


def _studs(cv: Canvas, mark: RGB) -> None:
    """Twelve polished studs."""
    for i in range(12):
        r_in, r_out = _ring(cv, i)
        centre = cv.at(i, (r_in + r_out) / 2)
        circle(cv.rgb, centre, 0.26 * (r_out - r_in), shade(cv.metal, 1.3))
        circle(cv.rgb, centre, 0.26 * (r_out - r_in), mark, 1)


class BezelStyle(NamedTuple):
    insert: bool  # a coloured insert (else polished metal)
    two_tone: bool  # lower half in a second insert colour
    marks: Callable[[Canvas, RGB], None]


#: Bezel kinds: the ring's finish and its markings.
BEZELS: dict[str, BezelStyle] = {
    "plain": BezelStyle(False, False, _plain),
    "diver": BezelStyle(True, False, _diver),
    "tachymeter": BezelStyle(True, False, _tachymeter),
    "fluted": BezelStyle(False, False, _fluted),
    "gmt": BezelStyle(True, True, _gmt),
    "studs": BezelStyle(False, False, _studs),
}


def draw_bezel(cv: Canvas) -> None:
    """The ring between case and dial, in the brand's bezel style."""
    style = BEZELS[cv.spec.bezel]
    outer = draw.outline(cv.spec.case, cv.c, cv.rc * BEZEL_OUT)
    fill(cv.rgb, outer, INSERT_COLOURS[cv.v.insert] if style.insert else shade(cv.metal, 1.08))
    if style.two_tone:
        h, w = cv.alpha.shape
        _, theta = polar(h, w, float(cv.c[0]), float(cv.c[1]))
        mask = np.zeros((h, w), np.uint8)
        fill(mask, outer, 255)
        cv.rgb[(theta > 0) & (mask > 0)] = INSERT_COLOURS["red" if cv.v.insert != "red" else "blue"]
    polyline(cv.rgb, outer, shade(cv.metal, 0.5), cv.thick)
    style.marks(cv, (232, 232, 226) if style.insert else shade(cv.metal, 0.55))
