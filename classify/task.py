"""`CropClassifier`: the Keras task model (backbone + head), self-describing when saved.

Following keras-hub's backbone / task split: the backbone is a `keras.Model` mapping ``(H, W, 3)`` float32 RGB in
``[0, 255]`` to pooled features, with its preprocessing inside (see `classify.backbones.Backbone.model`); the task adds
the head ``Dense(dense_units, relu) -> Dropout -> Dense(n_classes)`` (logits) and `classify.openset.CalibratedOutput`
(``softmax(logits / T)``, the temperature fitted after training). The model's output is the calibrated
probabilities; `CropClassifier.serving_model` shares its layers and also outputs the open-set score
(`classify.openset.OpenSetScore`; the LiteRT export is made from it). `get_config` carries the backbone, the class
names, the unknown rules and free-form training metadata, and the class is registered with Keras when this module
is imported (``from classify import CropClassifier``, or ``import classify`` after Keras), so
``keras.saving.load_model("RUN/model.keras")`` needs nothing else::

    import keras
    from classify import CropClassifier
    model = keras.saving.load_model("RUN/model.keras")
    model.class_names, model.unknown_below, model.open_set_threshold, model.input_size
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from classify.openset import DEFAULT_SCORE, CalibratedOutput, OpenSetScore

#: The saved layout: 3 = logits head + `CalibratedOutput` (temperature, open-set score); 2 = a softmax head.
TASK_FORMAT = 3


def build_head(n_classes: int, dense_units: int, dropout: float, seed: int | None = None) -> keras.Sequential:
    """``features -> Dense(dense_units, relu) -> Dropout(dropout) -> Dense(n_classes)``, logits (``dense_units=0``:
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
            keras.layers.Dense(n_classes, kernel_initializer=init(2), name="head_logits"),
        ],
        name="head",
    )


@keras.saving.register_keras_serializable(package="classify")
class CropClassifier(keras.Model):
    """Image ``(N, H, W, 3)`` float32 RGB in ``[0, 255]`` -> calibrated class probabilities ``(N, n_classes)``.

    Args:
        backbone: image -> pooled features, preprocessing inside, fixed input size.
        class_names: the label of each output, in order.
        dense_units: the head's hidden width.
        dropout: the head's dropout rate.
        unknown_below: the top probability under which a prediction counts as ``unknown_label`` (``None``: never).
        unknown_label: the answer for ambiguous inputs.
        open_set_score: the open-set score the serving graph outputs (`classify.openset.GRAPH_SCORES`).
        open_set_threshold: the score under which an input counts as ``unknown_label`` (``None``: never).
        seed: seeds the head's initial weights and dropout (``None``: unseeded).
        metadata: JSON-serialisable facts about training (parameters, augmentation, best epoch...).

    Attributes:
        backbone: the backbone model (its weights are the task's; fine-tuning trains them).
        head: the head as a `keras.Sequential` over features, emitting logits (the cached-feature stage trains it
            alone).
        calibration: the `CalibratedOutput` layer (its temperature is set after training).
        open_set: the `OpenSetScore` layer of the serving graph (its class means are set after training).
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
        open_set_score: str = DEFAULT_SCORE,
        open_set_threshold: float | None = None,
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
        features = backbone(inputs)
        logits = head(features)
        calibration = CalibratedOutput(name="calibration")
        proba = calibration(logits)
        open_set = OpenSetScore(len(class_names), int(features.shape[-1]), open_set_score, name="open_set_score")
        score = open_set([logits, features, proba])
        kwargs.setdefault("name", "crop_classifier")
        super().__init__(inputs=inputs, outputs=proba, **kwargs)
        self.backbone = backbone
        self.head = head
        self.calibration = calibration
        self.open_set = open_set  # not in the task's graph: tracked here so that its weights are saved
        # not tracked as a child (its layers are this model's): probabilities and the open-set score in one pass
        object.__setattr__(self, "_serving", keras.Model(inputs, [proba, score], name="crop_classifier_serving"))
        self.class_names = class_names
        self.dense_units = int(dense_units)
        self.dropout = float(dropout)
        self.unknown_below = None if unknown_below is None else float(unknown_below)
        self.unknown_label = str(unknown_label)
        self.open_set_threshold = None if open_set_threshold is None else float(open_set_threshold)
        self.seed = seed
        self.metadata = copy.deepcopy(dict(metadata or {}))

    @property
    def input_size(self) -> tuple[int, int]:
        """``(height, width)`` of the images the model takes."""
        return int(self.input_shape[1]), int(self.input_shape[2])

    @property
    def open_set_score(self) -> str:
        """The name of the open-set score the serving graph outputs."""
        return self.open_set.score

    @property
    def temperature(self) -> float:
        """The softmax temperature (1.0 until calibrated)."""
        return float(keras.ops.convert_to_numpy(self.calibration.temperature))

    @property
    def class_means(self) -> np.ndarray:
        """``(n_classes, D)``: the normalised class means of the training features (zeros until set)."""
        return np.asarray(keras.ops.convert_to_numpy(self.open_set.class_means))

    def serving_model(self) -> keras.Model:
        """The same layers with two outputs: calibrated probabilities ``(N, n_classes)`` and the open-set score
        ``(N,)`` (higher: more like a known class)."""
        return self._serving

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
            "open_set_score": self.open_set_score,
            "open_set_threshold": self.open_set_threshold,
            "format": TASK_FORMAT,
            "seed": self.seed,
            "metadata": copy.deepcopy(self.metadata),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CropClassifier:
        config = dict(config)
        if config.pop("format", 2) != TASK_FORMAT:
            raise ValueError(f"this model was saved by an older version of classify (task format 2, a softmax head "
                             f"without calibration; this version reads format {TASK_FORMAT}): retrain it with "
                             "python -m pipelines.train_fine")
        backbone = config.pop("backbone")
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        return cls(backbone, **config)
