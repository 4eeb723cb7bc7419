"""The preset registry: one record per preset, and every listing, default and CLI choice derived from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from detectcrop import presets, zoo

MODELS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "guides" / "models.md"


def _models_page_table() -> str:
    text = MODELS_PAGE.read_text()
    match = re.search(r"<!-- presets:start[^>]*-->\n(.*?)<!-- presets:end -->", text, re.S)
    assert match, "docs/guides/models.md has no presets table between the presets:start / presets:end markers"
    return match.group(1)


def test_models_page_table_lists_exactly_the_registry_presets():
    table = _models_page_table()
    listed = re.findall(r"^\| `([^`]+)` \|", table, re.M)
    assert listed == list(presets.PRESETS)
    assert table == presets.markdown_table(), "regenerate it: python -m detectcrop.zoo list --markdown"


def test_defaults_come_from_the_registry():
    assert zoo.DEFAULT_DETECTOR == "faster_rcnn_resnet50_v1_1024x1024"
    assert zoo.OFFLINE_DETECTOR == "centernet_mobilenetv3_512"
    assert zoo.DEFAULT_BACKBONE == "densenet121"
    assert zoo.OFFLINE_BACKBONE == "mobilenet_v2_torchvision"
    for name in (zoo.OFFLINE_DETECTOR, zoo.OFFLINE_BACKBONE):
        assert presets.get(name).offline
    for name in (zoo.DEFAULT_DETECTOR, zoo.DEFAULT_BACKBONE):
        assert not presets.get(name).offline


def test_offline_models_are_the_offline_records():
    assert set(zoo.OFFLINE_MODELS) == set(presets.names(offline=True)) == {
        "centernet_mobilenetv3_512", "mobilenet_v2_torchvision", "efficientnet_lite1", "efficientnet_lite2"}
    for name, model in zoo.OFFLINE_MODELS.items():
        recipe = presets.get(name).recipe
        assert (model.client, model.package, model.members) == (recipe.client, recipe.package, dict(recipe.members))
        assert model.convert is zoo.CONVERTERS[recipe.converter]


def test_online_records_carry_both_handle_forms():
    for p in presets.PRESETS.values():
        if p.source == "tfhub":
            assert p.handle.startswith("https://tfhub.dev/") and p.kaggle.count("/") == 4
            assert p.kaggle_url == f"https://www.kaggle.com/models/{p.kaggle}"
        if p.kind == "backbone":
            assert p.preprocessing in ("torch", "tf", "lite", "unit") and p.feature_dim and p.input_size


def test_lookup_errors_name_the_presets():
    with pytest.raises(ValueError, match="densenet121"):
        presets.get("nope", "backbone")
    with pytest.raises(ValueError, match="is a backbone preset, not a detector"):
        presets.get("densenet121", "detector")


def test_a_malformed_record_is_refused():
    with pytest.raises(ValueError, match="recipe"):
        presets.Preset("x", "detector", "offline", "no recipe", "savedmodel")
    with pytest.raises(ValueError, match="kind"):
        presets.Preset("x", "classifier", "tfhub", "bad kind", "savedmodel", handle="h")


def test_cli_choices_help_and_listing_derive_from_the_registry(capsys):
    from pipelines.build_crops import get_args_parser as crops_parser

    from pipelines import train_fine

    backbone = next(a for a in train_fine.get_args_parser()._actions if a.dest == "backbone")
    assert list(backbone.choices) == presets.names("backbone") and backbone.default == zoo.DEFAULT_BACKBONE
    detector = next(a for a in crops_parser()._actions if a.dest == "detector")
    assert detector.default == zoo.DEFAULT_DETECTOR
    assert all(name in detector.help for name in presets.names("detector"))
    assert zoo.main(["list"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [row.split()[0] for row in rows] == list(presets.PRESETS)


def test_backbone_table_is_built_from_the_registry():
    from classify import backbones

    assert list(backbones.PRESETS) == presets.names("backbone")
    for name, built in backbones.PRESETS.items():
        record = presets.get(name)
        assert (built.input_size, built.preprocessing, built.fine_tunable) == (
            record.input_size, record.preprocessing, record.fine_tunable)
