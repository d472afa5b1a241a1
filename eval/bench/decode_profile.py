"""Where a streaming policy step's time goes, beside the floors of its memory reads and arithmetic.

    python -m eval.bench.decode_profile [--threads 2] [--cycles 4] [--repeats 3]
                                        [--out results/decode_profile.md]

The goals of results/performance.md sit at two sizes: the T-Maze model at batch 100 (100
episodes at T = 9600 within 10 s, so about 1 ms per step) and the RATE run script's size (10
layers, heads of 32, K = 50, m = 15) at batch 64 (the segment-closing step within 2x an ordinary
one, and 50x the reference procedure over whole segment cycles).  For each, this page measures
ordinary steps and segment-closing steps of the streaming policy apart (medians over the steps of
``--cycles`` segment cycles after the first segment, ``--repeats`` times), and sets beside them:

- the key/value bytes the step reads (every layer's filled slots, keys and values, counted on the
  tensors the attention reads) at this machine's memory read bandwidth (the sum of a 256 MiB
  float32 tensor, best of 5, the higher of a reading before and one after the measurements): no
  fp32 step can read them faster;
- the step's matmul FLOPs (torch.utils.flop_counter) at the fp32 GEMM peak (a 2048^3 matmul);
- its operator calls (torch.profiler), and the operators that take most of its time, with their
  calls per step: the time a step spends beyond both floors is per-operator cost.

The models are untrained (weights do not change the time); observations are random, rewards 0.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.flop_counter import FlopCounterMode

from eval.bench.rollout import REFERENCE_SIZE, tmaze_model
from eval.bench.throughput import generated_by, in_turn, matmul_peak
from rate.cli.records import machine_info
from rate.cli.run import unwritable
from rate.config import atomic_write_text
from rate.core.kv_buffer import KVPages
from rate.rl.policy import SegmentRecomputePolicy, StreamingPolicy
from rate.training import positive_int, setup_process

# (label, segment steps K, memory tokens m, extra config overrides, batch)
SIZES = [("T-Maze CPU (2 layers, d_model 64)", 10, 5, [], 100),
         ("reference size (10 layers, heads of 32)", 50, 15, REFERENCE_SIZE, 64)]
TOP_OPERATORS = 8


def read_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """GB/s of reading a ``megabytes`` float32 tensor once (its sum; best of ``repeats``)."""
    x = torch.ones(megabytes * (1 << 20) // 4)
    x.sum()  # touch the pages once
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - start)
    return x.numel() * 4 / best / 1e9


class KVBytes:
    """Counts the key/value bytes the attention reads (KVPages.content_scores and .read), while
    active: ``with counter: ...``."""

    def __init__(self):
        self.total = 0

    def __enter__(self):
        self._scores, self._read = KVPages.content_scores, KVPages.read
        counter = self

        def content_scores(kv, q):
            counter.total += kv.keys.numel() * kv.keys.element_size()
            return counter._scores(kv, q)

        def read(kv, weights):
            counter.total += kv.values.numel() * kv.values.element_size()
            return counter._read(kv, weights)

        KVPages.content_scores, KVPages.read = content_scores, read
        return self

    def __exit__(self, *exc):
        KVPages.content_scores, KVPages.read = self._scores, self._read


def step_kinds(k: int, cycles: int) -> list[str]:
    """The kind of each policy step: the first segment's K steps ("first": not measured), then
    ``cycles`` whole segment cycles, each a "closing" step (t = K, 2K, ...: the previous action
    ends the segment, its write block, the memory update and the next read block run) and K - 1
    "ordinary" ones."""
    return ["first" if t < k else "closing" if t % k == 0 else "ordinary" for t in range(k * (cycles + 1))]


def measure(model, batch: int, cycles: int, repeats: int) -> dict:
    """Per kind of step ("ordinary", "closing"): median ms over the steps and repeats (with min
    and max of the repeats' medians), mean key/value bytes, matmul FLOPs and operator calls per
    step (those made from Python; the operators they call inside are not counted), and the
    operators' self CPU time per step.  "cycle": mean ms per step over whole segment cycles, of
    the streaming policy and of the reference procedure (SegmentRecomputePolicy), each the median
    of ``repeats`` runs alternated with the other's (with their min and max)."""
    k = model.cfg.segment_steps
    kinds = step_kinds(k, cycles)
    rng = np.random.default_rng(0)
    observations = [rng.standard_normal((batch, *model.cfg.obs_shape)).astype(np.float32) for _ in kinds]
    reward = np.zeros(batch, dtype=np.float32)

    def play(policy, each=None) -> dict[str, list[float]]:
        """Seconds per step by kind; ``each(kind)``: a context manager around every step."""
        policy.reset(batch)
        times = defaultdict(list)
        for t, (kind, obs) in enumerate(zip(kinds, observations)):
            with each(kind) if each is not None else contextlib.nullcontext():
                start = time.perf_counter()
                policy.act(obs, None if t == 0 else reward)
                times[kind].append(time.perf_counter() - start)
        return times

    policy, recompute = StreamingPolicy(model, 1.0), SegmentRecomputePolicy(model, 1.0)
    medians: dict[str, list[float]] = defaultdict(list)
    for repeat in range(repeats):  # the two alternated, first one then the other: drift hits both alike
        for streaming in in_turn((True, False), repeat):
            times = play(policy if streaming else recompute)
            cycle = 1e3 * statistics.fmean(times["ordinary"] + times["closing"])
            if not streaming:
                medians["reference"].append(cycle)
                continue
            for kind in ("ordinary", "closing"):
                medians[kind].append(1e3 * statistics.median(times[kind]))
            medians["cycle"].append(cycle)
    # Counted in a pass of their own, then profiled in another (the counters cost time, and the
    # flop counter's dispatch mode would show in the profile).
    counts = {kind: defaultdict(list) for kind in ("ordinary", "closing", "first")}

    @contextlib.contextmanager
    def counted(kind):
        with KVBytes() as kv, FlopCounterMode(display=False) as flops:
            yield
        counts[kind]["bytes"].append(kv.total)
        counts[kind]["flops"].append(flops.get_total_flops())

    required = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)  # (the flop counter's module hooks want no gradients under inference_mode)
    try:
        play(policy, counted)
    finally:
        for p, r in zip(model.parameters(), required):
            p.requires_grad_(r)
    # One profiler over the pass, each step a labelled range (a profiler started per step charges
    # its start-up to the step's first operator).
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        play(policy, lambda kind: record_function(f"step {kind}"))
    for event in prof.events():
        if not event.name.startswith("step "):
            continue
        kind, ops = event.name.removeprefix("step "), [e for e in _descendants(event) if e.name.startswith("aten::")]
        counts[kind]["calls"].append(sum(1 for e in event.cpu_children if e.name.startswith("aten::")))
        for e in ops:
            counts[kind]["op " + e.name].append(e.self_cpu_time_total)
    out = {}
    for kind in ("ordinary", "closing"):
        c, steps = counts[kind], kinds.count(kind)
        ops = {name[3:]: sum(values) for name, values in c.items() if name.startswith("op ")}
        total = sum(ops.values())
        top = sorted(ops, key=ops.get, reverse=True)[:TOP_OPERATORS]
        out[kind] = {"ms": statistics.median(medians[kind]), "ms_min": min(medians[kind]), "ms_max": max(medians[kind]),
                     "bytes": statistics.fmean(c["bytes"]), "flops": statistics.fmean(c["flops"]),
                     "calls": statistics.fmean(c["calls"]),
                     "top": [(name, ops[name] / total, len(c["op " + name]) / steps, ops[name] / len(c["op " + name]))
                             for name in top]}
    out["cycle"] = {"ms": statistics.median(medians["cycle"]), "ms_min": min(medians["cycle"]),
                    "ms_max": max(medians["cycle"]), "reference_ms": statistics.median(medians["reference"]),
                    "reference_min": min(medians["reference"]), "reference_max": max(medians["reference"]),
                    "steps": {kind: kinds.count(kind) for kind in ("ordinary", "closing")}}
    return out


