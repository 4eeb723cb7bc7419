"""Recalibration on deployment crops (`classify.recalibration`, ``python -m pipelines.calibrate``): the temperature and
the open-set threshold move to the new domain, measured on crops the fit never saw; the source run is never written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from classify_testdata import UNSEEN_SOURCES, write_crops
from PIL import Image, ImageFilter
from pipelines.calibrate import main
from scipy.special import softmax

from classify.calibration import nll
from classify.model import FineClassifier


def _shifted(root, seed):
    """Crops of the training classes (and two unseen ones) as a darker, blurred, noisy camera would take them."""
    write_crops(root, photos_per_class=6, crops_per_photo=2, seed=seed, manifest=False)
    write_crops(root, photos_per_class=3, crops_per_photo=2, seed=seed, manifest=False, sources=UNSEEN_SOURCES)
    rng = np.random.default_rng(seed)
    for path in sorted(root.rglob("*.jpg")):
        image = Image.open(path).filter(ImageFilter.GaussianBlur(2))
        pixels = np.asarray(image, np.float32) * 0.45 + 20 + rng.normal(0, 12, (*image.size[::-1], 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=80)
    return root


@pytest.fixture(scope="module")
def domain(tmp_path_factory):
    """``(calibration crops, evaluation crops)``: two sets of other photos from the same shifted domain."""
    base = tmp_path_factory.mktemp("domain")
    return _shifted(base / "calibrate", seed=71), _shifted(base / "evaluate", seed=72)


def _known(folder, classes):
    paths = [p for c in classes for p in sorted((folder / c).glob("*.jpg"))]
    return paths, np.searchsorted(classes, [p.parent.name for p in paths])


def test_recalibration_fits_the_new_domain_and_leaves_the_run_alone(fitted, domain, tmp_path, capsys):
    clf = fitted[0]
    run = tmp_path / "run"
    clf.save(run)
    source_bytes = (run / "model.keras").read_bytes()
    calibrate, evaluate = domain
    assert main(["--model", str(run), "--data", str(calibrate), "--output", str(tmp_path / "new")]) == 0
    assert (run / "model.keras").read_bytes() == source_bytes  # the input run is never written
    report = json.loads((tmp_path / "new" / "recalibration.json").read_text())
    assert report["unseen_classes"] == sorted(UNSEEN_SOURCES) and report["n"] == 48 and report["n_unseen"] == 12
    assert (tmp_path / "new" / "reliability.png").stat().st_size > 0
    assert "known crops marked unknown" in capsys.readouterr().out

    old, new = FineClassifier.load(run), FineClassifier.load(tmp_path / "new")
    assert new.temperature_ == pytest.approx(report["recalibrated"]["temperature"])
    lo, hi = report["temperature_interval"]
    assert lo <= new.temperature_ <= hi
    assert report["previous"]["temperature"] == pytest.approx(old.temperature_)
    # in-sample: the threshold keeps 95% of the calibration crops, the fitted temperature lowers their NLL
    assert report["recalibrated"]["known_marked_unknown"] <= 0.05
    assert report["recalibrated"]["nll"] <= report["previous"]["nll"]
    # out of sample, on other photos of the same domain: a better NLL than the model as trained
    classes = np.asarray([str(c) for c in old.classes_])
    paths, y = _known(evaluate, classes)
    logits = old.logits_and_features(paths)[0]
    assert nll(logits, y, new.temperature_) < nll(logits, y, old.temperature_)
    # the saved model gives the new temperature's probabilities
    np.testing.assert_allclose(new.predict_proba(paths[:4]), softmax(logits[:4] / new.temperature_, axis=1),
                               atol=1e-5)


def test_calibrate_refuses_what_it_cannot_do(fitted, domain, tmp_path, capsys):
    run = tmp_path / "run"
    fitted[0].save(run)
    calibrate = domain[0]
    assert main(["--model", str(run), "--data", str(calibrate), "--output", str(run / "inside")]) == 2
    assert "must not be or contain each other" in capsys.readouterr().err and not (run / "inside").exists()
    # a run folder holding the inputs would be replaced as a whole: refused even with --overwrite
    (tmp_path / "report.json").write_text("{}")  # tmp_path looks like a run folder
    assert main(["--model", str(run), "--data", str(calibrate), "--output", str(tmp_path), "--overwrite"]) == 2
    assert "--model" in capsys.readouterr().err and (run / "model.keras").is_file()
    only_unseen = tmp_path / "unseen"
    write_crops(only_unseen, photos_per_class=1, crops_per_photo=2, seed=5, manifest=False, sources=UNSEEN_SOURCES)
    assert main(["--model", str(run), "--data", str(only_unseen), "--output", str(tmp_path / "a")]) == 2
    assert "needs labeled crops of the model's classes" in capsys.readouterr().err
    assert main(["--model", str(run), "--data", str(calibrate), "--output", str(tmp_path / "b")]) == 0
    assert main(["--model", str(run), "--data", str(calibrate), "--output", str(tmp_path / "b")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # --open-set-keep 0, as in training: no threshold, and the choice is saved for the next recalibration
    assert main(["--model", str(tmp_path / "b"), "--data", str(calibrate), "--output", str(tmp_path / "c"),
                 "--open-set-keep", "0"]) == 0
    again = FineClassifier.load(tmp_path / "c")
    assert again.open_set_threshold_ is None and again.open_set_keep is None
    assert FineClassifier.load(tmp_path / "b").open_set_threshold_ is not None
