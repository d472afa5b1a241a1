"""Training-throughput benchmark of the RMT decoder.

    python -m eval.bench.throughput [--threads 2] [--seconds 3]

For a few model sizes: tokens per second of a full training step (forward + backward + AdamW)
over a batch of sequences cut into segments with memory tokens, the FLOPs of that step counted by
``torch.utils.flop_counter`` (matmuls and attention), and the achieved FLOP/s as a fraction of
the fp32 matmul peak measured in the same process just before.  Everything is measured side by
side in one run, so the ratios are comparable; absolute numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from rate.cli.run import unwritable
from rate.config import atomic_write_text
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
    memory and compile caches); the JSON each prints last.  A child that fails: its stderr, and
    this process exits with its status."""
    results = []
    for name in names:
        print(f"{name} ...", file=sys.stderr, flush=True)
        done = subprocess.run([sys.executable, "-m", module, "--one", str(name), *options],
                              capture_output=True, text=True)
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


def matmul_peak(seconds: float, n: int = 1024) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / timed(lambda: a @ b, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--seconds", type=positive_float, default=3.0)
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
    peak = matmul_peak(args.seconds)
    tokens = args.batch * args.segments * args.segment_len
    header = (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads; "
              f"fp32 matmul peak (1024^3) {peak / 1e9:.1f} GFLOP/s; batch {args.batch} x {args.segments} segments x "
              f"{args.segment_len} tokens, {args.mem} memory tokens, full BPTT")
    print(header)
    print(f"{'model':>8} {'params':>8} {'fwd tok/s':>10} {'train tok/s':>12} {'GFLOP/step':>11} {'GFLOP/s':>8} {'of peak':>8}")
    table = ["| model | params | forward tokens/s | training tokens/s | GFLOP per step | GFLOP/s | of matmul peak |",
             "|---|---|---|---|---|---|---|"]
    for name, d, layers, heads, d_head, d_inner in SIZES:
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
        flops = counter.get_total_flops()
        t_step, t_fwd = timed(step, args.seconds), timed(forward, args.seconds)
        params = sum(p.numel() for p in model.parameters())
        print(f"{name:>8} {params:>8} {tokens / t_fwd:>10.0f} {tokens / t_step:>12.0f} {flops / 1e9:>11.2f} "
              f"{flops / t_step / 1e9:>8.1f} {flops / t_step / peak:>8.1%}")
        table.append(f"| {name} | {params} | {tokens / t_fwd:.0f} | {tokens / t_step:.0f} | {flops / 1e9:.2f} | "
                     f"{flops / t_step / 1e9:.1f} | {flops / t_step / peak:.1%} |")
    if args.out:
        command = "python -m eval.bench.throughput " + " ".join(argv if argv is not None else sys.argv[1:])
        atomic_write_text(args.out, f"# RMT training throughput\n\nGenerated by `{command.strip()}`.\n\n{header}\n\n"
                          + "\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
