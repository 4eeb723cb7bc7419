"""`detectcrop evaluate`: COCO metrics equal pycocotools run directly on the results file; image matching rules."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from labeling_testdata import CLASSES, ground_truth, predictions, write_label_output
from pipelines.evaluate import COCO_STATS, evaluate_folder

from pipelines import console
from pipelines.coco_results import match_images, results_for_ground_truth
from pipelines.labeling import COLUMNS
from pipelines.predictions import read_predictions


def pycocotools_stats(gt_path: Path, results_path: Path, image_ids: list[int], cat_ids: list[int] | None = None):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(str(results_path)), "bbox")
        ev.params.imgIds = image_ids
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_cli_metrics_equal_pycocotools_on_the_results_file(tmp_path, capsys):
    gt = ground_truth()
    out, gt_path = write_label_output(tmp_path, gt, predictions(gt))
    assert console.main(["evaluate", "--predictions", str(out), "--ground-truth", str(gt_path),
                         "--image-prefix", "scenes/"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "evaluation.json").read_text())
    assert f"AP={report['coco']['AP']:.3f}" in printed and "unknown rate" in printed

    scenes = [im["id"] for im in gt["images"] if im["file_name"].startswith("scenes/")]
    stats = pycocotools_stats(gt_path, out / "results.coco-gt.json", scenes)  # no glue: the file loads as is
    for name, value in zip(COCO_STATS, stats, strict=True):
        assert report["coco"][name] == (None if value < 0 else pytest.approx(value, abs=1e-6)), name
    assert 0.1 < report["coco"]["AP50"] < 1  # noisy labels: neither nothing nor perfect
    for cat in gt["categories"]:  # per-class AP = COCOeval restricted to that category
        alone = pycocotools_stats(gt_path, out / "results.coco-gt.json", scenes, [cat["id"]])
        assert report["per_class"][cat["name"]]["AP"] == pytest.approx(alone[0], abs=1e-6)
    assert report["matching"]["images_evaluated"] == 6
    assert report["matching"]["images_without_ground_truth"] == ["broken.jpg", "extra.jpg"]
    objects = [r for r in read_predictions(out) if r["status"] == "ok"]
    assert report["unknown_rate"] == pytest.approx(sum(r["label"] == "unknown" for r in objects) / len(objects))


def test_perfect_predictions_score_one_and_noise_scores_less(tmp_path):
    gt = ground_truth()
    rows = []
    for im in gt["images"][:6]:
        for k, a in enumerate(x for x in gt["annotations"] if x["image_id"] == im["id"]):
            x, y, w, h = a["bbox"]
            rows.append([im["file_name"][7:], "ok", 640, 480, k, x, y, x + w, y + h, "0.9", "clock",
                         CLASSES[a["category_id"] - 1], "0.9", "", ""])
    (tmp_path / "a").mkdir()
    perfect, _ = write_label_output(tmp_path / "a", gt, rows)
    best = evaluate_folder(perfect, gt, image_prefix="scenes/")
    assert best["coco"]["AP"] == pytest.approx(1.0) and best["labels"]["label_accuracy"] == 1.0
    (tmp_path / "b").mkdir()
    noisy, _ = write_label_output(tmp_path / "b", gt, predictions(gt, noise=0.08))
    assert evaluate_folder(noisy, gt, image_prefix="scenes/")["coco"]["AP"] < best["coco"]["AP"]


def test_image_matching_rule():
    gt = ground_truth()
    assert match_images(["s1.jpg"], gt) == {"s1.jpg": 2}  # the unique file_name ending in /s1.jpg
    assert match_images(["s1.jpg"], gt, image_prefix="photos/") == {}
    assert match_images(["scenes/s1.jpg", "photos/s0.jpg"], gt, image_prefix="") == {"scenes/s1.jpg": 2,
                                                                                     "photos/s0.jpg": 7}
    with pytest.raises(ValueError, match="--image-prefix"):
        match_images(["s0.jpg"], gt)  # scenes/s0.jpg and photos/s0.jpg
    assert match_images(["s0.jpg"], gt, image_prefix="scenes/") == {"s0.jpg": 1}
    rows = [dict(zip(COLUMNS, map(str, r), strict=True)) for r in predictions(gt)]
    keyed = results_for_ground_truth(rows, gt, image_prefix="scenes/")
    assert {r["image_id"] for r in keyed.results} <= set(range(1, 7))
    assert all(set(r) == {"image_id", "category_id", "bbox", "score"} for r in keyed.results)


def test_cli_errors_are_one_line(tmp_path, capsys):
    gt = ground_truth()
    out, gt_path = write_label_output(tmp_path, gt, predictions(gt))
    assert console.main(["evaluate", "--predictions", str(out), "--ground-truth", str(gt_path),
                         "--image-prefix", "nope/"]) == 2
    assert "--image-prefix" in capsys.readouterr().err
    assert console.main(["evaluate", "--predictions", str(tmp_path / "none"), "--ground-truth", str(gt_path)]) == 2


def test_foreign_or_damaged_ground_truth_and_predictions_are_one_line_errors(tmp_path, capsys):
    from pipelines import evaluate as evaluate_cli
    from pipelines import export as export_cli

    gt = ground_truth()
    out, _ = write_label_output(tmp_path, gt, predictions(gt))
    cases = {"a results list": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}],
             "null": None, "short box": {**gt, "annotations": [{**gt["annotations"][0], "bbox": [1, 2]}]},
             "twice the name": {**gt, "categories": [*gt["categories"], {**gt["categories"][0], "id": 999}]}}
    for name, bad in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(bad))
        assert evaluate_cli.main(["--predictions", str(out), "--ground-truth", str(path)]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err and str(path) in err, err
    csv_file = out / "predictions.csv"
    csv_file.write_bytes(b"\xef\xbb\xbf" + csv_file.read_bytes())  # saved again by a spreadsheet: a BOM
    assert export_cli.main(["--predictions", str(out), "--format", "yolo"]) == 0
    csv_file.write_text("split,path,label\nval,a.jpg,x\n")  # a train_fine predictions.csv
    assert export_cli.main(["--predictions", str(out), "--format", "yolo"]) == 2
    assert "is not a `label` predictions.csv" in capsys.readouterr().err
