"""DetectThenClassify and the label CLI on real models and synthetic watch photos with known boxes and brands."""

from __future__ import annotations

import copy
import json
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
from detectcrop.images import read_image
from pipelines.evaluate import evaluate_predictions, match_boxes

from classify import FineClassifier
from detectcrop import Detections, zoo
from detectcrop.crops import CropPolicy
from detectcrop.io import CsvManifest
from detectcrop.tiling import TileConfig
from pipelines import label
from pipelines.compose import DetectThenClassify
from pipelines.labeling import COLUMNS
from pipelines.synthetic import generate, ground_truth_crops, load_ground_truth


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """3 brands x 10 photos + 5 scenes, and a broken file among the scenes."""
    root = tmp_path_factory.mktemp("watches")
    generate(root, brands=3, photos_per_brand=10, scenes=5, seed=7)
    (root / "scenes" / "zz broken é.jpg").write_bytes((root / "scenes" / "scene_0000.jpg").read_bytes()[:1500])
    return root


@pytest.fixture(scope="module")
def model_dir(bench, tmp_path_factory) -> Path:
    """A FineClassifier trained on the photos' ground-truth crops with the offline backbone, saved."""
    crops = ground_truth_crops(load_ground_truth(bench / "annotations.json", split="photos"))
    clf = FineClassifier(zoo.OFFLINE_BACKBONE, epochs=40, augment_views=1, validation_fraction=0,
                          fine_tune_blocks=0, seed=0)
    out = tmp_path_factory.mktemp("run")
    clf.fit([c.image for c in crops], [c.label for c in crops]).save(out / "model.keras")
    return out


@pytest.fixture(scope="module")
def pipe(model_dir) -> DetectThenClassify:
    return DetectThenClassify(zoo.OFFLINE_DETECTOR, str(model_dir), category="clock", tile=TileConfig(), top_k=2)


def _scene_truth(bench: Path, name: str) -> tuple[np.ndarray, list[str]]:
    (truth,) = [r for r in load_ground_truth(bench / "annotations.json", split="scenes") if r.path.name == name]
    return truth.detections.xyxy, list(truth.detections.data["label"])


def test_labels_watches_in_a_scene(bench, pipe):
    scenes = sorted(p.name for p in (bench / "scenes").glob("scene_*.jpg"))
    n_found = n_correct = n_truth = 0
    for name in scenes:
        truth, brands = _scene_truth(bench, name)
        result = pipe(bench / "scenes" / name)
        assert result.status in ("ok", "no_detection") and (result.width, result.height) == (640, 480)
        for o in result.objects:
            assert o.label in pipe.classifier_.classes_ and 0 <= o.probability <= 1
            assert len(o.top_k) == 2 and o.top_k[0] == (o.label, o.probability)
            x1, y1, x2, y2 = o.crop_box
            assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480
        pred = np.array([o.xyxy for o in result.objects]).reshape(-1, 4)
        matched = match_boxes(truth, pred, np.array([o.score for o in result.objects]))
        n_truth += len(truth)
        for brand, m in zip(brands, matched, strict=True):
            if m >= 0:
                n_found += 1
                n_correct += result.objects[m].label == brand
    assert n_truth >= 8
    assert n_found / n_truth >= 0.6  # most watches found (tiled); the benchmark in BENCHMARKS.md measures it
    assert n_correct / n_found >= 0.6  # well above chance (1/3) for 3 brands


def test_array_and_path_give_the_same_result(bench, pipe):
    path = bench / "scenes" / "scene_0001.jpg"
    a, b = pipe(path), pipe(read_image(path))
    assert [(o.xyxy, o.label) for o in a.objects] == [(o.xyxy, o.label) for o in b.objects]
    assert a.source == str(path) and b.source == "<array>"


def test_run_streams_every_file_in_order(bench, pipe):
    results = list(pipe.run(bench / "scenes"))
    names = [Path(r.source).name for r in results]
    assert names == sorted(p.name for p in (bench / "scenes").iterdir())
    broken = results[-1]
    assert broken.status == "error" and "zz broken" in broken.source and broken.error
    assert all(r.status in ("ok", "no_detection") for r in results[:-1])


class _BoxDetector:
    """A stand-in stage 1: fixed boxes, as any object with detect() -> Detections may be."""

    def detect(self, image, *, min_score=None):
        return Detections([[0, 0, 40, 40], [40, 0, 80, 40]], [0.9, 0.8], [85, 85])


