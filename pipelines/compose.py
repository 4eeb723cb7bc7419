"""`DetectThenClassify`: a detector, a crop policy and a classifier composed into one labeling pipeline.

    pipe = DetectThenClassify("centernet_mobilenetv3_512", "runs/watches", category="clock", tile=TileConfig())
    result = pipe("photo.jpg")                    # one image: labeled objects
    for result in pipe.run("photos/"):            # a folder, streamed with bounded memory
        ...

Steps are replaceable: the detector is anything with ``detect(rgb_uint8) -> Detections`` (or a preset name, handle
or SavedModel path), the classifier anything with ``classes_`` and ``predict_proba(list_of_rgb_crops)`` (or the path
of a saved `classify.FineClassifier`). Parameters follow scikit-learn (``get_params`` / ``set_params`` with
``step__param``). A pipeline built from names and paths is rebuilt from ``to_config()`` in another process, and pickles
as that config, so it can be shipped to workers of a distributed engine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from detectcrop.core import DetectSteps, ImageCrops, category_ids, detect_objects, process_image
from detectcrop.crops import CropPolicy
from detectcrop.decoding import DEFAULT_DECODE, ReducedImage, read_for_detection
from detectcrop.detections import Detections
from detectcrop.io import printable
from detectcrop.io.images import DEFAULT_DECODE_BUDGET, DEFAULT_MAX_PIXELS, ImageReadError, iter_images
from detectcrop.io.inputs import read_entries, scan_inputs
from detectcrop.tiling import TileConfig
from pipelines.params import StepParams
from pipelines.pipeline_config import clone_pipeline, pipeline_config, pipeline_from_config, source_name
from pipelines.results import ImageResult, LabeledObject, classify_crops

logger = logging.getLogger(__name__)

__all__ = ["DetectThenClassify", "ImageResult", "LabeledObject"]


class DetectThenClassify(StepParams):
    """Detect ``category`` objects, crop them by ``crop_policy`` and label each crop with ``classifier``.

    Args:
        detector: a `detectcrop.Detector` (or any object with ``detect``), or a preset name, handle or path.
        classifier: a fitted classifier (``classes_``, ``predict_proba``), or the path of a saved FineClassifier.
        category: COCO name(s) or id(s) of the parent category to classify (``None``: every detection).
        min_score: minimum detection score.
        crop_policy: how boxes become crops (padding, square, minimum size, crops per image).
        tile: `TileConfig` for small objects (overlapping tiles + the whole image), or ``None``.
        top_k: how many ``(label, probability)`` pairs to keep per object.
        unknown_below: label an object ``unknown_label`` when its top probability is below this (``None``: the
            classifier's own ``unknown_below``, e.g. the one a FineClassifier was trained and saved with).
        unknown_label: the answer when no class stands out.
        open_set: also label an object ``unknown_label`` when the classifier's open-set score is below the threshold
            saved with it (``open_set_threshold_``, chosen at training to keep 95% of known validation objects); an
            object is unknown when either rule says so. ``False``: the probability floor alone.
        batch_size: crops classified per batch (crops of several images share a batch).
        max_pixels: refuse larger images (decompression bombs); ``None``: no limit.
        runtime: ``"tf"``, ``"litert"`` (CPU, XNNPACK) or ``"auto"`` (LiteRT on CPU-only machines), for the steps given
            by name or path (`detectcrop.runtime.resolve_runtime`); a model that does not convert runs on TensorFlow.
        precision: the LiteRT classifier's ``"float"``, ``"dynamic"``, ``"int8"`` or ``"auto"`` (the default: int8
            where its measured agreement holds, `detectcrop.runtime.classifier_cache`).
        decode: ``"full"``, ``"reduced"`` or ``"auto"``: decode large JPEGs read from paths at reduced size for
            whole-image detection (`detectcrop.decoding`); crops always come from the full resolution.
        detector_precision: the LiteRT detector's ``"float"``, ``"int8"`` or ``"auto"`` (the default: int8 where a
            folder of representative photos is given and its held-out recall holds,
            `detectcrop.runtime.detector_flatbuffer`).
        detector_representative_data: the folder of representative photos of an int8 detector
            (`detectcrop.runtime.int8`).
    """

    STEPS = ("detector", "classifier", "crop_policy", "tile")

    def __init__(
        self,
        detector: Any,
        classifier: Any,
        *,
        category: str | int | list[str | int] | None = "clock",
        min_score: float = 0.3,
        crop_policy: CropPolicy | None = None,
        tile: TileConfig | None = None,
        top_k: int = 3,
        unknown_below: float | None = None,
        unknown_label: str = "unknown",
        open_set: bool = True,
        batch_size: int = 32,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        runtime: str = "tf",
        precision: str = "auto",
        decode: str = DEFAULT_DECODE,
        detector_precision: str = "auto",
        detector_representative_data: str | None = None,
    ) -> None:
        self.detector = detector
        self.classifier = classifier
        self.category = category
        self.min_score = min_score
        self.crop_policy = crop_policy if crop_policy is not None else CropPolicy()
        self.tile = tile
        self.top_k = top_k
        self.unknown_below = unknown_below
        self.unknown_label = unknown_label
        self.open_set = open_set
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.runtime = runtime
        self.precision = precision
        self.decode = decode
        self.detector_precision = detector_precision
        self.detector_representative_data = detector_representative_data

    # ------------------------------------------------------------------ steps
    def load(self) -> DetectThenClassify:
        """Load the detector and classifier given by preset name, handle or path (once; a no-op when loaded)."""
        for name in ("detector", "classifier"):
            self._load_step(name)
        return self

    def _load_model(self, name: str, spec: str | os.PathLike) -> Any:
        return _load_model(self, name, spec)

    def set_params(self, **params: Any) -> DetectThenClassify:
        if "detector__min_score" in params:  # detect_objects passes the pipeline's own to the detector
            raise ValueError("the pipeline's min_score decides which detections are kept: "
                             "use set_params(min_score=...)")
        return super().set_params(**params)

    @property
    def detector_(self) -> Any:
        """The detector object (after `load` when it was given by preset name, handle or path)."""
        return self._step("detector")

    @property
    def classifier_(self) -> Any:
        """The classifier object (after `load` when it was given as the path of a saved FineClassifier)."""
        return self._step("classifier")

    @property
    def category_ids_(self) -> list[int] | None:
        ids = category_ids(self.category)
        return None if ids is None else list(ids)

    @property
    def steps_(self) -> DetectSteps:
        """Stage 1 as the per-image core runs it (after `load`)."""
        return DetectSteps(self.detector_, category_ids(self.category), self.min_score, self.crop_policy, self.tile,
                           self.decode)

    # ------------------------------------------------------------------ config (rebuild elsewhere)
    def to_config(self) -> dict[str, Any]:
        """A JSON-able description from which `from_config` rebuilds the pipeline in another process. Once loaded,
        ``precision`` and ``detector_precision`` are the precisions served (``auto`` resolved)."""
        return pipeline_config(self)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DetectThenClassify:
        return pipeline_from_config(cls, config)

    def __sklearn_clone__(self) -> DetectThenClassify:
        """`sklearn.base.clone`: the same parameters, and what ``set_params(classifier__...)`` or
        ``set_params(detector__...)`` changed on a step given by name or path (the copy loads its models anew)."""
        return clone_pipeline(self)

    def __getstate__(self) -> dict[str, Any]:
        """Pickles as `to_config` (models are reloaded on the other side): steps must be names or paths."""
        try:
            return self.to_config()
        except ValueError as exc:
            raise TypeError(f"cannot pickle this DetectThenClassify: {exc}") from exc

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(type(self).from_config(state).__dict__)

    # ------------------------------------------------------------------ inference
    def __call__(self, image: np.ndarray | str | os.PathLike) -> ImageResult:
        """Label one image: a path, or an array or Pillow image (converted as `classify.batches.as_rgb_uint8` says:
        greyscale, RGBA, uint16 and float arrays are read as their files would be; a ``ValueError`` for what is not an
        image)."""
        return next(self.label_images([_one_item(self, image)]))

    def run(self, inputs: str | os.PathLike | Iterable[str | os.PathLike], *, workers: int = 2,
            prefetch: int = 8, decode_budget: int | None = DEFAULT_DECODE_BUDGET) -> Iterator[ImageResult]:
        """Label a folder (every entry, recursively, sorted, by the rules of ``label``: `detectcrop.io.inputs`; an
        entry that is not an image is a result with status ``error``), one file, or an iterable of paths.

        Results stream in input order; decoding is prefetched by ``workers`` threads and crops of consecutive images
        are classified together, so memory stays bounded by ``prefetch`` images (and ``decode_budget`` bytes) plus
        one batch of crops.
        """
        reduction = self.load().steps_.reduction
        if isinstance(inputs, str | os.PathLike) and Path(inputs).is_dir():  # every entry, as `label` lists them
            entries = read_entries(scan_inputs(inputs), workers=workers, prefetch=prefetch, max_pixels=self.max_pixels,
                                   decode_budget=decode_budget, reduction=reduction)
            return self.label_images(_sources((entry.path, image) for entry, image in entries))
        paths = [Path(inputs)] if isinstance(inputs, str | os.PathLike) else [Path(p) for p in inputs]
        stream = iter_images(paths, workers=workers, prefetch=prefetch, max_pixels=self.max_pixels,
                             decode_budget=decode_budget,
                             reader=lambda path, **kwargs: read_for_detection(path, reduction, **kwargs))
        return self.label_images(_sources(stream))

    def detect(self, image: np.ndarray) -> Detections:
        """Stage 1 alone: the parent-category detections of one image."""
        return detect_objects(image, self.load().steps_)

    def label_images(
        self, items: Iterable[tuple[str, np.ndarray | ReducedImage | ImageReadError]]
    ) -> Iterator[ImageResult]:
        """Label ``(source, image or read error)`` items in order; one result per item, errors included (an image
        may be a `ReducedImage` of `read_for_detection`)."""
        self.load()
        steps = self.steps_
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
                if n_crops >= self.batch_size or len(pending) >= self.batch_size:  # full batch, or many empty images
                    yield from _classify(self, pending, finishing)
                    pending, finishing, n_crops = [], [], 0
            yield from _classify(self, pending, finishing)

    def __repr__(self) -> str:
        return (f"DetectThenClassify(detector={source_name(self.detector, 'detector', strict=False)!r}, "
                f"classifier={source_name(self.classifier, 'classifier', strict=False)!r}, category={self.category!r}, "
                f"tile={self.tile is not None})")


def _load_model(pipe: DetectThenClassify, name: str, spec: str | os.PathLike) -> Any:
    """The detector or classifier given by name or path, loaded with the pipeline's runtime and precisions."""
    if name == "detector":
        from detectcrop.detector import Detector

        options = {"runtime": pipe.runtime, "precision": pipe.detector_precision,
                   "representative_data": pipe.detector_representative_data,
                   **pipe.__dict__.get("_detector_options", {})}
        return Detector.from_preset(spec, **options)
    classifier = _load_classifier(spec, pipe.runtime, pipe.precision)
    for key, value in pipe.__dict__.get("_classifier_options", {}).items():
        setattr(classifier, key, value)  # what set_params(classifier__...) changed before a copy was made
    return classifier


def _classify(pipe: DetectThenClassify, pending: list[ImageCrops], finishing: list[Future]) -> Iterator[ImageResult]:
    """Label the crops of ``pending`` (once their full-resolution decodes in ``finishing`` are done) by the pipeline's
    unknown rule, else the classifier's own."""
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


def _one_item(pipe: DetectThenClassify, image: Any) -> tuple[str, Any]:
    """``(source, image or read error)`` for one path, array or Pillow image."""
    if isinstance(image, str | os.PathLike):
        try:
            return os.fspath(image), read_for_detection(image, pipe.load().steps_.reduction, max_pixels=pipe.max_pixels)
        except ImageReadError as exc:
            return os.fspath(image), exc
    from classify.batches import as_rgb_uint8

    return "<array>", as_rgb_uint8(image)


def _load_classifier(spec: str | os.PathLike, runtime: str, precision: str) -> Any:
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


def _sources(stream: Iterable[tuple[os.PathLike, Any]]) -> Iterator[tuple[str, Any]]:
    """``(path, image)`` pairs as ``(source text, image)``, not holding an image while the next one decodes."""
    for path, image in stream:
        yield os.fspath(path), image
        del image
