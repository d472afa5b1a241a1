"""GPU benchmark: RATE training and streaming rollout at the reference run-script size on one CUDA device.

    bash eval/bench/gpu.sh                     # on a lent GPU machine: installs carried wheels, runs this
    python -m eval.bench.gpu [--out results/performance_gpu.md] [--batches 64 1024] [--seconds 3]

At the RATE reference run script's T-Maze size (d_model 64, 10 layers, 4 heads of 32, no FFN,
m = 15, K = 50 x N = 3; eval.bench.rate_training's "reference-script"), for each batch size:

* training tokens/s of a full step (forward over N segments with full BPTT, loss, backward,
  AdamW) four ways: fp32 and bf16 (torch.autocast) eager, and both compiled (torch.compile), each
  in its own child process (eval.bench.precision's step, synchronised after every step);
* streaming rollout (rate.rl.policy.StreamingPolicy) steps/s over two whole segment cycles, the
  closing steps timed apart (eval.bench.rollout's step_latencies), in ROUNDS rounds.

The page names the GPU, torch and CUDA versions.  ``--device cpu`` runs the same code on the CPU
(a smoke test of the script, e.g. with ``--size tmaze-cpu``): nothing here requires a GPU to import.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from eval.bench.precision import run_one as train_variants
from eval.bench.rate_training import SIZES
from eval.bench.rollout import REFERENCE_SIZE, step_latencies, tmaze_model
from eval.bench.throughput import bench_command, run_children, spread
from rate.cli.records import machine_info
from rate.cli.run import error_exit, unwritable
from rate.training import positive_float, positive_int
from rate.config import atomic_write_text
from rate.rl.policy import StreamingPolicy

VARIANTS = ("fp32", "bf16", "fp32_compiled", "bf16_compiled")


ROUNDS = 3  # rounds of the training variants in each child, and of the rollout (the page's min-max is over them)


def train_child(size_name: str, batch: int, seconds: float, device: str, compiled: bool) -> dict:
    """The training variants of one size and batch, timed in this process: ROUNDS rounds of about
    ``seconds`` / ROUNDS each (the page's time budget stays that of ``seconds``)."""
    size = replace(next(s for s in SIZES if s.name == size_name), batch=batch)
    return train_variants(size, seconds / ROUNDS, device, compiled, rounds=ROUNDS) | {"batch": batch}


def rollout_rows(size_name: str, batches: list[int], device: str) -> list[str]:
    """Steps/s of the streaming policy at each batch (the model of ``size_name``'s shape), ROUNDS
    rounds of two whole segment cycles each: medians (min-max) over the rounds."""
    size = next(s for s in SIZES if s.name == size_name)
    extra = REFERENCE_SIZE if size_name == "reference-script" else []
    model = tmaze_model(size.K, size.mem, extra).to(device)
    rows = []
    for batch in batches:
        # Untimed first: the first steps on a GPU pay CUDA's start-up and kernel selection.
        step_latencies({"stream": StreamingPolicy(model, 1.0)}, batch, steps=size.K + 1)
        rounds = [step_latencies({"stream": StreamingPolicy(model, 1.0)}, batch, steps=2 * size.K + 1,
                                 segment_steps=size.K)[0]["stream"] for _ in range(ROUNDS)]
        rows.append(f"| {batch} | {spread([s['ordinary'] * 1e3 for s in rounds], '.2f')} | "
                    f"{spread([s['closing'] * 1e3 for s in rounds], '.2f')} | "
                    f"{spread([batch / s['mean'] for s in rounds], '.0f')} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu for a smoke test of the script")
    parser.add_argument("--size", default="reference-script", choices=[s.name for s in SIZES])
    parser.add_argument("--batches", type=positive_int, nargs="+", default=[64, 1024])
    parser.add_argument("--seconds", type=positive_float, default=3.0, help="timed seconds per training variant")
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--no-compile", action="store_true", help="eager variants only (no torch.compile)")
    parser.add_argument("--out", type=Path, default=Path("results/performance_gpu.md"))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child mode: one batch, JSON on stdout
    args = parser.parse_args(argv)
    if args.one is None and (status := unwritable(args.out)) is not None:  # (a child writes no page)
        return status
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        return error_exit(RuntimeError("no CUDA device here: this benchmark measures a GPU (run it on one with "
                                       "`bash eval/bench/gpu.sh`, or pass --device cpu to smoke-test the script)"))
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one is not None:
        print(json.dumps(train_child(args.size, args.one, args.seconds, args.device, not args.no_compile)))
        return 0
    # One process per batch: its own compile caches and memory.
    training = run_children("eval.bench.gpu", args.batches,
                            ["--size", args.size, "--seconds", str(args.seconds), "--device", args.device]
                            + (["--no-compile"] if args.no_compile else [])
                            + (["--threads", str(args.threads)] if args.threads else []))
    print("rollout ...", file=sys.stderr, flush=True)
    rollout = rollout_rows(args.size, args.batches, args.device)
    info = machine_info()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({info['machine']})"
    cuda = f", CUDA {torch.version.cuda}" if args.device.startswith("cuda") else ""
    lines = [f"## {name}", "",
             f"Generated by `{bench_command('eval.bench.gpu', argv)}` on {name}, torch {info['torch']}{cuda}; size "
             f"`{args.size}` (eval.bench.rate_training); {torch.get_num_threads()} torch CPU threads. Training: "
             "tokens/s "
             f"(3 per step) of a full step after the first (compilation, for the compiled ones; its seconds in the "
             f"last column), one process per batch, the variants taking turns over {ROUNDS} rounds of about "
             f"{args.seconds / ROUNDS:g} s each (in reverse order every other round): medians (min-max); speed-ups "
             "are ratios of the medians, against fp32 eager.", "",
             "| batch | fp32 tokens/s | bf16 | fp32 compiled | bf16 compiled | first step s (fp32 / bf16 / compiled "
             "fp32 / compiled bf16) |", "|---|---|---|---|---|---|"]
    for r in training:
        base = r["fp32_tokens_per_s"]

        def rate(k: str) -> str:
            low, high = r[k + "_tokens_per_s_range"]
            return f"{r[k + '_tokens_per_s']:.0f} ({low:.0f}-{high:.0f})"

        cells = [f"{rate(k)}, {r[k + '_tokens_per_s'] / base:.2f}x" if k + "_s" in r else "-" for k in VARIANTS[1:]]
        firsts = " / ".join(f"{r[k + '_first_s']:.1f}" if k + "_s" in r else "-" for k in VARIANTS)
        lines.append(f"| {r['batch']} | {rate('fp32')} | " + " | ".join(cells) + f" | {firsts} |")
    lines += ["", "Streaming rollout (fp32, eager): median ms of an ordinary step and of a segment-closing "
              f"step, and steps/s = batch / mean step time, over two whole segment cycles; {ROUNDS} rounds: "
              "medians (min-max).", "",
              "| batch | ordinary step ms | closing step ms | steps/s |", "|---|---|---|---|", *rollout, ""]
    text = "\n".join(lines)
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
