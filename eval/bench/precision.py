"""bf16 autocast and torch.compile against fp32 eager: RATE training tokens/s, side by side.

    python -m eval.bench.precision [--threads 2] [--seconds 3] [--rounds 3] [--out results/performance_precision.md]

For each size (eval.bench.rate_training's shapes), one child process times a full training step
(forward over N segments with full BPTT, loss, backward, AdamW) four ways: fp32 eager, bf16
eager (``train.precision: bf16``: torch.autocast), fp32 compiled and bf16 compiled
(``train.compile: true``).  The compiled variants are timed after their compilation (warm-up
steps), whose seconds are reported on their own.  The variants take turns over ``--rounds``
rounds of about ``--seconds`` each (so drift of the machine hits them alike); the page gives the
medians over the rounds with min-max.  Also the largest logit difference of bf16
from fp32 on the same batch and weights, and whether the CPU has native bf16 (avx512_bf16 or
AMX): without it bf16 is emulated and slower.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from eval.bench.rate_training import SIZES, Size, build
from eval.bench.throughput import generated_by, in_turn, run_children, timed
from rate.cli.records import machine_info
from rate.cli.run import unwritable
from rate.training import positive_float, positive_int
from rate.config import atomic_write_text
from rate.machine import bf16_flags

BENCH_SIZES = ["tmaze-cpu", "d128-L4-ffn", "d256-L4-ffn"]
VARIANTS = [("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)]


def run_one(size: Size, seconds: float, device: str = "cpu", compiled: bool = True, rounds: int = 1) -> dict:
    """The four variants of one size on ``device`` (a CUDA step is timed to its end: synchronised);
    ``compiled`` False: the two eager ones only.  After each variant's first step, ``rounds`` rounds
    in which every variant is timed in turn, in reverse order every other round (median step over
    about ``seconds``): per variant
    "{key}_s" and "{key}_tokens_per_s", the medians over the rounds, "{key}_tokens_per_s_range"
    their (min, max), and "{key}_first_s"."""
    torch.manual_seed(0)
    model = build(size).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    t = size.K * size.N
    obs, actions = torch.randn(size.batch, t, 4, device=device), torch.randint(0, 4, (size.batch, t), device=device)
    rtg, valid = torch.rand(size.batch, t, 1, device=device), torch.ones(size.batch, t, dtype=torch.bool, device=device)
    kind = torch.device(device).type
    with torch.no_grad():
        model.eval()
        reference = model(obs, actions, rtg, valid)[0].float()
        with torch.autocast(kind, dtype=torch.bfloat16):
            low = model(obs, actions, rtg, valid)[0].float()
        model.train()
    result = {"name": size.name, "bf16_max_logit_diff": (low - reference).abs().max().item()}
    steps = {}
    for precision, compile_ in VARIANTS if compiled else VARIANTS[:2]:
        net = torch.compile(model) if compile_ else model

        def step(net=net, low_precision=precision == "bf16"):  # (bound now: the steps run after the loop)
            with torch.autocast(kind, dtype=torch.bfloat16, enabled=low_precision):
                out, _ = net(obs, actions, rtg, valid)
                loss = model.head.loss(out, actions, valid)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if kind == "cuda":
                torch.cuda.synchronize()

        key = f"{precision}{'_compiled' if compile_ else ''}"
        start = time.perf_counter()
        step()  # compiles the forward and backward graphs when compiled
        result[f"{key}_first_s"] = time.perf_counter() - start
        steps[key] = step
    times = {key: [] for key in steps}
    for r in range(rounds):
        for key in in_turn(steps, r):  # (the baseline not always first)
            times[key].append(timed(steps[key], seconds))
    for key, seconds_per_step in times.items():
        rates = [3 * size.batch * t / x for x in seconds_per_step]
        result[f"{key}_s"] = statistics.median(seconds_per_step)
        result[f"{key}_tokens_per_s"] = statistics.median(rates)
        result[f"{key}_tokens_per_s_range"] = (min(rates), max(rates))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench.precision", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--seconds", type=positive_float, default=3.0, help="seconds of steps per variant and round")
    parser.add_argument("--rounds", type=positive_int, default=3, help="rounds in which the variants take turns")
    parser.add_argument("--sizes", nargs="+", default=BENCH_SIZES, choices=[s.name for s in SIZES])
    parser.add_argument("--out", type=Path, default=Path("results/performance_precision.md"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child mode: one size, JSON on stdout
    args = parser.parse_args(argv)
    if not args.one and (status := unwritable(args.out)) is not None:  # (a child writes no page)
        return status
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(run_one(next(s for s in SIZES if s.name == args.one), args.seconds, rounds=args.rounds)))
        return 0
    results = run_children("eval.bench.precision", args.sizes, ["--threads", str(args.threads), "--seconds",
                                                                 str(args.seconds), "--rounds", str(args.rounds)])
    info = machine_info()
    lines = ["# RATE training: bf16 and torch.compile against fp32", "",
             generated_by("eval.bench.precision", argv, info, args.threads)
             + f" Native bf16 instructions: {'yes' if bf16_flags() else 'no'}. Training tokens/s "
             f"(3 per step) of one full step, four ways in one process per size, taking turns (in reverse order "
             "every other round) over "
             f"{args.rounds} rounds of "
             f"about {args.seconds:g} s: medians (min-max); speed-ups are ratios of the medians, against fp32 eager. "
             "First step: the seconds of the first step (compilation, for the compiled ones).", "",
             "| config | fp32 tokens/s | bf16 | fp32 compiled | bf16 compiled | first step s (fp32 / bf16 / "
             "compiled fp32 / compiled bf16) | bf16 max logit diff |", "|---|---|---|---|---|---|---|"]
    for r in results:
        base = r["fp32_tokens_per_s"]

        def spread(k):
            low, high = r[k + "_tokens_per_s_range"]
            return f"{r[k + '_tokens_per_s']:.0f} ({low:.0f}-{high:.0f})"

        cells = [f"{spread(k)}, {r[k + '_tokens_per_s'] / base:.2f}x" for k in ("bf16", "fp32_compiled", "bf16_compiled")]
        firsts = " / ".join(f"{r[k + '_first_s']:.1f}" for k in ("fp32", "bf16", "fp32_compiled", "bf16_compiled"))
        lines.append(f"| {r['name']} | {spread('fp32')} | " + " | ".join(cells) + f" | {firsts} | "
                     f"{r['bf16_max_logit_diff']:.3f} |")
    sizes = {s.name: s for s in SIZES}
    lines += ["", "Sizes (eval.bench.rate_training): " + "; ".join(
        f"{n}: d_model {sizes[n].d_model}, {sizes[n].n_layers} layers, m {sizes[n].mem}, K {sizes[n].K} x N "
        f"{sizes[n].N}, batch {sizes[n].batch}" for n in args.sizes) + "."]
    text = "\n".join(lines) + "\n"
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
