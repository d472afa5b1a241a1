"""What train.keep_freed_memory saves: large allocations with glibc's default malloc against the
kept heap (rate/host_memory.py), side by side in one run.

    python -m eval.bench.host_memory [--threads 2] [--repeats 20] [--rounds 3] [--out results/host_memory.md]

Each setting runs in its own child process (the malloc setting is process-wide and one-way) and
times, after a warm-up, the median of ``--repeats`` calls of: a (23,040 x 64) @ (64 x 384)
``F.linear`` (the query/key/value projection of one segment at the RATE run script's size, a 35 MB
output) into a new tensor and into a reused one, and a 35 MB ``torch.zeros``.  Minor page faults
per call come from getrusage.  ``--rounds`` pairs of children, the order reversed every other
round; the page gives each setting's median over the rounds (min-max) and the ratio of the
medians, default / kept.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from eval.bench.throughput import generated_by, in_turn, run_children, spread
from rate.cli.records import machine_info
from rate.cli.run import unwritable
from rate.config import atomic_write_text
from rate.host_memory import keep_freed_memory
from rate.training import positive_int

ROWS, COLS, OUT = 23_040, 64, 384  # batch 128 x 180 rows of a segment, d_model, 3 x 4 heads x 32


def _timed(fn, repeats: int) -> tuple[float, float]:
    """Median ms per call and minor page faults per call, after 5 warm-up calls."""
    for _ in range(5):
        fn()
    times, faults = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return 1e3 * statistics.median(times), faults / repeats


def measure(keep: bool, repeats: int) -> dict:
    applied = keep_freed_memory() if keep else False
    x, w = torch.randn(ROWS, COLS), torch.randn(OUT, COLS)
    out = torch.empty(ROWS, OUT)
    return {
        "applied": applied,
        "linear, new output": _timed(lambda: F.linear(x, w), repeats),
        "linear, reused output": _timed(lambda: torch.matmul(x, w.t(), out=out), repeats),
        "zeros (35 MB)": _timed(lambda: torch.zeros(ROWS, OUT), repeats),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench.host_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--repeats", type=positive_int, default=20)
    parser.add_argument("--rounds", type=positive_int, default=3,
                        help="pairs of children, every other in reverse order")
    parser.add_argument("--out", type=Path, default=Path("results/host_memory.md"))
    parser.add_argument("--one", choices=["default", "kept"], help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure(args.one == "kept", args.repeats)))
        return 0
    if (status := unwritable(args.out)) is not None:
        return status
    runs: dict[str, list[dict]] = {"default": [], "kept": []}
    for r in range(args.rounds):
        order = in_turn(["default", "kept"], r)
        for name, result in zip(order, run_children("eval.bench.host_memory", order,
                                                    ["--threads", str(args.threads), "--repeats", str(args.repeats)])):
            runs[name].append(result)
    applied = all(run["applied"] for run in runs["kept"])
    info = machine_info()
    lines = ["# Large allocations: glibc's default malloc against freed memory kept", "",
             generated_by("eval.bench.host_memory", argv, info, args.threads) + " Each setting in its own "
             f"child process, {args.rounds} pairs of children, every other pair in reverse order; per child the median "
             f"of {args.repeats} calls after 5 warm-up calls. Cells: the median over the rounds (min-max) of the "
             "children's ms per call, and the median over the rounds of the minor page faults per call in the column "
             "after each; ratio: the ratio "
             "of the medians, default / kept (above 1: keeping freed memory is faster). Freed memory kept: "
             + ("applied in every child (rate/host_memory.py)." if applied else
                "NOT applied (this C library has no usable mallopt): both columns ran with the default."), "",
             "| operation | default malloc ms | faults/call | freed memory kept ms | faults/call | default / kept |",
             "|---|---|---|---|---|---|"]
    for name in ("linear, new output", "linear, reused output", "zeros (35 MB)"):
        ms = {s: [run[name][0] for run in runs[s]] for s in runs}
        faults = {s: statistics.median(run[name][1] for run in runs[s]) for s in runs}
        lines.append(f"| {name} | {spread(ms['default'], '.2f')} | {faults['default']:,.0f} | "
                     f"{spread(ms['kept'], '.2f')} | {faults['kept']:,.0f} | "
                     f"{statistics.median(ms['default']) / statistics.median(ms['kept']):.2f}x |")
    text = "\n".join(lines) + "\n"
    atomic_write_text(args.out, text)
    print(text)
    if not applied:
        print("this C library has no usable mallopt: keep_freed_memory does nothing here", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