class _MeanColourClassifier:
    """A stand-in stage 2: 'red' when the red channel dominates the crop, else 'blue'. Counts its calls."""

    classes_ = np.array(["blue", "red"])

    def __init__(self):
        self.batches = []

    def predict_proba(self, crops):
        self.batches.append(len(crops))
        red = np.array([c[..., 0].mean() > c[..., 2].mean() for c in crops], dtype=float)
        return np.stack([1 - red, red], axis=1) * 0.9 + 0.05


def _two_colour_image():
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, :40, 0] = 255
    image[:, 40:, 2] = 255
    return image


def test_steps_are_replaceable_and_crops_batch_across_images():
    clf = _MeanColourClassifier()
    pipe = DetectThenClassify(_BoxDetector(), clf, category="clock", crop_policy=CropPolicy(pad=0, min_size=1),
                              batch_size=5)
    results = list(pipe.label_images([(f"img{i}", _two_colour_image()) for i in range(4)]))
    assert [r.labels for r in results] == [["red", "blue"]] * 4
    assert clf.batches == [6, 2]  # crops of several images share a batch; the remainder is flushed at the end
    pipe.set_params(unknown_below=0.99)
    assert pipe(_two_colour_image()).labels == ["unknown", "unknown"]
    pipe.set_params(unknown_below=None)
    clf.unknown_below, clf.unknown_label = 0.99, "ambiguous"  # a classifier saved with its own threshold
    assert pipe(_two_colour_image()).labels == ["ambiguous", "ambiguous"]
    with pytest.raises(ValueError, match="clock"):
        DetectThenClassify(_BoxDetector(), clf, category="watch").detect(_two_colour_image())


class _ScoredClassifier(_MeanColourClassifier):
    """The stand-in with an open-set score (high for red crops) and a threshold saved with it."""

    open_set_threshold_ = 0.5

    def predict_scores(self, crops):
        proba = self.predict_proba(crops)
        return proba, proba[:, 1]


def test_unknown_when_either_rule_says_so():
    clf = _ScoredClassifier()
    pipe = DetectThenClassify(_BoxDetector(), clf, category="clock", crop_policy=CropPolicy(pad=0, min_size=1))
    result = pipe(_two_colour_image())
    assert result.labels == ["red", "unknown"]  # the blue crop scores 0.05, under the model's threshold
    assert [o.known_score for o in result.objects] == pytest.approx([0.95, 0.05])
    assert [o.probability for o in result.objects] == pytest.approx([0.95, 0.95])  # confident, yet unknown
    pipe.set_params(open_set=False)
    assert pipe(_two_colour_image()).labels == ["red", "blue"]
    pipe.set_params(unknown_below=0.99)  # the probability floor alone
    assert pipe(_two_colour_image()).labels == ["unknown", "unknown"]
    pipe.set_params(open_set=True, unknown_below=0.9)  # both rules: the floor passes, the score does not
    assert pipe(_two_colour_image()).labels == ["red", "unknown"]


class _WholeImage:
    def detect(self, image, *, min_score=None):
        h, w = image.shape[:2]
        return Detections([[0, 0, w, h]], [0.9], [85])


def test_label_answers_what_the_model_rule_says(fitted):
    clf, _, test = fitted
    images = [read_image(p) for p in test.paths]
    proba, score = clf.predict_scores(images)
    threshold = float(np.median(score))  # a rule that splits these crops in two
    ruled = copy.copy(clf)
    ruled.open_set_threshold_ = threshold
    pipe = DetectThenClassify(_WholeImage(), ruled, category="clock", crop_policy=CropPolicy(pad=0, min_size=1))
    labels = [pipe(image).labels[0] for image in images]
    assert labels == ruled.predict(images).tolist()
    assert [lab == "unknown" for lab in labels] == (score < threshold).tolist() and "unknown" in labels
    baseline = [DetectThenClassify(_WholeImage(), ruled, category="clock", open_set=False,
                                   crop_policy=CropPolicy(pad=0, min_size=1))(image).labels[0] for image in images]
    assert baseline == clf.classes_[proba.argmax(1)].tolist()  # --open-set off: the top class, as before


def test_params_follow_scikit_learn(pipe):
    params = pipe.get_params(deep=False)
    assert params["detector"] == zoo.OFFLINE_DETECTOR and params["top_k"] == 2
    clone = DetectThenClassify(**params)
    clone.set_params(crop_policy__pad=0.3, tile=None, detector__nms_iou=0.4)
    assert clone.crop_policy.pad == 0.3 and clone.tile is None and clone.detector_.nms_iou == 0.4
    assert pipe.crop_policy.pad == 0.1  # the original is untouched
    assert "classifier__batch_size" not in clone.get_params()  # get_params never loads a model
    clone.load()
    deep = clone.get_params()
    assert deep["crop_policy__pad"] == 0.3 and deep["classifier__batch_size"] == 32
    with pytest.raises(ValueError, match="invalid parameter"):
        clone.set_params(nope=1)


