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

import dataclasses
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from detectcrop.core import DetectSteps, category_ids, detect_objects
from detectcrop.crops import CropPolicy
from detectcrop.decoding import DEFAULT_DECODE, ReducedImage
from detectcrop.detections import Detections
from detectcrop.io.images import DEFAULT_DECODE_BUDGET, DEFAULT_MAX_PIXELS, ImageReadError
from detectcrop.tiling import TileConfig
from pipelines.params import StepParams
from pipelines.pipeline_steps import (
    CLASSIFIER_OPTIONS,
    label_stream,
    load_classifier,
    read_one,
    run_inputs,
    served_precisions,
    split_config,
    step_options,
    step_source,
    with_options,
)
from pipelines.results import ImageResult, LabeledObject

__all__ = ["CLASSIFIER_OPTIONS", "DetectThenClassify", "ImageResult", "LabeledObject"]


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
        precision: the LiteRT classifier's ``"float"``, ``"int8"`` or ``"auto"`` (the default: int8 where its
            measured agreement holds, `detectcrop.runtime.classifier_cache`).
        decode: ``"full"``, ``"reduced"`` or ``"auto"``: decode large JPEGs read from paths at reduced size for
            whole-image detection (`detectcrop.decoding`); crops always come from the full resolution.
        detector_precision: the LiteRT detector's ``"float"``, ``"int8"`` or ``"auto"`` (the default: int8 where a
            calibration folder is given and its held-out recall holds, `detectcrop.runtime.detector_flatbuffer`).
        detector_representative_data: the calibration folder of an int8 detector (`detectcrop.runtime.int8`).
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
        if name == "detector":
            from detectcrop.detector import Detector

            options = {"runtime": self.runtime, "precision": self.detector_precision,
                       "representative_data": self.detector_representative_data,
                       **self.__dict__.get("_detector_options", {})}
            return Detector.from_preset(spec, **options)
        classifier = load_classifier(spec, self.runtime, self.precision)
        for key, value in self.__dict__.get("_classifier_options", {}).items():
            setattr(classifier, key, value)  # what set_params(classifier__...) changed before a copy was made
        return classifier

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
        config = {name: getattr(self, name) for name in self._param_names()}
        config.update(detector=step_source(self.detector, "detector"),
                      classifier=step_source(self.classifier, "classifier"),
                      crop_policy=dataclasses.asdict(self.crop_policy),
                      tile=None if self.tile is None else dataclasses.asdict(self.tile))
        # the precisions served (after `auto` and its checks), so a copy elsewhere and a resumed run load the same
        config.update(served_precisions(self))
        config.update(step_options(self))
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DetectThenClassify:
        """The pipeline `to_config` describes (models load lazily, with the options recorded)."""
        arguments, options = split_config(config)
        return with_options(cls(**arguments), options)

    def __sklearn_clone__(self) -> DetectThenClassify:
        """`sklearn.base.clone`: the same parameters, and the settings changed on loaded models with
        ``set_params(step__...)`` (applied when the copy loads them). Models given as objects are shared: the
        pipeline never fits them."""
        return with_options(type(self)(**self.get_params(deep=False)), step_options(self))

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
        if isinstance(image, str | os.PathLike):
            return next(self.label_images([read_one(image, self.load().steps_.reduction, self.max_pixels)]))
        from classify.batches import as_rgb_uint8

        return next(self.label_images([("<array>", as_rgb_uint8(image))]))

    def run(self, inputs: str | os.PathLike | Iterable[str | os.PathLike], *, workers: int = 2,
            prefetch: int = 8, decode_budget: int | None = DEFAULT_DECODE_BUDGET) -> Iterator[ImageResult]:
        """Label a folder (recursively, in a stable order), one file, or an iterable of paths: a folder is listed as
        the folder commands list it (`detectcrop.io.inputs.scan_inputs`: hidden files are inputs, hidden folders and
        links to folders are not searched, every entry that cannot be read is an ``error`` result).

        Results stream in input order; decoding is prefetched by ``workers`` threads and crops of consecutive images
        are classified together, so memory stays bounded by ``prefetch`` images (and ``decode_budget`` bytes) plus
        one batch of crops.
        """
        stream = run_inputs(inputs, self.load().steps_.reduction, workers=workers, prefetch=prefetch,
                            max_pixels=self.max_pixels, decode_budget=decode_budget)
        return self.label_images(stream)

    def detect(self, image: np.ndarray) -> Detections:
        """Stage 1 alone: the parent-category detections of one image."""
        return detect_objects(image, self.load().steps_)

    def label_images(
        self, items: Iterable[tuple[str, np.ndarray | ReducedImage | ImageReadError]]
    ) -> Iterator[ImageResult]:
        """Label ``(source, image or read error)`` items in order; one result per item, errors included (an image
        may be a `ReducedImage` of `read_for_detection`)."""
        return label_stream(self.load(), items)

    def __repr__(self) -> str:
        return (f"DetectThenClassify(detector={step_source(self.detector, 'detector', strict=False)!r}, "
                f"classifier={step_source(self.classifier, 'classifier', strict=False)!r}, category={self.category!r}, "
                f"tile={self.tile is not None})")
