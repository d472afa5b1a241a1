"""What train.keep_freed_memory saves: large allocations with glibc's default malloc against the
kept heap (rate/host_memory.py), side by side in one run.

    python -m eval.bench.host_memory [--threads 2] [--repeats 20]

Each setting runs in its own child process (the malloc setting is process-wide and one-way) and
times, after a warm-up, the median of ``--repeats`` calls of: a (23,040 x 64) @ (64 x 384)
``F.linear`` (the query/key/value projection of one segment at the RATE run script's size, a 35 MB
output) into a new tensor and into a reused one, and a 35 MB ``torch.zeros``.  Minor page faults
per call come from getrusage.  Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from eval.bench.throughput import run_children
from rate.training import positive_int
from rate.host_memory import keep_freed_memory

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
    parser.add_argument("--one", choices=["default", "kept"], help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure(args.one == "kept", args.repeats)))
        return 0
    settings = ["default", "kept"]
    results = dict(zip(settings, run_children("eval.bench.host_memory", settings,
                                              ["--threads", str(args.threads), "--repeats", str(args.repeats)])))
    if not results["kept"]["applied"]:
        print("this C library has no usable mallopt: keep_freed_memory does nothing here", file=sys.stderr)
    print("| operation | default malloc ms (faults/call) | freed memory kept ms (faults/call) | ratio |")
    print("|---|---|---|---|")
    for name in ("linear, new output", "linear, reused output", "zeros (35 MB)"):
        (d_ms, d_f), (k_ms, k_f) = results["default"][name], results["kept"][name]
        print(f"| {name} | {d_ms:.2f} ({d_f:,.0f}) | {k_ms:.2f} ({k_f:,.0f}) | {d_ms / k_ms:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
