"""Painting a watch: deterministic from (brand, variant), premultiplied, and different brands look different."""

from __future__ import annotations

import dataclasses

import numpy as np

from pipelines.synthetic.brands import SUBDIAL_HOURS, make_brands, make_catalogue
from pipelines.synthetic.variant import sample_variant
from pipelines.synthetic.watch import render_watch


def test_painting_consumes_no_randomness() -> None:
    spec = next(s for s in make_catalogue().brands if s.texture == "grain" and s.subdials != "none")
    variant = sample_variant(spec, np.random.default_rng(0))
    state = np.random.get_state()[1].copy()
    first = render_watch(spec, variant, radius=60).rgba
    assert np.array_equal(first, render_watch(spec, variant, radius=60).rgba)  # same variant, same pixels
    assert np.array_equal(np.random.get_state()[1], state)  # no global draws either
    # everything random lives in the variant: changing one sampled field changes the pixels
    changes = ({"grain_seed": variant.grain_seed + 1}, {"minute": (variant.minute + 20) % 60},
               {"subdial_hands": tuple(h + 3 for h in variant.subdial_hands)})  # fmt: skip
    for change in changes:
        other = render_watch(spec, dataclasses.replace(variant, **change), radius=60).rgba
        assert not np.array_equal(first, other), change


def test_render_watch_is_premultiplied_and_brand_specific() -> None:
    a, b = make_brands(2)
    variant = sample_variant(a, np.random.default_rng(0))
    rgba = render_watch(a, variant).rgba
    assert rgba.dtype == np.uint8 and rgba.shape[2] == 4
    assert (rgba[..., 3] == 0).any() and (rgba[..., 3] == 255).any()
    assert (rgba[..., :3] <= rgba[..., 3:]).all()
    hands = (1.0,) * len(SUBDIAL_HOURS[b.subdials])  # the same product but b's sub-dial layout
    other = render_watch(b, dataclasses.replace(variant, subdial_hands=hands)).rgba
    h, w = min(rgba.shape[0], other.shape[0]), min(rgba.shape[1], other.shape[1])  # case shapes may differ in size
    assert np.abs(rgba[:h, :w].astype(int) - other[:h, :w]).mean() > 5
