"""pipelines: the two stages composed (`DetectThenClassify`), and the command-line entry points."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from detectcrop import _moved

if TYPE_CHECKING:
    from pipelines.compose import DetectThenClassify, ImageResult, LabeledObject

__all__ = ["DetectThenClassify", "ImageResult", "LabeledObject"]


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m pipelines.make_watches` does not import TensorFlow.
    if name in __all__:
        from pipelines import compose

        return getattr(compose, name)
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")


_moved.install()  # old module paths keep importing (detectcrop._moved)
