"""build_crops end to end: real offline detector on real pixels (synthetic watch photos), bad files, resume, kill."""

from __future__ import annotations

import csv
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from detectcrop.images import read_image
from PIL import Image
from red_blobs import RedBlobDetector, red_photo

from detectcrop.crops import CropPolicy
from detectcrop.dataset import (
    CROPS_COLUMNS,
    IMAGES_COLUMNS,
    OutputLocationError,
    build_crops,
    crop_basenames,
)
from pipelines import build_crops as cli

REPO = Path(__file__).resolve().parents[1]
MIN_SCORE = 0.3
BAD = {"empty.jpg": "EmptyFileError", "truncated.jpg": "CorruptImageError", "notes.jpg": "NotAnImageError",
       "readme.txt": "NotAnImageError"}  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# -- the acceptance folder: synthetic watch photos + every kind of awkward file -----------------------------------
@pytest.fixture(scope="module")
def photos(tmp_path_factory, detector) -> dict:
    from pipelines.synthetic import generate

    gen = tmp_path_factory.mktemp("watches")
    generate(gen, brands=2, photos_per_brand=4, scenes=0, seed=3)
    root = gen / "photos"
    brands = sorted(p.name for p in root.iterdir())
    # the derived copies (rotated, alpha, 16-bit, ...) come from the first photo with a watch found: they must then
    # behave as their source does
    best = next((p for p in sorted(root.rglob("*.jpg"))
                 if len(detector.detect(read_image(p), min_score=MIN_SCORE).by_category("clock"))), None)
    assert best is not None, "the offline detector found no watch in the synthetic photos"
    upright = read_image(best)
    folder = best.parent
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated 90 degrees counter-clockwise; the viewer rotates it back
    stored = np.ascontiguousarray(np.rot90(upright))
    Image.fromarray(stored).save(folder / "rotated copy.png", exif=exif)  # lossless: its crop must be identical
    Image.fromarray(stored).save(folder / "rotated copy.jpg", quality=97, subsampling=0, exif=exif)
    rgba = np.dstack([upright, np.full(upright.shape[:2], 255, np.uint8)])
    rgba[:20, :, 3] = 0
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    gray = cv2.cvtColor(upright, cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(folder / "deep16.png"), gray.astype(np.uint16) * 257)
    Image.fromarray(gray).save(folder / "gray.jpg", quality=95)
    Image.fromarray(upright).save(folder / "mein Uhrenfoto 時計 été.jpg", quality=95)
    jpeg = best.read_bytes()
    other = root / brands[-1]
    (other / "empty.jpg").write_bytes(b"")
    (other / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (other / "notes.jpg").write_text("this is not a photo\n")
    (other / "readme.txt").write_text("shot on a phone\n")
    return {"root": root, "best": best.relative_to(root).as_posix(), "label": folder.name, "brands": brands}


@pytest.fixture(scope="module")
def reference(photos, detector, tmp_path_factory) -> Path:
    """One uninterrupted run, the yardstick for the resumed ones."""
    out = tmp_path_factory.mktemp("ref") / "crops"
    build_crops(photos["root"], out, detector, min_score=MIN_SCORE, show_progress=False)
    return out


def test_every_file_is_accounted_for_and_crops_sit_in_class_folders(photos, reference):
    root, out = photos["root"], reference
    images = _rows(out / "images.csv")
    all_files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert [r["path"] for r in images] == all_files  # every input file, once, in a stable order
    assert list(images[0]) == list(IMAGES_COLUMNS)
    by_name = {Path(r["path"]).name: r for r in images}
    for name, kind in BAD.items():
        assert by_name[name]["status"] == "error" and by_name[name]["error"].startswith(kind), by_name[name]
    for name in ["alpha.png", "deep16.png", "gray.jpg", "mein Uhrenfoto 時計 été.jpg", "rotated copy.png"]:
        assert by_name[name]["status"] in ("ok", "no_detection"), by_name[name]
    source = by_name[Path(photos["best"]).name]
    assert source["status"] == "ok"
    for name in ["rotated copy.png", "mein Uhrenfoto 時計 été.jpg"]:  # lossless / same pixels as the source
        assert (by_name[name]["status"], by_name[name]["n_crops"]) == (source["status"], source["n_crops"])

    crops = _rows(out / "crops.csv")
    assert list(crops[0]) == list(CROPS_COLUMNS)
    assert sum(int(r["n_crops"]) for r in images) == len(crops) > 0
    for c in crops:
        assert c["label"] == Path(c["source_path"]).parent.as_posix() in photos["brands"]
        assert Path(c["crop_path"]).parent.as_posix() == c["label"]
        with Image.open(out / c["crop_path"]) as jpg:
            jpg.load()
            assert jpg.size == (int(c["x2"]) - int(c["x1"]), int(c["y2"]) - int(c["y1"]))
        assert float(c["score"]) >= MIN_SCORE
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert on_disk == sorted(c["crop_path"] for c in crops)
    assert not list(out.rglob("*.tmp"))


def test_crop_comes_from_the_original_pixels_and_exif_copy_matches(photos, reference):
    crops = {c["source_path"]: c for c in _rows(reference / "crops.csv") if c["crop_path"].endswith("_0.jpg")}
    label = photos["label"]
    original = crops[photos["best"]]
    copy = crops[f"{label}/rotated copy.png"]
    box = [int(original[k]) for k in ("x1", "y1", "x2", "y2")]
    assert [int(copy[k]) for k in ("x1", "y1", "x2", "y2")] == box
    assert (reference / copy["crop_path"]).read_bytes() == (reference / original["crop_path"]).read_bytes()
    # the crop is the source's own pixels (JPEG q95 4:4:4 of them), not a resized detector input
    src = read_image(photos["root"] / photos["best"])[box[1] : box[3], box[0] : box[2]]
    crop = read_image(reference / original["crop_path"])
    assert crop.shape == src.shape and np.abs(crop.astype(int) - src).mean() < 2
    # the JPEG copy was re-encoded, so its box may move by a pixel or two
    jpg = crops[f"{label}/rotated copy.jpg"]
    assert np.abs(np.array([int(jpg[k]) for k in ("x1", "y1", "x2", "y2")]) - box).max() <= 4
    # identical pixels -> one near-duplicate group (so they cannot straddle a split later)
    assert copy["duplicate_group"] != "" and copy["duplicate_group"] == original["duplicate_group"]


class _Crash(BaseException):
    """Stands in for the process dying (not an Exception, so nothing on the way catches it)."""


class _CrashingDetector:
    def __init__(self, inner, after: int) -> None:
        self.inner, self.after, self.calls, self.name = inner, after, 0, inner.name

    def detect(self, image, min_score=None):
        self.calls += 1
        if self.calls > self.after:
            raise _Crash
        return self.inner.detect(image, min_score=min_score)


def test_crash_then_resume_is_byte_identical(photos, reference, detector, tmp_path):
    out = tmp_path / "crops"
    with pytest.raises(_Crash):
        build_crops(photos["root"], out, _CrashingDetector(detector, after=5), min_score=MIN_SCORE)
    done = _rows(out / "images.csv")
    assert 0 < len(done) < len(_rows(reference / "images.csv"))
    # a torn manifest line and a temporary file, as a kill at the wrong moment would leave them
    with open(out / "images.csv", "ab") as f:
        f.write(b"zz/half.jpg,o")
    (out / photos["label"] / ".x_0.jpg.123.tmp").write_bytes(b"\xff\xd8half")
    with pytest.raises(OutputLocationError, match="--resume"):
        build_crops(photos["root"], out, detector, min_score=MIN_SCORE)
    with pytest.raises(ValueError, match="min_score"):
        build_crops(photos["root"], out, detector, min_score=0.5, resume=True)
    summary = build_crops(photos["root"], out, detector, min_score=MIN_SCORE, resume=True)
    assert summary.n_resumed == len(done)
    assert _tree(out) == _tree(reference)
    again = build_crops(photos["root"], out, detector, min_score=MIN_SCORE, resume=True)  # nothing left to do
    assert again.n_processed == 0 and _tree(out) == _tree(reference)


def test_cli_killed_mid_run_leaves_no_partial_output_and_resumes(photos, reference, detector, tmp_path):
    out = tmp_path / "crops"
    cmd = [sys.executable, "-m", "pipelines.build_crops", "--input", str(photos["root"]), "--output", str(out),
           "--detector", "centernet_mobilenetv3_512", "--min-score", str(MIN_SCORE), "--no-progress",
           "--workers", "1"]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            images = out / "images.csv"
            if images.exists() and images.read_bytes().count(b"\n") >= 4:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    for jpg in out.rglob("*.jpg"):  # every crop that exists is whole
        with Image.open(jpg) as im:
            im.load()
    for name in ("images.csv", "crops.csv"):
        lines = (out / name).read_bytes().split(b"\n")
        assert all(line.count(b",") >= 3 for line in lines[:-1])  # complete rows (a torn tail is cut on resume)
    build_crops(photos["root"], out, detector, min_score=MIN_SCORE, resume=True)
    assert _tree(out) == _tree(reference)


# -- fast checks with a simple real-pixel detector -------------------------------------------------------------
def test_output_location_errors_come_before_any_work(tmp_path, monkeypatch):
    src = tmp_path / "photos"
    red_photo(src / "a" / "x.jpg", [(10, 10, 60, 60)])
    det = RedBlobDetector()
    with pytest.raises(FileNotFoundError, match="input folder"):
        build_crops(tmp_path / "missing", tmp_path / "out", det)
    with pytest.raises(OutputLocationError, match="parent folder"):
        build_crops(src, tmp_path / "no" / "such" / "out", det)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputLocationError, match="not a folder"):
        build_crops(src, tmp_path / "file", det)
    with pytest.raises(OutputLocationError, match="inside the input"):
        build_crops(src, src / "crops", det)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root ignores permission bits: make the probe write fail as a read-only disk would

        def read_only(self, data):
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr(Path, "write_bytes", read_only)
    with pytest.raises(OutputLocationError, match="not writable"):
        build_crops(src, ro, det)
    assert det.calls == 0


