"""FineClassifier on real pixels with the real offline backbone (torchvision ImageNet MobileNetV2)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from classify_testdata import backbone, fitted, workdir
from sklearn.metrics import f1_score

from classify import FineClassifier
from classify.backbones import Backbone
from classify.model import ClassifierInfo, backbone_blocks, block_name


def test_training_beats_chance_clearly():
    clf, _, test = fitted()
    pred = clf.predict(test.paths)
    accuracy = np.mean(pred == test.label_names)
    macro_f1 = f1_score(test.label_names, pred, average="macro")
    assert accuracy >= 0.8 and macro_f1 >= 0.75, (accuracy, macro_f1)  # chance: 0.25 (4 classes)
    assert clf.classes_.tolist() == ["astronaut", "cat", "coffee", "rocket"]
    assert clf.best_epoch_ is not None and clf.history_[0]["stage"] == "head"
    assert {"loss", "val_loss", "val_accuracy", "val_macro_f1", "learning_rate"} <= set(clf.history_[0])
    assert clf.timings_["features_s"] > 0 and clf.input_size_ == (224, 224)


def test_save_load_gives_identical_outputs_and_carries_labels(tmp_path):
    clf, _, test = fitted()
    path = clf.save(tmp_path / "run")
    assert path == tmp_path / "run" / "model.keras"
    (tmp_path / "run" / "model.augmentation.json").unlink()  # the .keras file alone must be enough
    loaded = FineClassifier.load(tmp_path / "run")
    np.testing.assert_allclose(loaded.predict_proba(test.paths), clf.predict_proba(test.paths), rtol=0, atol=1e-6)
    assert loaded.classes_.tolist() == clf.classes_.tolist()
    assert loaded.input_size_ == clf.input_size_ and loaded.backbone == "mobilenet_v2_torchvision"
    assert loaded.augmentation_ == clf.augmentation_ and loaded.get_params()["epochs"] == clf.epochs
    info = next(layer for layer in loaded.model_.layers if isinstance(layer, ClassifierInfo))
    assert info.class_names == clf.classes_.tolist() and info.info["input_size"] == [224, 224]
    # preprocessing is inside: raw [0, 255] pixels in, probabilities out
    assert any("preprocess" in layer.name for layer in loaded.model_.get_layer(index=1).layers)
    # arrays of any size are accepted and resized the same way as files
    from classify.features import as_rgb_uint8

    arrays = [as_rgb_uint8(p) for p in test.paths[:3]]
    np.testing.assert_allclose(loaded.predict_proba(arrays), clf.predict_proba(test.paths[:3]), rtol=0, atol=1e-6)


def test_topk_and_unknown_answer():
    clf, _, test = fitted()
    proba = clf.predict_proba(test.paths[:4])
    top = clf.predict_topk(test.paths[:4], k=2)
    for p, answers in zip(proba, top, strict=True):
        assert [label for label, _ in answers] == clf.classes_[np.argsort(-p)[:2]].tolist()
        assert answers[0][1] >= answers[1][1] and np.isclose(answers[0][1], p.max())
    clf.set_params(unknown_below=1.01)
    try:
        assert set(clf.predict(test.paths[:4])) == {"unknown"}
        clf.set_params(unknown_below=0.0)
        assert (clf.predict(test.paths[:4]) == clf.classes_[proba.argmax(1)]).all()
    finally:
        clf.set_params(unknown_below=None)


def test_seed_makes_training_repeatable():
    _, train, test = fitted()
    kwargs = {"epochs": 6, "augment_views": 1, "seed": 0, "cache_dir": workdir() / "cache"}  # features cached
    a = FineClassifier(backbone(), **kwargs).fit(train.paths, train.label_names, groups=train.groups)
    b = FineClassifier(backbone(), **kwargs).fit(train.paths, train.label_names, groups=train.groups)
    np.testing.assert_array_equal(a.predict_proba(test.paths), b.predict_proba(test.paths))
    assert a.history_ == b.history_


def test_fine_tuning_unfreezes_top_blocks_and_keeps_batchnorm_frozen():
    _, train, _ = fitted()
    bb = Backbone.from_preset("mobilenet_v2_torchvision")  # its own copy: fine-tuning changes weights in place
    blocks = backbone_blocks(bb.model)
    assert [name for name, _ in blocks][:2] == ["stem", "block1"] and [n for n, _ in blocks][-2:] == ["block17", "head"]
    before = {w.path: keras.ops.convert_to_numpy(w).copy() for w in bb.model.weights}
    idx = np.r_[0:24:3]  # 8 crops, both stages tiny
    clf = FineClassifier(
        bb,
        epochs=2,
        augment_views=0,
        validation_fraction=0.0,
        fine_tune_blocks=2,
        fine_tune_epochs=1,
        batch_size=4,
        seed=0,
    )
    clf.fit([train.paths[i] for i in idx], train.label_names[idx])
    assert [r["stage"] for r in clf.history_] == ["head", "head", "fine_tune"]
    changed = {w.path for w in bb.model.weights if not np.array_equal(before[w.path], keras.ops.convert_to_numpy(w))}
    top = {w.path for _, layers in blocks[-2:] for layer in layers for w in layer.weights}
    assert changed and changed <= top, sorted(changed - top)[:5]
    for layer in _leaves(bb.model):
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable
    assert not any("_bn" in p for p in changed)  # BatchNorm statistics and affine weights untouched


def _leaves(model):
    from classify.model import leaf_layers

    return leaf_layers(model)


@pytest.mark.parametrize(
    ("name", "block"),
    [
        ("block16_expand", "block16"),
        ("block_3_project_BN", "block_3"),
        ("conv5_block16_1_conv", "conv5_block16"),
        ("head_conv", "head"),
        ("Conv1", "Conv1"),
    ],
)
def test_block_names(name, block):
    assert block_name(name) == block


def _tiny_backbone() -> keras.Model:
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="block1_conv")(x)
    return keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x), name="tiny")


def test_api_contract_with_a_stand_in_backbone():
    _, train, _ = fitted()
    idx = np.r_[0:48:2]
    X, y = [train.paths[i] for i in idx], train.label_names[idx]
    clf = FineClassifier(_tiny_backbone(), epochs=2, augmentation=None, class_weight="balanced", seed=0)
    assert "model_" not in vars(clf)  # __init__ only stores parameters
    assert clf.fit(X, y, groups=train.groups[idx]) is clf
    assert clf.predict_proba(X).shape == (len(X), 4)
    np.testing.assert_allclose(clf.predict_proba(X).sum(axis=1), 1.0, rtol=1e-5)
    assert clf.predict([]).shape == (0,)
    with pytest.raises(ValueError, match="class_weight"):
        FineClassifier(_tiny_backbone(), class_weight="inverse").fit(X, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        FineClassifier(_tiny_backbone()).fit(X[:2], ["cat", "cat"])
    with pytest.raises(ValueError, match="not in the training labels"):
        FineClassifier(_tiny_backbone(), epochs=1).fit(X, y, validation_data=(X[:1], ["zebra"]))


def test_fine_tuning_never_ends_worse_on_validation_than_the_head_stage():
    _, train, _ = fitted()
    bb = Backbone.from_preset("mobilenet_v2_torchvision")
    idx = np.r_[0:36:2]
    items, labels = [train.paths[i] for i in idx], train.label_names[idx]
    clf = FineClassifier(bb, epochs=3, augment_views=0, validation_fraction=0.3, fine_tune_blocks=3,
                         fine_tune_epochs=2, fine_tune_learning_rate=50.0, batch_size=4, seed=0)  # lr that wrecks
    clf.fit(items, labels)
    head = [r for r in clf.history_ if r["stage"] == "head"]
    tuned = [r for r in clf.history_ if r["stage"] == "fine_tune"]
    best_head = max(head, key=lambda r: (round(r["val_macro_f1"], 6), -r["val_loss"]))
    assert all(r["val_loss"] > best_head["val_loss"] for r in tuned)  # every fine-tune epoch made it worse
    assert clf.fine_tune_best_epoch_ == -1  # so the head-stage weights were kept
