"""torchvision's MobileNetV2 rebuilt in Keras, so its ImageNet weights run unchanged (no torch at run time).

Faithful to torchvision: 3x3 convolutions pad one pixel on every side (``ZeroPadding2D(1)`` + ``valid``), unlike Keras'
``same`` padding, which pads stride-2 convolutions asymmetrically; BatchNorm epsilon 1e-5; ReLU6. Layers are named by
block (``block{i}_...``, i = 1..17) so fine-tuning can unfreeze the top blocks.
"""

from __future__ import annotations

import keras
from keras import layers

from classify.backbones.torch_port import TorchPort, load_npz

# (expansion t, output channels c, repeats n, first stride s), as in torchvision and the paper.
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                             (6, 160, 3, 2), (6, 320, 1, 1))
NUM_BLOCKS = sum(n for _, _, n, _ in INVERTED_RESIDUAL_SETTING)


def build_mobilenet_v2(include_top: bool = False, input_shape: tuple = (224, 224, 3)) -> tuple[keras.Model, TorchPort]:
    """The architecture alone (pooled 1280-d features, or the 1000-way softmax) and its weight assignments."""
    b = TorchPort(padding="symmetric", bn_epsilon=1e-5)
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
                     relu6=False)
            x = layers.Add(name=f"{name}_add")([x, y]) if stride == 1 and channels == c else y
            channels, index = c, index + 1
    x = b.bn(b.conv(x, "features.18.0", 1280, 1, 1, "head_conv"), "features.18.1", "head")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = b.dense(x, "classifier.1", 1000, "predictions", activation="softmax")
    return keras.Model(inputs, x, name="mobilenet_v2_torchvision"), b


def mobilenet_v2_torchvision(weights: str | None, include_top: bool = False,
                             input_shape: tuple = (224, 224, 3)) -> keras.Model:
    """Build the model; ``weights`` is a ``.npz`` of the torchvision state dict, or None for random initialisation."""
    model, port = build_mobilenet_v2(include_top, input_shape)
    load_npz(port, weights)
    return model
