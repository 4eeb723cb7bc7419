"""LiteRT (XNNPACK) runtime: the runtime choice, interpreters, and SavedModel detectors converted once and cached.

``runtime``: ``"tf"`` (TensorFlow: GPU, any SavedModel), ``"litert"`` (the ``ai-edge-litert`` interpreter with its
XNNPACK CPU kernels) or ``"auto"`` (LiteRT on a machine without a GPU when the package is installed, else
TensorFlow). A detector SavedModel is converted to a ``.tflite`` flatbuffer once and cached in the model cache
(`detectcrop.cache`) under the sha256 of its files; a model that does not convert (many TF2 Object Detection API
exports use TensorFlow ops LiteRT lacks) falls back to TensorFlow with one logged line saying why.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from detectcrop import cache, centernet_head, litert_fixed, litert_fuse, litert_int8
from detectcrop.litert_int8 import DetectorCalibration

logger = logging.getLogger(__name__)

Runtime = Literal["tf", "litert", "auto"]
RUNTIMES: tuple[str, ...] = ("tf", "litert", "auto")
#: Bumped when the conversion recipe changes, so cached flatbuffers are rebuilt.
CONVERSION_VERSION = 9  # 5: the offline CenterNet's trunk and head beside the whole graph; 6: hard-swish fused;
#                        7: int8 prepared by `litert_prequant`; 8: int8 keeps the stem float;
#                        9: int8 rewrites confined to the trunk
#: The int8 recipe's own version (part of int8 cache keys only, so a change to it leaves float caches valid):
#: 1: biases corrected (`detectcrop.litert_bias`).
INT8_VERSION = 1


class ConversionError(RuntimeError):
    """A model cannot be converted to, or run by, LiteRT."""


def litert_available() -> bool:
    """Whether the ``ai-edge-litert`` package (the ``litert`` extra) is installed."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    return True


