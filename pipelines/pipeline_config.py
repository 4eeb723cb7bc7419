"""A `DetectThenClassify` as a JSON-able config (`pipeline_config`, `pipeline_from_config`: pickling, Ray actors,
``label_config.json``) and its `sklearn.base.clone` (`clone_pipeline`)."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

from detectcrop.crops import CropPolicy
from detectcrop.runtime.classifier import served_precision
from detectcrop.tiling import TileConfig

if TYPE_CHECKING:
    from pipelines.compose import DetectThenClassify

#: The loaded classifier's settings a copy of the pipeline (pickle, `from_config`, a Ray actor) carries over.
CLASSIFIER_OPTIONS = ("unknown_below", "unknown_label")
#: The loaded detector's settings a clone carries over (``set_params(detector__nms_iou=...)``).
DETECTOR_OPTIONS = ("nms_iou",)


def pipeline_config(pipe: DetectThenClassify) -> dict[str, Any]:
    """`DetectThenClassify.to_config`."""
    config = {name: getattr(pipe, name) for name in pipe._param_names()}
    config.update(detector=source_name(pipe.detector, "detector"),
                  classifier=source_name(pipe.classifier, "classifier"),
                  crop_policy=dataclasses.asdict(pipe.crop_policy),
                  tile=None if pipe.tile is None else dataclasses.asdict(pipe.tile))
    loaded = pipe.__dict__.get("_loaded", {})
    detector = loaded.get("detector", (None, pipe.detector))[1]
    classifier = loaded.get("classifier", (None, pipe.classifier))[1]
    # the precisions served (after `auto` and its checks), so a copy elsewhere and a resumed run load the same
    if not isinstance(classifier, str | os.PathLike):
        config["precision"] = served_precision(classifier)
    if not isinstance(detector, str | os.PathLike):
        config["detector_precision"] = getattr(detector, "precision", "float")
    if not isinstance(detector, str | os.PathLike) and hasattr(detector, "nms_iou"):
        config["detector_options"] = {"min_score": detector.min_score, "nms_iou": detector.nms_iou}
        if getattr(detector, "runtime", None) is not None:  # the runtime it actually loaded on (after fallback)
            config["detector_options"]["runtime"] = detector.runtime
        if getattr(detector, "precision", "float") != "float":  # the precision it serves (after the int8 rule)
            config["detector_options"]["precision"] = detector.precision
    elif "_detector_options" in pipe.__dict__:
        config["detector_options"] = dict(pipe._detector_options)
    if not isinstance(classifier, str | os.PathLike):  # the unknown rule as set on it (set_params included)
        config["classifier_options"] = {k: getattr(classifier, k) for k in CLASSIFIER_OPTIONS}
    elif "_classifier_options" in pipe.__dict__:
        config["classifier_options"] = dict(pipe._classifier_options)
    return config


def pipeline_from_config(cls: type[DetectThenClassify], config: dict[str, Any]) -> DetectThenClassify:
    """`DetectThenClassify.from_config`."""
    config = dict(config)
    options = config.pop("detector_options", None)
    classifier_options = config.pop("classifier_options", None)
    config["crop_policy"] = CropPolicy(**config["crop_policy"])
    config["tile"] = None if config.get("tile") is None else TileConfig(**config["tile"])
    pipe = cls(**config)
    if options:
        pipe._detector_options = dict(options)  # applied when the detector is loaded
    if classifier_options:
        pipe._classifier_options = dict(classifier_options)  # applied when the classifier is loaded
    return pipe


def source_name(step: Any, what: str, strict: bool = True) -> str:
    if isinstance(step, str | os.PathLike):
        return os.fspath(step)
    if what == "detector" and isinstance(getattr(step, "name", None), str) and step.name != "custom":
        return step.name
    if strict:
        raise ValueError(f"the {what} was given as an object; give it as a preset name or path to rebuild the "
                         f"pipeline from its config (save a classifier first, then pass its path)")
    return type(step).__name__


def clone_pipeline(pipe: DetectThenClassify) -> DetectThenClassify:
    """A copy with the same parameters (each cloned as scikit-learn clones them) and the settings changed on steps
    given by name or path once they were loaded; the copy loads its models when it needs them."""
    from sklearn.base import clone

    new = type(pipe)(**{k: clone(v, safe=False) for k, v in pipe.get_params(deep=False).items()})
    loaded = pipe.__dict__.get("_loaded", {})
    for step, attr, keys in (("classifier", "_classifier_options", CLASSIFIER_OPTIONS),
                             ("detector", "_detector_options", DETECTOR_OPTIONS)):
        spec = getattr(pipe, step)
        if not isinstance(spec, str | os.PathLike):
            continue
        options = dict(pipe.__dict__.get(attr, {}))
        if step in loaded and loaded[step][0] == spec:
            options.update({k: getattr(loaded[step][1], k) for k in keys if hasattr(loaded[step][1], k)})
        if options:
            setattr(new, attr, options)
    return new
