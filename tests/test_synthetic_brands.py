"""The brand catalogue: fixed designs per name, distinguishable brands, colours that do not give the brand away."""

from __future__ import annotations

import json

import pytest

from pipelines.synthetic.brands import (
    BRAND_NAMES,
    MIN_DIFFERENCES,
    STRUCTURE,
    Catalogue,
    make_brands,
    make_catalogue,
)


def test_a_brand_name_means_one_design_whatever_the_number_of_brands() -> None:
    catalogue = make_catalogue()
    assert [b.name for b in catalogue.brands] == list(BRAND_NAMES)
    assert make_brands(3) == list(catalogue.brands[:3]) == make_brands(8)[:3]
    assert make_catalogue() == catalogue and make_catalogue().fingerprint == catalogue.fingerprint


def test_another_catalogue_seed_draws_new_designs_under_the_same_names() -> None:
    default, other = make_catalogue(0), make_catalogue(1)
    assert [b.name for b in other.brands] == [b.name for b in default.brands]
    assert other.fingerprint != default.fingerprint
    assert default.differences(other)  # the same names, other watches
    assert default.differences(default) == []


def test_brands_differ_in_structure_and_share_dial_colours() -> None:
    for seed in (0, 1):
        specs = make_catalogue(seed).brands
        for i, a in enumerate(specs):
            for b in specs[i + 1 :]:
                assert sum(a.structure()[k] != b.structure()[k] for k in STRUCTURE) >= MIN_DIFFERENCES
        # colour does not give the brand away: every brand shares a dial colour with another brand
        for a in specs:
            assert any(set(a.dial_colours) & set(b.dial_colours) for b in specs if b is not a)


def test_every_prefix_of_the_catalogue_uses_the_options_evenly() -> None:
    specs = make_catalogue().brands
    for n in (4, 8, len(specs)):
        for key, options in STRUCTURE.items():
            if key == "date":  # moved away from sub-dials, so not dealt evenly
                continue
            counts = [sum(getattr(s, key) == o for s in specs[:n]) for o in options]
            assert max(counts) - min(counts) <= 1, (n, key, counts)


def test_catalogue_round_trips_through_json_and_checks_its_fingerprint() -> None:
    catalogue = make_catalogue()
    record = json.loads(json.dumps(catalogue.to_dict()))
    assert Catalogue.from_dict(record) == catalogue
    record["brands"][0]["hands"] = "leaf" if record["brands"][0]["hands"] != "leaf" else "baton"
    with pytest.raises(ValueError, match="fingerprint"):
        Catalogue.from_dict(record)


def test_brand_count_out_of_range() -> None:
    with pytest.raises(ValueError, match="brands must be in"):
        make_brands(len(BRAND_NAMES) + 1)
    with pytest.raises(ValueError, match="brands must be in"):
        make_brands(0)
