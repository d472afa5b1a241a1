"""Training-throughput benchmark of the RMT decoder.

    python -m eval.bench.throughput [--threads 2] [--seconds 3] [--repeats 3]

For a few model sizes: tokens per second of a full training step (forward + backward + AdamW)
over a batch of sequences cut into segments with memory tokens, the FLOPs of that step counted by
``torch.utils.flop_counter`` (matmuls and attention), and the achieved FLOP/s as a fraction of
the fp32 matmul peak (a PEAK_SIZE^3 GEMM, as every benchmark page here) measured in the same
round.  Each repeat measures the peak and then every size, so drift of the machine hits the
fraction's numerator and denominator alike; the page gives medians over the repeats with min-max.
Everything is measured side by side in one run, so the ratios are comparable; absolute numbers
depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from rate.cli.run import unwritable
from rate.config import atomic_write_text
from rate.core.attention import RelativeMultiHeadAttention
from rate.core.lm import RecurrentLM
from rate.core.rmt import RMTConfig
from rate.training import nonnegative_int, positive_float, positive_int

SIZES = [  # name, d_model, layers, heads, d_head, d_inner
    ("d64-L2", 64, 2, 4, 16, 256),
    ("d128-L4", 128, 4, 4, 32, 512),
    ("d256-L4", 256, 4, 8, 32, 1024),
]


def timed(fn, seconds: float, warmup: int = 2) -> float:
    """Median seconds per call of fn over about ``seconds`` of calls."""
    for _ in range(warmup):
        fn()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def run_children(module: str, names: list[str], options: list[str]) -> list[dict]:
    """``python -m MODULE --one NAME OPTIONS...`` for each name, one process each (its own peak
    memory and compile caches: torch.compile's on-disk caches in a fresh folder per child, so a
    first step's seconds are a cold compilation, not a hit of an earlier run's cache); the JSON
    each prints last.  A child that fails: its stderr, and this process exits with its status."""
    results = []
    for name in names:
        print(f"{name} ...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-compile-cache-") as cache:
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": os.path.join(cache, "inductor"),
                   "TRITON_CACHE_DIR": os.path.join(cache, "triton")}
            done = subprocess.run([sys.executable, "-m", module, "--one", str(name), *options],
                                  capture_output=True, text=True, env=env)
        if done.returncode:
            print(done.stderr, file=sys.stderr)
            raise SystemExit(done.returncode)
        if not done.stdout.strip():  # (a child that printed no result: said, not an IndexError)
            print(f"error: {module} --one {name} printed no result\n{done.stderr[-2000:]}", file=sys.stderr)
            raise SystemExit(1)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def bench_command(module: str, argv: list[str] | None) -> str:
    """The command line a benchmark page names as its source."""
    return f"python -m {module}" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()


PEAK_SIZE = 2048  # the matmul peak of every page: a PEAK_SIZE^3 fp32 GEMM, as the reference file measured it


def matmul_peak(seconds: float, n: int = PEAK_SIZE) -> float:
    """FLOP/s of an n x n by n x n fp32 matmul (the median call over about ``seconds``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / timed(lambda: a @ b, seconds)


def form_counting_methods(record) -> dict:
    """Wrappers of RelativeMultiHeadAttention's ``_factored_attention`` (the fused kernel) and
    ``_explicit_attention`` (fp32 CPU training's path) that call ``record(form)`` before each call,
    form "factored" or "window" (the explicit path's positional form, its last argument):
    install them on the class (monkeypatch, or assignment and restoring) to see which form of the
    positional scores attention calls take; a call that takes neither is on the bias path."""
    fused, explicit = RelativeMultiHeadAttention._factored_attention, RelativeMultiHeadAttention._explicit_attention

    def counting_fused(self, *args):
        record("factored")
        return fused(self, *args)

    def counting_explicit(self, *args):
        record(args[-1])
        return explicit(self, *args)

    return {"_factored_attention": counting_fused, "_explicit_attention": counting_explicit}


def in_turn(items, round_index: int) -> list:
    """``items`` in their order in even rounds and reversed in odd ones: the settings of a
    side-by-side comparison take turns, so that none always runs first (drift, warm caches)."""
    items = list(items)
    return items if round_index % 2 == 0 else items[::-1]


def spread(values: list[float], fmt: str) -> str:
    """"median (min-max)" of ``values`` formatted with ``fmt`` ("min to max" when a value is negative)."""
    between = " to " if min(values) < 0 else "-"
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}{between}{max(values):{fmt}})"