def _descendants(event) -> list:
    """Every profiler event below ``event`` (its children, theirs, ...)."""
    out, todo = [], list(event.cpu_children)
    while todo:
        e = todo.pop()
        out.append(e)
        todo.extend(e.cpu_children)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench.decode_profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--cycles", type=positive_int, default=4, help="segment cycles measured after the first")
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results/decode_profile.md"))
    args = parser.parse_args(argv)
    if (status := unwritable(args.out)) is not None:
        return status
    setup_process(0, args.threads)
    info = machine_info()
    bandwidth_before, peak = read_bandwidth(), matmul_peak(2.0) / 1e9
    results = {label: measure(tmaze_model(k, m, extra).eval(), batch, args.cycles, args.repeats)
               for label, k, m, extra, batch in SIZES}
    bandwidth_after = read_bandwidth()
    bandwidth = max(bandwidth_before, bandwidth_after)  # (the fastest reading: a floor no step beats)
    lines = ["# Where a streaming step's time goes", "",
             generated_by("eval.bench.decode_profile", argv, info, args.threads)
             + " Step times: medians over the steps of "
             f"{args.cycles} segment cycles (after the first segment), {args.repeats} repeats: the median of the repeats' "
             f"medians (min-max). Memory read bandwidth {bandwidth:.1f} GB/s (the higher of a 256 MiB sum before and "
             f"after the measurements: {bandwidth_before:.1f} and {bandwidth_after:.1f} GB/s), fp32 GEMM peak "
             f"{peak:.0f} GFLOP/s (a 2048^3 "
             "matmul). Key/value bytes: what the attention reads of every layer's buffer (the filled slots rounded "
             "up to 16, keys and values); floors: those bytes at the read bandwidth, the step's matmul FLOPs at "
             "the GEMM peak.", "",
             "| model | batch | step | ms per step (min-max) | key/value MB | read floor ms | MFLOP | GEMM floor ms "
             "| operator calls | ms / larger floor |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (label, k, m, _, batch), result in zip(SIZES, results.values()):
        for kind in ("ordinary", "closing"):
            r = result[kind]
            read_ms, gemm_ms = r["bytes"] / bandwidth / 1e6, r["flops"] / peak / 1e6
            lines.append(f"| {label}, K {k}, m {m} | {batch} | {kind} | {r['ms']:.2f} ({r['ms_min']:.2f}-"
                         f"{r['ms_max']:.2f}) | {r['bytes'] / 1e6:.1f} | {read_ms:.2f} | {r['flops'] / 1e6:.1f} | "
                         f"{gemm_ms:.2f} | {r['calls']:.0f} | {r['ms'] / max(read_ms, gemm_ms):.1f}x |")
    lines += ["", "Over whole segment cycles (closing steps included): the streaming policy's mean step, the RATE "
              "reference procedure's (re-run the segment every step; the same steps), each the median (min-max) of "
              f"{args.repeats} runs alternated with the other's, and the floors' mean over the cycle's steps (each "
              "step's larger floor).", "",
              "| model | batch | streaming ms/step | reference ms/step | speed-up | floor ms/step | speed-up at the "
              "floor | closing / ordinary | closing / ordinary at their floors |", "|---|---|---|---|---|---|---|---|---|"]
    for (label, k, m, _, batch), result in zip(SIZES, results.values()):
        floor = {kind: max(result[kind]["bytes"] / bandwidth, result[kind]["flops"] / peak) / 1e6
                 for kind in ("ordinary", "closing")}
        steps = result["cycle"]["steps"]
        cycle_floor = sum(floor[kind] * n for kind, n in steps.items()) / sum(steps.values())
        streaming, reference = result["cycle"]["ms"], result["cycle"]["reference_ms"]
        c = result["cycle"]
        lines.append(f"| {label}, K {k}, m {m} | {batch} | {streaming:.2f} ({c['ms_min']:.2f}-{c['ms_max']:.2f}) | "
                     f"{reference:.1f} ({c['reference_min']:.1f}-{c['reference_max']:.1f}) | "
                     f"{reference / streaming:.1f}x | {cycle_floor:.2f} | {reference / cycle_floor:.1f}x | "
                     f"{result['closing']['ms'] / result['ordinary']['ms']:.1f}x | "
                     f"{floor['closing'] / floor['ordinary']:.1f}x |")
    for (label, k, m, _, batch), result in zip(SIZES, results.values()):
        for kind in ("ordinary", "closing"):
            lines += ["", f"## {label}, K {k}, m {m}, batch {batch}: the {kind} step's operators", "",
                      "| operator | share of the step's operator time | calls per step | us per call |",
                      "|---|---|---|---|"]
            lines += [f"| `{name}` | {100 * share:.1f}% | {calls:.1f} | {us:.0f} |"
                      for name, share, calls, us in result[kind]["top"]]
    text = "\n".join(lines) + "\n"
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
