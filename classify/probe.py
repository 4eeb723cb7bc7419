"""The linear probe: logistic regression on frozen backbone features, the baseline any trained head must beat.

If a trained head (or fine-tuning) scores no better than a linear model on the same frozen features and the same
split, training added nothing; `FineClassifier` fits this probe on the features it already computed for the head.
"""

from __future__ import annotations

from collections.abc import Sequence

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
