"""`CropClassifier`: the Keras task model (backbone + head), self-describing when saved.

Following keras-hub's backbone / task split: the backbone is a `keras.Model` mapping ``(H, W, 3)`` float32 RGB in
``[0, 255]`` to pooled features, with its preprocessing inside (see `classify.backbones.Backbone.model`); the task adds
the head ``Dense(dense_units, relu) -> Dropout -> Dense(n_classes, softmax)``. `get_config` carries the backbone, the
class names, the unknown rule and free-form training metadata, and the class is registered with Keras when
``classify`` is imported, so ``keras.saving.load_model("RUN/model.keras")`` needs nothing else::

    import classify, keras
    model = keras.saving.load_model("RUN/model.keras")
    model.class_names, model.unknown_below, model.input_size
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import keras


def build_head(n_classes: int, dense_units: int, dropout: float, seed: int | None = None) -> keras.Sequential:
    """``features -> Dense(dense_units, relu) -> Dropout(dropout) -> Dense(n_classes, softmax)`` (``dense_units=0``:
    a linear head, ``Dropout -> Dense``); with ``seed`` the initial weights and the dropout masks are seeded per layer
    (no global random state is read or changed)."""

    def init(offset: int) -> keras.initializers.Initializer:
        return keras.initializers.GlorotUniform(seed=None if seed is None else seed + offset)

    hidden = []
    if dense_units > 0:
        hidden.append(keras.layers.Dense(dense_units, activation="relu", kernel_initializer=init(0), name="head_dense"))
    return keras.Sequential(
        [
            *hidden,
            keras.layers.Dropout(dropout, seed=None if seed is None else seed + 1, name="head_dropout"),
            keras.layers.Dense(n_classes, activation="softmax", kernel_initializer=init(2), name="head_output"),
        ],
        name="head",
    )


@keras.saving.register_keras_serializable(package="classify")
class CropClassifier(keras.Model):
    """Image ``(N, H, W, 3)`` float32 RGB in ``[0, 255]`` -> class probabilities ``(N, n_classes)``.

    Args:
        backbone: image -> pooled features, preprocessing inside, fixed input size.
        class_names: the label of each output, in order.
        dense_units, dropout: the head's hidden width and dropout rate.
        unknown_below: the top probability under which a prediction counts as ``unknown_label`` (``None``: never).
        unknown_label: the answer for ambiguous inputs.
        seed: seeds the head's initial weights and dropout (``None``: unseeded).
        metadata: JSON-serialisable facts about training (parameters, augmentation, best epoch...).

    Attributes:
        backbone: the backbone model (its weights are the task's; fine-tuning trains them).
        head: the head as a `keras.Sequential` over features (the cached-feature stage trains it alone).
    """

    def __init__(
        self,
        backbone: keras.Model,
        class_names: Sequence[str],
        *,
        dense_units: int = 128,
        dropout: float = 0.5,
        unknown_below: float | None = None,
        unknown_label: str = "unknown",
        seed: int | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        class_names = [str(c) for c in class_names]
        shape = tuple(backbone.input_shape[1:])
        if len(shape) != 3 or None in shape:
            raise ValueError(f"backbone {backbone.name} needs a fixed (H, W, 3) input, has {shape}")
        head = build_head(len(class_names), dense_units, dropout, seed)
        inputs = keras.Input(shape, name="image")
        outputs = head(backbone(inputs))
        kwargs.setdefault("name", "crop_classifier")
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.head = head
        self.class_names = class_names
        self.dense_units = int(dense_units)
        self.dropout = float(dropout)
        self.unknown_below = None if unknown_below is None else float(unknown_below)
        self.unknown_label = str(unknown_label)
        self.seed = seed
        self.metadata = copy.deepcopy(dict(metadata or {}))

    @property
    def input_size(self) -> tuple[int, int]:
        """``(height, width)`` of the images the model takes."""
        return int(self.input_shape[1]), int(self.input_shape[2])

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "class_names": list(self.class_names),
            "dense_units": self.dense_units,
            "dropout": self.dropout,
            "unknown_below": self.unknown_below,
            "unknown_label": self.unknown_label,
            "seed": self.seed,
            "metadata": copy.deepcopy(self.metadata),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CropClassifier:
        config = dict(config)
        backbone = config.pop("backbone")
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        return cls(backbone, **config)
