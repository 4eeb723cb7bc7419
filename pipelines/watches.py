"""Synthetic fine-grained watch benchmark: photo-like images of watches whose "brand" lives in fine details.

A brand is a fixed combination of structural details (case shape, numerals, hands, bezel, sub-dials, date window,
seconds hand, logo word and mark, dial texture); dial colours and case metals are shared across brands, so a colour
histogram cannot read the brand. Each watch is drawn with OpenCV anti-aliased primitives on a few-hundred-pixel canvas,
warped (rotation + mild perspective) and alpha-composited on real photos shipped in scikit-image / scikit-learn.

Everything is a pure function of the seed: each image draws from its own ``numpy.random.SeedSequence`` (seed, kind,
indices), so its bytes do not depend on generation order or on the number of workers.

    >>> from pipelines.watches import generate
    >>> summary = generate("watches", brands=8, photos_per_brand=40, scenes=20, seed=0)
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from detectcrop.io import atomic_write_bytes

logger = logging.getLogger(__name__)

RGB = tuple[int, int, int]

BRAND_NAMES: tuple[str, ...] = (
    "aurel", "brisk", "corvo", "delin", "ember", "fenix", "gallo", "hamar", "istra", "jorun", "kairo", "lumen",
    "mirel", "norda", "orlan", "pavia", "quill", "rovan", "solen", "tarek", "ulmar", "vesta", "wyler", "xenon",
    "yaris", "zenta",
)  # fmt: skip

#: Dial colours (RGB), shared across brands: every brand offers two light and two dark ones, every colour is offered
#: by several brands.
LIGHT_DIALS: dict[str, RGB] = {
    "white": (236, 235, 228), "silver": (186, 189, 194), "cream": (230, 218, 186), "champagne": (214, 196, 150),
}  # fmt: skip
DARK_DIALS: dict[str, RGB] = {"black": (24, 24, 27), "navy": (26, 42, 94), "green": (30, 82, 56), "blue": (44, 92, 168)}
DIAL_COLOURS: dict[str, RGB] = LIGHT_DIALS | DARK_DIALS
METALS: dict[str, RGB] = {
    "steel": (196, 199, 204),
    "gold": (212, 175, 92),
    "rose": (205, 148, 120),
    "dark": (60, 62, 66),
}
INSERT_COLOURS: dict[str, RGB] = {
    "black": (28, 28, 30),
    "blue": (30, 52, 130),
    "green": (24, 90, 50),
    "red": (150, 30, 34),
}
STRAP_COLOURS: dict[str, RGB] = {
    "black": (30, 28, 28), "brown": (96, 60, 36), "tan": (160, 112, 70), "navy": (34, 40, 70), "olive": (80, 86, 52),
}  # fmt: skip
STRAP_KINDS = ("leather", "bracelet", "rubber")

#: The structural attributes a brand fixes, with their options.
STRUCTURE: dict[str, tuple[str, ...]] = {
    "case": ("round", "cushion", "octagon"),
    "numerals": ("roman", "arabic", "quarters", "baton", "dots", "none"),
    "hands": ("baton", "sword", "dauphine", "arrow", "leaf", "skeleton"),
    "bezel": ("plain", "diver", "tachymeter", "fluted", "gmt", "studs"),
    "subdials": ("none", "small_seconds", "bicompax", "tricompax"),
    "date": ("none", "3", "6", "430"),
    "seconds": ("red", "same", "lollipop", "none"),
    "logo_mark": ("none", "crown", "triangle", "star", "bar"),
    "logo_font": ("simplex", "duplex", "triplex", "complex"),
    "tagline": ("", "AUTOMATIC", "CHRONOMETER", "200M", "QUARTZ"),
    "texture": ("plain", "sunburst", "guilloche", "grain"),
}
_FONTS = {
    "simplex": cv2.FONT_HERSHEY_SIMPLEX,
    "duplex": cv2.FONT_HERSHEY_DUPLEX,
    "triplex": cv2.FONT_HERSHEY_TRIPLEX,
    "complex": cv2.FONT_HERSHEY_COMPLEX,
}
_SUBDIAL_HOURS = {"none": (), "small_seconds": (6,), "bicompax": (3, 9), "tricompax": (3, 6, 9)}
_DATE_HOUR = {"3": 3, "6": 6}
_ROMAN = ("XII", "I", "II", "III", "IIII", "V", "VI", "VII", "VIII", "IX", "X", "XI")
_SHIFT = 4  # sub-pixel bits for cv2 drawing
_AA = cv2.LINE_AA
_CASE_R, _BEZEL_OUT, _DIAL_R = 1.0, 0.95, 0.82  # radii relative to the case radius
_STUB_END = 1.15  # strap stubs end this many case radii from the centre

# Photo / scene composition parameters (sizes are the head box's longer side / the image's shorter side).
PHOTO_LARGE = (0.25, 0.70)
PHOTO_SMALL = (0.10, 0.25)
PHOTO_SMALL_P = 0.2
SCENE_SIZE = (0.15, 0.35)
SCENE_EMPTY_P = 0.2


# ---------------------------------------------------------------------------------------------------------------------
# Brands and product-line variants
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BrandSpec:
    """One brand: a fixed combination of structural details plus the colours its product line comes in."""

    name: str
    case: str
    numerals: str
    hands: str
    bezel: str
    subdials: str
    date: str
    seconds: str
    logo_mark: str
    logo_font: str
    tagline: str
    texture: str
    dial_colours: tuple[str, ...]
    metals: tuple[str, ...]

    def structure(self) -> dict[str, str]:
        """The structural attributes only (what tells brands apart)."""
        return {key: getattr(self, key) for key in STRUCTURE}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Variant:
    """What varies within a brand's product line and from photo to photo."""

    dial: str
    metal: str
    strap: str
    strap_colour: str
    insert: str
    hour: float
    minute: float
    second: float
    day: int
    wear: float
    glare: float


