"""The dial: texture (`TEXTURES`), minute track, hour markers (`NUMERALS`), sub-dials, date window, and the logo
(`FONTS`, `LOGO_MARKS`, tagline)."""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from pipelines.synthetic.brands import DATE_HOURS, SUBDIAL_HOURS
from pipelines.synthetic.canvas import Canvas
from pipelines.synthetic.draw import circle, fill, hour_dir, line, lum, off, polar, polyline, shade, text

ROMAN = ("XII", "I", "II", "III", "IIII", "V", "VI", "VII", "VIII", "IX", "X", "XI")


# -- texture --------------------------------------------------------------------------------------------------------
def _plain(cv: Canvas, r: np.ndarray, theta: np.ndarray) -> np.ndarray:
    return 1.04 - 0.1 * r**2


def _sunburst(cv: Canvas, r: np.ndarray, theta: np.ndarray) -> np.ndarray:
    return 1.0 + 0.16 * np.cos(2 * theta - 1.0) + 0.035 * np.sin(140 * theta)


def _guilloche(cv: Canvas, r: np.ndarray, theta: np.ndarray) -> np.ndarray:
    return 1.0 + 0.07 * np.sin(55 * r + 3.0 * np.sin(8 * theta))


def _grain(cv: Canvas, r: np.ndarray, theta: np.ndarray) -> np.ndarray:
    noise = np.random.default_rng(cv.v.grain_seed).standard_normal(r.shape).astype(np.float32)
    return 1.0 + 0.07 * cv2.GaussianBlur(noise, (0, 0), 1.2)


#: Dial textures: brightness factor over the dial from (radius in dial radii, angle in radians).
TEXTURES: dict[str, Callable[[Canvas, np.ndarray, np.ndarray], np.ndarray]] = {
    "plain": _plain, "sunburst": _sunburst, "guilloche": _guilloche, "grain": _grain,
}  # fmt: skip


def draw_dial_face(cv: Canvas) -> None:
    """The dial disc in the variant's colour and the brand's texture."""
    h, w = cv.alpha.shape
    mask = np.zeros((h, w), np.uint8)
    outline = cv.dial_outline()
    fill(mask, outline, 255)
    x0, y0, bw, bh = cv2.boundingRect(outline.astype(np.float32))
    x0, y0 = max(x0 - 1, 0), max(y0 - 1, 0)
    sl = np.s_[y0 : y0 + bh + 2, x0 : x0 + bw + 2]
    r, theta = polar(h, w, float(cv.c[0]), float(cv.c[1]))
    factor = TEXTURES[cv.spec.texture](cv, r[sl] / cv.rd, theta[sl])
    colour = np.asarray(cv.dial, np.float32) * factor[..., None].astype(np.float32) + (6 if lum(cv.dial) < 60 else 0)
    m = mask[sl][..., None].astype(np.float32) / 255
    cv.rgb[sl] = np.clip(cv.rgb[sl] * (1 - m) + colour * m, 0, 255).astype(np.uint8)
    polyline(cv.rgb, outline, shade(cv.metal, 0.45), cv.thick)


def draw_minute_track(cv: Canvas) -> None:
    for i in range(60):
        length = 0.085 if i % 5 == 0 else 0.045
        thick = 2 * cv.thick if i % 5 == 0 else cv.thick
        line(cv.rgb, cv.at(i / 5, cv.rd * 0.965), cv.at(i / 5, cv.rd * (0.965 - length)), cv.ink, thick)


# -- hour markers ---------------------------------------------------------------------------------------------------
def _figure(cv: Canvas, i: int, label: str, font: int, height: float) -> None:
    text(cv.rgb, label, cv.at(i, cv.rd * 0.76), height * cv.rd, cv.ink, font, max(1, round(cv.thick * 1.3)))


def _bar(cv: Canvas, i: int, double_at_12: bool) -> None:
    width = 3 * cv.thick if i else 5 * cv.thick
    line(cv.rgb, cv.at(i, cv.rd * 0.86), cv.at(i, cv.rd * 0.68), cv.ink, width)
    if i == 0 and double_at_12:
        for dx in (-0.05, 0.05):
            shift = np.array([dx * cv.rd, 0])
            line(cv.rgb, cv.at(0, cv.rd * 0.86) + shift, cv.at(0, cv.rd * 0.68) + shift, cv.ink, 2 * cv.thick)


def _roman(cv: Canvas, i: int) -> None:
    _figure(cv, i, ROMAN[i], cv2.FONT_HERSHEY_COMPLEX, 0.13)


def _arabic(cv: Canvas, i: int) -> None:
    _figure(cv, i, str(i or 12), cv2.FONT_HERSHEY_SIMPLEX, 0.13)


def _quarters(cv: Canvas, i: int) -> None:
    if i % 3 == 0:
        _figure(cv, i, str(i or 12), cv2.FONT_HERSHEY_SIMPLEX, 0.17)
    else:
        _bar(cv, i, double_at_12=False)


def _baton(cv: Canvas, i: int) -> None:
    _bar(cv, i, double_at_12=True)


def _dots(cv: Canvas, i: int) -> None:
    circle(cv.rgb, cv.at(i, cv.rd * 0.8), (0.06 if i % 3 == 0 else 0.04) * cv.rd, cv.ink)


def _no_numeral(cv: Canvas, i: int) -> None:
    pass