def size_step(d: int, layers: int, heads: int, d_head: int, d_inner: int, args) -> tuple:
    """(training step, no-grad forward, FLOPs of one training step, parameter count) of one size."""
    cfg = RMTConfig(d_model=d, n_layers=layers, n_heads=heads, d_head=d_head, d_inner=d_inner, num_mem_tokens=args.mem)
    model = RecurrentLM(16, args.segment_len, cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    z = torch.randint(0, 16, (args.batch, args.segments * args.segment_len + 1))

    def step():
        logits, _ = model(z[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), z[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def forward():
        with torch.no_grad():
            model(z[:, :-1])

    with FlopCounterMode(display=False) as counter:
        step()
    return step, forward, counter.get_total_flops(), sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--seconds", type=positive_float, default=3.0, help="seconds of calls per timing")
    parser.add_argument("--repeats", type=positive_int, default=3, help="rounds of (peak, every size)")
    parser.add_argument("--batch", type=positive_int, default=64)
    parser.add_argument("--segments", type=positive_int, default=3)
    parser.add_argument("--segment-len", type=positive_int, default=24)
    parser.add_argument("--mem", type=nonnegative_int, default=8)
    parser.add_argument("--out", type=Path, help="also write the table as markdown to this file")
    args = parser.parse_args(argv)
    if (status := unwritable(args.out)) is not None:
        return status
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokens = args.batch * args.segments * args.segment_len
    sizes = {name: size_step(*shape, args) for name, *shape in SIZES}
    peaks, forward_rates, train_rates, fractions = [], {n: [] for n in sizes}, {n: [] for n in sizes}, {n: [] for n in sizes}
    for round_ in range(args.repeats):
        peaks.append(matmul_peak(args.seconds))
        for name, (step, forward, flops, _) in sizes.items():
            print(f"round {round_ + 1}/{args.repeats}: {name} ...", file=sys.stderr, flush=True)
            t_step, t_fwd = timed(step, args.seconds), timed(forward, args.seconds)
            forward_rates[name].append(tokens / t_fwd)
            train_rates[name].append(tokens / t_step)
            fractions[name].append(flops / t_step / peaks[-1])
    header = (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads; "
              f"fp32 matmul peak ({PEAK_SIZE}^3) {spread([p / 1e9 for p in peaks], '.1f')} GFLOP/s; batch {args.batch} x "
              f"{args.segments} segments x {args.segment_len} tokens, {args.mem} memory tokens, full BPTT; medians of "
              f"{args.repeats} rounds (min-max), each round the peak then every size; the share of the peak is each "
              f"round's training FLOP/s over that round's own peak, so it need not equal the medians' quotient")
    table = ["| model | params | forward tokens/s | training tokens/s | GFLOP per step | GFLOP/s | "
             "of its round's matmul peak |",
             "|---|---|---|---|---|---|---|"]
    for name, (_, _, flops, params) in sizes.items():
        table.append(f"| {name} | {params} | {spread(forward_rates[name], '.0f')} | {spread(train_rates[name], '.0f')} | "
                     f"{flops / 1e9:.2f} | {spread([r * flops / tokens / 1e9 for r in train_rates[name]], '.1f')} | "
                     f"{spread([100 * f for f in fractions[name]], '.1f')} % |")
    print(header + "\n\n" + "\n".join(table))
    if args.out:
        atomic_write_text(args.out, f"# RMT training throughput\n\nGenerated by `{bench_command('eval.bench.throughput', argv)}`."
                          f"\n\n{header}\n\n" + "\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
