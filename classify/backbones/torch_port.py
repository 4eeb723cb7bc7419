"""Keras layers filled from a PyTorch state dict: the shared part of every ported backbone.

A `TorchPort` creates named Keras layers and records which torch tensors fill each one; `load` copies a state dict
(numpy arrays, read without torch by `detectcrop.zoo.torch_pickle`) into them, checking every shape. Padding and
BatchNorm epsilon are the source implementation's, so the port computes what the source computes:

- ``padding="symmetric"``: torch's ``padding=k // 2`` on every side (torchvision);
- ``padding="same"``: TensorFlow's ``SAME`` (stride-2 convolutions pad more at the bottom and right), which Keras'
  ``same`` is; EfficientNet ports of TensorFlow checkpoints use it.
"""

from __future__ import annotations

import numpy as np
from keras import layers


class TorchPort:
    """Builds conv / depthwise / BatchNorm / dense layers and remembers the torch key of each."""

    def __init__(self, padding: str, bn_epsilon: float) -> None:
        if padding not in ("symmetric", "same"):
            raise ValueError(f"padding must be 'symmetric' or 'same', got {padding!r}")
        self.padding = padding
        self.bn_epsilon = bn_epsilon
        self.assignments: list[tuple[layers.Layer, str, str]] = []  # (layer, kind, torch key prefix)

    def conv(self, x, key: str, filters: int, kernel: int, stride: int, name: str, depthwise: bool = False):
        """A bias-free convolution (``depthwise``: one filter per channel) read from ``{key}.weight``."""
        padding = "same" if self.padding == "same" else "valid"
        if self.padding == "symmetric" and kernel > 1:
            x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        if depthwise:
            layer = layers.DepthwiseConv2D(kernel, stride, padding=padding, use_bias=False, name=name)
        else:
            layer = layers.Conv2D(filters, kernel, stride, padding=padding, use_bias=False, name=name)
        self.assignments.append((layer, "dwconv" if depthwise else "conv", key))
        return layer(x)

    def bn(self, x, key: str, name: str, relu6: bool = True):
        """BatchNorm from ``{key}.weight|bias|running_mean|running_var``, then ReLU6 unless ``relu6=False``."""
        layer = layers.BatchNormalization(epsilon=self.bn_epsilon, momentum=0.9, name=f"{name}_bn")
        self.assignments.append((layer, "bn", key))
        x = layer(x)
        return layers.ReLU(6.0, name=f"{name}_relu")(x) if relu6 else x

    def dense(self, x, key: str, units: int, name: str, activation: str | None = None):
        """A dense layer from ``{key}.weight`` (transposed) and ``{key}.bias``."""
        layer = layers.Dense(units, activation=activation, name=name)
        self.assignments.append((layer, "dense", key))
        return layer(x)

    def load(self, state: dict[str, np.ndarray]) -> None:
        """Copy ``state`` into the recorded layers; ``ValueError`` naming the key when a tensor is missing or its
        shape does not fit the layer."""
        for layer, kind, key in self.assignments:
            try:
                if kind == "conv":
                    values = [state[f"{key}.weight"].transpose(2, 3, 1, 0)]
                elif kind == "dwconv":
                    values = [state[f"{key}.weight"].transpose(2, 3, 0, 1)]
                elif kind == "bn":
                    values = [state[f"{key}.{s}"] for s in ("weight", "bias", "running_mean", "running_var")]
                else:
                    values = [state[f"{key}.weight"].T, state[f"{key}.bias"]]
            except KeyError as exc:
                raise ValueError(f"the weights have no tensor {exc.args[0]!r} (for layer {layer.name})") from None
            expected = [tuple(w.shape) for w in layer.weights]
            if [v.shape for v in values] != expected:
                raise ValueError(f"{key}: shapes {[v.shape for v in values]} do not fit layer {layer.name} {expected}")
            layer.set_weights(values)


def load_npz(port: TorchPort, weights: str | None) -> None:
    """Fill ``port``'s layers from a ``.npz`` of a state dict (``None``: keep the random initialisation)."""
    if weights is not None:
        with np.load(weights) as npz:
            port.load(dict(npz))
