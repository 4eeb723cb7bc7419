"""The linear probe: logistic regression on frozen backbone features, the baseline any trained head must beat.

If a trained head (or fine-tuning) scores no better than a linear model on the same frozen features and the same
split, training added nothing; `FineClassifier` fits this probe on the features it already computed for the head.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

#: Inverse regularisation strength of the probe (scikit-learn's default).
PROBE_C = 1.0


def fit_linear_probe(features: np.ndarray, labels: Sequence[str] | np.ndarray, c: float = PROBE_C) -> Pipeline:
    """Standardised features -> multinomial logistic regression (lbfgs, deterministic), fitted on ``features``
    ``(N, D)`` and ``labels``."""
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
    return model.fit(np.asarray(features, np.float32), np.asarray(labels))


def attach_linear_probe(clf: Any, frozen: Any, y_train: np.ndarray, result: Any) -> None:
    """Fit the probe on the frozen features the head stage of ``clf.fit`` already computed (seconds) and set
    ``clf.frozen_backbone_``, ``clf.linear_probe_`` and ``clf.linear_probe_val_predictions_``."""
    t0 = time.perf_counter()
    clf.frozen_backbone_ = frozen
    clf.linear_probe_ = fit_linear_probe(result.train_features, y_train)
    val = result.val_features
    clf.linear_probe_val_predictions_ = None if val is None else clf.linear_probe_.predict(val)
    clf.timings_["linear_probe_s"] = time.perf_counter() - t0
