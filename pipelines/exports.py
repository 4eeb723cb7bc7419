"""Exports of a `label` output folder for review tools: Label Studio pre-annotations and YOLO txt
(``python -m pipelines.export``, `pipelines.cli.export`, writes them).

- ``labelstudio`` writes ``OUT/labelstudio.json`` and ``OUT/labelstudio.xml``, the labeling config to create the
  project with (an image, a ``RectangleLabels`` with every class). The tasks: one per readable image,
  ``data.image`` = PREFIX + the image's path relative to the labeled folder (URL-quoted; e.g.
  ``/data/local-files/?d=photos/`` for Label Studio's local file storage), and one prediction per task
  (``model_version``, ``score`` = its least confident object, ``result``: ``rectanglelabels`` boxes in percent of the
  image, ``from_name="label"``, ``to_name="image"`` as in Label Studio's "Object Detection with Bounding Boxes"
  template).
- ``yolo`` writes ``OUT/yolo/labels/<image path>.txt`` (one per readable image, empty when nothing was detected:
  ``class x_center y_center width height``, normalised to 0-1, plus the confidence with ``--confidence``),
  ``OUT/yolo/classes.txt`` (one name per line, line k = class k) and ``OUT/yolo/data.yaml`` (``names``).

Scores are detection score x label probability. FiftyOne reads ``OUT/results.coco.json`` (written by `label`) with
its COCO importer; see the README.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from pipelines.results import CONFIG_JSON, ImageResult, as_results, read_results

logger = logging.getLogger(__name__)

LABELSTUDIO_JSON = "labelstudio.json"
#: The labeling config (Label Studio's XML) of a project for those tasks, written beside them.
LABELSTUDIO_XML = "labelstudio.xml"
YOLO_DIR = "yolo"


Results = Iterable[ImageResult | Mapping[str, str]]


def _readable(results: Results) -> list[ImageResult]:
    """The images that could be read (in file order), with their objects."""
    return [im for im in as_results(results) if im.status != "error"]


def class_names(out: str | os.PathLike, results: Results) -> list[str]:
    """The label output's class order (its ``results.coco.json`` categories, by id), else the labels sorted
    (``results``: its images, or its predictions.csv rows)."""
    coco = Path(out) / "results.coco.json"
    labels = sorted({label for im in as_results(results) if im.status == "ok" for label in im.labels})
    if coco.is_file():
        try:
            names = [str(c["name"]) for c in sorted(json.loads(coco.read_text())["categories"], key=lambda c: c["id"])]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{coco} is not the label run's COCO results (its categories: {type(exc).__name__}: "
                             f"{exc}); remove it to order the classes by name") from exc
        return names + [n for n in labels if n not in names]
    return labels


def labelstudio_tasks(results: Results, image_url: str = "", model_version: str = "detectcrop",
                      from_name: str = "label", to_name: str = "image") -> list[dict[str, Any]]:
    """Label Studio tasks with pre-annotations (see the module docstring)."""
    tasks = []
    for im in _readable(results):
        w, h = float(im.width), float(im.height)
        result = []
        for i, (box, label, score) in enumerate(zip(im.detections.xyxy.astype(float), im.labels, im.scores,
                                                   strict=True)):
            x1, y1, x2, y2 = box
            result.append({
                "id": f"r{i}", "from_name": from_name, "to_name": to_name, "type": "rectanglelabels",
                "original_width": int(w), "original_height": int(h), "image_rotation": 0,
                "value": {"x": 100 * x1 / w, "y": 100 * y1 / h, "width": 100 * (x2 - x1) / w,
                          "height": 100 * (y2 - y1) / h, "rotation": 0, "rectanglelabels": [label]},
                "score": round(float(score), 6),
            })  # fmt: skip
        score = min((r["score"] for r in result), default=1.0)
        tasks.append({"data": {"image": image_url + quote(im.image)},
                      "predictions": [{"model_version": model_version, "score": score, "result": result}]})
    return tasks


def labelstudio_config(classes: Sequence[str], from_name: str = "label", to_name: str = "image") -> str:
    """Label Studio's labeling config for `labelstudio_tasks`: the image and a rectangle label per class."""
    labels = "".join(f"    <Label value={quoteattr(c)}/>\n" for c in classes)
    return (f"<View>\n  <Image name={quoteattr(to_name)} value=\"$image\"/>\n"
            f"  <RectangleLabels name={quoteattr(from_name)} toName={quoteattr(to_name)}>\n{labels}"
            "  </RectangleLabels>\n</View>\n")


