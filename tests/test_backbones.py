"""Backbones: real ImageNet weights offline, preprocessing bound to the preset, the TF Hub wrapper for Keras 3."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from skimage import data

from classify import Backbone
from classify.backbones import IMAGENET_MEAN, IMAGENET_STD, HubFeatureLayer, preprocessing_layer
from detectcrop import ModelUnavailableError, zoo

ESPRESSO_CUP_MUG = {967, 968, 504}
CATS = set(range(281, 286))


@pytest.fixture(scope="module")
def imagenet_classifier() -> Backbone:
    return Backbone.from_preset(zoo.OFFLINE_BACKBONE, include_top=True)


def test_offline_backbone_ranks_imagenet_classes(imagenet_classifier):
    probs = imagenet_classifier.predict([data.coffee(), data.chelsea()])
    assert probs.shape == (2, 1000)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert int(np.argmax(probs[0])) in ESPRESSO_CUP_MUG
    assert int(np.argmax(probs[1])) in CATS


def test_features_are_pooled_and_discriminative():
    backbone = Backbone.from_preset(zoo.OFFLINE_BACKBONE)
    assert backbone.input_size == (224, 224) and backbone.feature_dim == 1280
    cat, cat_flipped, coffee = backbone.predict([data.chelsea(), data.chelsea()[:, ::-1], data.coffee()])

    def cos(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    assert cos(cat, cat_flipped) > cos(cat, coffee) + 0.2


def test_preprocessing_matches_each_presets_formula():
    x = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    torch_mode = np.asarray(preprocessing_layer("torch")(x))
    np.testing.assert_allclose(torch_mode, (x / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD), atol=1e-4)
    np.testing.assert_allclose(np.asarray(preprocessing_layer("tf")(x)), x / 127.5 - 1, atol=1e-5)
    np.testing.assert_allclose(np.asarray(preprocessing_layer("unit")(x)), x / 255, atol=1e-6)
    np.testing.assert_allclose(np.asarray(preprocessing_layer("lite")(x)), (x - 127) / 128, atol=1e-5)


def test_saved_backbone_reloads_to_identical_outputs(imagenet_classifier, tmp_path):
    path = tmp_path / "backbone.keras"
    imagenet_classifier.model.save(path)
    reloaded = keras.saving.load_model(path)
    batch = imagenet_classifier.prepare([data.coffee()])
    np.testing.assert_allclose(reloaded.predict_on_batch(batch), imagenet_classifier.model.predict_on_batch(batch),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("name", "dim"), [("mobilenet_v2", 1280), ("densenet121", 1024)])
def test_keras_application_presets_build_without_weights(name, dim):
    backbone = Backbone.from_preset(name, weights=None)
    assert backbone.feature_dim == dim
    assert backbone.predict([data.coffee()]).shape == (1, dim)


@pytest.mark.unit  # the Keras application is replaced by a failure: nothing is built
def test_unreachable_keras_weights_name_the_offline_preset(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(keras.applications, "MobileNetV2", no_network)
    with pytest.raises(ModelUnavailableError, match=zoo.OFFLINE_BACKBONE):
        Backbone.from_preset("mobilenet_v2")


class _TinyFeatureVector(tf.Module):
    """A feature-vector SavedModel with the TF Hub image signature: [B, H, W, 3] in [0, 1] -> [B, 3]."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = tf.Variable([1.0, 2.0, 3.0])

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images):
        return tf.reduce_mean(images, axis=[1, 2]) * self.scale


def test_hub_feature_layer_loads_a_local_savedmodel_under_keras3(tmp_path):
    path = tmp_path / "feature_vector"
    tf.saved_model.save(_TinyFeatureVector(), str(path))
    layer = HubFeatureLayer(str(path), output_dim=3)
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(layer(inputs)))
    images = np.random.default_rng(1).uniform(0, 1, (4, 8, 8, 3)).astype(np.float32)
    feats = np.asarray(layer(images))
    np.testing.assert_allclose(feats, images.mean(axis=(1, 2)) * [1, 2, 3], rtol=1e-5)
    assert model.predict_on_batch(images).shape == (4, 2)
    assert not layer.trainable
    saved = tmp_path / "model.keras"
    model.save(saved)
    np.testing.assert_allclose(keras.saving.load_model(saved).predict_on_batch(images),
                               model.predict_on_batch(images), rtol=1e-5)


def test_unknown_backbone_lists_presets():
    with pytest.raises(ValueError, match="mobilenet_v2_torchvision"):
        Backbone.from_preset("resnet9000")


@pytest.mark.large
@pytest.mark.parametrize("name", ["densenet121", "mobilenet_v2"])
def test_online_keras_presets_rank_imagenet_classes(name):
    """Downloads keras.applications ImageNet weights (needs the network; run with --run-large)."""
    probs = Backbone.from_preset(name, include_top=True).predict([data.coffee(), data.chelsea()])
    assert int(np.argmax(probs[0])) in ESPRESSO_CUP_MUG and int(np.argmax(probs[1])) in CATS


@pytest.mark.large
def test_online_hub_feature_vector_separates_photos():
    """Downloads the TF Hub MobileNetV2 feature vector (needs the network; run with --run-large)."""
    backbone = Backbone.from_preset("mobilenet_v2_hub")
    cat, cat_flipped, coffee = backbone.predict([data.chelsea(), data.chelsea()[:, ::-1], data.coffee()])
    assert backbone.feature_dim == 1280
    assert np.dot(cat, cat_flipped) / np.linalg.norm(cat) / np.linalg.norm(cat_flipped) > \
        np.dot(cat, coffee) / np.linalg.norm(cat) / np.linalg.norm(coffee)
