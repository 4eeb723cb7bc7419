"""Listing input folders: every entry accounted for, with a reason for the ones that cannot be processed."""

from __future__ import annotations

import os

import pytest
from detectcrop.inputs import discover_images, scan_inputs


def test_discover_images_is_recursive_sorted_and_skips_hidden(tmp_path):
    for rel in ["b/z.jpg", "a/y.PNG", "a/x.webp", "a/sub/w.tiff", "c.bmp", "notes.txt", ".hidden/q.jpg", "a/.r.jpg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in discover_images(tmp_path)]
    assert found == ["a/sub/w.tiff", "a/x.webp", "a/y.PNG", "b/z.jpg", "c.bmp"]
    every = [p.relative_to(tmp_path).as_posix() for p in discover_images(tmp_path, extensions=None)]
    assert "notes.txt" in every and ".hidden/q.jpg" not in every
    with pytest.raises(NotADirectoryError):
        discover_images(tmp_path / "nope")


def test_scan_inputs_lists_every_entry_once_with_reasons(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"x")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "inside.jpg").write_bytes(b"x")
    (tmp_path / ".dot.jpg").write_bytes(b"x")
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "missing.jpg")
    (tmp_path / "loop").symlink_to(tmp_path)
    outside = tmp_path.parent / f"{tmp_path.name}-outside.jpg"
    outside.write_bytes(b"x")
    (tmp_path / "out.jpg").symlink_to(outside)
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg")
    with open(raw, "wb") as f:
        f.write(b"x")

    entries = {e.rel: e for e in scan_inputs(tmp_path)}
    assert sorted(entries) == [".cache", ".dot.jpg", "a/x.jpg", "caf\\xe9.jpg", "dangling.jpg", "loop", "out.jpg",
                               "pipe.jpg"]
    assert "hidden folder" in entries[".cache"].problem
    assert "symbolic link to a folder" in entries["loop"].problem
    assert "not valid UTF-8" in entries["caf\\xe9.jpg"].problem
    # These are inputs; the reader reports what is wrong with them (without opening the FIFO).
    for rel in (".dot.jpg", "a/x.jpg", "dangling.jpg", "out.jpg", "pipe.jpg"):
        assert entries[rel].problem == ""


def test_unlistable_folder_is_reported(tmp_path, monkeypatch):
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "x.jpg").write_bytes(b"x")
    real = os.scandir

    def scandir(path):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    entries = {e.rel: e for e in scan_inputs(tmp_path)}
    assert list(entries) == ["locked"] and "cannot list the folder" in entries["locked"].problem


def test_an_undecodable_name_and_the_valid_name_it_reads_like_both_get_an_entry(tmp_path):
    with open(os.path.join(os.fsencode(tmp_path), b"photo\xff.jpg"), "wb") as f:
        f.write(b"x")
    (tmp_path / "photo\\xff.jpg").write_bytes(b"y")  # a valid name with a backslash: printed the same
    entries = scan_inputs(tmp_path)
    assert len(entries) == 2 and len({e.rel for e in entries}) == 2
    valid = next(e for e in entries if e.path.name == "photo\\xff.jpg")
    assert valid.rel == "photo\\xff.jpg" and not valid.problem  # the valid one is processed under its own name
    other = next(e for e in entries if e is not valid)
    assert "not valid UTF-8" in other.problem and "undecodable name" in other.rel