def check_target(out: str | os.PathLike, target: Path, default: str) -> Path:
    """``target``, unless writing it would replace a file of the label output ``out`` (anything there but the
    export's own ``default``), ``out`` itself, or write into the photo folder it labeled (``OutputLocationError``)."""
    from detectcrop.io import OutputLocationError

    out_dir, dst = Path(out).resolve(), target.resolve()
    if dst == out_dir or (dst.parent == out_dir and dst.name != default and dst.exists()) or (
            out_dir in dst.parents and dst.relative_to(out_dir).parts[0] != default):
        raise OutputLocationError(f"--output {target} would write over the label output in {out}; write the export "
                                  f"to {Path(out) / default} (the default) or outside that folder")
    try:
        labeled = json.loads((out_dir / CONFIG_JSON).read_text()).get("input")
    except (OSError, ValueError, AttributeError):
        labeled = None
    if labeled and (dst == Path(labeled) or Path(labeled) in dst.parents):
        raise OutputLocationError(f"--output {target} lies in the photo folder {labeled} that was labeled: the inputs "
                                  "are never written")
    return target


def write_labelstudio(out: str | os.PathLike, path: str | os.PathLike | None = None, **options: Any) -> Path:
    """``OUT/labelstudio.json`` (or ``path``) from a label output folder, and beside it ``labelstudio.xml`` (the
    same name with ``.xml``): the labeling config to create the project with, every class a label."""
    from detectcrop.io import atomic_write_text

    target = check_target(out, Path(path), LABELSTUDIO_JSON) if path is not None else Path(out) / LABELSTUDIO_JSON
    config = target.with_suffix(".xml")
    if config == target:
        raise ValueError(f"--output {target}: the label config is written beside the tasks with the suffix .xml; "
                         "give the tasks file another suffix (.json)")
    if path is not None:
        check_target(out, config, LABELSTUDIO_XML)
    results = read_results(out)
    names = {k: options[k] for k in ("from_name", "to_name") if k in options}
    atomic_write_text(config, labelstudio_config(class_names(out, results), **names))
    return atomic_write_text(target, json.dumps(labelstudio_tasks(results, **options), indent=1) + "\n")


def yolo_lines(image: ImageResult, classes: list[str], confidence: bool = False) -> list[str]:
    """YOLO txt lines of one image's objects: ``class xc yc w h [confidence]``, normalised."""
    w, h = float(image.width), float(image.height)
    lines = []
    for (x1, y1, x2, y2), label, score in zip(image.detections.xyxy.astype(float), image.labels, image.scores,
                                              strict=True):
        values = [(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]
        if confidence:
            values.append(round(float(score), 6))
        lines.append(" ".join([str(classes.index(label)), *(f"{v:.6f}" for v in values)]))
    return lines


def write_yolo(out: str | os.PathLike, path: str | os.PathLike | None = None, confidence: bool = False) -> Path:
    """``OUT/yolo/`` (or ``path``): ``labels/<image path>.txt``, ``classes.txt`` and ``data.yaml``."""
    from detectcrop.io import atomic_write_text, inside

    results = read_results(out)
    classes = class_names(out, results)
    target = check_target(out, Path(path), YOLO_DIR) if path is not None else Path(out) / YOLO_DIR
    written: dict[str, str] = {}
    for im in _readable(results):
        name = str(PurePosixPath(im.image).with_suffix(".txt"))
        if name.casefold() in written:  # YOLO pairs labels with images by stem: a.jpg and a.png cannot both have one
            logger.warning("%s: no YOLO label file: %s already has %s", im.image, written[name.casefold()], name)
            continue
        written[name.casefold()] = im.image
        text = "".join(line + "\n" for line in yolo_lines(im, classes, confidence))
        atomic_write_text(inside(target / "labels", name), text)
    atomic_write_text(target / "classes.txt", "".join(f"{c}\n" for c in classes))
    names = "\n".join(f"  {i}: {json.dumps(c)}" for i, c in enumerate(classes))
    atomic_write_text(target / "data.yaml", f"# classes of {Path(out).name}/predictions.csv\nnc: {len(classes)}\n"
                                            f"names:\n{names}\n")
    return target


