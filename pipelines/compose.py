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
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detectcrop.core import DetectSteps, ImageCrops, category_ids, detect_objects, process_image
from detectcrop.crops import CropPolicy
from detectcrop.detections import Detections
from detectcrop.images import DEFAULT_DECODE_BUDGET, DEFAULT_MAX_PIXELS, ImageReadError, iter_images, read_image
from detectcrop.inputs import discover_images
from detectcrop.io import one_line
from detectcrop.tiling import TileConfig

logger = logging.getLogger(__name__)

STEPS = ("detector", "classifier", "crop_policy", "tile")


@dataclass
class LabeledObject:
    """One detected and classified object."""

    xyxy: tuple[float, float, float, float]  # detection box, source pixels
    crop_box: tuple[int, int, int, int]  # the pixels that were classified (padding/squaring applied)
    score: float  # detection score
    class_id: int  # COCO id of the detection
    label: str  # fine-grained label, or the unknown label when no class stands out
    probability: float  # classifier probability of the top class
    top_k: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class ImageResult:
    """What the pipeline found in one image; ``status`` is ``ok``, ``no_detection`` or ``error``."""

    source: str
    status: str
    objects: list[LabeledObject] = field(default_factory=list)
    width: int = 0
    height: int = 0
    error: str = ""

    @property
    def labels(self) -> list[str]:
        return [o.label for o in self.objects]

    def to_detections(self) -> Detections:
        """The objects as `Detections`, with ``label`` and ``probability`` in ``data``."""
        if not self.objects:
            return Detections.empty()
        return Detections(
            np.array([o.xyxy for o in self.objects]), np.array([o.score for o in self.objects]),
            np.array([o.class_id for o in self.objects]),
            {"label": np.array(self.labels, dtype=object),
             "probability": np.array([o.probability for o in self.objects], dtype=np.float32)},
        )


