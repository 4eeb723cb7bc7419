"""What `pipelines.compose.DetectThenClassify` is made of: loading its steps, the options a copy carries, the
inputs of a run (listed as the folder commands list them) and the stream that labels them in batches."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from detectcrop.core import ImageCrops, process_image
from detectcrop.decoding import read_for_detection
from detectcrop.io import printable
from detectcrop.io.images import ImageReadError, iter_images
from detectcrop.io.inputs import read_entries, scan_inputs
from pipelines.results import ImageResult, classify_crops

logger = logging.getLogger(__name__)

#: The loaded classifier's settings a copy of the pipeline (pickle, `from_config`, clone, a Ray actor) carries over.
CLASSIFIER_OPTIONS = ("unknown_below", "unknown_label")


def load_classifier(spec: str | os.PathLike, runtime: str, precision: str) -> Any:
    """A saved FineClassifier on TensorFlow (Keras), or on LiteRT (exported and cached beside it)."""
    from detectcrop.runtime import ConversionError, resolve_runtime

    if resolve_runtime(runtime) == "litert":
        from detectcrop.runtime.classifier_cache import load_litert_classifier

        try:
            return load_litert_classifier(spec, precision)
        except ConversionError as exc:
            logger.warning("classifier %s does not convert to LiteRT, running it on TensorFlow: %s", spec, exc)
    from classify.model import FineClassifier

    return FineClassifier.load(spec)


def step_source(step: Any, what: str, strict: bool = True) -> str:
    """The preset name or path a step was given as (or, not ``strict``, its type's name); a ``ValueError`` for an
    object that cannot be rebuilt elsewhere."""
    if isinstance(step, str | os.PathLike):
        return os.fspath(step)
    if what == "detector" and isinstance(getattr(step, "name", None), str) and step.name != "custom":
        return step.name
    if strict:
        raise ValueError(f"the {what} was given as an object; give it as a preset name or path to rebuild the "
                         f"pipeline from its config (save a classifier first, then pass its path)")
    return type(step).__name__


def step_options(pipe: Any) -> dict[str, dict[str, Any]]:
    """``detector_options`` and ``classifier_options``: what a copy of ``pipe`` applies when it loads its models
    (the settings changed on the loaded models with ``set_params(step__...)``, the runtime and precision served)."""
    loaded = pipe.__dict__.get("_loaded", {})
    detector = loaded.get("detector", (None, pipe.detector))[1]
    classifier = loaded.get("classifier", (None, pipe.classifier))[1]
    options: dict[str, dict[str, Any]] = {}
    if not isinstance(detector, str | os.PathLike) and hasattr(detector, "nms_iou"):
        options["detector_options"] = {"min_score": detector.min_score, "nms_iou": detector.nms_iou}
        if getattr(detector, "runtime", None) is not None:  # the runtime it actually loaded on (after fallback)
            options["detector_options"]["runtime"] = detector.runtime
        if getattr(detector, "precision", "float") != "float":  # the precision it serves (after the int8 rule)
            options["detector_options"]["precision"] = detector.precision
    elif "_detector_options" in pipe.__dict__:
        options["detector_options"] = dict(pipe._detector_options)
    if not isinstance(classifier, str | os.PathLike):  # the unknown rule as set on it (set_params included)
        options["classifier_options"] = {k: getattr(classifier, k) for k in CLASSIFIER_OPTIONS}
    elif "_classifier_options" in pipe.__dict__:
        options["classifier_options"] = dict(pipe._classifier_options)
    return options


def with_options(pipe: Any, options: dict[str, dict[str, Any]]) -> Any:
    """``pipe`` with ``detector_options`` / ``classifier_options`` (`step_options`) applied when it loads its models."""
    for key in ("detector_options", "classifier_options"):
        if options.get(key):
            setattr(pipe, f"_{key}", dict(options[key]))
    return pipe


def split_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A `to_config` dict as the pipeline's arguments (crop policy and tiles as their dataclasses) and its options."""
    from detectcrop.crops import CropPolicy
    from detectcrop.tiling import TileConfig

    arguments = dict(config)
    options = {key: arguments.pop(key) for key in ("detector_options", "classifier_options") if key in arguments}
    arguments["crop_policy"] = CropPolicy(**arguments["crop_policy"])
    arguments["tile"] = None if arguments.get("tile") is None else TileConfig(**arguments["tile"])
    return arguments, options


def served_precisions(pipe: Any) -> dict[str, str]:
    """``precision`` and ``detector_precision`` as served by the loaded models (``auto`` resolved)."""
    loaded = pipe.__dict__.get("_loaded", {})
    detector = loaded.get("detector", (None, pipe.detector))[1]
    classifier = loaded.get("classifier", (None, pipe.classifier))[1]
    served = {}
    if not isinstance(classifier, str | os.PathLike):
        served["precision"] = getattr(classifier, "meta", {}).get("quantization", "float")
    if not isinstance(detector, str | os.PathLike):
        served["detector_precision"] = getattr(detector, "precision", "float")
    return served


def read_one(path: str | os.PathLike, reduction: Any, max_pixels: int | None) -> tuple[str, Any]:
    """``(path text, image or its read error)`` of one file, as `label_stream` takes it."""
    try:
        return os.fspath(path), read_for_detection(path, reduction, max_pixels=max_pixels)
    except ImageReadError as exc:
        return os.fspath(path), exc


def run_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike], reduction: Any, *, workers: int, prefetch: int,
               max_pixels: int | None, decode_budget: int | None) -> Iterator[tuple[str, Any]]:
    """``(path text, image or read error)`` of a run's inputs, decoded ahead on threads: a folder's entries as the
    folder commands list them (`detectcrop.io.inputs.scan_inputs`: every entry, those that cannot be read as
    errors), one file, or the paths given; large JPEGs at ``reduction`` (`detectcrop.decoding`)."""
    if isinstance(inputs, str | os.PathLike) and Path(inputs).is_dir():
        stream: Iterable[tuple[Any, Any]] = read_entries(
            scan_inputs(inputs), workers=workers, prefetch=prefetch, max_pixels=max_pixels,
            decode_budget=decode_budget, reduction=reduction)
        for entry, image in stream:
            yield os.fspath(entry.path), image
            del image  # not held while the next one decodes
        return
    paths = [Path(inputs)] if isinstance(inputs, str | os.PathLike) else [Path(p) for p in inputs]
    stream = iter_images(paths, workers=workers, prefetch=prefetch, max_pixels=max_pixels, decode_budget=decode_budget,
                         reader=lambda path, **kwargs: read_for_detection(path, reduction, **kwargs))
    for path, image in stream:
        yield os.fspath(path), image
        del image


