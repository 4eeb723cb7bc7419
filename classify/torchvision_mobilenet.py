"""torchvision's MobileNetV2 rebuilt in Keras, so its ImageNet weights run unchanged (no torch at run time).

Faithful to torchvision: 3x3 convolutions pad one pixel on every side (``ZeroPadding2D(1)`` + ``valid``), unlike Keras'
``same`` padding, which pads stride-2 convolutions asymmetrically; BatchNorm epsilon 1e-5; ReLU6. Layers are named by
block (``block{i}_...``, i = 1..17) so fine-tuning can unfreeze the top blocks.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

# (expansion t, output channels c, repeats n, first stride s), as in torchvision and the paper.
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                             (6, 160, 3, 2), (6, 320, 1, 1))
NUM_BLOCKS = sum(n for _, _, n, _ in INVERTED_RESIDUAL_SETTING)


class _Builder:
    """Creates named layers and records which torch tensors fill each one."""

    def __init__(self) -> None:
        self.assignments: list[tuple[layers.Layer, str, str]] = []  # (layer, kind, torch key prefix)

    def conv(self, x, key: str, filters: int, kernel: int, stride: int, name: str, depthwise: bool = False):
        if kernel == 3:
            x = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
        if depthwise:
            layer = layers.DepthwiseConv2D(kernel, stride, use_bias=False, name=name)
        else:
            layer = layers.Conv2D(filters, kernel, stride, use_bias=False, name=name)
        self.assignments.append((layer, "dwconv" if depthwise else "conv", key))
        return layer(x)

    def bn(self, x, key: str, name: str, relu: bool = True):
        layer = layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"{name}_bn")
        self.assignments.append((layer, "bn", key))
        x = layer(x)
        return layers.ReLU(6.0, name=f"{name}_relu")(x) if relu else x


def build_mobilenet_v2(include_top: bool = False, input_shape: tuple = (224, 224, 3)) -> tuple[keras.Model, _Builder]:
    """The architecture alone (pooled 1280-d features, or the 1000-way softmax) and its weight assignments."""
    b = _Builder()
    inputs = keras.Input(input_shape, name="image")
    x = b.bn(b.conv(inputs, "features.0.0", 32, 3, 2, "stem_conv"), "features.0.1", "stem")
    index, channels = 1, 32
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        for j in range(n):
            stride = s if j == 0 else 1
            key, name, y, q = f"features.{index}.conv", f"block{index}", x, 0
            if t != 1:
                y = b.bn(b.conv(y, f"{key}.0.0", channels * t, 1, 1, f"{name}_expand"), f"{key}.0.1", f"{name}_expand")
                q = 1
            y = b.conv(y, f"{key}.{q}.0", 0, 3, stride, f"{name}_depthwise", depthwise=True)
            y = b.bn(y, f"{key}.{q}.1", f"{name}_depthwise")
            y = b.bn(b.conv(y, f"{key}.{q + 1}", c, 1, 1, f"{name}_project"), f"{key}.{q + 2}", f"{name}_project",
                     relu=False)
            x = layers.Add(name=f"{name}_add")([x, y]) if stride == 1 and channels == c else y
            channels, index = c, index + 1
    x = b.bn(b.conv(x, "features.18.0", 1280, 1, 1, "head_conv"), "features.18.1", "head")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        head = layers.Dense(1000, activation="softmax", name="predictions")
        b.assignments.append((head, "dense", "classifier.1"))
        x = head(x)
    return keras.Model(inputs, x, name="mobilenet_v2_torchvision"), b


def load_torchvision_weights(builder: _Builder, state: dict[str, np.ndarray]) -> None:
    """Copy a torchvision MobileNetV2 state dict into the layers ``builder`` recorded."""
    for layer, kind, key in builder.assignments:
        if kind == "conv":
            values = [state[f"{key}.weight"].transpose(2, 3, 1, 0)]
        elif kind == "dwconv":
            values = [state[f"{key}.weight"].transpose(2, 3, 0, 1)]
        elif kind == "bn":
            values = [state[f"{key}.{s}"] for s in ("weight", "bias", "running_mean", "running_var")]
        else:
            values = [state[f"{key}.weight"].T, state[f"{key}.bias"]]
        layer.set_weights(values)


def mobilenet_v2_torchvision(weights: str | None, include_top: bool = False,
                             input_shape: tuple = (224, 224, 3)) -> keras.Model:
    """Build the model; ``weights`` is a ``.npz`` of the torchvision state dict, or None for random initialisation."""
    model, builder = build_mobilenet_v2(include_top, input_shape)
    if weights is not None:
        with np.load(weights) as npz:
            load_torchvision_weights(builder, dict(npz))
    return model
