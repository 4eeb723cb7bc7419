"""The model cache: one directory (``$DETECTCROP_HOME``, default ``~/.cache/detectcrop``), checksums, atomic writes.

Every cached artifact is a directory published by a single ``os.replace`` from a temporary sibling, with a
``MANIFEST.json`` (sha256 of every file) written inside before publication. A directory without a manifest, or whose
files no longer match it, is never used. Concurrent fetches of one artifact are serialised by a file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"


class ChecksumError(RuntimeError):
    """A file's sha256 differs from the expected value."""


def home_dir() -> Path:
    """The cache root: ``$DETECTCROP_HOME`` or ``~/.cache/detectcrop``; `NotADirectoryError` if it is a file."""
    path = Path(os.environ.get("DETECTCROP_HOME") or Path.home() / ".cache" / "detectcrop").expanduser()
    if path.exists() and not path.is_dir():
        where = "DETECTCROP_HOME" if os.environ.get("DETECTCROP_HOME") else "the default model cache"
        raise NotADirectoryError(f"{where} {path} is a file, not a folder: point DETECTCROP_HOME at a folder for "
                                 "the model cache (it is created if missing)")
    return path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def tree_digest(path: str | Path) -> str:
    """A sha256 fingerprint of a file, or of every file under a folder (names and contents, sorted)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for p in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{p.relative_to(path).as_posix()}\0{sha256_file(p)}\n".encode())
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str) -> None:
    """Raise `ChecksumError` unless ``path`` hashes to ``expected``."""
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(f"{path}: sha256 {actual} does not match the expected {expected}")


def _tree_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(root: Path, info: dict | None = None) -> None:
    """Record the sha256 of every file under ``root`` (the last step before publication)."""
    files = {p.relative_to(root).as_posix(): sha256_file(p) for p in _tree_files(root)}
    body = {"files": files, **(info or {})}
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True))
    os.replace(tmp, root / MANIFEST)


def verify_tree(root: Path) -> None:
    """Raise `ChecksumError` unless ``root`` holds exactly the files of its manifest, unchanged."""
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise ChecksumError(f"{root} has no {MANIFEST}: incomplete or foreign directory")
    expected = json.loads(manifest.read_text())["files"]
    actual = {p.relative_to(root).as_posix() for p in _tree_files(root)}
    if actual != set(expected):
        raise ChecksumError(f"{root}: files differ from its manifest ({sorted(actual ^ set(expected))[:5]})")
    for rel, digest in expected.items():
        verify_sha256(root / rel, digest)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if missing), held for the ``with`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``final``; on success it is checksummed and moved into place.

    An exception (or a kill) leaves ``final`` untouched; the staging directory is removed or, after a kill, ignored
    (its name starts with a dot and it has no place in the cache layout).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield tmp
        write_manifest(tmp)
        old = None
        if final.exists():  # move the old tree aside in one rename, so `final` is never half-deleted
            old = final.with_name(f".{final.name}.{os.getpid()}.old.partial")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_partials(parent: Path) -> None:
    """Remove staging directories left behind by killed fetches."""
    for stale in parent.glob(".*.partial"):
        shutil.rmtree(stale, ignore_errors=True)