def _shared_subsets(n: int, k: int, options: Sequence[str], rng: np.random.Generator) -> list[tuple[str, ...]]:
    """``n`` overlapping subsets of ``k`` options: brand i takes a cyclic window, so neighbours share options."""
    order = [options[i] for i in rng.permutation(len(options))]
    step = max(1, len(options) // 2 - 1)
    return [tuple(sorted(order[(i * step + j) % len(order)] for j in range(k))) for i in range(n)]


def _fix_conflicts(attrs: dict[str, str]) -> dict[str, str]:
    """Move the date window away from a sub-dial that occupies its place."""
    hours = _SUBDIAL_HOURS[attrs["subdials"]]
    if attrs["date"] in _DATE_HOUR and _DATE_HOUR[attrs["date"]] in hours:
        attrs["date"] = "430"
    return attrs


def _balanced_draw(n: int, rng: np.random.Generator) -> list[dict[str, str]]:
    """Each attribute's options dealt round-robin over the brands (in shuffled order), so options stay balanced."""
    columns = {}
    for key, opts in STRUCTURE.items():
        deck = [opts[i] for i in rng.permutation(len(opts))]
        columns[key] = [deck[j] for j in rng.permutation(n) % len(deck)]
    return [_fix_conflicts({key: columns[key][i] for key in STRUCTURE}) for i in range(n)]


def _min_differences(brands: Sequence[dict[str, str]]) -> int:
    pairs = [(a, b) for i, a in enumerate(brands) for b in brands[i + 1 :]]
    return min((sum(a[k] != b[k] for k in STRUCTURE) for a, b in pairs), default=len(STRUCTURE))


def make_brands(n: int, seed: int = 0, min_differences: int = 5) -> list[BrandSpec]:
    """``n`` brand specs, deterministic for ``seed``; any two differ in at least ``min_differences`` structural details
    (when achievable in 500 draws; the best draw otherwise).

    Names come from ``BRAND_NAMES`` in order, so ``--brands 8`` always gives the same names.
    """
    if not 1 <= n <= len(BRAND_NAMES):
        raise ValueError(f"brands must be in 1..{len(BRAND_NAMES)}, got {n}")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    best: list[dict[str, str]] = []
    for _ in range(500):
        draw = _balanced_draw(n, rng)
        if not best or _min_differences(draw) > _min_differences(best):
            best = draw
        if _min_differences(best) >= min_differences:
            break
    light, dark = _shared_subsets(n, 2, list(LIGHT_DIALS), rng), _shared_subsets(n, 2, list(DARK_DIALS), rng)
    dials = [tuple(sorted(a + b)) for a, b in zip(light, dark, strict=True)]
    metals = _shared_subsets(n, 3, list(METALS), rng)
    return [BrandSpec(name=BRAND_NAMES[i], dial_colours=dials[i], metals=metals[i], **best[i]) for i in range(n)]


def sample_variant(spec: BrandSpec, rng: np.random.Generator) -> Variant:
    """One product of ``spec``'s line, photographed at some time of day with some wear."""
    return Variant(
        dial=str(rng.choice(spec.dial_colours)),
        metal=str(rng.choice(spec.metals)),
        strap=str(rng.choice(STRAP_KINDS)),
        strap_colour=str(rng.choice(list(STRAP_COLOURS))),
        insert=str(rng.choice(list(INSERT_COLOURS))),
        hour=float(rng.uniform(0, 12)),
        minute=float(rng.uniform(0, 60)),
        second=float(rng.uniform(0, 60)),
        day=int(rng.integers(1, 32)),
        wear=float(rng.uniform(0, 1)),
        glare=float(rng.uniform(0.05, 0.3)),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Drawing helpers
# ---------------------------------------------------------------------------------------------------------------------
def _fix(points: np.ndarray) -> np.ndarray:
    """Float pixel points -> int32 fixed point for cv2's ``shift`` argument."""
    return np.round(np.asarray(points, np.float64) * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)


def _fill(img: np.ndarray, points: np.ndarray, colour: RGB | int) -> None:
    cv2.fillPoly(img, [_fix(points)], colour, _AA, _SHIFT)


def _line(img: np.ndarray, p: Sequence[float], q: Sequence[float], colour: RGB, thickness: int) -> None:
    pts = _fix(np.array([p, q]))
    cv2.line(img, tuple(pts[0, 0]), tuple(pts[1, 0]), colour, max(1, thickness), _AA, _SHIFT)


def _circle(img: np.ndarray, centre: Sequence[float], radius: float, colour: RGB, thickness: int = -1) -> None:
    c = _fix(np.array([centre]))[0, 0]
    cv2.circle(img, (int(c[0]), int(c[1])), round(radius * (1 << _SHIFT)), colour, thickness, _AA, _SHIFT)


def _text(
    img: np.ndarray, text: str, centre: Sequence[float], height: float, colour: RGB, font: int, thickness: int = 1
) -> None:
    """Text centred on ``centre``, scaled so that its cap height is ``height`` pixels."""
    (_, h), _ = cv2.getTextSize(text, font, 1.0, thickness)
    scale = height / max(h, 1)
    (w, h), _ = cv2.getTextSize(text, font, scale, thickness)
    org = (round(centre[0] - w / 2), round(centre[1] + h / 2))
    cv2.putText(img, text, org, font, scale, colour, thickness, _AA)


def _off(point: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``point`` shifted by (dx, dy)."""
    return point + np.array([dx, dy])


def _lum(colour: RGB) -> float:
    return 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]


def _shade(colour: RGB, factor: float) -> RGB:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in colour)  # type: ignore[return-value]


def shape_radius(shape: str, theta: np.ndarray) -> np.ndarray:
    """Radius of a unit case of ``shape`` at screen angle ``theta`` (radians, clockwise from 3 o'clock)."""
    theta = np.asarray(theta, np.float64)
    if shape == "round":
        return np.ones_like(theta)
    if shape == "cushion":  # rounded square: superellipse |x|^3 + |y|^3 = 0.93^3
        return 0.93 / (np.abs(np.cos(theta)) ** 3 + np.abs(np.sin(theta)) ** 3) ** (1 / 3)
    if shape == "octagon":  # flats facing 12/3/6/9
        return math.cos(math.pi / 8) / np.cos(np.mod(theta + math.pi / 8, math.pi / 4) - math.pi / 8)
    raise ValueError(f"unknown case shape {shape!r}")


def _outline(shape: str, centre: np.ndarray, radius: float, n: int = 128) -> np.ndarray:
    theta = np.linspace(0, 2 * math.pi, n, endpoint=False)
    r = radius * shape_radius(shape, theta)
    return centre + np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)


def _hour_dir(hour: float) -> np.ndarray:
    """Unit vector pointing from the centre to ``hour`` on the dial (screen coordinates, y down)."""
    a = hour / 12 * 2 * math.pi
    return np.array([math.sin(a), -math.cos(a)])


@functools.cache
def _polar(h: int, w: int, cx: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xs -= cx
    ys -= cy
    return np.hypot(xs, ys), np.arctan2(ys, xs)


# ---------------------------------------------------------------------------------------------------------------------
# The watch
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class Sprite:
    """A rendered watch: premultiplied RGBA canvas, its centre, case radius and case outline (canvas pixels)."""

    rgba: np.ndarray
    centre: np.ndarray
    radius: float
    outline: np.ndarray
    variant: Variant


class _Painter:
    """Draws one watch of ``spec`` / ``variant`` on an RGB canvas plus an alpha mask."""

    def __init__(self, spec: BrandSpec, variant: Variant, radius: float, rng: np.random.Generator) -> None:
        self.spec, self.v, self.rc, self.rng = spec, variant, float(radius), rng
        w, h = round(2.3 * radius), round(2 * _STUB_END * radius)
        self.rgb = np.zeros((h, w, 3), np.uint8)
        self.alpha = np.zeros((h, w), np.uint8)
        self.c = np.array([w / 2 - 0.05 * radius, h / 2])
        self.rd = _DIAL_R * radius
        self.metal = METALS[variant.metal]
        self.dial = DIAL_COLOURS[variant.dial]
        light_dial = _lum(self.dial) > 140
        self.ink: RGB = (28, 28, 32) if light_dial else (238, 238, 232)
        self.hand: RGB = (30, 30, 36) if light_dial else (240, 240, 236)
        self.thick = max(1, round(radius / 70))

    def at(self, hour: float, r: float) -> np.ndarray:
        return self.c + r * _hour_dir(hour)

    def dial_outline(self) -> np.ndarray:
        """The dial is round whatever the case shape."""
        return _outline("round", self.c, self.rd)

    # -- silhouette ----------------------------------------------------------------------------------------------
    def straps(self) -> None:
        rc, c = self.rc, self.c
        colour = METALS[self.v.metal] if self.v.strap == "bracelet" else STRAP_COLOURS[self.v.strap_colour]
        if self.v.strap == "rubber":
            colour = (34, 34, 36) if self.v.strap_colour in ("black", "navy") else _shade(colour, 0.7)
        sw = 1.0 * rc
        for sign in (-1, 1):
            y0, y1 = c[1] + sign * 0.7 * rc, c[1] + sign * _STUB_END * rc
            quad = np.array([[c[0] - sw / 2, y0], [c[0] + sw / 2, y0], [c[0] + 0.46 * rc, y1], [c[0] - 0.46 * rc, y1]])
            _fill(self.rgb, quad, colour)
            _fill(self.alpha, quad, 255)
            self._strap_detail(sign, y0, y1, colour)

    def _strap_detail(self, sign: int, y0: float, y1: float, colour: RGB) -> None:
        rc, cx = self.rc, self.c[0]
        if self.v.strap == "leather":
            stitch = _shade(colour, 1.6) if _lum(colour) < 90 else _shade(colour, 0.6)
            for x in (cx - 0.4 * rc, cx + 0.4 * rc):
                for t in np.arange(0.0, 1.0, 0.09):
                    ya, yb = y0 + (y1 - y0) * t, y0 + (y1 - y0) * (t + 0.05)
                    _line(self.rgb, (x, ya), (x, yb), stitch, self.thick)
        elif self.v.strap == "bracelet":
            dark = _shade(colour, 0.6)
            for t in np.arange(0.12, 1.0, 0.16):
                y = y0 + (y1 - y0) * t
                _line(self.rgb, (cx - 0.5 * rc, y), (cx + 0.5 * rc, y), dark, self.thick)
            for x in (cx - 0.17 * rc, cx + 0.17 * rc):
                _line(self.rgb, (x, y0), (x, y1), dark, self.thick)
        else:
            ribs = _shade(colour, 1.8)
            for t in np.arange(0.15, 1.0, 0.2):
                y = y0 + (y1 - y0) * t
                _line(self.rgb, (cx - 0.3 * rc, y), (cx + 0.3 * rc, y), ribs, self.thick)

    def case(self) -> np.ndarray:
        rc, c = self.rc, self.c
        lugs = [
            c
            + np.array([[sx * 0.46, sy * 0.5], [sx * 0.64, sy * 0.5], [sx * 0.62, sy * 1.02], [sx * 0.5, sy * 1.02]])
            * rc
            for sx in (-1, 1)
            for sy in (-1, 1)
        ]
        crown = np.array(
            [
                [c[0] + 0.9 * rc, c[1] - 0.12 * rc],
                [c[0] + 1.12 * rc, c[1] - 0.12 * rc],
                [c[0] + 1.12 * rc, c[1] + 0.12 * rc],
                [c[0] + 0.9 * rc, c[1] + 0.12 * rc],
            ]
        )
        outline = _outline(self.spec.case, c, rc * _CASE_R)
        parts = [(lug, _shade(self.metal, 0.85)) for lug in lugs] + [
            (crown, _shade(self.metal, 0.9)),
            (outline, self.metal),
        ]
        for poly, colour in parts:
            _fill(self.rgb, poly, colour)
            _fill(self.alpha, poly, 255)
        for k in range(1, 5):  # crown grooves
            x = c[0] + (0.9 + 0.22 * k / 5) * rc
            _line(self.rgb, (x, c[1] - 0.11 * rc), (x, c[1] + 0.11 * rc), _shade(self.metal, 0.6), 1)
        cv2.polylines(self.rgb, [_fix(outline)], True, _shade(self.metal, 0.55), self.thick, _AA, _SHIFT)
        self._metal_light()
        return outline

    def _metal_light(self) -> None:
        """A soft diagonal highlight across the metal parts."""
        h, w = self.alpha.shape
        r, theta = _polar(h, w, float(self.c[0]), float(self.c[1]))
        gain = 1.0 + 0.22 * np.cos(theta + 2.2) * np.minimum(r / self.rc, 1.2)
        self.rgb[:] = np.clip(self.rgb * gain[..., None], 0, 255).astype(np.uint8)

    # -- bezel -----------------------------------------------------------------------------------------------------
    def bezel(self) -> None:
        spec, rc, c = self.spec, self.rc, self.c
        outer = _outline(spec.case, c, rc * _BEZEL_OUT)
        kind = spec.bezel
        insert = INSERT_COLOURS[self.v.insert]
        base = insert if kind in ("diver", "tachymeter", "gmt") else _shade(self.metal, 1.08)
        _fill(self.rgb, outer, base)
        if kind == "gmt":  # two-tone insert: lower half in a second colour
            h, w = self.alpha.shape
            _, theta = _polar(h, w, float(c[0]), float(c[1]))
            mask = np.zeros((h, w), np.uint8)
            _fill(mask, outer, 255)
            lower = (theta > 0) & (mask > 0)
            second = INSERT_COLOURS["red"] if self.v.insert != "red" else INSERT_COLOURS["blue"]
            self.rgb[lower] = second
        cv2.polylines(self.rgb, [_fix(outer)], True, _shade(self.metal, 0.5), self.thick, _AA, _SHIFT)
        mark = (232, 232, 226) if kind in ("diver", "tachymeter", "gmt") else _shade(self.metal, 0.55)
        getattr(self, f"_bezel_{kind}")(mark)

    def _ring(self, hour: float) -> tuple[float, float]:
        """Inner and outer bezel radius along ``hour``."""
        theta = (hour / 12) * 2 * math.pi - math.pi / 2
        r_in = self.rd
        r_out = self.rc * _BEZEL_OUT * float(shape_radius(self.spec.case, np.array(theta)))
        return r_in, r_out

    def _triangle(self, r_in: float, r_out: float, mark: RGB) -> None:
        """The bezel's 12 o'clock triangle, pointing to the centre."""
        span = r_out - r_in
        base = self.at(0, r_out - 0.15 * span)
        _fill(
            self.rgb,
            np.array([_off(base, -0.3 * span, 0), _off(base, 0.3 * span, 0), self.at(0, r_in + 0.22 * span)]),
            mark,
        )

    def _bezel_plain(self, mark: RGB) -> None:
        pass

    def _bezel_diver(self, mark: RGB) -> None:
        for i in range(60):
            h = i / 5
            r_in, r_out = self._ring(h)
            mid, span = (r_in + r_out) / 2, r_out - r_in
            if i == 0:
                self._triangle(r_in, r_out, mark)
            elif i % 15 == 0:
                _text(self.rgb, str(i), self.at(h, mid), 0.32 * span, mark, cv2.FONT_HERSHEY_SIMPLEX, self.thick)
            elif i % 5 == 0:
                _line(self.rgb, self.at(h, mid - 0.25 * span), self.at(h, r_out - 0.2 * span), mark, 2 * self.thick)
            elif i < 15:
                _line(self.rgb, self.at(h, r_out - 0.35 * span), self.at(h, r_out - 0.15 * span), mark, self.thick)

    def _bezel_tachymeter(self, mark: RGB) -> None:
        for i in range(120):
            h = i / 10
            r_in, r_out = self._ring(h)
            span = r_out - r_in
            length = 0.45 if i % 10 == 0 else 0.22
            _line(self.rgb, self.at(h, r_out - 0.1 * span), self.at(h, r_out - length * span), mark, 1)
        for h, label in zip(
            (1, 2, 4, 5, 7, 8, 10, 11), ("500", "300", "200", "150", "120", "100", "80", "70"), strict=True
        ):
            r_in, r_out = self._ring(h)
            _text(
                self.rgb,
                label,
                self.at(h, r_in + 0.32 * (r_out - r_in)),
                0.22 * (r_out - r_in),
                mark,
                cv2.FONT_HERSHEY_SIMPLEX,
            )

    def _bezel_fluted(self, mark: RGB) -> None:
        light = _shade(self.metal, 1.25)
        for i in range(72):
            h = i / 6
            r_in, r_out = self._ring(h)
            colour = mark if i % 2 else light
            _line(
                self.rgb,
                self.at(h, r_in + 0.08 * (r_out - r_in)),
                self.at(h, r_out - 0.05 * (r_out - r_in)),
                colour,
                2 * self.thick,
            )

    def _bezel_gmt(self, mark: RGB) -> None:
        for i in range(12):
            r_in, r_out = self._ring(i)
            mid, span = (r_in + r_out) / 2, r_out - r_in
            if i == 0:
                self._triangle(r_in, r_out, mark)
            else:
                _text(self.rgb, str(2 * i), self.at(i, mid), 0.34 * span, mark, cv2.FONT_HERSHEY_SIMPLEX, self.thick)

    def _bezel_studs(self, mark: RGB) -> None:
        for i in range(12):
            r_in, r_out = self._ring(i)
            centre = self.at(i, (r_in + r_out) / 2)
            _circle(self.rgb, centre, 0.26 * (r_out - r_in), _shade(self.metal, 1.3))
            _circle(self.rgb, centre, 0.26 * (r_out - r_in), mark, 1)

    # -- dial --------------------------------------------------------------------------------------------------------
    def dial_face(self) -> None:
        h, w = self.alpha.shape
        mask = np.zeros((h, w), np.uint8)
        outline = self.dial_outline()
        _fill(mask, outline, 255)
        x0, y0, bw, bh = cv2.boundingRect(outline.astype(np.float32))
        x0, y0 = max(x0 - 1, 0), max(y0 - 1, 0)
        sl = np.s_[y0 : y0 + bh + 2, x0 : x0 + bw + 2]
        r, theta = _polar(h, w, float(self.c[0]), float(self.c[1]))
        r, theta = r[sl] / self.rd, theta[sl]
        texture = self.spec.texture
        if texture == "sunburst":
            shade = 1.0 + 0.16 * np.cos(2 * theta - 1.0) + 0.035 * np.sin(140 * theta)
        elif texture == "guilloche":
            shade = 1.0 + 0.07 * np.sin(55 * r + 3.0 * np.sin(8 * theta))
        elif texture == "grain":
            noise = self.rng.standard_normal(r.shape).astype(np.float32)
            shade = 1.0 + 0.07 * cv2.GaussianBlur(noise, (0, 0), 1.2)
        else:
            shade = 1.04 - 0.1 * r**2
        colour = np.asarray(self.dial, np.float32) * shade[..., None].astype(np.float32) + (
            6 if _lum(self.dial) < 60 else 0
        )
        m = mask[sl][..., None].astype(np.float32) / 255
        self.rgb[sl] = np.clip(self.rgb[sl] * (1 - m) + colour * m, 0, 255).astype(np.uint8)
        cv2.polylines(self.rgb, [_fix(outline)], True, _shade(self.metal, 0.45), self.thick, _AA, _SHIFT)

    def minute_track(self) -> None:
        for i in range(60):
            h = i / 5
            r = self.rd
            length = 0.085 if i % 5 == 0 else 0.045
            thick = 2 * self.thick if i % 5 == 0 else self.thick
            _line(self.rgb, self.at(h, r * 0.965), self.at(h, r * (0.965 - length)), self.ink, thick)

    def _skipped_hours(self) -> set[int]:
        skip = {h % 12 for h in _SUBDIAL_HOURS[self.spec.subdials]}
        if self.spec.date in _DATE_HOUR:
            skip.add(_DATE_HOUR[self.spec.date] % 12)
        return skip

    def numerals(self) -> None:
        style, rd, ink = self.spec.numerals, self.rd, self.ink
        skip = self._skipped_hours()
        for i in range(12):
            if i in skip:
                continue
            edge = self.rd
            if style in ("roman", "arabic") or (style == "quarters" and i % 3 == 0):
                text = _ROMAN[i] if style == "roman" else str(i or 12)
                font = cv2.FONT_HERSHEY_COMPLEX if style == "roman" else cv2.FONT_HERSHEY_SIMPLEX
                height = 0.13 * rd if style != "quarters" else 0.17 * rd
                _text(self.rgb, text, self.at(i, edge * 0.76), height, ink, font, max(1, round(self.thick * 1.3)))
            elif style in ("baton", "quarters"):
                width = 3 * self.thick if i else 5 * self.thick
                _line(self.rgb, self.at(i, edge * 0.86), self.at(i, edge * 0.68), ink, width)
                if i == 0 and style == "baton":
                    for dx in (-0.05, 0.05):
                        off = np.array([dx * rd, 0])
                        _line(
                            self.rgb, self.at(0, edge * 0.86) + off, self.at(0, edge * 0.68) + off, ink, 2 * self.thick
                        )
            elif style == "dots":
                _circle(self.rgb, self.at(i, edge * 0.8), (0.06 if i % 3 == 0 else 0.04) * rd, ink)

    def subdials(self) -> None:
        rd = self.rd
        sub_colour = _shade(self.dial, 0.95) if _lum(self.dial) > 60 else _shade(self.dial, 1.15)
        for hour in _SUBDIAL_HOURS[self.spec.subdials]:
            centre, r = self.at(hour, 0.46 * rd), 0.17 * rd
            _circle(self.rgb, centre, r, sub_colour)
            _circle(self.rgb, centre, r, self.ink, 1)
            for k in range(12):
                d = _hour_dir(k)
                _line(self.rgb, centre + d * r * 0.88, centre + d * r * 0.74, self.ink, 1)
            angle = self.rng.uniform(0, 12)
            _line(self.rgb, centre, centre + _hour_dir(angle) * r * 0.8, self.ink, self.thick)

    def date_window(self) -> None:
        if self.spec.date == "none":
            return
        hour = {"3": 3.0, "6": 6.0, "430": 4.5}[self.spec.date]
        centre = self.at(hour, self.rd * 0.72)
        w, h = 0.17 * self.rd, 0.13 * self.rd
        box = centre + np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2
        _fill(self.rgb, box, (244, 244, 240))
        cv2.polylines(self.rgb, [_fix(box)], True, _shade(self.metal, 0.5), self.thick, _AA, _SHIFT)
        _text(self.rgb, str(self.v.day), centre, 0.55 * h, (20, 20, 20), cv2.FONT_HERSHEY_SIMPLEX, self.thick)

    def logo(self) -> None:
        rd, spec, ink = self.rd, self.spec, self.ink
        text, font = spec.name.upper(), _FONTS[spec.logo_font]
        thickness = max(1, round(self.thick * 1.2))
        (tw, th), _ = cv2.getTextSize(text, font, 1.0, thickness)
        height = 0.4 * rd * th / tw
        centre = _off(self.c, 0, -0.36 * rd)
        _text(self.rgb, text, centre, height, ink, font, thickness)
        self._logo_mark(_off(centre, 0, -0.17 * rd), 0.065 * rd)
        if spec.tagline:
            below_6 = 6 not in _SUBDIAL_HOURS[spec.subdials]
            where = _off(self.c, 0, 0.3 * rd) if below_6 else _off(centre, 0, 0.13 * rd)
            _text(self.rgb, spec.tagline, where, 0.055 * rd, ink, cv2.FONT_HERSHEY_SIMPLEX)

    def _logo_mark(self, centre: np.ndarray, s: float) -> None:
        kind, ink = self.spec.logo_mark, self.ink
        if kind == "crown":
            pts = centre + s * np.array(
                [[-1, 0.6], [-1, -0.4], [-0.5, 0.1], [0, -0.8], [0.5, 0.1], [1, -0.4], [1, 0.6]]
            )
            _fill(self.rgb, pts, ink)
        elif kind == "triangle":
            _fill(self.rgb, centre + s * np.array([[-1, 0.7], [1, 0.7], [0, -0.9]]), ink)
        elif kind == "star":
            a = np.arange(10) * math.pi / 5 - math.pi / 2
            rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
            _fill(self.rgb, centre + s * np.stack([rad * np.cos(a), rad * np.sin(a)], 1), ink)
        elif kind == "bar":
            _line(self.rgb, _off(centre, -1.4 * s, 0), _off(centre, 1.4 * s, 0), ink, 2 * self.thick)

    # -- hands ---------------------------------------------------------------------------------------------------
    def _hand_polygon(self, length: float, width: float) -> np.ndarray:
        """The hand outline in local coordinates: x across, y along the hand towards its tip."""
        kind, w, L = self.spec.hands, width, length
        if kind == "baton":
            pts = [(-w / 2, -0.12 * L), (w / 2, -0.12 * L), (w / 2, L), (-w / 2, L)]
        elif kind == "dauphine":
            pts = [(0, -0.1 * L), (0.75 * w, 0.22 * L), (0, L), (-0.75 * w, 0.22 * L)]
        elif kind == "arrow":
            pts = [
                (-w / 3, -0.1 * L),
                (w / 3, -0.1 * L),
                (w / 3, 0.72 * L),
                (w, 0.72 * L),
                (0, L),
                (-w, 0.72 * L),
                (-w / 3, 0.72 * L),
            ]
        elif kind == "leaf":
            t = np.linspace(0, 1, 16)
            right = np.stack([0.8 * w * np.sin(math.pi * t**0.8), -0.08 * L + 1.08 * L * t], 1)
            return np.concatenate([right, right[::-1] * [-1, 1]])
        else:  # sword / skeleton
            pts = [(-0.3 * w, -0.1 * L), (0.3 * w, -0.1 * L), (0.55 * w, 0.6 * L), (0, L), (-0.55 * w, 0.6 * L)]
        return np.asarray(pts, np.float64)

    def _place(self, local: np.ndarray, hour: float) -> np.ndarray:
        d = _hour_dir(hour)
        across = np.array([-d[1], d[0]])
        return self.c + local[:, :1] * across + local[:, 1:] * d

    def hands(self) -> None:
        rd, v = self.rd, self.v
        hour_pos = (v.hour + v.minute / 60) % 12
        outline = _shade(self.hand, 0.5) if _lum(self.hand) > 128 else (200, 200, 200)
        for pos, length, width in ((hour_pos, 0.5 * rd, 0.1 * rd), (v.minute / 5, 0.8 * rd, 0.075 * rd)):
            poly = self._place(self._hand_polygon(length, width), pos)
            _fill(self.rgb, poly, self.hand)
            cv2.polylines(self.rgb, [_fix(poly)], True, outline, 1, _AA, _SHIFT)
            if self.spec.hands == "skeleton":
                inner = self._place(self._hand_polygon(length, width) * [0.45, 0.8] + [0, 0.12 * length], pos)
                _fill(self.rgb, inner, self.dial)
        self._seconds_hand()
        _circle(self.rgb, self.c, 0.045 * rd, self.hand)
        _circle(self.rgb, self.c, 0.045 * rd, outline, 1)

    def _seconds_hand(self) -> None:
        kind, rd = self.spec.seconds, self.rd
        if kind == "none" or "small_seconds" == self.spec.subdials:
            return
        colour = (205, 36, 30) if kind == "red" else self.hand
        d = _hour_dir(self.v.second / 5)
        _line(self.rgb, self.c - 0.2 * rd * d, self.c + 0.86 * rd * d, colour, self.thick)
        if kind == "lollipop":
            _circle(self.rgb, self.c + 0.66 * rd * d, 0.045 * rd, colour)

    # -- finish ----------------------------------------------------------------------------------------------------
    def wear_and_glare(self) -> None:
        rng, rc, c = self.rng, self.rc, self.c
        overlay = self.rgb.copy()
        for _ in range(int(self.v.wear * 6)):
            a, r = rng.uniform(0, 2 * math.pi), rng.uniform(0.3, 0.95) * rc
            p = c + r * np.array([math.cos(a), math.sin(a)])
            q = p + rng.uniform(-0.15, 0.15, 2) * rc
            _line(overlay, p, q, (235, 235, 235), 1)
        glare = np.zeros_like(self.alpha)
        axes = (round(self.rd * 0.9), round(self.rd * 0.35))
        centre = (round(c[0] - 0.25 * self.rd), round(c[1] - 0.35 * self.rd))
        cv2.ellipse(glare, centre, axes, -35, 0, 360, 255, -1, _AA)
        dial = np.zeros_like(self.alpha)
        _fill(dial, self.dial_outline(), 255)
        g = (np.minimum(glare, dial).astype(np.float32) / 255 * self.v.glare)[..., None]
        mixed = cv2.addWeighted(self.rgb, 0.6, overlay, 0.4, 0).astype(np.float32)
        self.rgb[:] = np.clip(mixed * (1 - g) + 255 * g, 0, 255).astype(np.uint8)

    def sprite(self, outline: np.ndarray) -> Sprite:
        cv2.polylines(self.rgb, [_fix(outline)], True, _shade(self.metal, 0.25), 3 * self.thick, _AA, _SHIFT)
        rgb = np.minimum(self.rgb, self.alpha[..., None])  # keep it premultiplied
        return Sprite(np.dstack([rgb, self.alpha]), self.c.copy(), self.rc, outline, self.v)


def render_watch(
    spec: BrandSpec, rng: np.random.Generator | None = None, variant: Variant | None = None, radius: float = 150.0
) -> Sprite:
    """Draw one watch of ``spec`` (a random product-line ``variant`` unless given) with a case of ``radius`` pixels.

    Returns a premultiplied RGBA sprite with strap stubs above and below the case.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    variant = variant if variant is not None else sample_variant(spec, rng)
    p = _Painter(spec, variant, radius, rng)
    p.straps()
    outline = p.case()
    p.bezel()
    p.dial_face()
    p.minute_track()
    p.subdials()
    p.numerals()
    p.date_window()
    p.logo()
    p.hands()
    p.wear_and_glare()
    return p.sprite(outline)


# ---------------------------------------------------------------------------------------------------------------------
# Backgrounds, distractors, placement, compositing
# ---------------------------------------------------------------------------------------------------------------------
_SKIMAGE_BACKGROUNDS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "brick",
    "grass",
    "gravel",
    "moon",
    "hubble_deep_field",
    "immunohistochemistry",
)


@functools.cache
def background_sources() -> tuple[np.ndarray, ...]:
    """Real photos shipped inside scikit-image and scikit-learn (no downloads), as RGB uint8."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    images = []
    for name in _SKIMAGE_BACKGROUNDS:
        img = np.asarray(getattr(skimage.data, name)())
        images.append(np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3])
    images.extend(np.asarray(img) for img in load_sample_images().images)
    return tuple(np.ascontiguousarray(img, dtype=np.uint8) for img in images)


def background_names() -> tuple[str, ...]:
    """Names of `background_sources`, in order."""
    return (*_SKIMAGE_BACKGROUNDS, "china", "flower")


def make_background(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """A random crop of a real photo (flipped, recoloured, sometimes defocused), or now and then a studio backdrop.

    Returns the image and the name of its source.
    """
    width, height = size
    if rng.random() < 0.1:
        return _studio_backdrop(rng, size), "studio"
    sources = background_sources()
    which = int(rng.integers(len(sources)))
    src = sources[which]
    sh, sw = src.shape[:2]
    aspect = width / height
    ch = min(sh, sw / aspect) * rng.uniform(0.45, 1.0)
    cw = ch * aspect
    y0, x0 = rng.uniform(0, sh - ch), rng.uniform(0, sw - cw)
    crop = src[int(y0) : int(y0 + ch), int(x0) : int(x0 + cw)]
    img = cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = _recolour(np.ascontiguousarray(img), rng)
    if rng.random() < 0.5:  # hazy or muted backdrop
        mean = img.reshape(-1, 3).mean(0)
        img = np.clip(mean + (img - mean) * rng.uniform(0.5, 0.9), 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(1.5, 4.0))
    return img, background_names()[which]


def _studio_backdrop(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    top, bottom = rng.uniform(150, 250, 3), rng.uniform(90, 230, 3)
    t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    img = top * (1 - t) + bottom * t
    return np.ascontiguousarray(np.broadcast_to(img, (height, width, 3)).clip(0, 255).astype(np.uint8))


def _recolour(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-25, 26))) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.5, 1.3), 0, 255)
    out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    if rng.random() < 0.15:
        out = np.repeat(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    return out


def draw_distractors(img: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Non-watch objects (cards, pens, ellipses, polygons) in place."""
    h, w = img.shape[:2]
    s = min(h, w)
    for _ in range(count):
        colour = tuple(int(c) for c in rng.integers(20, 236, 3))
        centre = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        kind = rng.choice(["card", "pen", "ellipse", "polygon"])
        if kind == "card":
            half = np.array([rng.uniform(0.08, 0.2), rng.uniform(0.12, 0.3)]) * s
            a = rng.uniform(0, math.pi)
            rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
            corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
            _fill(img, centre + corners @ rot.T, colour)
            _fill(img, centre + (corners * 0.8) @ rot.T, _shade(colour, 0.45))  # type: ignore[arg-type]
        elif kind == "pen":
            d = rng.normal(size=2)
            d = d / np.linalg.norm(d) * rng.uniform(0.15, 0.4) * s
            _line(img, centre - d, centre + d, colour, int(rng.integers(4, 12)))  # type: ignore[arg-type]
        elif kind == "ellipse":
            axes = (round(rng.uniform(0.1, 0.2) * s), round(rng.uniform(0.02, 0.06) * s))
            cv2.ellipse(img, (round(centre[0]), round(centre[1])), axes, rng.uniform(0, 180), 0, 360, colour, -1, _AA)
        else:
            n = int(rng.integers(3, 6))
            a = np.sort(rng.uniform(0, 2 * math.pi, n))
            r = rng.uniform(0.05, 0.15, n) * s
            _fill(img, centre + np.stack([r * np.cos(a), r * np.sin(a)], 1), colour)  # type: ignore[arg-type]


def sample_photo_size(rng: np.random.Generator) -> float:
    """Relative size of a product photo's watch: mostly large, about one in five small."""
    lo, hi = PHOTO_SMALL if rng.random() < PHOTO_SMALL_P else PHOTO_LARGE
    return float(rng.uniform(lo, hi))


@dataclass
class Pose:
    """Where a sprite goes: canvas -> image homography and the head box (x1, y1, x2, y2) it produces."""

    matrix: np.ndarray
    head: np.ndarray
    full: np.ndarray
    scale: float  # image pixels per canvas pixel, roughly
    angle: float  # rotation in degrees, clockwise on screen


def _pose(
    sprite: Sprite,
    rng: np.random.Generator,
    side: float,
    image_size: tuple[int, int],
    centre: tuple[float, float] | None = None,
) -> Pose:
    """Rotation + mild perspective, scaled so that the head box's longer side is ``side`` px, fully inside the image."""
    width, height = image_size
    angle = rng.uniform(-20, 20) if rng.random() < 0.9 else rng.uniform(-60, 60)
    a = math.radians(angle)
    norm = np.array(
        [
            [1 / sprite.radius, 0, -sprite.centre[0] / sprite.radius],
            [0, 1 / sprite.radius, -sprite.centre[1] / sprite.radius],
            [0, 0, 1],
        ]
    )
    rot = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    square = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32)
    jitter = rng.uniform(-0.1, 0.1, (4, 2)).astype(np.float32)
    persp = cv2.getPerspectiveTransform(square, square + jitter)
    unit = persp @ rot @ norm
    pts = cv2.perspectiveTransform(sprite.outline.reshape(-1, 1, 2).astype(np.float64), unit).reshape(-1, 2)
    lo, hi = pts.min(0), pts.max(0)
    k = side / float((hi - lo).max())
    half = (hi - lo) * k / 2
    if centre is None:
        centre = (rng.uniform(half[0], width - half[0]), rng.uniform(half[1], height - half[1]))
    shift = np.array(
        [[k, 0, centre[0] - k * (lo[0] + hi[0]) / 2], [0, k, centre[1] - k * (lo[1] + hi[1]) / 2], [0, 0, 1]]
    )
    matrix = shift @ unit
    head = np.array([centre[0] - half[0], centre[1] - half[1], centre[0] + half[0], centre[1] + half[1]])
    h, w = sprite.rgba.shape[:2]
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64).reshape(-1, 1, 2)
    cpts = cv2.perspectiveTransform(corners, matrix).reshape(-1, 2)
    return Pose(matrix, head, np.concatenate([cpts.min(0), cpts.max(0)]), k / sprite.radius, angle)


def composite(img: np.ndarray, sprite: Sprite, pose: Pose, rng: np.random.Generator) -> None:
    """Warp ``sprite`` by ``pose`` and alpha-composite it (with a soft drop shadow) onto ``img`` in place."""
    height, width = img.shape[:2]
    matrix, rgba = pose.matrix, sprite.rgba
    if pose.scale < 0.75:  # pre-shrink with area averaging so fine lines do not alias
        f = pose.scale * 1.3
        rgba = cv2.resize(rgba, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        matrix = matrix @ np.diag([1 / f, 1 / f, 1])
    side = float(max(pose.head[2] - pose.head[0], pose.head[3] - pose.head[1]))
    margin = int(0.08 * side) + 2
    x0, y0 = (max(0, int(v) - margin) for v in pose.full[:2])
    x1, y1 = min(width, int(pose.full[2]) + margin + 1), min(height, int(pose.full[3]) + margin + 1)
    if x1 <= x0 or y1 <= y0:
        return
    m = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]]) @ matrix
    warped = cv2.warpPerspective(rgba, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0))
    fg = warped[..., :3].astype(np.float32)
    alpha = warped[..., 3:].astype(np.float32) / 255
    shadow_shift = np.float32([[1, 0, rng.uniform(-0.04, 0.04) * side], [0, 1, rng.uniform(0.0, 0.05) * side]])
    shadow = cv2.warpAffine(alpha, shadow_shift, (x1 - x0, y1 - y0))
    shadow = cv2.GaussianBlur(shadow, (0, 0), 0.02 * side + 0.5)[..., None] * rng.uniform(0.25, 0.55)
    roi = img[y0:y1, x0:x1].astype(np.float32) * (1 - shadow)
    img[y0:y1, x0:x1] = np.clip(roi * (1 - alpha) + fg, 0, 255).astype(np.uint8)