class DetectThenClassify:
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
        batch_size: crops classified per batch (crops of several images share a batch).
        max_pixels: refuse larger images (decompression bombs); ``None``: no limit.
        runtime: ``"tf"``, ``"litert"`` (CPU, XNNPACK) or ``"auto"`` (LiteRT on CPU-only machines), for the steps given
            by name or path (`detectcrop.litert.resolve_runtime`); a model that does not convert runs on TensorFlow.
        precision: the LiteRT classifier's ``"float"``, ``"int8"`` or ``"auto"`` (int8 where its measured agreement
            holds, `classify.litert`).
    """

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
        batch_size: int = 32,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        runtime: str = "tf",
        precision: str = "float",
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
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.runtime = runtime
        self.precision = precision

    # ------------------------------------------------------------------ steps
    def load(self) -> DetectThenClassify:
        """Load the detector and classifier given by preset name, handle or path (once; a no-op when loaded)."""
        for name in ("detector", "classifier"):
            self._load_step(name)
        return self

    def _load_step(self, name: str) -> Any:
        spec = getattr(self, name)
        if not isinstance(spec, str | os.PathLike):
            return spec
        cache = self.__dict__.setdefault("_loaded", {})
        if cache.get(name, (None,))[0] != spec:
            if name == "detector":
                from detectcrop.detector import Detector

                options = {"runtime": self.runtime, **self.__dict__.get("_detector_options", {})}
                cache[name] = (spec, Detector.from_preset(spec, **options))
            else:
                cache[name] = (spec, _load_classifier(spec, self.runtime, self.precision))
        return cache[name][1]

    @property
    def detector_(self) -> Any:
        """The detector object (after `load` when it was given by preset name, handle or path)."""
        return self._step("detector")

    @property
    def classifier_(self) -> Any:
        """The classifier object (after `load` when it was given as the path of a saved FineClassifier)."""
        return self._step("classifier")

    def _step(self, name: str) -> Any:
        spec = getattr(self, name)
        if not isinstance(spec, str | os.PathLike):
            return spec
        loaded = self.__dict__.get("_loaded", {}).get(name)
        if loaded is None or loaded[0] != spec:
            raise AttributeError(f"the {name} {os.fspath(spec)!r} is not loaded yet: call load() first")
        return loaded[1]

    @property
    def category_ids_(self) -> list[int] | None:
        ids = category_ids(self.category)
        return None if ids is None else list(ids)

    @property
    def steps_(self) -> DetectSteps:
        """Stage 1 as the per-image core runs it (after `load`)."""
        return DetectSteps(self.detector_, category_ids(self.category), self.min_score, self.crop_policy, self.tile)

    # ------------------------------------------------------------------ parameters (scikit-learn style)
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        params = {name: getattr(self, name) for name in _init_params()}
        if deep:
            loaded = self.__dict__.get("_loaded", {})
            for step in STEPS:
                value = params[step]
                if isinstance(value, str | os.PathLike):  # nested parameters once loaded; never load here
                    value = loaded.get(step, (None, None))[1]
                if dataclasses.is_dataclass(value):
                    params.update({f"{step}__{k}": v for k, v in dataclasses.asdict(value).items()})
                elif hasattr(value, "get_params"):
                    params.update({f"{step}__{k}": v for k, v in value.get_params(deep=False).items()})
        return params

    def set_params(self, **params: Any) -> DetectThenClassify:
        """Set parameters; ``step__param`` reaches into a step (e.g. ``crop_policy__pad=0.2``)."""
        valid = _init_params()
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            step, _, sub = key.partition("__")
            if step not in valid:
                raise ValueError(f"invalid parameter {step!r}; valid: {', '.join(valid)}")
            if sub:
                nested.setdefault(step, {})[sub] = value
            else:
                setattr(self, step, value)
        for step, values in nested.items():
            current = self._load_step(step) if step in ("detector", "classifier") else getattr(self, step)
            if current is None:
                raise ValueError(f"cannot set {step}__... while {step} is None")
            if dataclasses.is_dataclass(current):
                setattr(self, step, dataclasses.replace(current, **values))
            elif hasattr(current, "set_params"):
                current.set_params(**values)
            else:
                for name, value in values.items():
                    if not hasattr(current, name):
                        raise ValueError(f"{type(current).__name__} has no parameter {name!r}")
                    setattr(current, name, value)
        return self

    # ------------------------------------------------------------------ config (rebuild elsewhere)
    def to_config(self) -> dict[str, Any]:
        """A JSON-able description from which `from_config` rebuilds the pipeline in another process."""
        config = {
            "detector": _source(self.detector, "detector"),
            "classifier": _source(self.classifier, "classifier"),
            "category": self.category,
            "min_score": self.min_score,
            "crop_policy": dataclasses.asdict(self.crop_policy),
            "tile": None if self.tile is None else dataclasses.asdict(self.tile),
            "top_k": self.top_k,
            "unknown_below": self.unknown_below,
            "unknown_label": self.unknown_label,
            "batch_size": self.batch_size,
            "max_pixels": self.max_pixels,
            "runtime": self.runtime,
            "precision": self.precision,
        }
        detector = self.__dict__.get("_loaded", {}).get("detector", (None, self.detector))[1]
        if not isinstance(detector, str | os.PathLike) and hasattr(detector, "nms_iou"):
            config["detector_options"] = {"min_score": detector.min_score, "nms_iou": detector.nms_iou}
            if getattr(detector, "runtime", None) is not None:  # the runtime it actually loaded on (after fallback)
                config["detector_options"]["runtime"] = detector.runtime
        elif "_detector_options" in self.__dict__:
            config["detector_options"] = dict(self._detector_options)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DetectThenClassify:
        config = dict(config)
        options = config.pop("detector_options", None)
        config["crop_policy"] = CropPolicy(**config["crop_policy"])
        config["tile"] = None if config.get("tile") is None else TileConfig(**config["tile"])
        pipe = cls(**config)
        if options:
            pipe._detector_options = dict(options)  # applied when the detector is loaded
        return pipe

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
        """Label one image (an RGB uint8 array or a path)."""
        if isinstance(image, str | os.PathLike):
            try:
                array: np.ndarray | ImageReadError = read_image(image, max_pixels=self.max_pixels)
            except ImageReadError as exc:
                array = exc
            return next(self.label_images([(os.fspath(image), array)]))
        return next(self.label_images([("<array>", np.asarray(image))]))

    def run(self, inputs: str | os.PathLike | Iterable[str | os.PathLike], *, workers: int = 2,
            prefetch: int = 8, decode_budget: int | None = DEFAULT_DECODE_BUDGET) -> Iterator[ImageResult]:
        """Label a folder (its image files, recursively, in a stable order), one file, or an iterable of paths.

        Results stream in input order; decoding is prefetched by ``workers`` threads and crops of consecutive images
        are classified together, so memory stays bounded by ``prefetch`` images (and ``decode_budget`` bytes) plus
        one batch of crops.
        """
        if isinstance(inputs, str | os.PathLike):
            root = Path(inputs)
            paths = discover_images(root) if root.is_dir() else [root]
        else:
            paths = [Path(p) for p in inputs]
        stream = iter_images(paths, workers=workers, prefetch=prefetch, max_pixels=self.max_pixels,
                             decode_budget=decode_budget)
        return self.label_images(_sources(stream))

    def detect(self, image: np.ndarray) -> Detections:
        """Stage 1 alone: the parent-category detections of one image."""
        return detect_objects(image, self.load().steps_)

    def label_images(self, items: Iterable[tuple[str, np.ndarray | ImageReadError]]) -> Iterator[ImageResult]:
        """Label ``(source, image or read error)`` items in order; one result per item, errors included."""
        self.load()
        steps = self.steps_
        pending: list[ImageCrops] = []
        n_crops = 0
        for source, image in items:
            item = process_image(source, image, steps)
            del image  # only the crops are kept: the image is not held while the next one decodes
            if item.status == "error":
                logger.warning("%s: %s", source, item.error)
            pending.append(item)
            n_crops += len(item.crops)
            if n_crops >= self.batch_size or len(pending) >= self.batch_size:  # full batch, or many empty images
                yield from self._classify(pending)
                pending, n_crops = [], 0
        yield from self._classify(pending)

    def _classify(self, pending: list[ImageCrops]) -> Iterator[ImageResult]:
        """Classify the crops of several images in one batch; if the batch fails, image by image."""
        crops = [c for p in pending for c in p.crops]
        try:
            proba = np.asarray(self.classifier_.predict_proba(crops)) if crops else np.zeros((0, 0))
        except Exception as exc:
            if len(pending) > 1:
                for p in pending:
                    yield from self._classify([p])
                return
            p = pending[0]
            logger.warning("%s: classification failed: %s", p.source, exc)
            yield ImageResult(p.source, "error", width=p.width, height=p.height,
                              error=one_line(f"ClassificationError: {type(exc).__name__}: {exc}"))
            return
        start = 0
        for p in pending:
            yield self._result(p, proba[start : start + len(p.crops)])
            start += len(p.crops)

    def _result(self, item: ImageCrops, proba: np.ndarray) -> ImageResult:
        result = ImageResult(item.source, item.status, width=item.width, height=item.height, error=item.error)
        if not len(proba):
            return result
        classifier = self.classifier_
        classes = [str(c) for c in classifier.classes_]
        unknown_below, unknown_label = self._unknown_rule(classifier)
        for i, row in enumerate(proba):
            order = np.argsort(-row, kind="stable")[: max(1, self.top_k)]
            top = [(classes[j], float(row[j])) for j in order]
            label, prob = top[0]
            if unknown_below is not None and prob < unknown_below:
                label = unknown_label
            result.objects.append(LabeledObject(
                xyxy=tuple(float(v) for v in item.detections.xyxy[i]),
                crop_box=tuple(int(v) for v in item.boxes[i]),
                score=float(item.detections.scores[i]), class_id=int(item.detections.class_ids[i]),
                label=label, probability=prob, top_k=top[: self.top_k],
            ))
        return result

    def _unknown_rule(self, classifier: Any) -> tuple[float | None, str]:
        """The pipeline's ``unknown_below`` / ``unknown_label``, else the classifier's own (saved with the model)."""
        if self.unknown_below is not None:
            return self.unknown_below, self.unknown_label
        return getattr(classifier, "unknown_below", None), getattr(classifier, "unknown_label", self.unknown_label)

    def __repr__(self) -> str:
        return (f"DetectThenClassify(detector={_source(self.detector, 'detector', strict=False)!r}, "
                f"classifier={_source(self.classifier, 'classifier', strict=False)!r}, category={self.category!r}, "
                f"tile={self.tile is not None})")


def _load_classifier(spec: str | os.PathLike, runtime: str, precision: str) -> Any:
    """A saved FineClassifier on TensorFlow (Keras), or on LiteRT (exported and cached beside it)."""
    from detectcrop.litert import ConversionError, resolve_runtime

    if resolve_runtime(runtime) == "litert":
        from classify.litert import load_litert_classifier

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


def _source(step: Any, what: str, strict: bool = True) -> str:
    if isinstance(step, str | os.PathLike):
        return os.fspath(step)
    if what == "detector" and isinstance(getattr(step, "name", None), str) and step.name != "custom":
        return step.name
    if strict:
        raise ValueError(f"the {what} was given as an object; give it as a preset name or path to rebuild the "
                         f"pipeline from its config (save a classifier first, then pass its path)")
    return type(step).__name__


def _init_params() -> tuple[str, ...]:
    import inspect

    sig = inspect.signature(DetectThenClassify.__init__)
    return tuple(n for n in sig.parameters if n != "self")
