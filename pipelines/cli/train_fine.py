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
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from detectcrop.io.images import ImageReadError
from detectcrop.io.locks import OutputLock
from detectcrop.zoo import ModelUnavailableError, presets
from pipelines.cli import fail, probability, setup_logging, whole_number
from pipelines.run_folder import check_cache_dir, check_output, staged_run_folder
from pipelines.training import train_and_write

if TYPE_CHECKING:
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
                   help="square input side of the backbone (default: the preset's training size, 448 for the offline "
                        "default, else its ImageNet size); larger keeps finer detail of small crops at "
                        "(PIXELS/224)^2 times the compute, in training and in label")
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
        help="augmentation: 'default' (half the views with colour changed, half at lower resolution), 'colour' "
             "(small colour jitter, full resolution, for classes whose colour is a cue), 'light', 'strong', 'none', "
             "or a JSON file (albumentations to_dict)",
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
             "auto: the preset's count, 8 for the offline default, else 4, where the backbone can be fine-tuned, "
             "else 0)",
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
            headline = train_and_write(args, _classifier, argv, dataset, train, val, test, out, final, t_start,
                                       open_set)
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


if __name__ == "__main__":
    sys.exit(main())