def finish_photo(img: np.ndarray, rng: np.random.Generator) -> bytes:
    """Lighting, blur, sensor noise and JPEG compression; returns the JPEG bytes."""
    height, width = img.shape[:2]
    a, slope = rng.uniform(0, 2 * math.pi), rng.uniform(-0.35, 0.35) / max(width, height)
    xs = (np.arange(width, dtype=np.float32) - width / 2) * (slope * math.cos(a))
    ys = (np.arange(height, dtype=np.float32) - height / 2) * (slope * math.sin(a))
    gain = (rng.uniform(0.75, 1.15) * (1 + xs[None, :, None] + ys[:, None, None])).astype(np.float32)
    out = img * (gain * rng.uniform(0.94, 1.06, 3).astype(np.float32))
    if rng.random() < 0.35:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 1.5))
    elif rng.random() < 0.1:
        k = int(rng.integers(3, 8))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2] = 1 / k
        rot = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), rng.uniform(0, 180), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (k, k))
        out = cv2.filter2D(out, -1, kernel / max(kernel.sum(), 1e-6))
    if rng.random() < 0.7:
        noise = rng.standard_normal(out.shape, dtype=np.float32)
        out = cv2.scaleAdd(noise, rng.uniform(1.0, 7.0), out)
    bgr = cv2.cvtColor(np.clip(out, 0, 255, out=out).astype(np.uint8), cv2.COLOR_RGB2BGR)
    quality = int(rng.integers(55, 96))
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


