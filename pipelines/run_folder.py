"""Run folders (train_fine, calibrate): where a run may be written, and writing it as a whole or not at all."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from detectcrop.io import OutputLocationError

logger = logging.getLogger(__name__)

#: A run folder holds ``model.keras`` and one of these, with these keys (train_fine's config, calibrate's report):
#: only such a folder may be replaced as a whole with --overwrite.
RUN_RECORDS = {"config.json": ("command", "classifier", "split"), "recalibration.json": ("model", "recalibrated")}


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` holds a train_fine or calibrate run (not merely a file of the same name as one of its)."""
    if not (path / "model.keras").is_file():
        return False
    for name, keys in RUN_RECORDS.items():
        try:
            record = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and all(k in record for k in keys):
            return True
    return False


def _restore_interrupted_swap(dst: Path) -> None:
    """A run killed between the two renames of `staged_run_folder` leaves no ``dst``, the previous run in a hidden
    ``.NAME.old-*/run`` and the new one in ``.NAME.new-*``: put the previous run back (the newest such, and only
    with a new one beside it: an ``.old-*`` alone is what a kill while removing a replaced run leaves, possibly
    half removed). Call it holding the run folder's lock."""
    if dst.exists() or dst.is_symlink() or not any(p.is_dir() for p in dst.parent.glob(f".{dst.name}.new-*")):
        return
    aside = [old for old in dst.parent.glob(f".{dst.name}.old-*") if (old / "run").is_dir()]
    if aside:
        old = max(aside, key=lambda p: p.stat().st_mtime)
        os.replace(old / "run", dst)
        shutil.rmtree(old, ignore_errors=True)
        logger.warning("restored the previous run %s from %s (a run was stopped while replacing it)", dst, old)


def check_output(path: Path, overwrite: bool, inputs: Sequence[tuple[str, Path | None]] = (),
                 locked: bool = False) -> Path:
    """The resolved run folder, after checking that a run may be written there (``ValueError`` / `OSError` with
    what to do otherwise): ``inputs`` (``(flag, path)`` pairs; ``None`` paths skipped) must neither hold nor lie
    inside it, since a run folder is replaced as a whole. Nothing is created or removed here, except that with
    ``locked`` (the caller holds the run folder's lock) a previous run left aside by a run stopped while replacing
    it is put back first."""
    dst = path.resolve()
    for flag, source in inputs:
        if source is None:
            continue
        src = Path(source).resolve()
        if src == dst or src in dst.parents or dst in src.parents:
            raise ValueError(f"--output {path} and {flag} {source} must not be or contain each other: the inputs "
                             "are never written")
    if dst.exists() and not dst.is_dir():
        raise OutputLocationError(f"the output location {path} exists and is not a folder")
    if not dst.parent.is_dir():
        raise OutputLocationError(f"cannot create {path}: its parent folder {dst.parent} does not exist")
    if not os.access(dst.parent, os.W_OK | os.X_OK):
        raise OutputLocationError(f"cannot write next to {path}: {dst.parent} is not writable")
    if locked and dst.parent.is_dir():
        _restore_interrupted_swap(dst)
    if dst.is_dir() and any(dst.iterdir()):
        if not is_run_folder(dst):
            raise ValueError(f"the output folder {path} is not empty and is not a run folder; choose another "
                             "--output (--overwrite only replaces run folders)")
        if not overwrite:
            raise ValueError(f"the output folder {path} already holds a run; pass --overwrite to replace it as a "
                             "whole, or choose another --output")
    return dst


@contextlib.contextmanager
def staged_run_folder(final: Path) -> Iterator[Path]:
    """Yield a new hidden sibling folder of ``final`` to write a run into; when the block succeeds, it replaces
    ``final`` as a whole (rename the old run aside, rename the new one in, remove the old); when it fails, it is
    removed and ``final`` is untouched."""
    leftovers = sorted(p.name for p in final.parent.glob(f".{final.name}.[no][el][wd]-*") if p.is_dir())
    if leftovers:  # a run killed before or during its swap leaves its hidden folder behind
        logger.warning("%s holds runs of %s that were stopped before they replaced it or were replaced (safe to "
                       "delete once %s is the run you want): %s", final.parent, final.name, final.name,
                       ", ".join(leftovers))
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.new-"))
    os.chmod(tmp, 0o755)  # mkdtemp's folder is private; a run folder is as readable as any other output
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-"))
        os.replace(final, old / "run")
    try:
        os.replace(tmp, final)
    except BaseException:
        if old is not None:
            os.replace(old / "run", final)
            shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_cache_dir(cache_dir: Path | None, output: Path, inputs: Sequence[tuple[str, Path | None]]) -> None:
    """A ``ValueError`` when ``cache_dir`` lies in an input folder (inputs are never written) or in the run folder
    (replaced as a whole, so the cache would be lost)."""
    if cache_dir is None:
        return
    cache = Path(cache_dir).resolve()
    for flag, place in [*inputs, ("--output", output)]:
        if place is None:
            continue
        root = Path(place).resolve()
        if cache == root or root in cache.parents:
            raise ValueError(f"--cache-dir {cache_dir} must not be in {flag} {place}: "
                             + ("the inputs are never written" if flag != "--output" else "a run folder is "
                                "replaced as a whole") + "; choose a folder of its own")
