"""TFLite export of the trained classifier: float and dynamic-range quantised, checked against the Keras model."""

from __future__ import annotations

import json

import numpy as np
from classify.tflite import CALL_BYTES, LiteRTClassifier, agreement
from classify.tflite_export import export_and_check


def test_float_and_dynamic_exports_agree_with_keras(fitted, tmp_path):
    clf, _, test = fitted
    results = export_and_check(clf, tmp_path, test.paths)
    reference = clf.predict_proba(test.paths)

    float_model = LiteRTClassifier(results["float"]["path"])
    probs = float_model.predict_proba(test.paths, batch_size=5)  # odd batch size: tensors are resized
    assert (probs.argmax(1) == reference.argmax(1)).all()
    np.testing.assert_allclose(probs, reference, atol=1e-4)
    assert results["float"]["argmax_agreement"] == 1.0 and results["float"]["max_abs_diff"] < 1e-4
    assert (float_model.predict(test.paths) == clf.predict(test.paths)).all()
    assert float_model.classes_.tolist() == clf.classes_.tolist()

    # int8 weights: about 4x smaller; top-1 answers may move only where the Keras model is unsure
    dynamic = results["dynamic"]
    assert dynamic["size_bytes"] < 0.4 * results["float"]["size_bytes"]
    assert dynamic["argmax_agreement"] >= 0.9, dynamic
    assert dynamic["max_abs_diff"] < 0.25, dynamic
    meta = json.loads((tmp_path / "model_dynamic.tflite.json").read_text())
    assert meta["class_names"] == clf.classes_.tolist() and meta["precision"] == "dynamic"

    # a batch runs as calls of `call_size` crops (the widest activation of a call kept cache-sized): same answers
    # as one call of the whole batch
    images = np.random.default_rng(0).uniform(0, 255, (7, *float_model.input_size_, 3)).astype(np.float32)
    assert 1 <= float_model.call_size < CALL_BYTES  # the widest activation was found
    float_model.call_size = 3
    proba_calls, score_calls = float_model.predict_batch(images)
    float_model.call_size = len(images)
    proba_one, score_one = float_model.predict_batch(images)
    assert proba_calls.shape == (7, len(clf.classes_))
    np.testing.assert_allclose(proba_calls, proba_one, atol=1e-6)
    if score_one is not None:
        np.testing.assert_allclose(score_calls, score_one, atol=1e-5)


def test_agreement_summary():
    a = np.array([[0.9, 0.1], [0.4, 0.6]])
    assert agreement(a, a) == {"n": 2, "argmax_agreement": 1.0, "max_abs_diff": 0.0}
    b = np.array([[0.8, 0.2], [0.6, 0.4]])
    r = agreement(a, b)
    assert r["argmax_agreement"] == 0.5 and np.isclose(r["max_abs_diff"], 0.2)


def test_call_size_of_a_fixed_batch_graph(tmp_path):
    """A graph exported with a fixed batch of 1 has no dynamic batch dimension: its activations are still found by
    their leading dimension, so calls stay cache-sized (the same size as for the dynamic-batch graph)."""
    import tensorflow as tf
    from classify.tflite import _widest_activation
    from detectcrop.litert import make_interpreter

    weights = tf.constant(np.random.default_rng(0).normal(size=(3, 3, 3, 64)).astype(np.float32))
    sizes = {}
    for batch in (None, 1):
        fn = tf.function(lambda x: tf.nn.relu(tf.nn.conv2d(x, weights, 1, "SAME")),
                         input_signature=[tf.TensorSpec([batch, 96, 96, 3], tf.float32)])
        interp = make_interpreter(tf.lite.TFLiteConverter.from_concrete_functions(
            [fn.get_concrete_function()]).convert(), 1)
        sizes[batch] = _widest_activation(interp)
    assert sizes[None] == sizes[1] == 96 * 96 * 64 * 4
