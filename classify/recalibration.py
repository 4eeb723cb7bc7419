"""Recalibrate a trained classifier on labeled crops from where it will be used, without retraining.

Training fits the softmax temperature and the open-set threshold on validation crops drawn from the training photos.
Deployed photos differ (other light, clutter, smaller objects), and then the model is over- or under-confident and
its open-set rule marks far more (or fewer) than the intended share of known objects ``unknown``. `recalibrate` refits
both on a few hundred labeled crops from the deployment domain: the temperature on their NLL, the threshold to keep
``keep`` of them. Crops of classes the model does not know measure the open-set rule (AUROC, share marked unknown)
and take no part in the fit. The report gives the previous and new values on these crops; the new ECE is in-sample
(fitted on the same crops), so judge it on other crops.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import softmax
from sklearn.metrics import roc_auc_score
from sklearn.utils.validation import check_is_fitted

from classify.batches import ImageItem
from classify.calibration import expected_calibration_error, nll
from classify.model import FineClassifier
from classify.openset import fit_calibration, score_table

logger = logging.getLogger(__name__)

#: Fewer labeled crops than this give a noisy temperature and threshold (a warning says so).
MIN_CROPS = 50


@dataclass
class ScoredCrops:
    """A model's logits and backbone features of labeled crops (``y``: class indices) and of crops of classes it
    does not know (``unseen_*``, ``None`` without any)."""

    logits: np.ndarray
    features: np.ndarray
    y: np.ndarray
    unseen_logits: np.ndarray | None = None
    unseen_features: np.ndarray | None = None

    @classmethod
    def of(cls, clf: FineClassifier, images: Sequence[ImageItem], labels: Sequence[Any],
           unseen: Sequence[ImageItem] = ()) -> ScoredCrops:
        """Run ``clf`` on ``images`` (with ``labels``, all classes it knows) and ``unseen``."""
        labels = [str(v) for v in labels]
        classes = [str(c) for c in clf.classes_]
        foreign = sorted(set(labels) - set(classes))
        if foreign:
            raise ValueError(f"labels {foreign} are not classes of the model ({', '.join(classes)}); pass crops of "
                             "classes it does not know as unseen")
        if not labels:
            raise ValueError("recalibration needs labeled crops of the model's classes")
        logits, features = clf.logits_and_features(images)
        unseen_logits, unseen_features = clf.logits_and_features(unseen) if len(unseen) else (None, None)
        return cls(logits, features, np.searchsorted(np.asarray(classes), np.asarray(labels)), unseen_logits,
                   unseen_features)


def calibration_state(clf: FineClassifier, crops: ScoredCrops, temperature: float,
                      threshold: float | None) -> dict[str, Any]:
    """How ``clf`` with ``temperature`` and open-set ``threshold`` does on ``crops``: ``temperature``, 15-bin
    ``ece``, ``nll``, ``open_set_threshold``, ``known_marked_unknown`` and, with unseen crops,
    ``unseen_marked_unknown`` and the open-set score's ``auroc``."""
    means = np.asarray(clf.model_.open_set.class_means.numpy())
    name = clf.model_.open_set_score
    known = score_table(crops.logits, crops.features, means, temperature)[name]
    out = {"temperature": float(temperature),
           "ece": expected_calibration_error(softmax(np.asarray(crops.logits, np.float64) / temperature, axis=1),
                                             crops.y),
           "nll": nll(crops.logits, crops.y, temperature), "open_set_threshold": threshold,
           "known_marked_unknown": _share_below(known, threshold)}
    if crops.unseen_logits is not None:
        other = score_table(crops.unseen_logits, crops.unseen_features, means, temperature)[name]
        out["unseen_marked_unknown"] = _share_below(other, threshold)
        out["auroc"] = float(roc_auc_score(np.r_[np.ones(len(known)), np.zeros(len(other))], np.r_[known, other]))
    return out


@dataclass
class Recalibration:
    """`recalibrate`'s result: the report, and the crops' logits and label indices (e.g. for a reliability plot)."""

    report: dict[str, Any]
    logits: np.ndarray
    y: np.ndarray


def recalibrate(clf: FineClassifier, images: Sequence[ImageItem], labels: Sequence[Any], *, keep: float | None = None,
                unseen: Sequence[ImageItem] = (), split: str = "recalibration") -> Recalibration:
    """Refit ``clf``'s temperature and open-set threshold (in place) on ``images`` with ``labels`` (all classes the
    model knows); ``keep``: the share of them the threshold keeps (default: the model's ``open_set_keep``; 0, or
    ``None`` there: no threshold). ``unseen``: crops of classes the model does not know (report only).

    The report: ``{"n", "accuracy", "previous", "recalibrated", "ece_floor", "temperature_interval", "bins", "split",
    "open_set_score", "keep", "n_unseen", "auroc"}``; ``previous`` and ``recalibrated`` are `calibration_state` on
    these crops; ``temperature_interval`` is the new temperature's 90% bootstrap interval (``None`` when every crop
    is right: the temperature is then kept).
    """
    check_is_fitted(clf, "classes_")
    images = list(images)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    keep = getattr(clf, "open_set_keep", None) if keep is None else keep
    if keep is not None and not 0 <= keep <= 1:
        raise ValueError(f"keep must be in [0, 1] (0: no open-set threshold), got {keep}")
    keep = keep or None
    crops = ScoredCrops.of(clf, images, labels, unseen)
    if len(crops.y) < MIN_CROPS:
        logger.warning("recalibrating on %d crops: the temperature and threshold of fewer than %d are noisy",
                       len(crops.y), MIN_CROPS)
    previous = calibration_state(clf, crops, clf.temperature_, clf.open_set_threshold_)
    fit = fit_calibration(clf.model_, crops.logits, crops.features, crops.y, keep, split,
                          fallback_temperature=clf.temperature_)
    clf.temperature_, clf.open_set_threshold_, clf.calibration_ = fit.temperature, fit.threshold, fit.report
    clf.open_set_keep = keep  # saved with the model: a later recalibration keeps the same share by default
    clf.model_.metadata.setdefault("params", {})["open_set_keep"] = keep
    after = calibration_state(clf, crops, fit.temperature, fit.threshold)
    result = {"n": len(crops.y), "accuracy": float(np.mean(crops.logits.argmax(1) == crops.y)),
              "previous": previous, "recalibrated": after, "ece_floor": fit.report["ece_floor"],
              "temperature_interval": fit.report["temperature_interval"],
              "bins": fit.report["bins"], "split": split, "open_set_score": clf.model_.open_set_score, "keep": keep,
              "n_unseen": len(unseen), "auroc": after.get("auroc")}
    logger.info("recalibrated on %d crops: temperature %.3f -> %.3f, ECE %.3f -> %.3f (in-sample), known marked "
                "unknown %.1f%% -> %.1f%%", len(crops.y), previous["temperature"], fit.temperature, previous["ece"],
                after["ece"], 100 * previous["known_marked_unknown"], 100 * after["known_marked_unknown"])
    return Recalibration(result, crops.logits, crops.y)


def _share_below(scores: np.ndarray, threshold: float | None) -> float:
    """The share of ``scores`` below ``threshold`` (marked unknown by the open-set rule; 0 without a threshold)."""
    return 0.0 if threshold is None or not len(scores) else float(np.mean(np.asarray(scores) < threshold))
