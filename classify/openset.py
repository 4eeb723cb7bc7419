"""Open-set scores ("is this a class I know?") and the calibrated output layer that carries them in the graph.

Every score is higher for inputs that look like a known class:

- ``max_softmax``: the top calibrated probability, ``max softmax(logits / T)``;
- ``max_logit``: the top logit;
- ``energy``: ``logsumexp(logits)`` (the negative free energy at temperature 1);
- ``class_mean_cosine``: the largest cosine between the L2-normalised backbone features and the class means of the
  L2-normalised training features;
- ``knn_cosine``: the cosine to the ``KNN_K``-th nearest training feature (report only: it needs every training
  feature, so it is not in the model's graph).

`CalibratedOutput` is the task model's last layer: logits -> ``softmax(logits / T)``; `OpenSetScore` computes the
model's open-set score in the graph, so a saved model and its LiteRT export carry both.
`score_table` computes the same scores in numpy (the report compares them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from scipy.special import logsumexp, softmax

from classify.calibration import calibration_report, fit_temperature, keep_threshold, temperature_interval
from classify.features import predict_batches

logger = logging.getLogger(__name__)

#: Scores the model can carry in its graph (`CalibratedOutput`).
GRAPH_SCORES: tuple[str, ...] = ("max_softmax", "max_logit", "energy", "class_mean_cosine")
#: Every score the report measures.
SCORES: tuple[str, ...] = (*GRAPH_SCORES, "knn_cosine")
#: The model's default open-set score. BENCHMARKS.md ("Calibration and unknown objects"): on the hard synthetic variant
#: no score separates unseen brands (AUROC 0.38-0.58); on the normal one energy reaches 0.93 and rejects 50-85% of
#: unseen-brand crops at the 95% threshold, where class-mean cosine (0.81) rejects almost none.
DEFAULT_SCORE = "energy"
#: Neighbours for ``knn_cosine``.
KNN_K = 5


def check_score(name: str, graph: bool = True) -> str:
    """``name`` if it is a known score (one the graph carries when ``graph``), else ``ValueError``."""
    allowed = GRAPH_SCORES if graph else SCORES
    if name not in allowed:
        raise ValueError(f"open-set score must be one of {', '.join(allowed)}, got {name!r}")
    return name


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def class_means(features: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n_classes, D)``: the normalised mean of each class's L2-normalised features (zeros for an absent class)."""
    unit = l2_normalize(features)
    means = np.zeros((n_classes, unit.shape[1]), np.float64)
    for c in range(n_classes):
        if np.any(y == c):
            means[c] = unit[y == c].mean(axis=0)
    return l2_normalize(means).astype(np.float32)


