"""Detector SavedModels converted to LiteRT once and cached, float or int8.

A detector SavedModel is converted to a ``.tflite`` flatbuffer once and cached in the model cache
(`detectcrop.zoo.cache`) under the sha256 of its files; a model that does not convert (many TF2 Object Detection API
exports use TensorFlow ops LiteRT lacks) raises `ConversionError`, and the detector falls back to TensorFlow with one
logged line saying why. int8 is quantised on representative photos (`detectcrop.runtime.int8`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from detectcrop.runtime import fixed as litert_fixed
from detectcrop.runtime import fuse as litert_fuse
from detectcrop.runtime import int8 as litert_int8
from detectcrop.runtime.detector import LiteRTDetector
from detectcrop.runtime.int8 import RepresentativeData
from detectcrop.runtime.interpreters import ConversionError
from detectcrop.runtime.precision import DETECTOR_PRECISIONS, check_precision
from detectcrop.zoo import cache, centernet_head

logger = logging.getLogger(__name__)

#: Bumped when the conversion recipe changes, so cached flatbuffers are rebuilt.
CONVERSION_VERSION = 9  # 5: the offline CenterNet's trunk and head beside the whole graph; 6: hard-swish fused;
#                        7: int8 prepared by `litert_prequant`; 8: int8 keeps the stem float;
#                        9: int8 rewrites confined to the trunk
#: The int8 recipe's own version (part of int8 cache keys only, so a change to it leaves float caches valid):
#: 1: biases corrected (`detectcrop.runtime.bias`).
INT8_VERSION = 1


@contextlib.contextmanager
def detector_converter(saved_model: str | os.PathLike, split: bool = False) -> Iterator[
        tuple[Any, Callable[[np.ndarray], np.ndarray], centernet_head.Split | None]]:
    """``(TFLiteConverter, prepare, split)`` for a SavedModel's ``serving_default``, valid inside the ``with`` block.

    A model that squashes its input to one size becomes a static-shape graph fed by ``prepare(uint8 [1, H, W, 3])``
    (`detectcrop.runtime.fixed`); the offline CenterNet, with ``split``, is cut at its features and ``split`` holds
    the head decoded outside (`detectcrop.zoo.centernet_head`). Any other model converts as it is (``prepare`` the
    identity, ``split`` ``None``).
    """
    import tensorflow as tf

    graph = litert_fixed.fixed_size_graph(saved_model)
    if graph is None:
        yield tf.lite.TFLiteConverter.from_saved_model(os.fspath(saved_model)), lambda images: images, None
        return
    cut = centernet_head.trunk_function(graph) if split else None
    if cut is not None:
        function, keep_alive = cut.function, cut.keep_alive
    else:
        function, keep_alive = graph.function(dict(zip(graph.output_keys, graph.output_tensors, strict=True)))
    module = tf.Module()
    module.pruned = keep_alive
    with tempfile.TemporaryDirectory() as tmp:  # a SavedModel keeps the named outputs of serving_default
        tf.saved_model.save(module, tmp, signatures={"serving_default": function})
        yield (tf.lite.TFLiteConverter.from_saved_model(tmp),
               lambda images: litert_fixed.resize_like_tf(images, graph.size), cut)


def convert_saved_model(saved_model: str | os.PathLike) -> bytes:
    """A float ``.tflite`` flatbuffer of a SavedModel's ``serving_default`` signature, builtin ops only.

    Raises `ConversionError` when the converter fails or the model needs TensorFlow ops LiteRT does not have.
    """
    import tensorflow as tf

    try:
        with detector_converter(saved_model) as (converter, _, _):
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            flatbuffer = converter.convert()
    except Exception as exc:  # the converter raises many types (ConverterError, ValueError, ...)
        text = " ".join(str(exc).split())
        raise ConversionError(f"{type(exc).__name__}: {text[:300]}") from exc
    return fuse_checked(flatbuffer, os.fspath(saved_model))


def convert_trunk(saved_model: str | os.PathLike) -> tuple[bytes, centernet_head.CenterNetHead] | None:
    """For the offline CenterNet: the float flatbuffer of its trunk (cut where the class heatmap begins) and the head
    that `detectcrop.zoo.centernet_head` decodes for requested categories; ``None`` for other models, and (logged) when
    the NumPy decoding does not reproduce the graph's own on check images or the trunk does not convert."""
    import tensorflow as tf

    try:
        with detector_converter(saved_model, split=True) as (converter, _, split):
            if split is None:
                return None
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            flatbuffer = fuse_checked(converter.convert(), f"{os.fspath(saved_model)} (trunk)")
            trunk = LiteRTDetector(flatbuffer, num_threads=1)
            problem = split.check([trunk(image[None]) for image in _check_images()])
    except Exception as exc:  # the converter raises many types
        problem = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    if problem is None:
        return flatbuffer, split.head
    logger.warning("%s: the trunk-and-head split is not used (%s); every call decodes in the graph", saved_model,
                   problem)
    return None


