"""The LiteRT runtime: both stages agree with TensorFlow, conversion failures fall back, exports are cached by
checksum, and int8 is the default only where its measured agreement holds."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tensorflow as tf
from skimage import data

from classify.litert import (
    exported_path,
    int8_check,
    load_litert_classifier,
    resolve_precision,
    save_calibration,
)
from detectcrop import Detector
from detectcrop.litert import resolve_runtime

pytest.importorskip("ai_edge_litert")


@pytest.fixture(scope="module")
def litert_detector():
    return Detector.from_preset("centernet_mobilenetv3_512", runtime="litert")


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_litert_detector_agrees_with_tensorflow(detector, litert_detector, name):
    image = getattr(data, name)()
    ref, got = detector.detect(image, min_score=0.2), litert_detector.detect(image, min_score=0.2)
    assert litert_detector.runtime == "litert" and len(ref) > 0
    assert len(got) == len(ref)
    np.testing.assert_allclose(got.xyxy, ref.xyxy, atol=1.0)
    np.testing.assert_allclose(got.scores, ref.scores, atol=0.02)
    assert got.class_ids.tolist() == ref.class_ids.tolist()


def test_litert_detector_config_round_trip(litert_detector):
    config = litert_detector.to_config()
    assert config["runtime"] == "litert"
    again = Detector.from_config(config)
    assert again.runtime == "litert"
    image = data.astronaut()
    np.testing.assert_array_equal(again.detect(image).xyxy, litert_detector.detect(image).xyxy)  # deterministic


def test_auto_runtime_is_litert_on_this_cpu_machine():
    expected = "tf" if tf.config.list_physical_devices("GPU") else "litert"
    assert resolve_runtime("auto") == expected
    with pytest.raises(ValueError, match="runtime"):
        resolve_runtime("onnx")


class _Unconvertible(tf.Module):
    """A detector with the TF Hub contract whose graph uses string ops (no LiteRT builtin exists for them)."""

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8)])
    def __call__(self, images):
        text = tf.strings.as_string(tf.reduce_mean(tf.cast(images, tf.float32)))
        score = tf.cast(tf.strings.length(text), tf.float32) / 100.0
        return {"detection_boxes": tf.constant([[[0.1, 0.2, 0.5, 0.6]]]), "detection_scores": tf.reshape(score, [1, 1]),
                "detection_classes": tf.constant([[85.0]]), "num_detections": tf.constant([1.0])}


def test_a_detector_that_does_not_convert_runs_on_tensorflow(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DETECTCROP_HOME", str(tmp_path / "home"))
    module = _Unconvertible()
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.__call__})
    with caplog.at_level(logging.WARNING, logger="detectcrop.detector"):
        det = Detector.from_preset(tmp_path / "sm", runtime="litert")
    assert det.runtime == "tf"
    assert [r.message for r in caplog.records if "does not convert to LiteRT" in r.message]
    out = det.detect(np.zeros((100, 200, 3), np.uint8), min_score=0.0)
    np.testing.assert_allclose(out.xyxy, [[40, 10, 120, 50]], atol=1e-3)


@pytest.fixture(scope="module")
def saved_run(fitted, tmp_path_factory):
    clf = fitted[0]
    run = tmp_path_factory.mktemp("litert_run")
    clf.save(run)
    return run


def test_litert_classifier_agrees_and_is_rebuilt_when_the_model_changes(fitted, saved_run):
    clf, _, test = fitted
    runner = load_litert_classifier(saved_run)
    first = runner.path
    assert first == exported_path(saved_run, "float") and first.is_file()
    np.testing.assert_array_equal(runner.predict_proba(test.paths).argmax(1), clf.predict_proba(test.paths).argmax(1))
    mtime = first.stat().st_mtime_ns
    assert load_litert_classifier(saved_run).path == first and first.stat().st_mtime_ns == mtime  # cached

    changed = clf.unknown_below
    try:
        clf.unknown_below = 0.77  # a different model.keras (here: its stored unknown rule)
        clf.save(saved_run)
    finally:
        clf.unknown_below = changed
    again = load_litert_classifier(saved_run)
    assert again.path != first and not first.exists()  # the stale export is gone
    assert again.unknown_below == pytest.approx(0.77)


def test_int8_refuses_to_be_the_default_with_a_bad_calibration(fitted, saved_run):
    clf, _, test = fitted
    assert resolve_precision(saved_run, "auto") == "float"  # no calibration crops: float
    with pytest.raises(FileNotFoundError, match="save_calibration"):
        load_litert_classifier(saved_run, "int8")
    # deliberately bad: calibrated on flat grey images, so the activation ranges do not fit real crops
    size = clf.input_size_
    save_calibration(saved_run, np.full((8, *size, 3), 128, np.uint8), test.paths, size)
    bad = load_litert_classifier(saved_run, "int8")
    float_top1 = load_litert_classifier(saved_run).predict_proba(test.paths).argmax(1)
    reference = clf.predict_proba(test.paths).argmax(1)
    assert (float_top1 == reference).all()  # the float export holds the bar on the same crops
    assert bad.meta["n"] == len(test.paths)
    assert bad.meta["argmax_agreement"] == pytest.approx(np.mean(bad.predict_proba(test.paths).argmax(1) == reference))
    assert bad.meta["argmax_agreement"] < 0.99 and bad.meta["int8_default"] is False
    assert resolve_precision(saved_run, "auto") == "float"


def test_int8_rule():
    ref = np.eye(4)[[0, 1, 2, 3] * 25]
    assert int8_check(ref, ref)["int8_default"] is True
    worse = ref.copy()
    worse[0] = worse[1]  # 99 of 100 agree: still at the bar
    assert int8_check(ref, worse)["int8_default"] is True
    worse[2] = worse[3]
    assert int8_check(ref, worse)["int8_default"] is False
