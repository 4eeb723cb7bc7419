"""BENCHMARKS.md is what `bench.report` renders from its template and the JSON results, and a render keeps the demo's
table."""

from __future__ import annotations

import shutil

from bench import backbone_benchmark, report
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


def _run(split: str, recipe: str, seed: int, f1: float) -> dict:
    return {"variant": "hard", "split": split, "backbone": "b", "recipe": recipe, "seed": seed, "test_macro_f1": f1,
            "probe_macro_f1": 0.4, "auroc": {"energy": 0.6}, "ece_after": 0.1, "wall_s": 10.0}


def test_a_merged_backbone_result_keeps_what_was_not_measured_again():
    old = {"command": "first", "runs": [_run("last", "head", 0, 0.40), _run("last", "default", 0, 0.50)],
           "probes": [{"p": 1}], "speed": {"b": {}}}
    new = {"command": "second", "commands": ["second"], "runs": [_run("last", "default", 0, 0.55),
                                                                _run("first", "448px", 0, 0.65)],
           "probes": [], "speed": {}}
    result = backbone_benchmark.merged(old, new)
    assert result["commands"] == ["first", "second"] and result["probes"] == [{"p": 1}] and result["speed"]
    assert sorted((r["split"], r["recipe"], r["test_macro_f1"]) for r in result["runs"]) == [
        ("first", "448px", 0.65), ("last", "default", 0.55), ("last", "head", 0.40)]
    runs, best = backbone_benchmark.markdown(result["runs"], {}, []).strip().split("\n\n")
    assert runs.index("| hard | last | `b` | head") < runs.index("| hard | last | `b` | default") < runs.index(
        "| hard | first | `b` | 448px")
    assert "| head | 448px | default | best |" in best
    assert "| hard | first | `b` | 0.400 | - | 0.650 | - | 0.650 (448px) |" in best


def test_the_command_line_lists_several_commands_in_order():
    result = {"date": "2026-01-02", "machine": "m", "python": "3.11"}
    one = report._command_line({**result, "command": "a"}, "figures", "x.json")
    assert one == "Command: `a` (2026-01-02, m, Python 3.11; figures in `bench/x.json`)."
    several = report._command_line({**result, "commands": ["a --x", "b"]}, "figures", "x.json")
    head, _, items = several.partition("\n\n")
    assert head.startswith("Commands, in the order they ran (2026-01-02") and items == "- `a --x`\n- `b`\n"
