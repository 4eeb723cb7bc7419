"""Training a `CropClassifier` in two stages, with the datasets and callbacks they use.

The head emits logits (its cross-entropy is computed from them); the task's softmax temperature stays 1 here and
is fitted afterwards (`classify.model.FineClassifier`, `classify.calibration`).

1. Head on a frozen backbone (the seed's recipe, with Adam(0.001) instead of 0.005: ReduceLROnPlateau, best weights
   on validation, early stopping). The backbone runs once per image and once per cached augmented view
   (`classify.features`); the head (``task.head``) trains on those features, so an epoch costs milliseconds instead
   of a backbone pass.
2. Optional fine-tuning: the top ``fine_tune_blocks`` blocks of a *copy* of the backbone are unfrozen
   (BatchNormalization stays frozen, in inference mode) and the whole task trains on augmented images at a lower
   learning rate, never ending worse on validation than the head stage.

Randomness comes only from ``TrainSettings.seed``: seeded initializers and dropout, seeded shuffles and
augmentation; no global random state is read or changed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from scipy.special import softmax
from sklearn.metrics import f1_score, log_loss
from tqdm.auto import tqdm

from classify.augment import seeded
from classify.backbones import copy_model, set_fine_tunable
from classify.batches import ImageItem, load_batch
from classify.features import extract_views, predict_batches
from classify.openset import DEFAULT_SCORE
from classify.task import CropClassifier

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """Everything `train_task` needs besides the data (see `classify.FineClassifier` for each field)."""

    seed: int
    epochs: int = 100
    batch_size: int = 32
    learning_rate: float = 0.001
    dense_units: int = 512
    dropout: float = 0.3
    augmentation: dict | None = None
    augment_views: int = 4
    patience: int = 20
    reduce_lr_patience: int = 4
    reduce_lr_factor: float = 0.3
    min_learning_rate: float = 1e-6
    fine_tune_blocks: int = 4
    fine_tune_epochs: int = 15
    fine_tune_learning_rate: float = 3e-4
    fine_tune_warmup_epochs: int = 1
    cache_dir: str | Path | None = None
    show_progress: bool = False


@dataclass
class Split:
    """Images, integer labels and per-sample weights of one side of the data."""

    items: Sequence[ImageItem]
    y: np.ndarray
    weights: np.ndarray | None = None


@dataclass
class TrainResult:
    model: CropClassifier
    history: list[dict[str, float]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    best_epoch: int | None = None
    fine_tune_best_epoch: int | None = None
    #: Frozen-backbone features of the clean training and validation images (for the linear probe).
    train_features: np.ndarray | None = None
    val_features: np.ndarray | None = None


class ViewSampler(keras.utils.PyDataset):
    """Cached features ``(V, N, D)``: each epoch visits every image once, in a fresh order, through a random view."""

    def __init__(self, feats: np.ndarray, y: np.ndarray, weights: np.ndarray, batch_size: int, seed: int) -> None:
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


class ImageBatches(keras.utils.PyDataset):
    """Images read, resized and (optionally) augmented on the fly, reshuffled every epoch (the fine-tuning data)."""

    def __init__(self, data: Split, size: tuple[int, int], batch_size: int, transform: Any, seed: int) -> None:
        super().__init__()
        self.data, self.size, self.batch_size, self.transform = data, size, batch_size, transform
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(data.items))

    def __len__(self) -> int:
        return math.ceil(len(self.data.items) / self.batch_size)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        images = load_batch([self.data.items[j] for j in idx], self.size)
        if self.transform is not None:
            images = np.stack([self.transform(image=img)["image"] for img in images])
        return images.astype(np.float32), self.data.y[idx], self.data.weights[idx]

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.data.items))


class ValidationScores(keras.callbacks.Callback):
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


class BestWeights(keras.callbacks.Callback):
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


class History(keras.callbacks.Callback):
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


def run_stage(
    model: keras.Model,
    data: keras.utils.PyDataset,
    stage: str,
    epochs: int,
    settings: TrainSettings,
    history: list[dict],
    validation: ValidationScores | None,
    keep_if_not_improved: bool = False,
    reduce_lr: bool = True,
) -> int | None:
    """Fit a compiled ``model`` for one stage; returns the best epoch (0-based; -1: no epoch beat the model as it was,
    with ``keep_if_not_improved``) or ``None`` without validation."""
    callbacks: list[keras.callbacks.Callback] = []
    best = None
    if validation is not None:
        best = BestWeights(settings.patience)
        if keep_if_not_improved:
            best.start_from(model, validation.scores())
        callbacks += [validation, best]
    if reduce_lr:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss" if validation is not None else "loss",
                factor=settings.reduce_lr_factor,
                patience=settings.reduce_lr_patience,
                min_lr=settings.min_learning_rate,
            )
        )
    callbacks.append(History(history, stage, epochs, settings.show_progress))
    model.fit(data, epochs=epochs, verbose=0, callbacks=callbacks, shuffle=False)  # the datasets shuffle, seeded
    if best is None:
        return None
    logger.info("%s stage: best epoch %d of %d (val macro-F1 %.4f, val loss %.4f)", stage, best.best_epoch + 1,
                sum(1 for r in history if r["stage"] == stage), best.best[0], -best.best[1])
    return best.best_epoch


def _compile(model: keras.Model, learning_rate: float | keras.optimizers.schedules.LearningRateSchedule) -> None:
    """Adam and cross-entropy: on logits for the head alone, on the probabilities for the whole task."""
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not isinstance(model, CropClassifier))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])


def train_task(backbone_model: keras.Model, class_names: Sequence[str], train: Split, val: Split,
               settings: TrainSettings, *, unknown_below: float | None = None, unknown_label: str = "unknown",
               open_set_score: str = DEFAULT_SCORE, metadata: dict[str, Any] | None = None) -> TrainResult:
    """Train a `CropClassifier` on ``train`` (``val`` may be empty: no early stopping, no best-epoch choice).

    ``backbone_model`` is only read: the head stage runs it frozen, and fine-tuning trains a copy of it.
    """
    t_start = time.perf_counter()
    size = (int(backbone_model.input_shape[1]), int(backbone_model.input_shape[2]))
    n_classes = len(class_names)
    views = settings.augment_views if settings.augmentation is not None else 0
    result = TrainResult(model=None)  # type: ignore[arg-type]
    common = {"batch_size": settings.batch_size, "cache_dir": settings.cache_dir,
              "show_progress": settings.show_progress}
    t0 = time.perf_counter()
    train_feats = extract_views(backbone_model, train.items, size, views=views, augmentation=settings.augmentation,
                                seed=settings.seed, desc="train features", **common)
    val_feats = extract_views(backbone_model, val.items, size, desc="val features", **common)[0] if len(val.y) else None
    result.timings["features_s"] = time.perf_counter() - t0
    result.train_features, result.val_features = train_feats[0], val_feats
    logger.info("features: %d train images x %d views, %d val images, dim %d (%.1fs)", len(train.items), 1 + views,
                len(val.items), train_feats.shape[-1], result.timings["features_s"])

    fine_tune = settings.fine_tune_blocks > 0 and settings.fine_tune_epochs > 0
    task = CropClassifier(copy_model(backbone_model) if fine_tune else backbone_model, class_names,
                          dense_units=settings.dense_units, dropout=settings.dropout, unknown_below=unknown_below,
                          unknown_label=unknown_label, open_set_score=open_set_score, seed=settings.seed,
                          metadata=metadata)
    result.model = task
    t0 = time.perf_counter()
    _compile(task.head, settings.learning_rate)
    data = ViewSampler(train_feats, train.y, train.weights, settings.batch_size, settings.seed)
    validation = None
    if val_feats is not None:
        validation = ValidationScores(lambda: softmax(predict_batches(task.head, val_feats, 256), axis=1), val.y,
                                      n_classes)  # the head emits logits
    result.best_epoch = run_stage(task.head, data, "head", settings.epochs, settings, result.history, validation)
    result.timings["head_s"] = time.perf_counter() - t0

    if fine_tune:
        t0 = time.perf_counter()
        result.fine_tune_best_epoch = _fine_tune(task, train, val, settings, result.history)
        result.timings["fine_tune_s"] = time.perf_counter() - t0
    result.timings["fit_s"] = time.perf_counter() - t_start
    return result


def _fine_tune(task: CropClassifier, train: Split, val: Split, settings: TrainSettings,
               history: list[dict]) -> int | None:
    blocks = set_fine_tunable(task.backbone, settings.fine_tune_blocks)
    logger.info("fine-tuning the top %d backbone blocks: %s", len(blocks), ", ".join(blocks))
    seed = settings.seed + 1
    transform = seeded(settings.augmentation, seed)
    data = ImageBatches(train, task.input_size, settings.batch_size, transform, seed)
    _compile(task, fine_tune_schedule(settings, len(data)))
    validation = None
    if len(val.y):
        val_images = load_batch(val.items, task.input_size)
        validation = ValidationScores(lambda: predict_batches(task, val_images, settings.batch_size), val.y,
                                      len(task.class_names))
    # keep_if_not_improved: never end worse on validation than the head stage
    return run_stage(task, data, "fine_tune", settings.fine_tune_epochs, settings, history, validation,
                     keep_if_not_improved=True, reduce_lr=False)


def fine_tune_schedule(settings: TrainSettings, steps_per_epoch: int) -> keras.optimizers.schedules.CosineDecay:
    """Linear warm-up from 1/10 of the fine-tuning rate over ``fine_tune_warmup_epochs``, then cosine decay to
    1/100 of it at the last epoch (a fresh Adam at the full rate first disturbs the unfrozen blocks)."""
    peak = settings.fine_tune_learning_rate
    warmup = min(settings.fine_tune_warmup_epochs, settings.fine_tune_epochs) * steps_per_epoch
    total = settings.fine_tune_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        peak / 10 if warmup else peak, decay_steps=max(1, total - warmup), alpha=0.01,
        warmup_target=peak if warmup else None, warmup_steps=warmup)
