"""The demo's results table: written into a Markdown file between its markers, refused early without them."""

from __future__ import annotations

import pytest

from pipelines import demo

RESULT = {"scene_found": 65, "scene_objects": 66, "scene_detection_recall": 65 / 66, "scene_detection_precision": 0.97,
          "scene_label_accuracy": 0.985, "scene_unknown_share": 0.0, "scene_top_class_accuracy": 0.985,
          "files_accounted_for": "31 of 31", "val_macro_f1": 0.97, "seconds": 120.0, "train_seconds": 60.0,
          "date": "2026-12-06", "machine": "x86_64, 2 CPUs", "backbone": "b", "fine_tune_blocks": "auto",
          "detector": "d"}


def test_table_goes_between_the_markers_and_nothing_else_changes(tmp_path):
    page = tmp_path / "BENCHMARKS.md"
    before, after = "# Benchmarks\n\nintro\n", "\n## Next section\n\ntext\n"
    page.write_text(f"{before}{demo.TABLE_START}\nold table\n{demo.TABLE_END}{after}")
    table = demo.results_table(RESULT, "python -m pipelines.demo")
    for _ in range(2):  # rewriting is idempotent
        demo.write_between_markers(page, table)
        assert page.read_text() == f"{before}{demo.TABLE_START}\n{table}{demo.TABLE_END}{after}"
    assert "65 / 66 = 98.5%" in table and "`python -m pipelines.demo` on 2026-12-06" in table


def test_a_file_without_markers_is_refused_before_any_work(tmp_path, capsys):
    page = tmp_path / "notes.md"
    page.write_text("no markers here\n")
    out = tmp_path / "demo_out"
    assert demo.main(["--output", str(out), "--benchmarks", str(page)]) == 2
    assert "has no" in capsys.readouterr().err and not out.exists()
    with pytest.raises(ValueError, match="has no"):
        demo.write_between_markers(page, "table")
