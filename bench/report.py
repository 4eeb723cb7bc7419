"""Write BENCHMARKS.md, the page of current results, from its template and the benchmarks' JSON results.

    python -m bench.report [--template bench/BENCHMARKS.template.md] [--output BENCHMARKS.md] [--check]

The template holds the explanatory text and the tables of the benchmarks that write no JSON; each
``<!-- render:NAME -->`` line in it is replaced by what `RENDERERS[NAME]` makes of the JSON file it reads from
``bench/`` (a note naming the command to run when that file is missing). The demo's table (between the demo markers,
written by ``python -m pipelines.demo --benchmarks BENCHMARKS.md``) is kept from the page being replaced, so a render
never undoes a demo run. ``--check`` writes nothing and exits 1 when the page differs from what it would write.
`bench.run_all` (``make bench``) calls this after the benchmarks.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TEMPLATE = BENCH / "BENCHMARKS.template.md"
PAGE = ROOT / "BENCHMARKS.md"
RENDER = re.compile(r"^<!-- render:([\w.]+) -->$", re.M)
DEMO = re.compile(r"^<!-- demo:start[^\n]*-->\n.*?^<!-- demo:end -->$", re.M | re.S)

#: The JSON file each renderer reads, and the command that writes it.
SOURCES = {
    "backbone": ("backbone_benchmark.json",
                 "python -m bench.backbone_benchmark --work /tmp/bb --json bench/backbone_benchmark.json"),
    "clients": ("client_check.json",
                "python -m bench.client_check --demo /tmp/demo --work /tmp/clients --json bench/client_check.json"),
}

def _command_line(result: dict[str, Any], what: str, json_name: str) -> str:
    commands = result.get("commands") or [result["command"]]
    where = f"({result['date']}, {result['machine']}, Python {result['python']}; {what} in `bench/{json_name}`)"
    if len(commands) == 1:
        return f"Command: `{commands[0]}` {where}."
    return f"Commands, in the order they ran {where}:\n\n" + "\n".join(f"- `{c}`" for c in commands) + "\n"


def _backbone_tables(result: dict[str, Any]) -> list[str]:
    from bench.backbone_benchmark import markdown

    return markdown(result["runs"], result["speed"], result["probes"]).strip().split("\n\n")


def backbone(result: dict[str, Any], part: str) -> str:
    if part == "command":
        return _command_line(result, "figures", SOURCES["backbone"][0])
    runs, best, *rest = _backbone_tables(result)
    probes = rest[0] if result["probes"] else ""
    speed = rest[-1] if result["speed"] else ""
    return {"runs": runs, "best": best, "probes": probes, "speed": speed}[part]


def clients(result: dict[str, Any], part: str) -> str:
    if part == "command":
        return _command_line(result, "results", SOURCES["clients"][0])
    rows = ["| client | version | reads | result |", "|---|---|---|---|"]
    sv = result.get("supervision")
    if sv:
        for method, reads in (("from_yolo", "`yolo/labels`, `yolo/data.yaml`"), ("from_coco", "`results.coco.json`")):
            r = sv[method]
            labels = "labels equal" if r["ok"] and not r["problems"] else f"problems: {'; '.join(r['problems'])}"
            rows.append(f"| supervision `DetectionDataset.{method}` | {sv['version']} | {reads} | "
                        f"{r['images']} images, {r['objects']} objects, {labels}, "
                        f"largest box difference {r['max_box_diff_px']:g} px |")
    ce = result.get("coco_eval", {})
    if "pycocotools" in ce:
        r = ce["pycocotools"]
        rows.append(f"| pycocotools `COCOeval` | {r['version']} | `results.coco-gt.json` on `annotations.json` | "
                    f"AP {r['AP']:g} (evaluate: {r['evaluate_AP']:g}); all 12 numbers within {r['max_abs_diff']:g} |")
    if "faster_coco_eval" in ce:
        r = ce["faster_coco_eval"]
        rows.append(f"| faster-coco-eval `COCOeval_faster` | {r['version']} | the same | AP {r['AP']:g}; all 12 "
                    f"numbers within {r['max_abs_diff']:g} of evaluate's |")
    ls = result.get("label_studio")
    if ls:
        rows.append(f"| Label Studio server (127.0.0.1) | {ls['version']} | `labelstudio.xml` as the project's config, "
                    f"`labelstudio.json` imported | {ls['tasks_imported']}/{ls['tasks_sent']} tasks, "
                    f"{ls['predictions_imported']} predictions, {ls['regions_back']}/{ls['regions_sent']} regions back "
                    f"as written, each in the config's labels ({ls['config_labels']}); task images served "
                    f"{ls['images_served']} |")
    return "\n".join(rows)


RENDERERS: dict[str, Callable[[dict[str, Any], str], str]] = {"backbone": backbone, "clients": clients}


def render(template: str, bench_dir: Path = BENCH, current_page: str | None = None) -> str:
    """The page: ``template`` with every render line replaced, and the demo table of ``current_page`` kept."""
    loaded: dict[str, dict[str, Any] | None] = {}

    def replace(match: re.Match[str]) -> str:
        name, _, part = match.group(1).partition(".")
        if name not in RENDERERS:
            raise ValueError(f"the template names an unknown renderer: {match.group(1)!r}")
        json_name, command = SOURCES[name]
        if name not in loaded:
            path = bench_dir / json_name
            loaded[name] = json.loads(path.read_text()) if path.is_file() else None
        if loaded[name] is None:
            return f"(No `bench/{json_name}` yet: `{command}` writes it.)" if part in ("", "command") else ""
        return RENDERERS[name](loaded[name], part)

    page = RENDER.sub(replace, template)
    if current_page is not None and (old := DEMO.search(current_page)) and DEMO.search(page):
        page = DEMO.sub(lambda _: old.group(0), page, count=1)
    return re.sub(r"\n{3,}", "\n\n", page)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", type=Path, default=TEMPLATE)
    parser.add_argument("--output", type=Path, default=PAGE)
    parser.add_argument("--bench-dir", type=Path, default=BENCH, help="where the JSON results are")
    parser.add_argument("--check", action="store_true", help="exit 1 when the page is not what would be written")
    args = parser.parse_args(argv)
    current = args.output.read_text() if args.output.is_file() else None
    page = render(args.template.read_text(), args.bench_dir, current)
    if args.check:
        if page != current:
            print(f"{args.output} is not what `python -m bench.report` writes", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(page)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
