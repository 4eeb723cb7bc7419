"""BENCHMARKS.md is what `bench.report` renders from its template and the JSON results, and a render keeps the demo's
table."""

from __future__ import annotations

import shutil

from bench import report
from pipelines import demo


def test_the_page_is_the_render_of_the_template_and_the_json():
    assert report.main(["--check"]) == 0, "regenerate it: python -m bench.report"


def test_a_render_keeps_the_demo_table_and_notes_missing_json(tmp_path):
    page = tmp_path / "BENCHMARKS.md"
    shutil.copy(report.PAGE, page)
    demo.write_between_markers(page, "a demo table\n")
    (tmp_path / "bench").mkdir()  # no JSON results here
    assert report.main(["--output", str(page), "--bench-dir", str(tmp_path / "bench")]) == 0
    text = page.read_text()
    assert f"{demo.TABLE_START}\na demo table\n{demo.TABLE_END}" in text
    assert "(No `bench/backbone_benchmark.json` yet:" in text and "(No `bench/client_check.json` yet:" in text
    assert "<!-- render:" not in text
