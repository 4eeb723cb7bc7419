"""`detectcrop export`: Label Studio pre-annotations and YOLO txt read back to the predictions' pixel boxes."""

from __future__ import annotations

import json
from urllib.parse import unquote

import numpy as np
import pytest
from labeling_testdata import ground_truth, predictions, write_label_output

from detectcrop.io import csv_text
from pipelines import console
from pipelines.labeling import COLUMNS
from pipelines.predictions import read_predictions


@pytest.fixture
def label_out(tmp_path):
    gt = ground_truth()
    rows = predictions(gt)
    rows.append(["sub/a <b>&#.jpg", "no_detection", 320, 200, *[""] * 11])  # hostile name, nothing found
    out, _ = write_label_output(tmp_path, gt, rows)
    return out


def _pixel_boxes(rows, image):
    return np.array([[float(r[k]) for k in ("x1", "y1", "x2", "y2")] for r in rows
                     if r["image"] == image and r["status"] == "ok"]).reshape(-1, 4)


def test_labelstudio_tasks_hold_percent_boxes_of_every_readable_image(label_out, capsys):
    assert console.main(["export", "--predictions", str(label_out), "--format", "labelstudio",
                         "--image-url", "/data/local-files/?d=scenes/", "--model-version", "run-7"]) == 0
    tasks = json.loads((label_out / "labelstudio.json").read_text())
    rows = read_predictions(label_out)
    readable = list(dict.fromkeys(r["image"] for r in rows if r["status"] != "error"))
    prefix = "/data/local-files/?d=scenes/"
    assert [unquote(t["data"]["image"].removeprefix(prefix)) for t in tasks] == readable
    assert all("<" not in t["data"]["image"] and "#" not in t["data"]["image"] for t in tasks)  # URL-quoted
    for task in tasks:
        (pred,) = task["predictions"]
        assert pred["model_version"] == "run-7"
        image = unquote(task["data"]["image"].removeprefix(prefix))
        boxes = []
        for r in pred["result"]:
            assert (r["type"], r["from_name"], r["to_name"]) == ("rectanglelabels", "label", "image")
            v, w, h = r["value"], r["original_width"], r["original_height"]
            assert 0 <= r["score"] <= 1 and len(v["rectanglelabels"]) == 1
            boxes.append([v["x"] * w / 100, v["y"] * h / 100, (v["x"] + v["width"]) * w / 100,
                          (v["y"] + v["height"]) * h / 100])
        np.testing.assert_allclose(np.array(boxes).reshape(-1, 4), _pixel_boxes(rows, image), atol=1e-6)
        assert pred["score"] == min((r["score"] for r in pred["result"]), default=1.0)


def test_labelstudio_config_has_every_label_the_tasks_use(label_out, tmp_path):
    import xml.etree.ElementTree as ET

    rows = read_predictions(label_out)
    hostile = 'a <b> & "c"'
    assert rows[0]["status"] == "ok"
    rows[0]["label"] = hostile
    (label_out / "predictions.csv").write_text(csv_text([COLUMNS, *[[r[c] for c in COLUMNS] for r in rows]]))
    assert console.main(["export", "--predictions", str(label_out), "--format", "labelstudio"]) == 0
    root = ET.fromstring((label_out / "labelstudio.xml").read_text())
    (image,), (rect,) = root.findall("Image"), root.findall("RectangleLabels")
    assert image.get("value") == "$image" and (rect.get("name"), rect.get("toName")) == ("label", image.get("name"))
    labels = [e.get("value") for e in rect.findall("Label")]
    tasks = json.loads((label_out / "labelstudio.json").read_text())
    used = {v for t in tasks for r in t["predictions"][0]["result"] for v in r["value"]["rectanglelabels"]}
    assert used <= set(labels) and hostile in labels and len(labels) == len(set(labels))
    assert console.main(["export", "--predictions", str(label_out), "--format", "labelstudio", "--output",
                         str(tmp_path / "tasks.xml")]) == 2  # the config would replace the tasks
    assert console.main(["export", "--predictions", str(label_out), "--format", "labelstudio", "--output",
                         str(tmp_path / "review.json")]) == 0
    assert (tmp_path / "review.xml").read_text() == (label_out / "labelstudio.xml").read_text()


def test_yolo_txt_reads_back_to_the_boxes_and_labels(label_out):
    assert console.main(["export", "--predictions", str(label_out), "--format", "yolo", "--confidence"]) == 0
    yolo = label_out / "yolo"
    classes = (yolo / "classes.txt").read_text().splitlines()
    assert "names:" in (yolo / "data.yaml").read_text() and f"nc: {len(classes)}" in (yolo / "data.yaml").read_text()
    rows = read_predictions(label_out)
    for image in dict.fromkeys(r["image"] for r in rows if r["status"] != "error"):
        lines = (yolo / "labels" / image).with_suffix(".txt").read_text().splitlines()
        objects = [r for r in rows if r["image"] == image and r["status"] == "ok"]
        assert [classes[int(line.split()[0])] for line in lines] == [r["label"] for r in objects]
        if not objects:
            continue
        values = np.array([[float(v) for v in line.split()[1:]] for line in lines])
        assert values.shape[1] == 5 and ((values[:, :4] >= -0.1) & (values[:, :4] <= 1.1)).all()
        w, h = float(objects[0]["width"]), float(objects[0]["height"])
        xc, yc, bw, bh = values[:, 0] * w, values[:, 1] * h, values[:, 2] * w, values[:, 3] * h
        back = np.stack([xc - bw / 2, yc - bh / 2, xc + bw / 2, yc + bh / 2], axis=1)
        np.testing.assert_allclose(back, _pixel_boxes(rows, image), atol=0.01)
    assert not (yolo / "labels" / "broken.txt").exists()  # unreadable: no label file (an empty one means "none")
    assert (yolo / "labels" / "sub" / "a <b>&#.txt").read_text() == ""


def test_yolo_without_confidence_has_five_columns(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    row = ["a.jpg", "ok", 100, 50, 0, "10.0", "5.0", "30.0", "45.0", "0.9000", "clock", "x", "0.5000", "", ""]
    (out / "predictions.csv").write_text(csv_text([COLUMNS, row]))
    assert console.main(["export", "--predictions", str(out), "--format", "yolo"]) == 0
    assert (out / "yolo" / "labels" / "a.txt").read_text() == "0 0.200000 0.500000 0.200000 0.800000\n"


def test_an_export_never_writes_over_the_label_output_or_into_the_photos(label_out, tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in label_out.iterdir() if p.is_file()}
    for output, fmt in ((label_out / "predictions.csv", "labelstudio"), (label_out, "yolo"),
                        (label_out / "annotated" / "x.json", "labelstudio")):
        assert console.main(["export", "--predictions", str(label_out), "--format", fmt, "--output", str(output)]) == 2
        assert "would write over the label output" in capsys.readouterr().err
    photos = tmp_path / "photos"
    photos.mkdir()
    config = label_out / "label_config.json"
    config.write_text(json.dumps({"input": str(photos)}))
    before["label_config.json"] = config.read_bytes()
    assert console.main(["export", "--predictions", str(label_out), "--format", "yolo", "--output",
                         str(photos / "yolo")]) == 2
    assert "photo folder" in capsys.readouterr().err and not any(photos.iterdir())
    assert {p.name: p.read_bytes() for p in label_out.iterdir() if p.is_file()} == before
    assert console.main(["export", "--predictions", str(label_out), "--format", "labelstudio", "--output",
                         str(tmp_path / "review.json")]) == 0  # anywhere else is fine
