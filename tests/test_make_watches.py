"""`python -m pipelines.make_watches`: a thin CLI over `pipelines.synthetic.generate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines import make_watches
from pipelines.synthetic import read_catalogue


def test_cli_writes_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    argv = [str(out), "--brands", "2", "--photos-per-brand", "1", "--size", "160x120", "--quiet"]
    assert make_watches.main(argv) == 0
    coco = json.loads((out / "annotations.json").read_text())
    assert len(coco["images"]) == 2
    with pytest.raises(SystemExit):
        make_watches.main(argv)
    assert make_watches.main([*argv, "--overwrite", "--scenes", "1", "--seed", "99"]) == 0
    again = json.loads((out / "annotations.json").read_text())
    assert len(again["images"]) == 3
    assert again["categories"] == coco["categories"]  # --seed changes the photos, not the brands
    assert make_watches.main([*argv, "--overwrite", "--brand-seed", "3"]) == 0
    assert read_catalogue(out / "annotations.json").seed == 3
    with pytest.raises(SystemExit):
        make_watches.main([str(tmp_path / "bad"), "--size", "640by480"])