def test_cli_errors_are_clear_and_early(tmp_path, capsys):
    assert cli.main(["--input", str(tmp_path / "nope"), "--output", str(tmp_path / "out")]) == 2
    assert "input folder does not exist" in capsys.readouterr().err
    assert cli.main(["--input", str(tmp_path), "--output", str(tmp_path / "o"), "--category", "watch"]) == 2
    assert "valid names" in capsys.readouterr().err


def test_name_collisions_policy_and_failing_images(tmp_path):
    src, out = tmp_path / "photos", tmp_path / "crops"
    red_photo(src / "a" / "x.jpg", [(10, 10, 60, 60), (100, 100, 200, 150), (250, 10, 256, 16)])
    red_photo(src / "a" / "x.png", [(20, 20, 70, 70)], seed=1)
    red_photo(src / "b" / "x.jpg", [(30, 30, 90, 90)], seed=2)
    red_photo(src / "top.bmp", [(30, 30, 90, 90)], seed=3)

    class Flaky(RedBlobDetector):
        def detect(self, image, min_score=None):
            if getattr(self, "fail_next", False):
                raise RuntimeError("GPU fell over")
            return super().detect(image, min_score)

    names = crop_basenames(["a/x.jpg", "a/x.png", "b/x.jpg", "a/X.webp"])
    assert names["b/x.jpg"] == "x" and len({names["a/x.jpg"], names["a/x.png"], names["a/X.webp"]}) == 3
    summary = build_crops(src, out, Flaky(), policy=CropPolicy(pad=0.0, square=True, min_size=20, max_crops=1))
    crops = _rows(out / "crops.csv")
    assert summary.n_ok == 4 and summary.n_crops == 4
    by_src = {c["source_path"]: c for c in crops}
    big = by_src["a/x.jpg"]  # only the best-scoring (largest) blob, squared
    assert (int(big["x2"]) - int(big["x1"]), int(big["y2"]) - int(big["y1"])) == (100, 100)
    assert by_src["top.bmp"]["label"] == "" and by_src["top.bmp"]["crop_path"] == "top_0.jpg"
    assert by_src["b/x.jpg"]["crop_path"] == "b/x_0.jpg"
    assert by_src["a/x.jpg"]["crop_path"] != by_src["a/x.png"]["crop_path"]
    # a detector failure is recorded for that image and the run goes on
    det = Flaky()
    det.fail_next = True
    s2 = build_crops(src, tmp_path / "crops2", det)
    assert s2.n_error == 4 and all("DetectionError" in r["error"] for r in _rows(tmp_path / "crops2" / "images.csv"))


