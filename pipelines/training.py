"""A train_fine run folder: fit the classifier, evaluate it (closed set, linear probe, calibration, open set) and
write every file of the run (`train_and_write`); the command line is `pipelines.cli.train_fine`."""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from detectcrop.io import atomic_write_text, csv_text

if TYPE_CHECKING:
    from classify.data import ImageFolder
    from classify.model import FineClassifier

logger = logging.getLogger("pipelines.cli.train_fine")  # the command's name: its log lines are the command's


#: Training and held-out crops saved as int8's representative data (each at most).
REPRESENTATIVE_CROPS = 100


def predictions_csv(rows: list[tuple[str, str, str, str, float]]) -> str:
    header = ("split", "path", "label", "predicted", "probability")
    return csv_text([header, *((s, p, t, y, f"{q:.6f}") for s, p, t, y, q in rows)])  # text cells made safe


def catalogue_warnings(data: Path, test_data: Path | None) -> list[str]:
    """A warning when the training and test crops come from synthetic benchmarks with different brand catalogues
    (the same brand names would then mean different watch designs); nothing when either records none."""
    from pipelines.synthetic import find_catalogue

    if test_data is None:
        return []
    train_cat, test_cat = find_catalogue(data), find_catalogue(test_data)
    if train_cat is None or test_cat is None or train_cat.fingerprint == test_cat.fingerprint:
        return []
    differ = train_cat.differences(test_cat)
    return [f"the test data's brand catalogue ({test_cat.fingerprint}, brand seed {test_cat.seed}, "
            f"{test_cat.difficulty}) differs from the training data's ({train_cat.fingerprint}, brand seed "
            f"{train_cat.seed}, {train_cat.difficulty}): {len(differ)} brand names mean other designs"
            + (f" ({', '.join(differ[:5])}{', ...' if len(differ) > 5 else ''})" if differ else "")
            + "; the test score does not measure these brands"]


def _probe_metrics(clf: FineClassifier, data: ImageFolder, split: str, metrics: dict[str, Any]) -> None:
    """Add the linear probe's macro-F1 and accuracy on ``data`` (cached features for validation) to ``metrics``."""
    from classify.report import classification_metrics

    predicted = clf.linear_probe_val_predictions_ if split == "val" else clf.predict_linear_probe(data.paths)
    if predicted is None:
        return
    probe = classification_metrics(data.label_names, predicted, clf.classes_.tolist())
    metrics["linear_probe_macro_f1"], metrics["linear_probe_accuracy"] = probe["macro_f1"], probe["accuracy"]
    metrics["gain_over_linear_probe"] = metrics["macro_f1"] - probe["macro_f1"]
    logger.info("%s: linear probe (logistic regression on frozen features) macro-F1 %.4f; the model %+.4f",
                split, probe["macro_f1"], metrics["gain_over_linear_probe"])


def _scores(clf: FineClassifier, data: ImageFolder) -> dict[str, np.ndarray]:
    from classify.openset import score_table

    logits, feats = clf.logits_and_features(data.paths)
    return score_table(logits, feats, clf.model_.class_means, clf.temperature_, clf.train_features_)


def _open_set(clf: FineClassifier, val: ImageFolder, known: ImageFolder, open_set: ImageFolder, keep: float) -> dict:
    """Open-set metrics of every score: known = the test crops (else validation), unknown = ``open_set``; each
    score's threshold keeps ``keep`` of the known validation crops. The headline is the model's own score."""
    from classify.report import open_set_metrics

    val_s, known_s, unknown_s = _scores(clf, val), _scores(clf, known), _scores(clf, open_set)
    per_score = {name: open_set_metrics(val_s[name], known_s[name], unknown_s[name], score=name, keep=keep)
                 for name in val_s}
    for name, m in per_score.items():
        logger.info("open set, %s: AUROC %.4f; keeping %.0f%% of known validation crops accepts %.1f%% of %d "
                    "unseen-class crops", name, m["auroc"], 100 * keep, 100 * m["fpr_at_95_tpr"], m["n_unknown"])
    metrics = dict(per_score[clf.model_.open_set_score])
    metrics["scores"] = {name: {k: m[k] for k in ("auroc", "fpr_at_95_tpr", "threshold", "known_kept")}
                         for name, m in per_score.items()}
    return metrics


def _calibration(clf: FineClassifier, data: ImageFolder, split: str, out: Path) -> dict[str, Any]:
    """The 15-bin ECE before and after temperature scaling on ``data`` and the reliability diagram."""
    from classify.calibration import calibration_report
    from classify.report import plot_reliability

    if clf.calibration_ is None:
        return {"temperature": clf.temperature_, "split": None, "note": "no validation data: temperature 1"}
    logits, _ = clf.logits_and_features(data.paths)
    y = np.searchsorted(clf.classes_, np.asarray(data.label_names, dtype=object))
    report = calibration_report(logits, y, clf.temperature_, split)
    report["fit_on_val"] = {k: clf.calibration_[k] for k in ("ece_before", "ece_after", "nll_before", "nll_after", "n")}
    if "temperature_interval" in clf.calibration_:
        report["temperature_interval"] = clf.calibration_["temperature_interval"]
    plot_reliability(logits, y, clf.temperature_, out / "reliability.png", title=f"Reliability ({split})")
    logger.info("calibration: temperature %.3f; %s ECE %.4f before, %.4f after", report["temperature"], split,
                report["ece_before"], report["ece_after"])
    return report


