"""Synthetic fine-grained watch benchmark: photo-like images of watches whose "brand" lives in fine details.

A brand (`brands`) is a fixed combination of structural details (case shape, numerals, hands, bezel, sub-dials, date
window, seconds hand, logo word, mark and typeface, dial texture), taken from one catalogue of every named brand;
dial colours and case metals are shared across brands, so a colour histogram cannot read the brand.

One watch is made in two steps (as in albumentations' ``get_params`` then ``apply``): `sample_variant` draws every
random choice (colours, strap, time shown, wear), then `render_watch` paints it with OpenCV anti-aliased primitives
(`draw`; option registries in `case`, `dial`, `hands`) and consumes no randomness. `scenes` warps watches on real
photos from scikit-image / scikit-learn (`backgrounds`); `generate` writes a dataset and its COCO file (`coco`).

    >>> from pipelines.synthetic import generate, load_ground_truth
    >>> summary = generate("watches", brands=8, photos_per_brand=40, scenes=20, seed=0)
    >>> photos = load_ground_truth("watches/annotations.json", split="photos")
"""

from __future__ import annotations

from pipelines.synthetic.brands import (
    BRAND_NAMES,
    CATALOGUE_SEED,
    STRUCTURE,
    BrandSpec,
    Catalogue,
    make_brands,
    make_catalogue,
)
from pipelines.synthetic.coco import (
    GroundTruthCrop,
    GroundTruthImage,
    find_catalogue,
    ground_truth_crops,
    load_ground_truth,
    read_catalogue,
)
from pipelines.synthetic.generate import JobKind, generate
from pipelines.synthetic.variant import Variant, sample_variant
from pipelines.synthetic.watch import Sprite, render_watch

__all__ = [
    "BRAND_NAMES",
    "CATALOGUE_SEED",
    "STRUCTURE",
    "BrandSpec",
    "Catalogue",
    "GroundTruthCrop",
    "GroundTruthImage",
    "JobKind",
    "Sprite",
    "Variant",
    "find_catalogue",
    "generate",
    "ground_truth_crops",
    "load_ground_truth",
    "make_brands",
    "make_catalogue",
    "read_catalogue",
    "render_watch",
    "sample_variant",
]
