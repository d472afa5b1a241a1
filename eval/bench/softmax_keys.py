"""Softmax over few keys, and the streaming step's reads rounded up to a multiple of 16 slots.

    python -m eval.bench.softmax_keys [--checkpoint runs/tmaze_quick] [--threads 2] [--out results/softmax_keys.md]

A decoding step scores its few query rows against the filled key/value slots only
(rate/core/streaming.py).  Early in a segment, and in the pass that runs the read block, those are
few: at the T-Maze size (m = 5) the read block's scores are (B, 4, 7, 7).  torch's CPU softmax over
a last dimension shorter than 16 takes a scalar path several times slower than over 16 (the vector
width of AVX-512 floats), so the decoder reads the filled slots rounded up to a multiple of 16
(``READ_ALIGN``; the extra slots are masked and get weight exactly 0).  Two tables, measured in one
process: the softmax alone at decode shapes for a range of key counts, and the T-Maze streaming
policy's step at batch 100 with the reads aligned (16) and unaligned (1), alternated, with its
actions compared.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from rate.config import atomic_write_text
from rate.cli.records import machine_info
from rate.core import streaming
from rate.rl.policy import StreamingPolicy
from rate.training import setup_process

KEYS = [4, 7, 8, 12, 15, 16, 17, 24, 31, 32, 40, 48]
QUERY_ROWS = [3, 7]  # an ordinary T-Maze step (R, o, a); the read block of m = 5 with 2 first tokens


def median_seconds(fn, calls: int, repeats: int) -> tuple[float, float, float]:
    """(median, min, max) over ``repeats`` of the mean seconds per call of ``fn`` over ``calls``."""
    for _ in range(max(1, calls // 10)):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times), min(times), max(times)


def softmax_rows(batch: int, repeats: int) -> list[str]:
    rows = []
    for q in QUERY_ROWS:
        for k in KEYS:
            scores = torch.randn(batch, 4, q, k, generator=torch.Generator().manual_seed(k))
            med, lo, hi = median_seconds(lambda: scores.softmax(-1), 300, repeats)
            rows.append(f"| ({batch}, 4, {q}, {k}) | {med * 1e6:.1f} ({lo * 1e6:.1f}-{hi * 1e6:.1f}) |")
    return rows


def policy_ms(model, batch: int, align: int, steps: int) -> tuple[float, np.ndarray]:
    """Mean ms per step of the streaming policy over ``steps`` steps (a warm-up segment first) and
    the actions it took, fed the same observations for any ``align``."""
    streaming.READ_ALIGN = align
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((steps, batch, 4)).astype(np.float32)
    policy = StreamingPolicy(model, 1.0)
    policy.reset(batch)
    actions, start = [], None
    warm = 2 * model.cfg.segment_steps
    for t in range(steps):
        if t == warm:
            start = time.perf_counter()
        actions.append(policy.act(obs[t], np.zeros(batch, np.float32)))
    return (time.perf_counter() - start) / (steps - warm) * 1e3, np.stack(actions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench.softmax_keys", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/tmaze_quick"),
                        help="a T-Maze RATE run (default: the `make run` checkpoint); an untrained model if missing")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--steps", type=int, default=600, help="policy steps per timed run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results/softmax_keys.md"))
    args = parser.parse_args(argv)
    for name in ("batch", "steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be positive")
    setup_process(0, args.threads)
    info = machine_info()
    if (args.checkpoint / "config.json").exists():
        from rate.rl.experiment import load_policy_model

        model, _ = load_policy_model(args.checkpoint)
        source = f"checkpoint `{args.checkpoint}`"
    else:
        from eval.bench.rollout import tmaze_model

        model, source = tmaze_model(10, 5), "an untrained T-Maze model (K = 10, m = 5; no checkpoint found)"
    default = streaming.READ_ALIGN
    try:
        runs: dict[int, list[float]] = {1: [], default: []}
        actions = {}
        for _ in range(args.repeats):
            for align in (1, default):  # alternated, so drift hits both alike
                ms, actions[align] = policy_ms(model, args.batch, align, args.steps)
                runs[align].append(ms)
    finally:
        streaming.READ_ALIGN = default
    same = np.array_equal(actions[1], actions[default])
    policy_rows = [f"| {align} | {statistics.median(ms):.3f} ({min(ms):.3f}-{max(ms):.3f}) |" for align, ms in runs.items()]
    ratio = statistics.median(runs[1]) / statistics.median(runs[default])
    text = "\n".join([
        "# Softmax over few keys", "",
        f"Generated by `python -m eval.bench.softmax_keys` on {info['machine']}, {info['cpu_count']} cores, "
        f"{args.threads} torch threads, torch {info['torch']}. Medians of {args.repeats} repeats (min-max).", "",
        "## torch's softmax over the last dimension", "",
        "| scores shape | microseconds per call |", "|---|---|", *softmax_rows(args.batch, args.repeats), "",
        "## The T-Maze streaming policy's step", "",
        f"{source}, batch {args.batch}, {args.steps} steps per run (the first two segments untimed), the two "
        f"settings alternated. Reads rounded up to {default} slots: {ratio:.2f}x the speed of unaligned reads; "
        f"actions {'identical' if same else 'DIFFERENT'} at every step.", "",
        "| reads rounded up to a multiple of | ms per step |", "|---|---|", *policy_rows, "",
    ])
    atomic_write_text(args.out, text)
    print(text)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
