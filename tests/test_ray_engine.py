"""The Ray engine (local Ray, 2 CPUs): the same outputs as the local engine, a killed driver resumed, killed actors
survived, a file that keeps killing its worker reported as an error row. label on Ray (annotated copies included) is
compared with the local engine on a real two-node cluster in test_ray_cluster.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from ray_testdata import csv_rows, odd_photos, tree  # noqa: E402

from detectcrop import zoo  # noqa: E402
from detectcrop.dataset import build_crops  # noqa: E402
from detectcrop.ray_engine import RayOptions  # noqa: E402
from pipelines import build_crops as crops_cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OPTIONS = RayOptions(actors=2, batch_size=2)
RAY_ARGS = ["--engine", "ray", "--actors", "2", "--batch-per-actor", "2", "--no-progress"]


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module (2 CPUs, as on CI)."""
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return odd_photos(tmp_path_factory.mktemp("watches"), photos_per_brand=5, scenes=3, seed=11)


@pytest.fixture(scope="module")
def local_crops(photos, detector, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "crops"
    build_crops(photos, out, detector, category="clock")
    return out


def test_build_crops_on_ray_is_byte_identical(ray_session, photos, local_crops, detector, tmp_path):
    out = tmp_path / "crops"
    summary = build_crops(photos, out, detector, category="clock", engine="ray", ray=OPTIONS)
    assert summary.n_crops > 5 and summary.n_error == 4
    assert tree(out) == tree(local_crops)  # crops, images.csv, crops.csv, build_crops.json


class _Killer:
    """A detector that kills its own worker process: once on ``once`` images (a marker file says it happened) and
    every time on ``always`` images. Images are recognised by their mean pixel value."""

    def __init__(self, once: float, always: float, marker: str) -> None:
        self.once, self.always, self.marker = once, always, marker
        self.name = "killer"
        self._detector = None

    def detect(self, image, *, min_score=None):
        mean = round(float(image.mean()), 3)
        if mean == self.always or (mean == self.once and not os.path.exists(self.marker)):
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        if self._detector is None:
            from detectcrop import Detector

            self._detector = Detector.from_preset(zoo.OFFLINE_DETECTOR)
        return self._detector.detect(image, min_score=min_score)


def test_killed_actors_are_survived_and_a_poison_file_becomes_an_error_row(ray_session, photos, local_crops,
                                                                            tmp_path):
    from detectcrop.images import read_image

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    files = sorted(p for p in photos.rglob("*.jpg") if p.stat().st_size > 3000 and "scenes" not in p.parts)
    once, always = (round(float(read_image(p).mean()), 3) for p in (files[1], files[3]))
    killer = _Killer(once, always, str(tmp_path / "died-once"))
    out = tmp_path / "crops"
    build_crops(photos, out, killer, category="clock", engine="ray", ray=RayOptions(actors=2, batch_size=2,
                                                                                    max_attempts=2))
    assert (tmp_path / "died-once").exists()  # a worker was killed
    rows = {r["path"]: r for r in csv_rows(out / "images.csv")}
    reference = {r["path"]: r for r in csv_rows(local_crops / "images.csv")}
    poison = files[3].relative_to(photos).as_posix()
    assert rows[poison]["status"] == "error" and "WorkerDied" in rows[poison]["error"]
    assert len(csv_rows(out / "images.csv")) == len(reference)  # nothing lost, nothing doubled
    del rows[poison], reference[poison]
    assert rows == reference
    expected = [r for r in csv_rows(local_crops / "crops.csv") if r["source_path"] != poison]
    got = csv_rows(out / "crops.csv")
    assert [(r["crop_path"], r["x1"], r["score"]) for r in got] == [(r["crop_path"], r["x1"], r["score"])
                                                                     for r in expected]


def test_killed_driver_resumes_to_the_same_bytes(photos, local_crops, tmp_path):
    out = tmp_path / "crops"
    args = ["--input", str(photos), "--output", str(out), "--detector", zoo.OFFLINE_DETECTOR, *RAY_ARGS]
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.build_crops", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            images = out / "images.csv"
            if images.exists() and images.read_text(encoding="utf-8").count("\n") >= 4:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)  # the driver only
        proc.wait()
    finally:
        time.sleep(1)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # then whatever of its local Ray is left
        except ProcessLookupError:
            pass
    n_done = csv_rows(out / "images.csv")
    assert 3 <= len(n_done) < len(csv_rows(local_crops / "images.csv"))
    assert crops_cli.main([*args, "--resume", "--engine", "local"]) == 0  # resumable by either engine
    assert tree(out) == tree(local_crops)


def test_engine_ray_without_ray_is_one_clear_line(monkeypatch, photos, tmp_path, capsys):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    args = ["--input", str(photos), "--output", str(tmp_path / "o"), "--detector", zoo.OFFLINE_DETECTOR, *RAY_ARGS]
    assert crops_cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "pip install 'detectcrop[ray]'" in err


def test_actor_ranges_parse():
    assert RayOptions.parse_actors("3") == 3 and RayOptions.parse_actors("1,4") == (1, 4)
    with pytest.raises(ValueError):
        RayOptions(actors=(3, 1))
    with pytest.raises(ValueError):
        RayOptions.parse_actors("a,b")
    assert np.all(RayOptions(actors=(1, 4)).pool_size == (1, 4))


def test_an_actor_sizes_its_threads_without_importing_tensorflow():
    """A LiteRT actor stays TensorFlow-free: its share of the cores goes to OpenCV, OpenMP, the interpreters and (if it
    is loaded later) TensorFlow through the environment."""
    code = ("import os, sys\n"
            "from detectcrop.ray_engine import limit_threads\n"
            "from detectcrop.litert import default_threads\n"
            "limit_threads(1)\n"
            "import cv2\n"
            "print('tensorflow' in sys.modules, default_threads(), cv2.getNumThreads(),\n"
            "      os.environ['TF_NUM_INTRAOP_THREADS'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1], env={**os.environ, "DETECTCROP_NUM_THREADS": ""})
    assert out.stdout.split() == ["False", "1", "1", "1"]


def test_the_ray_engine_prints_none_of_rays_own_log_lines(tmp_path):
    from detectcrop.ray_engine import is_ray_log_line
    from pipelines.synthetic import generate

    generate(tmp_path / "w", brands=1, photos_per_brand=3, scenes=0, seed=1)
    proc = subprocess.run([sys.executable, "-m", "pipelines.build_crops", "--input", str(tmp_path / "w" / "photos"),
                           "--output", str(tmp_path / "crops"), "--detector", zoo.OFFLINE_DETECTOR, "--engine", "ray",
                           "--actors", "2", "--no-progress", "--log-level", "WARNING"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr  # e.g. no "[... E ...] core_worker.cc:...: Actor ... has constructor ..."
    assert is_ray_log_line("[2026-12-07 07:55:19,088 E 31837 31837] core_worker.cc:2465: Actor with class name")
