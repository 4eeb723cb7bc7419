"""The LiteRT runtime: both stages agree with TensorFlow, conversion failures fall back, exports are cached by
checksum, and int8 is the default only where its measured agreement holds."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf
from classify.litert import (
    INT8_MIN_HELDOUT,
    exported_path,
    int8_check,
    load_litert_classifier,
    resolve_precision,
    save_representative_data,
)
from detectcrop.litert import ConversionError, resolve_runtime
from skimage import data

from detectcrop import Detector, litert

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


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_litert_detector_decodes_only_the_requested_categories_with_the_same_result(litert_detector, name):
    """The CenterNet head runs outside the graph: asked for some categories (ids or names, any iterable) it decodes
    only those, and keeps the detections of those categories that decoding every class keeps (above a score where
    the whole graph's top 100, shared by all classes, is not crowded)."""
    assert litert_detector.accepts_categories and litert_detector.model.head is not None
    image = getattr(data, name)()
    everything = litert_detector.detect(image, min_score=0.1)
    assert len(everything) > 0
    wanted = sorted(set(everything.class_ids.tolist()))
    for ids, given in [((1,), lambda: (1,)), ((47, 85), lambda: [85, 47]), (wanted, lambda: np.array(wanted)),
                       ((90,), lambda: (90,)), ((1, 85), lambda: (c for c in (85, 1))),
                       ((1, 85), lambda: ["clock", "person"])]:
        got = litert_detector.detect(image, min_score=0.1, categories=given())
        ref = everything.filter(category=list(ids))
        np.testing.assert_array_equal(got.class_ids, ref.class_ids)
        np.testing.assert_allclose(got.xyxy, ref.xyxy, atol=1e-3)
        np.testing.assert_allclose(got.scores, ref.scores, atol=1e-6)


def test_the_split_decoding_is_checked_against_the_graph():
    """At conversion the NumPy decoding is compared with the graph's own on the same trunk outputs: it agrees on real
    photos, and a head that decodes differently (two classes swapped) is caught."""
    from dataclasses import replace

    from detectcrop.centernet_head import Split, trunk_function

    from detectcrop import centernet_head, litert_fixed, zoo

    saved_model = zoo.ensure("centernet_mobilenetv3_512") / "saved_model"
    split = trunk_function(litert_fixed.fixed_size_graph(saved_model))
    trunk_file = litert.converted_detector(saved_model).with_name(centernet_head.TRUNK_FILE)
    trunk = litert.LiteRTDetector(trunk_file.read_bytes())  # the raw trunk outputs
    outputs = [trunk(image[None]) for image in (data.astronaut(), data.chelsea())]
    assert sorted(outputs[0]) == ["features", "wh"]
    assert split.check(outputs) is None
    person, cat = (int(np.flatnonzero(split.head.class_ids == c)[0]) for c in (1, 17))
    swapped = split.head.class_ids.copy()
    swapped[[person, cat]] = swapped[[cat, person]]
    bad = Split(split.function, split.keep_alive, replace(split.head, class_ids=swapped), split.reference)
    assert "detection_classes" in bad.check(outputs)


def test_a_split_that_fails_its_check_is_not_used(monkeypatch, caplog):
    from detectcrop import centernet_head, zoo

    monkeypatch.setattr(centernet_head.Split, "check", lambda self, outputs: "scores differ (forced)")
    with caplog.at_level(logging.WARNING, logger="detectcrop.litert"):
        assert litert.convert_trunk(zoo.ensure("centernet_mobilenetv3_512") / "saved_model") is None
    assert [r for r in caplog.records if "split is not used (scores differ (forced))" in r.message]


def test_litert_detector_config_round_trip(litert_detector):
    config = litert_detector.to_config()
    assert config["runtime"] == "litert"
    again = Detector.from_config(config)
    assert again.runtime == "litert"
    image = data.astronaut()
    np.testing.assert_array_equal(again.detect(image).xyxy, litert_detector.detect(image).xyxy)  # deterministic


def test_the_litert_detector_has_one_static_shape(detector, litert_detector):
    """CenterNet squashes any input to 512x512: the LiteRT graph takes the resized image, so photos of new sizes reuse
    one interpreter, and boxes still land on the original pixels (as TensorFlow's)."""
    assert litert_detector.model.fixed_size == (512, 512)
    image = data.coffee()[:333, :517]
    got, ref = litert_detector.detect(image, min_score=0.2), detector.detect(image, min_score=0.2)
    litert_detector.detect(data.astronaut())
    litert_detector.detect(data.chelsea(), categories=(17,))
    keys = list(litert_detector.model._local.states)  # (graph, threads, *input shape): one shape for every graph
    assert {key[2:] for key in keys} == {(1, 512, 512, 3)} and len(keys) == len({key[0] for key in keys})
    assert len(got) == len(ref) > 0
    np.testing.assert_allclose(got.xyxy, ref.xyxy, atol=1.0)


def test_tiles_run_as_concurrent_single_threaded_calls_with_the_same_result(litert_detector):
    """Tiled detection on LiteRT runs its passes on a pool of single-threaded interpreters (a last pass left over
    runs on every thread): the same detections, in the same order, as the passes run one after another on the
    detector's own interpreter."""
    from detectcrop.tiling import TileConfig, detect_tiled, tile_grid

    image = data.rocket()  # 6 tiles and the whole image: 3 pairs of passes, then one pass left over
    assert len(tile_grid(image.shape)) == 6
    assert litert_detector.concurrent_calls >= 1
    parallel = Detector.from_preset("centernet_mobilenetv3_512", runtime="litert", num_threads=2)
    serial = Detector.from_preset("centernet_mobilenetv3_512", runtime="litert", num_threads=1)
    assert parallel.concurrent_calls == 2 and serial.concurrent_calls == 1
    got = detect_tiled(parallel, image, TileConfig(), min_score=0.1)
    # the left-over pass ran here, on this thread's interpreter with the detector's threads (key: graph, 0, shape)
    assert [key[1] for key in parallel.model._local.states] == [0]
    ref = detect_tiled(serial, image, TileConfig(), min_score=0.1)
    assert len(ref) > 0
    np.testing.assert_array_equal(got.xyxy, ref.xyxy)
    np.testing.assert_array_equal(got.scores, ref.scores)
    np.testing.assert_array_equal(got.data["tile"], ref.data["tile"])
    assert len({t for t in ref.data["tile"]}) > 1  # detections from several passes
    assert got.class_ids.tolist() == ref.class_ids.tolist()


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
    with pytest.raises(FileNotFoundError, match="save_representative_data"):
        load_litert_classifier(saved_run, "int8")
    # deliberately bad: calibrated on flat grey images, so the activation ranges do not fit real crops
    size = clf.input_size_
    save_representative_data(saved_run, np.full((8, *size, 3), 128, np.uint8), test.paths, size)
    bad = load_litert_classifier(saved_run, "int8")
    float_top1 = load_litert_classifier(saved_run).predict_proba(test.paths).argmax(1)
    reference = clf.predict_proba(test.paths).argmax(1)
    assert (float_top1 == reference).all()  # the float export holds the bar on the same crops
    assert bad.meta["n"] == len(test.paths)
    assert bad.meta["argmax_agreement"] == pytest.approx(np.mean(bad.predict_proba(test.paths).argmax(1) == reference))
    assert bad.meta["argmax_agreement"] < 0.99 and bad.meta["int8_default"] is False
    assert resolve_precision(saved_run, "auto") == "float"


@pytest.mark.integration  # the int8 export is replaced by a failure: only the float conversion runs
@pytest.mark.parametrize("error", [ConversionError("int8: the converter failed"), ImportError("no tensorflow")])
def test_auto_serves_float_on_litert_when_the_int8_export_fails(saved_run, monkeypatch, caplog, error):
    import classify.litert as classify_litert

    real = classify_litert.export_cached

    def failing(model, precision="float"):
        if precision == "int8":
            raise error
        return real(model, precision)

    monkeypatch.setattr(classify_litert, "export_cached", failing)
    calibration = saved_run / "calibration.npz"
    made = not calibration.exists()
    calibration.touch()  # so auto tries int8
    try:
        with caplog.at_level(logging.WARNING, logger="classify.litert"):
            runner = load_litert_classifier(saved_run, "auto")
        with pytest.raises(type(error)):  # asked for explicitly, int8 still fails loudly
            load_litert_classifier(saved_run, "int8")
    finally:
        if made:
            calibration.unlink()
    assert runner.path == exported_path(saved_run, "float")  # LiteRT float, not TensorFlow
    assert [r for r in caplog.records if "serving float" in r.message]


def test_int8_rule():
    ref = np.eye(4)[[0, 1, 2, 3] * 25]
    assert int8_check(ref, ref)["int8_default"] is True
    worse = ref.copy()
    worse[0] = worse[1]  # 99 of 100 agree: still at the bar
    assert int8_check(ref, worse)["int8_default"] is True
    worse[2] = worse[3]
    assert int8_check(ref, worse)["int8_default"] is False
    few = ref[:INT8_MIN_HELDOUT - 1]
    assert int8_check(few, few)["int8_default"] is False  # all agree, on too few crops to show 99%
    assert int8_check(ref[:INT8_MIN_HELDOUT], ref[:INT8_MIN_HELDOUT])["int8_default"] is True
    answers = np.array(["a", "b", "c", "d"] * 25, dtype=object)
    flipped = answers.copy()
    flipped[:2] = "unknown"  # same top class, but two crops now fall below the open-set threshold
    check = int8_check(ref, ref, decisions=(answers, flipped))
    assert check["argmax_agreement"] == 1.0 and check["decision_agreement"] == 0.98 and not check["int8_default"]


HELD_OUT = ("astronaut", "coffee", "chelsea")


def test_int8_detector_refuses_to_be_the_default_with_a_bad_calibration(caplog):
    from detectcrop.litert_int8 import RepresentativeData

    # deliberately bad: flat grey images give activation ranges that do not fit real photos
    grey = RepresentativeData(tuple(np.full((4, 256, 256, 3), 128, np.uint8)),
                               tuple(getattr(data, n)() for n in HELD_OUT))
    auto = Detector.from_preset("centernet_mobilenetv3_512", runtime="litert", precision="auto",
                                representative_data=grey)
    assert auto.runtime == "litert" and auto.precision == "float"
    with caplog.at_level(logging.WARNING, logger="detectcrop.detector"):
        forced = Detector.from_preset("centernet_mobilenetv3_512", runtime="litert", precision="int8",
                                      representative_data=grey)
    assert forced.runtime == "tf" and [r for r in caplog.records if "requantization" in r.message]


def test_int8_detector_check_is_measured_on_held_out_photos(tmp_path):
    from detectcrop.litert import conversion_info, make_interpreter
    from detectcrop.litert_int8 import HELDOUT_DIR, detection_recall
    from PIL import Image

    for name in ("rocket", "immunohistochemistry", "cat", "retina", *HELD_OUT):
        folder = tmp_path / (HELDOUT_DIR if name in HELD_OUT else "photos")
        folder.mkdir(exist_ok=True)
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.png")
    det = Detector.from_preset("centernet_mobilenetv3_512", runtime="litert", precision="int8",
                               representative_data=tmp_path, nms_iou=None)  # the check counts raw detections
    assert det.precision == "int8" and det.to_config()["representative_data"] == str(tmp_path)
    info = conversion_info(det.model.model)
    assert info["reference"] == "float detections" and info["n_images"] == 3 and info["n_representative"] == 4
    assert info["bias_corrected"] > 40  # most of the offline CenterNet's int8 convolutions (`detectcrop.litert_bias`)
    float_det = Detector.from_preset("centernet_mobilenetv3_512", runtime="litert", nms_iou=None)
    photos = [getattr(data, n)() for n in HELD_OUT]
    truth = [float_det.detect(im, min_score=0.3).xyxy for im in photos]
    assert info["float_recall"] == 1.0 and sum(map(len, truth)) == info["n_boxes"] > 0
    recall = detection_recall(lambda im: det.detect(im, min_score=0.0), tuple(photos), tuple(truth))
    assert info["int8_recall"] == pytest.approx(recall)
    assert info["int8_default"] == (info["int8_recall"] >= info["float_recall"] - 0.01)
    auto = Detector.from_preset("centernet_mobilenetv3_512", runtime="litert", precision="auto",
                                representative_data=tmp_path)
    assert auto.precision == ("int8" if info["int8_default"] else "float")
    # the trunk is integer, the post-processing (top-k, box arithmetic) float
    interp = make_interpreter(det.model.model, 1)
    dtypes = {t["index"]: t["dtype"] for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()
    shapes = {t["index"]: tuple(t["shape"]) for t in interp.get_tensor_details()}
    convs = [op for op in ops if op["op_name"] == "CONV_2D"]
    stem = max(shapes[op["outputs"][0]][1:3] for op in convs)  # the highest resolution stays float
    assert all((dtypes[op["outputs"][0]] == np.float32) == (shapes[op["outputs"][0]][1:3] == stem) for op in convs)
    assert sum(dtypes[op["outputs"][0]] == np.int8 for op in convs) > 0.9 * len(convs)
    assert all(dtypes[op["inputs"][0]] == np.float32 for op in ops if op["op_name"] == "TOPK_V2")
    # no int8 op that XNNPACK leaves to LiteRT's slow kernels (`detectcrop.litert_prequant`)
    assert not [op["op_name"] for op in ops if op["op_name"] in ("RELU", "HARD_SWISH")
                and dtypes[op["inputs"][0]] == np.int8]


def test_int8_detector_rule():
    from detectcrop.litert_int8 import int8_detector_check

    assert int8_detector_check(0.97, 0.96)["int8_default"] is True
    assert int8_detector_check(0.97, 0.955)["int8_default"] is False
    assert int8_detector_check(0.5, 0.9)["int8_default"] is True
    assert int8_detector_check(float("nan"), 0.9)["int8_default"] is False


_WITHOUT_TENSORFLOW = """
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras", "tensorflow_hub"):
            raise ImportError("refused: " + name)
sys.meta_path.insert(0, Refuse())
from pipelines.label import main
code = main(sys.argv[1:])
assert not [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")]
sys.exit(code)
"""


def test_label_on_litert_runs_without_importing_tensorflow(fitted, tmp_path):
    from pipelines.label import main

    clf = fitted[0]
    clf.save(tmp_path / "run")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut", "chelsea", "coffee"):
        cv2.imwrite(str(photos / f"{name}.jpg"), getattr(data, name)()[..., ::-1])
    args = ["--input", str(photos), "--model", str(tmp_path / "run"), "--detector", "centernet_mobilenetv3_512",
            "--category", "person,cat,cup", "--tile", "--annotate", "--no-progress",
            "--runtime", "auto" if resolve_runtime("auto") == "litert" else "litert"]  # auto: the CPU-only case
    assert main([*args, "--output", str(tmp_path / "first")]) == 0  # converts and caches both models
    done = subprocess.run([sys.executable, "-c", _WITHOUT_TENSORFLOW, *args, "--output", str(tmp_path / "again")],
                          capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    rows = (tmp_path / "first" / "predictions.csv").read_text()
    assert len(rows.splitlines()) > 3  # objects were found and classified
    for name in ("predictions.csv", "results.coco.json"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "first" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "again" / "annotated").iterdir()) == sorted(
        p.name for p in (tmp_path / "first" / "annotated").iterdir())