def save_representative_crops(clf: FineClassifier, train: ImageFolder, val: ImageFolder, out: Path, seed: int) -> None:
    """A seeded sample of the training crops (representative data) and of the validation crops (held out) for
    int8."""
    from detectcrop.runtime.classifier_cache import save_representative_data

    rng = np.random.default_rng(seed)

    def sample(paths: list) -> list:
        idx = np.sort(rng.permutation(len(paths))[:REPRESENTATIVE_CROPS])
        return [paths[i] for i in idx]

    save_representative_data(out / "model.keras", sample(list(train.paths)), sample(list(val.paths)), clf.input_size_)


def _evaluate(clf: FineClassifier, data: ImageFolder, split: str, rows: list) -> tuple[dict[str, Any], np.ndarray]:
    from classify.report import classification_metrics

    proba = clf.predict_proba(data.paths)
    predicted = clf.labels_from_proba(proba)
    metrics = classification_metrics(data.label_names, predicted, clf.classes_.tolist())
    rows.extend(
        (split, str(p), t, y, float(q))
        for p, t, y, q in zip(data.paths, data.label_names, predicted, proba.max(axis=1), strict=True)
    )
    logger.info(
        "%s: accuracy %.4f, macro-F1 %.4f (%d crops)", split, metrics["accuracy"], metrics["macro_f1"], metrics["n"]
    )
    _probe_metrics(clf, data, split, metrics)
    return metrics, proba


def train_and_write(
    args: argparse.Namespace,
    classifier: Callable[[argparse.Namespace], FineClassifier],
    argv: Sequence[str] | None,
    dataset: ImageFolder,
    train: ImageFolder,
    val: ImageFolder,
    test: ImageFolder | None,
    out: Path,
    final: Path,
    t_start: float,
    open_set: ImageFolder | None = None,
) -> float:
    """Fit, evaluate and write every file of the run into ``out``; returns the headline macro-F1."""
    from classify.report import plot_confusion_matrix, plot_history, write_history_csv, write_json
    from pipelines.report_html import write_train_report

    clf = classifier(args)
    warnings = catalogue_warnings(args.data, args.test_data)
    for warning in warnings:
        logger.warning("%s", warning)
    skipped = [*dataset.skipped, *(test.skipped if test is not None else []),
               *(open_set.skipped if open_set is not None else [])]
    config: dict[str, Any] = {
        "command": "python -m pipelines.train_fine " + " ".join(sys.argv[1:] if argv is None else argv),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "classifier": {k: v for k, v in clf.get_params().items() if k != "cache_dir"},
        "classes": dataset.class_names,
        "split": {
            "train": len(train),
            "val": len(val),
            "test": len(test) if test is not None else 0,
            "groups": len(set(dataset.groups.tolist())),
            "class_counts": dataset.class_counts(),
        },
        "python": platform.python_version(),
    }
    clf.fit(train.paths, train.label_names, validation_data=(val.paths, val.label_names))
    clf.save(out / "model.keras")

    rows: list = []
    report: dict[str, Any] = {
        "best_epoch": clf.best_epoch_ + 1 if clf.best_epoch_ is not None else None,
        "timings_s": clf.timings_,
        "skipped_files_count": len(skipped),
        "skipped_files": skipped,
        "warnings": warnings,
    }
    report["val"], _ = _evaluate(clf, val, "val", rows)
    plot_confusion_matrix(
        report["val"]["confusion_matrix"],
        report["val"]["labels"],
        out / "confusion_matrix_val.png",
        predicted_labels=report["val"]["predicted_labels"],
        title="Validation confusion matrix",
    )
    headline = report["val"]
    if test is not None:
        report["test"], _ = _evaluate(clf, test, "test", rows)
        headline = report["test"]
    report["calibration"] = _calibration(clf, test if test is not None else val, "test" if test is not None else "val",
                                         out)
    report["unknown_rule"] = {"unknown_below": clf.unknown_below, "open_set_score": clf.model_.open_set_score,
                              "open_set_threshold": clf.open_set_threshold_, "open_set_keep": clf.open_set_keep}
    if open_set is not None:
        known = test if test is not None else val
        report["open_set"] = _open_set(clf, val, known, open_set, args.open_set_keep or 0.95)
        if not args.open_set_keep:  # the model has no threshold: the 95% figures only under `scores`
            report["open_set"].update(threshold=None, fpr_at_95_tpr=None, known_kept=None,
                                      note="--open-set-keep 0: no threshold; scores give each at 95%")
    save_representative_crops(clf, train, val, out, args.seed)
    plot_confusion_matrix(
        headline["confusion_matrix"],
        headline["labels"],
        out / "confusion_matrix.png",
        predicted_labels=headline["predicted_labels"],
        title=f"{'Test' if test is not None else 'Validation'} confusion matrix",
    )
    if args.litert:
        from detectcrop.runtime.classifier_export import export_and_check

        check = test if test is not None else val
        report["litert"] = export_and_check(clf, out, check.paths)
        for result in report["litert"].values():
            result["path"] = str(final / Path(result["path"]).name)
    atomic_write_text(out / "predictions.csv", predictions_csv(rows))
    write_history_csv(clf.history_, out / "history.csv")
    plot_history(clf.history_, out / "curves.png")
    config["model"] = {
        "path": str(final / "model.keras"),
        "input_size": list(clf.input_size_),
        "classes": clf.classes_.tolist(),
        "augmentation": clf.augmentation_,
    }
    config["wall_s"] = time.perf_counter() - t_start
    report["wall_s"] = config["wall_s"]
    write_json(out / "config.json", config)
    write_json(out / "report.json", report)
    write_train_report(out)
    return float(headline["macro_f1"])
