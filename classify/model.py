"""`FineClassifier`: a transfer-learned crop classifier in the scikit-learn manner.

Model: ``image (H, W, 3) float32 in [0, 255] -> backbone (its preprocessing inside) -> pooled features ->
Dense(128, relu) -> Dropout -> Dense(n, softmax)``, saved as one ``.keras`` file that also carries the label names and
the training configuration (in a pass-through `ClassifierInfo` layer), so a loaded model needs nothing else.

Training has two stages:

1. Head on a frozen backbone (the seed's recipe: Adam(0.005), ReduceLROnPlateau, best checkpoint on validation,
   early stopping). The frozen backbone is run once per image and once per cached augmented view (`classify.features`)
   and the head trains on those features, so each epoch costs milliseconds instead of a backbone pass.
2. Optional fine-tuning: the top ``fine_tune_blocks`` backbone blocks are unfrozen (BatchNormalization stays frozen,
   in inference mode) and the model trains on augmented images at a lower learning rate.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import f1_score, log_loss
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from classify.augment import AugmentationSpec, augmentation_to_dict, build_augmentation, seeded
from classify.data import grouped_split
from classify.features import ImageItem, extract_views, iter_items, load_batch, predict_batches

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
FORMAT_VERSION = 1


@keras.saving.register_keras_serializable(package="classify")
class ClassifierInfo(keras.layers.Layer):
    """Pass-through layer that stores the label names and configuration inside the saved model."""

    def __init__(self, class_names: Sequence[str], info: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.class_names = [str(c) for c in class_names]
        self.info = dict(info or {})

    def call(self, inputs: Any) -> Any:
        return inputs

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "class_names": self.class_names, "info": self.info}


class _Stand:
    """A bare `keras.Model` seen as a backbone (name, input size)."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self.name = model.name
        self.input_size = tuple(int(d) for d in model.input_shape[1:3])


def resolve_backbone(backbone: Any) -> Any:
    """A preset name -> ``Backbone.from_preset(name)``; a Backbone-like object (``.model``, ``.input_size``,
    ``.name``) or a bare `keras.Model` (image in, pooled features out) is used as is."""
    if isinstance(backbone, str):
        from classify.backbones import Backbone

        return Backbone.from_preset(backbone, include_top=False)
    if isinstance(backbone, keras.Model):
        return _Stand(backbone)
    if not hasattr(backbone, "model"):
        raise TypeError(f"backbone must be a preset name, a Backbone or a keras.Model, got {type(backbone).__name__}")
    return backbone


def _backbone_name(backbone: Any) -> str:
    return backbone if isinstance(backbone, str) else str(getattr(backbone, "name", type(backbone).__name__))


def _input_size(backbone: Any) -> tuple[int, int]:
    size = getattr(backbone, "input_size", None) or backbone.model.input_shape[1:3]
    if size is None or None in tuple(size):
        raise ValueError(f"backbone {_backbone_name(backbone)} has no fixed input size")
    return int(size[0]), int(size[1])


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
    """Unfreeze the top ``n_blocks`` blocks of a backbone; everything else, and every BatchNormalization layer, stays
    frozen (so BatchNorm keeps its ImageNet statistics and runs in inference mode). Returns the unfrozen blocks."""
    backbone_model.trainable = True
    for layer in leaf_layers(backbone_model):
        layer.trainable = False
    chosen = backbone_blocks(backbone_model)[-n_blocks:] if n_blocks > 0 else []
    for _, layers in chosen:
        for layer in layers:
            layer.trainable = True
    return [name for name, _ in chosen]


def decide_labels(proba: np.ndarray, classes: Sequence[Any], unknown_below: float | None,
                  unknown_label: str) -> np.ndarray:
    """The top class per row of ``proba``; ``unknown_label`` where its probability is below ``unknown_below``."""
    if not len(proba):
        return np.zeros(0, object)
    labels = np.asarray(classes, dtype=object)[np.asarray(proba).argmax(axis=1)]
    if unknown_below is not None:
        labels[np.asarray(proba).max(axis=1) < unknown_below] = unknown_label
    return labels


