"""`Canvas`: the surface one watch is painted on (RGB + alpha) and the geometry and inks derived from its brand and
variant. Painting functions (case, dial, hands modules) take a Canvas and draw on it deterministically."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipelines.synthetic.brands import BrandSpec
from pipelines.synthetic.draw import hour_dir, lum, outline
from pipelines.synthetic.palette import DIAL_COLOURS, METALS, RGB
from pipelines.synthetic.variant import Variant

CASE_R, BEZEL_OUT, DIAL_R = 1.0, 0.95, 0.82  # radii relative to the case radius
STUB_END = 1.15  # strap stubs end this many case radii from the centre


@dataclass
class Canvas:
    """A blank canvas for one watch of ``spec`` / ``variant`` with a case of ``rc`` pixels."""

    spec: BrandSpec
    v: Variant
    rc: float
    rgb: np.ndarray = field(init=False)
    alpha: np.ndarray = field(init=False)
    c: np.ndarray = field(init=False)  # dial centre (x, y)
    rd: float = field(init=False)  # dial radius
    metal: RGB = field(init=False)
    dial: RGB = field(init=False)
    ink: RGB = field(init=False)  # printing on the dial
    hand: RGB = field(init=False)
    thick: int = field(init=False)  # base line thickness

    def __post_init__(self) -> None:
        self.rc = float(self.rc)
        w, h = round(2.3 * self.rc), round(2 * STUB_END * self.rc)
        self.rgb = np.zeros((h, w, 3), np.uint8)
        self.alpha = np.zeros((h, w), np.uint8)
        self.c = np.array([w / 2 - 0.05 * self.rc, h / 2])
        self.rd = DIAL_R * self.rc
        self.metal = METALS[self.v.metal]
        self.dial = DIAL_COLOURS[self.v.dial]
        light_dial = lum(self.dial) > 140
        self.ink = (28, 28, 32) if light_dial else (238, 238, 232)
        self.hand = (30, 30, 36) if light_dial else (240, 240, 236)
        self.thick = max(1, round(self.rc / 70))

    def at(self, hour: float, r: float) -> np.ndarray:
        """The point ``r`` pixels from the centre towards ``hour``."""
        return self.c + r * hour_dir(hour)

    def dial_outline(self) -> np.ndarray:
        """The dial is round whatever the case shape."""
        return outline("round", self.c, self.rd)
