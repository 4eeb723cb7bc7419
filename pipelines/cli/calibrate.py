"""Recalibrate a trained model on labeled crops from where it is used: ``RUN`` + ``CROPS/<class>/*`` in, ``NEWRUN`` out.

    python -m pipelines.calibrate --model RUN --data CROPS --output NEWRUN [--open-set-keep 0.95] [--overwrite]

The softmax temperature is refitted on the crops' NLL and the open-set threshold set to keep ``--open-set-keep`` of
them (`classify.recalibration`); the weights do not change. Crops in folders of classes the model does not know
measure the open-set rule (AUROC, share marked unknown) and take no part in the fit. A few hundred crops cut from
the photos you label (e.g. ``build_crops`` output, sorted by hand) are enough.

Writes ``NEWRUN/model.keras`` (with ``model.augmentation.json``; ``representative.npz`` is copied from ``RUN`` for
int8 LiteRT), ``NEWRUN/recalibration.json`` (previous and new temperature, ECE, NLL, threshold and share of known
crops marked unknown on these crops; the new ECE is in-sample) and ``NEWRUN/reliability.png`` (previous and new
temperature). ``RUN`` is never written. User errors end with exit status 2 and one ``error: ...`` line.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from detectcrop.io.locks import OutputLock
from pipelines.cli import fail, setup_logging
from pipelines.run_folder import check_output, staged_run_folder

REPORT_JSON = "recalibration.json"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.calibrate", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Refit a trained model's temperature and open-set threshold on labeled deployment crops.",
    )
    p.add_argument("--model", required=True, type=Path, help="a train_fine run folder (holding model.keras)")
    p.add_argument("--data", required=True, type=Path,
                   help="labeled crops, one sub-folder per class; folders of classes the model does not know are "
                        "scored as unseen objects")
    p.add_argument("--output", required=True, type=Path, help="run folder to write the recalibrated model to")
    p.add_argument("--open-set-keep", type=float, default=None,
                   help="share of the known crops the open-set threshold keeps; 0: no threshold (default: the "
                        "model's own, 0.95 unless trained otherwise)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder at --output as a whole")
    p.add_argument("--log-level", default="INFO", help="logging level (DEBUG also shows TensorFlow's own logs)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        model_dir = args.model.resolve()
        if not (model_dir / "model.keras").is_file():
            raise FileNotFoundError(f"--model must be a train_fine run folder holding model.keras: {args.model}")
        if not args.data.is_dir():
            raise FileNotFoundError(f"--data does not exist or is not a folder: {args.data}")
        if args.open_set_keep is not None and not 0 <= args.open_set_keep <= 1:
            raise ValueError(f"--open-set-keep must be in [0, 1] (0: no open-set threshold), got {args.open_set_keep}")
        inputs = (("--model", args.model), ("--data", args.data))
        check_output(args.output, args.overwrite, inputs)
        lock = OutputLock.beside(args.output, "calibrate").acquire()
    except (ValueError, OSError) as exc:
        return fail(exc)
    try:
        try:  # again, now that no other run can finish there in between
            final = check_output(args.output, args.overwrite, inputs, locked=True)
        except (ValueError, OSError) as exc:
            return fail(exc)
        return _run(args, model_dir, final)
    finally:
        lock.release()


def _run(args: argparse.Namespace, model_dir: Path, final: Path) -> int:
    from classify.data import load_image_folder, nfc_spellings
    from classify.model import FineClassifier
    from classify.recalibration import recalibrate
    from classify.report import plot_reliability, write_json
    from detectcrop.runtime.classifier_cache import REPRESENTATIVE_FILE, representative_file

    try:
        clf = FineClassifier.load(model_dir)
        folder = load_image_folder(args.data, min_per_class=0)
        known_classes = set(str(c) for c in clf.classes_)
        spelled = nfc_spellings(known_classes)
        labels = [spelled.get(str(v), str(v)) for v in folder.label_names]
        known = [i for i, label in enumerate(labels) if label in known_classes]
        unseen = [folder.paths[i] for i, label in enumerate(labels) if label not in known_classes]
        previous_temperature = clf.temperature_
        fit = recalibrate(clf, [folder.paths[i] for i in known], [labels[i] for i in known],
                          keep=args.open_set_keep, unseen=unseen)
        report = fit.report
        with staged_run_folder(final) as out:
            clf.save(out)
            representative = representative_file(model_dir)  # int8's representative crops, under their own name
            if representative.is_file():
                shutil.copy2(representative, out / REPRESENTATIVE_FILE)
            plot_reliability(fit.logits, fit.y, clf.temperature_, out / "reliability.png", before=previous_temperature,
                             title="Recalibration crops")
            write_json(out / REPORT_JSON, {
                "model": str(model_dir), "data": str(args.data.resolve()),
                "classes": {c: labels.count(c) for c in sorted(set(labels))},
                "unseen_classes": sorted(set(labels) - known_classes), "skipped_files": folder.skipped, **report,
            })
    except (ValueError, OSError) as exc:
        return fail(exc)
    before, after = report["previous"], report["recalibrated"]
    print(f"recalibrated on {report['n']} crops (accuracy {report['accuracy']:.3f}): temperature "
          f"{before['temperature']:.3f} -> {after['temperature']:.3f} ("
          + ("90% bootstrap interval {:.2f}-{:.2f}".format(*report["temperature_interval"])
             if report["temperature_interval"] else "kept: every crop right") + "), "
          f"ECE {before['ece']:.3f} -> {after['ece']:.3f} "
          f"(in-sample; noise floor {report['ece_floor']:.3f})")
    print(f"known crops marked unknown: {100 * before['known_marked_unknown']:.1f}% -> "
          f"{100 * after['known_marked_unknown']:.1f}%" + (
              f"; unseen crops marked unknown: {100 * before['unseen_marked_unknown']:.1f}% -> "
              f"{100 * after['unseen_marked_unknown']:.1f}% (AUROC {report['auroc']:.3f})" if unseen else ""))
    print(f"model: {final / 'model.keras'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