# ---------------------------------------------------------------------------------------------------------------------
# Photos, scenes and the dataset
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Job:
    kind: int  # 1 = photo, 2 = scene
    index: int  # photo index within its brand / scene index
    brand: int  # brand index for photos, -1 for scenes
    file_name: str


def _object(sprite: Sprite, pose: Pose, brand: int, image_size: tuple[int, int]) -> dict[str, Any]:
    x1, y1, x2, y2 = (float(v) for v in pose.head)
    width, height = image_size
    x1, y1, x2, y2 = max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)
    v = sprite.variant
    return {
        "brand": brand,
        "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
        "rel_size": round(max(x2 - x1, y2 - y1) / min(width, height), 4),
        "attributes": {"dial": v.dial, "metal": v.metal, "strap": v.strap, "rotation": round(pose.angle, 1)},
    }


@dataclass
class Rendered:
    """One synthetic image: its JPEG bytes, its watches (brand index, COCO bbox, rel_size, attributes), its backdrop."""

    jpeg: bytes
    objects: list[dict[str, Any]]
    background: str


def render_photo(specs: Sequence[BrandSpec], brand: int, index: int, seed: int, size: tuple[int, int]) -> Rendered:
    """Product photo ``index`` of brand ``brand``: one watch; depends only on (seed, brand, index)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, brand, index)))
    img, background = make_background(rng, size)
    if rng.random() < 0.3:
        draw_distractors(img, rng, int(rng.integers(1, 4)))
    sprite = render_watch(specs[brand], rng)
    pose = _pose(sprite, rng, sample_photo_size(rng) * min(size), size)
    composite(img, sprite, pose, rng)
    return Rendered(finish_photo(img, rng), [_object(sprite, pose, brand, size)], background)


def _overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


def render_scene(specs: Sequence[BrandSpec], index: int, seed: int, size: tuple[int, int]) -> Rendered:
    """Scene ``index`` for batch labeling: 2-4 watches of different brands (or, now and then, none)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, index)))
    img, background = make_background(rng, size)
    if rng.random() < 0.5:
        draw_distractors(img, rng, int(rng.integers(1, 4)))
    count = 0 if rng.random() < SCENE_EMPTY_P else int(rng.integers(2, 5))
    brands = rng.permutation(len(specs))[: min(count, len(specs))]
    placed: list[tuple[Sprite, Pose, int]] = []
    for brand in brands:
        sprite = render_watch(specs[int(brand)], rng)
        for _ in range(60):
            pose = _pose(sprite, rng, rng.uniform(*SCENE_SIZE) * min(size), size)
            if not any(_overlaps(pose.head, p.full) or _overlaps(pose.full, p.head) for _, p, _ in placed):
                placed.append((sprite, pose, int(brand)))
                break
    for sprite, pose, _ in placed:
        composite(img, sprite, pose, rng)
    return Rendered(finish_photo(img, rng), [_object(s, p, b, size) for s, p, b in placed], background)