def fuse_checked(flatbuffer: bytes, name: str) -> bytes:
    """``flatbuffer`` with its three-op hard-swishes fused (`detectcrop.runtime.fuse`) when the fused graph gives the
    same outputs on the check images (detections as `centernet_head.check_split` compares them, other outputs within
    1e-4 of their largest value); else, logged, unchanged."""
    fused, count = litert_fuse.fuse_hard_swish(flatbuffer)
    if count == 0:
        return flatbuffer
    try:
        before, after = LiteRTDetector(flatbuffer, num_threads=1), LiteRTDetector(fused, num_threads=1)
        problem = None
        for image in _check_images():
            problem = problem or _outputs_differ(before(image[None]), after(image[None]))
    except Exception as exc:  # a fused graph the interpreter refuses
        problem = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    if problem is not None:
        logger.warning("%s: hard-swish not fused (%s)", name, problem)
        return flatbuffer
    logger.info("%s: fused %d hard-swish activations", name, count)
    return fused


def _outputs_differ(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> str | None:
    if "detection_scores" in reference:
        return centernet_head.check_split(reference, other)
    for key, value in reference.items():
        value, got = np.asarray(value, np.float64), np.asarray(other[key], np.float64)
        if value.shape != got.shape:
            return f"{key} has shape {got.shape} instead of {value.shape}"
        bound = 1e-4 * max(1.0, float(np.max(np.abs(value), initial=0.0)))
        if np.max(np.abs(value - got), initial=0.0) > bound:
            return f"{key} differs by up to {np.max(np.abs(value - got)):.4g}"
    return None


def _check_images() -> list[np.ndarray]:
    """Two fixed photo-like images (smooth noise, shapes) on which a split decoding is compared with the graph's."""
    import cv2

    rng = np.random.default_rng(0)
    images = []
    for shape in ((480, 640, 3), (512, 384, 3)):
        image = cv2.GaussianBlur(rng.integers(0, 256, shape, dtype=np.uint8), (0, 0), 4)
        for _ in range(6):
            centre = (int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0])))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            cv2.circle(image, centre, int(rng.integers(20, 120)), colour, int(rng.integers(3, 20)))
        images.append(image)
    return images


#: int8 conversions that failed in this process (cache entry name -> reason).
_FAILED: dict[str, str] = {}


def converted_detector(saved_model: str | os.PathLike, precision: str = "float",
                       representative: RepresentativeData | None = None) -> Path:
    """The cached ``.tflite`` of a detector SavedModel, converted on first use.

    Keyed by the sha256 of the SavedModel's files, `CONVERSION_VERSION` and the precision (``int8``: also `INT8_VERSION`
    and the representative photos' digest). Checks once that the flatbuffer loads and runs on a small image; raises
    `ConversionError` when it does not. An int8 conversion (`detectcrop.runtime.int8`) records beside it, in
    ``source.json``, the held-out recall of float and int8 and whether int8 may be the default (``int8_default``).
    """
    check_precision(precision, ("float", "int8"), "a converted detector")
    if precision == "int8" and representative is None:
        raise ValueError("an int8 detector needs representative photos (RepresentativeData.from_folder)")
    digest = cache.tree_digest(saved_model)
    tag = "" if precision == "float" else f"-int8-{representative.digest()[:16]}"
    version = f"{CONVERSION_VERSION}" if precision == "float" else f"{CONVERSION_VERSION}q{INT8_VERSION}"
    final = cache.home_dir() / "litert" / f"detector-{digest[:24]}{tag}-v{version}"
    model = final / "model.tflite"
    with cache.file_lock(cache.home_dir() / "locks" / f"{final.name}.lock"):
        try:
            cache.verify_tree(final)
            return model
        except (cache.ChecksumError, OSError):
            pass
        if final.name in _FAILED:  # a conversion that failed in this process fails again: do not repeat it
            raise ConversionError(_FAILED[final.name])
        float_model = None if precision == "float" else converted_detector(saved_model)
        logger.info("converting %s to LiteRT %s (once; cached in %s)", saved_model, precision, final)
        info: dict[str, Any] = {"saved_model": os.fspath(saved_model), "sha256": digest, "version": version,
                                "precision": precision}
        split = None
        if float_model is None:
            flatbuffer = convert_saved_model(saved_model)
            _smoke_test(flatbuffer)
            split = convert_trunk(saved_model)
        else:
            try:
                flatbuffer, counts = _convert_int8(saved_model, representative)
                _smoke_test(flatbuffer)
            except ConversionError as exc:
                _FAILED[final.name] = str(exc)
                raise
            info.update(representative=representative.digest(), n_representative=len(representative.images), **counts,
                        **litert_int8.measure(_decoder(LiteRTDetector(float_model, split=False)),
                                              _decoder(LiteRTDetector(flatbuffer)), representative))
            logger.info("int8 detector: held-out recall %.4f (float %.4f) -> %s", info["int8_recall"],
                        info["float_recall"], "may be the default" if info["int8_default"] else "not the default")
        info["split"] = split is not None  # trunk.tflite + head.npz: categories decoded outside the graph
        with cache.staging_dir(final) as tmp:
            (tmp / "model.tflite").write_bytes(flatbuffer)
            if split is not None:
                (tmp / centernet_head.TRUNK_FILE).write_bytes(split[0])
                split[1].save(tmp / centernet_head.HEAD_FILE)
            (tmp / "source.json").write_text(json.dumps(info, indent=2) + "\n")
    return model


