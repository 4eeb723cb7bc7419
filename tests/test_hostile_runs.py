"""Hostile runs: inputs replaced between a run and --resume, a model cache path that is a file, output folders with
spaces and newlines in their names. Each is refused in one line or works, and nothing is lost."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from detectcrop.input_stamps import STAMPS_JSON, InputsChangedError

from detectcrop import cache, zoo
from detectcrop.dataset import build_crops
from pipelines import build_crops as crops_cli
from pipelines import label as label_cli

REPO = Path(__file__).resolve().parents[1]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    from pipelines.synthetic import generate

    gen = tmp_path_factory.mktemp("watches")
    generate(gen, brands=2, photos_per_brand=3, scenes=0, seed=3)
    return gen / "photos"


@pytest.fixture
def own_photos(photos, tmp_path) -> Path:
    """A copy of the photos this test may change."""
    return Path(shutil.copytree(photos, tmp_path / "photos"))


def test_build_crops_resume_refuses_a_photo_replaced_since_it_was_processed(own_photos, detector, tmp_path):
    out = tmp_path / "crops"
    build_crops(own_photos, out, detector, category="clock")
    unchanged = _tree(out)
    build_crops(own_photos, out, detector, category="clock", resume=True)  # nothing changed: nothing redone
    assert _tree(out) == unchanged
    a, b = sorted(own_photos.rglob("*.jpg"))[:2]
    a.write_bytes(b.read_bytes())  # another picture under a finished photo's name
    with pytest.raises(InputsChangedError, match=a.relative_to(own_photos).as_posix()):
        build_crops(own_photos, out, detector, category="clock", resume=True)
    assert _tree(out) == unchanged  # the refused resume wrote nothing


def test_label_resume_refuses_a_photo_replaced_since_it_was_labeled(own_photos, fitted, tmp_path, capsys):
    run = tmp_path / "run"
    fitted[0].save(run / "model.keras")
    args = ["--input", str(own_photos), "--model", str(run), "--output", str(tmp_path / "labels"), "--detector",
            zoo.OFFLINE_DETECTOR, "--no-progress"]
    assert label_cli.main(args) == 0
    before = _tree(tmp_path / "labels")
    (own_photos / "aurel" / "new.jpg").write_bytes(next(own_photos.rglob("*.jpg")).read_bytes())  # a new file is fine
    victim = sorted(own_photos.rglob("*.jpg"))[0]  # not the last one: a resume redoes that anyway
    os.utime(victim, ns=(victim.stat().st_atime_ns, victim.stat().st_mtime_ns + 10**9))  # touched: same bytes, new time
    capsys.readouterr()
    assert label_cli.main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "changed since they were processed" in err
    assert victim.relative_to(own_photos).as_posix() in err
    assert _tree(tmp_path / "labels") == before


def test_outputs_from_before_input_stamps_still_resume(own_photos, detector, tmp_path):
    out = tmp_path / "crops"
    build_crops(own_photos, out, detector, category="clock")
    (out / STAMPS_JSON).unlink()  # an output written by an earlier version
    build_crops(own_photos, out, detector, category="clock", resume=True)
    assert (out / STAMPS_JSON).is_file()


def test_output_folders_with_spaces_and_newlines_in_their_names(photos, detector, tmp_path):
    plain, odd = tmp_path / "plain", tmp_path / "out put\nsecond line"
    build_crops(photos, plain, detector, category="clock")
    assert crops_cli.main(["--input", str(photos), "--output", str(odd), "--detector", zoo.OFFLINE_DETECTOR,
                           "--no-progress"]) == 0
    assert _tree(odd) == _tree(plain)


def test_a_model_cache_path_that_is_a_file_is_one_line(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.write_text("not a folder")
    monkeypatch.setenv("DETECTCROP_HOME", str(home))
    with pytest.raises(NotADirectoryError, match="DETECTCROP_HOME"):
        cache.home_dir()
    for cmd in (["-m", "detectcrop.zoo", "list"], ["-m", "pipelines.console", "zoo", "fetch", "--offline"]):
        proc = subprocess.run([sys.executable, *cmd], cwd=REPO, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "DETECTCROP_HOME": str(home)})
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith("error: DETECTCROP_HOME") and "is a file" in proc.stderr
    assert home.read_text() == "not a folder"


@pytest.fixture
def small_disk(tmp_path):
    """A 40 KB tmpfs (needs root and mount; skipped elsewhere), grown with ``grow()``."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=40k", "tmpfs", str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")

    def grow() -> None:
        subprocess.run(["mount", "-o", "remount,size=8m", str(mnt)], check=True)

    try:
        yield mnt, grow
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1
    return err[0]


