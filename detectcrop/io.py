"""Crash-safe file output: atomic whole-file writes and append-only CSV manifests with whole-row appends.

A reader never sees a half-written file: whole files go to a temporary sibling and are renamed into place with
``os.replace``; manifest rows are appended with one ``write`` + ``fsync`` per batch, and a torn final line left by
a crash is cut off by :func:`repair_csv` before appending again.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

TMP_SUFFIX = ".tmp"


class OutputLocationError(OSError):
    """The output folder cannot be used (missing parent, not a folder, read-only, inside the input...)."""


def prepare_output_dir(output_dir: str | os.PathLike[str]) -> Path:
    """Create ``output_dir`` if its parent exists and check that it is writable (by writing a probe file).

    Called before any work, so a bad location is a clear error and not a crash after an hour of detection.
    """
    dst = Path(output_dir).resolve()
    if dst.exists() and not dst.is_dir():
        raise OutputLocationError(f"the output location {output_dir} exists and is not a folder")
    if not dst.exists():
        if not dst.parent.is_dir():
            raise OutputLocationError(f"cannot create {output_dir}: its parent folder {dst.parent} does not exist")
        try:
            dst.mkdir()
        except OSError as exc:
            raise OutputLocationError(f"cannot create the output folder {output_dir}: {exc.strerror or exc}") from exc
    probe = dst / f".write-probe-{os.getpid()}.tmp"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputLocationError(f"the output folder {output_dir} is not writable: {exc.strerror or exc}") from exc
    return dst


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not supported on every platform / filesystem
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (temporary sibling + ``os.replace``); creates parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync:
        _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode(encoding))


def remove_stale_temporaries(root: str | os.PathLike[str]) -> int:
    """Delete temporary files left under ``root`` by an interrupted :func:`atomic_write_bytes`; returns the count."""
    n = 0
    for p in Path(root).rglob(f".*{TMP_SUFFIX}"):
        if p.is_file():
            p.unlink()
            n += 1
    return n


def one_line(text: object, limit: int = 500) -> str:
    """``text`` on one line (whitespace collapsed), at most ``limit`` characters: for error columns of manifests."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def csv_text(rows: Iterable[Sequence[object]]) -> str:
    """Rows as CSV text (``\\n`` line ends, minimal quoting)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerows(rows)
    return buf.getvalue()


def repair_csv(path: str | os.PathLike[str]) -> int:
    """Cut a torn last line (no trailing newline) left by a crash; returns the number of bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    cut = data.rfind(b"\n") + 1
    with open(path, "r+b") as f:
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())
    return len(data) - cut


def read_csv(path: str | os.PathLike[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a manifest (after cutting a torn last line)."""
    repair_csv(path)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return [], []
    return rows[0], rows[1:]


class CsvManifest:
    """An append-only CSV file: the header once, then batches of rows, each batch one write + flush + fsync.

    Args:
        path: the CSV file.
        header: column names; an existing file must have the same header.
    """

    def __init__(self, path: str | os.PathLike[str], header: Sequence[str]) -> None:
        self.path = Path(path)
        self.header = list(header)

    def open(self) -> CsvManifest:
        """Create the file with its header, or check an existing one (cutting a torn last line)."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            atomic_write_text(self.path, csv_text([self.header]))
            return self
        header, _ = read_csv(self.path)
        if header != self.header:
            raise ValueError(f"{self.path} has columns {header}, expected {self.header}")
        return self

    def rows(self) -> list[dict[str, str]]:
        """The rows written so far, as dicts keyed by column."""
        if not self.path.exists():
            return []
        header, rows = read_csv(self.path)
        return [dict(zip(header, r, strict=False)) for r in rows]

    def append(self, rows: Iterable[Sequence[object]]) -> None:
        """Append ``rows`` in a single write, flushed and fsynced before returning."""
        data = csv_text(rows).encode("utf-8")
        if not data:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def rewrite(self, rows: Iterable[Sequence[object]], header: Sequence[str] | None = None) -> None:
        """Replace the whole file atomically (header + ``rows``)."""
        if header is not None:
            self.header = list(header)
        atomic_write_text(self.path, csv_text([self.header, *rows]))