def score_table(logits: np.ndarray, features: np.ndarray | None, means: np.ndarray | None, temperature: float = 1.0,
                train_features: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every score that the inputs allow, per row of ``logits`` ``(N, C)`` and ``features`` ``(N, D)``."""
    logits = np.asarray(logits, np.float64)
    out = {
        "max_softmax": softmax(logits / temperature, axis=1).max(axis=1),
        "max_logit": logits.max(axis=1),
        "energy": logsumexp(logits, axis=1),
    }
    if features is not None and means is not None:
        out["class_mean_cosine"] = (l2_normalize(features) @ np.asarray(means, np.float64).T).max(axis=1)
    if features is not None and train_features is not None and len(train_features):
        sims = l2_normalize(features) @ l2_normalize(train_features).T
        k = min(KNN_K, sims.shape[1])
        out["knn_cosine"] = np.sort(sims, axis=1)[:, -k]
    return out


@keras.saving.register_keras_serializable(package="classify")
class CalibratedOutput(keras.layers.Layer):
    """Logits ``(N, C)`` -> ``softmax(logits / T)``; ``temperature`` is a fixed weight set after training."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.temperature = self.add_weight(shape=(), initializer="ones", trainable=False, name="temperature")

    def call(self, logits: Any) -> Any:
        return keras.ops.softmax(logits / self.temperature, axis=-1)


@keras.saving.register_keras_serializable(package="classify")
class OpenSetScore(keras.layers.Layer):
    """``[logits (N, C), features (N, D), probabilities (N, C)]`` -> the open-set ``score`` ``(N,)`` (higher: more
    like a known class); ``class_means`` is a fixed weight set after training."""

    def __init__(self, n_classes: int, feature_dim: int, score: str = DEFAULT_SCORE, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_classes, self.feature_dim, self.score = int(n_classes), int(feature_dim), check_score(score)
        self.class_means = self.add_weight(shape=(self.n_classes, self.feature_dim), initializer="zeros",
                                           trainable=False, name="class_means")

    def call(self, inputs: list) -> Any:
        logits, features, proba = inputs
        if self.score == "max_softmax":
            return keras.ops.max(proba, axis=-1)
        if self.score == "max_logit":
            return keras.ops.max(logits, axis=-1)
        if self.score == "energy":
            return keras.ops.logsumexp(logits, axis=-1)
        unit = features / keras.ops.maximum(keras.ops.norm(features, axis=-1, keepdims=True), 1e-12)
        return keras.ops.max(keras.ops.matmul(unit, keras.ops.transpose(self.class_means)), axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_classes": self.n_classes, "feature_dim": self.feature_dim,
                "score": self.score}


#: A temperature whose 90% bootstrap interval spans more than this ratio is reported as uncertain.
WIDE_TEMPERATURE = 1.25


@dataclass
class OutputFit:
    """What `fit_output_layers` set: the temperature, the open-set threshold (``None``: none) and the calibration
    report on validation (``None`` without validation data)."""

    temperature: float
    threshold: float | None
    report: dict[str, Any] | None


def fit_output_layers(task: Any, train_features: np.ndarray, y_train: np.ndarray, val_features: np.ndarray | None,
                      y_val: np.ndarray, keep: float | None) -> OutputFit:
    """After training: set ``task``'s (a `classify.task.CropClassifier`) class means of ``train_features``, then its
    temperature and open-set threshold from the validation features (`fit_calibration`; without validation data the
    temperature is 1 and there is no threshold)."""
    task.open_set.class_means.assign(class_means(train_features, y_train, len(task.class_names)))
    if val_features is not None and len(y_val):
        return fit_calibration(task, predict_batches(task.head, val_features, 256), val_features, y_val, keep, "val")
    task.calibration.temperature.assign(1.0)
    task.open_set_threshold = None
    task.metadata["calibration"] = None
    logger.info("calibration: no validation data; temperature 1, no open-set threshold")
    return OutputFit(1.0, None, None)


def fit_calibration(task: Any, logits: np.ndarray, features: np.ndarray, y: np.ndarray, keep: float | None,
                    split: str, fallback_temperature: float = 1.0) -> OutputFit:
    """Set ``task``'s temperature (fitted on ``logits``' NLL against labels ``y``) and its open-set threshold (the
    score that keeps ``keep`` of these known objects; ``None`` without ``keep``); ``split`` names the data in the
    report; ``fallback_temperature`` is kept when the temperature cannot be fitted (every crop right). The class
    means stay as they are."""
    temperature = fit_temperature(logits, y, fallback=fallback_temperature)
    report = calibration_report(logits, y, temperature, split)
    interval = temperature_interval(logits, y)  # None: every crop right, T not fitted (a warning said so)
    report["temperature_interval"] = None if interval is None else list(interval)
    lo, hi = interval or (temperature, temperature)
    if hi > WIDE_TEMPERATURE * lo:
        # A warning only where the temperature changes answers: a probability floor or the calibrated max-softmax
        # score. Otherwise (energy and the other scores ignore T) the interval is information for the report.
        acts = getattr(task, "unknown_below", None) is not None or task.open_set_score == "max_softmax"
        logger.log(logging.WARNING if acts else logging.INFO,
                   "the temperature %.2f fitted on %d %s crops is uncertain (90%% bootstrap interval %.2f-%.2f): "
                   "probabilities may be off by several points%s; `detectcrop calibrate` on a few hundred labeled "
                   "crops narrows it", temperature, len(y), split, lo, hi,
                   " and the unknown rule uses them" if acts else "")
    threshold = None
    if keep is not None:
        means = np.asarray(task.open_set.class_means.numpy())
        threshold = keep_threshold(score_table(logits, features, means, temperature)[task.open_set_score], keep)
    task.calibration.temperature.assign(temperature)
    task.open_set_threshold = threshold
    task.metadata["calibration"] = report
    logger.info("calibration on %s: temperature %.3f (%s, %d crops); open-set score %s, threshold %s", split,
                temperature, "not fitted" if interval is None else f"90% bootstrap interval {lo:.2f}-{hi:.2f}",
                len(y), task.open_set_score, threshold)
    return OutputFit(temperature, threshold, report)
