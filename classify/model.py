"""`FineClassifier`: a transfer-learned crop classifier in the scikit-learn manner.

A thin estimator over three parts: the Keras task model `classify.task.CropClassifier` (backbone + head, saved as one
self-describing ``.keras`` file), the two-stage trainer `classify.trainer`, and the prediction interface
`classify.prediction.ProbabilityPredictor` it shares with the LiteRT runner. After training, ``fit`` calibrates
the model on the validation images (`classify.calibration`: the temperature, saved in the model's graph) and sets its
open-set rule (`classify.openset`: the class means of the training features and the threshold that keeps
``open_set_keep`` of the known validation images). ``__init__`` only stores parameters;
``fit`` learns ``classes_``, ``model_`` and the rest (names ending in ``_``), never changes the objects passed in, and
never reads or moves global random state (the seed drives local, seeded generators only).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.validation import check_is_fitted

from classify.augment import AugmentationSpec, augmentation_to_dict, build_augmentation
from classify.backbones import (
    backbone_name,
    input_size_of,
    preset_fine_tune_blocks,
    resolve_backbone,
    training_input_size,
)
from classify.batches import ImageItem, iter_items
from classify.data import grouped_split
from classify.features import extract_features, predict_batches, predict_outputs
from classify.openset import DEFAULT_SCORE, check_score, fit_output_layers
from classify.prediction import ProbabilityPredictor
from classify.probe import attach_linear_probe
from classify.saving import MODEL_FILE, from_task, metadata, read_task, save_classifier
from classify.trainer import Split, TrainSettings, train_task

logger = logging.getLogger(__name__)

#: Backbone blocks fine-tuned by default (``fine_tune_blocks="auto"``) where the backbone's preset sets no count.
AUTO_FINE_TUNE_BLOCKS = 4

Images = Sequence[ImageItem] | np.ndarray


def encode_labels(y: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, y_int)``: the sorted label names as strings and each label's index (labels are names: ``1`` is
    the class ``"1"``; two labels of different types with one name, such as ``1`` and ``"1"``, are refused)."""
    kinds: dict[str, set[str]] = {}
    for v in y:
        kind = ("text" if isinstance(v, str) else "bool" if isinstance(v, bool | np.bool_)
                else "number" if isinstance(v, int | float | np.number) else type(v).__name__)
        kinds.setdefault(str(v), set()).add(kind)
    mixed = {name: sorted(types) for name, types in kinds.items() if len(types) > 1}
    if mixed:
        name, types = next(iter(mixed.items()))
        raise ValueError(f"labels of different types share the name {name!r} ({', '.join(types)}): they would be "
                         "one class; give every label one type")
    labels = np.asarray([str(v) for v in y], dtype=object)
    classes = np.asarray(sorted(set(labels.tolist())), dtype=object)
    return classes, np.searchsorted(classes, labels)


def resolve_fine_tune_blocks(blocks: int | str, backbone: Any) -> int:
    """The number of backbone blocks to fine-tune: ``"auto"`` is the backbone preset's measured count (the offline
    default's: 8), else `AUTO_FINE_TUNE_BLOCKS`, for a backbone that can be fine-tuned and 0 for one that cannot (TF
    Hub feature vectors); an explicit count on such a backbone is an error."""
    tunable = getattr(backbone, "fine_tunable", True)
    if blocks == "auto":
        preset = preset_fine_tune_blocks(backbone)
        return (AUTO_FINE_TUNE_BLOCKS if preset is None else preset) if tunable else 0
    if not isinstance(blocks, int | np.integer) or isinstance(blocks, bool) or blocks < 0:
        raise ValueError(f"fine_tune_blocks must be 'auto' or a count >= 0, got {blocks!r}")
    if blocks > 0 and not tunable:
        raise ValueError(f"backbone {backbone_name(backbone)} cannot be fine-tuned; use fine_tune_blocks=0")
    return int(blocks)


