"""`Detector`: any TF2 Object Detection API model (TF Hub handle, URL, local SavedModel) behind one adapter.

The contract every detector honours (TF Hub's): uint8 ``[1, H, W, 3]`` in; ``detection_boxes`` (normalised ymin, xmin,
ymax, xmax), ``detection_classes`` (COCO 90-id map), ``detection_scores``, ``num_detections`` out. The offline preset
``centernet_mobilenetv3_512`` is converted into exactly that form (`detectcrop.zoo.centernet`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detectcrop import environment, zoo
from detectcrop import runtime as litert
from detectcrop.coco import category_id
from detectcrop.detections import Detections
from detectcrop.zoo import ModelUnavailableError, cache, presets

logger = logging.getLogger(__name__)

#: Images with a longer side are shrunk (area interpolation) before they reach the model, which resizes them to its
#: own input size (512 to 1024 pixels for the presets) anyway: the model's float copy of a 200 MP photo would take GBs.
MAX_INPUT_SIDE = 4096


def _is_remote(handle: str) -> bool:
    return handle.startswith(("http://", "https://", "gs://"))


def load_hub_model(handle: str, *, offline_alternative: str) -> Any:
    """``tensorflow_hub.load`` with errors that say what to do; works for handles, URLs and local paths."""
    environment.use_tfhub_cache()  # downloads go under $DETECTCROP_HOME/tfhub unless TFHUB_CACHE_DIR is set
    import tensorflow_hub as hub

    try:
        return hub.load(handle)
    except Exception as exc:
        if _is_remote(handle):
            raise ModelUnavailableError(
                f"could not download {handle} ({type(exc).__name__}: {str(exc)[:300]}). Without access to TF Hub, "
                f"use the offline preset {offline_alternative!r}, or set TFHUB_CACHE_DIR to a cache that holds it."
            ) from exc
        raise ModelUnavailableError(f"could not load the SavedModel at {handle}: {exc}") from exc


def _resolve_handle(preset: str | os.PathLike) -> tuple[str, str]:
    """Map a preset name, TF Hub handle/URL or local path to ``(name, loadable handle)``."""
    text = os.fspath(preset)
    if text in presets.PRESETS:
        spec = presets.get(text, "detector")
        if spec.offline:
            return text, str(zoo.ensure(text) / "saved_model")
        return text, spec.handle
    if _is_remote(text) or Path(text).exists():
        return text, text
    raise ValueError(
        f"unknown detector {text!r}: not a preset, URL or existing path. "
        f"Presets: {', '.join(presets.names('detector'))}"
    )


class Detector:
    """A COCO object detector. ``detect(rgb_uint8) -> Detections`` with boxes in the image's pixels.

    Args:
        model: a callable taking uint8 ``[1, H, W, 3]`` and returning the TF Hub detection outputs.
        name: the preset, handle or path it was loaded from.
        min_score: default score threshold of `detect`.
        nms_iou: IoU for class-aware NMS on the model's outputs (``None`` keeps the raw outputs).
    """

    def __init__(self, model: Callable[[Any], dict], name: str = "custom", *, min_score: float = 0.05,
                 nms_iou: float | None = 0.5, runtime: str = "tf", precision: str = "float",
                 representative_data: str | None = None) -> None:
        self.model = model
        self.name = name
        self.min_score = min_score
        self.nms_iou = nms_iou
        self.runtime = runtime
        self.precision = precision
        self.representative_data = representative_data

    @classmethod
    def from_preset(cls, preset: str | os.PathLike = zoo.DEFAULT_DETECTOR, *, runtime: str = "tf",
                    num_threads: int | None = None, precision: str = "auto", representative_data: Any = None,
                    **kwargs: Any) -> Detector:
        """Load a preset (see ``python -m detectcrop.zoo list``), a TF Hub handle or URL, or a local SavedModel.

        ``runtime``: ``"tf"``, ``"litert"`` (the SavedModel converted once to LiteRT and cached; a model that does not
        convert falls back to TensorFlow with one logged line) or ``"auto"`` (`detectcrop.runtime.resolve_runtime`).
        ``num_threads``: LiteRT interpreter threads (default: the usable CPU cores). ``precision`` (LiteRT):
        ``"float"``, ``"int8"`` or ``"auto"`` (the default: int8 where ``representative_data``, a folder or a
        `RepresentativeData`, is given and the int8 model's held-out recall holds), see
        `detectcrop.runtime.detector_flatbuffer`.
        """
        name, handle = _resolve_handle(preset)
        if litert.resolve_runtime(runtime) == "litert":
            local = handle if Path(handle).exists() else _hub_download(handle)
            try:
                path, served = litert.detector_flatbuffer(local, precision, representative_data)
                logger.info("loading detector %s (LiteRT %s)", name, served)
                folder = os.fspath(representative_data) if isinstance(representative_data, str | os.PathLike) else None
                return cls(litert.LiteRTDetector(path, num_threads), name, runtime="litert", precision=served,
                           representative_data=folder, **kwargs)
            except litert.ConversionError as exc:
                logger.warning("detector %s does not convert to LiteRT, running it on TensorFlow: %s", name, exc)
        logger.info("loading detector %s", name)
        loaded = load_hub_model(handle, offline_alternative=zoo.OFFLINE_DETECTOR)
        return cls(_callable(loaded, name), name, **kwargs)

    def to_config(self) -> dict[str, Any]:
        """What `from_config` needs to load this detector again (in another process, e.g. a Ray actor)."""
        if self.name == "custom":
            raise ValueError("a Detector built from a model object has no config; load it with from_preset")
        config = {"preset": self.name, "min_score": self.min_score, "nms_iou": self.nms_iou, "runtime": self.runtime}
        if self.precision != "float":
            if self.representative_data is None:
                raise ValueError("an int8 detector quantised on arrays has no config; give its representative photos "
                                 "as a folder")
            config.update(precision=self.precision, representative_data=self.representative_data)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Detector:
        config = dict(config)
        return cls.from_preset(config.pop("preset"), **config)

    def __call__(self, image: np.ndarray, **kwargs: Any) -> Detections:
        return self.detect(image, **kwargs)

    @property
    def concurrent_calls(self) -> int:
        """How many single-threaded `detect` calls may run at once to advantage (LiteRT: one per interpreter
        thread; TensorFlow parallelises inside one call: 1)."""
        return int(getattr(self.model, "concurrent_calls", 1)) if self.runtime == "litert" else 1

    #: `detect` returns only what it is asked for (``min_score``, ``categories``): `detectcrop.tiling.run_detector`
    #: does not filter its results again.
    applies_request = True

    @property
    def accepts_categories(self) -> bool:
        """Whether `detect` can decode only some categories (``categories=``; the offline CenterNet on LiteRT)."""
        return bool(getattr(self.model, "decodes_categories", False))

    def detect(self, image: np.ndarray, *, min_score: float | None = None, num_threads: int | None = None,
               categories: Sequence[int] | None = None) -> Detections:
        """Detect objects in one RGB uint8 image ``(H, W, 3)``; boxes come back in its pixels. ``num_threads``
        (LiteRT): interpreter threads for this call. ``categories``: the COCO ids wanted (only those come back);
        where `accepts_categories`, only those are decoded at all."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"detect expects an RGB uint8 array (H, W, 3); got {image.dtype} {image.shape}")
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"empty image {image.shape}")
        if categories is not None:  # names or ids, any iterable: COCO ids, once
            categories = tuple(sorted({category_id(c.item() if isinstance(c, np.generic) else c)
                                       for c in categories}))
        if max(image.shape[:2]) > MAX_INPUT_SIDE:  # boxes are normalised, so they map back to the full size exactly
            scale = MAX_INPUT_SIDE / max(image.shape[:2])
            small = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                               interpolation=cv2.INTER_AREA)
        else:
            small = image
        if self.runtime == "litert":
            options: dict[str, Any] = {} if num_threads is None else {"num_threads": num_threads}
            if categories is not None and self.accepts_categories:
                options["categories"] = categories
            outputs = self.model(small[None], **options)
        else:
            import tensorflow as tf

            outputs = self.model(tf.convert_to_tensor(small[None]))
        dets = Detections.from_tfhub(outputs, image.shape)
        dets = dets.by_score(self.min_score if min_score is None else min_score)
        if categories is not None:
            dets = dets.filter(category=list(categories))
        return dets.nms(self.nms_iou) if self.nms_iou is not None else dets

    def __repr__(self) -> str:
        return (f"Detector({self.name!r}, min_score={self.min_score}, nms_iou={self.nms_iou}, "
                f"runtime={self.runtime!r}, precision={self.precision!r})")


