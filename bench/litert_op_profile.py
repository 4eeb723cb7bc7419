"""Each op of a LiteRT model timed on its own, under XNNPACK: where a ``.tflite`` graph spends its time, by op type.

    python -m bench.litert_op_profile MODEL.tflite [MODEL2.tflite ...] [--rounds 15] [--threads 1] [--top 12]

Every op becomes a one-op model (its non-constant inputs made graph inputs, filled with random values in range) and
is timed alone (median of ``--rounds`` invokes after 3 warm-up ones); the whole graph is timed the same way. An op
alone runs with its inputs in cache, so the sum of the ops is a lower bound on the whole graph's time: the
difference is memory traffic between ops (and ops that cannot run alone: index arithmetic, top-k, gathers, which
are skipped and listed). Needs TensorFlow (`detectcrop.runtime.graph`).
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from detectcrop.runtime import make_interpreter

#: Ops whose inputs are indices or shapes: random inputs would fail or measure nothing.
SKIPPED = ("GATHER", "GATHER_ND", "TOPK_V2", "CAST", "FLOOR_DIV", "FLOOR_MOD", "PACK", "STRIDED_SLICE", "RESHAPE",
           "SHAPE", "NON_MAX_SUPPRESSION_V4", "NON_MAX_SUPPRESSION_V5", "WHERE", "SELECT_V2")


def _timed(content: bytes, threads: int, rounds: int) -> float:
    """Median seconds of one invoke of a flatbuffer, random inputs."""
    interp = make_interpreter(content, threads)
    interp.allocate_tensors()
    rng = np.random.default_rng(0)
    for d in interp.get_input_details():
        info = np.iinfo(d["dtype"]) if np.issubdtype(d["dtype"], np.integer) else None
        values = rng.integers(info.min, info.max, d["shape"]) if info else rng.uniform(0, 1, d["shape"])
        interp.set_tensor(d["index"], values.astype(d["dtype"]))
    for _ in range(3):
        interp.invoke()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def op_times(flatbuffer: bytes, threads: int = 1, rounds: int = 15) -> tuple[list[dict], float]:
    """``([{"index", "op", "shape", "ms"}, ...], whole-graph ms)`` for the first subgraph; skipped ops have ``ms``
    ``None``."""
    from detectcrop.runtime.graph import Graph, read_model, schema, write_model

    names = {v: k for k, v in vars(schema().BuiltinOperator).items() if not k.startswith("_")}
    model = read_model(flatbuffer)
    graph = Graph.of(model)
    rows = []
    for i, op in enumerate(graph.subgraph.operators):
        name = names[graph.code(i)]
        output = graph.subgraph.tensors[op.outputs[0]]
        row = {"index": i, "op": name, "shape": tuple(int(v) for v in output.shape), "ms": None}
        rows.append(row)
        if name in SKIPPED:
            continue
        one, sub = copy.copy(model), copy.copy(graph.subgraph)
        sub.operators = [op]
        sub.inputs = [t for t in op.inputs if t >= 0 and model.buffers[sub.tensors[t].buffer].data is None]
        sub.outputs = list(op.outputs)
        one.subgraphs, one.signatureDefs = [sub], []
        try:
            row["ms"] = 1e3 * _timed(write_model(one), threads, rounds)
        except (RuntimeError, ValueError):  # an op that cannot run on random inputs: listed as skipped
            continue
    return rows, 1e3 * _timed(flatbuffer, threads, rounds)


def report(path: Path, threads: int, rounds: int, top: int) -> list[str]:
    rows, whole = op_times(path.read_bytes(), threads, rounds)
    timed = [r for r in rows if r["ms"] is not None]
    total = sum(r["ms"] for r in timed)
    by_op: dict[str, list[float]] = defaultdict(list)
    for r in timed:
        by_op[r["op"]].append(r["ms"])
    skipped = sorted({r["op"] for r in rows if r["ms"] is None})
    lines = [f"### {path}", "",
             f"whole graph {whole:.1f} ms; its {len(timed)} ops timed alone sum to {total:.1f} ms "
             f"({len(rows) - len(timed)} skipped: {', '.join(skipped) or 'none'})", "",
             "| op | count | ms alone | share of the sum |", "|---|---|---|---|"]
    for op, times in sorted(by_op.items(), key=lambda kv: -sum(kv[1])):
        lines.append(f"| {op} | {len(times)} | {sum(times):.2f} | {100 * sum(times) / max(total, 1e-9):.1f}% |")
    lines += ["", f"slowest {top} ops:", "", "| # | op | output shape | ms |", "|---|---|---|---|"]
    for r in sorted(timed, key=lambda r: -r["ms"])[:top]:
        lines.append(f"| {r['index']} | {r['op']} | {'x'.join(map(str, r['shape']))} | {r['ms']:.2f} |")
    return [*lines, ""]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    print(f"machine: {platform.machine()}, {args.threads} thread(s); date {time.strftime('%Y-%m-%d')}\n")
    for path in args.models:
        print("\n".join(report(path, args.threads, args.rounds, args.top)))


if __name__ == "__main__":
    main()