def check_params(clf: FineClassifier) -> None:
    """A clear ``ValueError`` for a training parameter out of its range (before any work is done)."""
    if clf.class_weight not in (None, "balanced"):
        raise ValueError(f"class_weight must be None or 'balanced', got {clf.class_weight!r}")
    check_score(clf.open_set_score)
    if clf.open_set_keep is not None and not 0 < clf.open_set_keep <= 1:
        raise ValueError(f"open_set_keep must be in (0, 1] or None, got {clf.open_set_keep!r}")
    counts = {"epochs": 1, "batch_size": 1, "dense_units": 0, "augment_views": 0, "patience": 0,
              "reduce_lr_patience": 0, "fine_tune_epochs": 0, "fine_tune_warmup_epochs": 0}
    for name, least in counts.items():
        value = getattr(clf, name)
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < least:
            raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")
    for name, zero_ok in (("learning_rate", False), ("fine_tune_learning_rate", False), ("min_learning_rate", True)):
        value = getattr(clf, name)
        if not _is_number(value) or not np.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
            raise ValueError(f"{name} must be a {'non-negative' if zero_ok else 'positive'} number, got {value!r}")
    if not _is_number(clf.validation_fraction) or not 0 <= clf.validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {clf.validation_fraction!r}")
    if not _is_number(clf.dropout) or not 0 <= clf.dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {clf.dropout!r}")
    if clf.unknown_below is not None and (not _is_number(clf.unknown_below) or not 0 <= clf.unknown_below <= 1):
        raise ValueError(f"unknown_below must be a probability in [0, 1] or None, got {clf.unknown_below!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def sample_weights(y: np.ndarray, n_classes: int, class_weight: str | None) -> np.ndarray:
    """Per-sample weights: ones, or scikit-learn's ``"balanced"`` inverse class frequency."""
    if class_weight == "balanced":
        return compute_class_weight("balanced", classes=np.arange(n_classes), y=y)[y].astype(np.float32)
    return np.ones(len(y), np.float32)


class FineClassifier(ProbabilityPredictor, ClassifierMixin, BaseEstimator):
    """Transfer-learned image classifier for crops (``fit`` returns ``self``; learned state ends in ``_``).

    Args:
        backbone: preset name (``"densenet121"``, ``"mobilenet_v2"``, ``"mobilenet_v2_hub"``,
            ``"mobilenet_v2_torchvision"``, ``"efficientnet_lite1"``, ``"efficientnet_lite2"``), a
            `classify.Backbone`, or a `keras.Model` mapping ``(H, W, 3)`` float ``[0, 255]`` images to pooled
            features. Only read: fine-tuning trains a copy, `sklearn.base.clone` shares a Backbone (a bare
            keras.Model is deep-copied by clone, as any parameter).
        input_size: square input side in pixels for a preset backbone (``None``: the preset's training size,
            ``train_input_size``: 448 for the offline default ``mobilenet_v2_torchvision``, else its ImageNet size).
            Larger inputs keep the fine detail of small crops at about ``(input_size / 224) ** 2`` times the compute
            in training and labeling (BENCHMARKS.md, "Backbones").
        epochs: head-stage epochs (upper bound; early stopping may end sooner).
        batch_size: batch size for training and inference.
        learning_rate: Adam learning rate for the head (0.001; the seed's 0.005 overshoots on hard data, see
            BENCHMARKS.md).
        dense_units: the head's hidden width: ``Dense(dense_units, relu) -> Dropout(dropout) -> Dense(n, softmax)``
            (``dense_units=0``: no hidden layer, a linear head).
        dropout: the head's dropout rate.
        augmentation: albumentations pipeline as a preset name (`classify.augment.PRESETS`: ``"default"`` changes
            the colour of half the views and lowers the resolution of half; ``"colour"`` for classes whose colour is
            a cue), dict, JSON path or Compose; ``None`` for none.
        augment_views: augmented views cached per training image for the head stage (0: clean images only).
        class_weight: ``None`` or ``"balanced"`` (inverse class frequency, as scikit-learn).
        validation_fraction: held out of ``fit``'s data (grouped by ``groups``) when no ``validation_data`` is given;
            0 trains on everything without checkpointing.
        patience: early-stopping patience in epochs (0: never stop early).
        reduce_lr_patience: ReduceLROnPlateau on ``val_loss``: its patience in epochs.
        reduce_lr_factor: ReduceLROnPlateau's factor.
        min_learning_rate: ReduceLROnPlateau's lowest learning rate.
        fine_tune_blocks: after the head stage, unfreeze the backbone's top blocks (see
            `classify.backbones.backbone_blocks`; 0: skip; ``"auto"``: the preset's ``fine_tune_blocks`` (8 for the
            offline default), else `AUTO_FINE_TUNE_BLOCKS`, where the backbone can be fine-tuned, else 0). The
            defaults (peak rate 3e-4, 15 epochs, Dense(512) + Dropout 0.3, and for the offline backbone 448 px and
            8 blocks) are the recipe measured best on the hard benchmark (BENCHMARKS.md).
        fine_tune_epochs: the fine-tuning stage's epochs.
        fine_tune_learning_rate: the fine-tuning stage's peak learning rate (see
            `classify.trainer.fine_tune_schedule`).
        fine_tune_warmup_epochs: epochs of linear learning-rate warm-up before the cosine decay.
        unknown_below: `predict` answers ``unknown_label`` when the top probability is below this (``None``: never).
        unknown_label: the answer for ambiguous inputs.
        open_set_score: the score the model carries for "is this a class I know" (`classify.openset.GRAPH_SCORES`).
        open_set_keep: the share of known validation images whose score the open-set threshold keeps (``None``, or
            no validation data: no threshold). `predict` answers ``unknown_label`` below the threshold, or below
            ``unknown_below``: either rule makes an image unknown.
        cache_dir: folder for cached backbone features (reused across runs on the same files); ``None``: memory only.
        seed: makes training repeatable (the split, initial weights, dropout, shuffles and augmentation); ``None``
            draws a fresh seed from the operating system. Global random state is never used.
        show_progress: tqdm bars for feature extraction and epochs.

    After ``fit``, ``temperature_`` is the fitted softmax temperature (1.0 without validation data),
    ``calibration_`` its validation report (`classify.calibration.calibration_report`), ``open_set_threshold_`` the
    threshold of the open-set score (``None``: none), ``train_features_`` the training images' features behind the
    class means; ``linear_probe_`` is the baseline fitted on the same training images' frozen features (see
    `classify.probe`), ``linear_probe_val_predictions_`` its labels for the validation images (``None`` without
    validation), and `predict_linear_probe` applies it to new images.
    """

    def __init__(self, backbone: Any = "densenet121", *, input_size: int | None = None, epochs: int = 100,
                 batch_size: int = 32,
                 learning_rate: float = 0.001, dense_units: int = 512, dropout: float = 0.3,
                 augmentation: AugmentationSpec = "default", augment_views: int = 4, class_weight: str | None = None,
                 validation_fraction: float = 0.2, patience: int = 20, reduce_lr_patience: int = 4,
                 reduce_lr_factor: float = 0.3, min_learning_rate: float = 1e-6, fine_tune_blocks: int | str = "auto",
                 fine_tune_epochs: int = 15, fine_tune_learning_rate: float = 3e-4,
                 fine_tune_warmup_epochs: int = 1, unknown_below: float | None = None,
                 unknown_label: str = "unknown", open_set_score: str = DEFAULT_SCORE,
                 open_set_keep: float | None = 0.95, cache_dir: str | Path | None = None, seed: int | None = None,
                 show_progress: bool = False) -> None:
        self.backbone = backbone
        self.input_size = input_size
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
        self.fine_tune_warmup_epochs = fine_tune_warmup_epochs
        self.unknown_below = unknown_below
        self.unknown_label = unknown_label
        self.open_set_score = open_set_score
        self.open_set_keep = open_set_keep
        self.cache_dir = cache_dir
        self.seed = seed
        self.show_progress = show_progress

    def fit(self, X: Images, y: Sequence[Any], *, groups: Sequence[Any] | None = None,
            validation_data: tuple[Images, Sequence[Any]] | None = None) -> FineClassifier:
        """Train on images ``X`` (paths or RGB arrays of any size) with labels ``y``.

        Args:
            groups: group ids (e.g. source photo) kept on one side of the internal validation split.
            validation_data: ``(X_val, y_val)``; otherwise ``validation_fraction`` of ``X`` is held out.
        """
        check_params(self)
        items = iter_items(X)
        if len(items) != len(y):
            raise ValueError(f"X has {len(items)} images but y has {len(y)} labels")
        classes, y_int = encode_labels(y)
        if len(classes) < 2:
            raise ValueError(f"need at least 2 classes, got {classes.tolist()}")
        if self.unknown_label in classes:
            raise ValueError(f"a class is named {self.unknown_label!r}, the answer for objects of no known class; "
                             "rename its folder (or, in Python, pass another unknown_label=)")
        seed = self.seed if self.seed is not None else int(np.random.default_rng().integers(2**31 - 1))
        train, val = _fit_split(items, y_int, classes, groups, validation_data, self.validation_fraction, seed)
        train.weights = sample_weights(train.y, len(classes), self.class_weight)
        size = self.input_size if self.input_size is not None else training_input_size(self.backbone)
        backbone = resolve_backbone(self.backbone, size)
        fine_tune_blocks = resolve_fine_tune_blocks(self.fine_tune_blocks, backbone)
        input_size_of(backbone)  # a fixed input size is required
        augmentation = augmentation_to_dict(self.augmentation)
        fields = set(TrainSettings.__dataclass_fields__) - {"seed", "augmentation", "fine_tune_blocks"}
        settings = TrainSettings(seed=seed, augmentation=augmentation, fine_tune_blocks=fine_tune_blocks,
                                 **{k: v for k, v in self.get_params().items() if k in fields})
        result = train_task(backbone.model, classes.tolist(), train, val, settings, unknown_below=self.unknown_below,
                            unknown_label=self.unknown_label, open_set_score=self.open_set_score)
        self.classes_, self.model_, self.augmentation_ = classes, result.model, augmentation
        self.input_size_ = result.model.input_size
        self.history_, self.timings_ = result.history, result.timings
        self.best_epoch_, self.fine_tune_best_epoch_ = result.best_epoch, result.fine_tune_best_epoch
        self.model_.metadata = metadata(self, backbone_name(backbone))
        attach_linear_probe(self, backbone.model, classes[train.y], result)
        self._calibrate(result, train, val)
        return self

    def _calibrate(self, result: Any, train: Split, val: Split) -> None:
        """Temperature, class means and open-set threshold (`classify.openset.fit_output_layers`; seconds)."""
        t0 = time.perf_counter()
        train_f, val_f = result.train_features, result.val_features
        if "fine_tune_s" in result.timings:  # fine-tuned: the model's own backbone features
            train_f = self.logits_and_features(train.items)[1]
            val_f = self.logits_and_features(val.items)[1] if len(val.y) else None
        fit = fit_output_layers(self.model_, train_f, train.y, val_f, val.y, self.open_set_keep)
        self.temperature_, self.open_set_threshold_, self.calibration_ = fit.temperature, fit.threshold, fit.report
        self.train_features_ = train_f
        self.timings_["calibration_s"] = time.perf_counter() - t0

    def score(self, X: Images, y: Sequence[Any], sample_weight: Sequence[float] | None = None) -> float:
        """Accuracy of `predict` against ``y``, compared as label names (``classes_`` are strings: labels given as
        integers are named by their text)."""
        from sklearn.metrics import accuracy_score

        return float(accuracy_score([str(v) for v in y], list(self.predict(X)), sample_weight=sample_weight))

    def logits_and_features(self, X: Images) -> tuple[np.ndarray, np.ndarray]:
        """The head's logits ``(N, n_classes)`` (before the temperature) and the model's backbone features
        ``(N, D)`` for images ``X`` (features cached in ``cache_dir``)."""
        check_is_fitted(self, "model_")
        items = iter_items(X)
        feats = extract_features(self.model_.backbone, items, self.input_size_, batch_size=self.batch_size,
                                 cache_dir=self.cache_dir, show_progress=self.show_progress, desc="features")
        return predict_batches(self.model_.head, feats, 256), feats

    def predict_linear_probe(self, X: Images) -> np.ndarray:
        """Labels the linear probe (logistic regression on the frozen backbone's features, fitted with the model on
        the same training images) gives ``X``: the baseline to beat. Only after `fit` (the probe is not saved)."""
        check_is_fitted(self, "linear_probe_")
        items = iter_items(X)
        if not items:
            return np.zeros(0, dtype=object)
        feats = extract_features(self.frozen_backbone_, items, self.input_size_, batch_size=self.batch_size,
                                 cache_dir=self.cache_dir, show_progress=self.show_progress, desc="probe features")
        return self.linear_probe_.predict(feats)

    @property
    def prediction_batch_size(self) -> int:
        return int(self.batch_size)

    def _check_ready(self) -> None:
        check_is_fitted(self, "model_")

    def predict_batch(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return predict_outputs(self.model_.serving_model(), images)

    def save(self, path: str | Path) -> Path:
        """Write the model as one self-describing ``.keras`` file (atomically; class names, unknown rule and
        configuration inside) and its augmentation as ``<stem>.augmentation.json`` beside it. ``path``: a ``.keras``
        file or a folder (``folder/model.keras``)."""
        check_is_fitted(self, "model_")
        return save_classifier(self, path)

    @classmethod
    def load(cls, path: str | Path) -> FineClassifier:
        """Load a model written by `save` (a ``.keras`` file or the folder holding ``model.keras``)."""
        path = Path(path)
        return from_task(cls, read_task(path / MODEL_FILE if path.is_dir() else path))

    @property
    def augmentation_pipeline_(self) -> Any:
        """The fitted augmentation as an albumentations pipeline (``None`` if none)."""
        return build_augmentation(self.augmentation_)


def _fit_split(items: list, y_int: np.ndarray, classes: np.ndarray, groups: Sequence[Any] | None,
               validation_data: tuple[Images, Sequence[Any]] | None, validation_fraction: float | None,
               seed: int) -> tuple[Split, Split]:
    """Training and validation items: ``validation_data`` when given, else a grouped split of the training items."""
    if validation_data is not None:
        val_labels = [str(v) for v in validation_data[1]]
        unknown = sorted(set(val_labels) - set(classes.tolist()))
        if unknown:
            raise ValueError(f"validation labels {unknown} are not in the training labels")
        return Split(items, y_int), Split(iter_items(validation_data[0]), np.searchsorted(classes, val_labels))
    if validation_fraction and validation_fraction > 0:
        tr, va = grouped_split(y_int, groups, val_fraction=validation_fraction, seed=seed,
                               class_names=classes.tolist())
        return Split([items[i] for i in tr], y_int[tr]), Split([items[i] for i in va], y_int[va])
    return Split(items, y_int), Split([], np.zeros(0, np.int64))
