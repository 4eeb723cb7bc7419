"""Shared by the Ray tests: a photo folder with odd files, and readers of output folders."""

from __future__ import annotations

import csv
import os
from pathlib import Path


def odd_photos(gen: Path, *, photos_per_brand: int, scenes: int, seed: int) -> Path:
    """Synthetic watch photos of 2 brands in brand folders, the scenes in ``scenes/``, and an empty, a truncated, a
    non-image file and a FIFO; returns the photo folder."""
    from pipelines.synthetic import generate

    generate(gen, brands=2, photos_per_brand=photos_per_brand, scenes=scenes, seed=seed)
    root = gen / "photos"
    (root / "scenes").mkdir()
    for p in sorted((gen / "scenes").glob("*.jpg")):
        p.rename(root / "scenes" / p.name)
    first = next(iter(sorted(root.rglob("*.jpg"))))
    (root / "empty.jpg").write_bytes(b"")
    (root / "truncated.jpg").write_bytes(first.read_bytes()[:3000])
    (root / "notes.txt").write_text("not a photo")
    os.mkfifo(root / "pipe.jpg")
    return root


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` but hidden ones, by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
