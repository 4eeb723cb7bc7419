"""Self-contained HTML reports: ``RUN/report.html`` (train_fine) and ``OUT/report.html`` (label).

One file each, opened in any browser with no server and no network: images are inline (base64 JPEG / PNG), styles
inline, no script at all (a Content-Security-Policy forbids scripts and remote loads). Every text (file names, labels,
errors) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from detectcrop.io import atomic_write_text

logger = logging.getLogger(__name__)

REPORT_HTML = "report.html"
#: Thumbnails per section (the report stays small for folders of any size).
MAX_THUMBNAILS = 24
THUMB_SIDE = 320

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2327;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:20px 28px 48px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid #d8dde3;
padding-bottom:4px}.sub{color:#5f6b76;margin:0 0 12px}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{background:#fff;border:1px solid #d8dde3;border-radius:8px;
padding:10px 14px;min-width:120px}.card b{display:block;font-size:20px}.card span{color:#5f6b76;font-size:12px}
table{border-collapse:collapse;background:#fff;border:1px solid #d8dde3}th,td{padding:4px 10px;text-align:left;
border-bottom:1px solid #eef0f2;font-variant-numeric:tabular-nums}th{background:#eef1f4;font-weight:600}
td.n{text-align:right}.grid{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;background:#fff;border:1px solid #d8dde3;border-radius:6px;padding:6px;max-width:330px}
figure img{display:block;max-width:100%;height:auto;border-radius:3px}
figcaption{font-size:12px;color:#37424d;margin-top:4px;overflow-wrap:anywhere}
.bad{color:#b3261e}.plots img{max-width:100%;background:#fff;border:1px solid #d8dde3;border-radius:6px}
.empty{color:#5f6b76;font-style:italic}.crops figure{width:170px}
.crops img{width:160px;height:160px;object-fit:contain;background:#eef1f4;image-rendering:auto}
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


# ---- shared helpers ----------------------------------------------------------------------------------------------

def esc(value: object) -> str:
    """Any value as escaped HTML text."""
    return html.escape(str(value), quote=True)


def image_uri(image: np.ndarray | bytes, max_side: int = THUMB_SIDE) -> str:
    """A ``data:`` URI: PNG bytes as they are, an RGB array as a JPEG no larger than ``max_side``."""
    if isinstance(image, bytes):
        return "data:image/png;base64," + base64.b64encode(image).decode("ascii")
    im = Image.fromarray(np.ascontiguousarray(image), "RGB")
    im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def figure(image: np.ndarray | bytes, caption: str, alt: str) -> str:
    """A thumbnail with its caption (``caption`` is HTML already escaped by the caller)."""
    return f'<figure><img src="{image_uri(image)}" alt="{esc(alt)}"><figcaption>{caption}</figcaption></figure>'


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """An HTML table; numbers right-aligned, every cell escaped."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="n">{_num(v)}</td>' if isinstance(v, int | float) else f"<td>{esc(v)}</td>"
                         for v in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _num(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:.3f}"


def cards(items: Sequence[tuple[str, object]]) -> str:
    return '<div class="cards">' + "".join(f'<div class="card"><b>{esc(v)}</b><span>{esc(k)}</span></div>'
                                           for k, v in items) + "</div>"


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str]]) -> str:
    """The whole document: ``sections`` are ``(heading, html body)``."""
    body = "".join(f"<section><h2>{esc(h)}</h2>{content}</section>" for h, content in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body><main><h1>{esc(title)}</h1><p class=\"sub\">{esc(subtitle)}</p>"
            f"{body}</main></body></html>\n")


def _read_rgb(path: Path, max_pixels: int | None = None) -> np.ndarray | None:
    from detectcrop.io.images import read_image

    try:
        return read_image(path) if max_pixels is None else read_image(path, max_pixels=max_pixels)
    except Exception as exc:  # a thumbnail that cannot be made is left out, never fatal
        logger.debug("no thumbnail for %s: %s", path, exc)
        return None


def _png(path: Path) -> str:
    if not path.is_file():
        return '<p class="empty">(not written)</p>'
    return f'<img src="{image_uri(path.read_bytes())}" alt="{esc(path.name)}">'


# ---- train_fine: RUN/report.html -----------------------------------------------------------------------------------