def conversion_info(model: str | os.PathLike) -> dict[str, Any]:
    """The ``source.json`` written beside a cached ``model.tflite`` (for int8: the held-out recall check)."""
    info = json.loads(Path(model).with_name("source.json").read_text())
    for old, new in (("calibration", "representative"), ("n_calibration", "n_representative")):  # earlier names
        if old in info:
            info.setdefault(new, info.pop(old))
    return info


def _convert_int8(saved_model: str | os.PathLike, representative: RepresentativeData) -> tuple[bytes, dict[str, int]]:
    try:
        with detector_converter(saved_model) as (converter, prepare, _):
            return litert_int8.convert_int8(converter, prepare, representative)
    except Exception as exc:  # the converter raises many types
        raise ConversionError(f"int8: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from exc


def _decoder(model: LiteRTDetector) -> Any:
    """``image -> Detections`` (no score filter, no NMS) for the recall check."""
    from detectcrop.detections import Detections

    return lambda image: Detections.from_tfhub(model(np.ascontiguousarray(image[None])), image.shape)


def detector_flatbuffer(saved_model: str | os.PathLike, precision: str = "float",
                        representative: RepresentativeData | str | os.PathLike | None = None) -> tuple[Path, str]:
    """``(cached .tflite, precision served)`` for ``precision`` ``float``, ``int8`` or ``auto``.

    ``representative``: a `RepresentativeData` or its folder (`detectcrop.runtime.int8`). ``auto`` is int8 where
    ``representative`` is given and the int8 model's held-out recall holds (`litert_int8.int8_detector_check`), else
    float; a requested ``int8`` that fails the check is served with a logged warning.
    """
    check_precision(precision, DETECTOR_PRECISIONS, "the detector")
    if precision == "float" or (precision == "auto" and representative is None):
        return converted_detector(saved_model), "float"
    if representative is None:
        raise ValueError("precision 'int8' needs representative photos: pass their folder (photos, and heldout/ "
                         "with optional heldout/boxes.json)")
    if not isinstance(representative, RepresentativeData):
        representative = RepresentativeData.from_folder(representative)
    try:
        path = converted_detector(saved_model, "int8", representative)
    except ConversionError as exc:
        if precision == "int8":
            raise
        logger.info("int8 detector refused (%s); serving float", exc)
        return converted_detector(saved_model), "float"
    info = conversion_info(path)
    if info.get("int8_default"):
        return path, "int8"
    if precision == "auto":
        logger.info("int8 detector refused: held-out recall %.4f vs float %.4f (allowed drop %.2f); serving float",
                    info["int8_recall"], info["float_recall"], info["max_recall_drop"])
        return converted_detector(saved_model), "float"
    logger.warning("int8 detector %s: held-out recall %.4f is more than %.2f below float's %.4f", path,
                   info["int8_recall"], info["max_recall_drop"], info["float_recall"])
    return path, "int8"


def _smoke_test(flatbuffer: bytes) -> None:
    try:
        runner = LiteRTDetector(flatbuffer, num_threads=1)
        runner(np.zeros((1, 64, 64, 3), np.uint8))
    except Exception as exc:
        raise ConversionError(f"the converted model does not run: {type(exc).__name__}: {exc}") from exc
