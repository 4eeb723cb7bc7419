"""Small real-pixel data and shared, built-once objects for the stage-2 (classify) tests.

Each class is one real photograph from scikit-image; a "source photo" is a random window of it and its crops are
sub-windows, so crops of one photo overlap and must never straddle a train/validation split. ``crops.csv`` follows
`detectcrop.dataset.CROPS_COLUMNS`; pairs of photos are linked by a ``duplicate_group`` like near-duplicate shots.
The shared, built-once objects (folders, the offline backbone, a fitted model) are session fixtures in conftest.py.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata

SOURCES = {"astronaut": "astronaut", "cat": "chelsea", "coffee": "coffee", "rocket": "rocket"}
#: Classes the models of the tests never see (open-set tests).
UNSEEN_SOURCES = {"hubble": "hubble_deep_field", "cells": "immunohistochemistry"}
CROP_SIDE = 112


def write_crops(root: Path, *, photos_per_class: int, crops_per_photo: int, seed: int, manifest: bool = True,
                sources: dict[str, str] | None = None) -> Path:
    """Write ``root/<class>/*.jpg`` (+ ``root/crops.csv``) of ``sources`` (default `SOURCES`); returns ``root``."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, name in (sources or SOURCES).items():
        image = getattr(skdata, name)()
        h, w = image.shape[:2]
        (root / label).mkdir(parents=True, exist_ok=True)
        for p in range(photos_per_class):
            ph, pw = int(h * rng.uniform(0.55, 0.8)), int(w * rng.uniform(0.55, 0.8))
            py, px = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
            for c in range(crops_per_photo):
                side = int(min(ph, pw) * rng.uniform(0.5, 0.8))
                y0, x0 = py + rng.integers(0, ph - side + 1), px + rng.integers(0, pw - side + 1)
                crop = Image.fromarray(image[y0 : y0 + side, x0 : x0 + side]).resize((CROP_SIDE, CROP_SIDE))
                rel = f"{label}/{label}_{p:03d}_{c}.jpg"
                crop.save(root / rel, quality=92)
                dup = f"{label}-{p // 2}" if p % 4 < 2 else ""  # photos 0+1, 4+5, ... are "near-duplicates"
                rows.append(
                    {
                        "crop_path": rel,
                        "source_path": f"photos/{label}/{label}_{p:03d}.jpg",
                        "label": label,
                        "x1": x0,
                        "y1": y0,
                        "x2": x0 + side,
                        "y2": y0 + side,
                        "score": 0.9,
                        "duplicate_group": dup,
                        "dropped": 0,
                    }
                )
    if manifest:
        with open(root / "crops.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    (root / "images.csv").write_text("path,status,n_crops,error\n")  # a manifest the reader must ignore
    return root
