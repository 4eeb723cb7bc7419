"""Hostile cases on the folder job both folder commands run, and on the result rows every reader shares: refused
resumes that must change nothing, broken settings files, wrong engines before any model loads, a folder held by
another run, and hand-edited predictions."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from labeling_testdata import ground_truth, predictions, write_label_output
from red_blobs import RedBlobDetector, red_photo

from detectcrop.dataset import CROPS_CSV, IMAGES_CSV, build_crops, crop_output
from detectcrop.folder_job import ResumeRefusedError
from detectcrop.io import OutputLocationError
from detectcrop.io.locks import OutputBusyError
from detectcrop.io.stamps import InputsChangedError

ROOT = Path(__file__).resolve().parents[1]


def _photos(root: Path, n: int = 3) -> Path:
    for i in range(n):
        red_photo(root / "brand" / f"p{i}.jpg", [(20 + 10 * i, 30, 90 + 10 * i, 100)], seed=i)
    return root


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


def test_a_refused_resume_rewrites_nothing_not_even_a_kills_leftovers(tmp_path):
    photos, out = _photos(tmp_path / "photos"), tmp_path / "crops"
    build_crops(photos, out, RedBlobDetector())
    images = (out / IMAGES_CSV).read_text().splitlines(keepends=True)
    (out / IMAGES_CSV).write_text("".join(images[:-1]))  # killed after the last image's crops, before its row
    before = _files(out)
    red_photo(photos / "brand" / "p0.jpg", [(0, 0, 50, 50)], seed=9)  # a finished photo replaced since
    os.utime(photos / "brand" / "p0.jpg", ns=(1, 1))
    with pytest.raises(InputsChangedError, match=r"brand/p0\.jpg"):
        build_crops(photos, out, RedBlobDetector(), resume=True)
    assert _files(out) == before  # the orphan crops.csv rows of the unfinished image are still there
    with pytest.raises(ResumeRefusedError, match=r"settings differ .*min_score"):
        build_crops(photos, out, RedBlobDetector(), resume=True, min_score=0.6)
    assert _files(out) == before


def test_a_settings_change_is_refused_as_both_error_kinds_callers_catch(tmp_path):
    photos, out = _photos(tmp_path / "photos", 1), tmp_path / "crops"
    build_crops(photos, out, RedBlobDetector())
    with pytest.raises(ResumeRefusedError) as caught:
        build_crops(photos, out, RedBlobDetector(), resume=True, min_score=0.6)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, OutputLocationError)


def test_a_broken_settings_file_is_a_clear_refusal(tmp_path):
    photos, out = _photos(tmp_path / "photos", 2), tmp_path / "crops"
    build_crops(photos, out, RedBlobDetector())
    (out / "build_crops.json").write_text('{"format_version": 1, "min_sc')  # torn by hand or a full disk
    before = _files(out)
    with pytest.raises(ResumeRefusedError, match=r"build_crops\.json is not valid JSON"):
        build_crops(photos, out, RedBlobDetector(), resume=True)
    assert _files(out) == before
    (out / "build_crops.json").unlink()  # results whose settings nobody knows
    before = _files(out)
    with pytest.raises(ResumeRefusedError, match=r"holds a crop dataset but no build_crops\.json"):
        build_crops(photos, out, RedBlobDetector(), resume=True)
    assert _files(out) == before


def test_an_unknown_engine_is_refused_before_any_folder_or_model(tmp_path):
    from pipelines.compose import DetectThenClassify
    from pipelines.labeling import label_folder

    photos = _photos(tmp_path / "photos", 1)
    with pytest.raises(ValueError, match="engine must be 'local' or 'ray'"):
        build_crops(photos, tmp_path / "crops", "no-such-preset", engine="spark")  # not "unknown preset"
    pipe = DetectThenClassify("no-such-preset", str(tmp_path / "no-model"))
    with pytest.raises(ValueError, match="engine must be 'local' or 'ray'"):
        label_folder(pipe, photos, tmp_path / "labels", engine="spark")
    assert "_loaded" not in pipe.__dict__
    assert not (tmp_path / "crops").exists() and not (tmp_path / "labels").exists()


def test_a_folder_held_by_a_run_refuses_another_at_once(tmp_path):
    photos, out = _photos(tmp_path / "photos", 1), tmp_path / "crops"
    detector = RedBlobDetector()
    with crop_output(photos, out) as job:
        assert job.out == out.resolve() and [e.rel for e in job.entries()] == ["brand/p0.jpg"]
        with pytest.raises(OutputBusyError):
            build_crops(photos, out, detector)
    assert detector.calls == 0 and not (out / IMAGES_CSV).exists()
    build_crops(photos, out, detector)  # released with the block
    assert (out / CROPS_CSV).exists()


def test_a_hand_edited_prediction_cell_names_its_row_and_column(tmp_path):
    from pipelines.results import read_results

    gt = ground_truth()
    rows = predictions(gt)
    out, _ = write_label_output(tmp_path, gt, rows)
    first_ok = next(i for i, r in enumerate(rows) if r[1] == "ok")
    rows[first_ok][5] = "twelve"
    (out / "predictions.csv").unlink()
    out.rmdir()
    out, _ = write_label_output(tmp_path, gt, rows)
    with pytest.raises(ValueError, match=rf"predictions row {first_ok + 2} .*the x1 cell 'twelve' is not a number"):
        read_results(out)
    proc = subprocess.run([sys.executable, "-m", "pipelines.export", "--predictions", str(out), "--format", "yolo"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "x1 cell 'twelve'" in proc.stderr
    assert not (out / "yolo").exists()


def test_an_edited_image_size_is_refused_as_a_value_error():
    from pipelines.results import COLUMNS, ImageResult

    row = dict.fromkeys(COLUMNS, "")
    for width in ("inf", "-3", "12.5", "nan"):
        row.update(image="a.jpg", status="no_detection", width=width, height="10")
        with pytest.raises(ValueError, match=rf"row 2 \(image 'a\.jpg'\): the width cell '{re.escape(width)}'"):
            ImageResult.from_rows([row])
