"""`Backbone`: an ImageNet-pretrained network bound to its input size and preprocessing.

``Backbone.from_preset(name)`` returns a Keras model whose input is float32 RGB in ``[0, 255]`` at the preset's input
size, with the preset's own preprocessing inside the model as built-in Keras layers. Training and inference therefore
cannot disagree on pixels, and a saved ``.keras`` classifier carries its preprocessing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from detectcrop import presets, zoo
from detectcrop.detector import ModelUnavailableError, load_hub_model
from detectcrop.images import resize_image

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackbonePreset:
    """How to build one backbone: input size, preprocessing mode and a network builder."""

    name: str
    input_size: tuple[int, int]
    preprocessing: str  # "torch": ImageNet mean/std on [0, 1]; "tf": [-1, 1]; "unit": [0, 1]
    build: Callable[[bool, str | None, tuple[int, int, int]], keras.Model]
    fine_tunable: bool = True


def preprocessing_layer(mode: str) -> keras.layers.Layer:
    """The built-in Keras layer mapping ``[0, 255]`` RGB to what a preset's network expects."""
    if mode == "torch":
        mean = [255.0 * m for m in IMAGENET_MEAN]
        variance = [(255.0 * s) ** 2 for s in IMAGENET_STD]
        return keras.layers.Normalization(mean=mean, variance=variance, name="preprocess_torch")
    if mode == "tf":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess_tf")
    if mode == "unit":
        return keras.layers.Rescaling(1.0 / 255.0, name="preprocess_unit")
    raise ValueError(f"unknown preprocessing mode {mode!r}")


@keras.saving.register_keras_serializable(package="classify")
class HubFeatureLayer(keras.layers.Layer):
    """A TF Hub image feature-vector model as a (frozen) Keras 3 layer; ``hub.KerasLayer`` is Keras 2 only."""

    def __init__(self, handle: str, output_dim: int, **kwargs: Any) -> None:
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.handle = handle
        self.output_dim = output_dim
        self._module = load_hub_model(handle, offline_alternative=zoo.OFFLINE_BACKBONE)

    def call(self, inputs):
        return self._module(inputs)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_dim)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "handle": self.handle, "output_dim": self.output_dim}


def _keras_app(constructor: str) -> Callable[[bool, str | None, tuple[int, int, int]], keras.Model]:
    def build(include_top: bool, weights: str | None, input_shape: tuple[int, int, int]) -> keras.Model:
        fn = getattr(keras.applications, constructor)
        try:
            return fn(include_top=include_top, weights=weights, input_shape=input_shape, pooling="avg")
        except Exception as exc:
            if weights is None:
                raise
            raise ModelUnavailableError(
                f"could not get the ImageNet weights of keras.applications.{constructor} "
                f"({type(exc).__name__}: {str(exc)[:300]}). Without internet access use the offline preset "
                f"{zoo.OFFLINE_BACKBONE!r}, or place the weights file in ~/.keras/models."
            ) from exc

    return build


Builder = Callable[[bool, str | None, tuple[int, int, int]], keras.Model]


def _torchvision(preset: presets.Preset) -> Builder:
    def build(include_top: bool, weights: str | None, input_shape: tuple[int, int, int]) -> keras.Model:
        from classify.torchvision_mobilenet import mobilenet_v2_torchvision

        path = None if weights is None else zoo.ensure(preset.name) / "weights.npz"
        return mobilenet_v2_torchvision(path, include_top, input_shape)

    return build


def _hub_feature_vector(preset: presets.Preset) -> Builder:
    def build(include_top: bool, weights: str | None, input_shape: tuple[int, int, int]) -> keras.Model:
        if include_top:
            raise ValueError(f"{preset.name} is a feature-vector model; it has no ImageNet classifier (include_top)")
        inputs = keras.Input(input_shape)
        layer = HubFeatureLayer(preset.handle, preset.feature_dim, name=f"hub_{preset.name.removesuffix('_hub')}")
        return keras.Model(inputs, layer(inputs), name=preset.name)

    return build


# How each `detectcrop.presets` builder name becomes a network; a preset record names one of these.
BUILDERS: dict[str, Callable[[presets.Preset], Builder]] = {
    "keras_application": lambda preset: _keras_app(preset.handle),
    "hub_feature_vector": _hub_feature_vector,
    "torchvision_mobilenet_v2": _torchvision,
}

PRESETS: dict[str, BackbonePreset] = {
    p.name: BackbonePreset(p.name, p.input_size, p.preprocessing, BUILDERS[p.builder](p), p.fine_tunable)
    for p in presets.PRESETS.values()
    if p.kind == "backbone"
}


class Backbone:
    """A pretrained network with its preprocessing inside.

    Attributes:
        name: the preset name.
        input_size: ``(height, width)`` the model takes.
        net: the bare network (for fine-tuning: its layers are what to unfreeze).
        model: ``image [0, 255] float32 -> preprocessing -> net``; pooled features, or ImageNet softmax with
            ``include_top``.
    """

    def __init__(self, name: str, net: keras.Model, input_size: tuple[int, int], preprocessing: str,
                 include_top: bool = False) -> None:
        self.name = name
        self.net = net
        self.input_size = tuple(input_size)
        self.preprocessing = preprocessing
        self.include_top = include_top
        inputs = keras.Input((*self.input_size, 3), name="image")
        outputs = net(preprocessing_layer(preprocessing)(inputs))
        self.model = keras.Model(inputs, outputs, name=f"{name}_backbone")

    @classmethod
    def from_preset(cls, name: str = zoo.DEFAULT_BACKBONE, include_top: bool = False,
                    weights: str | None = "imagenet") -> Backbone:
        """Build a preset; ``weights=None`` gives the architecture with random weights (no download)."""
        if name not in PRESETS:
            raise ValueError(f"unknown backbone {name!r}; presets: {', '.join(PRESETS)}")
        preset = PRESETS[name]
        logger.info("loading backbone %s", name)
        net = preset.build(include_top, weights, (*preset.input_size, 3))
        return cls(name, net, preset.input_size, preset.preprocessing, include_top)

    @property
    def feature_dim(self) -> int:
        return int(self.model.output_shape[-1])

    @property
    def fine_tunable(self) -> bool:
        preset = PRESETS.get(self.name)
        return preset.fine_tunable if preset else True

    def prepare(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Resize RGB uint8 images of any size to the input size: a float32 batch in ``[0, 255]``."""
        return np.stack([resize_image(np.asarray(im), self.input_size) for im in images]).astype(np.float32)

    def predict(self, images: Sequence[np.ndarray] | np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Features (or ImageNet probabilities) for RGB uint8 images of any size."""
        if len(images) == 0:
            return np.zeros((0, self.feature_dim), np.float32)
        out = [np.asarray(self.model.predict_on_batch(self.prepare(images[i : i + batch_size])))
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out).astype(np.float32)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "input_size": list(self.input_size), "preprocessing": self.preprocessing,
                "include_top": self.include_top}

    def __repr__(self) -> str:
        return f"Backbone({self.name!r}, input_size={self.input_size}, feature_dim={self.feature_dim})"
