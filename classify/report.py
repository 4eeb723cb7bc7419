"""Evaluation reports with scikit-learn: metrics as JSON, confusion-matrix and training-curve plots, history CSV.

Plots use matplotlib's object API with the Agg canvas directly, so importing this module changes no global backend.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.special import softmax
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support, roc_auc_score

from classify.calibration import ECE_BINS, expected_calibration_error, keep_threshold, reliability_bins
from detectcrop.io import atomic_write_bytes, atomic_write_text


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str], class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro and weighted F1, per-class precision/recall/F1/support and the confusion matrix.

    ``class_names`` fixes the order of rows and columns; predictions outside it (e.g. ``"unknown"``) count as wrong
    and get an extra confusion-matrix column. Macro-F1 averages over ``class_names`` that occur in ``y_true``.
    """
    y_true = np.asarray([str(v) for v in y_true], dtype=object)
    y_pred = np.asarray([str(v) for v in y_pred], dtype=object)
    names = [str(c) for c in class_names]
    present = [c for c in names if c in set(y_true.tolist())]
    extra = sorted(set(y_pred.tolist()) - set(names))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=names, zero_division=0)
    matrix = confusion_matrix(y_true, y_pred, labels=names + extra)[: len(names)]
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=present, average="weighted", zero_division=0)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(names, precision, recall, f1, support, strict=True)
        },
        "labels": names,
        "predicted_labels": names + extra,
        "confusion_matrix": matrix.tolist(),
    }


def open_set_metrics(val_known: np.ndarray, known: np.ndarray, unknown: np.ndarray, score: str = "max_softmax",
                     keep: float = 0.95) -> dict[str, Any]:
    """How well a score (higher: more likely a known class) tells known objects from objects of unseen classes.

    ``auroc``: ROC AUC of ``known`` (positives) against ``unknown``; ``threshold``: the score that keeps ``keep`` of
    the known validation objects ``val_known`` (chosen on validation, not on the data judged); ``fpr_at_95_tpr``:
    the share of ``unknown`` objects at or above it (accepted as known), ``known_kept``: the share of ``known`` kept.
    """
    known, unknown = np.asarray(known, np.float64), np.asarray(unknown, np.float64)
    if not len(known) or not len(unknown) or not len(val_known):
        raise ValueError("open-set metrics need known validation, known and unknown scores")
    threshold = keep_threshold(val_known, keep)
    auroc = roc_auc_score(np.r_[np.ones(len(known)), np.zeros(len(unknown))], np.r_[known, unknown])
    return {"score": score, "auroc": float(auroc), "fpr_at_95_tpr": float(np.mean(unknown >= threshold)),
            "threshold": threshold, "known_kept": float(np.mean(known >= threshold)), "n_known": len(known),
            "n_unknown": len(unknown)}  # fmt: skip


def write_json(path: str | Path, obj: Any) -> Path:
    """Indented JSON, written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_history_csv(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """One row per epoch; columns are the union of the rows' keys (``stage`` and ``epoch`` first)."""
    keys: list[str] = []
    for row in history:
        keys.extend(k for k in row if k not in keys)
    keys = [k for k in ("stage", "epoch") if k in keys] + [k for k in keys if k not in ("stage", "epoch")]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return atomic_write_text(path, buf.getvalue())


def _save(fig: Figure, path: str | Path) -> Path:
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return atomic_write_bytes(path, buf.getvalue(), fsync=False)


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]],
    labels: Sequence[str],
    path: str | Path,
    *,
    predicted_labels: Sequence[str] | None = None,
    title: str = "Confusion matrix",
) -> Path:
    """A PNG of the confusion matrix (rows: true class, columns: predicted), row-normalised colours, counts printed."""
    matrix = np.asarray(matrix)
    predicted_labels = list(predicted_labels or labels)
    rows = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    side = max(4.0, 0.45 * max(len(labels), len(predicted_labels)) + 2.0)
    fig = Figure(figsize=(side + 1.0, side))
    ax = fig.add_subplot()
    im = ax.imshow(matrix / rows, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_xticks(range(len(predicted_labels)), predicted_labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if matrix.size <= 900:
        for (i, j), v in np.ndenumerate(matrix):
            if v:
                colour = "white" if v / rows[i, 0] > 0.5 else "black"
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color=colour)
    fig.tight_layout()
    return _save(fig, path)


def plot_reliability(logits: np.ndarray, y: np.ndarray, temperature: float, path: str | Path, *,
                     bins: int = ECE_BINS, title: str = "Reliability", before: float = 1.0) -> Path:
    """Reliability diagrams before (temperature ``before``) and after (``temperature``) temperature scaling: accuracy
    per top-class confidence bin against the diagonal (perfect calibration), the gap to the bin's mean confidence,
    each bin's share of samples (right axis) and the ECE in the titles."""
    fig = Figure(figsize=(10, 4.5))
    axes = fig.subplots(1, 2)
    logits = np.asarray(logits, np.float64)
    sides = ((axes[0], float(before), f"before (T = {before:.3g})"),
             (axes[1], float(temperature), f"after (T = {temperature:.3f})"))
    for ax, t, name in sides:
        proba = softmax(logits / t, axis=1)
        r = reliability_bins(proba, y, bins)
        filled = r["count"] > 0
        centres = (r["edges"][:-1] + r["edges"][1:]) / 2
        width = 1.0 / bins
        ax.bar(centres[filled], r["accuracy"][filled], width=width * 0.95, color="tab:blue", alpha=0.8,
               label="accuracy")
        acc, conf = r["accuracy"][filled], r["confidence"][filled]
        ax.bar(centres[filled], np.abs(conf - acc), bottom=np.minimum(acc, conf), width=width * 0.95, fill=False,
               edgecolor="tab:red", hatch="//", linewidth=0.8, label="gap to mean confidence")
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("top-class confidence")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{title}, {name}: ECE {expected_calibration_error(proba, y, bins):.3f}", fontsize=9)
        ax.legend(fontsize=8, loc="upper left")
        share = ax.twinx()
        share.plot(centres[filled], r["count"][filled] / len(y), color="black", marker=".", linewidth=0.8)
        share.set_ylim(0, 1)
        share.set_ylabel("share of samples", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_history(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Training curves: loss, then accuracy and validation macro-F1, over the epochs of all stages."""
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    x = np.arange(1, len(history) + 1)
    for ax, keys, ylabel in (
        (axes[0], ("loss", "val_loss"), "loss"),
        (axes[1], ("accuracy", "val_accuracy", "val_macro_f1"), "score"),
    ):
        for key in keys:
            values = [row.get(key, np.nan) for row in history]
            if not np.all(np.isnan(np.asarray(values, dtype=float))):
                ax.plot(x, values, label=key)
        stages = [row.get("stage") for row in history]
        for i in range(1, len(stages)):
            if stages[i] != stages[i - 1]:
                ax.axvline(i + 0.5, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel("epoch (all stages)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    fig.tight_layout()
    return _save(fig, path)
