"""FineClassifier on real pixels with the real offline backbone (torchvision ImageNet MobileNetV2); the estimator
contract on tiny models is in test_classify_estimator.py."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn.metrics import f1_score

from classify import CropClassifier, FineClassifier
from classify.backbones import backbone_blocks, block_name, leaf_layers


def test_training_beats_chance_clearly(fitted):
    clf, _, test = fitted
    pred = clf.predict(test.paths, open_set=False)  # the top class (the unknown rule is tested on its own)
    macro_f1 = f1_score(test.label_names, pred, average="macro")
    probe_f1 = f1_score(test.label_names, clf.predict_linear_probe(test.paths), average="macro")
    chance = 1 / len(clf.classes_)
    assert macro_f1 >= 3 * chance and macro_f1 >= probe_f1 - 0.05, (macro_f1, probe_f1)
    with_rule = clf.predict(test.paths)  # unknown where the model's open-set score is below its threshold
    known = with_rule != clf.unknown_label
    assert np.array_equal(with_rule[known], pred[known])
    assert clf.classes_.tolist() == ["astronaut", "cat", "coffee", "rocket"]
    assert clf.best_epoch_ is not None and clf.history_[0]["stage"] == "head"
    assert {"loss", "val_loss", "val_accuracy", "val_macro_f1", "learning_rate"} <= set(clf.history_[0])
    assert clf.timings_["features_s"] > 0 and clf.input_size_ == (224, 224)


def test_save_load_gives_identical_outputs_and_carries_labels(fitted, tmp_path):
    clf, _, test = fitted
    path = clf.save(tmp_path / "run")
    assert path == tmp_path / "run" / "model.keras"
    (tmp_path / "run" / "model.augmentation.json").unlink()  # the .keras file alone must be enough
    loaded = FineClassifier.load(tmp_path / "run")
    np.testing.assert_allclose(loaded.predict_proba(test.paths), clf.predict_proba(test.paths), rtol=0, atol=1e-6)
    assert loaded.classes_.tolist() == clf.classes_.tolist()
    assert loaded.input_size_ == clf.input_size_ and loaded.backbone == "mobilenet_v2_torchvision"
    assert loaded.augmentation_ == clf.augmentation_ and loaded.get_params()["epochs"] == clf.epochs
    assert isinstance(loaded.model_, CropClassifier) and loaded.model_.class_names == clf.classes_.tolist()
    assert loaded.model_.input_size == (224, 224)
    # preprocessing is inside: raw [0, 255] pixels in, probabilities out
    assert any("preprocess" in layer.name for layer in loaded.model_.backbone.layers)
    # arrays of any size are accepted and resized the same way as files
    from classify.batches import as_rgb_uint8

    arrays = [as_rgb_uint8(p) for p in test.paths[:3]]
    np.testing.assert_allclose(loaded.predict_proba(arrays), clf.predict_proba(test.paths[:3]), rtol=0, atol=1e-6)


def test_seed_makes_training_repeatable(fitted, offline_backbone, classify_workdir):
    _, train, test = fitted
    kwargs = {"epochs": 6, "augment_views": 1, "fine_tune_blocks": 0, "seed": 0,
              "cache_dir": classify_workdir / "cache"}  # features cached
    a = FineClassifier(offline_backbone, **kwargs).fit(train.paths, train.label_names, groups=train.groups)
    b = FineClassifier(offline_backbone, **kwargs).fit(train.paths, train.label_names, groups=train.groups)
    np.testing.assert_array_equal(a.predict_proba(test.paths), b.predict_proba(test.paths))
    assert a.history_ == b.history_


def test_fine_tuning_unfreezes_top_blocks_and_keeps_batchnorm_frozen(fitted, offline_backbone):
    _, train, _ = fitted
    bb = offline_backbone  # shared with other tests: fine-tuning must train a copy
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
    assert all(np.array_equal(before[w.path], keras.ops.convert_to_numpy(w)) for w in bb.model.weights)
    tuned = clf.model_.backbone
    changed = {w.path for w in tuned.weights if not np.array_equal(before[w.path], keras.ops.convert_to_numpy(w))}
    top = {w.path for _, layers in blocks[-2:] for layer in layers for w in layer.weights}
    assert changed and changed <= top, sorted(changed - top)[:5]
    for layer in leaf_layers(tuned):
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable
    assert not any("_bn" in p for p in changed)  # BatchNorm statistics and affine weights untouched


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


def test_fine_tuning_never_ends_worse_on_validation_than_the_head_stage(fitted, offline_backbone):
    _, train, _ = fitted
    bb = offline_backbone
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


def test_a_preset_backbone_trains_at_another_input_size(fitted, offline_backbone, tmp_path):
    """``input_size`` builds the preset's network for that size with the same weights: the model, its saved copy
    and the reported size follow it, and the frozen features differ from the preset size's (the pixels seen
    differ), so the parameter is not ignored."""
    from classify.backbones import resolve_backbone

    _, train, test = fitted
    clf = FineClassifier("mobilenet_v2_torchvision", input_size=160, epochs=3, augment_views=0, fine_tune_blocks=0,
                         seed=0).fit(train.paths, train.label_names, groups=train.groups)
    assert clf.input_size_ == (160, 160) and clf.model_.input_size == (160, 160)
    loaded = FineClassifier.load(clf.save(tmp_path / "run").parent)
    assert loaded.input_size_ == (160, 160) and loaded.get_params()["input_size"] == 160
    np.testing.assert_allclose(loaded.predict_proba(test.paths), clf.predict_proba(test.paths), rtol=0, atol=1e-6)
    _, small = clf.logits_and_features(test.paths[:2])
    images = offline_backbone.prepare([np.asarray(keras.utils.load_img(p)) for p in test.paths[:2]])
    default = offline_backbone.model.predict(images, verbose=0)
    assert small.shape == default.shape and not np.allclose(small, default, atol=1e-3)
    with pytest.raises(ValueError, match="give a preset name"):
        resolve_backbone(offline_backbone, 160)
    for bad in (16, 0, True, "224", (224,)):
        with pytest.raises(ValueError, match="input size"):
            resolve_backbone("mobilenet_v2_torchvision", bad)
