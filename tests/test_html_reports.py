"""HTML reports in a real headless Chromium: no console errors, every image decodes, hostile names stay text, the
screenshot is not blank. Chromium is Debian's `chromium` package (installed when missing and possible, else skipped)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from labeling_testdata import CLASSES, ground_truth, predictions, write_label_output
from PIL import Image

from classify.report import classification_metrics, plot_confusion_matrix, plot_history
from detectcrop.io import csv_text
from pipelines.report_html import write_label_report, write_train_report

HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1'  # a legal file name (no slash)
CHECK = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || (e.target && e.target.tagName))), true);
const realError = console.error; console.error = (...a) => { window.__errors.push(a.join(' ')); realError(...a); };
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const out = document.createElement('pre'); out.id = '__check';
  out.textContent = JSON.stringify({images: imgs.length, broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0))
    .map(i => i.alt), errors: window.__errors, pwned: !!window.__pwned});
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            subprocess.run(cmd, capture_output=True, timeout=900, check=False)
        exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("no headless Chromium: install Debian's `chromium` package (apt-get install chromium, as root)")
    return exe


def _browse(chromium: str, page: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--virtual-time-budget=5000", *extra, page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)


def check_in_browser(chromium: str, report: Path, tmp_path: Path) -> Path:
    """Load a copy of ``report`` with a checker script (and without the page's no-script policy, so an escaping bug
    would run); assert a clean load; return a screenshot of the report itself."""
    text = report.read_text()
    assert "<script" not in text.lower() and "http://" not in text and "https://" not in text
    probe = tmp_path / "probe.html"
    probe.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", text)
                     .replace("<head>", "<head>" + CHECK, 1))
    dom = _browse(chromium, probe, tmp_path, "--dump-dom")
    found = re.search(r'<pre id="__check">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    check = json.loads(html.unescape(found.group(1)))
    assert check["images"] > 0 and check["broken"] == [] and check["errors"] == [] and not check["pwned"], check
    shot = tmp_path / f"{report.parent.name}.png"
    proc = _browse(chromium, report, tmp_path, f"--screenshot={shot}", "--window-size=1280,1800", "--hide-scrollbars")
    assert shot.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100  # text, tables and photos, not a blank page
    return shot


def _scene(seed: int, boxes: list[list[float]]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:480, 0:640]
    image = np.stack([x / 640 * 200, y / 480 * 160 + 40, np.full_like(x, 90.0)], -1)
    for bx, by, bw, bh in boxes:
        colour = rng.integers(0, 255, 3)
        image[int(by):int(by + bh), int(bx):int(bx + bw)] = colour
    return image.clip(0, 255).astype(np.uint8)


def test_label_report_loads_cleanly(chromium, tmp_path):
    gt = ground_truth()
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for im in gt["images"][:6]:
        boxes = [a["bbox"] for a in gt["annotations"] if a["image_id"] == im["id"]]
        Image.fromarray(_scene(im["id"], boxes)).save(scenes / Path(im["file_name"]).name)
    shutil.copy(scenes / "s1.jpg", scenes / f"{HOSTILE}.jpg")
    rows = predictions(gt)
    rows += [[f"{HOSTILE}.jpg", *r[1:]] for r in rows if r[0] == "s1.jpg"]
    rows.append([f"{HOSTILE}2.jpg", "error", "", "", "", "", "", "", "", "", "", "", "", "", f"{HOSTILE} error"])
    out, _ = write_label_output(tmp_path, gt, rows)
    (out / "label_config.json").write_text(json.dumps({"input": str(scenes)}))
    report = write_label_report(out)
    text = report.read_text()
    assert html.escape(HOSTILE) in text and "Files that could not be labeled" in text
    assert text.count("<figure>") > 6  # gallery and low-confidence objects
    check_in_browser(chromium, report, tmp_path)


def test_train_report_loads_cleanly(chromium, tmp_path):
    rng = np.random.default_rng(0)
    run, crops = tmp_path / "run", tmp_path / "crops"
    run.mkdir()
    crops.mkdir()
    truth = [CLASSES[i % 3] for i in range(30)]
    predicted = [t if rng.random() < 0.7 else CLASSES[rng.integers(0, 3)] for t in truth]
    predicted[1] = "brisk" if truth[1] != "brisk" else "aurel"  # the crop with the hostile name is a mistake
    rows = []
    for i, (t, p) in enumerate(zip(truth, predicted, strict=True)):
        path = crops / (f"{HOSTILE}_{i}.jpg" if i == 1 else f"crop_{i}.jpg")
        Image.fromarray(rng.integers(0, 255, (64, 48, 3), np.uint8)).save(path)
        rows.append(("val", str(path), t, p, f"{rng.uniform(0.3, 1):.6f}"))
    metrics = classification_metrics(truth, predicted, CLASSES)
    (run / "report.json").write_text(json.dumps({"val": metrics, "best_epoch": 7, "skipped_files_count": 0}))
    (run / "predictions.csv").write_text(csv_text([("split", "path", "label", "predicted", "probability"), *rows]))
    plot_confusion_matrix(metrics["confusion_matrix"], CLASSES, run / "confusion_matrix.png")
    plot_history([{"stage": "head", "epoch": e, "loss": 1 / (e + 1), "val_accuracy": e / 10} for e in range(10)],
                 run / "curves.png")
    report = write_train_report(run)
    text = report.read_text()
    wrong = sum(t != p for t, p in zip(truth, predicted, strict=True))
    assert text.count("<figure>") == min(wrong, 24) and f"{metrics['macro_f1']:.3f}" in text
    assert html.escape(HOSTILE) in text
    check_in_browser(chromium, report, tmp_path)


def test_label_report_decodes_each_image_once_for_its_doubtful_objects(tmp_path, monkeypatch):
    """The low-confidence section cuts every doubtful object of an image from one decode of it, and lists the
    objects by probability, each with the pixels of its own box."""
    import pipelines.report_html as report_html

    gt = ground_truth()
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for im in gt["images"][:6]:
        boxes = [a["bbox"] for a in gt["annotations"] if a["image_id"] == im["id"]]
        Image.fromarray(_scene(im["id"], boxes)).save(scenes / Path(im["file_name"]).name, quality=95)
    rows = [r for r in predictions(gt) if r[0] != "extra.jpg"]
    for i, r in enumerate(rows):
        if r[1] == "ok":
            r[12] = f"{0.1 + 0.05 * r[4] + 0.001 * i:.4f}"  # all doubtful; by probability, images interleave
    out, _ = write_label_output(tmp_path, gt, rows)
    (out / "label_config.json").write_text(json.dumps({"input": str(scenes)}))
    decoded: list[str] = []
    real = report_html._read_rgb
    monkeypatch.setattr(report_html, "_read_rgb", lambda path, *a: decoded.append(Path(path).name) or real(path, *a))
    text = write_label_report(out).read_text()

    doubtful = sorted((r for r in rows if r[1] == "ok"), key=lambda r: float(r[12]))[: report_html.MAX_THUMBNAILS]
    assert len({r[0] for r in doubtful}) < len(doubtful)  # several objects share an image
    assert sorted(decoded) == sorted({r[0] for r in doubtful if r[0] != "broken.jpg"})
    section = text.split('<div class="grid crops">', 1)[1].split("</div>", 1)[0]
    alts = re.findall(r'alt="([^"]*)"', section)
    assert alts == [f"{r[0]} object {r[4]}" for r in doubtful]
    first = np.asarray(Image.open(scenes / doubtful[0][0]).convert("RGB"))
    x1, y1, x2, y2 = (float(v) for v in doubtful[0][5:9])
    box = (max(0, int(x1)), max(0, int(y1)), min(640, int(np.ceil(x2))), min(480, int(np.ceil(y2))))
    expected = report_html.image_uri(first[box[1]:box[3], box[0]:box[2]])
    assert re.findall(r'src="([^"]*)"', section)[0] == expected