#: Hour-marker styles: draw the marker of hour ``i`` (0 = 12 o'clock).
NUMERALS: dict[str, Callable[[Canvas, int], None]] = {
    "roman": _roman, "arabic": _arabic, "quarters": _quarters, "baton": _baton, "dots": _dots, "none": _no_numeral,
}  # fmt: skip


def occupied_hours(subdials: str, date: str) -> set[int]:
    """Hours whose marker gives way to a sub-dial or the date window."""
    hours = {h % 12 for h in SUBDIAL_HOURS[subdials]}
    where = DATE_HOURS[date]
    if where is not None and float(where).is_integer():
        hours.add(int(where) % 12)
    return hours


def draw_numerals(cv: Canvas) -> None:
    skip = occupied_hours(cv.spec.subdials, cv.spec.date)
    marker = NUMERALS[cv.spec.numerals]
    for i in range(12):
        if i not in skip:
            marker(cv, i)


# -- complications --------------------------------------------------------------------------------------------------
def draw_subdials(cv: Canvas) -> None:
    """The layout's sub-dials, each with 12 ticks and its hand at the variant's position."""
    rd = cv.rd
    face = shade(cv.dial, 0.95) if lum(cv.dial) > 60 else shade(cv.dial, 1.15)
    for hour, angle in zip(SUBDIAL_HOURS[cv.spec.subdials], cv.v.subdial_hands, strict=True):
        centre, r = cv.at(hour, 0.46 * rd), 0.17 * rd
        circle(cv.rgb, centre, r, face)
        circle(cv.rgb, centre, r, cv.ink, 1)
        for k in range(12):
            d = hour_dir(k)
            line(cv.rgb, centre + d * r * 0.88, centre + d * r * 0.74, cv.ink, 1)
        line(cv.rgb, centre, centre + hour_dir(angle) * r * 0.8, cv.ink, cv.thick)


def draw_date_window(cv: Canvas) -> None:
    hour = DATE_HOURS[cv.spec.date]
    if hour is None:
        return
    centre = cv.at(hour, cv.rd * 0.72)
    w, h = 0.17 * cv.rd, 0.13 * cv.rd
    box = centre + np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2
    fill(cv.rgb, box, (244, 244, 240))
    polyline(cv.rgb, box, shade(cv.metal, 0.5), cv.thick)
    text(cv.rgb, str(cv.v.day), centre, 0.55 * h, (20, 20, 20), cv2.FONT_HERSHEY_SIMPLEX, cv.thick)


# -- logo -----------------------------------------------------------------------------------------------------------
#: Logo typefaces.
FONTS: dict[str, int] = {
    "simplex": cv2.FONT_HERSHEY_SIMPLEX,
    "duplex": cv2.FONT_HERSHEY_DUPLEX,
    "triplex": cv2.FONT_HERSHEY_TRIPLEX,
    "complex": cv2.FONT_HERSHEY_COMPLEX,
}


def _crown(cv: Canvas, centre: np.ndarray, s: float) -> None:
    points = np.array([[-1, 0.6], [-1, -0.4], [-0.5, 0.1], [0, -0.8], [0.5, 0.1], [1, -0.4], [1, 0.6]])
    fill(cv.rgb, centre + s * points, cv.ink)


def _triangle(cv: Canvas, centre: np.ndarray, s: float) -> None:
    fill(cv.rgb, centre + s * np.array([[-1, 0.7], [1, 0.7], [0, -0.9]]), cv.ink)


def _star(cv: Canvas, centre: np.ndarray, s: float) -> None:
    a = np.arange(10) * math.pi / 5 - math.pi / 2
    rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
    fill(cv.rgb, centre + s * np.stack([rad * np.cos(a), rad * np.sin(a)], 1), cv.ink)


def _bar_mark(cv: Canvas, centre: np.ndarray, s: float) -> None:
    line(cv.rgb, off(centre, -1.4 * s, 0), off(centre, 1.4 * s, 0), cv.ink, 2 * cv.thick)


def _no_mark(cv: Canvas, centre: np.ndarray, s: float) -> None:
    pass


#: Marks above the brand name: draw at ``centre`` with half-size ``s`` pixels.
LOGO_MARKS: dict[str, Callable[[Canvas, np.ndarray, float], None]] = {
    "none": _no_mark, "crown": _crown, "triangle": _triangle, "star": _star, "bar": _bar_mark,
}  # fmt: skip


def draw_logo(cv: Canvas) -> None:
    """The brand name (or the variant's ``logo_text``) in its typeface, its mark above, and its tagline (above 6
    o'clock unless a sub-dial is there)."""
    rd, spec = cv.rd, cv.spec
    label, font = (spec.name if cv.v.logo_text is None else cv.v.logo_text).upper(), FONTS[spec.logo_font]
    thickness = max(1, round(cv.thick * 1.2))
    (tw, th), _ = cv2.getTextSize(label, font, 1.0, thickness)
    centre = off(cv.c, 0, -0.36 * rd)
    text(cv.rgb, label, centre, 0.4 * rd * th / tw, cv.ink, font, thickness)
    LOGO_MARKS[spec.logo_mark](cv, off(centre, 0, -0.17 * rd), 0.065 * rd)
    if spec.tagline:
        below_6 = 6 not in SUBDIAL_HOURS[spec.subdials]
        where = off(cv.c, 0, 0.3 * rd) if below_6 else off(centre, 0, 0.13 * rd)
        text(cv.rgb, spec.tagline, where, 0.055 * rd, cv.ink, cv2.FONT_HERSHEY_SIMPLEX)