def _run_job(args: tuple[_Job, Sequence[BrandSpec], int, tuple[int, int], str]) -> tuple[_Job, Rendered]:
    job, specs, seed, size, out_dir = args
    if job.kind == 1:
        rendered = render_photo(specs, job.brand, job.index, seed, size)
    else:
        rendered = render_scene(specs, job.index, seed, size)
    atomic_write_bytes(Path(out_dir) / job.file_name, rendered.jpeg, fsync=False)
    rendered.jpeg = b""  # written; do not ship it back between processes
    return job, rendered


def _jobs(specs: Sequence[BrandSpec], photos_per_brand: int, scenes: int) -> list[_Job]:
    jobs = [
        _Job(1, i, b, f"photos/{spec.name}/{spec.name}_{i:04d}.jpg")
        for b, spec in enumerate(specs)
        for i in range(photos_per_brand)
    ]
    jobs += [_Job(2, i, -1, f"scenes/scene_{i:04d}.jpg") for i in range(scenes)]
    return jobs


def _coco(
    specs: Sequence[BrandSpec], results: Sequence[tuple[_Job, Rendered]], size: tuple[int, int], seed: int,
    brand_seed: int,
) -> dict[str, Any]:
    width, height = size
    images, annotations = [], []
    for image_id, (job, rendered) in enumerate(results, start=1):
        entry = {
            "id": image_id,
            "file_name": job.file_name,
            "width": width,
            "height": height,
            "split": "photos" if job.kind == 1 else "scenes",
            "background": rendered.background,
        }
        images.append(entry)
        for obj in rendered.objects:
            w, h = obj["bbox"][2:]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": obj["brand"] + 1,
                    "bbox": obj["bbox"],
                    "area": round(w * h, 2),
                    "iscrowd": 0,
                    "rel_size": obj["rel_size"],
                    "attributes": obj["attributes"],
                }
            )
    categories = [
        {"id": i + 1, "name": s.name, "supercategory": "watch", "spec": s.structure()} for i, s in enumerate(specs)
    ]
    info = {
        "description": "Synthetic fine-grained watch benchmark (pipelines.make_watches)",
        "seed": seed,
        "brand_seed": brand_seed,
        "brands": [s.to_dict() for s in specs],
    }
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}


