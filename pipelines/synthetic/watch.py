"""`render_watch`: paint one watch of a brand, deterministically from its `Variant`, into a premultiplied sprite."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipelines.synthetic.brands import BrandSpec
from pipelines.synthetic.canvas import Canvas
from pipelines.synthetic.case import draw_bezel, draw_case, draw_straps
from pipelines.synthetic.dial import (
    draw_date_window,
    draw_dial_face,
    draw_logo,
    draw_minute_track,
    draw_numerals,
    draw_subdials,
)
from pipelines.synthetic.draw import AA, fill, line, polyline, shade
from pipelines.synthetic.hands import draw_hands
from pipelines.synthetic.variant import Variant

#: Painting steps after the case, in order (each draws on the canvas).
DIAL_STEPS = (draw_bezel, draw_dial_face, draw_minute_track, draw_subdials, draw_numerals, draw_date_window,
              draw_logo, draw_hands)  # fmt: skip


@dataclass
class Sprite:
    """A rendered watch: premultiplied RGBA canvas, its centre, case radius and case outline (canvas pixels)."""

    rgba: np.ndarray
    centre: np.ndarray
    radius: float
    outline: np.ndarray
    variant: Variant


def draw_wear_and_glare(cv: Canvas) -> None:
    """The variant's scratches (faint, blended in) and a glare ellipse on the dial."""
    rc, c = cv.rc, cv.c
    overlay = cv.rgb.copy()
    for s in cv.v.scratches:
        p = c + s.radius * rc * np.array([np.cos(s.angle), np.sin(s.angle)])
        line(overlay, p, p + np.array([s.dx, s.dy]) * rc, (235, 235, 235), 1)
    glare = np.zeros_like(cv.alpha)
    axes = (round(cv.rd * 0.9), round(cv.rd * 0.35))
    centre = (round(c[0] - 0.25 * cv.rd), round(c[1] - 0.35 * cv.rd))
    cv2.ellipse(glare, centre, axes, -35, 0, 360, 255, -1, AA)
    dial = np.zeros_like(cv.alpha)
    fill(dial, cv.dial_outline(), 255)
    g = (np.minimum(glare, dial).astype(np.float32) / 255 * cv.v.glare)[..., None]
    mixed = cv2.addWeighted(cv.rgb, 0.6, overlay, 0.4, 0).astype(np.float32)
    cv.rgb[:] = np.clip(mixed * (1 - g) + 255 * g, 0, 255).astype(np.uint8)


def render_watch(spec: BrandSpec, variant: Variant, radius: float = 150.0) -> Sprite:
    """Draw one watch of ``spec`` as ``variant`` with a case of ``radius`` pixels (no randomness: same inputs, same
    pixels). Returns a premultiplied RGBA sprite with strap stubs above and below the case."""
    cv = Canvas(spec, variant, radius)
    draw_straps(cv)
    outline = draw_case(cv)
    for step in DIAL_STEPS:
        step(cv)
    draw_wear_and_glare(cv)
    polyline(cv.rgb, outline, shade(cv.metal, 0.25), 3 * cv.thick)
    rgb = np.minimum(cv.rgb, cv.alpha[..., None])  # keep it premultiplied
    return Sprite(np.dstack([rgb, cv.alpha]), cv.c.copy(), cv.rc, outline, variant)