def test_a_full_disk_stops_build_crops_and_resume_finishes_it(photos, detector, small_disk, tmp_path, capsys):
    disk, grow = small_disk
    reference = tmp_path / "reference"
    build_crops(photos, reference, detector, category="clock")
    args = ["--input", str(photos), "--output", str(disk / "crops"), "--detector", zoo.OFFLINE_DETECTOR,
            "--no-progress"]
    assert crops_cli.main(args) == 2  # not one "error" row per photo: the disk is full, not the photos broken
    line = _one_error_line(capsys)
    assert "No space left on device" in line and "--resume" in line
    grow()
    assert crops_cli.main([*args, "--resume"]) == 0
    assert _tree(disk / "crops") == _tree(reference)


def test_a_full_disk_stops_label_and_resume_finishes_it(photos, fitted, small_disk, tmp_path, capsys):
    disk, grow = small_disk
    run = tmp_path / "run"
    fitted[0].save(run / "model.keras")
    common = ["--input", str(photos), "--model", str(run), "--detector", zoo.OFFLINE_DETECTOR, "--annotate",
              "--no-progress"]
    assert label_cli.main([*common, "--output", str(tmp_path / "reference")]) == 0
    capsys.readouterr()
    assert label_cli.main([*common, "--output", str(disk / "labels")]) == 2
    assert "No space left on device" in _one_error_line(capsys)
    grow()
    assert label_cli.main([*common, "--output", str(disk / "labels"), "--resume"]) == 0
    got, want = _tree(disk / "labels"), _tree(tmp_path / "reference")
    volatile = {"summary.json", "report.html"}  # timings
    assert {k: v for k, v in got.items() if k not in volatile} == {k: v for k, v in want.items() if k not in volatile}


def test_a_full_disk_stops_build_crops_on_ray_in_one_line(photos, detector, small_disk, tmp_path, capsys):
    pytest.importorskip("ray")
    disk, grow = small_disk
    reference = tmp_path / "reference"
    build_crops(photos, reference, detector, category="clock")
    args = ["--input", str(photos), "--output", str(disk / "crops"), "--detector", zoo.OFFLINE_DETECTOR,
            "--no-progress"]
    proc = subprocess.run([sys.executable, "-m", "pipelines.build_crops", *args, "--engine", "ray", "--actors", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert "No space left on device" in line and "--resume" in line
    grow()
    assert crops_cli.main([*args, "--resume"]) == 0  # resumed by the local engine
    assert _tree(disk / "crops") == _tree(reference)


def test_a_read_only_output_is_one_line_before_any_model_loads(photos, small_disk, tmp_path, capsys):
    disk, _ = small_disk
    (disk / "out").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)  # root writes through permissions, not this
    assert crops_cli.main(["--input", str(photos), "--output", str(disk / "out"), "--detector",
                           "no-such-detector-is-loaded", "--no-progress"]) == 2
    assert "Read-only file system" in _one_error_line(capsys)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").write_bytes(b"")  # never read: the output is checked first
    assert label_cli.main(["--input", str(photos), "--output", str(disk / "out"), "--model", str(tmp_path / "run"),
                           "--no-progress"]) == 2
    assert "Read-only file system" in _one_error_line(capsys)
    assert list((disk / "out").iterdir()) == []