def label_stream(pipe: Any, items: Iterable[tuple[str, Any]]) -> Iterator[ImageResult]:
    """Label ``(source, image or read error)`` items in order with the loaded ``pipe``: stage 1 image by image,
    stage 2 on batches of ``pipe.batch_size`` crops (crops of several images share a batch)."""
    steps = pipe.steps_
    pending: list[ImageCrops] = []
    n_crops = 0
    # the full-resolution decode of a reduced image with crops runs here while the detector goes on
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="detectcrop-full") as pool:
        finishing: list[Future] = []
        for source, image in items:
            item = process_image(source, image, steps, defer=True)
            del image  # only the crops are kept: the image is not held while the next one decodes
            if item.reduced is not None:
                finishing.append(pool.submit(item.finish))
            pending.append(item)
            n_crops += len(item.boxes)
            if n_crops >= pipe.batch_size or len(pending) >= pipe.batch_size:  # full batch, or many empty images
                yield from _classify(pipe, pending, finishing)
                pending, finishing, n_crops = [], [], 0
        yield from _classify(pipe, pending, finishing)


def _classify(pipe: Any, pending: list[ImageCrops], finishing: list[Future]) -> Iterator[ImageResult]:
    for future in finishing:  # crops still waiting for their full-resolution decode
        future.result()
    for item in pending:
        if item.status == "error":
            logger.warning("%s: %s", printable(item.source), item.error)  # names may hold undecodable bytes
    classifier = pipe.classifier_
    if pipe.unknown_below is not None:  # the pipeline's rule, else the classifier's own (saved with the model)
        unknown_below, unknown_label = pipe.unknown_below, pipe.unknown_label
    else:
        unknown_below = getattr(classifier, "unknown_below", None)
        unknown_label = getattr(classifier, "unknown_label", pipe.unknown_label)
    threshold = getattr(classifier, "open_set_threshold_", None) if pipe.open_set else None
    yield from classify_crops(pending, classifier, pipe.top_k, unknown_below, unknown_label, threshold)


__all__ = ["CLASSIFIER_OPTIONS", "label_stream", "load_classifier", "read_one", "run_inputs",
           "served_precisions", "split_config", "step_options", "step_source", "with_options"]
