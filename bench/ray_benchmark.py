"""build_crops on the local engine vs Ray Data (1 actor x 2 cores, 2 actors x 1 core) on the same photos.

    python -m bench.ray_benchmark [--work DIR] [--photos 400] [--repeats 3]

Each run is ``python -m pipelines.build_crops`` in its own process; the runs alternate (local, ray 1, ray 2, local,
...). Reported per configuration: the median wall time, the median steady rate (files per second once the first row
is written, i.e. without Ray's start-up and the actors' model loading), the median of paired ratios against the local
run of the same round, and the peak resident memory of the whole process tree (driver, Ray's processes, actors),
sampled every 0.1 s. Every run must produce the same files as the first local run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from detectcrop import zoo

CONFIGS = {
    "local": ["--engine", "local", "--workers", "2"],
    "ray, 1 actor x 2 cores": ["--engine", "ray", "--actors", "1", "--cpus-per-actor", "2"],
    "ray, 2 actors x 1 core": ["--engine", "ray", "--actors", "2", "--cpus-per-actor", "1"],
}


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def _rows(path: Path) -> int:
    try:
        return max(0, path.read_bytes().count(b"\n") - 1)
    except OSError:
        return 0


def run(photos: Path, out: Path, extra: list[str]) -> dict[str, float]:
    cmd = [sys.executable, "-m", "pipelines.cli.build_crops", "--input", str(photos), "--output", str(out),
           "--detector", zoo.OFFLINE_DETECTOR, "--no-progress", "--log-level", "WARNING", *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    peak, first = 0, None
    while proc.poll() is None:
        peak = max(peak, _tree_rss(ps))
        n = _rows(out / "images.csv")
        if first is None and n > 0:
            first = (time.perf_counter(), n)
        time.sleep(0.1)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    total = _rows(out / "images.csv")
    t0, n0 = first or (start, 0)
    steady = (total - n0) / max(1e-9, start + wall - t0)
    return {"wall": wall, "steady": steady, "rss": peak / 2**20, "files": total}


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "detectcrop_ray_bench")
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from pipelines.synthetic import generate

    photos = args.work / "data" / "photos"
    if not photos.is_dir():
        generate(args.work / "data", brands=4, photos_per_brand=args.photos // 4, seed=0, workers=2)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in CONFIGS}
    reference = None
    for r in range(args.repeats):
        for name, extra in CONFIGS.items():
            out = args.work / f"out-{r}-{list(CONFIGS).index(name)}"
            shutil.rmtree(out, ignore_errors=True)
            results[name].append(run(photos, out, extra))
            tree = _tree(out)
            if reference is None:
                reference = tree
            elif tree != reference:
                raise RuntimeError(f"{name} (round {r}) wrote different files than the first local run")
            shutil.rmtree(out)
            print(f"round {r} {name}: {results[name][-1]}", file=sys.stderr, flush=True)
    n = int(results["local"][0]["files"])
    print(f"{n} files (synthetic watch photos, 640x480), build_crops --detector {zoo.OFFLINE_DETECTOR}, "
          f"{psutil.cpu_count()} cores, {args.repeats} alternating rounds; identical outputs in every run\n")
    print("| engine | wall (s) | steady files/s | vs local (median paired ratio) | peak RSS of the process tree (MB) |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        ratios = [a["steady"] / b["steady"] for a, b in zip(runs, results["local"], strict=True)]
        print(f"| {name} | {statistics.median(x['wall'] for x in runs):.1f} | "
              f"{statistics.median(x['steady'] for x in runs):.2f} | {statistics.median(ratios):.2f} | "
              f"{statistics.median(x['rss'] for x in runs):,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
