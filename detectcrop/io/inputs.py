"""Listing an input folder so that every entry is accounted for.

`scan_inputs` returns one `InputEntry` per directory entry under the root, in a stable order (sorted by relative
POSIX path), including the ones that cannot be processed, each with the reason:

- regular files and symbolic links to files (followed, wherever they point) are inputs;
- FIFOs, sockets and devices are listed and reported by the reader ("not a regular file"), never opened;
- broken symbolic links are listed and reported ("cannot access the file");
- symbolic links to folders are listed, not followed (no loops, no escape from the tree): "symbolic link to a folder";
- hidden folders (``.name``) are listed, not searched: "hidden folder"; hidden files are inputs like any other;
- folders that cannot be listed are reported once: "cannot list the folder";
- names that are not valid UTF-8 (on POSIX) are reported: the manifests are UTF-8 text, so such a file is listed
  with its undecodable bytes shown as ``\\xNN`` and must be renamed to be processed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detectcrop.decoding import ReducedImage, Reduction, read_for_detection
from detectcrop.io import printable
from detectcrop.io.images import (
    DEFAULT_DECODE_BUDGET,
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageReadError,
    NotAnImageError,
    iter_images,
)


@dataclass(frozen=True)
class InputEntry:
    """One directory entry under an input root.

    Attributes:
        rel: the relative POSIX path as text (the key in every manifest).
        path: the entry on disk.
        problem: why the entry cannot be processed, when the listing alone tells (empty otherwise).
    """

    rel: str
    path: Path
    problem: str = ""


def scan_inputs(root: str | os.PathLike[str]) -> list[InputEntry]:
    """Every entry under ``root`` (recursively), sorted by relative path; see the module docstring for the rules."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    found: dict[str, InputEntry] = {}
    undecodable: list[tuple[str, Path, str]] = []

    def add(path: Path, problem: str = "") -> None:
        raw = path.relative_to(root).as_posix()
        rel = printable(raw)
        if rel != raw:
            undecodable.append((rel, path, problem or "the file name is not valid UTF-8; rename the file to process "
                                                      "it"))
        else:
            found.setdefault(rel, InputEntry(rel, path, problem))

    def unlistable(exc: OSError) -> None:
        if exc.filename is not None and Path(exc.filename) != root:
            add(Path(exc.filename), f"cannot list the folder ({exc.strerror or exc})")
        elif exc.filename is not None:
            raise exc

    for dirpath, dirnames, filenames in os.walk(root, onerror=unlistable):
        keep = []
        for name in dirnames:
            path = Path(dirpath, name)
            if path.is_symlink():
                add(path, "symbolic link to a folder: not followed")
            elif name.startswith("."):
                add(path, "hidden folder: not searched")
            else:
                keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            add(Path(dirpath, name))
    # an undecodable name shown as \xNN may read like a valid name holding a backslash: both get a row
    for rel, path, problem in sorted(undecodable, key=lambda u: os.fsencode(u[1])):
        key, n = rel, 1
        while key in found:
            n += 1
            key = f"{rel} (undecodable name {n})"
        found[key] = InputEntry(key, path, problem)
    return [found[k] for k in sorted(found)]


def discover_images(
    root: str | os.PathLike[str], extensions: Iterable[str] | None = IMAGE_EXTENSIONS, include_hidden: bool = False
) -> list[Path]:
    """Readable-looking files under ``root`` (recursively) with an image extension, sorted by relative POSIX path.

    For datasets and quick use; the folder tools use `scan_inputs`, which accounts for every entry. ``extensions=None``
    lists every file. Hidden files (``.name``) are skipped unless ``include_hidden``; hidden and symlinked folders are
    never searched.
    """
    exts = None if extensions is None else {e.lower() for e in extensions}
    out = []
    for entry in scan_inputs(root):
        if entry.problem or (not include_hidden and entry.path.name.startswith(".")):
            continue
        if exts is not None and entry.path.suffix.lower() not in exts:
            continue
        if entry.path.is_file():
            out.append(entry.path)
    return out


def read_entry(
    entry: InputEntry, *, image_types_only: bool = False, reduction: Reduction | None = None, **kwargs: Any
) -> np.ndarray | ReducedImage:
    """`read_image` for one entry (`read_for_detection` with a ``reduction``); its known problem, or (with
    ``image_types_only``) a file without an image extension, is an `ImageReadError` without the file being opened."""
    if entry.problem:
        raise ImageReadError(entry.path, entry.problem)
    if image_types_only and entry.path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise NotAnImageError(entry.path, f"not an image file type ({entry.path.suffix or 'no extension'})")
    return read_for_detection(entry.path, reduction, **kwargs)


def read_entries(
    entries: Sequence[InputEntry],
    *,
    image_types_only: bool = False,
    workers: int = 2,
    prefetch: int = 8,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    decode_budget: int | None = DEFAULT_DECODE_BUDGET,
    max_image_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES,
    reduction: Reduction | None = None,
) -> Iterator[tuple[InputEntry, np.ndarray | ReducedImage | ImageReadError]]:
    """Decode ``entries`` ahead on threads (`iter_images`), in order; an entry with a known problem, or (with
    ``image_types_only``) without an image file extension, comes back as an `ImageReadError` without being opened.
    With a ``reduction``, large JPEGs come back as `ReducedImage` for whole-image detection (`detectcrop.decoding`)."""
    by_path = {entry.path: entry for entry in entries}

    def reader(path: Path, **kwargs: Any) -> np.ndarray | ReducedImage:
        return read_entry(by_path[path], image_types_only=image_types_only, reduction=reduction, **kwargs)

    stream = iter_images([e.path for e in entries], workers=workers, prefetch=prefetch, max_pixels=max_pixels,
                         reader=reader, decode_budget=decode_budget, max_image_bytes=max_image_bytes)
    for path, result in stream:
        yield by_path[path], result
        del result  # not held while the next image decodes