def test_duplicates_are_grouped_and_dropped_on_request(tmp_path):
    src = tmp_path / "photos"
    red_photo(src / "a" / "one.png", [(40, 40, 140, 140)], seed=0)
    red_photo(src / "b" / "two.png", [(40, 40, 140, 140)], seed=0)  # the same watch in the other class
    red_photo(src / "b" / "three.png", [(100, 60, 180, 200)], seed=5, mark=False)
    out = tmp_path / "crops"
    summary = build_crops(src, out, RedBlobDetector(), policy=CropPolicy(pad=0.2, min_size=10), drop_duplicates=True)
    crops = {c["source_path"]: c for c in _rows(out / "crops.csv")}
    assert crops["a/one.png"]["duplicate_group"] == crops["b/two.png"]["duplicate_group"] != ""
    assert crops["a/one.png"]["dropped"] == "0" and crops["b/two.png"]["dropped"] == "1"
    assert not (out / crops["b/two.png"]["crop_path"]).exists() and (out / crops["a/one.png"]["crop_path"]).exists()
    assert crops["b/three.png"]["duplicate_group"] == "" and crops["b/three.png"]["dropped"] == "0"
    assert (summary.n_crops, summary.n_duplicate_groups, summary.n_duplicates, summary.n_dropped) == (3, 1, 2, 1)
    before = _tree(out)
    build_crops(src, out, RedBlobDetector(), policy=CropPolicy(pad=0.2, min_size=10), drop_duplicates=True,
                resume=True)  # fmt: skip
    assert _tree(out) == before


def test_deeper_folders_keep_their_first_level_class_and_train_fine_reads_them(photos, detector, tmp_path):
    from classify.data import load_image_folder

    src = tmp_path / "photos"
    for rel in ("rolex/a.jpg", "rolex/shop 2/b.jpg", "omega/2024/03/c.jpg"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes((photos["root"] / photos["best"]).read_bytes())
    build_crops(src, tmp_path / "crops", detector, min_score=MIN_SCORE)
    crops = {r["crop_path"]: r["label"] for r in _rows(tmp_path / "crops" / "crops.csv")}
    assert crops == {"rolex/a_0.jpg": "rolex", "rolex/shop 2/b_0.jpg": "rolex", "omega/2024/03/c_0.jpg": "omega"}
    data = load_image_folder(tmp_path / "crops", min_per_class=1)
    assert data.class_names == ["omega", "rolex"]
    assert sorted(map(str, data.label_names)) == ["omega", "rolex", "rolex"]