def test_clone_keeps_what_set_params_changed_on_steps_given_by_path(pipe):
    from sklearn.base import clone

    original = DetectThenClassify(**pipe.get_params(deep=False))
    original.set_params(classifier__unknown_below=0.77, detector__nms_iou=0.33, top_k=1)  # loads both steps
    for twin in (clone(original), pickle.loads(pickle.dumps(original))):  # clone now keeps what pickling keeps
        assert twin.top_k == 1 and twin.classifier == original.classifier
        twin.load()
        assert twin.classifier_ is not original.classifier_  # an unfitted twin: its models load anew
        assert twin.classifier_.unknown_below == 0.77 and twin.detector_.nms_iou == 0.33
    fresh = clone(DetectThenClassify(**pipe.get_params(deep=False)))
    assert fresh.load().classifier_.unknown_below != 0.77  # nothing leaks from one pipeline into another


def test_pickles_as_config_and_rebuilds(bench, pipe):
    config = json.loads(json.dumps(pipe.to_config()))  # JSON-able
    again = pickle.loads(pickle.dumps(pipe))
    assert again.to_config() == config
    assert "_loaded" not in again.__dict__  # models load lazily on the other side
    path = bench / "scenes" / "scene_0002.jpg"
    assert [(o.xyxy, o.label) for o in again(path).objects] == [(o.xyxy, o.label) for o in pipe(path).objects]
    with pytest.raises(ValueError, match="preset name or path"):
        DetectThenClassify(_BoxDetector(), _MeanColourClassifier()).to_config()
    with pytest.raises(TypeError, match="cannot pickle"):
        pickle.dumps(DetectThenClassify(_BoxDetector(), _MeanColourClassifier()))


def test_a_copy_carries_the_classifier_settings_changed_on_it_and_detector_min_score_is_the_pipelines(bench, pipe):
    changed = pickle.loads(pickle.dumps(pipe)).load()
    changed.set_params(classifier__unknown_below=0.999999)  # on the loaded classifier, not in the saved model
    path = bench / "scenes" / "scene_0002.jpg"
    assert {o.label for o in changed(path).objects} == {"unknown"}
    for rebuilt in (pickle.loads(pickle.dumps(changed)), DetectThenClassify.from_config(changed.to_config())):
        assert [o.label for o in rebuilt(path).objects] == [o.label for o in changed(path).objects]
    with pytest.raises(ValueError, match=r"set_params\(min_score"):
        changed.set_params(detector__min_score=0.9)  # detect_objects passes the pipeline's own min_score


def test_arrays_are_read_as_their_files_would_be(bench, pipe, tmp_path):
    from PIL import Image

    rgb = np.asarray(Image.open(bench / "scenes" / "scene_0002.jpg"))
    reference = [(o.label, round(o.probability, 4)) for o in pipe(rgb).objects]
    assert reference
    for variant in (rgb / 255.0, rgb.astype(np.uint16) * 257, np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]),
                    Image.fromarray(rgb)):
        assert [(o.label, round(o.probability, 4)) for o in pipe(variant).objects] == reference
    with pytest.raises(ValueError, match="expected an"):
        pipe(rgb[..., :2])


def test_models_load_only_when_asked(pipe):
    fresh = DetectThenClassify(**pipe.get_params(deep=False))
    with pytest.raises(AttributeError, match=r"call load\(\) first"):
        fresh.detector_  # noqa: B018
    assert fresh.load() is fresh and fresh.detector_ is fresh.load().detector_  # loaded once


def _label_cli(bench, model_dir, out, *extra):
    return label.main(["--input", str(bench / "scenes"), "--model", str(model_dir), "--output", str(out),
                       "--detector", zoo.OFFLINE_DETECTOR, "--tile", "--no-progress", *extra])


