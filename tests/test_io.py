"""Crash-safe output: quote-aware manifest repair, spreadsheet-safe cells, paths kept in the output, the run lock."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from detectcrop.locks import OutputBusyError, OutputLock

from detectcrop import io as dio

HOSTILE_CELLS = ["plain", "=1+2", "+cmd", "-3", "@SUM(A1)", "\tx", "\rx", "'quoted", "''two", "a,b", 'q"uote',
                 "multi\nline", "new\r\nline", "", "ünï", "=HYPERLINK(\"http://x\")"]


def test_csv_cells_are_spreadsheet_safe_and_round_trip(tmp_path):
    m = dio.CsvManifest(tmp_path / "m.csv", ["cell", "n"]).open()
    m.append([[c, i] for i, c in enumerate(HOSTILE_CELLS)])
    with open(m.path, newline="", encoding="utf-8") as f:
        raw = [row[0] for row in list(csv.reader(f))[1:]]
    for text in raw:  # what a spreadsheet sees: no cell starts a formula
        assert not text.startswith(dio.FORMULA_TRIGGERS), text
    assert [r["cell"] for r in m.rows()] == HOSTILE_CELLS  # what our readers get back: the original text
    assert [r["n"] for r in m.rows()] == [str(i) for i in range(len(HOSTILE_CELLS))]
    assert dio.csv_safe(-0.5) == -0.5  # numbers are not text


def test_torn_last_record_is_cut_at_every_byte_offset(tmp_path):
    """A crash may stop a write anywhere; repair keeps exactly the whole records, quoted newlines included."""
    header = ["path", "status", "error"]
    whole = [["a.jpg", "ok", ""], ["b\nc.jpg", "error", 'says "no",\nreally']]
    last = ["=x\n\"y\".jpg", "error", "torn\nrow, \"quoted\""]
    m = dio.CsvManifest(tmp_path / "m.csv", header).open()
    m.append(whole)
    prefix = m.path.read_bytes()
    tail = dio.csv_text([last]).encode()
    for cut in range(len(tail) + 1):
        path = tmp_path / f"t{cut}.csv"
        path.write_bytes(prefix + tail[:cut])
        torn = dio.CsvManifest(path, header).open()  # repairs
        expected = whole + ([last] if cut == len(tail) else [])
        assert [[r[c] for c in header] for r in torn.rows()] == expected, cut
        torn.append([["next.jpg", "ok", ""]])  # appending after a repair yields well-formed rows
        assert [r["path"] for r in torn.rows()][-1] == "next.jpg"
        assert len(torn.rows()) == len(expected) + 1


@pytest.mark.parametrize("rel", ["../victim.txt", "a/../../victim.txt", "/etc/passwd", "", "."])
def test_manifest_paths_outside_the_output_are_refused(tmp_path, rel):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(dio.UnsafePathError):
        dio.inside(out, rel)


def test_symlink_out_of_the_output_is_refused(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "link").symlink_to(tmp_path)
    assert dio.inside(out, "sub/x.jpg") == (out / "sub" / "x.jpg").resolve()
    with pytest.raises(dio.UnsafePathError):
        dio.inside(out, "link/victim.txt")


def test_atomic_write_fits_names_at_the_file_system_limit(tmp_path):
    name = "n" * 250 + ".jpg"  # 254 bytes: a temporary name derived from it would not fit
    dio.atomic_write_bytes(tmp_path / name, b"x")
    assert (tmp_path / name).read_bytes() == b"x"


def test_second_run_is_refused_and_names_the_holder(tmp_path):
    with OutputLock(tmp_path, "label"):
        with pytest.raises(OutputBusyError, match=r"another run of this process \(label\)"):
            OutputLock(tmp_path, "label").acquire()  # a second run in this process (another thread, say) too
        code = f"from detectcrop.locks import OutputLock; OutputLock({str(tmp_path)!r}, 'other').acquire()"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        assert proc.returncode != 0
        assert "OutputBusyError" in proc.stderr and f"pid {os.getpid()}" in proc.stderr and "label" in proc.stderr
    OutputLock(tmp_path, "again").acquire().release()  # released


def test_lock_dies_with_a_killed_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from detectcrop.locks import OutputLock
        OutputLock({str(tmp_path)!r}, 'holder').acquire()
        print('held', flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputBusyError, match=f"pid {holder.pid}"):
            OutputLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 5
    while True:  # the kernel drops the lock with the process
        try:
            OutputLock(tmp_path).acquire().release()
            break
        except OutputBusyError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_csv_text_is_plain_csv():
    text = dio.csv_text([["a", "=b"]])
    assert list(csv.reader(io.StringIO(text))) == [["a", "'=b"]]
