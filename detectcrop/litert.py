"""LiteRT (XNNPACK) runtime: the runtime choice, interpreters, and SavedModel detectors converted once and cached.

``runtime``: ``"tf"`` (TensorFlow: GPU, any SavedModel), ``"litert"`` (the ``ai-edge-litert`` interpreter with its
XNNPACK CPU kernels) or ``"auto"`` (LiteRT on a machine without a GPU when the package is installed, else
TensorFlow). A detector SavedModel is converted to a ``.tflite`` flatbuffer once and cached in the model cache
(`detectcrop.cache`) under the sha256 of its files; a model that does not convert (many TF2 Object Detection API
exports use TensorFlow ops LiteRT lacks) falls back to TensorFlow with one logged line saying why.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

import numpy as np

from detectcrop import cache

logger = logging.getLogger(__name__)

Runtime = Literal["tf", "litert", "auto"]
RUNTIMES: tuple[str, ...] = ("tf", "litert", "auto")
#: Bumped when the conversion recipe changes, so cached flatbuffers are rebuilt.
CONVERSION_VERSION = 1


class ConversionError(RuntimeError):
    """A model cannot be converted to, or run by, LiteRT."""


def litert_available() -> bool:
    """Whether the ``ai-edge-litert`` package (the ``litert`` extra) is installed."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    return True


def _has_gpu() -> bool:
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
    """Threads per interpreter: the CPU cores this process may use."""
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


def convert_saved_model(saved_model: str | os.PathLike) -> bytes:
    """A float ``.tflite`` flatbuffer of a SavedModel's ``serving_default`` signature, builtin ops only.

    Raises `ConversionError` when the converter fails or the model needs TensorFlow ops LiteRT does not have.
    """
    import tensorflow as tf

    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(os.fspath(saved_model))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return converter.convert()
    except Exception as exc:  # the converter raises many types (ConverterError, ValueError, ...)
        text = " ".join(str(exc).split())
        raise ConversionError(f"{type(exc).__name__}: {text[:300]}") from exc


def converted_detector(saved_model: str | os.PathLike) -> Path:
    """The cached ``.tflite`` of a detector SavedModel, converted on first use (keyed by its files' sha256).

    Checks once that the flatbuffer loads and runs on a small image; raises `ConversionError` when it does not.
    """
    digest = cache.tree_digest(saved_model)
    final = cache.home_dir() / "litert" / f"detector-{digest[:24]}-v{CONVERSION_VERSION}"
    model = final / "model.tflite"
    with cache.file_lock(cache.home_dir() / "locks" / f"{final.name}.lock"):
        try:
            cache.verify_tree(final)
            return model
        except (cache.ChecksumError, OSError):
            pass
        logger.info("converting %s to LiteRT (once; cached in %s)", saved_model, final)
        flatbuffer = convert_saved_model(saved_model)
        _smoke_test(flatbuffer)
        with cache.staging_dir(final) as tmp:
            (tmp / "model.tflite").write_bytes(flatbuffer)
            (tmp / "source.json").write_text(json.dumps({"saved_model": os.fspath(saved_model), "sha256": digest,
                                                         "version": CONVERSION_VERSION}, indent=2) + "\n")
    return model


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

    One interpreter per calling thread (interpreters are not thread-safe) and per input shape (the `MAX_SHAPES` most
    recently used), so an image size seen before never re-plans the graph.
    """

    def __init__(self, model: str | os.PathLike | bytes, num_threads: int | None = None) -> None:
        self.model = model
        self.num_threads = num_threads
        self._local = threading.local()

    def _state(self, shape: tuple[int, ...]) -> dict[str, Any]:
        states: OrderedDict[tuple[int, ...], dict[str, Any]] | None = getattr(self._local, "states", None)
        if states is None:
            states = self._local.states = OrderedDict()
        state = states.get(shape)
        if state is None:
            interp = make_interpreter(self.model, self.num_threads)
            runner = interp.get_signature_runner("serving_default")
            (details,) = runner.get_input_details().values()
            outputs = {k: d["index"] for k, d in runner.get_output_details().items()}
            del runner  # it holds views of the interpreter's tensors, which forbid resizing
            interp.resize_tensor_input(details["index"], list(shape))
            interp.allocate_tensors()
            state = states[shape] = {"interp": interp, "input": details["index"], "outputs": outputs}
            while len(states) > MAX_SHAPES:
                states.popitem(last=False)
        states.move_to_end(shape)
        return state

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        state = self._state(tuple(images.shape))
        interp = state["interp"]
        interp.set_tensor(state["input"], np.ascontiguousarray(images))
        interp.invoke()
        return {k: np.array(interp.get_tensor(i)) for k, i in state["outputs"].items()}
