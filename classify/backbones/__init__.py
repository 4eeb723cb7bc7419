"""`Backbone`: an ImageNet-pretrained network bound to its input size and preprocessing.

``Backbone.from_preset(name)`` returns a Keras model whose input is float32 RGB in ``[0, 255]`` at the preset's input
size, with the preset's own preprocessing inside the model as built-in Keras layers. Training and inference therefore
cannot disagree on pixels, and a saved ``.keras`` classifier carries its preprocessing.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from detectcrop import zoo
from detectcrop.detector import ModelUnavailableError, load_hub_model
from detectcrop.io.images import resize_image
from detectcrop.zoo import presets

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackbonePreset:
    """How to build one backbone: input size, preprocessing mode and a network builder."""

    name: str
    input_size: tuple[int, int]
    preprocessing: str  # "torch": ImageNet mean/std on [0, 1]; "tf": [-1, 1]; "lite": (x - 127) / 128; "unit": [0, 1]
    build: Callable[[bool, str | None, tuple[int, int, int]], keras.Model]
    fine_tunable: bool = True
    train_input_size: tuple[int, int] | None = None  # a classifier's default input on it (None: input_size)
    fine_tune_blocks: int | None = None  # blocks a classifier fine-tunes by default (None: the library's)


def preprocessing_layer(mode: str) -> keras.layers.Layer:
    """The built-in Keras layer mapping ``[0, 255]`` RGB to what a preset's network expects."""
    if mode == "torch":
        mean = [255.0 * m for m in IMAGENET_MEAN]
        variance = [(255.0 * s) ** 2 for s in IMAGENET_STD]
        return keras.layers.Normalization(mean=mean, variance=variance, name="preprocess_torch")
    if mode == "tf":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess_tf")
    if mode == "lite":
        return keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="preprocess_lite")
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
        from classify.backbones.mobilenet_v2 import mobilenet_v2_torchvision

        path = None if weights is None else zoo.ensure(preset.name) / "weights.npz"
        return mobilenet_v2_torchvision(path, include_top, input_shape)

    return build


def _efficientnet_lite(preset: presets.Preset) -> Builder:
    def build(include_top: bool, weights: str | None, input_shape: tuple[int, int, int]) -> keras.Model:
        from classify.backbones.efficientnet_lite import efficientnet_lite

        path = None if weights is None else zoo.ensure(preset.name) / "weights.npz"
        return efficientnet_lite(preset.name.removeprefix("efficientnet_"), path, include_top, input_shape)

    return build


def _hub_feature_vector(preset: presets.Preset) -> Builder:
    def build(include_top: bool, weights: str | None, input_shape: tuple[int, int, int]) -> keras.Model:
        if include_top:
            raise ValueError(f"{preset.name} is a feature-vector model; it has no ImageNet classifier (include_top)")
        inputs = keras.Input(input_shape)
        layer = HubFeatureLayer(preset.handle, preset.feature_dim, name=f"hub_{preset.name.removesuffix('_hub')}")
        return keras.Model(inputs, layer(inputs), name=preset.name)

    return build


# How each `detectcrop.zoo.presets` builder name becomes a network; a preset record names one of these.
BUILDERS: dict[str, Callable[[presets.Preset], Builder]] = {
    "keras_application": lambda preset: _keras_app(preset.handle),
    "hub_feature_vector": _hub_feature_vector,
    "torchvision_mobilenet_v2": _torchvision,
    "efficientnet_lite": _efficientnet_lite,
}

PRESETS: dict[str, BackbonePreset] = {
    p.name: BackbonePreset(p.name, p.input_size, p.preprocessing, BUILDERS[p.builder](p), p.fine_tunable,
                           p.train_input_size, p.fine_tune_blocks)
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
                    weights: str | None = "imagenet", input_size: int | tuple[int, int] | None = None) -> Backbone:
        """Build a preset; ``weights=None`` gives the architecture with random weights (no download).

        ``input_size`` (a side or ``(height, width)``; ``None``: the preset's) builds the convolutional network
        for another input size with the same weights: larger inputs keep finer detail of small crops, at a cost
        that grows with the pixel count. Not with ``include_top`` (the ImageNet classifier expects its own size).
        """
        if name not in PRESETS:
            raise ValueError(f"unknown backbone {name!r}; presets: {', '.join(PRESETS)}")
        preset = PRESETS[name]
        size = preset.input_size if input_size is None else check_input_size(input_size)
        if include_top and size != tuple(preset.input_size):
            raise ValueError(f"{name} with its ImageNet classifier (include_top) takes {preset.input_size}, "
                             f"not {size}")
        logger.info("loading backbone %s at %dx%d", name, *size)
        net = preset.build(include_top, weights, (*size, 3))
        return cls(name, net, size, preset.preprocessing, include_top)

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

    def __sklearn_clone__(self) -> Backbone:
        """`sklearn.base.clone` shares a Backbone: `FineClassifier` only reads it (fine-tuning trains a copy)."""
        return self

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "input_size": list(self.input_size), "preprocessing": self.preprocessing,
                "include_top": self.include_top}

    def __repr__(self) -> str:
        return f"Backbone({self.name!r}, input_size={self.input_size}, feature_dim={self.feature_dim})"


# ---------------------------------------------------------------------------------------------- backbone surgery


@contextlib.contextmanager
def global_random_state_kept() -> Iterator[None]:
    """Restore Python's and NumPy's global random state on exit. Keras draws a default seed from Python's `random`
    for every unseeded initializer when it builds or copies layers; weights built here are overwritten (pretrained or
    copied), so those draws must not move the caller's random streams."""
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


