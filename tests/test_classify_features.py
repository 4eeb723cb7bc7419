"""classify.features: one backbone pass per image and per cached augmented view (a tiny stand-in network)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from classify.batches import as_rgb_uint8, load_batch
from classify.data import load_image_folder
from classify.features import extract_features, extract_views


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    return keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x))


@pytest.fixture(scope="module")
def paths(train_dir):
    return load_image_folder(train_dir).paths[:10]


def test_views_shape_and_clean_view_matches_plain_features(tiny, paths):
    feats = extract_views(tiny, paths, (32, 32), views=2, augmentation="default", seed=0, batch_size=4, chunk_size=6)
    assert feats.shape == (3, 10, 8) and feats.dtype == np.float32
    clean = extract_features(tiny, paths, (32, 32))
    np.testing.assert_allclose(feats[0], clean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        clean, tiny.predict(load_batch(paths, (32, 32)).astype("float32"), verbose=0), rtol=1e-5, atol=1e-6
    )
    assert not np.allclose(feats[1], feats[0]) and not np.allclose(feats[1], feats[2])


def test_same_seed_same_views(tiny, paths):
    a = extract_views(tiny, paths, (32, 32), views=1, augmentation="default", seed=5)
    b = extract_views(tiny, paths, (32, 32), views=1, augmentation="default", seed=5)
    np.testing.assert_array_equal(a, b)


def test_disk_cache_is_reused_and_keyed_by_weights(tiny, paths, tmp_path, monkeypatch):
    first = extract_views(tiny, paths, (32, 32), views=1, augmentation="light", seed=0, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("features-*.npy"))) == 1
    import classify.features as features

    def fail(*args, **kwargs):
        raise AssertionError("backbone ran although the features were cached")

    monkeypatch.setattr(features, "predict_batches", fail)
    again = extract_views(tiny, paths, (32, 32), views=1, augmentation="light", seed=0, cache_dir=tmp_path)
    np.testing.assert_array_equal(first, again)
    monkeypatch.undo()
    other = keras.models.clone_model(tiny)  # fresh random weights -> a new cache entry
    extract_views(other, paths, (32, 32), views=1, augmentation="light", seed=0, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("features-*.npy"))) == 2


def test_a_damaged_cache_entry_is_computed_again(tiny, paths, tmp_path, caplog):
    first = extract_views(tiny, paths, (32, 32), cache_dir=tmp_path)
    (cached,) = tmp_path.glob("features-*.npy")
    cached.write_bytes(cached.read_bytes()[:300])  # torn by a crash (the cache is written without fsync)
    again = extract_views(tiny, paths, (32, 32), cache_dir=tmp_path)
    np.testing.assert_array_equal(again, first)
    assert "computing them again" in caplog.text
    np.save(cached, np.zeros((1, 3, 8), np.float32))  # readable, but not these images' features
    np.testing.assert_array_equal(extract_views(tiny, paths, (32, 32), cache_dir=tmp_path), first)


def test_arrays_of_any_size_and_channels():
    grey = np.full((50, 70), 128, np.uint8)
    rgba = np.zeros((20, 10, 4), np.uint8)
    batch = load_batch([grey, rgba, np.full((5, 5, 3), 300.0)], (16, 24))
    assert batch.shape == (3, 16, 24, 3) and batch.dtype == np.uint8
    assert batch[0].min() == 128 and batch[2].max() == 255
    with pytest.raises(ValueError, match="RGB"):
        as_rgb_uint8(np.zeros((4, 4, 2)))
