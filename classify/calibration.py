"""Temperature scaling (Guo et al., 2017) and the expected calibration error.

One scalar ``T`` divides the logits before the softmax; it is fitted on validation logits by minimising the negative
log-likelihood over ``log T``, so the top class never changes, only how sure the model says it is. ``T > 1`` softens
an over-confident model. Reports give the NLL of scikit-learn's ``log_loss``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.metrics import log_loss

logger = logging.getLogger(__name__)

#: Bins of the expected calibration error and the reliability diagram.
ECE_BINS = 15
#: ``T`` is searched in ``[1 / T_RANGE, T_RANGE]``.
T_RANGE = 100.0
#: `temperature_interval` resamples at most this many samples (a random subset of larger sets).
MAX_INTERVAL_SAMPLES = 20000


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of integer labels ``y`` under ``softmax(logits / temperature)``."""
    logits = np.asarray(logits, np.float64)
    return float(log_loss(y, softmax(logits / temperature, axis=1), labels=np.arange(logits.shape[1])))


def _exact_nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    """The NLL without the clipping of ``log_loss``, which caps a confidently wrong sample at -log(eps) (36 nats):
    with that cap, one such sample among right ones makes ``T -> 0`` (every probability 1) look best."""
    return float(-np.mean(log_softmax(logits / temperature, axis=1)[np.arange(len(y)), y]))


def fit_temperature(logits: np.ndarray, y: np.ndarray, fallback: float = 1.0) -> float:
    """The ``T`` that minimises the NLL of ``y`` under ``softmax(logits / T)``; ``fallback`` (e.g. the model's
    current temperature) without data, or when the model gets every sample right (nothing bounds ``T`` then)."""
    if not len(y):
        return fallback
    logits, y = np.asarray(logits, np.float64), np.asarray(y)
    if (logits.argmax(axis=1) == y).all():  # the NLL falls all the way to T -> 0 (every probability 1)
        logger.warning("the temperature cannot be fitted on %d samples that the model all classifies correctly: "
                       "kept %.3f", len(y), fallback)
        return fallback
    result = minimize_scalar(lambda log_t: _exact_nll(logits, y, float(np.exp(log_t))),
                             bounds=(-np.log(T_RANGE), np.log(T_RANGE)), method="bounded", options={"xatol": 1e-4})
    best = float(np.exp(result.x))
    return best if _exact_nll(logits, y, best) <= _exact_nll(logits, y, 1.0) else 1.0


def temperature_interval(logits: np.ndarray, y: np.ndarray, level: float = 0.9, draws: int = 1000,
                         seed: int = 0) -> tuple[float, float] | None:
    """A bootstrap interval of the NLL-optimal temperature on these samples (``level``: its coverage; ``draws``
    resamples with replacement, seeded): how far ``T`` could move with another set of this many crops. Sixty-odd
    validation crops leave it wide (e.g. 1.8-2.5 around 2.1); more labeled crops (``detectcrop calibrate``) narrow
    it. ``None`` when there is nothing to fit (no samples, or every one right: ``T`` is unbounded below). A resample
    that happens to hold no wrong sample counts at the lower bound of the search, where its NLL is least. Each
    resample's ``T`` is found on a grid of ``log T`` (two passes, about 0.1% apart at the end); resamples are drawn
    in chunks, so memory stays bounded for large sets (fewer draws above 5,000 samples)."""
    logits, y = np.asarray(logits, np.float64), np.asarray(y)
    rng = np.random.default_rng(seed)
    if len(y) > MAX_INTERVAL_SAMPLES:  # bounded time and memory; a subset gives a (slightly) wider interval
        keep = np.sort(rng.choice(len(y), MAX_INTERVAL_SAMPLES, replace=False))
        logits, y = logits[keep], y[keep]
    wrong = logits.argmax(axis=1) != y
    if not len(y) or not wrong.any():
        return None
    draws = draws if len(y) <= 5000 else min(draws, 200)
    all_right = np.zeros(draws, bool)
    chunks = []
    for i in range(0, draws, 100):  # resample counts, 100 draws at a time
        counts = rng.multinomial(len(y), np.full(len(y), 1 / len(y)), size=min(100, draws - i)).astype(np.float64)
        all_right[i:i + len(counts)] = counts[:, wrong].sum(axis=1) == 0
        chunks.append(counts)
    grid = np.linspace(-np.log(T_RANGE), np.log(T_RANGE), 401)
    for _ in range(2):
        per_sample = np.stack([-log_softmax(logits / np.exp(t), axis=1)[np.arange(len(y)), y] for t in grid], axis=1)
        best = np.concatenate([(counts @ per_sample).argmin(axis=1) for counts in chunks])
        log_t = np.where(all_right, -np.log(T_RANGE), grid[best])
        span = best[~all_right] if (~all_right).any() else best
        grid = np.linspace(grid[max(span.min() - 1, 0)], grid[min(span.max() + 1, len(grid) - 1)], 401)
    tail = 100 * (1 - level) / 2
    lo, hi = np.exp(np.percentile(log_t, [tail, 100 - tail]))
    return float(lo), float(hi)