def write_train_report(run: str | os.PathLike) -> Path:
    """``RUN/report.html`` from the run's report.json, plots and predictions.csv."""
    from detectcrop.io import csv_unsafe

    run = Path(run)
    report = json.loads((run / "report.json").read_text())
    split = "test" if "test" in report else "val"
    m = report[split]
    sections = [("Summary", cards([(f"{split} macro-F1", f"{m['macro_f1']:.3f}"),
                                   (f"{split} accuracy", f"{m['accuracy']:.3f}"), (f"{split} crops", m["n"]),
                                   ("best epoch", report.get("best_epoch") or "-"),
                                   ("skipped files", report.get("skipped_files_count", 0))]))]
    for name in ("val", "test"):
        if name in report:
            per = report[name]["per_class"]
            sections.append((f"Per class ({name})", table(
                ["class", "precision", "recall", "F1", "support"],
                [(c, v["precision"], v["recall"], v["f1"], v["support"]) for c, v in per.items()])))
    sections.append(("Confusion matrix", f'<div class="plots">{_png(run / "confusion_matrix.png")}</div>'))
    sections.append(("Training curves", f'<div class="plots">{_png(run / "curves.png")}</div>'))
    sections.extend(_calibration_sections(run, report))
    mistakes = []
    if (run / "predictions.csv").is_file():
        import csv

        with (run / "predictions.csv").open(encoding="utf-8", newline="") as f:
            rows = [{k: csv_unsafe(v) for k, v in r.items()} for r in csv.DictReader(f)]
        wrong = sorted((r for r in rows if r["split"] == split and r["label"] != r["predicted"]),
                       key=lambda r: -float(r["probability"]))
        for r in wrong[:MAX_THUMBNAILS]:
            image = _read_rgb(Path(r["path"]))
            if image is not None:
                caption = (f'true <b>{esc(r["label"])}</b>, predicted <b class="bad">{esc(r["predicted"])}</b> '
                           f'({float(r["probability"]):.2f})<br>{esc(Path(r["path"]).name)}')
                mistakes.append(figure(image, caption, Path(r["path"]).name))
    sections.append((f"Worst mistakes ({split}, most confident first)",
                     f'<div class="grid crops">{"".join(mistakes)}</div>' if mistakes
                     else '<p class="empty">no mistakes</p>'))
    config = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else {}
    name = Path(config["model"]["path"]).parent.name if "model" in config else run.name  # not the staging folder's
    backbone = config.get("args", {}).get("backbone", "")
    subtitle = f"{name}: {len(m['labels'])} classes" + (f", backbone {backbone}" if backbone else "")
    text = page("Training report", subtitle, sections)
    return atomic_write_text(run / REPORT_HTML, text)


def _calibration_sections(run: Path, report: dict) -> list[tuple[str, str]]:
    """Calibration (temperature, ECE, reliability diagram) and the unknown rule (open-set scores when measured)."""
    sections = []
    cal, rule = report.get("calibration"), report.get("unknown_rule")
    if cal is not None:
        cells = [("temperature", f"{cal['temperature']:.3f}")]
        if cal.get("temperature_interval"):
            lo, hi = cal["temperature_interval"]
            cells.append(("90% bootstrap interval", f"{lo:.2f}-{hi:.2f}"))
        if cal.get("split"):
            cells += [(f"{cal['split']} ECE before", f"{cal['ece_before']:.3f}"),
                      (f"{cal['split']} ECE after", f"{cal['ece_after']:.3f}")]
        sections.append(("Calibration", cards(cells) + f'<div class="plots">{_png(run / "reliability.png")}</div>'))
    if rule is not None:
        threshold = rule.get("open_set_threshold")
        cells = [("open-set score", rule.get("open_set_score", "-")),
                 ("threshold", "-" if threshold is None else f"{threshold:.4g}"),
                 ("probability floor", rule.get("unknown_below") or "-")]
        body = cards(cells)
        if "open_set" in report:
            body += table(["score", "AUROC", "unseen accepted at the threshold", "known kept"],
                          [(name, v["auroc"], v["fpr_at_95_tpr"], v["known_kept"])
                           for name, v in report["open_set"]["scores"].items()])
        sections.append(("Unknown objects", body))
    return sections


# ---- label: OUT/report.html ----------------------------------------------------------------------------------------

