"""python -m pipelines.train_fine end to end on small real-pixel crops with the offline backbone."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from classify_testdata import heldout_dir, train_dir, workdir, write_crops
from PIL import Image

from classify import FineClassifier
from pipelines import train_fine


def test_cli_writes_the_run_folder_and_prints_macro_f1_last(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "--data",
        str(train_dir()),
        "--output",
        str(out),
        "--backbone",
        "mobilenet_v2_torchvision",
        "--test-data",
        str(heldout_dir()),
        "--epochs",
        "8",
        "--augment-views",
        "1",
        "--min-per-class",
        "2",
        "--seed",
        "0",
        "--cache-dir",
        str(workdir() / "cache"),
        "--class-weight",
        "balanced",
        "--no-progress",
    ]
    assert train_fine.main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    report = json.loads((out / "report.json").read_text())
    assert float(last) == pytest.approx(report["test"]["macro_f1"], abs=5e-5)
    assert report["test"]["macro_f1"] >= 0.75 and report["val"]["n"] > 0  # chance is 0.25
    for split in ("val", "test"):
        m = report[split]
        assert {"accuracy", "macro_f1", "weighted_f1", "per_class", "confusion_matrix"} <= set(m)
        assert np.sum(m["confusion_matrix"]) == m["n"]
        assert set(m["per_class"]) == {"astronaut", "cat", "coffee", "rocket"}
    for name in ("confusion_matrix.png", "confusion_matrix_val.png", "curves.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG"
    with open(out / "history.csv", newline="") as f:
        history = list(csv.DictReader(f))
    assert 1 <= len(history) <= 8 and {"loss", "val_loss", "val_macro_f1", "learning_rate"} <= set(history[0])
    config = json.loads((out / "config.json").read_text())
    assert config["args"]["backbone"] == "mobilenet_v2_torchvision"
    assert config["classifier"]["class_weight"] == "balanced"
    assert config["split"]["train"] + config["split"]["val"] == 48
    assert json.loads((out / "model.augmentation.json").read_text())["transform"]["__class_fullname__"] == "Compose"
    clf = FineClassifier.load(out)
    assert clf.classes_.tolist() == ["astronaut", "cat", "coffee", "rocket"]
    with open(out / "predictions.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    assert [r["predicted"] for r in rows] == clf.predict([r["path"] for r in rows]).tolist()


def test_cli_reports_too_few_images_clearly(tmp_path, capsys):
    data = write_crops(tmp_path / "crops", photos_per_class=1, crops_per_photo=2, seed=0)
    assert train_fine.main(["--data", str(data), "--output", str(tmp_path / "run"), "--min-per-class", "3"]) == 2
    assert re.search(r"too few images .*'cat': 2", capsys.readouterr().err)
    assert not (tmp_path / "run").exists()  # nothing written before the data is known to be usable
