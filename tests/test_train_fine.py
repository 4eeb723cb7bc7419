"""python -m pipelines.train_fine end to end on small real-pixel crops with the offline backbone."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil

import numpy as np
import pytest
from classify.litert import exported_path, resolve_precision
from classify_testdata import write_crops
from PIL import Image

from classify import FineClassifier
from classify.calibration import keep_threshold
from classify.openset import DEFAULT_SCORE, GRAPH_SCORES
from pipelines import train_fine, training


def test_cli_writes_the_run_folder_and_prints_macro_f1_last(tmp_path, capsys, train_dir, heldout_dir,
                                                           classify_workdir):
    out = tmp_path / "run"
    out.mkdir()  # an earlier run, exported to TFLite: none of its files may survive next to the new model
    for name in ("model.tflite", "model.tflite.json", "report.json", "notes.txt"):
        (out / name).write_text("old run")
    _old_run(out)
    test_dir = shutil.copytree(heldout_dir, tmp_path / "test")
    (test_dir / "cat" / "broken.jpg").write_bytes((test_dir / "cat" / "cat_000_0.jpg").read_bytes()[:300])
    open_dir = tmp_path / "open" / "noise"  # crops of a class the model never saw
    open_dir.mkdir(parents=True)
    for i in range(5):
        noise = np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(noise).save(open_dir / f"noise_{i}.jpg")
    argv = [
        "--data",
        str(train_dir),
        "--output",
        str(out),
        "--overwrite",
        "--backbone",
        "mobilenet_v2_torchvision",
        "--test-data",
        str(test_dir),
        "--epochs",
        "8",
        "--augment-views",
        "1",
        "--min-per-class",
        "2",
        "--seed",
        "0",
        "--cache-dir",
        str(classify_workdir / "cache"),
        "--class-weight",
        "balanced",
        "--fine-tune-blocks",
        "0",
        "--no-progress",
        "--open-set-data",
        str(tmp_path / "open"),
    ]
    assert train_fine.main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    report = json.loads((out / "report.json").read_text())
    assert float(last) == pytest.approx(report["test"]["macro_f1"], abs=5e-5)
    assert report["test"]["macro_f1"] >= 0.75 and report["val"]["n"] > 0  # chance is 0.25
    # no --input-size: the offline backbone trains at its measured size, not its ImageNet 224
    assert json.loads((out / "config.json").read_text())["model"]["input_size"] == [448, 448]
    for split in ("val", "test"):
        m = report[split]
        assert {"accuracy", "macro_f1", "weighted_f1", "per_class", "confusion_matrix"} <= set(m)
        assert np.sum(m["confusion_matrix"]) == m["n"]
        assert set(m["per_class"]) == {"astronaut", "cat", "coffee", "rocket"}
        assert 0 <= m["linear_probe_macro_f1"] <= 1  # the baseline, on the same split
        assert m["gain_over_linear_probe"] == pytest.approx(m["macro_f1"] - m["linear_probe_macro_f1"])
    assert report["warnings"] == []  # neither folder comes from a synthetic benchmark
    with open(out / "predictions.csv", newline="") as f:
        val_top = [float(r["probability"]) for r in csv.DictReader(f) if r["split"] == "val"]
    open_set = report["open_set"]
    assert open_set["score"] == DEFAULT_SCORE and open_set["n_unknown"] == 5 and 0 <= open_set["auroc"] <= 1
    assert set(open_set["scores"]) == {"max_softmax", "max_logit", "energy", "class_mean_cosine", "knn_cosine"}
    assert {"auroc", "fpr_at_95_tpr"} <= set(open_set["scores"]["energy"])
    # chosen on validation: the calibrated top probability of the validation crops in predictions.csv
    assert open_set["scores"]["max_softmax"]["threshold"] == pytest.approx(keep_threshold(val_top, 0.95), rel=1e-5)
    calibration = report["calibration"]
    assert calibration["split"] == "test" and calibration["bins"] == 15 and calibration["temperature"] > 0
    assert 0 <= calibration["ece_before"] <= 1 and 0 <= calibration["ece_after"] <= 1
    interval = calibration["temperature_interval"]  # the bootstrap interval of the validation fit
    if interval is None:  # every validation crop right: nothing bounds T, which stays 1
        assert calibration["temperature"] == 1.0 and report["val"]["accuracy"] == 1.0
    else:
        assert interval[0] <= calibration["temperature"] <= interval[1]
    for name in ("confusion_matrix.png", "confusion_matrix_val.png", "curves.png", "reliability.png"):
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
    assert clf.temperature_ == pytest.approx(calibration["temperature"])  # saved with the model
    rule = report["unknown_rule"]
    assert rule["open_set_threshold"] == pytest.approx(open_set["threshold"]) == pytest.approx(clf.open_set_threshold_)
    with open(out / "predictions.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    # the val/test metrics and predictions.csv are closed-set (comparable with the linear probe)
    assert [r["predicted"] for r in rows] == clf.predict([r["path"] for r in rows], open_set=False).tolist()
    # int8 LiteRT works on a fresh run: --precision auto converts with the calibration crops saved beside the model
    with np.load(out / "representative.npz") as npz:
        assert npz["calibration"].shape[1:] == (*clf.input_size_, 3) and len(npz["heldout"]) == report["val"]["n"]
    assert resolve_precision(out, "auto") in ("float", "int8")
    int8 = exported_path(out, "int8")
    int8_meta = json.loads(int8.with_name(int8.name + ".json").read_text())
    assert int8_meta["precision"] == "int8" and int8_meta["n"] == report["val"]["n"]
    # the old run was replaced as a whole, and nothing is left beside it
    assert not (out / "model.tflite").exists() and not (out / "notes.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["open", "run", "test"]
    assert train_fine.OPEN_SET_SCORES == GRAPH_SCORES  # the CLI's choices (no TensorFlow import for --help)
    assert train_fine.get_args_parser().parse_args(["--data", "d", "--output", "o"]).open_set_score == DEFAULT_SCORE
    assert report["skipped_files_count"] == 1 and report["skipped_files"][0]["path"].endswith("broken.jpg")
    assert config["model"]["path"] == str((out / "model.keras").resolve())
    page = (out / "report.html").read_text()  # the review page (checked in a browser by test_html_reports)
    assert f"{report['test']['macro_f1']:.3f}" in page and "Worst mistakes (test" in page
    assert "run: 4 classes, backbone mobilenet_v2_torchvision" in page and page.count("<img") >= 3  # the three plots
    assert "Calibration" in page and "Unknown objects" in page and "class_mean_cosine" in page


def test_cli_reports_too_few_images_clearly(tmp_path, capsys):
    data = write_crops(tmp_path / "crops", photos_per_class=1, crops_per_photo=2, seed=0)
    assert train_fine.main(["--data", str(data), "--output", str(tmp_path / "run"), "--min-per-class", "3"]) == 2
    assert re.search(r"too few images .*'cat': 2", capsys.readouterr().err)
    assert not (tmp_path / "run").exists()  # nothing written before the data is known to be usable
    assert list(tmp_path.iterdir()) == [tmp_path / "crops"]


@pytest.mark.parametrize("size", ["16", "224.5", "big"])
def test_cli_refuses_an_unusable_input_size(tmp_path, capsys, size):
    with pytest.raises(SystemExit) as exc:
        train_fine.main(["--data", str(tmp_path), "--output", str(tmp_path / "run"), "--input-size", size])
    assert exc.value.code == 2 and "--input-size: expected a whole number of pixels >= 32" in capsys.readouterr().err


def test_cli_names_classes_that_cannot_be_split(tmp_path, capsys):
    data = write_crops(tmp_path / "crops", photos_per_class=1, crops_per_photo=3, seed=0)
    assert train_fine.main(["--data", str(data), "--output", str(tmp_path / "run"), "--min-per-class", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert "'astronaut', 'cat', 'coffee', 'rocket'" in err and "int64" not in err


def test_cli_refuses_to_write_over_a_run_without_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    _old_run(out)
    assert train_fine.main(["--data", str(tmp_path / "missing"), "--output", str(out)]) == 2
    assert re.search(r"already holds a run; pass --overwrite", capsys.readouterr().err)
    assert (out / "model.keras").read_text() == "old run"
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_text("not a run")
    assert train_fine.main(["--data", str(tmp_path / "missing"), "--output", str(other), "--overwrite"]) == 2
    assert "not a run folder" in capsys.readouterr().err and (other / "holiday.jpg").exists()
    (other / "config.json").write_text('{"my": "settings"}')  # a file named like a run's is not a run
    (other / "model.keras").write_text("someone's model")
    assert train_fine.main(["--data", str(tmp_path / "missing"), "--output", str(other), "--overwrite"]) == 2
    assert "not a run folder" in capsys.readouterr().err and (other / "holiday.jpg").exists()


def _old_run(out):
    """A run folder as train_fine leaves it (its model.keras a stand-in)."""
    out.mkdir(exist_ok=True)
    (out / "model.keras").write_text("old run")
    (out / "config.json").write_text(json.dumps({"command": "python -m pipelines.train_fine", "classifier": {},
                                                 "split": {}}))


def test_a_run_stopped_while_replacing_the_old_one_gives_the_old_one_back(tmp_path, caplog):
    from pipelines.run_folder import check_output

    out = tmp_path / "run"
    _old_run(out)
    aside = tmp_path / ".run.old-x1"  # killed between the two renames of the swap: no run folder
    aside.mkdir()
    out.rename(aside / "run")
    (tmp_path / ".run.new-x2").mkdir()
    check_output(out, overwrite=False)  # without the lock: nothing is moved (a running swap may be under way)
    assert not out.exists() and aside.exists()
    with pytest.raises(ValueError, match="already holds a run"):
        check_output(out, overwrite=False, locked=True)
    assert (out / "model.keras").read_text() == "old run" and not aside.exists() and "restored" in caplog.text


def test_cli_checks_numbers_and_the_cache_folder_before_any_work(tmp_path, capsys):
    data = tmp_path / "crops"
    data.mkdir()
    for flag, value in [("--epochs", "0"), ("--batch-size", "-1"), ("--augment-views", "-1"),
                        ("--unknown-below", "2"), ("--dense-units", "-1"), ("--min-per-class", "-1")]:
        with pytest.raises(SystemExit) as exc:
            train_fine.main(["--data", str(data), "--output", str(tmp_path / "run"), flag, value])
        assert exc.value.code == 2 and f"argument {flag}: expected" in capsys.readouterr().err
    for cache in (data / "cache", tmp_path / "run" / "cache"):
        assert train_fine.main(["--data", str(data), "--output", str(tmp_path / "run"), "--cache-dir",
                                str(cache)]) == 2
        assert "--cache-dir" in capsys.readouterr().err and not cache.exists()


def test_a_failed_run_leaves_the_old_run_and_no_partial_folder(tmp_path, capsys, monkeypatch, caplog):
    data = write_crops(tmp_path / "crops", photos_per_class=3, crops_per_photo=1, seed=0)
    out = tmp_path / "run"
    _old_run(out)

    def broken_fit(self, *args, **kwargs):
        raise ValueError("backbone xyz cannot be fine-tuned; use fine_tune_blocks=0")

    monkeypatch.setattr(FineClassifier, "fit", broken_fit)
    (tmp_path / ".run.new-killed").mkdir()  # left by a run killed before its swap: named, never deleted
    caplog.set_level("WARNING", logger="pipelines.train_fine")
    argv = ["--data", str(data), "--output", str(out), "--overwrite", "--min-per-class", "2", "--val-fraction", "0.5"]
    assert train_fine.main(argv) == 2
    assert capsys.readouterr().err.strip() == "error: backbone xyz cannot be fine-tuned; use fine_tune_blocks=0"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.new-killed", "crops", "run"]
    assert ".run.new-killed" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.keras"]
    assert (out / "model.keras").read_text() == "old run"


def test_predictions_csv_escapes_text_cells_only():
    text = training.predictions_csv([("val", "-a.jpg", "=cmd", "@x", 0.25)])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[1] == ["val", "'-a.jpg", "'=cmd", "'@x", "0.250000"]


def test_catalogue_warning_when_test_brands_are_other_designs(tmp_path):
    from pipelines.synthetic import generate

    crops = {}
    for name, seed, brand_seed in (("train", 0, 0), ("same", 1, 0), ("other", 0, 1)):
        generate(tmp_path / name, brands=2, photos_per_brand=1, seed=seed, brand_seed=brand_seed, size=(96, 72))
        crops[name] = tmp_path / f"crops_{name}"
        crops[name].mkdir()
        (crops[name] / "build_crops.json").write_text(json.dumps({"input": str(tmp_path / name / "photos")}))
    assert training.catalogue_warnings(crops["train"], crops["same"]) == []
    assert training.catalogue_warnings(crops["train"], None) == []
    assert training.catalogue_warnings(crops["train"], tmp_path / "nowhere") == []  # no catalogue: no claim
    (warning,) = training.catalogue_warnings(crops["train"], crops["other"])
    assert "differs" in warning and "aurel" in warning