class BareBackbone:
    """A bare `keras.Model` (image ``[0, 255]`` in, pooled features out) seen as a backbone."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self.name = model.name
        self.input_size = tuple(int(d) if d is not None else None for d in model.input_shape[1:3])
        self.fine_tunable = True


def check_input_size(size: int | Sequence[int]) -> tuple[int, int]:
    """``(height, width)`` of a side or a pair; ``ValueError`` below 32 pixels (five stride-2 stages)."""
    pair = (size, size) if isinstance(size, int | np.integer) else tuple(size)
    if len(pair) != 2 or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in pair) \
            or min(pair) < 32:
        raise ValueError(f"input size must be a whole number of pixels >= 32 (or a pair of them), got {size!r}")
    return int(pair[0]), int(pair[1])


def resolve_backbone(backbone: Any, input_size: int | tuple[int, int] | None = None) -> Any:
    """A preset name -> ``Backbone.from_preset(name, input_size=input_size)`` (built without moving global random
    state); a Backbone-like object (``.model``, ``.input_size``, ``.name``) is returned as is; a bare `keras.Model`
    is wrapped. ``input_size`` must match an object's own size: only a preset can be built for another."""
    if isinstance(backbone, str):
        with global_random_state_kept():
            return Backbone.from_preset(backbone, include_top=False, input_size=input_size)
    if isinstance(backbone, keras.Model):
        backbone = BareBackbone(backbone)
    if not hasattr(backbone, "model"):
        raise TypeError(f"backbone must be a preset name, a Backbone or a keras.Model, got {type(backbone).__name__}")
    if input_size is not None and tuple(backbone.input_size) != check_input_size(input_size):
        raise ValueError(f"backbone {backbone_name(backbone)} takes {tuple(backbone.input_size)}, not "
                         f"{check_input_size(input_size)}: give a preset name to build it at another size")
    return backbone


def training_input_size(backbone: Any) -> tuple[int, int] | None:
    """The input a classifier trains on by default for ``backbone``: a preset name's ``train_input_size`` (measured
    per backbone; the ImageNet size where none is set); ``None`` for a built backbone (its own size)."""
    if isinstance(backbone, str) and backbone in PRESETS:
        preset = PRESETS[backbone]
        return tuple(preset.train_input_size or preset.input_size)
    return None


def preset_fine_tune_blocks(backbone: Any) -> int | None:
    """The top blocks a classifier fine-tunes by default on ``backbone`` (a name or a built backbone of a preset);
    ``None``: no preset value."""
    preset = PRESETS.get(backbone_name(backbone))
    return preset.fine_tune_blocks if preset else None


def backbone_name(backbone: Any) -> str:
    return backbone if isinstance(backbone, str) else str(getattr(backbone, "name", type(backbone).__name__))


def input_size_of(backbone: Any) -> tuple[int, int]:
    """The fixed ``(height, width)`` a resolved backbone takes (``ValueError`` if it has none)."""
    size = getattr(backbone, "input_size", None) or backbone.model.input_shape[1:3]
    if size is None or None in tuple(size):
        raise ValueError(f"backbone {backbone_name(backbone)} has no fixed input size")
    return int(size[0]), int(size[1])


def copy_model(model: keras.Model) -> keras.Model:
    """An independent copy of ``model`` (same architecture and weights, own variables), made without moving global
    random state; fine-tuning trains the copy, never the caller's model."""
    with global_random_state_kept():
        clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def leaf_layers(model: keras.Layer) -> list[keras.Layer]:
    """All non-container layers of ``model``, nested models flattened, in order."""
    out = []
    for layer in getattr(model, "layers", []):
        if getattr(layer, "layers", None):
            out.extend(leaf_layers(layer))
        else:
            out.append(layer)
    return out


_BLOCK = re.compile(r"^(.*?block_?\d+)(?:_|$)")


def block_name(layer_name: str) -> str:
    """The block a layer belongs to, from its name: ``block16_expand`` -> ``block16``, ``block_3_project`` ->
    ``block_3``, ``conv5_block16_1_conv`` -> ``conv5_block16``; otherwise the name's first ``_`` field
    (``head_conv`` -> ``head``)."""
    match = _BLOCK.match(layer_name)
    return match.group(1) if match else layer_name.split("_", 1)[0]


def backbone_blocks(backbone_model: keras.Model) -> list[tuple[str, list[keras.Layer]]]:
    """The backbone's trainable-weight layers (BatchNormalization excluded) grouped into named blocks, in order."""
    blocks: list[tuple[str, list[keras.Layer]]] = []
    for layer in leaf_layers(backbone_model):
        if not layer.weights or isinstance(layer, keras.layers.BatchNormalization):
            continue
        name = block_name(layer.name)
        if blocks and blocks[-1][0] == name:
            blocks[-1][1].append(layer)
        else:
            blocks.append((name, [layer]))
    return blocks


def set_fine_tunable(backbone_model: keras.Model, n_blocks: int) -> list[str]:
    """Unfreeze the top ``n_blocks`` blocks of a backbone (in place: pass a `copy_model`); everything else, and every
    BatchNormalization layer, stays frozen (so BatchNorm keeps its ImageNet statistics and runs in inference mode).
    Returns the unfrozen blocks."""
    backbone_model.trainable = True
    for layer in leaf_layers(backbone_model):
        layer.trainable = False
    chosen = backbone_blocks(backbone_model)[-n_blocks:] if n_blocks > 0 else []
    for _, layers in chosen:
        for layer in layers:
            layer.trainable = True
    return [name for name, _ in chosen]
