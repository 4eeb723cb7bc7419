"""The built wheel works outside the checkout: every subpackage is in it, the commands run from it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

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

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site),
                    str(wheel)], check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}

    def run(*cmd: str) -> str:
        proc = subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    where = run(sys.executable, "-c", "import detectcrop, classify, pipelines, pipelines.synthetic as s; "
                "print(s.__file__)")
    assert Path(where.strip()).is_relative_to(site)  # the wheel's copy, not the checkout's
    assert "make-watches" in run(str(site / "bin" / "detectcrop"), "--help")
    run(str(site / "bin" / "detectcrop"), "make-watches", str(elsewhere / "w"), "--brands", "2",
        "--photos-per-brand", "1", "--quiet")
    assert len(list((elsewhere / "w" / "photos").rglob("*.jpg"))) == 2
