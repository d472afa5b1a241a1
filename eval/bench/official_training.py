"""RATE training against a re-creation of the official code's training step, side by side in one run.

    python -m eval.bench.official_training [--threads 2] [--batches 3] [--rounds 2]
                                           [--out results/performance_official.md]

At the official T-Maze run script's config (d_model 64, 10 layers, 4 heads of 32, no FFN, m = 15,
K = 50 x N = 3, batch 128, dropout 0.2, AdamW 3e-4, clip 1.0), each in its own child process (so
that its peak resident memory is its own), on the same synthetic T-Maze batch:

* reference: eval.bench.official_recreation, the official training step re-created (post-LN,
  einsum layouts, full score square then masked, per-segment detach and optimiser step,
  ``backward(retain_graph=True)``);
* the project's ``training_mode: official`` (the same truncation and per-segment steps);
* the project's full BPTT (one step per batch through all segments), and with
  ``checkpoint_segments`` (activation checkpointing per segment);
* both modes with ``checkpoint_attention`` (fp32 CPU training's explicit attention keeps no
  q, k, v for backward and projects them again there);
* full BPTT with ``train.keep_freed_memory`` (malloc keeps freed activations for the next batch
  instead of page-faulting them in again: faster, at a higher peak; rate/host_memory.py);
* the project's two modes with ``train.precision: bf16`` (autocast; the reference runs in fp32,
  as the official code does).

A child alone (``--one ROW --batches B``, JSON on stdout) also takes a row name + "_compile"
(``train.compile``: torch.compile of the model; the warm-up batch compiles), a probe that is no
row of the page: compiling takes minutes per child.

One warm-up batch, then ``--batches`` timed ones per child (median ms per batch); ``--rounds``
rounds, the second in reverse order (min and max over rounds).  Tokens = 3 per step of the
windows (memory tokens not counted).  Peak RSS: the child's ``ru_maxrss`` at its end.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import torch

from eval.bench.official_recreation import OfficialRATE, official_batch, official_optimizer, synthetic_tmaze
from eval.bench.throughput import generated_by, in_turn, run_children
from rate.cli.records import machine_info
from rate.cli.run import unwritable
from rate.training import positive_int
from rate.config import atomic_write_text

K, N, BATCH = 50, 3, 128
ROWS = {
    "reference": "official code re-created (per-segment detach + step, retain_graph)",
    "official": "project, training_mode official",
    "bptt": "project, full BPTT",
    "bptt_keep": "project, full BPTT, freed memory kept (train.keep_freed_memory)",
    "bptt_checkpoint": "project, full BPTT + checkpoint_segments",
    "official_attention": "project, training_mode official + checkpoint_attention",
    "bptt_attention": "project, full BPTT + checkpoint_attention",
    "official_bf16": "project, training_mode official, bf16 autocast (train.precision)",
    "bptt_bf16": "project, full BPTT, bf16 autocast (train.precision)",
}


def project_step(mode: str):
    """The project's RATE at the run script's config and one batch function of ``mode`` (a row
    name: official, bptt, bptt_checkpoint, or one of the first two + "_bf16", "_keep" or
    "_attention"; any of them + "_compile")."""
    from rate.core.rmt import RMTConfig
    from rate.rl.experiment import RATEExperimentConfig
    from rate.rl.model import RATEConfig, RATEModel
    from rate.rl.trainer import train_step
    from rate.training import TrainConfig, TrainingLoop, compiled

    compile_, mode = mode.endswith("_compile"), mode.removesuffix("_compile")
    bf16, mode = mode.endswith("_bf16"), mode.removesuffix("_bf16")
    keep, mode = mode.endswith("_keep"), mode.removesuffix("_keep")
    narrow, mode = mode.endswith("_attention"), mode.removesuffix("_attention")
    backbone = RMTConfig(d_model=64, n_layers=10, n_heads=4, d_head=32, d_inner=32, use_ffn=False,
                         num_mem_tokens=15, memory_update="mrv", mrv_heads=2, mrv_activation="relu", dropout=0.2,
                         bptt_depth=-1, checkpoint_segments=mode == "bptt_checkpoint",
                         checkpoint_attention=narrow)
    cfg = RATEExperimentConfig(model=RATEConfig(backbone=backbone, segment_steps=K, num_segments=N, obs_shape=[4],
                                                act_dim=4),
                               training_mode="official" if mode == "official" else "bptt",
                               train=TrainConfig(lr=3e-4, warmup_steps=1000, grad_clip=1.0, batch_size=BATCH,
                                                 precision="bf16" if bf16 else "fp32", compile=compile_,
                                                 keep_freed_memory=keep))
    model = RATEModel(cfg.model).train()
    net = compiled(model, cfg.train)
    loop = TrainingLoop(model, cfg.train, progress=False)

    def run(obs, actions, rtg, valid):
        padded = actions.masked_fill(~valid, model.cfg.action_pad)
        train_step(net, model, cfg, {"obs": obs, "actions": padded, "rtg": rtg, "valid": valid}, loop)
        loop.sched.step()

    return model, run


def run_one(name: str, batches: int) -> dict:
    torch.manual_seed(0)
    obs, actions, rtg, valid = synthetic_tmaze(BATCH, K, N, torch.Generator().manual_seed(0))
    if name == "reference":
        model = OfficialRATE().train()
        opt, sched = official_optimizer(model)

        def step():
            official_batch(model, opt, sched, obs, actions, rtg, K)
    else:
        model, run = project_step(name)

        def step():
            run(obs, actions, rtg, valid.bool())
    times = []
    for i in range(batches + 1):  # the first is the warm-up
        start = time.perf_counter()
        step()
        if i:
            times.append(time.perf_counter() - start)
    return {"name": name, "params": sum(p.numel() for p in model.parameters()), "ms": 1e3 * statistics.median(times),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench.official_training", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--batches", type=positive_int, default=3, help="timed batches per child, after one warm-up")
    parser.add_argument("--rounds", type=positive_int, default=2, help="rounds of all rows, every other in reverse order")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--out", type=Path, default=Path("results/performance_official.md"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child mode: one row, JSON on stdout
    args = parser.parse_args(argv)
    if args.one and args.one.removesuffix("_compile") not in ROWS:  # (a typo would train full BPTT under its name)
        parser.error(f"--one {args.one}: not a row ({', '.join(ROWS)}, each may end in _compile)")
    if not args.one and (status := unwritable(args.out)) is not None:  # (a child writes no page)
        return status
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(run_one(args.one, args.batches)))
        return 0
    results: dict[str, list[dict]] = {name: [] for name in args.rows}
    for round_ in range(args.rounds):
        order = in_turn(args.rows, round_)
        for r in run_children("eval.bench.official_training", order,
                              ["--threads", str(args.threads), "--batches", str(args.batches)]):
            results[r["name"]].append(r)
    info = machine_info()
    tokens = 3 * K * N * BATCH
    reference = "reference" in results
    lines = ["# RATE training against the official training step", "",
             generated_by("eval.bench.official_training", argv, info, args.threads) + f" The official T-Maze run "
             f"script's config (d_model 64, 10 layers, 4 heads of 32, no FFN, m 15, K {K} x N {N}, batch {BATCH}, "
             f"dropout 0.2), one synthetic T-Maze batch ({tokens:,} tokens), each row in its own process: one "
             f"warm-up batch and {args.batches} timed, median ms per batch; {args.rounds} round(s), every other in "
             "reverse order (min-max over rounds). Speed-up: tokens/s against the reference row within each round "
             "(side by side), the median over rounds (min-max).",
             "", "| implementation | params | ms per batch (min-max) | tokens/s | vs reference (min-max) | "
             "peak RSS MiB "
             "(min-max) |", "|---|---|---|---|---|---|"]
    for name, runs in results.items():
        ms = [r["ms"] for r in runs]
        rss = [r["peak_rss_mb"] for r in runs]
        median = statistics.median(ms)
        if reference:
            ratios = [ref["ms"] / r["ms"] for ref, r in zip(results["reference"], runs)]  # round by round
            ratio = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
        else:
            ratio = "-"
        lines.append(f"| {ROWS[name]} | {runs[0]['params']:,} | {median:,.0f} ({min(ms):,.0f}-{max(ms):,.0f}) | "
                     f"{tokens / median * 1e3:,.0f} | {ratio} | {statistics.median(rss):,.0f} "
                     f"({min(rss):,.0f}-{max(rss):,.0f}) |")
    notes = Path("results/performance_official_notes.md")
    text = "\n".join(lines) + "\n" + ("\n" + notes.read_text() if notes.is_file() and args.out.name ==
                                      "performance_official.md" else "")
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