def reliability_bins(proba: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Top-class confidence vs accuracy in ``bins`` equal-width confidence bins (``(lo, hi]``, the first also
    holding 0): per bin ``count``, mean ``confidence`` and ``accuracy`` (NaN when empty)."""
    proba = np.asarray(proba, np.float64)
    confidence, correct = proba.max(axis=1), (proba.argmax(axis=1) == np.asarray(y)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ids = np.clip(np.searchsorted(edges[1:-1], confidence, side="left"), 0, bins - 1)
    count = np.bincount(ids, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore"):
        conf = np.bincount(ids, confidence, minlength=bins) / count
        acc = np.bincount(ids, correct, minlength=bins) / count
    return {"edges": edges, "count": count, "confidence": conf, "accuracy": acc}


def expected_calibration_error(proba: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """``sum_b n_b / N * |accuracy_b - confidence_b|`` over equal-width bins of the top-class confidence."""
    if not len(y):
        raise ValueError("the expected calibration error needs at least one sample")
    r = reliability_bins(proba, y, bins)
    filled = r["count"] > 0
    return float(np.sum(r["count"][filled] * np.abs(r["accuracy"][filled] - r["confidence"][filled])) / len(y))


def ece_noise_floor(proba: np.ndarray, bins: int = ECE_BINS, draws: int = 200, seed: int = 0) -> float:
    """The median ECE that a *perfectly calibrated* model with these probabilities would show on this many samples
    (labels drawn from ``proba`` itself, seeded): the ECE an evaluation set this small cannot see below."""
    proba = np.asarray(proba, np.float64)
    if not len(proba):
        return 0.0
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(proba, axis=1)
    labels = np.minimum((rng.random((draws, len(proba), 1)) > cumulative[None]).sum(axis=2), proba.shape[1] - 1)
    return float(np.median([expected_calibration_error(proba, y, bins) for y in labels]))


def calibration_report(logits: np.ndarray, y: np.ndarray, temperature: float, split: str,
                       bins: int = ECE_BINS) -> dict[str, Any]:
    """``{"temperature", "ece_before", "ece_after", "ece_floor", "nll_before", "nll_after", "bins", "split", "n"}``
    on ``logits`` and labels ``y`` of ``split`` (``ece_floor``: `ece_noise_floor` of the calibrated probabilities)."""
    before, after = softmax(np.asarray(logits, np.float64), axis=1), softmax(np.asarray(logits) / temperature, axis=1)
    return {"temperature": float(temperature), "ece_before": expected_calibration_error(before, y, bins),
            "ece_after": expected_calibration_error(after, y, bins), "ece_floor": ece_noise_floor(after, bins),
            "nll_before": nll(logits, y),
            "nll_after": nll(logits, y, temperature), "bins": bins, "split": split, "n": len(y)}


def keep_threshold(val_scores: np.ndarray, keep: float) -> float:
    """The open-set score that keeps at least ``keep`` of the known validation objects (those at or above it).

    It lies midway between the highest score it may reject and the next higher one, below a group of (nearly) equal
    scores rather than on it, so that no validation object sits within rounding of it (two runtimes' float32
    scores would otherwise put it on either side).
    """
    scores = np.sort(np.asarray(val_scores, np.float64))
    first_kept = int(np.floor((1 - keep) * len(scores) + 1e-9))
    first_kept = min(first_kept, len(scores) - 1)
    tol = 1e-6 * max(1.0, abs(float(scores[first_kept])))
    while first_kept > 0 and scores[first_kept] - scores[first_kept - 1] <= tol:  # keep the whole tied group
        first_kept -= 1
    if first_kept == 0:
        return float(scores[0] - tol)
    return float((scores[first_kept - 1] + scores[first_kept]) / 2)
