"""The classifier on LiteRT: ``model.keras`` exported once to ``.tflite`` and cached beside it, at each precision.

The cached file is named by the sha256 of its sources (``model.<digest>.<precision>.tflite``), so a retrained model
is never served stale; older exports of the same model are removed when a new one is written. int8 (full-integer)
is quantised on representative crops saved beside the model (`save_representative_data`, ``representative.npz``: a
few hundred resized training crops, plus held-out crops; run folders of earlier versions hold them as
``calibration.npz``) and its top-1 agreement with the Keras model on the held-out crops is measured at export;
``precision="auto"`` serves int8 only where that agreement reaches `INT8_MIN_AGREEMENT`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from classify.batches import ImageItem, iter_items, load_batch
from detectcrop.io import atomic_write_bytes, atomic_write_text
from detectcrop.runtime.classifier import LiteRTClassifier, agreement, sidecar
from detectcrop.runtime.interpreters import ConversionError
from detectcrop.runtime.precision import CLASSIFIER_PRECISIONS, EXPORTED_PRECISIONS, check_precision
from detectcrop.zoo.cache import file_lock

if TYPE_CHECKING:
    from classify.model import FineClassifier

logger = logging.getLogger(__name__)

#: Representative and held-out crops saved beside ``model.keras`` (``OLD_REPRESENTATIVE_FILE``: its earlier name).
REPRESENTATIVE_FILE = "representative.npz"
OLD_REPRESENTATIVE_FILE = "calibration.npz"
#: int8 serves by default (``precision="auto"``) only when its agreement with the Keras model on held-out crops (top
#: class, and final answer with unknown) is at least this,
INT8_MIN_AGREEMENT = 0.99
#: measured on at least this many held-out crops (fewer cannot show a 99% agreement: int8 stays opt-in).
INT8_MIN_HELDOUT = 50
#: Bumped when the export recipe changes, so cached exports are rebuilt.
EXPORT_VERSION = 3  # 2: the serving graph (calibrated probabilities and the open-set score); 3: int8 answers checked


def model_file(model: str | os.PathLike) -> Path:
    """``model.keras`` of a run folder, or the ``.keras`` file itself."""
    path = Path(model)
    return path / "model.keras" if path.is_dir() else path


def representative_file(model: str | os.PathLike) -> Path:
    """The representative crops beside a model: ``representative.npz``, or ``calibration.npz`` where only that
    exists (a run folder of an earlier version)."""
    keras_file = model_file(model)
    new, old = keras_file.with_name(REPRESENTATIVE_FILE), keras_file.with_name(OLD_REPRESENTATIVE_FILE)
    return old if old.is_file() and not new.is_file() else new


def save_representative_data(model: str | os.PathLike, representative: Sequence[ImageItem] | np.ndarray,
                             heldout: Sequence[ImageItem] | np.ndarray, input_size: tuple[int, int]) -> Path:
    """Save crops (paths or RGB arrays) resized to ``input_size`` as ``representative.npz`` beside the model:
    ``representative`` sets int8's ranges, ``heldout`` (crops not among them) measures its agreement."""
    path = model_file(model).with_name(REPRESENTATIVE_FILE)
    buffer = io.BytesIO()
    # the array keeps its first name, so files of either name read the same
    np.savez_compressed(buffer, calibration=load_batch(iter_items(representative), input_size),
                        heldout=load_batch(iter_items(heldout), input_size))
    atomic_write_bytes(path, buffer.getvalue(), fsync=False)
    return path


