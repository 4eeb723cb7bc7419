"""The folder job both folder commands run (`detectcrop.dataset.build_crops`, `pipelines.labeling.label_folder`).

A job owns one output folder for one run. `FolderJob.open` checks the input and the output before any model loads
(neither inside the other; the output created if its parent exists, and writable) and holds the folder's lock
(`detectcrop.io.locks.OutputLock`) until the block ends. `FolderJob.start` lists every input entry once
(`detectcrop.io.inputs.scan_inputs`); with ``resume`` it compares the settings and the models' fingerprints the
earlier run recorded, checks that the inputs it finished are unchanged (`detectcrop.io.stamps`), and only then lets
the command drop what a kill left half written (its `Ledger`), so a refused resume changes nothing. `FolderJob.map`
runs the command's work on the engine chosen, this process or a Ray Data actor pool (`detectcrop.ray_engine`), one
result per entry in input order; `FolderJob.drain` writes them with a progress bar::

    with FolderJob.open("label", photos, out, "label_config.json", engine="ray") as job:
        todo = job.start(config, ledger, resume=True)
        seconds = job.drain(job.map(todo, local=..., worker=..., item=...), write, len(todo))
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tqdm.auto import tqdm

from detectcrop.io import OutputLocationError, atomic_write_text, prepare_output_dir, remove_stale_temporaries
from detectcrop.io import stamps as input_stamps
from detectcrop.io.inputs import InputEntry, scan_inputs
from detectcrop.io.locks import OutputLock
from detectcrop.ray_engine import RayOptions, ray_map

logger = logging.getLogger(__name__)

T = TypeVar("T")
ENGINES = ("local", "ray")


class ResumeRefusedError(OutputLocationError, ValueError):
    """A resumed run would mix with what the earlier one wrote: its settings or models differ."""


class Ledger(Protocol):
    """What a folder command has written into its output folder, as `FolderJob.start` needs it for resume."""

    #: what the folder holds once written, for messages ("a crop dataset", "predictions").
    holds: str

    def has_results(self) -> bool:
        """Whether an earlier run wrote results (then only ``resume`` may continue it)."""

    def finished(self) -> set[str]:
        """The entries (relative paths) whose results are complete (reading may cut a torn last line, as any run
        does; nothing else is written)."""

    def settle(self, done: set[str]) -> None:
        """Drop what was written for entries outside ``done`` (a kill's half-written results)."""


@dataclass(frozen=True)
class SettingsRules:
    """How a resumed run's settings compare with those the earlier run recorded.

    Args:
        renamed: settings and fingerprints recorded under another name by earlier versions (old name -> name now).
        not_recorded_before: settings and fingerprints earlier versions did not record: taken as unchanged then.
        compare_as: ``(config, key) -> value`` compared for a setting (default: the recorded value itself).
    """

    renamed: Mapping[str, str] = field(default_factory=dict)
    not_recorded_before: tuple[str, ...] = ()
    compare_as: Callable[[Mapping[str, Any], str], Any] | None = None

    def as_now(self, previous: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
        """The recorded settings under today's names, what earlier versions did not record taken from ``config``."""
        previous = {self.renamed.get(k, k): v for k, v in previous.items()}
        recorded = {self.renamed.get(k, k): v for k, v in previous.get("fingerprints", {}).items()}
        if "fingerprints" in previous:
            previous["fingerprints"] = recorded
        for key in self.not_recorded_before:
            if key not in previous and key in config:
                logger.warning("the earlier run did not record %s (an earlier version wrote it): not compared", key)
                previous[key] = config[key]
            now = config.get("fingerprints", {})
            if recorded and key not in recorded and key in now:  # a fingerprint an earlier version did not take
                recorded[key] = now[key]
        return previous

    def changed(self, previous: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
        """The settings that differ (``"fingerprints"`` among them when a model's does); ``previous`` as recorded."""
        return self.differ(self.as_now(previous, config), config)

    def differ(self, previous: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
        """The settings that differ between ``previous`` (made by `as_now`) and ``config``."""
        value = self.compare_as or (lambda c, k: c.get(k))
        return sorted(k for k in set(previous) | set(config) if value(previous, k) != value(config, k))


def check_not_nested(src: Path, dst: Path) -> None:
    """Refuse an output folder inside the input (or equal to it), and an input inside the output."""
    src, dst = src.resolve(), dst.resolve()
    if dst == src or src in dst.parents:
        raise OutputLocationError(f"the output folder {dst} must not be inside the input {src}")
    if dst in src.parents:
        raise OutputLocationError(f"the input {src} must not be inside the output folder {dst}")


def check_locations(input_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Check the input folder and prepare the output folder before any work; clear errors otherwise.

    The two must not contain each other (outputs would be read as inputs, or inputs overwritten). The output folder is
    created if its parent exists, and must be writable (checked by writing a probe file).
    """
    src, dst = Path(input_dir).resolve(), Path(output_dir).resolve()
    if not src.is_dir():
        raise FileNotFoundError(f"input folder does not exist or is not a folder: {input_dir}")
    check_not_nested(src, dst)
    prepare_output_dir(dst)
    return src, dst


def decode_hint(previous: Mapping[str, Any]) -> str:
    """How to resume a run made with another ``--decode`` (runs that record none decoded in full)."""
    return f"; to continue it, pass --decode {previous.get('decode') or 'full'} (the decoding it used)"


@dataclass
class FolderJob:
    """One run of a folder command into a prepared, locked output folder (made by `FolderJob.open`).

    Attributes:
        command: the command's name (the lock's owner, the progress bar's title).
        input: the input: a folder (resolved), or one file where the command takes one (as given).
        out: the output folder (resolved).
        config_file: the file in ``out`` that records the run's settings, compared on resume.
        engine: ``"local"`` (this process) or ``"ray"`` (a Ray Data actor pool); both write the same files.
        ray: where and how the Ray engine runs.
        show_progress: progress bars.
    """

    command: str
    input: Path
    out: Path
    config_file: str
    engine: str = "local"
    ray: RayOptions = field(default_factory=RayOptions)
    show_progress: bool = False

    @classmethod
    @contextlib.contextmanager
    def open(cls, command: str, input_path: str | os.PathLike, output: str | os.PathLike, config_file: str, *,
             single_file: bool = False, check: Callable[[Path], None] | None = None, engine: str = "local",
             ray: RayOptions | None = None, show_progress: bool = False) -> Iterator[FolderJob]:
        """The job of ``command`` from ``input_path`` (a folder; or a file, with ``single_file``) into ``output``:
        both checked (and ``check(out)`` for the command's own rules), then the output's lock held for the block, so
        a second run into it fails at once. Temporary files a killed run left are removed once the lock is held."""
        if engine not in ENGINES:
            raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
        src = Path(input_path)
        if src.is_dir() or not single_file:
            src, out = check_locations(src, output)
        elif not src.is_file():
            raise FileNotFoundError(f"--input does not exist: {input_path}")
        else:
            if Path(output).resolve() in src.resolve().parents:
                check_not_nested(src, Path(output))
            out = prepare_output_dir(output)
        if check is not None:
            check(out)
        with OutputLock(out, command):
            n_tmp = remove_stale_temporaries(out)
            if n_tmp:
                logger.info("removed %d temporary files left by an interrupted run", n_tmp)
            yield cls(command, src, out, config_file, engine, ray or RayOptions(), show_progress)

    def entries(self) -> list[InputEntry]:
        """Every entry of the input, once, in a stable order (one entry for a file)."""
        if self.input.is_dir():
            return scan_inputs(self.input)
        if self.input.is_file():
            return [InputEntry(self.input.name, self.input)]
        raise FileNotFoundError(f"--input does not exist: {self.input}")

    def start(self, config: dict[str, Any], ledger: Ledger, *, resume: bool,
              rules: SettingsRules | None = None, entries: list[InputEntry] | None = None) -> list[InputEntry]:
        """Record ``config`` and the inputs' stamps and return the entries still to do (all of them, or with
        ``resume`` those the earlier run did not finish). Refuses (`ResumeRefusedError`,
        `detectcrop.io.stamps.InputsChangedError`) before anything is rewritten when the earlier run used other
        settings or models, or an input it finished changed since."""
        entries = self.entries() if entries is None else entries
        done: set[str] = set()
        if ledger.has_results():
            if not resume:
                raise OutputLocationError(f"{self.out} already holds {ledger.holds}; pass --resume (resume=True) to "
                                          "continue it, or use a new output folder")
            self._check_settings(config, rules or SettingsRules(), ledger.holds)
            done = ledger.finished()
            input_stamps.check_unchanged(self.out, entries, done)
            ledger.settle(done)
        input_stamps.record(self.out, entries, done)
        atomic_write_text(self.out / self.config_file, json.dumps(config, indent=2, sort_keys=True) + "\n")
        todo = [e for e in entries if e.rel not in done]
        logger.info("%d entries under %s, %d already done, %d to process", len(entries), self.input,
                    len(entries) - len(todo), len(todo))
        return todo

    def _check_settings(self, config: Mapping[str, Any], rules: SettingsRules, holds: str) -> None:
        path = self.out / self.config_file
        if not path.exists():  # written before any result: without it, what the results were made with is unknown
            raise ResumeRefusedError(f"cannot resume {self.out}: it holds {holds} but no "
                                     f"{self.config_file} to compare the settings with; use a new output folder")
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ResumeRefusedError(f"cannot resume {self.out}: {self.config_file} is not valid JSON ({exc}); "
                                     "use a new output folder") from exc
        if not isinstance(previous, dict):
            raise ResumeRefusedError(f"cannot resume {self.out}: {self.config_file} does not hold settings; use a "
                                     "new output folder")
        previous = rules.as_now(previous, config)
        changed = rules.differ(previous, config)
        if "fingerprints" in changed:
            before = previous.get("fingerprints", {})
            now = config.get("fingerprints", {})
            which = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            raise ResumeRefusedError(
                f"cannot resume {self.out}: the {' and '.join(which)} model changed since the run started (its files' "
                "sha256 differs); use a new output folder")
        if changed:
            hint = decode_hint(previous) if "decode" in changed else ""
            raise ResumeRefusedError(f"cannot resume {self.out}: settings differ from the previous run "
                                     f"({', '.join(changed)}); use a new output folder{hint}")

    def map(self, todo: list[InputEntry], *, local: Callable[[list[InputEntry]], Iterator[T]],
            worker: Callable[[], Any] | None, item: Callable[[InputEntry], dict[str, Any]] = lambda e: {},
            result: Callable[[dict[str, Any]], T] = lambda payload: payload) -> Iterator[T]:
        """The results of ``todo`` in order: ``local(todo)`` in this process, or on the Ray engine ``result(payload)``
        of the payloads of actors made by ``worker`` (`detectcrop.ray_engine.ray_map`) for items ``{"key", "path",
        "problem"}`` plus ``item(entry)``; both engines give the writer results of one shape."""
        if self.engine != "ray":
            return local(todo)
        items = [{"key": e.rel, "path": os.fspath(e.path), "problem": e.problem, **item(e)} for e in todo]
        return map(result, ray_map(items, worker, self.ray, show_progress=self.show_progress))

    def drain(self, results: Iterable[T], write: Callable[[T], None], total: int) -> float:
        """``write`` each result in order, with a progress bar; the seconds the loop took."""
        start = time.perf_counter()
        with tqdm(total=total, unit="img", desc=self.command, disable=not self.show_progress) as bar:
            for result in results:
                write(result)
                bar.update(1)
        return time.perf_counter() - start
