"""What each input looked like when a run listed it, so that ``--resume`` notices a photo replaced in between.

A run records ``size:mtime_ns`` of every entry it lists in ``OUT/.inputs.json`` before it processes any
(`record`); a resumed run first compares the entries the earlier runs finished with their recorded stamps and refuses
to continue when one changed (`check_unchanged`: its rows would describe the old file). Entries of outputs written
before stamps existed are not compared. A file replaced by one of the same size and modification time is not noticed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from detectcrop.io import atomic_write_text
from detectcrop.io.inputs import InputEntry

STAMPS_JSON = ".inputs.json"


class InputsChangedError(ValueError):
    """Inputs an earlier run finished have changed since; resuming would mix old rows with new files."""


def input_stamp(path: str | os.PathLike[str]) -> str | None:
    """``size:mtime_ns`` of the file ``path`` (following links), or ``None`` where it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


def _recorded(out: Path) -> dict[str, str | None]:
    try:
        recorded = json.loads((out / STAMPS_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def check_unchanged(out: Path, entries: Iterable[InputEntry], done: set[str]) -> None:
    """Refuse (`InputsChangedError`) if a ``done`` entry's file changed since the run that listed it; writes nothing."""
    recorded = _recorded(out)
    changed = sorted(e.rel for e in entries if e.rel in done and e.rel in recorded
                     and recorded[e.rel] != input_stamp(e.path))
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise InputsChangedError(
            f"cannot resume {out}: {len(changed)} input file(s) changed since they were processed ({shown}); "
            "restore them, or run again into a new output folder without --resume"
        )


def record(out: Path, entries: Iterable[InputEntry], done: set[str]) -> None:
    """Record the stamps: the recorded ones for the ``done`` entries, the current ones for the rest."""
    recorded = _recorded(out)
    stamps = {e.rel: recorded[e.rel] if e.rel in done and e.rel in recorded else input_stamp(e.path)
              for e in entries}
    atomic_write_text(out / STAMPS_JSON, json.dumps(stamps, indent=0, sort_keys=True) + "\n")
