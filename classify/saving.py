"""A `FineClassifier` on disk: one self-describing ``.keras`` file (the task model, its metadata, the unknown rule
and the temperature inside) written atomically, and read back into a fitted estimator."""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from classify.augment import save_augmentation
from classify.task import CropClassifier

if TYPE_CHECKING:
    from classify.model import FineClassifier

logger = logging.getLogger("classify.model")

MODEL_FILE = "model.keras"
# 3: a logits head + calibration and open-set score layers; 2: a softmax head (files of versions 1 and 2 do not load)
FORMAT_VERSION = 3


def save_classifier(clf: FineClassifier, path: str | Path) -> Path:
    """`FineClassifier.save`: the task model with the estimator's unknown rule and temperature, written atomically,
    and the augmentation beside it; returns the ``.keras`` path."""
    path = Path(path)
    path = path if path.suffix == ".keras" else path / MODEL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    clf.model_.unknown_below, clf.model_.unknown_label = clf.unknown_below, clf.unknown_label
    clf.model_.open_set_threshold = clf.open_set_threshold_
    clf.model_.calibration.temperature.assign(clf.temperature_)
    write_task(clf.model_, path)
    save_augmentation(clf.augmentation_, path.with_name(f"{path.stem}.augmentation.json"))
    logger.info("saved %s", path)
    return path


def metadata(clf: FineClassifier, backbone: str) -> dict[str, Any]:
    """What a saved model records about how it was trained (parameters, augmentation, input convention)."""
    params = {k: v for k, v in clf.get_params().items() if k not in ("backbone", "augmentation", "cache_dir")}
    params["augmentation"] = clf.augmentation if isinstance(clf.augmentation, str) else clf.augmentation_
    return {"format_version": FORMAT_VERSION, "backbone": backbone, "params": params,
            "augmentation": clf.augmentation_, "input": "RGB float32 in [0, 255], resized (area when shrinking, "
            "bilinear when enlarging)",
            "best_epoch": None if clf.best_epoch_ is None else int(clf.best_epoch_) + 1}


def write_task(model: CropClassifier, path: Path) -> None:
    """Save the task model atomically (a temporary file beside ``path``, then a rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.keras")
    os.close(fd)
    try:
        model.save(tmp)
        os.chmod(tmp, 0o644)  # mkstemp's file is private; the model is as readable as any other output
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_task(path: Path) -> CropClassifier:
    """Load a saved task model; files of older formats fail with one clear error saying to retrain."""
    if not path.exists():
        raise FileNotFoundError(f"no model at {path}")
    if not zipfile.is_zipfile(path):  # a .keras file is a zip archive
        raise ValueError(f"{path} is not a readable .keras model file (corrupt, truncated or another format)")
    try:
        model = keras.saving.load_model(path, compile=False)
    except (TypeError, ValueError, OSError, KeyError) as exc:  # older formats, or a damaged archive
        raise ValueError(f"{path} cannot be read as a FineClassifier: it is damaged (e.g. a truncated weights "
                         f"file), or was saved by an older version (files saved before format version "
                         f"{FORMAT_VERSION} must be retrained with python -m pipelines.train_fine): "
                         f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from exc
    if not isinstance(model, CropClassifier):
        raise ValueError(f"{path} is not a FineClassifier model (files saved before format version "
                         f"{FORMAT_VERSION} must be retrained)")
    return model


def from_task(cls: type[FineClassifier], model: CropClassifier) -> FineClassifier:
    """A fitted estimator around a loaded task model (its parameters from the model's metadata)."""
    meta = model.metadata
    params = {k: v for k, v in meta.get("params", {}).items() if k in cls._get_param_names()}
    params.update(unknown_below=model.unknown_below, unknown_label=model.unknown_label,
                  open_set_score=model.open_set_score)
    clf = cls(backbone=meta.get("backbone", model.backbone.name), **params)
    clf.model_, clf.classes_ = model, np.asarray(model.class_names, dtype=object)
    clf.input_size_, clf.augmentation_ = model.input_size, meta.get("augmentation")
    clf.best_epoch_ = None if meta.get("best_epoch") is None else int(meta["best_epoch"]) - 1
    clf.fine_tune_best_epoch_, clf.history_, clf.timings_ = None, [], {}
    clf.temperature_, clf.open_set_threshold_ = model.temperature, model.open_set_threshold
    clf.calibration_ = meta.get("calibration")
    return clf
