"""The FineClassifier estimator contract on tiny models (16x16 images, a two-block backbone built here): scikit-learn
conventions, clone, determinism, no global random state, inputs left untouched, save -> load for every artefact."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.base import clone

from classify import Backbone, CropClassifier, FineClassifier
from classify.backbones import backbone_blocks, training_input_size
from classify.model import AUTO_FINE_TUNE_BLOCKS, resolve_fine_tune_blocks
from classify.prediction import ProbabilityPredictor, decide_labels
from detectcrop import zoo

COLOURS = ("blue", "green", "red")


def tiny_backbone(seed: int = 1) -> keras.Model:
    """image [0, 255] -> Rescaling -> two conv blocks (the first with BatchNorm) -> pooled 8-d features."""
    init = keras.initializers.GlorotUniform
    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0, name="preprocess_unit")(inp)
    x = keras.layers.Conv2D(8, 3, kernel_initializer=init(seed), name="block1_conv")(x)
    x = keras.layers.BatchNormalization(name="block1_bn")(x)
    # An unseeded initializer, as in real backbones: Keras draws its seed from Python's `random` whenever the layer is
    # rebuilt (a copy for fine-tuning), which fit must not let show. The weights are then set from a local generator.
    conv = keras.layers.Conv2D(8, 3, activation="relu", name="block2_conv")
    x = conv(x)
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x), name="tiny")
    conv.kernel.assign(np.random.default_rng(seed).normal(0.0, 0.2, conv.kernel.shape).astype(np.float32))
    return model


@pytest.fixture(scope="module")
def data() -> tuple[list[np.ndarray], np.ndarray]:
    """60 noisy 16x16 crops whose class is the dominant colour channel (any size is accepted: some are 20x24)."""
    rng = np.random.default_rng(0)
    X, y = [], []
    for i in range(60):
        label = COLOURS[i % 3]
        image = rng.integers(0, 110, (16, 16, 3) if i % 4 else (20, 24, 3))
        image[..., ("red", "green", "blue").index(label)] += 120
        X.append(image.astype(np.uint8))
        y.append(label)
    return X, np.asarray(y, dtype=object)


@pytest.fixture(scope="module")
def fitted_tiny(data) -> FineClassifier:
    """One tiny classifier fitted for the tests that only read it (with a non-default unknown rule and open-set score:
    the feature-space one, so that the TFLite tests cover it)."""
    return small(tiny_backbone(), unknown_below=0.5, unknown_label="no idea",
                 open_set_score="class_mean_cosine").fit(*data)


def small(backbone, **kwargs) -> FineClassifier:
    params = {"epochs": 4, "augmentation": "light", "augment_views": 1, "batch_size": 8, "fine_tune_blocks": 0,
              "seed": 0}
    return FineClassifier(backbone, **{**params, **kwargs})


def global_random_state() -> tuple:
    return random.getstate(), np.random.get_state()[1].tobytes(), tf.random.get_global_generator().state.numpy()


def test_init_only_stores_parameters_and_clone_round_trips(data):
    bb = tiny_backbone()
    clf = small(bb, class_weight="balanced", fine_tune_blocks=1)
    assert vars(clf) == clf.get_params(deep=False)  # nothing learned, nothing derived
    twin = clone(clf)
    assert twin.get_params().keys() == clf.get_params().keys() and twin is not clf
    assert {k: v for k, v in twin.get_params().items() if k != "backbone"} == {
        k: v for k, v in clf.get_params().items() if k != "backbone"}
    X, y = data
    assert clf.fit(X, y) is clf
    assert sorted(k for k in vars(clf) if k.endswith("_")) == [
        "augmentation_", "best_epoch_", "calibration_", "classes_", "fine_tune_best_epoch_", "frozen_backbone_",
        "history_", "input_size_", "linear_probe_", "linear_probe_val_predictions_", "model_", "open_set_threshold_",
        "temperature_", "timings_", "train_features_"]
    shared = Backbone("tiny", tiny_backbone(), (16, 16), "unit")  # a Backbone is only read, so clones share it
    assert clone(small(shared)).backbone is shared
    fitted_clone = clone(clf)  # a clone of a fitted estimator is unfitted
    assert not hasattr(fitted_clone, "model_")
    with pytest.raises(Exception, match="not fitted"):
        fitted_clone.predict_proba(X[:1])


def test_fit_predicts_and_validates(data):
    X, y = data
    clf = small(tiny_backbone(), epochs=15).fit(X, y)
    proba = clf.predict_proba(X)
    assert proba.shape == (60, 3) and clf.classes_.tolist() == sorted(COLOURS)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    baseline = np.mean(y == max(set(y), key=list(y).count))  # majority class
    assert np.mean(clf.predict(X) == y) > baseline + 0.3
    assert clf.predict([]).shape == (0,) and clf.predict_proba([]).shape == (0, 3)
    assert clf.score(X, y) == np.mean(clf.predict(X) == y)  # ClassifierMixin
    with pytest.raises(ValueError, match="class_weight"):
        FineClassifier(tiny_backbone(), class_weight="inverse").fit(X, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        FineClassifier(tiny_backbone()).fit(X[:2], ["red", "red"])
    with pytest.raises(ValueError, match="not in the training labels"):
        small(tiny_backbone()).fit(X, y, validation_data=(X[:1], ["zebra"]))
    with pytest.raises(ValueError, match="2 labels"):
        small(tiny_backbone()).fit(X[:3], y[:2])
    for bad in ({"epochs": 0}, {"batch_size": 0}, {"augment_views": -1}, {"dense_units": -1}, {"patience": -1},
                {"learning_rate": 0.0}, {"fine_tune_learning_rate": float("nan")}, {"dropout": 1.0},
                {"unknown_below": 2.0}, {"epochs": 2.5}, {"dropout": None}, {"min_learning_rate": -1e-6}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            small(tiny_backbone(), **bad).fit(X, y)
    with pytest.raises(ValueError, match="share the name '1'"):  # 1 and "1" would be one class
        small(tiny_backbone()).fit(X, [1 if i % 2 else "1" for i in range(len(y))])
    with pytest.raises(TypeError, match=r"not a single \(20, 24, 3\) image"):
        clf.predict(X[0])  # one image, not a list of them
    with pytest.raises(ValueError, match="a class is named 'unknown'"):  # its answers would be indistinguishable
        small(tiny_backbone()).fit(X, np.where(y == "red", "unknown", y))


def test_integer_labels_are_named_by_their_text_and_score_compares_names(data):
    X, y = data
    y_int = np.searchsorted(sorted(COLOURS), y)  # 0, 1, 2
    clf = small(tiny_backbone(), epochs=15).fit(X, y_int)
    assert clf.classes_.tolist() == ["0", "1", "2"]
    predicted = clf.predict(X)
    score = clf.score(X, y_int)
    assert score == pytest.approx(np.mean(predicted == y_int.astype(str))) and score > 0.5


def test_same_seed_same_model_and_predictions(data):
    X, y = data
    bb = tiny_backbone()
    a = small(bb, fine_tune_blocks=1, fine_tune_epochs=2).fit(X, y)
    b = small(bb, fine_tune_blocks=1, fine_tune_epochs=2).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.history_ == b.history_
    c = small(bb, seed=1).fit(X, y)
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))  # the seed matters


@pytest.mark.parametrize("seed", [0, None])
def test_fit_leaves_global_random_state_alone(data, seed):
    X, y = data
    bb = tiny_backbone()
    before = global_random_state()
    tf.random.set_seed(7)
    expected = tf.random.uniform([4]).numpy()  # TF's op-level sequence after set_seed(7), untouched by fit
    tf.random.set_seed(7)
    small(bb, seed=seed, fine_tune_blocks=1, fine_tune_epochs=1).fit(X, y)
    np.testing.assert_array_equal(tf.random.uniform([4]).numpy(), expected)
    after = global_random_state()
    assert after[0] == before[0] and after[1] == before[1]
    np.testing.assert_array_equal(after[2], before[2])


def test_fit_never_changes_the_backbone_passed_in(data):
    X, y = data
    bb = tiny_backbone()
    weights = [w.copy() for w in bb.get_weights()]
    flags = [layer.trainable for layer in bb.layers]
    clf = small(bb, fine_tune_blocks=1, fine_tune_epochs=2, fine_tune_learning_rate=0.05).fit(X, y)
    assert all(np.array_equal(a, b) for a, b in zip(weights, bb.get_weights(), strict=True))
    assert [layer.trainable for layer in bb.layers] == flags
    # fine-tuning trained the copy inside the model: the top block only, BatchNorm untouched
    tuned = clf.model_.backbone
    assert tuned is not bb and [name for name, _ in backbone_blocks(tuned)] == ["block1", "block2"]
    changed = {w.path for w, w0 in zip(tuned.weights, bb.weights, strict=True)
               if not np.array_equal(keras.ops.convert_to_numpy(w), keras.ops.convert_to_numpy(w0))}
    assert changed == {"block2_conv/kernel", "block2_conv/bias"}, changed
    assert [r["stage"] for r in clf.history_].count("fine_tune") >= 1


def test_every_saved_artefact_round_trips(data, fitted_tiny, tmp_path):
    X, clf = data[0], fitted_tiny
    path = clf.save(tmp_path / "run")
    assert path == tmp_path / "run" / "model.keras"
    loaded = FineClassifier.load(tmp_path / "run")
    np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X), rtol=0, atol=1e-6)
    np.testing.assert_allclose(loaded.predict_scores(X)[1], clf.predict_scores(X)[1], rtol=0, atol=1e-6)
    assert clf.open_set_threshold_ is not None and loaded.open_set_threshold_ == pytest.approx(clf.open_set_threshold_)
    assert loaded.temperature_ == pytest.approx(clf.temperature_) and (loaded.predict(X) == clf.predict(X)).all()
    assert loaded.classes_.tolist() == clf.classes_.tolist() and loaded.input_size_ == (16, 16)
    assert (loaded.unknown_below, loaded.unknown_label) == (0.5, "no idea")
    assert loaded.get_params() == {**clf.get_params(), "backbone": "tiny"}
    assert loaded.augmentation_ == clf.augmentation_ and loaded.best_epoch_ == clf.best_epoch_
    augmentation = json.loads((tmp_path / "run" / "model.augmentation.json").read_text())
    assert augmentation == clf.augmentation_ and loaded.augmentation_pipeline_ is not None


def test_keras_file_is_self_describing_in_a_fresh_process(data, fitted_tiny, tmp_path):
    X, clf = data[0], fitted_tiny
    clf.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", np.stack([x[:16, :16] for x in X[:5]]).astype(np.float32))
    code = (
        "import json, sys, numpy as np, keras, classify\n"
        "m = keras.saving.load_model(sys.argv[1])\n"
        "p = np.asarray(m.predict_on_batch(np.load(sys.argv[2])))\n"
        "print(json.dumps({'type': type(m).__name__, 'classes': m.class_names, 'unknown_below': m.unknown_below,"
        " 'proba': p.tolist()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "model.keras"), str(tmp_path / "x.npy")],
                         capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["type"] == "CropClassifier" and got["classes"] == sorted(COLOURS) and got["unknown_below"] == 0.5
    reference = clf.model_.predict_on_batch(np.load(tmp_path / "x.npy"))
    np.testing.assert_allclose(np.asarray(got["proba"]), reference, atol=1e-6)


def test_task_config_round_trips():
    model = CropClassifier(tiny_backbone(), ["a", "b"], dense_units=4, unknown_below=0.3, seed=3,
                           metadata={"note": [1, 2]})
    twin = CropClassifier.from_config(model.get_config())
    assert twin.get_config() == model.get_config()
    assert twin.class_names == ["a", "b"] and twin.input_size == (16, 16) and twin.metadata == {"note": [1, 2]}
    with pytest.raises(ValueError, match="fixed"):
        inp = keras.Input((None, None, 3))
        CropClassifier(keras.Model(inp, keras.layers.GlobalAveragePooling2D()(inp)), ["a", "b"])


def test_tflite_runner_shares_the_prediction_interface(data, fitted_tiny, tmp_path):
    from classify.tflite import LiteRTClassifier
    from classify.tflite_export import export_litert

    X, clf = data[0], fitted_tiny
    runner = LiteRTClassifier(export_litert(clf, tmp_path / "model.tflite"))
    assert isinstance(runner, ProbabilityPredictor) and isinstance(clf, ProbabilityPredictor)
    assert type(runner).predict is type(clf).predict is ProbabilityPredictor.predict  # the logic exists once
    proba, score = runner.predict_scores(X, batch_size=7)
    np.testing.assert_allclose(proba, clf.predict_proba(X), atol=1e-5)  # calibrated: the temperature is in the graph
    np.testing.assert_allclose(score, clf.predict_scores(X)[1], atol=1e-5)  # the open-set score too
    assert runner.classes_.tolist() == clf.classes_.tolist() and runner.unknown_below == 0.5
    assert runner.open_set_threshold_ == pytest.approx(clf.open_set_threshold_)
    assert runner.unknown_label == "no idea" and (runner.predict(X) == clf.predict(X)).all()
    # the same unknown decisions where the open-set rule splits the inputs in two
    mid = float(np.median(score))
    keras_proba, keras_score = clf.predict_scores(X)
    got = decide_labels(proba, runner.classes_, None, "no idea", score, mid)
    want = decide_labels(keras_proba, clf.classes_, None, "no idea", keras_score, mid)
    assert (got == want).all() and 0 < np.mean(want == "no idea") < 1
    top_runner, top_keras = runner.predict_topk(X[:5], k=2), clf.predict_topk(X[:5], k=2)
    assert [[c for c, _ in row] for row in top_runner] == [[c for c, _ in row] for row in top_keras]


def test_unknown_rule_and_topk(data, fitted_tiny):
    X, clf = data[0], clone(fitted_tiny)
    clf.__dict__.update({k: v for k, v in vars(fitted_tiny).items() if k.endswith("_")})  # same model, own params
    proba = clf.predict_proba(X[:6])
    for p, answers in zip(proba, clf.predict_topk(X[:6], k=2), strict=True):
        assert [c for c, _ in answers] == clf.classes_[np.argsort(-p)[:2]].tolist()
        assert np.isclose(answers[0][1], p.max()) and answers[0][1] >= answers[1][1]
    assert set(clf.set_params(unknown_below=1.01).predict(X[:6])) == {"no idea"}
    assert (clf.set_params(unknown_below=0.0).predict(X[:6]) == clf.classes_[proba.argmax(1)]).all()
    assert fitted_tiny.unknown_below == 0.5


def test_load_rejects_files_that_are_not_a_fine_classifier(tmp_path):
    plain = tiny_backbone()
    plain.save(tmp_path / "plain.keras")
    with pytest.raises(ValueError, match="not a FineClassifier model"):
        FineClassifier.load(tmp_path / "plain.keras")


def test_load_names_files_of_an_older_format(tmp_path):
    """A file saved before calibration (task format 2: a softmax head) fails with a message saying to retrain."""
    CropClassifier(tiny_backbone(), ["a", "b"], dense_units=4).save(tmp_path / "new.keras")
    with zipfile.ZipFile(tmp_path / "new.keras") as src, zipfile.ZipFile(tmp_path / "old.keras", "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                del config["config"]["format"]
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    with pytest.raises(ValueError, match=r"older version.*retrain"):
        FineClassifier.load(tmp_path / "old.keras")
    truncated = (tmp_path / "new.keras").read_bytes()
    (tmp_path / "cut.keras").write_bytes(truncated[: len(truncated) // 2])
    with pytest.raises(ValueError, match=r"not a readable \.keras model file"):
        FineClassifier.load(tmp_path / "cut.keras")


def test_linear_probe_reuses_the_head_stage_features(data):
    """The probe fitted inside fit equals one fitted from scratch on freshly extracted frozen features."""
    from classify.features import extract_features
    from classify.probe import fit_linear_probe

    X, y = data
    backbone = tiny_backbone()
    clf = small(backbone).fit(X[:45], y[:45], validation_data=(X[45:], y[45:]))
    expected = fit_linear_probe(extract_features(backbone, X[:45], (16, 16)), y[:45])
    np.testing.assert_allclose(clf.linear_probe_[-1].coef_, expected[-1].coef_, rtol=1e-4, atol=1e-5)
    held_out = expected.predict(extract_features(backbone, X[45:], (16, 16)))
    assert clf.linear_probe_val_predictions_.tolist() == held_out.tolist()
    assert clf.predict_linear_probe(X[45:]).tolist() == held_out.tolist()
    assert "linear_probe_s" in clf.timings_


def test_dense_units_zero_gives_a_linear_head_that_round_trips(data, tmp_path):
    X, y = data
    clf = small(tiny_backbone(), dense_units=0).fit(X, y)
    assert [layer.name for layer in clf.model_.head.layers] == ["head_dropout", "head_logits"]
    loaded = FineClassifier.load(clf.save(tmp_path / "model.keras"))
    np.testing.assert_allclose(loaded.predict_proba(X[:5]), clf.predict_proba(X[:5]), atol=1e-6)


def test_fine_tune_blocks_auto_follows_the_backbone():
    tunable, frozen = tiny_backbone(), SimpleNamespace(fine_tunable=False, name="hub_vector")
    assert resolve_fine_tune_blocks("auto", tunable) == AUTO_FINE_TUNE_BLOCKS > 0
    assert resolve_fine_tune_blocks("auto", frozen) == 0 and resolve_fine_tune_blocks(0, frozen) == 0
    with pytest.raises(ValueError, match="cannot be fine-tuned"):
        resolve_fine_tune_blocks(2, frozen)
    for bad in (-1, "all", 1.5, True):
        with pytest.raises(ValueError, match="'auto' or a count"):
            resolve_fine_tune_blocks(bad, tunable)
    # a preset's measured count (the offline default fine-tunes 8), by name or as a built backbone of that preset
    offline = SimpleNamespace(fine_tunable=True, name=zoo.OFFLINE_BACKBONE)
    assert resolve_fine_tune_blocks("auto", offline) == resolve_fine_tune_blocks("auto", zoo.OFFLINE_BACKBONE) == 8
    assert resolve_fine_tune_blocks("auto", "efficientnet_lite2") == AUTO_FINE_TUNE_BLOCKS
    assert resolve_fine_tune_blocks(2, offline) == 2


def test_a_preset_name_trains_at_its_measured_input_size():
    assert training_input_size(zoo.OFFLINE_BACKBONE) == (448, 448)  # its ImageNet size is 224
    assert training_input_size("efficientnet_lite2") == (260, 260) and training_input_size("densenet121") == (224, 224)
    assert training_input_size(tiny_backbone()) is None and training_input_size("not_a_preset") is None
