"""classify.augment: augmentation declared as data, serialised, seeded."""

from __future__ import annotations

import json

import albumentations as A
import numpy as np
import pytest
from skimage import data as skdata

from classify.augment import (
    augmentation_to_dict,
    build_augmentation,
    load_augmentation,
    save_augmentation,
    seeded,
)

IMAGE = np.ascontiguousarray(skdata.chelsea()[:128, :128])


@pytest.mark.parametrize("preset", ["default", "light"])
def test_presets_round_trip_through_json(tmp_path, preset):
    path = save_augmentation(preset, tmp_path / "aug.json")
    loaded = load_augmentation(path)
    assert isinstance(loaded, A.Compose)
    assert augmentation_to_dict(loaded) == json.loads(path.read_text()) == augmentation_to_dict(preset)
    a = seeded(preset, 7)(image=IMAGE)["image"]
    b = seeded(json.loads(path.read_text()), 7)(image=IMAGE)["image"]
    np.testing.assert_array_equal(a, b)
    assert a.shape == IMAGE.shape and a.dtype == np.uint8


def test_seed_makes_views_repeatable_and_different_seeds_differ():
    views = [np.stack([seeded("default", s)(image=IMAGE)["image"] for _ in range(3)]) for s in (1, 1, 2)]
    np.testing.assert_array_equal(views[0], views[1])
    assert not np.array_equal(views[0], views[2])


def test_none_and_custom_dicts(tmp_path):
    assert build_augmentation(None) is None and build_augmentation("none") is None
    assert augmentation_to_dict("none") is None
    assert load_augmentation(save_augmentation(None, tmp_path / "none.json")) is None
    custom = A.to_dict(A.Compose([A.HorizontalFlip(p=1.0)]))
    flipped = build_augmentation(custom)(image=IMAGE)["image"]
    np.testing.assert_array_equal(flipped, IMAGE[:, ::-1])
    (tmp_path / "flip.json").write_text(json.dumps(custom))
    assert augmentation_to_dict(str(tmp_path / "flip.json")) == custom
    with pytest.raises(ValueError, match="unknown augmentation"):
        build_augmentation("heavy")
