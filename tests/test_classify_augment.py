"""classify.augment: augmentation declared as data, serialised, seeded."""

from __future__ import annotations

import json

import albumentations as A
import cv2
import numpy as np
import pytest
from skimage import data as skdata

from classify.augment import (
    PRESETS,
    augmentation_to_dict,
    build_augmentation,
    load_augmentation,
    save_augmentation,
    seeded,
)

IMAGE = np.ascontiguousarray(skdata.chelsea()[:128, :128])


@pytest.mark.parametrize("preset", sorted(PRESETS))
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


def _colour_signature(image: np.ndarray) -> np.ndarray:
    """Each channel's mean departure from the pixel's grey: the image's overall colour cast."""
    rgb = image.astype(np.float64)
    return (rgb - rgb.mean(axis=2, keepdims=True)).reshape(-1, 3).mean(axis=0)


def _colour_changed(view: np.ndarray, original: np.ndarray) -> bool:
    a, b = _colour_signature(view), _colour_signature(original)
    cosine = a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9)
    return cosine < 0.5 or np.linalg.norm(a) < 0.3 * np.linalg.norm(b)


def test_default_changes_colour_where_colour_keeps_it():
    pipelines = {p: seeded(p, 3) for p in ("colour", "default")}
    views = {p: [pipe(image=IMAGE)["image"] for _ in range(60)] for p, pipe in pipelines.items()}
    changed = {p: sum(_colour_changed(v, IMAGE) for v in vs) for p, vs in views.items()}
    assert changed["colour"] <= 3  # for classes whose colour is a cue: kept
    assert changed["default"] >= 10 and changed["default"] > 5 * max(changed["colour"], 1)
    greys = sum(np.array_equal(v[..., 0], v[..., 1]) and np.array_equal(v[..., 1], v[..., 2])
                for v in views["default"])
    assert greys >= 3 and not any(np.array_equal(v[..., 0], v[..., 1]) for v in views["colour"])


def _detail(image: np.ndarray) -> float:
    """Fine detail: the variance of the grey image's Laplacian."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


@pytest.mark.parametrize("preset", ["default", "strong"])
def test_default_and_strong_lose_resolution_where_colour_keeps_it(preset):
    # a detector's crop of a small object has less detail than a training crop: some views are shrunk and enlarged
    def lossy_share(name: str) -> float:
        pipe = seeded(name, 3)
        return float(np.mean([_detail(pipe(image=IMAGE)["image"]) < 0.2 * _detail(IMAGE) for _ in range(200)]))

    kept, lost = lossy_share("colour"), lossy_share(preset)
    assert lost >= 0.1 and lost >= 3 * max(kept, 0.01), (kept, lost)
