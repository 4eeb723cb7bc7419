"""The EfficientNet-Lite port against its source: logits recorded once with the original PyTorch implementation.

``tests/data/efficientnet_lite_reference.npz`` holds the source's 1000 logits for scikit-image's photos, computed with
``efficientnet_lite_pytorch`` 0.1.0 (torch 2.13 CPU, scikit-image 0.26) on the same weights files: each photo resized
to the native size with ``skimage.transform.resize(order=1, anti_aliasing=True, preserve_range=True)`` and
preprocessed ``(x - 127) / 128``. Torch is not a dependency; only the recorded numbers are.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from skimage import data, transform

from classify import Backbone
from classify import efficientnet_lite as lite
from classify.backbones import preprocessing_layer
from detectcrop import zoo

REFERENCE = Path(__file__).parent / "data" / "efficientnet_lite_reference.npz"
PHOTOS = ("coffee", "chelsea", "astronaut", "rocket")
VARIANTS = {"efficientnet_lite1": 240, "efficientnet_lite2": 260}


def _inputs(size: int) -> np.ndarray:
    return np.stack([transform.resize(getattr(data, p)(), (size, size), order=1, anti_aliasing=True,
                                      preserve_range=True) for p in PHOTOS]).astype(np.float32)


def _logits(net: keras.Model, preprocessing: str, images: np.ndarray) -> np.ndarray:
    """The 1000 ImageNet logits (before the softmax) of an ``include_top`` network."""
    pooled = keras.Model(net.input, net.get_layer("avg_pool").output)
    kernel, bias = net.get_layer("predictions").get_weights()
    return np.asarray(pooled.predict_on_batch(preprocessing_layer(preprocessing)(images))) @ kernel + bias


def _reference(name: str) -> np.ndarray:
    with np.load(REFERENCE) as ref:
        return np.stack([ref[f"{name.removeprefix('efficientnet_')}/{p}"] for p in PHOTOS])


@pytest.mark.parametrize("name", VARIANTS)
def test_port_matches_the_source_logits_and_top5(name):
    backbone = Backbone.from_preset(name, include_top=True)
    assert backbone.input_size == (VARIANTS[name],) * 2 and backbone.preprocessing == "lite"
    got, ref = _logits(backbone.net, "lite", _inputs(VARIANTS[name])), _reference(name)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(np.argsort(-got, axis=1)[:, :5], np.argsort(-ref, axis=1)[:, :5])
    # The photos are what ImageNet names them: espresso / cup, and a cat.
    assert {int(np.argmax(got[0]))} <= {967, 968, 504} and int(np.argmax(got[1])) in range(281, 286)


def _wired_wrong(monkeypatch, how: str) -> keras.Model:
    weights = zoo.ensure("efficientnet_lite2") / "weights.npz"
    if how == "symmetric padding":
        monkeypatch.setattr(lite, "PADDING", "symmetric")
    elif how == "torch BatchNorm epsilon":
        monkeypatch.setattr(lite, "BN_EPSILON", 1e-5)
    model, port = lite.build_efficientnet_lite("lite2", include_top=True)
    with np.load(weights) as npz:
        state = dict(npz)
    if how == "two blocks swapped":  # same shapes, so only the numbers can tell
        for part in ("_depthwise_conv.weight", "_project_conv.weight"):
            a, b = f"_blocks.2.{part}", f"_blocks.3.{part}"
            state[a], state[b] = state[b], state[a]
    port.load(state)
    return model


@pytest.mark.parametrize("how", ["symmetric padding", "torch BatchNorm epsilon", "two blocks swapped"])
def test_the_reference_check_fails_on_a_wrongly_wired_port(monkeypatch, how):
    got = _logits(_wired_wrong(monkeypatch, how), "lite", _inputs(260))
    assert np.abs(got - _reference("efficientnet_lite2")).max() > 100 * 1e-4


def test_other_input_sizes_keep_the_weights():
    small = Backbone.from_preset("efficientnet_lite2", input_size=(192, 224))
    assert small.input_size == (192, 224) and small.feature_dim == 1280
    features = small.predict([data.chelsea(), data.chelsea()[:, ::-1], data.coffee()])
    cos = features @ features.T / np.outer(*(2 * [np.linalg.norm(features, axis=1)]))
    assert cos[0, 1] > cos[0, 2] + 0.2


def test_weights_that_do_not_fit_are_refused_with_the_key():
    with np.load(zoo.ensure("efficientnet_lite1") / "weights.npz") as npz:
        state = dict(npz)
    _, port = lite.build_efficientnet_lite("lite2")
    with pytest.raises(ValueError, match="do not fit"):
        port.load(state)
    del state["_bn0.running_var"]
    _, port = lite.build_efficientnet_lite("lite1")
    with pytest.raises(ValueError, match=r"_bn0\.running_var"):
        port.load(state)
