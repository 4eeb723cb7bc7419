"""The prediction interface shared by every classifier runner (Keras, TFLite).

A runner holds ``classes_``, ``input_size_``, ``unknown_below`` and ``unknown_label`` and implements one method,
`ProbabilityPredictor.predict_batch_proba` (probabilities for one float32 batch of resized crops). Reading, resizing,
batching, labels, top-k and the unknown rule live here once, so every runner answers the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from classify.features import ImageItem, iter_items, load_batch


def decide_labels(proba: np.ndarray, classes: Sequence[Any], unknown_below: float | None,
                  unknown_label: str) -> np.ndarray:
    """The top class per row of ``proba``; ``unknown_label`` where its probability is below ``unknown_below``."""
    if not len(proba):
        return np.zeros(0, object)
    labels = np.asarray(classes, dtype=object)[np.asarray(proba).argmax(axis=1)]
    if unknown_below is not None:
        labels[np.asarray(proba).max(axis=1) < unknown_below] = unknown_label
    return labels


def top_k(proba: np.ndarray, classes: Sequence[Any], k: int) -> list[list[tuple[str, float]]]:
    """The ``k`` most probable ``(label, probability)`` pairs per row of ``proba``, best first (ties: class order)."""
    proba = np.asarray(proba)
    if not len(proba):
        return []
    k = min(k, proba.shape[1])
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    return [[(str(classes[j]), float(p[j])) for j in row] for p, row in zip(proba, order, strict=True)]


class ProbabilityPredictor:
    """Mixin: `predict_proba`, `predict`, `predict_topk` and `labels_from_proba` from `predict_batch_proba`.

    Subclasses provide ``classes_``, ``input_size_``, ``unknown_below``, ``unknown_label`` and
    `predict_batch_proba`; ``prediction_batch_size`` is the default batch size.
    """

    classes_: np.ndarray
    input_size_: tuple[int, int]
    unknown_below: float | None
    unknown_label: str
    prediction_batch_size: int = 32

    def predict_batch_proba(self, images: np.ndarray) -> np.ndarray:
        """Probabilities ``(N, n_classes)`` for ``(N, H, W, 3)`` float32 RGB in ``[0, 255]`` at ``input_size_``."""
        raise NotImplementedError

    def _check_ready(self) -> None:
        """Raise if the runner cannot predict yet (an unfitted estimator)."""

    def predict_proba(self, X: Sequence[ImageItem] | np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Class probabilities ``(N, n_classes)`` in the order of ``classes_``, for paths or RGB arrays of any size
        (resized exactly as in training)."""
        self._check_ready()
        items = iter_items(X)
        bs = int(batch_size or self.prediction_batch_size)
        outs = [
            np.asarray(self.predict_batch_proba(load_batch(items[i : i + bs], self.input_size_).astype(np.float32)),
                       dtype=np.float32)
            for i in range(0, len(items), bs)
        ]
        return np.concatenate(outs) if outs else np.zeros((0, len(self.classes_)), np.float32)

    def labels_from_proba(self, proba: np.ndarray) -> np.ndarray:
        """Labels for probabilities from `predict_proba` (``unknown_label`` below ``unknown_below``)."""
        return decide_labels(proba, self.classes_, self.unknown_below, self.unknown_label)

    def predict(self, X: Sequence[ImageItem] | np.ndarray) -> np.ndarray:
        """The most probable label per image; ``unknown_label`` where its probability is below ``unknown_below``."""
        return self.labels_from_proba(self.predict_proba(X))

    def predict_topk(self, X: Sequence[ImageItem] | np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable ``(label, probability)`` pairs per image, best first."""
        return top_k(self.predict_proba(X), self.classes_, k)
