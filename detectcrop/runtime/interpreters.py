"""LiteRT interpreters and the runtime choice.

``runtime``: ``"tf"`` (TensorFlow: GPU, any SavedModel), ``"litert"`` (the ``ai-edge-litert`` interpreter with its
XNNPACK CPU kernels) or ``"auto"`` (LiteRT on a machine without a GPU when the package is installed, else
TensorFlow). Nothing here imports TensorFlow on a machine without a GPU.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Literal

logger = logging.getLogger(__name__)

Runtime = Literal["tf", "litert", "auto"]
RUNTIMES: tuple[str, ...] = ("tf", "litert", "auto")


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


def bare_interpreter(model: str | os.PathLike | bytes) -> Any:
    """An interpreter without XNNPACK (cheap: no weight packing), for reading a model's details."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if isinstance(model, bytes):
        return Interpreter(model_content=model, experimental_op_resolver_type=kind)
    return Interpreter(model_path=os.fspath(model), experimental_op_resolver_type=kind)