class _ViewSampler(keras.utils.PyDataset):
    """Cached features ``(V, N, D)``: each epoch visits every image once, in a fresh order, through a random view."""

    def __init__(self, feats: np.ndarray, y: np.ndarray, weights: np.ndarray, batch_size: int, seed: int | None):
        super().__init__()
        self.feats, self.y, self.weights, self.batch_size = feats, y, weights, batch_size
        self.rng = np.random.default_rng(seed)
        self._draw()

    def _draw(self) -> None:
        n = self.feats.shape[1]
        self.order = self.rng.permutation(n)
        self.view = self.rng.integers(0, self.feats.shape[0], n)

    def __len__(self) -> int:
        return math.ceil(self.feats.shape[1] / self.batch_size)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        return self.feats[self.view[idx], idx], self.y[idx], self.weights[idx]

    def on_epoch_end(self) -> None:
        self._draw()


class _ImageBatches(keras.utils.PyDataset):
    """Images read, resized and (optionally) augmented on the fly, reshuffled every epoch (the fine-tuning data)."""

    def __init__(
        self,
        items: Sequence[ImageItem],
        y: np.ndarray,
        weights: np.ndarray,
        size: tuple[int, int],
        batch_size: int,
        transform: Any,
        seed: int | None,
    ) -> None:
        super().__init__()
        self.items, self.y, self.weights, self.size = items, y, weights, size
        self.batch_size, self.transform = batch_size, transform
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(items))

    def __len__(self) -> int:
        return math.ceil(len(self.items) / self.batch_size)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        images = load_batch([self.items[j] for j in idx], self.size)
        if self.transform is not None:
            images = np.stack([self.transform(image=img)["image"] for img in images])
        return images.astype(np.float32), self.y[idx], self.weights[idx]

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.items))


class _Validation(keras.callbacks.Callback):
    """Adds ``val_loss``, ``val_accuracy`` and ``val_macro_f1`` to the epoch logs (first in the callback list)."""

    def __init__(self, predict: Callable[[], np.ndarray], y: np.ndarray, n_classes: int) -> None:
        super().__init__()
        self.predict, self.y, self.labels = predict, y, np.arange(n_classes)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        logs.update(self.scores())

    def scores(self) -> dict[str, float]:
        probs = self.predict()
        pred = probs.argmax(axis=1)
        return {
            "val_loss": float(log_loss(self.y, probs, labels=self.labels)),
            "val_accuracy": float(np.mean(pred == self.y)),
            "val_macro_f1": float(f1_score(self.y, pred, average="macro", zero_division=0)),
        }


