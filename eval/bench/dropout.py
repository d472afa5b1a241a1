"""The project's CPU dropout (rate/core/dropout.py) against torch's, side by side.

    python -m eval.bench.dropout [--threads 2] [--repeats 5] [--out results/dropout.md]

One residual-branch dropout of the official T-Maze run script's training step, p = 0.2 on a
(128, 180, 64) tensor (batch 128, 15 + 150 + 15 rows, d_model 64): forward and backward, and the
mask draw alone.  Each repeat times every variant in turn (reversed every other repeat) over about
half a second after a warm-up; the page gives the medians of the repeats (min-max) and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from eval.bench.throughput import generated_by, in_turn, spread, timed
from rate.cli.records import machine_info
from rate.cli.run import unwritable
from rate.config import atomic_write_text
from rate.core import dropout as dropout_module
from rate.core.dropout import dropout, keep_mask, keep_threshold
from rate.training import positive_int, setup_process

SHAPE, P = (128, 180, 64), 0.2


def measure(repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each variant, one value per repeat."""
    x = torch.randn(SHAPE, requires_grad=True)
    grad = torch.randn(SHAPE)

    def with_backward(fn):
        return lambda: fn(x, P, True).backward(grad)

    variants = {
        "torch F.dropout, forward + backward": with_backward(F.dropout),
        "rate.core.dropout, forward + backward": with_backward(dropout),
        "torch's mask draw (Tensor.bernoulli_)": lambda: torch.empty(SHAPE).bernoulli_(1 - P),
        "this mask draw (int32 Tensor.random_ < threshold)": lambda: keep_mask(SHAPE, keep_threshold(P)),
    }
    times = {name: [] for name in variants}
    for r in range(repeats):
        for name in in_turn(variants, r):
            times[name].append(timed(variants[name], 0.5))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench.dropout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument("--out", type=Path, default=Path("results/dropout.md"))
    args = parser.parse_args(argv)
    if (status := unwritable(args.out)) is not None:
        return status
    setup_process(0, args.threads)
    info = machine_info()
    times = measure(args.repeats)
    names = list(times)
    rows = [f"| {name} | {spread([t * 1e3 for t in times[name]], '.2f')} |" for name in names]
    ratios = [(names[0], names[1]), (names[2], names[3])]
    lines = [f"| {a} / {b} | {statistics.median(x / y for x, y in zip(times[a], times[b])):.2f}x |" for a, b in ratios]
    text = "\n".join([
        "# CPU dropout", "",
        generated_by("eval.bench.dropout", argv, info, args.threads), "",
        f"p = {P} on a {tuple(SHAPE)} fp32 tensor (one residual-branch dropout of the official T-Maze run script's "
        f"training step). Medians of {args.repeats} repeats (min-max), each the median call over about 0.5 s, the "
        "variants in turn (reversed every other repeat). On this CPU rate.core.dropout "
        + ("draws the cheaper mask (torch's CPU Bernoulli draws one element at a time here)."
           if dropout_module.CHEAPER_MASK else
           "is torch's dropout itself (an Intel CPU under MKL: torch hands its draw to MKL there); the mask draws "
           "are compared all the same."), "",
        "| variant | ms per call |", "|---|---|", *rows, "",
        "| ratio (median of the repeats' ratios) | |", "|---|---|", *lines, "",
    ])
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