def _prepare(out: Path, overwrite: bool) -> None:
    if (out / "annotations.json").exists() or (out / "photos").exists() or (out / "scenes").exists():
        if not overwrite:
            raise FileExistsError(
                f"{out} already holds a watch dataset; pass overwrite=True (--overwrite) to replace it"
            )
        for sub in ("photos", "scenes"):
            shutil.rmtree(out / sub, ignore_errors=True)
        (out / "annotations.json").unlink(missing_ok=True)


def _execute(tasks: list[tuple], workers: int, show_progress: bool) -> Iterator[tuple[_Job, Rendered]]:
    bar = tqdm(total=len(tasks), desc="watches", unit="img", disable=not show_progress)
    try:
        if workers <= 1:
            for task in tasks:
                yield _run_job(task)
                bar.update()
        else:
            with ProcessPoolExecutor(workers) as pool:
                for result in pool.map(_run_job, tasks, chunksize=4):
                    yield result
                    bar.update()
    finally:
        bar.close()


def generate(
    out_dir: str | os.PathLike,
    brands: int = 8,
    photos_per_brand: int = 40,
    scenes: int = 0,
    seed: int = 0,
    size: tuple[int, int] = (640, 480),
    workers: int = 1,
    overwrite: bool = False,
    show_progress: bool = False,
    brand_seed: int | None = None,
) -> dict[str, Any]:
    """Write the synthetic watch benchmark to ``out_dir`` and return a summary.

    ``brand_seed`` (default: ``seed``) fixes the brand definitions; a held-out test set of the same brands is another
    ``seed`` with the training set's ``brand_seed``.

    Layout: ``photos/<brand>/<brand>_NNNN.jpg`` (one watch each), ``scenes/scene_NNNN.jpg`` (0 or 2-4 watches) and
    ``annotations.json`` (COCO; written last; categories = brands; each annotation also has ``rel_size``, the head box's
    longer side over the image's shorter side). ``size`` is (width, height). Same seed -> same bytes.
    """
    if photos_per_brand < 0 or scenes < 0:
        raise ValueError("photos_per_brand and scenes must be >= 0")
    if min(size) < 32:
        raise ValueError(f"size must be at least 32x32, got {size}")
    size = (int(size[0]), int(size[1]))
    out = Path(out_dir)
    _prepare(out, overwrite)
    brand_seed = seed if brand_seed is None else brand_seed
    specs = make_brands(brands, brand_seed)
    for spec in specs:
        (out / "photos" / spec.name).mkdir(parents=True, exist_ok=True)
    if scenes:
        (out / "scenes").mkdir(parents=True, exist_ok=True)
    jobs = _jobs(specs, photos_per_brand, scenes)
    setup = time.perf_counter()
    background_sources()  # load the photos once, outside the timing
    start = time.perf_counter()
    tasks = [(job, specs, seed, size, str(out)) for job in jobs]
    results = list(_execute(tasks, workers, show_progress))  # in job order, whatever the workers
    seconds = time.perf_counter() - start
    coco = _coco(specs, results, size, seed, brand_seed)
    atomic_write_bytes(out / "annotations.json", json.dumps(coco, indent=1).encode())
    summary = {
        "out_dir": str(out),
        "brands": [s.name for s in specs],
        "photos": brands * photos_per_brand,
        "scenes": scenes,
        "annotations": len(coco["annotations"]),
        "setup_seconds": round(start - setup, 2),
        "seconds": round(seconds, 2),
        "images_per_s": round(len(jobs) / max(seconds, 1e-9), 2),
    }
    logger.info(
        "wrote %d images (%d annotations) to %s in %.1fs (%.1f images/s)",
        len(jobs),
        summary["annotations"],
        out,
        seconds,
        summary["images_per_s"],
    )
    return summary