#: Device nodes through which TensorFlow reaches a GPU on Linux (CUDA, ROCm, WSL2).
_GPU_NODES = ("/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def _has_gpu() -> bool:
    """Whether TensorFlow sees a GPU. On Linux without a GPU device node the answer is no without importing
    TensorFlow (so ``auto`` on a CPU machine stays TensorFlow-free); otherwise TensorFlow is asked."""
    if sys.platform.startswith("linux") and not any(os.path.exists(node) for node in _GPU_NODES):
        return False
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def resolve_runtime(runtime: str) -> str:
    """``"tf"`` or ``"litert"`` for a requested runtime (``"auto"``: LiteRT on CPU-only machines when installed)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}; got {runtime!r}")
    if runtime == "auto":
        return "litert" if litert_available() and not _has_gpu() else "tf"
    if runtime == "litert" and not litert_available():
        raise ConversionError("runtime 'litert' needs the ai-edge-litert package: pip install 'detectcrop[litert]'")
    return runtime


def default_threads() -> int:
    """Threads per interpreter: ``$DETECTCROP_NUM_THREADS`` when set (a Ray actor sets its share of the cores), else
    the CPU cores this process may use."""
    env = os.environ.get("DETECTCROP_NUM_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            logger.warning("ignoring DETECTCROP_NUM_THREADS=%r: not a whole number", env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def make_interpreter(model: str | os.PathLike | bytes, num_threads: int | None = None) -> Any:
    """A LiteRT interpreter (XNNPACK on CPU) for a ``.tflite`` file or flatbuffer, with an explicit thread count."""
    from ai_edge_litert.interpreter import Interpreter

    threads = int(num_threads or default_threads())
    if isinstance(model, bytes):
        return Interpreter(model_content=model, num_threads=threads)
    return Interpreter(model_path=os.fspath(model), num_threads=threads)


@contextlib.contextmanager
def detector_converter(saved_model: str | os.PathLike, split: bool = False) -> Iterator[
        tuple[Any, Callable[[np.ndarray], np.ndarray], centernet_head.Split | None]]:
    """``(TFLiteConverter, prepare, split)`` for a SavedModel's ``serving_default``, valid inside the ``with`` block.

    A model that squashes its input to one size becomes a static-shape graph fed by ``prepare(uint8 [1, H, W, 3])``
    (`detectcrop.litert_fixed`); the offline CenterNet, with ``split``, is cut at its features and ``split`` holds
    the head decoded outside (`detectcrop.centernet_head`). Any other model converts as it is (``prepare`` the
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


def bare_interpreter(model: str | os.PathLike | bytes) -> Any:
    """An interpreter without XNNPACK (cheap: no weight packing), for reading a model's details."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if isinstance(model, bytes):
        return Interpreter(model_content=model, experimental_op_resolver_type=kind)
    return Interpreter(model_path=os.fspath(model), experimental_op_resolver_type=kind)


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
    that `detectcrop.centernet_head` decodes for requested categories; ``None`` for other models, and (logged) when
    the NumPy decoding does not reproduce the graph's own on check images or the trunk does not convert."""
    import tensorflow as tf

    try:
        with detector_converter(saved_model, split=True) as (converter, _, split):
            if split is None:
                return None
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            flatbuffer = fuse_checked(converter.convert(), f"{os.fspath(saved_model)} (trunk)")
            trunk = TFLiteDetectorModel(flatbuffer, num_threads=1)
            problem = split.check([trunk(image[None]) for image in _check_images()])
    except Exception as exc:  # the converter raises many types
        problem = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    if problem is None:
        return flatbuffer, split.head
    logger.warning("%s: the trunk-and-head split is not used (%s); every call decodes in the graph", saved_model,
                   problem)
    return None


def fuse_checked(flatbuffer: bytes, name: str) -> bytes:
    """``flatbuffer`` with its three-op hard-swishes fused (`detectcrop.litert_fuse`) when the fused graph gives the
    same outputs on the check images (detections as `centernet_head.check_split` compares them, other outputs within
    1e-4 of their largest value); else, logged, unchanged."""
    fused, count = litert_fuse.fuse_hard_swish(flatbuffer)
    if count == 0:
        return flatbuffer
    try:
        before, after = TFLiteDetectorModel(flatbuffer, num_threads=1), TFLiteDetectorModel(fused, num_threads=1)
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
                       calibration: DetectorCalibration | None = None) -> Path:
    """The cached ``.tflite`` of a detector SavedModel, converted on first use.

    Keyed by the sha256 of the SavedModel's files, `CONVERSION_VERSION` and the precision (``int8``: also
    `INT8_VERSION` and the calibration's digest). Checks once that the flatbuffer loads and runs on a small image;
    raises `ConversionError` when it does not. An int8 conversion (`detectcrop.litert_int8`) records beside it, in
    ``source.json``, the held-out recall of float and int8 and whether int8 may be the default (``int8_default``).
    """
    if precision not in ("float", "int8"):
        raise ValueError(f"precision must be 'float' or 'int8', got {precision!r}")
    if precision == "int8" and calibration is None:
        raise ValueError("an int8 detector needs calibration photos (DetectorCalibration.from_folder)")
    digest = cache.tree_digest(saved_model)
    tag = "" if precision == "float" else f"-int8-{calibration.digest()[:16]}"
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
                flatbuffer, counts = _convert_int8(saved_model, calibration)
                _smoke_test(flatbuffer)
            except ConversionError as exc:
                _FAILED[final.name] = str(exc)
                raise
            info.update(calibration=calibration.digest(), n_calibration=len(calibration.images), **counts,
                        **litert_int8.measure(_decoder(TFLiteDetectorModel(float_model, split=False)),
                                              _decoder(TFLiteDetectorModel(flatbuffer)), calibration))
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
    return json.loads(Path(model).with_name("source.json").read_text())


def _convert_int8(saved_model: str | os.PathLike, calibration: DetectorCalibration) -> tuple[bytes, dict[str, int]]:
    try:
        with detector_converter(saved_model) as (converter, prepare, _):
            return litert_int8.convert_int8(converter, prepare, calibration)
    except Exception as exc:  # the converter raises many types
        raise ConversionError(f"int8: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from exc


def _decoder(model: TFLiteDetectorModel) -> Any:
    """``image -> Detections`` (no score filter, no NMS) for the recall check."""
    from detectcrop.detections import Detections

    return lambda image: Detections.from_tfhub(model(np.ascontiguousarray(image[None])), image.shape)


def detector_flatbuffer(saved_model: str | os.PathLike, precision: str = "float",
                        calibration: DetectorCalibration | str | os.PathLike | None = None) -> tuple[Path, str]:
    """``(cached .tflite, precision served)`` for ``precision`` ``float``, ``int8`` or ``auto``.

    ``calibration``: a `DetectorCalibration` or a calibration folder (`detectcrop.litert_int8`). ``auto`` is int8
    where calibration is given and the int8 model's held-out recall holds (`litert_int8.int8_detector_check`), else
    float; a requested ``int8`` that fails the check is served with a logged warning.
    """
    if precision not in litert_int8.PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(litert_int8.PRECISIONS)}, got {precision!r}")
    if precision == "float" or (precision == "auto" and calibration is None):
        return converted_detector(saved_model), "float"
    if calibration is None:
        raise ValueError("precision 'int8' needs calibration photos: pass a calibration folder (photos, and "
                         "heldout/ with optional heldout/boxes.json)")
    if not isinstance(calibration, DetectorCalibration):
        calibration = DetectorCalibration.from_folder(calibration)
    try:
        path = converted_detector(saved_model, "int8", calibration)
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
        runner = TFLiteDetectorModel(flatbuffer, num_threads=1)
        runner(np.zeros((1, 64, 64, 3), np.uint8))
    except Exception as exc:
        raise ConversionError(f"the converted model does not run: {type(exc).__name__}: {exc}") from exc


#: Interpreters kept per thread, one per input shape: resizing an interpreter's input re-plans the XNNPACK graph
#: (weights are repacked), which costs more than the inference, and tiles and whole images alternate two shapes.
MAX_SHAPES = 4


class TFLiteDetectorModel:
    """A ``.tflite`` detector with the TF Hub contract as a callable ``uint8 [1, H, W, 3] -> dict of arrays``.

    A static-shape graph (float ``[1, S, S, 3]`` input) gets the image resized outside (`detectcrop.litert_fixed`).
    A cached model with a trunk and head beside it (`convert_trunk`; ``split=False`` ignores them) answers a call
    for a few categories (at most `centernet_head.MAX_SPLIT_CHANNELS`) with the trunk and decodes only those
    classes in NumPy (`decodes_categories`); every other call runs the whole graph.

    One interpreter per calling thread (interpreters are not thread-safe), per graph and per input shape (the
    `MAX_SHAPES` most recently used), so an image size seen before never re-plans the graph.
    """

    def __init__(self, model: str | os.PathLike | bytes, num_threads: int | None = None, *, split: bool = True) -> None:
        self.model = model
        self.num_threads = num_threads
        self.head = centernet_head.CenterNetHead.beside(model) if split else None
        self.trunk = Path(model).with_name(centernet_head.TRUNK_FILE) if self.head is not None else None
        self._local = threading.local()
        details = bare_interpreter(model).get_input_details()[0]
        signature = tuple(int(v) for v in details["shape_signature"])
        #: ``(S, S)`` for a static-shape graph fed resized float images (`detectcrop.litert_fixed`), else ``None``.
        self.fixed_size = signature[1:3] if details["dtype"] == np.float32 and min(signature) > 0 else None

    @property
    def decodes_categories(self) -> bool:
        """Whether a call restricted to some COCO categories (``categories=``) decodes only those."""
        return self.head is not None

    @property
    def concurrent_calls(self) -> int:
        """How many single-threaded calls `detectcrop.tiling` may run at once: one per thread this model would use."""
        return int(self.num_threads or default_threads())

    def _state(self, graph: Any, shape: tuple[int, ...], num_threads: int | None) -> dict[str, Any]:
        states: OrderedDict[tuple[Any, ...], dict[str, Any]] | None = getattr(self._local, "states", None)
        if states is None:
            states = self._local.states = OrderedDict()
        key = (os.fspath(graph) if isinstance(graph, str | os.PathLike) else id(graph), num_threads or 0, *shape)
        state = states.get(key)
        if state is None:
            interp = make_interpreter(graph, num_threads or self.num_threads)
            keys = list(interp.get_signature_list())  # one signature: serving_default, or a concrete function's
            runner = interp.get_signature_runner("serving_default" if "serving_default" in keys else keys[0])
            (details,) = runner.get_input_details().values()
            outputs = {k: d["index"] for k, d in runner.get_output_details().items()}
            del runner  # it holds views of the interpreter's tensors, which forbid resizing
            interp.resize_tensor_input(details["index"], list(shape))
            interp.allocate_tensors()
            state = states[key] = {"interp": interp, "input": details["index"], "outputs": outputs}
            while len(states) > MAX_SHAPES:
                states.popitem(last=False)
        states.move_to_end(key)
        return state

    def __call__(self, images: np.ndarray, num_threads: int | None = None,
                 categories: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """Run the model; ``num_threads`` overrides the interpreter threads for this call (`detectcrop.tiling` runs
        tiles as concurrent single-threaded calls, which XNNPACK completes faster than one two-threaded call each);
        ``categories`` (COCO ids): with a trunk and head, only those classes are decoded, else the whole graph runs
        and every class comes back."""
        channels = None
        if categories is not None and self.head is not None:
            channels = self.head.channels(categories)
            if len(channels) > centernet_head.MAX_SPLIT_CHANNELS:
                channels = None
        if self.fixed_size is not None:
            images = litert_fixed.resize_like_tf(images, self.fixed_size)
        state = self._state(self.model if channels is None else self.trunk, tuple(images.shape), num_threads)
        interp = state["interp"]
        interp.set_tensor(state["input"], np.ascontiguousarray(images))
        interp.invoke()
        if channels is None:
            return {k: np.array(interp.get_tensor(i)) for k, i in state["outputs"].items()}
        # the trunk's outputs read in place (no copy of the 8 MB feature map), decoded before this thread's next call
        index = state["outputs"]
        return self.head.decode(interp.tensor(index["features"])(), interp.tensor(index["wh"])(), categories)
