"""Benchmark difficulty: ``normal`` (the original benchmark) and ``hard`` (headroom for fine-grained training).

``hard`` changes the catalogue and the photos:

- 20 brands in 5 families of 4: a family shares its case shape and bezel; within a family every brand is an earlier
  one with 2-3 of five fine details changed (numerals, hands, seconds hand, logo mark, date window), and any two
  brands of the catalogue differ in at least 2 of those fine details;
- one shared word on every dial (``HARD_LOGO_WORD``) instead of the brand name, and every brand offers every dial
  colour and metal;
- more variation within a brand: dial texture, typeface, tagline and sub-dials are drawn per photo;
- smaller, more tilted watches, often partly covered by an object, under harsher light, noisier and more compressed.

``normal`` draws exactly as before (same bytes for the same arguments).
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from pipelines.synthetic.brands import DATE_HOURS, STRUCTURE, SUBDIAL_HOURS, BrandSpec
from pipelines.synthetic.palette import DIAL_COLOURS, METALS
from pipelines.synthetic.variant import Variant, sample_variant

DIFFICULTIES = ("normal", "hard")
#: Number of brands of the hard catalogue.
HARD_BRANDS = 20
#: Brands per family (a family shares `HARD_FAMILY_DETAILS`).
HARD_FAMILY_SIZE = 4
#: The details a family of hard brands shares.
HARD_FAMILY_DETAILS = ("case", "bezel")
#: The fine details that tell the brands of a family apart.
HARD_BRAND_DETAILS = ("numerals", "hands", "seconds", "logo_mark", "date")
#: The details drawn per photo in the hard variant (within-brand variation).
HARD_PHOTO_DETAILS = ("texture", "logo_font", "tagline", "subdials")
#: The word printed on every hard dial (where the brand name is in normal).
HARD_LOGO_WORD = "GENEVE"
#: Any two hard brands differ in at least this many of `HARD_BRAND_DETAILS`.
HARD_MIN_DIFFERENCES = 2
HARD_PHOTO_SIZE = (0.18, 0.50)  # head box's longer side over the image's shorter side
HARD_OCCLUDED_P = 0.4


def check_difficulty(difficulty: str) -> str:
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    return difficulty


def _differences(a: dict[str, str], b: dict[str, str]) -> int:
    return sum(a[k] != b[k] for k in HARD_BRAND_DETAILS)


def hard_structures(n: int, rng: np.random.Generator, tries: int = 200) -> list[dict[str, str]]:
    """``n`` brand structures in families of `HARD_FAMILY_SIZE` (distinct case and bezel per family); within a
    family each brand is an earlier one with 2-3 fine details changed; all pairs >= 2 fine details apart."""
    combos = [(c, b) for c in STRUCTURE["case"] for b in STRUCTURE["bezel"]]
    families = [combos[i] for i in rng.permutation(len(combos))[: -(-n // HARD_FAMILY_SIZE)]]
    brands: list[dict[str, str]] = []
    while len(brands) < n:
        case, bezel = families[len(brands) // HARD_FAMILY_SIZE]
        family = brands[len(brands) - len(brands) % HARD_FAMILY_SIZE :]
        for _ in range(tries):
            if not family:
                child = {k: str(rng.choice(STRUCTURE[k])) for k in HARD_BRAND_DETAILS}
            else:
                parent = family[int(rng.integers(len(family)))]
                child = _edit(parent, rng)
            child |= {"case": case, "bezel": bezel}
            if all(_differences(child, b) >= HARD_MIN_DIFFERENCES for b in brands):
                brands.append(child)
                break
        else:  # pragma: no cover - the space (2880 combinations) is far larger than 20 brands
            raise RuntimeError("could not draw distinct hard brands")
    fixed = {k: STRUCTURE[k][0] for k in STRUCTURE}  # the per-photo details' placeholders
    return [{**fixed, **b} for b in brands]


def _edit(parent: dict[str, str], rng: np.random.Generator) -> dict[str, str]:
    """``parent`` with 2-3 of its fine details changed."""
    child = dict(parent)
    for key in rng.choice(HARD_BRAND_DETAILS, size=int(rng.integers(2, 4)), replace=False):
        child[str(key)] = str(rng.choice([o for o in STRUCTURE[str(key)] if o != parent[str(key)]]))
    return child


def hard_specs(names: tuple[str, ...], rng: np.random.Generator) -> tuple[BrandSpec, ...]:
    """The hard catalogue's brands: structures from `hard_structures`, every colour and metal for every brand."""
    dials, metals = tuple(sorted(DIAL_COLOURS)), tuple(sorted(METALS))
    structures = hard_structures(len(names), rng)
    return tuple(BrandSpec(name=name, dial_colours=dials, metals=metals, **s)
                 for name, s in zip(names, structures, strict=True))  # fmt: skip


