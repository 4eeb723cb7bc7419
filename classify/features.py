"""Frozen-backbone features, computed once per image and once per cached augmented view.

While the backbone is frozen its output for a given input never changes, so training the head for many epochs only
needs those outputs. `extract_views` runs the backbone on the clean images (view 0) and on ``views`` augmented copies
(views 1..V), optionally caching the result on disk, keyed by the backbone weights, files, augmentation and seed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from classify.augment import AugmentationSpec, augmentation_to_dict, seeded
from classify.batches import ImageItem, iter_items, load_batch
from detectcrop.io import atomic_write_bytes

logger = logging.getLogger(__name__)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


_PREDICT_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _predict_fn(model: keras.Model) -> Callable[[np.ndarray], Any]:
    """``model(x, training=False)`` traced once for any batch size (``predict_on_batch`` retraces for each new size,
    and labeling sends batches of every size)."""
    fn = _PREDICT_FNS.get(model)
    if fn is None:
        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
        ref = weakref.ref(model)  # the cache must not keep the model alive
        fn = tf.function(lambda x: ref()(x, training=False), input_signature=[spec])
        _PREDICT_FNS[model] = fn
    return fn


def predict_batches(model: keras.Model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """``model`` on a batch (images or features, any dtype), ``batch_size`` at a time, as float32."""
    fn = _predict_fn(model)
    outs = [np.asarray(fn(np.asarray(images[s], np.float32)), dtype=np.float32)
            for s in _chunks(len(images), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, *model.output_shape[1:]), np.float32)


def predict_outputs(model: keras.Model, images: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, ...]:
    """A model with several outputs on a batch, ``batch_size`` at a time: one float32 array per output."""
    fn = _predict_fn(model)
    chunks = [[np.asarray(o, dtype=np.float32) for o in fn(np.asarray(images[s], np.float32))]
              for s in _chunks(len(images), batch_size)]
    if not chunks:
        return tuple(np.zeros((0, *shape[1:]), np.float32) for shape in model.output_shape)
    return tuple(np.concatenate(parts) for parts in zip(*chunks, strict=True))


def weights_fingerprint(model: keras.Model) -> str:
    """sha256 over a model's weights (identifies a backbone in cache keys)."""
    digest = hashlib.sha256()
    for w in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(w)).tobytes())
    return digest.hexdigest()


def _cache_key(model: keras.Model, items: Sequence[ImageItem], info: dict[str, Any]) -> str | None:
    files = []
    for item in items:
        if not isinstance(item, str | Path):
            return None  # arrays are not cached on disk
        stat = Path(item).stat()
        files.append((str(Path(item).resolve()), stat.st_size, stat.st_mtime_ns))
    body = json.dumps({"weights": weights_fingerprint(model), "files": files, **info}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:32]


def extract_views(
    model: keras.Model,
    items: Sequence[ImageItem] | np.ndarray,
    input_size: tuple[int, int],
    *,
    views: int = 0,
    augmentation: AugmentationSpec = None,
    seed: int | None = None,
    batch_size: int = 32,
    chunk_size: int = 256,
    cache_dir: str | Path | None = None,
    show_progress: bool = False,
    desc: str = "features",
) -> np.ndarray:
    """Backbone features of the clean images and of ``views`` augmented copies: ``(1 + views, N, D)`` float32.

    Each image is read and resized once; the augmented views are drawn from a pipeline seeded with ``seed`` (same
    seed, same views). With ``cache_dir`` and path inputs, the result is stored as ``.npy`` and reused next time.
    """
    items = iter_items(items)
    transform = seeded(augmentation, seed) if views > 0 else None
    if views > 0 and transform is None:
        raise ValueError("augmented views need an augmentation")
    key = None
    if cache_dir is not None:
        info = {"size": list(input_size), "views": views, "seed": seed, "aug": augmentation_to_dict(augmentation)}
        key = _cache_key(model, items, info if views else {"size": list(input_size)})
    cache_file = Path(cache_dir) / f"features-{key}.npy" if key else None
    dim = int(model.output_shape[-1])
    if cache_file is not None and cache_file.is_file():
        try:
            feats = np.load(cache_file, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:  # torn or damaged (the cache is written without fsync)
            feats = None
            logger.warning("cannot read the cached features %s (%s); computing them again", cache_file, exc)
        if feats is not None and feats.shape == (1 + views, len(items), dim):
            logger.info("%s: %d images x %d views from cache %s", desc, len(items), 1 + views, cache_file)
            return feats
        if feats is not None:
            logger.warning("the cached features %s have shape %s, not %s; computing them again", cache_file,
                           feats.shape, (1 + views, len(items), dim))
    feats = np.empty((1 + views, len(items), dim), dtype=np.float32)
    total = len(items) * (1 + views)
    with tqdm(total=total, desc=desc, unit="img", disable=not show_progress) as bar:
        for s in _chunks(len(items), chunk_size):
            clean = load_batch(items[s], input_size)
            feats[0, s] = predict_batches(model, clean, batch_size)
            bar.update(len(clean))
            for v in range(1, views + 1):
                augmented = np.stack([transform(image=img)["image"] for img in clean])
                feats[v, s] = predict_batches(model, augmented, batch_size)
                bar.update(len(clean))
    if cache_file is not None:
        buf = io.BytesIO()
        np.save(buf, feats)
        atomic_write_bytes(cache_file, buf.getvalue(), fsync=False)
        logger.info("cached %s features in %s", desc, cache_file)
    return feats


def extract_features(
    model: keras.Model,
    items: Sequence[ImageItem] | np.ndarray,
    input_size: tuple[int, int],
    *,
    batch_size: int = 32,
    cache_dir: str | Path | None = None,
    show_progress: bool = False,
    desc: str = "features",
) -> np.ndarray:
    """Backbone features of the clean images: ``(N, D)`` float32."""
    return extract_views(
        model,
        items,
        input_size,
        batch_size=batch_size,
        cache_dir=cache_dir,
        show_progress=show_progress,
        desc=desc,
    )[0]
