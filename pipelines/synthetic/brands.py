"""The brand catalogue: every named brand is a fixed combination of structural details plus the colours its product
line comes in.

The catalogue is drawn once for all ``BRAND_NAMES`` from a catalogue seed (``CATALOGUE_SEED`` by default) and a
dataset with ``N`` brands takes the first ``N``, so brand "aurel" is the same watch design whatever the photo seed and
the number of brands. Dial colours and case metals are shared across brands, so a colour histogram cannot read the
brand.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from pipelines.synthetic.palette import DARK_DIALS, LIGHT_DIALS, METALS

BRAND_NAMES: tuple[str, ...] = (
    "aurel", "brisk", "corvo", "delin", "ember", "fenix", "gallo", "hamar", "istra", "jorun", "kairo", "lumen",
    "mirel", "norda", "orlan", "pavia", "quill", "rovan", "solen", "tarek", "ulmar", "vesta", "wyler", "xenon",
    "yaris", "zenta",
)  # fmt: skip

#: Seed of the default catalogue (``make_watches --brand-seed`` draws another one).
CATALOGUE_SEED = 0
#: Any two brands of a catalogue differ in at least this many structural details.
MIN_DIFFERENCES = 5

#: The structural attributes a brand fixes, with their options (each drawing option has a registry entry).
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
#: Dial positions (in hours) of the sub-dials of each layout.
SUBDIAL_HOURS: dict[str, tuple[int, ...]] = {
    "none": (), "small_seconds": (6,), "bicompax": (3, 9), "tricompax": (3, 6, 9),
}  # fmt: skip
#: Dial position (in hours) of the date window; ``None``: no date.
DATE_HOURS: dict[str, float | None] = {"none": None, "3": 3.0, "6": 6.0, "430": 4.5}


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

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BrandSpec:
        values = {f.name: d[f.name] for f in fields(cls)}
        values["dial_colours"], values["metals"] = tuple(values["dial_colours"]), tuple(values["metals"])
        return cls(**values)


@dataclass(frozen=True)
class Catalogue:
    """Every named brand's definition, drawn from ``seed`` for a benchmark ``difficulty``; ``fingerprint``
    identifies the definitions."""

    seed: int
    brands: tuple[BrandSpec, ...]
    difficulty: str = "normal"

    def first(self, n: int) -> tuple[BrandSpec, ...]:
        """The first ``n`` brands (a dataset with ``n`` classes)."""
        if not 1 <= n <= len(self.brands):
            raise ValueError(f"brands must be in 1..{len(self.brands)}, got {n}")
        return self.brands[:n]

    @property
    def fingerprint(self) -> str:
        """A short hash of the brand definitions (equal fingerprints: the same watch designs under the same names)."""
        text = json.dumps([b.to_dict() for b in self.brands], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def differences(self, other: Catalogue) -> list[str]:
        """Names defined in both catalogues whose designs differ."""
        theirs = {b.name: b for b in other.brands}
        return [b.name for b in self.brands if b.name in theirs and theirs[b.name] != b]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"seed": self.seed, "fingerprint": self.fingerprint,
                             "brands": [b.to_dict() for b in self.brands]}
        if self.difficulty != "normal":  # normal files stay as they were
            d["difficulty"] = self.difficulty
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Catalogue:
        """Inverse of `to_dict`; raises ValueError when the recorded fingerprint does not match the brands."""
        catalogue = cls(int(d["seed"]), tuple(BrandSpec.from_dict(b) for b in d["brands"]),
                        str(d.get("difficulty", "normal")))
        if "fingerprint" in d and d["fingerprint"] != catalogue.fingerprint:
            raise ValueError(f"catalogue fingerprint {d['fingerprint']} does not match its brands")
        return catalogue


def _shared_subsets(n: int, k: int, options: Sequence[str], rng: np.random.Generator) -> list[tuple[str, ...]]:
    """``n`` overlapping subsets of ``k`` options: brand i takes a cyclic window, so neighbours share options."""
    order = [options[i] for i in rng.permutation(len(options))]
    step = max(1, len(options) // 2 - 1)
    return [tuple(sorted(order[(i * step + j) % len(order)] for j in range(k))) for i in range(n)]


def _fix_conflicts(attrs: dict[str, str]) -> dict[str, str]:
    """Move the date window away from a sub-dial that occupies its place."""
    if DATE_HOURS[attrs["date"]] in SUBDIAL_HOURS[attrs["subdials"]]:
        attrs["date"] = "430"
    return attrs


def _dealt(n: int, rng: np.random.Generator) -> list[dict[str, str]]:
    """Each attribute's options dealt from successive shuffled decks, so every prefix of brands stays balanced."""
    columns = {}
    for key, opts in STRUCTURE.items():
        decks = -(-n // len(opts))
        columns[key] = [opts[i] for _ in range(decks) for i in rng.permutation(len(opts))][:n]
    return [_fix_conflicts({key: columns[key][i] for key in STRUCTURE}) for i in range(n)]


def _min_differences(brands: Sequence[dict[str, str]]) -> int:
    pairs = [(a, b) for i, a in enumerate(brands) for b in brands[i + 1 :]]
    return min((sum(a[k] != b[k] for k in STRUCTURE) for a, b in pairs), default=len(STRUCTURE))


def make_catalogue(seed: int = CATALOGUE_SEED, min_differences: int = MIN_DIFFERENCES, tries: int = 500,
                   difficulty: str = "normal") -> Catalogue:
    """All ``BRAND_NAMES``' specs, deterministic for ``seed``; any two differ in at least ``min_differences``
    structural details (when achievable in ``tries`` draws; the best draw otherwise).

    ``difficulty="hard"``: the first `~pipelines.synthetic.difficulty.HARD_BRANDS` names, brands that differ in only
    a few fine details (see `pipelines.synthetic.difficulty`).
    """
    from pipelines.synthetic.difficulty import HARD_BRANDS, check_difficulty, hard_specs

    if check_difficulty(difficulty) == "hard":
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3,)))
        return Catalogue(seed, hard_specs(BRAND_NAMES[:HARD_BRANDS], rng), "hard")
    n = len(BRAND_NAMES)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    best: list[dict[str, str]] = []
    for _ in range(tries):
        draw = _dealt(n, rng)
        if not best or _min_differences(draw) > _min_differences(best):
            best = draw
        if _min_differences(best) >= min_differences:
            break
    light, dark = _shared_subsets(n, 2, list(LIGHT_DIALS), rng), _shared_subsets(n, 2, list(DARK_DIALS), rng)
    dials = [tuple(sorted(a + b)) for a, b in zip(light, dark, strict=True)]
    metals = _shared_subsets(n, 3, list(METALS), rng)
    specs = (BrandSpec(name=BRAND_NAMES[i], dial_colours=dials[i], metals=metals[i], **best[i]) for i in range(n))
    return Catalogue(seed, tuple(specs))


def make_brands(n: int, seed: int = CATALOGUE_SEED) -> list[BrandSpec]:
    """The first ``n`` brands of the catalogue drawn from ``seed``."""
    return list(make_catalogue(seed).first(n))
