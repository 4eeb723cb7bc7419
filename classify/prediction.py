"""The prediction interface shared by every classifier runner (Keras, LiteRT).

A runner holds ``classes_``, ``input_size_``, ``unknown_below``, ``unknown_label`` and ``open_set_threshold_`` and
implements one method, `ProbabilityPredictor.predict_batch` (calibrated probabilities and the open-set score for one
float32 batch of resized crops). Reading, resizing, batching, labels, top-k and the unknown rule live here once, so
every runner answers the same way.

The unknown rule: an object is ``unknown_label`` when its top probability is below ``unknown_below`` (a probability
floor the user sets) *or* its open-set score is below ``open_set_threshold_`` (chosen on validation data at training
time); either rule alone makes it unknown, and each is off when its value is ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from classify.batches import ImageItem, iter_items, load_batch


def is_unknown(proba: np.ndarray, unknown_below: float | None, score: np.ndarray | None = None,
               threshold: float | None = None) -> np.ndarray:
    """Per row: the top probability is below ``unknown_below``, or the open-set ``score`` is below ``threshold``."""
    proba = np.asarray(proba)
    out = np.zeros(len(proba), bool)
    if unknown_below is not None and len(proba):
        out |= proba.max(axis=1) < unknown_below
    if threshold is not None and score is not None:
        out |= np.asarray(score) < threshold
    return out


def decide_labels(proba: np.ndarray, classes: Sequence[Any], unknown_below: float | None, unknown_label: str,
                  score: np.ndarray | None = None, threshold: float | None = None) -> np.ndarray:
    """The top class per row of ``proba``; ``unknown_label`` where `is_unknown` says so."""
    if not len(proba):
        return np.zeros(0, object)
    labels = np.asarray(classes, dtype=object)[np.asarray(proba).argmax(axis=1)]
    labels[is_unknown(proba, unknown_below, score, threshold)] = unknown_label
    return labels


def top_k(proba: np.ndarray, classes: Sequence[Any], k: int) -> list[list[tuple[str, float]]]:
    """The ``k`` most probable ``(label, probability)`` pairs per row of ``proba``, best first (ties: class order)."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a whole number >= 1, got {k!r}")
    proba = np.asarray(proba)
    if not len(proba):
        return []
    k = min(k, proba.shape[1])
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    return [[(str(classes[j]), float(p[j])) for j in row] for p, row in zip(proba, order, strict=True)]


class ProbabilityPredictor:
    """Mixin: `predict_scores`, `predict_proba`, `predict`, `predict_topk` and `labels_from_proba` from
    `predict_batch`.

    Subclasses provide ``classes_``, ``input_size_``, ``unknown_below``, ``unknown_label``, ``open_set_threshold_``
    and `predict_batch`; ``prediction_batch_size`` is the default batch size.
    """

    classes_: np.ndarray
    input_size_: tuple[int, int]
    unknown_below: float | None
    unknown_label: str
    open_set_threshold_: float | None = None
    prediction_batch_size: int = 32

    def predict_batch(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Calibrated probabilities ``(N, n_classes)`` and the open-set score ``(N,)`` (``None`` if the model has
        none) for ``(N, H, W, 3)`` float32 RGB in ``[0, 255]`` at ``input_size_``."""
        raise NotImplementedError

    def predict_batch_proba(self, images: np.ndarray) -> np.ndarray:
        """The probabilities of `predict_batch`."""
        return self.predict_batch(images)[0]

    def _check_ready(self) -> None:
        """Raise if the runner cannot predict yet (an unfitted estimator)."""

    def predict_scores(self, X: Sequence[ImageItem] | np.ndarray,
                       batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Calibrated class probabilities ``(N, n_classes)`` in the order of ``classes_`` and the open-set score
        ``(N,)`` (``None`` if the model has none), for paths or RGB arrays of any size (resized exactly as in
        training)."""
        self._check_ready()
        items = iter_items(X)
        bs = int(batch_size or self.prediction_batch_size)
        if bs < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        probas, scores = [], []
        for i in range(0, len(items), bs):
            proba, score = self.predict_batch(load_batch(items[i : i + bs], self.input_size_).astype(np.float32))
            probas.append(np.asarray(proba, dtype=np.float32))
            scores.append(None if score is None else np.asarray(score, dtype=np.float32).reshape(-1))
        if not probas:
            return np.zeros((0, len(self.classes_)), np.float32), np.zeros(0, np.float32)
        return np.concatenate(probas), None if any(s is None for s in scores) else np.concatenate(scores)

    def predict_proba(self, X: Sequence[ImageItem] | np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Calibrated class probabilities ``(N, n_classes)`` in the order of ``classes_`` (see `predict_scores`)."""
        return self.predict_scores(X, batch_size)[0]

    def labels_from_proba(self, proba: np.ndarray, score: np.ndarray | None = None) -> np.ndarray:
        """Labels for probabilities (and open-set scores) from `predict_scores`: ``unknown_label`` below
        ``unknown_below``, or where ``score`` is below ``open_set_threshold_`` (no ``score``: that rule is off)."""
        return decide_labels(proba, self.classes_, self.unknown_below, self.unknown_label, score,
                             self.open_set_threshold_)

    def predict(self, X: Sequence[ImageItem] | np.ndarray, open_set: bool = True) -> np.ndarray:
        """The most probable label per image; ``unknown_label`` where the unknown rule says so (``open_set=False``:
        only the ``unknown_below`` floor)."""
        proba, score = self.predict_scores(X)
        return self.labels_from_proba(proba, score if open_set else None)

    def predict_topk(self, X: Sequence[ImageItem] | np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable ``(label, probability)`` pairs per image, best first."""
        return top_k(self.predict_proba(X), self.classes_, k)
