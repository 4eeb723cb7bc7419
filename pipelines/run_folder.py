"""Run folders (train_fine, calibrate): where a run may be written, and writing it as a whole or not at all."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from detectcrop.io import OutputLocationError

logger = logging.getLogger(__name__)

#: A folder holding one of these is a run (and may be replaced as a whole with --overwrite).
RUN_MARKERS = ("model.keras", "config.json", "report.json")


def check_output(path: Path, overwrite: bool, inputs: Sequence[tuple[str, Path | None]] = ()) -> Path:
    """The resolved run folder, after checking that a run may be written there (``ValueError`` / `OSError` with
    what to do otherwise): ``inputs`` (``(flag, path)`` pairs; ``None`` paths skipped) must neither hold nor lie
    inside it, since a run folder is replaced as a whole. Nothing is created or removed here."""
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
    if dst.is_dir() and any(dst.iterdir()):
        if not any((dst / name).exists() for name in RUN_MARKERS):
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
    if leftovers:  # a run killed before its swap leaves its hidden folder behind
        logger.warning("%s holds unfinished runs of %s (safe to delete): %s", final.parent, final.name,
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