def write_label_report(out: str | os.PathLike, low_confidence: float = 0.5, unknown_label: str = "unknown") -> Path:
    """``OUT/report.html`` from the label output: summary, per-label counts, a gallery of annotated images, the
    low-confidence and unknown objects, and the files that could not be labeled with their reasons."""
    from detectcrop.crops import crop_image
    from detectcrop.decoding import ReducedImage, Reduction, read_for_detection
    from detectcrop.draw import draw_boxes
    from detectcrop.io.images import resize_image
    from pipelines.results import CONFIG_JSON, read_results
    from pipelines.results.rows import as_recorded, format_top_k

    out = Path(out)
    results = read_results(out)
    config = json.loads((out / CONFIG_JSON).read_text()) if (out / CONFIG_JSON).is_file() else {}
    src = Path(config.get("input", out))
    root = src if src.is_dir() else src.parent
    found = [r for r in results if r.status == "ok" and len(r.detections)]
    # every object: (image, index, label, probability as recorded, box as recorded)
    objects = [(r.image, i, label, p, box) for r in found
               for i, (label, p, box) in enumerate(zip(r.labels, as_recorded(r.detections.data["probability"], 4),
                                                       as_recorded(r.detections.xyxy, 1), strict=True))]
    counts = Counter(r.status for r in results)
    labels = Counter(o[2] for o in objects)
    sections = [("Summary", cards([("images", len(results)), ("with objects", counts["ok"]),
                                   ("no detection", counts["no_detection"]), ("errors", counts["error"]),
                                   ("objects", len(objects)), (unknown_label, labels.get(unknown_label, 0))])),
                ("Objects per label", table(["label", "objects", "mean probability"], [
                    (label, n, float(np.mean([o[3] for o in objects if o[2] == label])))
                    for label, n in labels.most_common()]) if labels else '<p class="empty">no objects</p>')]

    def source(rel: str, thumbnail: bool = False) -> np.ndarray | ReducedImage | None:
        path = root / rel if src.is_dir() else src
        if not thumbnail:
            return _read_rgb(path)
        try:  # a large JPEG is decoded at reduced size (still >= the thumbnail), its boxes mapped exactly
            return read_for_detection(path, Reduction(THUMB_SIDE))
        except Exception as exc:  # a thumbnail that cannot be made is left out, never fatal
            logger.debug("no thumbnail for %s: %s", path, exc)
            return None

    gallery = []
    for result in found[:MAX_THUMBNAILS]:
        rel = result.image
        image = source(rel, thumbnail=True)
        if image is None:
            continue
        xyxy = as_recorded(result.detections.xyxy, 1)
        probability = as_recorded(result.detections.data["probability"], 4)
        if isinstance(image, ReducedImage):
            image, xyxy = image.image, image.to_reduced(xyxy)
        scale = min(1.0, THUMB_SIDE / max(image.shape[:2]))  # draw on the thumbnail: captions stay legible
        if scale < 1:
            image = resize_image(image, (max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale))))
        image = draw_boxes(image, scale * xyxy, [f"{label} {p:.2f}" for label, p in zip(result.labels, probability,
                                                                                         strict=True)],
                           colors_by=result.labels)
        caption = f"{esc(rel)}<br>" + esc(", ".join(f"{k}: {v}" for k, v in Counter(result.labels).most_common()))
        gallery.append(figure(image, caption, rel))
    sections.append((f"Gallery (first {MAX_THUMBNAILS} images with objects)",
                     f'<div class="grid">{"".join(gallery)}</div>' if gallery
                     else '<p class="empty">no image with objects</p>'))

    top_k = {r.image: r.detections.data["top_k"] for r in found}
    doubtful = sorted((o for o in objects if o[2] == unknown_label or o[3] < low_confidence),
                      key=lambda o: o[3])[:MAX_THUMBNAILS]
    by_image: dict[str, list[int]] = {}
    for i, o in enumerate(doubtful):
        by_image.setdefault(o[0], []).append(i)
    figures: dict[int, str] = {}  # thumbnails (small JPEGs), not crops: memory stays one decoded image
    for rel, indices in by_image.items():  # each image decoded once, one held at a time
        image = source(rel)
        if image is None:
            continue
        h, w = image.shape[:2]
        for i in indices:
            _, index, label, p, (x1, y1, x2, y2) = doubtful[i]
            box = (max(0, int(x1)), max(0, int(y1)), min(w, int(np.ceil(x2))), min(h, int(np.ceil(y2))))
            if box[2] > box[0] and box[3] > box[1]:
                caption = (f'<b class="bad">{esc(label)}</b> {p:.2f}'
                           f'<br>{esc(format_top_k(top_k[rel][index]))}<br>{esc(rel)}')
                figures[i] = figure(crop_image(image, box), caption, f"{rel} object {index}")
        del image
    thumbs = [figures[i] for i in range(len(doubtful)) if i in figures]
    sections.append((f"Low-confidence (< {low_confidence:.2f}) and {unknown_label} objects",
                     f'<div class="grid crops">{"".join(thumbs)}</div>' if thumbs else '<p class="empty">none</p>'))
    errors = [(r.image, r.error) for r in results if r.status == "error"]
    notes = [(r.image, r.error) for r in results if r.status != "error" and r.error]
    sections.append(("Files that could not be labeled", table(["file", "reason"], errors) if errors
                     else '<p class="empty">none</p>'))
    if notes:
        sections.append(("Notes", table(["file", "note"], dict.fromkeys(notes))))
    text = page("Labeling report", f"{src}: {len(results)} files", sections)
    return atomic_write_text(out / REPORT_HTML, text)
