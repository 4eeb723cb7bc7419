"""A `Variant`: everything that varies within a brand's product line and from photo to photo, sampled up front.

`sample_variant` draws every random choice a watch needs (colours, time shown, sub-dial hands, scratches, dial grain),
so painting a (brand, variant) pair consumes no randomness: a Variant fully describes one watch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipelines.synthetic.brands import SUBDIAL_HOURS, BrandSpec
from pipelines.synthetic.palette import INSERT_COLOURS, STRAP_COLOURS, STRAP_KINDS

#: At most this many scratches (at full wear).
MAX_SCRATCHES = 6


@dataclass(frozen=True)
class Scratch:
    """A scratch on the crystal: starts at ``angle`` (radians) and ``radius`` (case radii) from the centre and runs
    by (``dx``, ``dy``) case radii."""

    angle: float
    radius: float
    dx: float
    dy: float


@dataclass(frozen=True)
class Variant:
    """One product of a brand's line in one photo: colours, strap, time shown, wear and glare.

    ``subdial_hands`` holds one hand position (in hours, 0-12) per sub-dial of the brand's layout; ``grain_seed``
    seeds the dial's grain texture (used only by brands with a grained dial); ``logo_text``: the word printed on
    the dial (``None``: the brand's name).
    """

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
    subdial_hands: tuple[float, ...] = ()
    scratches: tuple[Scratch, ...] = ()
    grain_seed: int = 0
    logo_text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_variant(spec: BrandSpec, rng: np.random.Generator) -> Variant:
    """One product of ``spec``'s line, photographed at some time of day with some wear."""
    dial = str(rng.choice(spec.dial_colours))
    metal = str(rng.choice(spec.metals))
    strap = str(rng.choice(STRAP_KINDS))
    strap_colour = str(rng.choice(list(STRAP_COLOURS)))
    insert = str(rng.choice(list(INSERT_COLOURS)))
    hour, minute, second = float(rng.uniform(0, 12)), float(rng.uniform(0, 60)), float(rng.uniform(0, 60))
    day = int(rng.integers(1, 32))
    wear, glare = float(rng.uniform(0, 1)), float(rng.uniform(0.05, 0.3))
    subdial_hands = tuple(float(a) for a in rng.uniform(0, 12, len(SUBDIAL_HOURS[spec.subdials])))
    scratches = []
    for _ in range(int(wear * MAX_SCRATCHES)):
        angle, radius = float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0.3, 0.95))
        dx, dy = (float(d) for d in rng.uniform(-0.15, 0.15, 2))
        scratches.append(Scratch(angle, radius, dx, dy))
    grain_seed = int(rng.integers(2**31))
    return Variant(dial, metal, strap, strap_colour, insert, hour, minute, second, day, wear, glare, subdial_hands,
                   tuple(scratches), grain_seed)  # fmt: skip
