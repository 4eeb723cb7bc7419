"""build_crops and label on a hostile input folder: every entry accounted for once, nothing written outside the
output, the input untouched, no traceback; the run lock, model fingerprints on resume and crafted manifests."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from detectcrop.inputs import printable
from detectcrop.locks import OutputLock
from PIL import Image
from skimage import data

from classify import FineClassifier
from detectcrop import zoo
from pipelines import build_crops as build_crops_cli
from pipelines import label as label_cli

CATEGORIES = "person,cup"  # what the offline detector finds in the astronaut and coffee photos


def _save(path: Path | bytes, image: np.ndarray, fmt: str = "JPEG") -> None:
    buf = Path(os.fsdecode(path)) if isinstance(path, bytes) else path
    buf.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    """A photo folder holding every kind of awkward entry, inside a sandbox folder that must stay unchanged."""
    sandbox = tmp_path_factory.mktemp("sandbox")
    root = sandbox / "photos"
    astronaut, coffee = data.astronaut(), data.coffee()
    _save(root / "a" / "astronaut.jpg", astronaut)
    _save(root / "a" / "astronaut.png", astronaut[::2, ::2], "PNG")  # same stem as a sibling
    _save(root / "a" / "Astronaut.JPG", astronaut[::3, ::3])  # same stem, other case
    _save(root / "b" / "coffee.jpg", coffee)
    _save(root / "b" / ("c" * 242 + ".jpg"), coffee)  # a 246-byte name
    _save(root / "b" / "new\nline, \"quoted\".jpg", coffee)
    _save(root / "b" / "=HYPERLINK(1).jpg", coffee)
    _save(root / "b" / ".hidden.jpg", coffee[::2, ::2])
    _save(root / "images.csv" / "coffee.jpg", coffee)  # class folders named like the manifests
    _save(root / "crops.csv" / "coffee.jpg", coffee)
    _save(root / "wide.png", np.zeros((1, 100_000, 3), np.uint8), "PNG")  # too wide for a JPEG copy
    Image.new("P", (5000, 4000)).save(root / "big_palette.png")  # needs 80 MB to decode
    with open(os.path.join(os.fsencode(root / "b"), b"caf\xe9.jpg"), "wb") as f:  # a latin-1 name
        f.write((root / "b" / "coffee.jpg").read_bytes())
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("not an image")
    (root / "truncated.jpg").write_bytes((root / "b" / "coffee.jpg").read_bytes()[:2000])
    (root / "readme.txt").write_text("hello")
    os.mkfifo(root / "pipe.jpg")
    (root / "dangling.jpg").symlink_to(root / "missing.jpg")
    (root / "loop").symlink_to(root)
    (root / ".cache").mkdir()
    (root / ".cache" / "thumb.jpg").write_bytes(b"x")
    outside = sandbox / "outside.jpg"
    _save(outside, coffee[::2, ::2])
    (root / "link_out.jpg").symlink_to(outside)
    (sandbox / "victim.txt").write_text("must survive")
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A small classifier (two classes of real photo crops) with the offline backbone."""
    rng = np.random.default_rng(0)
    crops, labels = [], []
    for name, image in (("astronaut", data.astronaut()), ("coffee", data.coffee())):
        for _ in range(6):
            y, x = rng.integers(0, 100, 2)
            crops.append(np.ascontiguousarray(image[y : y + 300, x : x + 300]))
            labels.append(name)
    out = tmp_path_factory.mktemp("run")
    FineClassifier(zoo.OFFLINE_BACKBONE, epochs=5, augment_views=1, validation_fraction=0, fine_tune_blocks=0,
                   seed=0).fit(
        crops, labels).save(out / "model.keras")
    return out


