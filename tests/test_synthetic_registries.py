"""Every option the brand and variant samplers can produce has a drawing registered for it."""

from __future__ import annotations

import numpy as np

from pipelines.synthetic.brands import DATE_HOURS, STRUCTURE, SUBDIAL_HOURS, make_catalogue
from pipelines.synthetic.case import BEZELS, STRAPS
from pipelines.synthetic.dial import FONTS, LOGO_MARKS, NUMERALS, TEXTURES
from pipelines.synthetic.draw import CASE_SHAPES
from pipelines.synthetic.hands import HANDS, SECONDS
from pipelines.synthetic.palette import DIAL_COLOURS, INSERT_COLOURS, METALS, STRAP_COLOURS, STRAP_KINDS
from pipelines.synthetic.variant import sample_variant

REGISTRIES = {
    "case": CASE_SHAPES, "numerals": NUMERALS, "hands": HANDS, "bezel": BEZELS, "subdials": SUBDIAL_HOURS,
    "date": DATE_HOURS, "seconds": SECONDS, "logo_mark": LOGO_MARKS, "logo_font": FONTS, "texture": TEXTURES,
}  # fmt: skip


def test_each_structural_option_has_exactly_one_registry_entry() -> None:
    assert set(REGISTRIES) == set(STRUCTURE) - {"tagline"}  # the tagline is printed text, not a drawing
    for key, registry in REGISTRIES.items():
        assert set(registry) == set(STRUCTURE[key]), key


def test_sampled_brands_and_variants_only_use_registered_options() -> None:
    rng = np.random.default_rng(0)
    for seed in range(3):
        for spec in make_catalogue(seed).brands:
            for key, registry in REGISTRIES.items():
                assert getattr(spec, key) in registry, (spec.name, key)
            assert set(spec.dial_colours) <= set(DIAL_COLOURS) and set(spec.metals) <= set(METALS)
            v = sample_variant(spec, rng)
            assert v.strap in STRAPS and v.strap_colour in STRAP_COLOURS and v.insert in INSERT_COLOURS
            assert len(v.subdial_hands) == len(SUBDIAL_HOURS[spec.subdials])
    assert set(STRAPS) == set(STRAP_KINDS)
