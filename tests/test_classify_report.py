"""classify.report: scikit-learn metrics, JSON, plots and the history CSV."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import f1_score

from classify.report import classification_metrics, plot_confusion_matrix, plot_history, write_history_csv, write_json


def test_metrics_match_sklearn_and_count_unknown_as_wrong():
    y_true = ["a", "a", "b", "b", "c", "c"]
    y_pred = ["a", "b", "b", "b", "c", "unknown"]
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["accuracy"] == 4 / 6
    assert np.isclose(m["macro_f1"], f1_score(y_true, y_pred, labels=["a", "b", "c"], average="macro"))
    assert m["per_class"]["b"] == {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    assert m["predicted_labels"] == ["a", "b", "c", "unknown"]
    assert m["confusion_matrix"] == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 1]]


def test_macro_f1_ignores_classes_absent_from_the_truth():
    m = classification_metrics(["a", "b"], ["a", "b"], ["a", "b", "never_seen"])
    assert m["macro_f1"] == 1.0 and m["per_class"]["never_seen"]["support"] == 0


def test_outputs_are_written(tmp_path):
    m = classification_metrics(["a", "b", "b"], ["a", "b", "a"], ["a", "b"])
    write_json(tmp_path / "r.json", {"val": m, "n": np.int64(3)})
    assert json.loads((tmp_path / "r.json").read_text())["val"]["confusion_matrix"] == [[1, 0], [1, 1]]
    plot_confusion_matrix(m["confusion_matrix"], m["labels"], tmp_path / "cm.png")
    history = [
        {"stage": "head", "epoch": 1, "loss": 1.0, "val_loss": 0.9, "val_macro_f1": 0.5},
        {"stage": "fine_tune", "epoch": 1, "loss": 0.5, "val_loss": 0.4, "accuracy": 0.8},
    ]
    plot_history(history, tmp_path / "curves.png")
    for name in ("cm.png", "curves.png"):
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and im.size[0] > 200
    write_history_csv(history, tmp_path / "h.csv")
    with open(tmp_path / "h.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:2] == ["stage", "epoch"] and rows[1]["accuracy"] == "0.8" and rows[0]["accuracy"] == ""


def test_open_set_metrics_threshold_from_validation_and_auroc():
    from classify.report import open_set_metrics

    val_known = np.linspace(0.5, 1.0, 101)  # 5 of these (under 5%) may be rejected: 0.500 ... 0.520
    m = open_set_metrics(val_known, known=np.array([0.9, 0.8, 0.6]), unknown=np.array([0.2, 0.55, 0.7]))
    assert m["threshold"] == pytest.approx(0.5225)  # midway between the 5th and 6th lowest
    assert m["fpr_at_95_tpr"] == pytest.approx(2 / 3) and m["known_kept"] == 1.0
    assert m["auroc"] == pytest.approx(8 / 9)  # 8 of the 9 known/unknown pairs ranked right
    with pytest.raises(ValueError):
        open_set_metrics(val_known, np.array([0.9]), np.array([]))