def test_label_cli_accounts_for_every_file_and_resumes_identically(bench, model_dir, tmp_path, monkeypatch):
    full = tmp_path / "full"
    assert _label_cli(bench, model_dir, full, "--annotate", "--coco-gt", str(bench / "annotations.json")) == 0
    rows = CsvManifest(full / "predictions.csv", COLUMNS).rows()
    files = sorted(p.name for p in (bench / "scenes").iterdir())
    assert sorted({r["image"] for r in rows}) == files
    broken = [r for r in rows if r["image"] == "zz broken é.jpg"]
    assert len(broken) == 1 and broken[0]["status"] == "error" and broken[0]["error"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok and all(r["label"] in {"aurel", "brisk", "corvo"} for r in ok)
    assert all(len(r["top_k"].split(";")) == 3 for r in ok)
    assert len(list((full / "annotated").glob("*.jpg"))) == len(files) - 1
    coco = json.loads((full / "results.coco.json").read_text())
    assert len(coco["annotations"]) == len(ok) and len(coco["images"]) == len(files) - 1
    from pycocotools.coco import COCO  # the COCO dataset format (what FiftyOne's COCO importer reads)

    dataset = COCO(str(full / "results.coco.json"))
    first = dataset.loadAnns(dataset.getAnnIds())[0]
    assert dataset.loadCats(first["category_id"])[0]["name"] == ok[0]["label"]
    np.testing.assert_allclose(first["bbox"], [float(ok[0]["x1"]), float(ok[0]["y1"]),
                                               float(ok[0]["x2"]) - float(ok[0]["x1"]),
                                               float(ok[0]["y2"]) - float(ok[0]["y1"])], atol=0.02)
    scores = evaluate_predictions(bench / "annotations.json", rows, image_prefix="scenes/")
    assert scores["n_images"] == len(files) and scores["recall"] > 0.5
    keyed = json.loads((full / "results.coco-gt.json").read_text())  # keyed to the ground truth's ids
    scene_ids = {im["id"] for im in json.loads((bench / "annotations.json").read_text())["images"]
                 if im["file_name"].startswith("scenes/")}
    assert len(keyed) == len(ok) and {r["image_id"] for r in keyed} <= scene_ids
    assert "<figure>" in (full / "report.html").read_text()
    config = json.loads((full / "label_config.json").read_text())  # the precisions served, not the requested auto
    assert (config["precision"], config["detector_precision"]) == ("float", "float")

    # Kill the run after two images, then resume: the same bytes as the uninterrupted run.
    part = tmp_path / "part"
    real_append = CsvManifest.append
    calls = {"n": 0}

    def dying_append(self, rows_):
        if self.path.name == "predictions.csv":
            calls["n"] += 1
            if calls["n"] > 2:
                raise KeyboardInterrupt
        return real_append(self, rows_)

    monkeypatch.setattr(CsvManifest, "append", dying_append)
    with pytest.raises(KeyboardInterrupt):
        _label_cli(bench, model_dir, part, "--annotate")
    monkeypatch.setattr(CsvManifest, "append", real_append)
    assert len({r["image"] for r in CsvManifest(part / "predictions.csv", COLUMNS).rows()}) == 2
    assert _label_cli(bench, model_dir, part, "--annotate") == 2  # refuses to mix runs without --resume
    assert _label_cli(bench, model_dir, part, "--annotate", "--resume") == 0
    for name in ("predictions.csv", "results.coco.json", "summary.json"):
        assert (part / name).read_bytes() == (full / name).read_bytes(), name
    assert _label_cli(bench, model_dir, part, "--resume", "--top-k", "1") == 2  # other settings: refused
    # asking for what auto served (or for float, the default of earlier versions) is the same run
    assert _label_cli(bench, model_dir, part, "--annotate", "--resume", "--precision", "float",
                      "--detector-precision", "float") == 0


def test_label_cli_errors_before_loading_models(bench, tmp_path, capsys):
    assert label.main(["--input", str(bench / "scenes"), "--model", str(tmp_path / "none"), "--output",
                       str(tmp_path / "o")]) == 2
    assert "--model" in capsys.readouterr().err
    assert label.main(["--input", str(tmp_path / "missing"), "--model", str(tmp_path), "--output",
                       str(tmp_path / "o")]) == 2
    assert label.main(["--input", str(bench / "scenes"), "--model", str(tmp_path), "--output",
                       str(tmp_path / "no" / "such" / "dir")]) == 2
    (tmp_path / "model.keras").write_bytes(b"")
    assert label.main(["--input", str(bench / "scenes"), "--model", str(tmp_path), "--output",
                       str(bench / "scenes" / "labels")]) == 2  # inside the input: a rerun would label its own output
    assert "inside the input" in capsys.readouterr().err
    assert not (bench / "scenes" / "labels").exists()


def test_match_boxes_is_one_to_one():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]])
    pred = np.array([[0, 0, 10, 11], [1, 0, 10, 10], [50, 50, 60, 60]])
    assert match_boxes(gt, pred, np.array([0.5, 0.9, 0.99])) == [1, -1]
    assert match_boxes(gt, np.zeros((0, 4)), np.zeros(0)) == [-1, -1]


