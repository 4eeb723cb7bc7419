"""Process settings TensorFlow and tensorflow_hub read from the environment: log quieting and the TF Hub cache.

Nothing here imports TensorFlow. `quiet_tensorflow` is called by the command-line entry points (never on import);
`use_tfhub_cache` by `detectcrop.detector.load_hub_model` before tensorflow_hub resolves a handle.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from detectcrop.zoo import cache

logger = logging.getLogger(__name__)

TFHUB_CACHE_ENV = "TFHUB_CACHE_DIR"
TF_LOG_ENV = "TF_CPP_MIN_LOG_LEVEL"

# TensorFlow's C++ log lines (absl / glog format), absl's pre-initialisation notice, the CPU-feature continuation line.
_TF_LOG_LINE = re.compile(
    r"^(?:[IWEF]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions:)"
)

_defaulted_hub_cache: str | None = None


def is_tensorflow_log_line(line: str) -> bool:
    """Whether ``line`` is one of TensorFlow's C++ log lines (oneDNN, CUDA, CPU features, absl notices)."""
    return bool(_TF_LOG_LINE.match(line))


def tfhub_cache_dir() -> Path:
    """Where tensorflow_hub caches downloads: ``$TFHUB_CACHE_DIR``, else ``$DETECTCROP_HOME/tfhub``."""
    value = os.environ.get(TFHUB_CACHE_ENV)
    if value and value != _defaulted_hub_cache:
        return Path(value).expanduser()
    return cache.home_dir() / "tfhub"


def use_tfhub_cache() -> Path:
    """Point tensorflow_hub's cache at `tfhub_cache_dir` (sets ``TFHUB_CACHE_DIR`` unless the user set it).

    tensorflow_hub reads the variable on every load, so calling this before ``hub.load`` suffices; without it
    downloads land in the system's temporary directory.
    """
    global _defaulted_hub_cache
    path = tfhub_cache_dir()
    if os.environ.get(TFHUB_CACHE_ENV) in (None, "", _defaulted_hub_cache):
        _defaulted_hub_cache = os.environ[TFHUB_CACHE_ENV] = str(path)
    return path


def _is_debug(level: str | int) -> bool:
    numeric = level if isinstance(level, int) else logging.getLevelName(str(level).upper())
    return isinstance(numeric, int) and numeric <= logging.DEBUG


def quiet_tensorflow(level: str | int) -> None:
    """Keep TensorFlow's own log lines out of a command's output unless ``level`` is DEBUG.

    Sets ``TF_CPP_MIN_LOG_LEVEL=3`` whatever the user's shell set (a common ``2`` still lets TensorFlow's errors
    about a missing CUDA driver through), raises the ``tensorflow`` and ``absl`` Python loggers to ERROR, and, as
    TensorFlow writes a few lines to stderr while it loads (before its log settings apply), routes those lines of the
    ``import tensorflow`` that follows to this module's DEBUG log. Call it before TensorFlow is imported; with DEBUG
    it changes nothing, so the user's own ``TF_CPP_MIN_LOG_LEVEL`` applies.
    """
    if _is_debug(level):
        return
    if os.environ.get(TF_LOG_ENV, "3") != "3":
        logger.debug("%s=%s replaced by 3 (TensorFlow's lines show with --log-level DEBUG)", TF_LOG_ENV,
                     os.environ[TF_LOG_ENV])
    os.environ[TF_LOG_ENV] = "3"
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImportFinder())


@contextlib.contextmanager
def stderr_lines_to_debug(is_noise: Callable[[str], bool] = lambda line: True, source: str = "") -> Iterator[None]:
    """Capture file descriptor 2 (where C++ libraries log); on exit log the lines ``is_noise`` accepts at DEBUG
    (prefixed with ``source``) and write every other line back to stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if is_noise(line):
                    logger.debug("%s%s", f"{source}: " if source else "", line)
                else:
                    print(line, file=sys.stderr)


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader of the ``tensorflow`` package with its load-time stderr lines routed to DEBUG."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self._loader  # the package sees its own loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        with stderr_lines_to_debug(is_tensorflow_log_line, "tensorflow"):
            self._loader.exec_module(module)


class _QuietImportFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once, wrapping its loader in `_QuietLoader`; then removes itself."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        if fullname != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        for finder in sys.meta_path:
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None