def sample_hard_watch(spec: BrandSpec, rng: np.random.Generator) -> tuple[BrandSpec, Variant]:
    """One hard product photo's watch: the brand's fine details, the rest drawn per photo; the shared dial word."""
    variant = dataclasses.replace(sample_variant(spec, rng), logo_text=HARD_LOGO_WORD)
    date_hour = DATE_HOURS[spec.date]
    details = {}
    for key in HARD_PHOTO_DETAILS:
        options = STRUCTURE[key]
        if key == "subdials":  # never a sub-dial where the brand's date window is
            options = tuple(o for o in options if date_hour not in SUBDIAL_HOURS[o])
        details[key] = str(rng.choice(options))
    drawn = dataclasses.replace(spec, **details)
    hands = tuple(float(a) for a in rng.uniform(0, 12, len(SUBDIAL_HOURS[drawn.subdials])))
    return drawn, dataclasses.replace(variant, subdial_hands=hands)


def occlude(img: np.ndarray, head: np.ndarray, rng: np.random.Generator) -> None:
    """Cover 10-30% of the watch's head box from one side with a flat object (a sleeve, a cup, a hand) in place."""
    x1, y1, x2, y2 = (float(v) for v in head)
    w, h = x2 - x1, y2 - y1
    side, depth = int(rng.integers(4)), float(rng.uniform(0.1, 0.3))
    along = rng.uniform(-0.3, 0.3)
    if side == 0:
        rect = (x1 - w, y1 + along * h, x1 + depth * w, y2 + along * h + h)
    elif side == 1:
        rect = (x2 - depth * w, y1 + along * h - h, x2 + w, y2 + along * h)
    elif side == 2:
        rect = (x1 + along * w - w, y1 - h, x2 + along * w, y1 + depth * h)
    else:
        rect = (x1 + along * w, y2 - depth * h, x2 + along * w + w, y2 + h)
    centre = ((rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2)
    box = cv2.boxPoints((centre, (rect[2] - rect[0], rect[3] - rect[1]), float(rng.uniform(-25, 25))))
    colour = tuple(int(c) for c in rng.integers(30, 230, 3))
    cv2.fillPoly(img, [np.round(box).astype(np.int32)], colour, cv2.LINE_AA)


def harsh_light(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Strong light gradient, a colour cast and a bright hot spot (float32 result)."""
    height, width = img.shape[:2]
    a, slope = rng.uniform(0, 2 * math.pi), rng.uniform(-0.7, 0.7) / max(width, height)
    xs = (np.arange(width, dtype=np.float32) - width / 2) * (slope * math.cos(a))
    ys = (np.arange(height, dtype=np.float32) - height / 2) * (slope * math.sin(a))
    gain = rng.uniform(0.55, 1.25) * (1 + xs[None, :, None] + ys[:, None, None])
    out = img * (gain.astype(np.float32) * rng.uniform(0.85, 1.15, 3).astype(np.float32))
    spot = np.zeros((height, width), np.float32)
    centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
    cv2.circle(spot, centre, int(rng.uniform(0.1, 0.3) * min(width, height)), 1.0, -1)
    spot = cv2.GaussianBlur(spot, (0, 0), 0.1 * min(width, height))[..., None] * rng.uniform(40, 120)
    return out + spot