def _hub_download(handle: str) -> str:
    """The local folder of a TF Hub handle or URL (downloaded into the hub cache when missing)."""
    environment.use_tfhub_cache()
    import tensorflow_hub as hub

    try:
        return hub.resolve(handle)
    except Exception as exc:
        raise ModelUnavailableError(f"could not download {handle} ({type(exc).__name__}: {str(exc)[:300]}). Without "
                                    f"access to TF Hub, use the offline preset {zoo.OFFLINE_DETECTOR!r}") from exc


def detector_fingerprint(detector: Any) -> str:
    """What identifies a detector's weights: the sha256 of an offline preset's or a local SavedModel's files, the
    handle of a TF Hub model (hub handles are versioned), or the name of a detector object."""
    if not isinstance(detector, str | os.PathLike):
        detector = getattr(detector, "name", type(detector).__name__)
    try:
        name, handle = _resolve_handle(detector)
    except ValueError:  # a detector object that is not a preset, handle or path
        return os.fspath(detector)
    if Path(handle).exists():
        return f"sha256:{cache.tree_digest(handle)}"
    return name if name == handle else f"{name}={handle}"


def _callable(loaded: Any, name: str) -> Callable[[Any], dict]:
    """The loaded object itself when callable (TF2 OD API exports), else its ``serving_default`` signature."""
    if callable(loaded):
        return loaded
    signatures = getattr(loaded, "signatures", {})
    if "serving_default" not in signatures:
        raise ModelUnavailableError(f"{name} is neither callable nor has a serving_default signature")
    fn = signatures["serving_default"]
    (arg,) = fn.structured_input_signature[1].keys()
    return lambda images: fn(**{arg: images})