def _digest(paths: Sequence[Path]) -> str:
    h = hashlib.sha256(f"v{EXPORT_VERSION}".encode())
    for p in paths:
        with open(p, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()[:16]


def exported_path(model: str | os.PathLike, precision: str = "float") -> Path:
    """The ``.tflite`` file that `export_cached` writes for ``model`` and ``precision`` (float, dynamic or int8)."""
    keras_file = model_file(model)
    sources = [keras_file] + ([representative_file(model)] if precision == "int8" else [])
    missing = [p for p in sources if not p.is_file()]
    if missing:
        hint = (" (write it with detectcrop.runtime.save_representative_data)"
                if missing[0].name == REPRESENTATIVE_FILE else "")
        raise FileNotFoundError(f"{missing[0]} does not exist{hint}")
    return keras_file.with_name(f"{keras_file.stem}.{_digest(sources)}.{precision}.tflite")


def export_cached(model: str | os.PathLike, precision: str = "float") -> Path:
    """Export ``model.keras`` to LiteRT once (``float``, ``dynamic`` or ``int8``), cached beside it; returns the
    ``.tflite``.

    An int8 export records in its sidecar the held-out top-1 agreement with the Keras model and whether it may be
    the default (``int8_default``: agreement >= `INT8_MIN_AGREEMENT`).
    """
    check_precision(precision, EXPORTED_PRECISIONS, "an export")
    target = exported_path(model, precision)
    keras_file = model_file(model)
    with file_lock(keras_file.with_name(f".{keras_file.stem}.litert.lock")):
        if target.is_file() and sidecar(target).is_file():  # the sidecar is written last
            return target
        from classify.model import FineClassifier  # TensorFlow: only when the export is not cached

        clf = FineClassifier.load(keras_file)
        try:
            _export(clf, keras_file, target, precision)
        except (ValueError, OSError):
            raise
        except Exception as exc:  # the converter's own errors
            raise ConversionError(f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from exc
        for stale in keras_file.parent.glob(f"{keras_file.stem}.*.{precision}.tflite"):
            if stale != target:  # exports of an older model.keras
                stale.unlink(missing_ok=True)
                sidecar(stale).unlink(missing_ok=True)
    return target


def _export(clf: FineClassifier, keras_file: Path, target: Path, precision: str) -> None:
    from detectcrop.runtime.classifier_export import export_litert

    extra = {"source_digest": target.name[len(keras_file.stem) + 1:].split(".")[0]}
    if precision != "int8":
        export_litert(clf, target, precision, extra_meta=extra)
        return
    with np.load(representative_file(keras_file)) as data:
        representative, heldout = data["calibration"].astype(np.float32), data["heldout"].astype(np.float32)
    export_litert(clf, target, "int8", representative=representative, extra_meta=extra)
    reference, quantised = clf.predict_batch(heldout), LiteRTClassifier(target).predict_batch(heldout)
    # the answers label gives: the top class, or unknown by the model's rule (probability floor, open-set score)
    decisions = [clf.labels_from_proba(*scores) for scores in (reference, quantised)]
    check = int8_check(reference[0], quantised[0], decisions=decisions)
    meta_path = sidecar(target)
    atomic_write_text(meta_path, json.dumps({**json.loads(meta_path.read_text()), **check}, indent=2) + "\n")
    logger.info("int8 export: held-out top-1 agreement %.4f, answer agreement %.4f on %d crops -> %s",
                check["argmax_agreement"], check["decision_agreement"], check["n"],
                "may be the default" if check["int8_default"] else "not the default")


def int8_check(reference: np.ndarray, int8: np.ndarray, min_agreement: float = INT8_MIN_AGREEMENT,
               decisions: Sequence[np.ndarray] | None = None) -> dict:
    """The agreement of int8 probabilities with the reference's (top class, and with ``decisions``, the two models'
    final answers, unknown included), and whether int8 may be the default (at least `INT8_MIN_HELDOUT` crops, both
    agreements at least ``min_agreement``)."""
    result = agreement(reference, int8)
    result["decision_agreement"] = (float(np.mean(np.asarray(decisions[0]) == np.asarray(decisions[1])))
                                    if decisions is not None and len(decisions[0]) else result["argmax_agreement"])
    return {**result, "min_agreement": min_agreement, "min_heldout": INT8_MIN_HELDOUT,
            "int8_default": _int8_default(result, min_agreement)}


def _int8_default(check: dict, min_agreement: float = INT8_MIN_AGREEMENT) -> bool:
    """The rule on a check's (or an export sidecar's) figures; sidecars of earlier versions lack the answers'
    agreement and are judged on the top class."""
    decided = check.get("decision_agreement", check.get("argmax_agreement", 0.0))
    return bool(check.get("n", 0) >= INT8_MIN_HELDOUT and min(check.get("argmax_agreement", 0.0), decided)
                >= min_agreement)


def resolve_precision(model: str | os.PathLike, precision: str) -> str:
    """The precision served for ``precision``; ``auto`` is int8 when representative crops exist and the int8 export's
    held-out agreement reaches the bar on enough crops, else float (also, with a logged warning, when the int8 export
    fails or needs TensorFlow and it is not installed)."""
    check_precision(precision, CLASSIFIER_PRECISIONS, "the classifier")
    if precision != "auto":
        return precision
    if not representative_file(model).is_file():
        return "float"
    try:
        meta = json.loads(sidecar(export_cached(model, "int8")).read_text())
    except (ConversionError, ImportError) as exc:  # ImportError: no TensorFlow to export with
        logger.warning("int8 export of %s unavailable (%s: %s); serving float", model, type(exc).__name__, exc)
        return "float"
    # the rule as it stands now, also for exports measured by earlier versions
    default = _int8_default(meta)
    if not default and meta.get("n", 0) < INT8_MIN_HELDOUT:
        logger.info("int8 classifier not served by default: its agreement was measured on %d held-out crops, fewer "
                    "than %d (--precision int8 serves it)", meta.get("n", 0), INT8_MIN_HELDOUT)
    return "int8" if default else "float"


def load_litert_classifier(model: str | os.PathLike, precision: str = "float",
                           num_threads: int | None = None) -> LiteRTClassifier:
    """The LiteRT classifier of a train_fine run folder or ``.keras`` file (exported and cached on first use)."""
    chosen = resolve_precision(model, precision)
    path = export_cached(model, chosen)
    runner = LiteRTClassifier(path, num_threads=num_threads)
    if chosen == "int8" and not runner.meta.get("int8_default", False):
        logger.warning("int8 classifier %s: held-out top-1 agreement %.4f is below %.2f", path,
                       runner.meta.get("argmax_agreement", float("nan")), INT8_MIN_AGREEMENT)
    return runner
