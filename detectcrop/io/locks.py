"""One run per output folder: an advisory lock that fails at once and names its holder.

It is an ``flock`` lock held by an open file descriptor: the kernel releases them when the process ends, however it
ends (``kill -9`` included), so a lock never outlives its holder and a resumed run starts at once. ``flock`` is
reliable on local file systems; on network file systems it depends on the server (NFSv4 and most cluster file systems
support it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
import sys
import threading
from pathlib import Path
from types import TracebackType

from detectcrop.io import OutputLocationError

#: The lock file of a run's output folder (hidden, so it is never taken for an input or an output).
RUN_LOCK = ".detectcrop.lock"


class OutputBusyError(OutputLocationError):
    """Another run holds the output folder."""


_HELD: dict[Path, str] = {}  # lock files this process holds -> the command holding each
_HELD_LOCK = threading.Lock()


class OutputLock:
    """One run per output folder: ``with OutputLock(out, "label"):`` fails at once if another run holds ``out``.

    The lock file records the holder (pid, host, command, start time) so the error can name it. A second run in the
    same process (another thread, or a call made while a `FolderJob` holds the folder) is refused the same way.
    """

    def __init__(self, folder: str | os.PathLike[str], command: str = "", lock_file: Path | None = None) -> None:
        self.folder = Path(folder)
        self.path = lock_file or self.folder / RUN_LOCK
        self.command = command or Path(sys.argv[0]).name
        self._fd: int | None = None

    @classmethod
    def beside(cls, folder: str | os.PathLike[str], command: str = "") -> OutputLock:
        """The lock of a folder that is replaced as a whole (a train_fine run): a hidden file next to it."""
        folder = Path(folder).resolve()
        return cls(folder, command, folder.parent / f".{folder.name}.lock")

    def acquire(self) -> OutputLock:
        key = self.path.resolve()
        with _HELD_LOCK:
            if key in _HELD:
                raise OutputBusyError(f"{self.folder} is in use by another run of this process ({_HELD[key]}); wait "
                                      "for it to finish or use another output folder")
            self._acquire()
            _HELD[key] = self.command
        return self

    def _acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe(os.pread(fd, 4096, 0))
                os.close(fd)
                raise OutputBusyError(
                    f"{self.folder} is in use by another run ({holder}); wait for it to finish or use another "
                    "output folder"
                ) from None
            except OSError:
                os.close(fd)
                raise
            try:  # the holder before us removes the file as it lets go: lock the file that is there now
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        with _HELD_LOCK:
            if self._fd is None:
                return
            _HELD.pop(self.path.resolve(), None)
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # still holding it: a newcomer locks a fresh file (see _acquire)
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _describe(raw: bytes) -> str:
    try:
        info = json.loads(raw.decode("utf-8"))
        return f"pid {info['pid']} on {info['host']}, {info['command']}, started {info['started']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"
