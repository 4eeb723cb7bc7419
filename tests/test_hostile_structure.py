"""Hostile cases on the package structure and the runtime vocabulary: old module paths and flags, precisions a stage
does not offer, run folders and outputs written by earlier versions, and photos that change while a run reads them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detectcrop import zoo
from detectcrop.dataset import build_crops
from detectcrop.io import images as io_images
from detectcrop.io import read_csv
from detectcrop.io.stamps import InputsChangedError

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_old_module_paths_are_the_new_modules_and_name_them_when_they_warn():
    code = """
import warnings
warnings.simplefilter("error", DeprecationWarning)
import pipelines.build_crops, pipelines.cli.build_crops as new   # an entry point: silent
assert pipelines.build_crops is new
try:
    import detectcrop.litert
except DeprecationWarning as w:
    print(w)
warnings.simplefilter("ignore", DeprecationWarning)
import detectcrop.images, detectcrop.io.images
assert detectcrop.images is detectcrop.io.images
detectcrop.images.SEEN = 1
assert detectcrop.io.images.SEEN == 1              # one module under two names
from detectcrop.litert import LiteRTDetector, resolve_runtime
from detectcrop.runtime.detector import LiteRTDetector as same
assert LiteRTDetector is same
"""
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "detectcrop.litert moved to detectcrop.runtime; import it from there"


@pytest.mark.parametrize("module", ["pipelines.build_crops", "pipelines.label", "pipelines.train_fine",
                                    "pipelines.evaluate", "pipelines.export", "detectcrop.zoo"])
def test_the_documented_module_commands_run_without_a_warning(module):
    proc = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-m", module, "--help"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:") and "Warning" not in proc.stderr


def test_the_old_int8_flag_still_sets_the_representative_data(capsys):
    from pipelines.cli import label

    parser = label.get_args_parser()
    base = ["--input", "in", "--model", "m", "--output", "out"]
    old = parser.parse_args([*base, "--detector-calibration", "photos"])
    new = parser.parse_args([*base, "--detector-representative-data", "photos"])
    assert old.detector_representative_data == new.detector_representative_data == "photos"
    assert "--detector-calibration" not in parser.format_help()  # hidden: the help speaks one vocabulary


def test_a_precision_a_stage_does_not_offer_is_one_clear_error(capsys):
    from detectcrop.runtime import check_precision, detector_flatbuffer
    from pipelines.cli import build_crops as crops_cli

    with pytest.raises(ValueError, match="detector must be one of float, int8, auto, got 'dynamic'"):
        detector_flatbuffer("no-such-model", "dynamic")  # refused before anything is read
    with pytest.raises(ValueError, match="float, dynamic, int8, auto"):
        check_precision("fp16")
    with pytest.raises(SystemExit) as exit_:
        crops_cli.main(["--input", "in", "--output", "out", "--detector-precision", "dynamic"])
    assert exit_.value.code == 2 and "invalid choice: 'dynamic'" in capsys.readouterr().err


def test_run_folders_of_earlier_versions_keep_their_representative_crops(tmp_path):
    from detectcrop.runtime import exported_path, representative_file, save_representative_data

    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"weights")
    with pytest.raises(FileNotFoundError, match="save_representative_data"):
        exported_path(run, "int8")
    crops = np.full((3, 8, 8, 3), 90, np.uint8)
    written = save_representative_data(run, crops, crops[:1], (8, 8))
    assert written.name == "representative.npz" and representative_file(run) == written
    new_name = exported_path(run, "int8")
    written.rename(run / "calibration.npz")  # a run folder written before the file had its name
    assert representative_file(run) == run / "calibration.npz"
    assert exported_path(run, "int8") == new_name  # the same crops: the same export
    with np.load(representative_file(run)) as npz:
        assert npz["calibration"].shape == (3, 8, 8, 3) and npz["heldout"].shape == (1, 8, 8, 3)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    from pipelines.synthetic import generate

    gen = tmp_path_factory.mktemp("watches")
    generate(gen, brands=2, photos_per_brand=5, scenes=0, seed=5)
    return gen / "photos"


def test_photos_changing_while_build_crops_reads_them_are_each_accounted_for(photos, detector, tmp_path,
                                                                             monkeypatch):
    own = Path(shutil.copytree(photos, tmp_path / "photos"))
    names = sorted(p.relative_to(own).as_posix() for p in own.rglob("*.jpg"))
    deleted, truncated, added = own / names[-1], own / names[-2], own / names[0].split("/")[0] / "late.jpg"
    real = io_images._check_entry
    seen: list[str] = []

    def check(path: Path) -> int:  # while the third photo is read, the last two change and a new one appears
        seen.append(Path(path).name)
        if len(seen) == 3:
            deleted.unlink()
            truncated.write_bytes(truncated.read_bytes()[:500])
            shutil.copy2(own / names[0], added)
        return real(path)

    monkeypatch.setattr(io_images, "_check_entry", check)
    out = tmp_path / "crops"
    build_crops(own, out, detector, category="clock", workers=1, prefetch=1)
    header, rows = read_csv(out / "images.csv")
    status = {r[header.index("path")]: (r[header.index("status")], r[header.index("error")]) for r in rows}
    assert sorted(status) == names  # every photo listed at the start, once; the late one belongs to a later run
    assert status[names[-1]][0] == "error" and "cannot access" in status[names[-1]][1]
    assert status[names[-2]][0] == "error" and "truncated" in status[names[-2]][1].lower()
    assert all(s != "error" for name, (s, _) in status.items() if name not in names[-2:])
    monkeypatch.setattr(io_images, "_check_entry", real)
    # a resume sees the changed photos (their rows describe files that are gone) and refuses, naming them
    with pytest.raises(InputsChangedError, match=names[-2]):
        build_crops(own, out, detector, category="clock", resume=True)
    shutil.copy2(photos / names[-1], deleted)
    shutil.copy2(photos / names[-2], truncated)
    fresh = tmp_path / "again"
    build_crops(own, fresh, detector, category="clock")  # a new output takes every file as it is now
    header, rows = read_csv(fresh / "images.csv")
    assert {r[header.index("path")] for r in rows} == {*names, added.relative_to(own).as_posix()}
    assert all(r[header.index("status")] != "error" for r in rows)


def test_label_resumes_an_output_whose_settings_were_recorded_under_their_earlier_names(photos, fitted, tmp_path):
    from pipelines.cli import label as label_cli

    run = tmp_path / "run"
    fitted[0].save(run / "model.keras")
    out = tmp_path / "labels"
    args = ["--input", str(photos), "--model", str(run), "--output", str(out), "--detector", zoo.OFFLINE_DETECTOR,
            "--no-progress"]
    assert label_cli.main(args) == 0
    predictions = (out / "predictions.csv").read_bytes()
    config = json.loads((out / "label_config.json").read_text())
    config["detector_calibration"] = config.pop("detector_representative_data")  # as an earlier version wrote it
    (out / "label_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    assert label_cli.main([*args, "--resume"]) == 0
    assert (out / "predictions.csv").read_bytes() == predictions
    config["detector_precision"] = "int8"  # a setting that did change is still refused
    (out / "label_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    assert label_cli.main([*args, "--resume"]) == 2