def _entries(root: Path) -> list[str]:
    """What must be accounted for: every entry, hidden and symlinked folders once each, nothing under them."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for d in list(dirnames):
            p = Path(dirpath, d)
            if p.is_symlink() or d.startswith("."):
                out.append(printable(p.relative_to(root).as_posix()))
                dirnames.remove(d)
        out += [printable(Path(dirpath, f).relative_to(root).as_posix()) for f in filenames]
    return sorted(out)


def _snapshot(folder: Path, skip: Path) -> dict[str, str]:
    """Every entry under ``folder`` (outside ``skip``) with a checksum of regular files; FIFOs are never opened."""
    snap = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) != skip]
        for name in filenames + dirnames:
            p = Path(dirpath, name)
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
            snap[os.fsdecode(p)] = f"{st.st_mode}:{digest}"
    return snap


def _csv(path: Path) -> list[dict[str, str]]:
    from detectcrop.io import csv_unsafe

    with open(path, newline="", encoding="utf-8") as f:
        return [{k: csv_unsafe(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_build_crops_accounts_for_every_entry(hostile, tmp_path, capsys):
    sandbox = hostile.parent
    out = sandbox / "crops"
    before = _snapshot(sandbox, out)
    args = ["--input", str(hostile), "--output", str(out), "--detector", zoo.OFFLINE_DETECTOR, "--category",
            CATEGORIES, "--max-image-mb", "64", "--no-progress"]
    assert build_crops_cli.main(args) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err

    rows = _csv(out / "images.csv")
    assert sorted(r["path"] for r in rows) == _entries(hostile)  # every entry exactly once
    status = {r["path"]: r for r in rows}
    assert status["a/astronaut.jpg"]["status"] == "ok" and status["b/coffee.jpg"]["status"] == "ok"
    assert status["b/" + "c" * 242 + ".jpg"]["status"] == "ok"  # the long name got a shorter crop name
    assert status["b/new\nline, \"quoted\".jpg"]["status"] == "ok"
    assert status["b/.hidden.jpg"]["status"] in ("ok", "no_detection")
    assert status["link_out.jpg"]["status"] in ("ok", "no_detection")  # symlinked files are followed
    for rel, reason in [("pipe.jpg", "FIFO"), ("dangling.jpg", "broken symbolic link"), ("loop", "symbolic link"),
                        (".cache", "hidden folder"), ("b/caf\\xe9.jpg", "UTF-8"), ("empty.jpg", "empty"),
                        ("notes.jpg", "not a recognised image"), ("readme.txt", "not an image file type"),
                        ("truncated.jpg", "Corrupt"), ("big_palette.png", "MB to decode"),
                        ("images.csv/coffee.jpg", "reserved"), ("crops.csv/coffee.jpg", "reserved")]:
        assert status[rel]["status"] == "error" and reason in status[rel]["error"], (rel, status[rel])
    crops = _csv(out / "crops.csv")
    assert len({c["crop_path"] for c in crops}) == len(crops)  # no two crops share a file
    assert all((out / c["crop_path"]).is_file() for c in crops)
    assert {c["source_path"] for c in crops} >= {"a/astronaut.jpg", "a/astronaut.png", "a/Astronaut.JPG"}
    assert all(len(Path(c["crop_path"]).name.encode()) < 255 for c in crops)
    assert _snapshot(sandbox, out) == before  # the input and its neighbours untouched, nothing written outside

    # Resume on a finished run changes nothing; a crafted manifest row cannot delete outside the output.
    snap = _snapshot(out, out / "__none__")
    assert build_crops_cli.main([*args, "--resume"]) == 0
    assert _snapshot(out, out / "__none__") == snap
    with open(out / "crops.csv", "a", encoding="utf-8") as f:
        f.write("../victim.txt,a/astronaut.jpg,a,0,0,1,1,0.9,0000000000000000,,0\n")
    assert build_crops_cli.main([*args, "--resume"]) == 2
    assert "outside the output folder" in capsys.readouterr().err
    assert (sandbox / "victim.txt").read_text() == "must survive"


def test_label_accounts_for_every_entry_and_annotates_safely(hostile, model_dir, capsys, caplog):
    sandbox = hostile.parent
    out = sandbox / "labels"
    before = _snapshot(sandbox, out)
    args = ["--input", str(hostile), "--model", str(model_dir), "--output", str(out), "--detector",
            zoo.OFFLINE_DETECTOR, "--category", CATEGORIES, "--annotate", "--max-image-mb", "64", "--no-progress"]
    assert label_cli.main(args) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    (captured.out + captured.err + caplog.text).encode("utf-8")  # printable: undecodable name bytes shown as \xNN
    rows = _csv(out / "predictions.csv")
    images = {}
    for r in rows:
        images.setdefault(r["image"], r)
    assert sorted(images) == _entries(hostile)
    assert images["b/coffee.jpg"]["label"] in ("astronaut", "coffee")
    assert images["wide.png"]["status"] in ("ok", "no_detection")
    annotated = sorted(p.relative_to(out / "annotated").as_posix() for p in (out / "annotated").rglob("*.jpg"))
    assert len(annotated) == sum(1 for r in images.values() if r["status"] != "error")
    assert Image.open(out / "annotated" / "wide.jpg").size[0] <= 65500  # scaled to fit JPEG
    assert _snapshot(sandbox, out) == before

    # The annotated copies cannot be labeled into the folder that holds them.
    again = ["--input", str(out / "annotated"), "--model", str(model_dir), "--output", str(out), "--annotate",
             "--detector", zoo.OFFLINE_DETECTOR, "--resume"]
    assert label_cli.main(again) == 2
    assert "must not be inside the output folder" in capsys.readouterr().err


def test_label_resume_refuses_a_retrained_model(hostile, model_dir, tmp_path, capsys):
    photos = tmp_path / "photos"
    shutil.copytree(hostile / "a", photos)
    run = tmp_path / "run"
    shutil.copytree(model_dir, run)
    args = ["--input", str(photos), "--model", str(run), "--output", str(tmp_path / "out"), "--detector",
            zoo.OFFLINE_DETECTOR, "--category", CATEGORIES, "--no-progress"]
    assert label_cli.main(args) == 0
    assert label_cli.main([*args, "--resume"]) == 0  # same model: resumes (nothing left to do)
    with open(run / "model.keras", "ab") as f:
        f.write(b"\0")  # the model file changed in place (a retrained model would)
    capsys.readouterr()
    assert label_cli.main([*args, "--resume"]) == 2
    assert "classifier model changed" in capsys.readouterr().err


def test_a_second_run_on_the_same_output_is_refused(hostile, model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out, "someone else"):
        args = ["--input", str(hostile / "a"), "--output", str(out), "--detector", zoo.OFFLINE_DETECTOR]
        pid = os.getpid()
        # the holder is another process, as it would be
        import subprocess
        import sys

        proc = subprocess.run([sys.executable, "-m", "pipelines.build_crops", *args], capture_output=True,
                              text=True, check=False, cwd=Path(__file__).parents[1])
        assert proc.returncode == 2, proc.stderr
        assert f"in use by another run (pid {pid}" in proc.stderr and "someone else" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (out / "images.csv").exists()


def test_a_second_train_fine_on_the_same_run_folder_is_refused(tmp_path, capsys):
    import subprocess
    import sys
    import textwrap

    from pipelines import train_fine

    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from detectcrop.locks import OutputLock
        OutputLock.beside({str(run)!r}, 'train_fine').acquire()
        print('held', flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    try:
        assert holder.stdout.readline().strip() == "held"
        assert train_fine.main(["--data", str(tmp_path / "nothing"), "--output", str(run)]) == 2
        err = capsys.readouterr().err
        assert f"in use by another run (pid {holder.pid}" in err and "train_fine" in err
    finally:
        holder.kill()
        holder.wait()
    assert not run.exists()


def test_label_never_writes_through_a_link_or_over_files_it_did_not_write(hostile, tmp_path, capsys):
    photos = tmp_path / "photos"
    shutil.copytree(hostile / "a", photos)
    before = _snapshot(photos, tmp_path / "none")
    base = ["--input", str(photos), "--model", str(tmp_path / "no-model-needed"), "--detector", zoo.OFFLINE_DETECTOR]
    out = tmp_path / "out"
    out.mkdir()
    (out / "annotated").symlink_to(photos)  # annotated copies would land on the photos themselves
    (tmp_path / "no-model-needed").mkdir()
    (tmp_path / "no-model-needed" / "model.keras").write_bytes(b"")  # every check below comes before loading it
    assert label_cli.main([*base, "--output", str(out), "--annotate"]) == 2
    assert "is a link or a file" in capsys.readouterr().err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.html").write_text("my own report")
    assert label_cli.main([*base, "--output", str(mine)]) == 2
    assert "no label run" in capsys.readouterr().err and (mine / "report.html").read_text() == "my own report"
    single = ["--input", str(photos / "astronaut.jpg"), *base[2:]]
    assert label_cli.main([*single, "--output", str(photos)]) == 2  # the photo's own folder
    assert "must not be inside the output folder" in capsys.readouterr().err
    assert label_cli.main([*base, "--output", str(tmp_path / "o"), "--runtime", "tf", "--precision", "int8"]) == 2
    assert "applies on LiteRT" in capsys.readouterr().err
    assert _snapshot(photos, tmp_path / "none") == before


def test_label_resume_removes_torn_temporaries_and_compares_what_matters(hostile, model_dir, tmp_path, capsys):
    photos = tmp_path / "photos"
    shutil.copytree(hostile / "a", photos)
    out = tmp_path / "out"
    base = ["--input", str(photos), "--output", str(out), "--detector", zoo.OFFLINE_DETECTOR, "--category",
            CATEGORIES, "--annotate", "--no-progress"]
    assert label_cli.main([*base, "--model", str(model_dir), "--max-image-mb", "64"]) == 0
    first = (out / "predictions.csv").read_bytes()
    (out / ".w1x2y3z4.tmp").write_bytes(b"half a label_config.json")  # a kill inside an atomic write
    (out / "annotated" / ".w5x6y7z8.tmp").write_bytes(b"half a JPEG")
    # the same model spelled another way (its file, not its folder): the same fingerprint, so it resumes
    again = [*base, "--model", str(model_dir / "model.keras"), "--max-image-mb", "64", "--resume"]
    assert label_cli.main(again) == 0
    assert (out / "predictions.csv").read_bytes() == first
    assert not list(out.rglob("*.tmp"))
    capsys.readouterr()
    assert label_cli.main([*base, "--model", str(model_dir), "--max-image-mb", "32", "--resume"]) == 2
    assert "max_image_bytes" in capsys.readouterr().err
    # a run recorded by an earlier version (no decode limit in its config) resumes: what it lacks is not compared
    config = json.loads((out / "label_config.json").read_text())
    del config["max_image_bytes"]
    (out / "label_config.json").write_text(json.dumps(config))
    assert label_cli.main([*base, "--model", str(model_dir), "--max-image-mb", "64", "--resume"]) == 0
    assert (out / "predictions.csv").read_bytes() == first


def test_annotated_copy_names_never_collide_with_a_folder_of_copies():
    from pipelines.labeling import annotated_names

    names = annotated_names(["a.png", "a.jpg/b.jpg", "A.JPG/c.png", "x/y.jpg", "x.png"])
    assert names["a.jpg/b.jpg"] == "a.jpg/b.jpg" and names["x.png"] == "x.jpg" and names["x/y.jpg"] == "x/y.jpg"
    assert names["a.png"] not in ("a.jpg", "A.JPG") and names["a.png"].endswith(".jpg")
    assert len(set(names.values())) == len(names)


def test_resume_compares_what_an_earlier_version_recorded_and_runtime_auto_as_resolved(tmp_path):
    from detectcrop.litert import resolve_runtime

    from detectcrop.io import CsvManifest, OutputLocationError
    from pipelines.labeling import CONFIG_JSON, RESUME_RULES, PredictionLedger, label_output
    from pipelines.predictions import COLUMNS, PREDICTIONS_CSV

    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    out.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (photos / name).write_bytes(b"not read here")
    manifest = CsvManifest(out / PREDICTIONS_CSV, COLUMNS).open()
    manifest.append([["a.jpg", "no_detection", 10, 10, *[""] * 11], ["b.jpg", "no_detection", 10, 10, *[""] * 11]])
    earlier = {"input": "/photos", "runtime": "auto", "classifier": "run",
               "fingerprints": {"detector": "d", "classifier": "c"}}  # no decode limit, no int8 representative data
    (out / CONFIG_JSON).write_text(json.dumps(earlier))
    now = {"input": "/photos", "runtime": resolve_runtime("auto"), "classifier": "/elsewhere/run/model.keras",
           "max_image_bytes": 123,
           "fingerprints": {"detector": "d", "classifier": "c", "classifier_representative_data": "x"}}
    with label_output(photos, out) as job:
        todo = job.start(now, PredictionLedger(out), resume=True, rules=RESUME_RULES)
    assert [e.rel for e in todo] == ["b.jpg"]  # the last image is redone: a kill may have torn its rows
    assert [r["image"] for r in manifest.rows()] == ["a.jpg"]
    (out / CONFIG_JSON).write_text(json.dumps({**now, "fingerprints": {**now["fingerprints"],
                                                                       "classifier_calibration": "y"}}))
    before = (out / PREDICTIONS_CSV).read_bytes()
    with label_output(photos, out) as job, pytest.raises(
            OutputLocationError, match="classifier_representative_data model changed"):
        job.start(now, PredictionLedger(out), resume=True, rules=RESUME_RULES)
    assert (out / PREDICTIONS_CSV).read_bytes() == before  # a refused resume rewrites nothing
