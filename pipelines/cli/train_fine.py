"""Train a fine-grained crop classifier: ``CROPS/<class>/*`` in, ``RUN/`` out.

    python -m pipelines.train_fine --data CROPS --output RUN [--backbone PRESET] [--epochs 100] [--test-data DIR]
        [--seed 0] [--augment default] [--augment-views 4] [--class-weight balanced] [--fine-tune-blocks K] ...

Writes ``RUN/model.keras`` (labels, preprocessing, temperature and the open-set rule inside),
``RUN/model.augmentation.json``, ``RUN/representative.npz`` (representative crops for int8 LiteRT,
`detectcrop.runtime.classifier_cache`), ``RUN/report.json`` (``val`` and, with ``--test-data``, ``test``;
``calibration``; ``unknown_rule``; with ``--open-set-data``, ``open_set``), ``RUN/confusion_matrix.png``,
``RUN/reliability.png`` (before / after temperature scaling), ``RUN/history.csv``, ``RUN/curves.png``,
``RUN/predictions.csv``, ``RUN/report.html`` (`pipelines.report_html`) and ``RUN/config.json`` (the resolved
configuration). Progress goes to stderr; the last line on stdout is the macro-F1 (test when ``--test-data`` is given,
else validation).

Calibration: the softmax temperature is fitted on the validation crops (NLL) and saved in the model, so every
probability the model gives is calibrated; ``report.json`` -> ``calibration`` has the 15-bin expected calibration
error before and after, on the test crops when given, else on validation (``split`` says which). The open-set rule
(``--open-set-score``, default ``energy``, the logsumexp of the logits): the score's threshold keeps
``--open-set-keep`` (95%) of the known validation crops and is saved with the model; ``label`` answers "unknown"
below it. The ``val``/``test`` metrics are closed-set (only ``--unknown-below`` applies), so they compare with the
linear probe.

Every report carries the linear-probe baseline (logistic regression on the frozen backbone's features, same split):
``val.linear_probe_macro_f1`` and ``test.linear_probe_macro_f1``. When the training and test crops both come from
synthetic benchmarks (found through ``build_crops.json``, see `pipelines.synthetic.find_catalogue`) whose brand
catalogues differ, a warning is logged and listed in ``report.json`` -> ``warnings``.

A run is built in a hidden sibling folder and renamed into place when complete, so ``RUN`` never mixes files of two
runs. An existing run folder is replaced as a whole only with ``--overwrite``. User errors (data, output, model) end
with exit status 2 and one ``error: ...`` line.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from detectcrop.io import atomic_write_text, csv_text
from detectcrop.io.images import ImageReadError
from detectcrop.io.locks import OutputLock
from detectcrop.zoo import ModelUnavailableError, presets
from pipelines.cli import fail, probability, setup_logging, whole_number
from pipelines.run_folder import check_cache_dir, check_output, staged_run_folder

if TYPE_CHECKING:
    from classify.data import ImageFolder
    from classify.model import FineClassifier

logger = logging.getLogger("pipelines.cli.train_fine")


def _blocks(text: str) -> int | str:
    """``--fine-tune-blocks``: ``auto`` or a count >= 0."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a count >= 0, got {text!r}")
    return value


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.train_fine",
        description="Transfer-learn a crop classifier on CROPS/<class>/* and report macro-F1.",
    )
    p.add_argument("--data", required=True, type=Path, help="training crops: DATA/<class>/*.jpg (+ crops.csv)")
    p.add_argument("--output", required=True, type=Path, help="run folder to write (see --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run folder as a whole (its files, e.g. an old model.tflite, are removed)")
    p.add_argument(
        "--backbone",
        default=presets.default("backbone"),
        choices=presets.names("backbone"),
        metavar="PRESET",
        help=f"backbone preset: {presets.describe('backbone')}",
    )
    p.add_argument("--input-size", type=whole_number(32, "pixels"), default=None, metavar="PIXELS",
                   help="square input side of the backbone (default: the preset's, 224); larger keeps finer detail of "
                        "small crops at (PIXELS/224)^2 times the compute, in training and in label")
    p.add_argument("--test-data", type=Path, default=None, help="held-out test crops: DIR/<class>/*")
    p.add_argument("--open-set-data", type=Path, default=None,
                   help="crops of classes the model does not know (DIR/<any>/*): report how well each open-set score "
                        "tells them from known ones (report.json -> open_set)")
    p.add_argument("--open-set-score", choices=OPEN_SET_SCORES, default="energy",
                   help="the model's score for 'is this a class I know' (label answers 'unknown' below its threshold)")
    p.add_argument("--open-set-keep", type=float, default=0.95,
                   help="the open-set threshold keeps this share of known validation crops (0: no threshold)")
    p.add_argument("--epochs", type=whole_number(1), default=100,
                   help="head-stage epochs (early stopping may end sooner)")
    p.add_argument("--batch-size", type=whole_number(1), default=32)
    p.add_argument("--lr", type=float, default=0.001, help="Adam learning rate of the head")
    p.add_argument("--dense-units", type=whole_number(0), default=512,
                   help="hidden units of the head (0: a linear head)")
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="validation share, split by class and grouped by source photo / duplicate group",
    )
    p.add_argument(
        "--augment",
        default="default",
        help="augmentation: 'default', 'light', 'none', or a JSON file (albumentations to_dict)",
    )
    p.add_argument(
        "--augment-views",
        type=whole_number(0),
        default=4,
        help="augmented views per training crop, cached for the frozen stage (0: none)",
    )
    p.add_argument("--class-weight", choices=["none", "balanced"], default="none")
    p.add_argument("--patience", type=whole_number(0), default=20, help="early-stopping patience in epochs (0: off)")
    p.add_argument(
        "--fine-tune-blocks",
        type=_blocks,
        default="auto",
        metavar="K|auto",
        help="after the head stage, unfreeze the top K backbone blocks (BatchNorm stays frozen; 0: head only; "
             "auto: 4 where the backbone can be fine-tuned, else 0)",
    )
    p.add_argument("--fine-tune-epochs", type=whole_number(0), default=15)
    p.add_argument("--fine-tune-lr", type=float, default=3e-4, help="peak learning rate of fine-tuning")
    p.add_argument("--fine-tune-warmup-epochs", type=whole_number(0), default=1,
                   help="epochs of linear warm-up to --fine-tune-lr before its cosine decay")
    p.add_argument(
        "--unknown-below",
        type=probability,
        default=None,
        help="answer 'unknown' when the top probability is below this (saved with the model)",
    )
    p.add_argument("--min-per-class", type=whole_number(0), default=5, help="fewest images a class may have")
    p.add_argument("--seed", type=int, default=0, help="seed for the split, augmentation and training")
    p.add_argument("--cache-dir", type=Path, default=None, help="reuse backbone features across runs from here")
    p.add_argument(
        "--litert",
        action="store_true",
        help="also export LiteRT models (model.tflite: float, model_dynamic.tflite: int8 weights) and check them "
             "against the Keras model",
    )
    p.add_argument("--tflite", dest="litert", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--log-level", default="INFO", help="logging level (DEBUG also shows TensorFlow's own logs)")
    return p


#: `classify.openset.GRAPH_SCORES` (not imported here: --help must not load TensorFlow).
OPEN_SET_SCORES = ("max_softmax", "max_logit", "energy", "class_mean_cosine")
#: Training and held-out crops saved for int8 conversion (each at most).
INT8_CALIBRATION_CROPS = 100


def _predictions_csv(rows: list[tuple[str, str, str, str, float]]) -> str:
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


def _save_int8_calibration(clf: FineClassifier, train: ImageFolder, val: ImageFolder, out: Path, seed: int) -> None:
    """A seeded sample of the training crops (calibration) and of the validation crops (held out) for int8."""
    from detectcrop.runtime.classifier_cache import save_representative_data

    rng = np.random.default_rng(seed)

    def sample(paths: list) -> list:
        idx = np.sort(rng.permutation(len(paths))[:INT8_CALIBRATION_CROPS])
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


def main(argv: Sequence[str] | None = None) -> int:
    """Train, evaluate and write ``RUN/``; 0 on success, 2 on a data, output or model problem (one-line error)."""
    args = get_args_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:  # one run per run folder: a second one stops at once, naming the first
        check_output(args.output, args.overwrite, _inputs(args))
        check_cache_dir(args.cache_dir, args.output, _inputs(args))
        lock = OutputLock.beside(args.output, "train_fine").acquire()
    except (ValueError, OSError) as exc:
        return fail(exc)
    try:
        return _main(args, argv)
    finally:
        lock.release()


def _inputs(args: argparse.Namespace) -> list[tuple[str, Path | None]]:
    """The input folders a run folder must neither hold nor lie in."""
    return [("--data", args.data), ("--test-data", args.test_data), ("--open-set-data", args.open_set_data)]


def _main(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    # Heavy imports (TensorFlow, scikit-learn, matplotlib) after the logging set-up, and never for --help.
    from classify.data import load_image_folder, split_image_folder

    t_start = time.perf_counter()
    try:  # data and output problems are the user's to fix: a one-line message, no traceback
        final = check_output(args.output, args.overwrite, _inputs(args), locked=True)
        dataset = load_image_folder(args.data, min_per_class=args.min_per_class)
        train, val = split_image_folder(dataset, val_fraction=args.val_fraction, seed=args.seed)
        test = None
        if args.test_data is not None:
            test = load_image_folder(args.test_data, class_names=dataset.class_names, min_per_class=0)
        open_set = None
        if args.open_set_data is not None:
            open_set = load_image_folder(args.open_set_data, min_per_class=0)
    except (ValueError, OSError) as exc:
        return fail(exc)
    logger.info(
        "split: %d train / %d val crops, %d groups, classes %s",
        len(train),
        len(val),
        len(set(dataset.groups.tolist())),
        dataset.class_counts(),
    )
    try:
        with staged_run_folder(final) as out:
            headline = _train_and_write(args, argv, dataset, train, val, test, out, final, t_start, open_set)
    except (ModelUnavailableError, ImageReadError, ValueError, OSError) as exc:
        logger.debug("training failed", exc_info=True)
        return fail(exc)
    logger.info("wrote %s in %.1fs; macro-F1 (%s) follows", final, time.perf_counter() - t_start,
                "test" if test is not None else "val")
    print(f"{headline:.4f}", flush=True)
    return 0


def _classifier(args: argparse.Namespace) -> FineClassifier:
    from classify.model import FineClassifier

    return FineClassifier(
        args.backbone,
        input_size=args.input_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        dense_units=args.dense_units,
        dropout=args.dropout,
        augmentation=args.augment,
        augment_views=args.augment_views,
        class_weight=None if args.class_weight == "none" else args.class_weight,
        patience=args.patience,
        fine_tune_blocks=args.fine_tune_blocks,
        fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_learning_rate=args.fine_tune_lr,
        fine_tune_warmup_epochs=args.fine_tune_warmup_epochs,
        unknown_below=args.unknown_below,
        open_set_score=args.open_set_score,
        open_set_keep=args.open_set_keep or None,
        cache_dir=args.cache_dir,
        seed=args.seed,
        show_progress=not args.no_progress,
    )


def _train_and_write(
    args: argparse.Namespace,
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

    clf = _classifier(args)
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
    _save_int8_calibration(clf, train, val, out, args.seed)
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
    atomic_write_text(out / "predictions.csv", _predictions_csv(rows))
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


if __name__ == "__main__":
    sys.exit(main())
