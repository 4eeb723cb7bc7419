"""The built wheel works outside the checkout: every subpackage is in it, the lock satisfies its requirements, and
the commands run from a fresh virtual environment holding it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _packages_in_checkout() -> set[str]:
    return {str(p.parent.relative_to(ROOT)).replace(os.sep, ".")
            for top in ("detectcrop", "classify", "pipelines") for p in (ROOT / top).rglob("__init__.py")}


def test_the_wheel_holds_every_package_and_runs_outside_the_checkout(tmp_path):
    src = tmp_path / "src"  # a copy: the build writes no build/ folder into the checkout, takes no stale one
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    for top in ("detectcrop", "classify", "pipelines"):
        shutil.copytree(ROOT / top, src / top, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path / "dist"),
                    str(src)], check=True)
    (wheel,) = (tmp_path / "dist").glob("detectcrop-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        in_wheel = {n.rsplit("/", 1)[0].replace("/", ".") for n in zf.namelist() if n.endswith("/__init__.py")}
    assert in_wheel == _packages_in_checkout()

    with zipfile.ZipFile(wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(zf.read(meta).decode())
    _check_lock_satisfies(metadata.get_all("Requires-Dist"), extras={"synthetic", "ray", "eval", "litert", "heic"})

    # A fresh venv holding the wheel alone; its dependencies are the locked set this checkout's environment was
    # installed with (a path entry, not its .pth files: the checkout's editable install stays out).
    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", str(fresh)], check=True)
    python = fresh / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)], check=True)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "locked_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def run(*cmd: str) -> str:
        proc = subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    where = run(str(python), "-c", "import detectcrop, classify, pipelines, pipelines.synthetic as s; "
                "import detectcrop.runtime, detectcrop.zoo, detectcrop.io, pipelines.cli; print(s.__file__)")
    assert Path(where.strip()).is_relative_to(site)  # the wheel's copy, not the checkout's
    detectcrop = str(fresh / "bin" / "detectcrop")
    assert "make-watches" in run(detectcrop, "--help")
    run(detectcrop, "make-watches", str(elsewhere / "w"), "--brands", "2", "--photos-per-brand", "1", "--quiet")
    assert len(list((elsewhere / "w" / "photos").rglob("*.jpg"))) == 2
    # the documented module paths run from the wheel too (old ones through the aliases)
    assert "--input" in run(str(python), "-m", "pipelines.build_crops", "--help")
    assert "--data" in run(str(python), "-m", "pipelines.train_fine", "--help")
    assert "centernet_mobilenetv3_512" in run(str(python), "-m", "detectcrop.zoo", "list")


def _check_lock_satisfies(requires: list[str], extras: set[str]) -> None:
    """Every requirement of the wheel (with ``extras``) is pinned in requirements/lock.txt at a version it accepts."""
    pins = {}
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    checked = 0
    for text in requires:
        req = Requirement(text)
        if req.marker is not None and not any(req.marker.evaluate({**default_environment(), "extra": e})
                                               for e in ("", *extras)):
            continue
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{req} is not in requirements/lock.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"lock pins {name}=={pins[name]}; wheel: {req}"
        checked += 1
    assert checked >= 10  # the core dependencies at least
