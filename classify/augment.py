"""Augmentation declared as data: albumentations pipelines built from, and saved as, plain dicts (``A.to_dict``).

Presets are named dicts. The seed is not part of the saved form (albumentations does not serialise it); it is applied
with `seeded` when training, so runs are repeatable.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import albumentations as A
import cv2

from detectcrop.io import atomic_write_text

AugmentationSpec = str | dict | A.BaseCompose | None


def _light() -> A.Compose:
    return A.Compose(
        [
            A.Affine(scale=(0.92, 1.08), translate_percent=(-0.04, 0.04), rotate=(-8, 8), p=0.7),
            A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5),
        ]
    )


def _pose(stronger: bool = False) -> list[A.BasicTransform]:
    if stronger:  # more tilt, and perspective
        return [A.Affine(scale=(0.8, 1.15), translate_percent=(-0.08, 0.08), rotate=(-25, 25), p=0.9),
                A.Perspective(scale=(0.02, 0.08), p=0.5),
                A.RandomBrightnessContrast(brightness_limit=0.25, contrast_limit=0.25, p=0.6)]
    return [A.Affine(scale=(0.85, 1.1), translate_percent=(-0.06, 0.06), rotate=(-12, 12), p=0.8),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.6)]


def _colour_change() -> A.BasicTransform:
    """Half the views greyscale, channel-shuffled or strongly hue-shifted."""
    return A.OneOf(
        [
            A.ToGray(p=1.0),
            A.ChannelShuffle(p=1.0),
            A.HueSaturationValue(hue_shift_limit=90, sat_shift_limit=40, val_shift_limit=10, p=1.0),
        ],
        p=0.5,
    )


def _resolution() -> A.BasicTransform:
    """Half the views at 1/4 to full resolution, shrunk and enlarged as a crop is (area down, linear up): a detector's
    crop of a small or distant object has less detail than the training crops."""
    return A.Downscale(scale_range=(0.25, 1.0),
                       interpolation_pair={"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR}, p=0.5)


def _camera() -> list[A.BasicTransform]:
    """Blur, sensor noise and JPEG compression."""
    return [A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 5))], p=0.25),
            A.GaussNoise(std_range=(0.01, 0.04), p=0.2),
            A.ImageCompression(quality_range=(50, 95), p=0.3)]


def _colour() -> A.Compose:
    # For classes whose colour is itself a cue: colour jitter stays small. No flips: brand cues (logo text,
    # numerals, crown side) are not mirror-symmetric.
    return A.Compose(
        [*_pose(), A.HueSaturationValue(hue_shift_limit=4, sat_shift_limit=12, val_shift_limit=8, p=0.3), *_camera()]
    )


def _default() -> A.Compose:
    # Pose, light, blur, noise and compression as in `_colour`; half the views greyscale, channel-shuffled or
    # strongly hue-shifted, so the model leans on shape details more than on colour (a class seen in every colour,
    # such as a brand, is told apart by shape), and half at lower resolution, so a model trained on close-ups still
    # reads the smaller crops of a scene (both measured in BENCHMARKS.md, "Backbones"). No flips.
    return A.Compose([*_pose(), _colour_change(), _resolution(), *_camera()])


def _strong() -> A.Compose:
    # `_default` with stronger pose changes (tilt, perspective) and parts covered (coarse dropout), so a view keeps
    # only some of the details that tell two classes apart.
    dropout = A.CoarseDropout(num_holes_range=(1, 3), hole_height_range=(0.1, 0.3), hole_width_range=(0.1, 0.3),
                              fill="random_uniform", p=0.4)
    return A.Compose([*_pose(stronger=True), _colour_change(), dropout, _resolution(), *_camera()])


PRESETS = {"default": _default, "colour": _colour, "light": _light, "strong": _strong}


def build_augmentation(spec: AugmentationSpec) -> A.BaseCompose | None:
    """An albumentations pipeline from a preset name (``"default"``, ``"colour"``, ``"light"``, ``"strong"``,
    ``"none"``), a dict made by
    `augmentation_to_dict` / ``A.to_dict``, a path to such a JSON file, or a ready pipeline (returned as is)."""
    if spec is None or (isinstance(spec, str) and spec.lower() in ("", "none")):
        return None
    if isinstance(spec, A.BaseCompose):
        return spec
    if isinstance(spec, dict):
        return A.from_dict(copy.deepcopy(spec))
    if isinstance(spec, str) and spec in PRESETS:
        return PRESETS[spec]()
    if isinstance(spec, str | Path) and Path(spec).is_file():
        return load_augmentation(spec)
    raise ValueError(f"unknown augmentation {spec!r}: use one of {[*PRESETS, 'none']}, a dict or a JSON file path")


def augmentation_to_dict(spec: AugmentationSpec) -> dict | None:
    """The serialisable form of an augmentation, JSON-normalised (lists, not tuples); ``None`` for none."""
    transform = build_augmentation(spec)
    return None if transform is None else json.loads(json.dumps(A.to_dict(transform)))


def seeded(spec: AugmentationSpec, seed: int | None) -> A.BaseCompose | None:
    """A fresh pipeline from ``spec`` with its random state set from ``seed`` (``None``: unseeded)."""
    transform = build_augmentation(augmentation_to_dict(spec))
    if transform is not None and seed is not None:
        transform.set_random_seed(seed)
    return transform


def save_augmentation(spec: AugmentationSpec, path: str | Path) -> Path:
    """Write the augmentation as JSON, atomically (``null`` for none)."""
    return atomic_write_text(path, json.dumps(augmentation_to_dict(spec), indent=2) + "\n")


def load_augmentation(path: str | Path) -> A.BaseCompose | None:
    """Read a pipeline saved by `save_augmentation`."""
    data = json.loads(Path(path).read_text())
    return None if data is None else A.from_dict(data)
