"""Crash-safe file output: atomic whole-file writes and append-only CSV manifests with whole-row appends.

A reader never sees a half-written file: whole files go to a temporary sibling and are renamed into place with
``os.replace``; manifest rows are appended with one ``write`` + ``fsync`` per batch, and a torn final record left by
a crash is cut off by :func:`repair_csv` before appending again. Paths read back from a manifest are resolved with
:func:`inside` and refused unless they lie in the output folder. Text cells are written spreadsheet-safe
(:func:`csv_safe`) and read back as written (:func:`csv_unsafe`).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

TMP_SUFFIX = ".tmp"


class OutputLocationError(OSError):
    """The output folder cannot be used (missing parent, not a folder, read-only, inside the input...)."""


#: Errors of the output's file system rather than of one input (full disk, quota, read-only): they stop a run.
OUTPUT_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


class OutputUnwritableError(OSError):
    """The output folder's file system refuses writes; what was finished is in the manifests, --resume continues."""

    def __str__(self) -> str:
        return str(self.strerror)


def output_unwritable(out: str | os.PathLike[str], cause: OSError) -> OutputUnwritableError:
    """The `OutputUnwritableError` for ``cause`` (one of `OUTPUT_FULL_ERRNOS`) while writing into ``out``."""
    return OutputUnwritableError(cause.errno, f"cannot write into {out}: {cause.strerror}. What was finished is "
                                              "kept: free space (or make the folder writable), then run again with "
                                              "--resume")


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
    # A short temporary name, so a final name near the file system's limit still fits.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".w", suffix=TMP_SUFFIX)
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
        if p.is_file() and not p.is_symlink():
            p.unlink()
            n += 1
    return n


class UnsafePathError(OutputLocationError):
    """A path read back from a manifest points outside the output folder (an edited or corrupted manifest)."""


def inside(root: str | os.PathLike[str], rel: str) -> Path:
    """``root / rel`` resolved, refused with `UnsafePathError` unless it lies strictly inside ``root``.

    For paths that come back from a manifest (``crops.csv`` on resume): an absolute path, ``..`` or a symlink that
    leads out of the output folder is never written or deleted.
    """
    base = Path(root).resolve()
    if not rel or Path(rel).is_absolute():
        raise UnsafePathError(f"manifest path {rel!r} is empty or absolute; expected a path inside {base}")
    target = (base / rel).resolve()
    if target == base or base not in target.parents:
        raise UnsafePathError(f"manifest path {rel!r} leads outside the output folder {base}")
    return target


def printable(text: str | os.PathLike[str]) -> str:
    """A file name or path as valid UTF-8 text (for rows and log lines): undecodable bytes of a POSIX name, which
    Python holds as lone surrogates, become ``\\xNN``."""
    text = os.fspath(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")


def one_line(text: object, limit: int = 500) -> str:
    """``text`` on one line (whitespace collapsed), at most ``limit`` characters: for error columns of manifests."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


#: First characters that make a spreadsheet read a cell as a formula (OWASP CSV injection).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: object) -> object:
    """A text cell made safe for spreadsheets: text starting with ``= + - @``, tab or CR gets a leading ``'``.

    Text that already starts with ``'`` gets one more, so :func:`csv_unsafe` restores every value exactly.
    Non-text values (numbers) are returned unchanged.
    """
    if isinstance(value, str) and value.startswith((*FORMULA_TRIGGERS, "'")):
        return "'" + value
    return value


def csv_unsafe(text: str) -> str:
    """The original text of a cell written by :func:`csv_safe`."""
    return text[1:] if text.startswith("'") else text


def csv_text(rows: Iterable[Sequence[object]]) -> str:
    """Rows as CSV text (``\\n`` line ends, minimal quoting, text cells through :func:`csv_safe`)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    quote_all = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for row in rows:
        cells = [csv_safe(v) for v in row]
        # The writer quotes fields holding its line terminator, not a bare CR: such rows are quoted whole.
        (quote_all if any(isinstance(v, str) and "\r" in v for v in cells) else writer).writerow(cells)
    return buf.getvalue()


def complete_length(data: bytes) -> int:
    """The length of the longest prefix of CSV ``data`` that ends with a whole record.

    A record ends at a newline outside quotes; a newline inside a quoted field (a file name may hold one) does not
    end it. Inside quotes is an odd number of ``"`` before the position (escaped quotes come in pairs).
    """
    quotes = data.count(b'"')
    end = len(data)
    while True:
        pos = data.rfind(b"\n", 0, end)
        if pos < 0:
            return 0
        quotes -= data.count(b'"', pos, end)
        if quotes % 2 == 0:
            return pos + 1
        end = pos


def repair_csv(path: str | os.PathLike[str]) -> int:
    """Cut a torn last record left by a crash (quote-aware); returns the number of bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()
    cut = complete_length(data)
    if cut == len(data):
        return 0
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
        return [dict(zip(header, (csv_unsafe(v) for v in r), strict=False)) for r in rows]

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
