"""Run every benchmark in turn (what `make bench` does), then write BENCHMARKS.md (`bench.report`).

    python -m bench.run_all [--work DIR] [--only model_zoo label ...] [--no-report]

Each benchmark runs in its own process, so one's memory and TensorFlow state cannot affect another's timings.
Those that write JSON results write them into ``bench/`` (``backbone_benchmark.json``, ``client_check.json``), and
`bench.report` renders the page's tables from them; the others print their Markdown section, whose figures the
template of the page (``bench/BENCHMARKS.template.md``) holds. Expect about an hour on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench import report


def commands(work: Path) -> dict[str, list[str]]:
    return {
        "model_zoo": ["bench.model_zoo_benchmark"],
        "watches": ["bench.watches_benchmark", "--data", str(work / "watches")],
        "build_crops": ["bench.build_crops_benchmark", "--work", str(work / "build_crops"), "--repeats", "5"],
        "train_fine": ["bench.train_fine_benchmark", "--work", str(work / "train_fine")],
        "label": ["bench.label_benchmark", "--work", str(work / "label")],
        "backbone": ["bench.backbone_benchmark", "--work", str(work / "backbone"),
                     "--json", str(report.BENCH / "backbone_benchmark.json")],
        # installs supervision, faster-coco-eval and Label Studio into their own environments under --work
        "clients": ["bench.client_check", "--demo", str(work / "demo"), "--work", str(work / "clients"),
                    "--json", str(report.BENCH / "client_check.json")],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "detectcrop_bench")
    parser.add_argument("--only", nargs="*", help="run only these benchmarks")
    parser.add_argument("--no-report", action="store_true", help="leave BENCHMARKS.md as it is")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    failed = []
    for name, cmd in commands(args.work).items():
        if args.only and name not in args.only:
            continue
        print(f"\n## {name}: python -m {' '.join(cmd)}", flush=True)
        if subprocess.run([sys.executable, "-m", *cmd], check=False).returncode != 0:
            failed.append(name)
    if not args.no_report:
        report.main([])  # from the JSON results there are, the new ones and those of earlier runs
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