class _BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the best validation epoch (highest macro-F1, then lowest loss), stops after
    ``patience`` epochs without improvement, and restores the best weights at the end."""

    def __init__(self, patience: int) -> None:
        super().__init__()
        self.patience = patience
        self.best: tuple[float, float] | None = None
        self.best_epoch = -1
        self.best_weights: list[np.ndarray] | None = None
        self.wait = 0

    def start_from(self, model: keras.Model, logs: dict[str, float]) -> None:
        """Count the model as it is (epoch -1) as a candidate: a stage that never beats it leaves it unchanged."""
        self.best, self.best_epoch = self._key(logs), -1
        self.best_weights = model.get_weights()

    @staticmethod
    def _key(logs: dict) -> tuple[float, float]:
        return round(float(logs["val_macro_f1"]), 6), -float(logs["val_loss"])

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        key = self._key(logs)
        if self.best is None or key > self.best:
            self.best, self.best_epoch, self.wait = key, epoch, 0
            self.best_weights = self.model.get_weights()
        else:
            self.wait += 1
            if self.patience and self.wait >= self.patience:
                self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class _History(keras.callbacks.Callback):
    """Records one row per epoch (stage, metrics, learning rate) and drives a tqdm bar over epochs."""

    def __init__(self, rows: list[dict], stage: str, epochs: int, show_progress: bool) -> None:
        super().__init__()
        self.rows, self.stage = rows, stage
        self.bar = tqdm(total=epochs, desc=stage, unit="epoch", disable=not show_progress)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row = {"stage": self.stage, "epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        row["learning_rate"] = lr
        self.rows.append(row)
        self.bar.update(1)
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k in ("loss", "val_loss", "val_macro_f1")})
        logger.debug("%s epoch %d: %s", self.stage, epoch + 1, row)

    def on_train_end(self, logs: dict | None = None) -> None:
        self.bar.close()


class FineClassifier(ClassifierMixin, BaseEstimator):
    """Transfer-learned image classifier for crops (scikit-learn conventions: ``fit`` returns ``self``; learned
    state ends in ``_``).

    Args:
        backbone: preset name (``"densenet121"``, ``"mobilenet_v2"``, ``"mobilenet_v2_hub"``,
            ``"mobilenet_v2_torchvision"``), a Backbone, or a `keras.Model` mapping ``(H, W, 3)`` float [0, 255]
            images to pooled features. Fine-tuning trains that backbone's weights in place.
        epochs: head-stage epochs (upper bound; early stopping may end sooner).
        batch_size: batch size for both stages and for inference.
        learning_rate: Adam learning rate for the head (the seed's 0.005).
        dense_units, dropout: the head: ``Dense(dense_units, relu) -> Dropout(dropout) -> Dense(n, softmax)``.
        augmentation: albumentations pipeline as a preset name, dict, JSON path or Compose; ``None`` for none.
        augment_views: augmented views cached per training image for the head stage (0: clean images only).
        class_weight: ``None`` or ``"balanced"`` (inverse class frequency, as scikit-learn).
        validation_fraction: held out of ``fit``'s data (grouped by ``groups``) when no ``validation_data`` is given;
            0 trains on everything without checkpointing.
        patience: early-stopping patience in epochs (0: never stop early).
        reduce_lr_patience, reduce_lr_factor, min_learning_rate: ReduceLROnPlateau on ``val_loss``.
        fine_tune_blocks: after the head stage, unfreeze the backbone's top blocks (see `backbone_blocks`; 0: skip).
        fine_tune_epochs, fine_tune_learning_rate: the fine-tuning stage.
        unknown_below: `predict` answers ``unknown_label`` when the top probability is below this (``None``: never).
        unknown_label: the answer for ambiguous inputs.
        cache_dir: folder for cached backbone features (reused across runs on the same files); ``None``: memory only.
        seed: makes training repeatable (seeds Python, NumPy, TensorFlow, the split and the augmentation).
        show_progress: tqdm bars for feature extraction and epochs.
    """

    def __init__(
        self,
        backbone: Any = "densenet121",
        *,
        epochs: int = 50,
        batch_size: int = 32,
        learning_rate: float = 0.005,
        dense_units: int = 128,
        dropout: float = 0.5,
        augmentation: AugmentationSpec = "default",
        augment_views: int = 4,
        class_weight: str | None = None,
        validation_fraction: float = 0.2,
        patience: int = 10,
        reduce_lr_patience: int = 4,
        reduce_lr_factor: float = 0.3,
        min_learning_rate: float = 1e-6,
        fine_tune_blocks: int = 0,
        fine_tune_epochs: int = 10,
        fine_tune_learning_rate: float = 1e-5,
        unknown_below: float | None = None,
        unknown_label: str = "unknown",
        cache_dir: str | Path | None = None,
        seed: int | None = None,
        show_progress: bool = False,
    ) -> None:
        self.backbone = backbone
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.dense_units = dense_units
        self.dropout = dropout
        self.augmentation = augmentation
        self.augment_views = augment_views
        self.class_weight = class_weight
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.reduce_lr_patience = reduce_lr_patience
        self.reduce_lr_factor = reduce_lr_factor
        self.min_learning_rate = min_learning_rate
        self.fine_tune_blocks = fine_tune_blocks
        self.fine_tune_epochs = fine_tune_epochs
        self.fine_tune_learning_rate = fine_tune_learning_rate
        self.unknown_below = unknown_below
        self.unknown_label = unknown_label
        self.cache_dir = cache_dir
        self.seed = seed
        self.show_progress = show_progress

    # ------------------------------------------------------------------ training
    def fit(
        self,
        X: Sequence[ImageItem] | np.ndarray,
        y: Sequence[Any],
        *,
        groups: Sequence[Any] | None = None,
        validation_data: tuple[Sequence[ImageItem] | np.ndarray, Sequence[Any]] | None = None,
    ) -> FineClassifier:
        """Train on images ``X`` (paths or RGB arrays of any size) with labels ``y``.

        Args:
            groups: group ids (e.g. source photo) kept on one side of the internal validation split.
            validation_data: ``(X_val, y_val)``; otherwise ``validation_fraction`` of ``X`` is held out.
        """
        if self.class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be None or 'balanced', got {self.class_weight!r}")
        if self.seed is not None:
            keras.utils.set_random_seed(self.seed)
        t_start = time.perf_counter()
        items = iter_items(X)
        labels = np.asarray([str(v) for v in y], dtype=object)
        if len(items) != len(labels):
            raise ValueError(f"X has {len(items)} images but y has {len(labels)} labels")
        self.classes_ = np.asarray(sorted(set(labels.tolist())), dtype=object)
        if len(self.classes_) < 2:
            raise ValueError(f"need at least 2 classes, got {self.classes_.tolist()}")
        y_int = np.searchsorted(self.classes_, labels)
        if validation_data is not None:
            val_items = iter_items(validation_data[0])
            val_labels = np.asarray([str(v) for v in validation_data[1]], dtype=object)
            unknown = sorted(set(val_labels.tolist()) - set(self.classes_.tolist()))
            if unknown:
                raise ValueError(f"validation labels {unknown} are not in the training labels")
            train_items, y_train = items, y_int
            y_val = np.searchsorted(self.classes_, val_labels)
        elif self.validation_fraction and self.validation_fraction > 0:
            tr, va = grouped_split(y_int, groups, val_fraction=self.validation_fraction, seed=self.seed)
            train_items, y_train = [items[i] for i in tr], y_int[tr]
            val_items, y_val = [items[i] for i in va], y_int[va]
        else:
            train_items, y_train, val_items, y_val = items, y_int, [], np.zeros(0, np.int64)
        n_classes = len(self.classes_)
        if self.class_weight == "balanced":
            cw = compute_class_weight("balanced", classes=np.arange(n_classes), y=y_train)
            weights = cw[y_train].astype(np.float32)
        else:
            weights = np.ones(len(y_train), np.float32)

        self.backbone_ = resolve_backbone(self.backbone)
        if self.fine_tune_blocks > 0 and not getattr(self.backbone_, "fine_tunable", True):
            raise ValueError(f"backbone {_backbone_name(self.backbone_)} cannot be fine-tuned; use fine_tune_blocks=0")
        self.input_size_ = _input_size(self.backbone_)
        backbone_model = self.backbone_.model
        backbone_model.trainable = False
        self.augmentation_ = augmentation_to_dict(self.augmentation)
        views = self.augment_views if self.augmentation_ is not None else 0
        self.history_: list[dict[str, float]] = []
        self.timings_: dict[str, float] = {}

        t0 = time.perf_counter()
        common = {"batch_size": self.batch_size, "cache_dir": self.cache_dir, "show_progress": self.show_progress}
        train_feats = extract_views(
            backbone_model,
            train_items,
            self.input_size_,
            views=views,
            augmentation=self.augmentation_,
            seed=self.seed,
            desc="train features",
            **common,
        )
        val_feats = (
            extract_views(backbone_model, val_items, self.input_size_, desc="val features", **common)[0]
            if len(val_items)
            else None
        )
        self.timings_["features_s"] = time.perf_counter() - t0
        logger.info(
            "features: %d train images x %d views, %d val images, dim %d (%.1fs)",
            len(train_items),
            1 + views,
            len(val_items),
            train_feats.shape[-1],
            self.timings_["features_s"],
        )

        t0 = time.perf_counter()
        head = self._build_head(train_feats.shape[-1], n_classes)
        head.compile(
            optimizer=keras.optimizers.Adam(self.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        data = _ViewSampler(train_feats, y_train, weights, self.batch_size, self.seed)
        val_predict = (lambda: predict_batches(head, val_feats, 256)) if val_feats is not None else None
        self.best_epoch_ = self._run_stage(head, data, "head", self.epochs, val_predict, y_val, n_classes)
        self.timings_["head_s"] = time.perf_counter() - t0
        self.model_ = self._assemble(backbone_model, head)

        if self.fine_tune_blocks > 0 and self.fine_tune_epochs > 0:
            t0 = time.perf_counter()
            self._fine_tune(train_items, y_train, weights, val_items, y_val, n_classes)
            self.timings_["fine_tune_s"] = time.perf_counter() - t0
        self.model_.trainable = False
        self.timings_["fit_s"] = time.perf_counter() - t_start
        return self

    def _build_head(self, dim: int, n_classes: int) -> keras.Model:
        inp = keras.Input((dim,), name="features")
        x = keras.layers.Dense(self.dense_units, activation="relu", name="head_dense")(inp)
        x = keras.layers.Dropout(self.dropout, name="head_dropout")(x)
        out = keras.layers.Dense(n_classes, activation="softmax", name="head_output")(x)
        return keras.Model(inp, out, name="head")

    def _assemble(self, backbone_model: keras.Model, head: keras.Model) -> keras.Model:
        """One model, image in -> probabilities out, with the label names and config attached."""
        inp = keras.Input((*self.input_size_, 3), name="image")
        x = backbone_model(inp)
        for layer in head.layers[1:]:
            x = layer(x)
        info = ClassifierInfo(self.classes_.tolist(), self._info(), name="classifier_info")
        return keras.Model(inp, info(x), name="fine_classifier")

    def _info(self) -> dict[str, Any]:
        params = {k: v for k, v in self.get_params().items() if k not in ("backbone", "augmentation", "cache_dir")}
        # A preset name stays a name; anything else is saved as its dict form.
        params["augmentation"] = self.augmentation if isinstance(self.augmentation, str) else self.augmentation_
        return {
            "format_version": FORMAT_VERSION,
            "backbone": _backbone_name(self.backbone_ if hasattr(self, "backbone_") else self.backbone),
            "input_size": list(self.input_size_),
            "input": "RGB float32 in [0, 255], resized (area when shrinking, bilinear when enlarging)",
            "params": params,
            "augmentation": self.augmentation_,
            "best_epoch": int(self.best_epoch_) + 1 if self.best_epoch_ is not None else None,
        }

    def _run_stage(
        self,
        model: keras.Model,
        data: keras.utils.PyDataset,
        stage: str,
        epochs: int,
        val_predict: Callable[[], np.ndarray] | None,
        y_val: np.ndarray,
        n_classes: int,
        keep_if_not_improved: bool = False,
    ) -> int | None:
        """Fit ``model`` for one stage; returns the best epoch (0-based; -1: no epoch beat the model as it was, with
        ``keep_if_not_improved``) or ``None`` without validation."""
        callbacks: list[keras.callbacks.Callback] = []
        best = None
        if val_predict is not None:
            best = _BestWeights(self.patience)
            validation = _Validation(val_predict, y_val, n_classes)
            if keep_if_not_improved:
                best.start_from(model, validation.scores())
            callbacks += [validation, best]
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss" if val_predict is not None else "loss",
                factor=self.reduce_lr_factor,
                patience=self.reduce_lr_patience,
                min_lr=self.min_learning_rate,
            )
        )
        callbacks.append(_History(self.history_, stage, epochs, self.show_progress))
        model.fit(data, epochs=epochs, verbose=0, callbacks=callbacks)
        if best is None:
            return None
        logger.info(
            "%s stage: best epoch %d of %d (val macro-F1 %.4f, val loss %.4f)",
            stage,
            best.best_epoch + 1,
            sum(1 for r in self.history_ if r["stage"] == stage),
            best.best[0],
            -best.best[1],
        )
        return best.best_epoch

    def _fine_tune(
        self,
        train_items: Sequence[ImageItem],
        y_train: np.ndarray,
        weights: np.ndarray,
        val_items: Sequence[ImageItem],
        y_val: np.ndarray,
        n_classes: int,
    ) -> None:
        blocks = set_fine_tunable(self.backbone_.model, self.fine_tune_blocks)
        logger.info("fine-tuning the top %d backbone blocks: %s", len(blocks), ", ".join(blocks))
        model = self.model_
        model.compile(
            optimizer=keras.optimizers.Adam(self.fine_tune_learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        seed = None if self.seed is None else self.seed + 1
        transform = seeded(self.augmentation_, seed)
        data = _ImageBatches(train_items, y_train, weights, self.input_size_, self.batch_size, transform, seed)
        val_images = load_batch(val_items, self.input_size_) if len(val_items) else None
        val_predict = (
            (lambda: predict_batches(model, val_images, self.batch_size))
            if val_images is not None
            else None
        )
        best = self._run_stage(model, data, "fine_tune", self.fine_tune_epochs, val_predict, y_val, n_classes,
                               keep_if_not_improved=True)  # never end worse on validation than the head stage
        self.fine_tune_best_epoch_ = best

    # ------------------------------------------------------------------ inference
    def predict_proba(self, X: Sequence[ImageItem] | np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Class probabilities ``(N, n_classes)`` in the order of ``classes_``."""
        check_is_fitted(self, "model_")
        items = iter_items(X)
        bs = batch_size or self.batch_size
        n = len(self.classes_)
        outs = []
        for start in range(0, len(items), 256):
            images = load_batch(items[start : start + 256], self.input_size_).astype(np.float32)
            outs.append(predict_batches(self.model_, images, bs))
        return np.concatenate(outs) if outs else np.zeros((0, n), np.float32)

    def predict(self, X: Sequence[ImageItem] | np.ndarray) -> np.ndarray:
        """The most probable label per image; ``unknown_label`` where its probability is below ``unknown_below``."""
        return self.labels_from_proba(self.predict_proba(X))

    def labels_from_proba(self, proba: np.ndarray) -> np.ndarray:
        """Labels for probabilities from `predict_proba` (``unknown_label`` below ``unknown_below``)."""
        return decide_labels(proba, self.classes_, self.unknown_below, self.unknown_label)

    def predict_topk(self, X: Sequence[ImageItem] | np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable ``(label, probability)`` pairs per image, best first."""
        proba = self.predict_proba(X)
        k = min(k, proba.shape[1])
        order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
        return [[(str(self.classes_[j]), float(p[j])) for j in row] for p, row in zip(proba, order, strict=True)]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the model (one ``.keras`` file with labels and config) atomically, and its augmentation as
        ``<stem>.augmentation.json`` beside it. ``path``: a ``.keras`` file or a folder (``folder/model.keras``)."""
        check_is_fitted(self, "model_")
        path = Path(path)
        if path.suffix != ".keras":
            path = path / MODEL_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        info = self.model_.get_layer("classifier_info")
        info.info = self._info()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.keras")
        os.close(fd)
        try:
            self.model_.save(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        from classify.augment import save_augmentation

        save_augmentation(self.augmentation_, path.with_name(f"{path.stem}.augmentation.json"))
        logger.info("saved %s", path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FineClassifier:
        """Load a model written by `save` (a ``.keras`` file or the folder holding ``model.keras``)."""
        path = Path(path)
        if path.is_dir():
            path = path / MODEL_FILE
        model = keras.saving.load_model(path, compile=False)
        infos = [layer for layer in model.layers if isinstance(layer, ClassifierInfo)]
        if not infos:
            raise ValueError(f"{path} is not a FineClassifier model (no ClassifierInfo layer)")
        info = infos[0].info
        params = dict(info.get("params", {}))
        valid = cls().get_params()
        params.setdefault("augmentation", info.get("augmentation"))
        clf = cls(backbone=info.get("backbone", "unknown"), **{k: v for k, v in params.items() if k in valid})
        clf.model_ = model
        clf.classes_ = np.asarray(infos[0].class_names, dtype=object)
        clf.input_size_ = tuple(info.get("input_size") or model.input_shape[1:3])
        clf.augmentation_ = copy.deepcopy(info.get("augmentation"))
        clf.best_epoch_ = None if info.get("best_epoch") is None else int(info["best_epoch"]) - 1
        clf.history_ = []
        clf.timings_ = {}
        return clf

    @property
    def augmentation_pipeline_(self) -> Any:
        """The fitted augmentation as an albumentations pipeline (``None`` if none)."""
        return build_augmentation(self.augmentation_)
