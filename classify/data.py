"""Folder datasets (``ROOT/<class>/*.jpg``) and a stratified train/validation split grouped by source photo.

When ``ROOT/crops.csv`` (written by ``pipelines.cli.build_crops``) is present, every crop is tied to its source photo
and, where the manifest has one, its duplicate group: crops linked by either are kept on the same side of the split, so
no photo is seen in training and validation at once. Other manifests (``images.csv``) are ignored.
"""

from __future__ import annotations

import csv
import logging
import os
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from detectcrop.io import csv_unsafe, printable
from detectcrop.io.images import IMAGE_EXTENSIONS, ImageReadError, read_image

logger = logging.getLogger(__name__)

CROPS_MANIFEST = "crops.csv"

# Accepted column names in crops.csv, most specific first.
_CROP_COLUMNS = ("crop_path", "crop", "path", "file")
_SOURCE_COLUMNS = ("source_path", "source", "image_path", "image")
_DUPLICATE_COLUMNS = ("duplicate_group", "duplicate group", "dup_group", "duplicate")


@dataclass(frozen=True)
class ImageFolder:
    """Images and integer labels read from ``root/<class>/*``.

    Attributes:
        root: the folder that was read.
        paths: one path per image.
        labels: ``(N,)`` int64 indices into ``class_names``.
        class_names: the label names, sorted (the folder names).
        groups: ``(N,)`` group ids; images sharing a group must stay on one side of a split (the source photo and
            duplicate group from ``crops.csv``; the image's own path when there is no manifest).
        skipped: files in the class folders that were left out, ``{"path", "reason"}`` each (unreadable or corrupt
            images, files that are not images).
    """

    root: Path
    paths: list[Path]
    labels: np.ndarray
    class_names: list[str]
    groups: np.ndarray
    skipped: list[dict[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def class_counts(self) -> dict[str, int]:
        counts = Counter(self.labels.tolist())
        return {name: counts.get(i, 0) for i, name in enumerate(self.class_names)}

    def subset(self, index: Sequence[int] | np.ndarray) -> ImageFolder:
        """The images at ``index`` (same class names)."""
        index = np.asarray(index, dtype=np.int64)
        return ImageFolder(
            root=self.root,
            paths=[self.paths[i] for i in index],
            labels=self.labels[index],
            class_names=self.class_names,
            groups=self.groups[index],
            skipped=self.skipped,
        )

    @property
    def label_names(self) -> np.ndarray:
        """The label of every image as a string."""
        return np.asarray(self.class_names, dtype=object)[self.labels]


HIDDEN = "hidden (a name starting with '.'): not read"


def list_images(folder: Path, others: list[Path] | None = None,
                skipped: list[dict[str, str]] | None = None) -> list[Path]:
    """Image files anywhere under ``folder`` (build_crops mirrors deeper photo folders), sorted by relative path.
    Visible files without an image extension are appended to ``others``; hidden files and folders (not searched),
    links to folders (not followed), broken links, FIFOs and other non-regular entries to ``skipped``, once each,
    with the reason (``{"path", "reason"}``)."""
    found, left_out = [], []
    for dirpath, dirnames, filenames in os.walk(folder):
        keep = []
        for name in sorted(dirnames):
            path = Path(dirpath, name)
            if name.startswith("."):
                left_out.append((path, HIDDEN))
            elif path.is_symlink():
                left_out.append((path, "a symbolic link to a folder (not followed)"))
            else:
                keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            path = Path(dirpath, name)
            if name.startswith("."):
                left_out.append((path, HIDDEN))
            elif not path.is_file():
                left_out.append((path, "broken symbolic link" if path.is_symlink() and not path.exists()
                                 else "not a regular file"))
            elif path.suffix.lower() in IMAGE_EXTENSIONS:
                found.append((path.relative_to(folder).as_posix(), path))
            elif others is not None:
                others.append(path)
    if skipped is not None:
        skipped += [{"path": printable(p), "reason": reason} for p, reason in sorted(left_out)]
    return [p for _, p in sorted(found)]


def _readable(files: list[Path], skipped: list[dict[str, str]]) -> list[Path]:
    """The files that decode as images; the others are logged by name and recorded in ``skipped``."""
    good = []
    for path in files:
        try:
            read_image(path)
        except ImageReadError as exc:
            skipped.append({"path": str(path), "reason": str(exc)})
            logger.warning("skipping %s: %s", path, exc)
        else:
            good.append(path)
    return good


def load_image_folder(
    root: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    min_per_class: int = 1,
    check_images: bool = True,
) -> ImageFolder:
    """Read ``root/<class>/*`` (one sub-folder per class; files at the top level are ignored).

    Args:
        root: the dataset folder.
        class_names: the label set to map onto (e.g. a trained model's, for a test folder). A sub-folder outside it
            is an error; classes without a folder simply have no images. ``None``: the sorted sub-folder names.
        min_per_class: fewest images a class may have (a clear ``ValueError`` otherwise).
        check_images: decode every file once and skip (with a warning naming it) those that are not readable
            images; skipped files, and files without an image extension, are listed in ``skipped``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    folders, skipped = _class_folders(root)
    others: list[Path] = []
    per_class = {name: list_images(folder, others, skipped) for name, folder in folders.items()}
    skipped += [{"path": printable(p), "reason": "not an image file (extension)"} for p in others]
    for entry in skipped:  # hidden entries (.DS_Store, .git) are listed, not warned about
        (logger.debug if entry["reason"] == HIDDEN else logger.warning)("skipping %s: %s", entry["path"],
                                                                          entry["reason"])
    if check_images:
        per_class = {name: _readable(files, skipped) for name, files in per_class.items()}
    per_class = {name: files for name, files in per_class.items() if files or class_names is None}
    if class_names is None:
        class_names = sorted(per_class)
    else:
        class_names = list(class_names)
        spelled = nfc_spellings(class_names)
        per_class = {spelled.get(name, name): files for name, files in per_class.items()}
        unknown = sorted(set(per_class) - set(class_names))
        if unknown:
            raise ValueError(f"{root} has class folders the model does not know: {unknown}; known: {class_names}")
    if not class_names or not any(per_class.values()):
        raise ValueError(f"{root} has no images in class sub-folders (expected {root}/<class>/*.jpg)")
    too_few = {name: len(per_class.get(name, [])) for name in per_class if len(per_class[name]) < min_per_class}
    if too_few:
        listing = ", ".join(f"{name!r}: {n}" for name, n in sorted(too_few.items()))
        raise ValueError(
            f"too few images in {len(too_few)} class(es) of {root} ({listing}); each class needs at least "
            f"{min_per_class}. Add images, remove the folder, or lower the minimum (train_fine: --min-per-class)."
        )
    index = {name: i for i, name in enumerate(class_names)}
    paths = [p for name in class_names for p in per_class.get(name, [])]
    labels = np.asarray([index[name] for name in class_names for _ in per_class.get(name, [])], dtype=np.int64)
    groups = _manifest_groups(root, paths)
    dataset = ImageFolder(root=root, paths=paths, labels=labels, class_names=class_names, groups=groups,
                          skipped=skipped)
    logger.info("read %d images in %d classes from %s (%d files skipped)", len(dataset), len(class_names), root,
                len(skipped))
    return dataset


def nfc_spellings(class_names: Sequence[str]) -> dict[str, str]:
    """``{NFC form: name}`` of a model's class names: class folders are read in NFC, and a model trained on another
    Unicode spelling of a folder name (macOS' NFD) knows the class as it saw it."""
    return {unicodedata.normalize("NFC", c): c for c in class_names}


def _class_folders(root: Path) -> tuple[dict[str, Path], list[dict[str, str]]]:
    """``({class name: folder}, skipped)``: the visible sub-folders of ``root`` (a link to a folder here is a class
    folder), named in Unicode NFC (a name copied from macOS is often NFD: both spell one class), and the entries
    that are not class folders (image files at the top level, hidden folders, not searched; other top-level files,
    such as manifests, are not inputs)."""
    folders: dict[str, Path] = {}
    skipped: list[dict[str, str]] = []
    for p in sorted(root.iterdir()):
        if p.is_dir() and not p.name.startswith("."):
            try:
                p.name.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"the class folder {printable(p)} has a name that is not valid UTF-8 (its bytes "
                                 "are shown as \\xNN); rename it") from None
            name = unicodedata.normalize("NFC", p.name)
            if name in folders:
                raise ValueError(f"{root} has two class folders that spell {name!r} (one in another Unicode "
                                 "normalisation form); merge them")
            folders[name] = p
        elif p.is_dir():
            skipped.append({"path": printable(p), "reason": HIDDEN})
        elif p.suffix.lower() in IMAGE_EXTENSIONS:
            skipped.append({"path": printable(p), "reason": f"at the top level, outside a class folder (expected "
                                                            f"{printable(root)}/<class>/...)"})
    return folders, skipped


def _pick(columns: Sequence[str], candidates: Sequence[str]) -> str | None:
    lowered = {c.strip().lower(): c for c in columns}
    for name in candidates:
        if name in lowered:
            return lowered[name]
    return None


def _key(path: str | Path, root: Path) -> str:
    """A path normalised for matching manifest rows to files (relative paths are taken from ``root``)."""
    p = Path(path)
    if not p.is_absolute():
        p = root / p
    return str(p.resolve())


def _manifest_groups(root: Path, paths: Sequence[Path]) -> np.ndarray:
    """Group ids from ``root/crops.csv``: crops sharing a source photo or duplicate group are merged (union-find)."""
    own = np.asarray([f"file:{p.relative_to(root).as_posix()}" for p in paths], dtype=object)
    manifest = root / CROPS_MANIFEST
    if not manifest.is_file():
        return own
    try:
        with open(manifest, newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            rows = list(reader)
    except (csv.Error, UnicodeDecodeError, ValueError) as exc:  # e.g. NUL bytes, undecodable text
        raise ValueError(f"{manifest} cannot be read as a CSV manifest ({exc}); fix or remove it") from exc
    crop_col, source_col = _pick(columns, _CROP_COLUMNS), _pick(columns, _SOURCE_COLUMNS)
    dup_col = _pick(columns, _DUPLICATE_COLUMNS)
    if crop_col is None or (source_col is None and dup_col is None):
        logger.warning("%s lacks crop/source columns (has %s); splitting image by image", manifest, columns)
        return own
    links: dict[str, list[str]] = {}
    unusable = [row for row in rows if not row.get(crop_col) or "\x00" in row[crop_col]]
    if unusable:
        logger.warning("%s: %d rows without a usable %s value are ignored", manifest, len(unusable), crop_col)
    for row in rows:
        if not row.get(crop_col) or "\x00" in row[crop_col]:
            continue
        row = {k: csv_unsafe(v) if isinstance(v, str) else v for k, v in row.items()}  # spreadsheet-safe cells
        tags = []
        if source_col and row.get(source_col):
            tags.append(f"source:{row[source_col]}")
        if dup_col and str(row.get(dup_col, "")).strip() not in ("", "-1", "nan", "None"):
            tags.append(f"duplicate:{row[dup_col]}")
        # Crop paths may be written relative to the crops folder, its parent, or the working directory.
        for key in {_key(row[crop_col], root), str(Path(row[crop_col]).resolve())}:
            links[key] = tags
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    groups = own.copy()
    missing = 0
    for i, path in enumerate(paths):
        tags = links.get(str(path.resolve()))
        if tags is None:
            missing += 1
            continue
        find(own[i])
        for tag in tags:
            parent[find(tag)] = find(own[i])
    for i in range(len(paths)):
        if own[i] in parent:
            groups[i] = find(own[i])
    if missing:
        logger.warning("%d of %d images are not in %s; each is its own group", missing, len(paths), manifest)
    logger.info("%s: %d images in %d groups", manifest, len(paths), len(set(groups.tolist())))
    return groups


def grouped_split(
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    val_fraction: float = 0.2,
    seed: int | None = 0,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)`` of a stratified split that never puts one group on both sides.

    One fold of `sklearn.model_selection.StratifiedGroupKFold` with ``round(1 / val_fraction)`` folds. Every class
    needs at least two groups; a class that still lands on one side only raises ``ValueError`` (train) or is logged
    (validation). ``class_names[label]`` names a class in messages (default: the label itself).
    """

    def names(values: Sequence) -> str:
        return ", ".join(repr(str(class_names[v] if class_names is not None else v)) for v in values)

    labels = np.asarray(labels)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    group_codes = np.unique(groups.astype(str), return_inverse=True)[1]
    per_class_groups = {c: len(np.unique(group_codes[labels == c])) for c in np.unique(labels)}
    lonely = sorted(c for c, n in per_class_groups.items() if n < 2)
    if lonely:
        raise ValueError(
            f"class(es) {names(lonely)} have images from fewer than 2 source photos/groups, so a validation split "
            "cannot hold them out without leaking; add photos of them, remove their folders, or pass validation "
            "data explicitly"
        )
    n_splits = max(2, round(1.0 / val_fraction))
    n_splits = min(n_splits, len(np.unique(group_codes)))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    try:
        train_idx, val_idx = next(splitter.split(np.zeros(len(labels)), labels, group_codes))
    except ValueError as exc:
        raise ValueError(
            f"cannot make a {n_splits}-fold grouped split of {len(labels)} images ({exc}); add images or raise "
            "val_fraction (train_fine: --val-fraction) to use fewer folds"
        ) from exc
    missing_train = sorted(set(np.unique(labels).tolist()) - set(labels[train_idx].tolist()))
    if missing_train:
        raise ValueError(
            f"the grouped split left class(es) {names(missing_train)} without training images; add photos of them "
            "or lower val_fraction (train_fine: --val-fraction)"
        )
    missing_val = sorted(set(np.unique(labels).tolist()) - set(labels[val_idx].tolist()))
    if missing_val:
        logger.warning("class(es) %s have no validation images in this split", names(missing_val))
    return np.sort(train_idx), np.sort(val_idx)


def split_image_folder(
    dataset: ImageFolder, *, val_fraction: float = 0.2, seed: int | None = 0
) -> tuple[ImageFolder, ImageFolder]:
    """`grouped_split` applied to an `ImageFolder`: ``(train, val)``."""
    train_idx, val_idx = grouped_split(dataset.labels, dataset.groups, val_fraction=val_fraction, seed=seed,
                                       class_names=dataset.class_names)
    return dataset.subset(train_idx), dataset.subset(val_idx)
