"""Old module paths that still import: each is the module at its new path, under a second name.

``import detectcrop.litert`` gives the module object of `detectcrop.runtime` itself (so a setting made through
one name is seen through the other), and ``python -m pipelines.build_crops`` runs `pipelines.cli.build_crops`. Paths
that are entry points (the documented ``python -m`` commands) import silently; the others warn once with a
`DeprecationWarning` that names the new path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Mapping, Sequence
from types import CodeType, ModuleType


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """A finder and loader for ``{old: new}`` module paths; ``entry_points`` are aliased without a warning."""

    def __init__(self, moved: Mapping[str, str], entry_points: Sequence[str] = ()) -> None:
        self.moved = dict(moved)
        self.entry_points = frozenset(entry_points)

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        new = self.moved.get(fullname)
        if new is None:
            return None
        target_spec = importlib.util.find_spec(new)
        origin = target_spec.origin if target_spec is not None else None
        return importlib.util.spec_from_loader(fullname, self, origin=origin)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = self.moved[spec.name]
        if spec.name not in self.entry_points:
            warnings.warn(f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """The module at the new path is imported already (`create_module`)."""

    def get_code(self, fullname: str) -> CodeType | None:
        """The new module's code, for ``python -m OLD`` (runpy runs it as ``__main__``)."""
        new = self.moved[fullname]
        spec = importlib.util.find_spec(new)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "get_code"):
            return None
        return spec.loader.get_code(new)


#: Every module path that changed, old -> new.
MOVED: dict[str, str] = {
    **{f"detectcrop.{old}": f"detectcrop.io.{new}" for old, new in (
        ("images", "images"), ("budget", "budget"), ("inputs", "inputs"), ("input_stamps", "stamps"),
        ("locks", "locks"))},
    **{f"detectcrop.{name}": f"detectcrop.zoo.{name}" for name in (
        "presets", "cache", "torch_pickle", "tfjs", "centernet", "centernet_head")},
    "detectcrop.litert": "detectcrop.runtime",
    **{f"detectcrop.litert_{name}": f"detectcrop.runtime.{name}" for name in (
        "bias", "fixed", "fuse", "int8", "prequant")},
    "detectcrop.tflite_graph": "detectcrop.runtime.graph",
    "classify.litert": "detectcrop.runtime.classifier_cache",
    "classify.tflite": "detectcrop.runtime.classifier",
    "classify.tflite_export": "detectcrop.runtime.classifier_export",
    "classify.efficientnet_lite": "classify.backbones.efficientnet_lite",
    "classify.torchvision_mobilenet": "classify.backbones.mobilenet_v2",
    "classify.torch_port": "classify.backbones.torch_port",
    **{f"pipelines.{name}": f"pipelines.cli.{name}" for name in (
        "console", "build_crops", "label", "train_fine", "calibrate", "evaluate", "export", "make_watches", "demo")},
}
#: The documented ``python -m`` commands: their old paths import without a warning.
ENTRY_POINTS: tuple[str, ...] = tuple(f"pipelines.{name}" for name in (
    "console", "build_crops", "label", "train_fine", "calibrate", "evaluate", "export", "make_watches", "demo"))


def install(moved: Mapping[str, str] = MOVED, entry_points: Sequence[str] = ENTRY_POINTS) -> None:
    """Make the old paths of ``moved`` importable (once per process, whatever the number of calls)."""
    for finder in sys.meta_path:
        if isinstance(finder, MovedModules) and finder.moved == dict(moved):
            return
    sys.meta_path.append(MovedModules(moved, entry_points))