def _summary(result) -> tuple:
    return (result.source, result.status, tuple((o.label, round(o.probability, 4), tuple(np.round(o.xyxy, 1)))
                                                for o in result.objects))


def test_a_pipeline_used_from_two_threads_gives_each_the_single_thread_answers(pipe, bench):
    from concurrent.futures import ThreadPoolExecutor

    scenes = sorted((bench / "scenes").glob("scene_*.jpg"))
    alone = [_summary(pipe(p)) for p in scenes]
    with ThreadPoolExecutor(2) as pool:  # both threads share one loaded pipeline, interleaving their calls
        together = list(pool.map(lambda p: _summary(pipe(p)), scenes * 2))
    assert together == alone * 2


def test_an_abandoned_run_generator_leaves_no_threads_and_the_next_run_is_whole(pipe, bench):
    import gc
    import threading

    before = threading.active_count()
    stream = pipe.run(bench / "scenes", workers=2, prefetch=2)
    first = next(stream)
    stream.close()  # abandoned after one image: the decoding threads must stop
    del stream
    gc.collect()
    deadline = time.monotonic() + 30
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before
    again = list(pipe.run(bench / "scenes"))
    assert _summary(again[0]) == _summary(first) and len(again) == len(list((bench / "scenes").iterdir()))


def test_run_on_a_folder_lists_its_entries_as_the_folder_commands_do(bench, pipe, tmp_path):
    import os

    from detectcrop.io.inputs import scan_inputs

    folder = tmp_path / "photos"
    (folder / ".hidden_folder").mkdir(parents=True)
    scene = (bench / "scenes" / "scene_0002.jpg").read_bytes()
    for name in ("a.jpg", ".hidden.jpg", ".hidden_folder/b.jpg"):
        (folder / name).write_bytes(scene)
    (folder / "notes.txt").write_text("not an image")
    (folder / "linked").symlink_to(bench / "scenes", target_is_directory=True)
    os.mkfifo(folder / "pipe")
    results = list(pipe.run(folder))
    assert [r.source for r in results] == [os.fspath(e.path) for e in scan_inputs(folder)]
    by_name = {Path(r.source).name: r for r in results}
    assert by_name[".hidden.jpg"].status == by_name["a.jpg"].status == "ok"  # a hidden file is an input
    assert [(o.xyxy, o.label) for o in by_name[".hidden.jpg"].objects] == [
        (o.xyxy, o.label) for o in by_name["a.jpg"].objects]
    assert {by_name[n].status for n in (".hidden_folder", "linked", "notes.txt", "pipe")} == {"error"}


def test_a_result_round_trips_through_its_rows_and_gives_its_coco_entries(bench, pipe):
    from pipelines.results import COLUMNS, ImageResult

    result = pipe(bench / "scenes" / "scene_0002.jpg")
    rows = result.to_rows("scene_0002.jpg")
    assert len(rows) == len(result.objects) > 0 and all(len(r) == len(COLUMNS) for r in rows)
    (back,) = ImageResult.from_rows([dict(zip(COLUMNS, map(str, r), strict=True)) for r in rows])
    assert back.to_rows() == rows  # the same cells: predictions.csv reads back to what was written
    assert back.labels == result.labels and back.status == "ok" and (back.width, back.height) == (
        result.width, result.height)
    entry, annotations = back.to_coco(7, {label: i for i, label in enumerate(sorted(set(back.labels)), 1)}, 3)
    assert entry == {"id": 7, "file_name": "scene_0002.jpg", "width": result.width, "height": result.height}
    assert [a["id"] for a in annotations] == list(range(3, 3 + len(rows)))
    assert all(a["image_id"] == 7 and 0 <= a["score"] <= 1 for a in annotations)
    assert result.detections.data["crop_box"].shape == (len(rows), 4)
    error = ImageResult("x.jpg", "error", error="ImageReadError: broken")
    (again,) = ImageResult.from_rows([dict(zip(COLUMNS, map(str, r), strict=True)) for r in error.to_rows()])
    assert (again.source, again.status, again.error, len(again.detections)) == ("x.jpg", "error", error.error, 0)
    assert again.to_rows() == error.to_rows()
