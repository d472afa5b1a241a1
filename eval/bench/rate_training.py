"""Training-throughput benchmark of RATE: tokens/s, FLOP/s against the matmul peak, memory, profile.

    python -m eval.bench.rate_training [--threads 2] [--seconds 4] [--out results/performance_training.md]

Each configuration runs in its own child process (so that its peak resident memory is its own):
a full training step (forward over N segments with full BPTT, cross-entropy, backward, AdamW)
on random T-Maze-shaped windows.  Reported side by side from one run:

* tokens per second (3 tokens per step: return, observation, action; memory tokens not counted);
* FLOPs per step counted by ``torch.utils.flop_counter`` (matmuls and attention) in the gathered
  form on its bias path, less the positional products it discards (its positional matmul scores all Q + K - 1
  distances of the table, of which the attention reads Q x K), and the achieved FLOP/s as a
  fraction of the fp32 matmul peak (a 2048^3 GEMM, as results/performance.md and the reference
  file measure it) measured in the same child just before;
* peak resident memory of the child (``ru_maxrss``) and its growth from the child's start (after
  its imports) to the end of the timed steps: the model, optimiser state, activations, and the
  matmul-peak buffers;
* for the reference run-script size, a torch.profiler table of where the self CPU time goes and
  the share spent in layout copies (copy_, clone, contiguous, cat, stack);
* the Transformer-XL positional term as one GEMM per head against the broadcast matmul, at the
  training shapes of each configuration (the model uses the GEMM per head only when decoding);
* seconds per training step with the positional scores gathered (against the distances, read as
  a window) or factored into query and key features (rate/core/attention.py), side by side over
  FORM_ROUNDS rounds in alternating order, and which of the two the model takes; where fp32 CPU
  training takes the gathered form on its explicit path (a kept softmax in pieces), also on the
  bias path it takes elsewhere;
* each configuration in pairs of children, one keeping freed memory (``train.keep_freed_memory``,
  rate/host_memory.py), one with the default allocator, in alternating order over two rounds:
  tokens/s, share of the matmul peak and peak memory of both, and the ratio per pair.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import resource
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from eval.bench.throughput import (PEAK_SIZE, form_counting_methods, generated_by, in_turn, matmul_peak, run_children,
                                   spread, timed)
from rate.core import attention
from rate.core.attention import RelativeMultiHeadAttention
from rate.config import atomic_write_text
from rate.rl.model import RATEConfig, RATEModel
from rate.cli.records import machine_info
from rate.cli.run import unwritable
from rate.core.rmt import RMTConfig
from rate.host_memory import keep_freed_memory
from rate.training import positive_float, positive_int


@dataclass
class Size:
    name: str
    d_model: int
    n_layers: int
    n_heads: int
    d_head: int
    use_ffn: bool
    mem: int
    K: int
    N: int
    batch: int
    mem_len: int = 0  # Transformer-XL cache, in tokens


SIZES = [
    # configs/tmaze/rate.yaml (the CPU configuration that make run trains).
    Size("tmaze-cpu", 64, 2, 4, 16, False, 5, 10, 9, 64),
    # The RATE reference run script for T-Maze's sizes (without its dropout 0.2, gradient clipping and
    # warm-up, as every size here: results/performance_official.md trains that config in full).
    Size("reference-script", 64, 10, 4, 32, False, 15, 50, 3, 128),
    # Wider models (the 25 % goal is stated for d_model >= 128).
    Size("d128-L4-ffn", 128, 4, 4, 32, True, 10, 30, 3, 64),
    Size("d256-L4-ffn", 256, 4, 8, 32, True, 10, 30, 3, 64),
    # Long segments: configs/popgym/rate.yaml at RepeatFirstMedium's T = 415 (K = 139, cache T).
    Size("popgym-long", 64, 3, 4, 16, False, 10, 139, 3, 64, mem_len=415),
]
AUTOMATIC_THRESHOLD = attention.FACTORED_MIN_ELEMENTS_PER_CHANNEL
AUTOMATIC_WINDOW = attention.EXPLICIT_MIN_SCORES
PAIR_ROUNDS = 2  # rounds of the default/kept pairs (alternating which runs first)
FORM_ROUNDS = 3  # rounds of the two positional forms in one child (alternating which runs first)
COPY_OPS = ("aten::copy_", "aten::clone", "aten::contiguous", "aten::cat", "aten::stack")


def build(size: Size) -> RATEModel:
    backbone = RMTConfig(d_model=size.d_model, n_layers=size.n_layers, n_heads=size.n_heads, d_head=size.d_head,
                         d_inner=4 * size.d_model, use_ffn=size.use_ffn, num_mem_tokens=size.mem,
                         memory_update="mrv", mrv_heads=2, bptt_depth=-1, mem_len=size.mem_len)
    return RATEModel(RATEConfig(backbone=backbone, segment_steps=size.K, num_segments=size.N, obs_shape=[4]))


def training_step(size: Size):
    """The model of ``size`` and one full training step of it (forward over N segments with full
    BPTT, cross-entropy, backward, AdamW) on fixed random T-Maze-shaped windows."""
    torch.manual_seed(0)
    model = build(size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    t = size.K * size.N
    obs, actions = torch.randn(size.batch, t, 4), torch.randint(0, 4, (size.batch, t))
    rtg, valid = torch.rand(size.batch, t, 1), torch.ones(size.batch, t, dtype=torch.bool)

    def step():
        out, _ = model(obs, actions, rtg, valid)
        loss = model.head.loss(out, actions, valid)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return model, step


def positional_fix(size: Size, seconds: float) -> dict[str, dict[str, list[float]]]:
    """Seconds per call of the positional term, a matmul that broadcasts the table over the batch
    ("broadcast") and one GEMM per head ("per head"), at this size's training shapes (the segment's
    Q rows against its Q + cache keys: Q + K - 1 distances) and at a decoding step's (3 new rows
    against the whole frame), over FORM_ROUNDS rounds, the order reversed every other round:
    {"training" or "decoding": {form: [seconds per round]}}."""
    b, h, dh = size.batch, size.n_heads, size.d_head
    q_train = 3 * size.K + 2 * size.mem
    out = {}
    for shape, q_len in (("training", q_train), ("decoding", 3)):
        r_len = q_len + (q_train + size.mem_len) - 1
        q, r = torch.randn(b, h, q_len, dh), torch.randn(h, r_len, dh)
        forms = {"broadcast": lambda: torch.matmul(q, r.transpose(-1, -2)),
                 "per head": lambda: torch.matmul(q.transpose(0, 1).reshape(h, b * q_len, dh), r.transpose(-1, -2))
                 .view(h, b, q_len, r_len).transpose(0, 1)}
        times: dict[str, list[float]] = {name: [] for name in forms}
        for i in range(FORM_ROUNDS):
            for name in in_turn(forms, i):
                times[name].append(timed(forms[name], seconds / (4 * FORM_ROUNDS)))
        out[shape] = times
    return out


@contextlib.contextmanager
def discarded_positional_flops():
    """While active, [FLOPs] of the gathered form's positional matmuls that the attention does
    not read, forward and backward: (q + v) R^T scores every distance of the table, Q + K - 1 of
    them, and the gather keeps Q x K; the matmul and its two gradient matmuls each compute
    2 B H Q (R - K) d_head products too many."""
    total, full = [0], RelativeMultiHeadAttention._full

    def counting(self, q, k, v, positions, mask_bias):
        if not self._factored_pays(positions, q.shape[0], q.shape[2], k.shape[2]):
            b, h, q_len, dh = q.shape
            total[0] += 3 * 2 * b * h * q_len * (positions.table.shape[0] - k.shape[2]) * dh
        return full(self, q, k, v, positions, mask_bias)

    RelativeMultiHeadAttention._full = counting
    try:
        yield total
    finally:
        RelativeMultiHeadAttention._full = full


def run_one(size: Size, seconds: float, profile: bool) -> dict:
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = matmul_peak(seconds, PEAK_SIZE)
    model, step = training_step(size)
    t = size.K * size.N

    # Which form of the positional scores the automatic rule takes at this size (a first step,
    # counted), then the forms timed side by side over FORM_ROUNDS rounds, the order reversed
    # every other round: that form first in the first round, so that the peak resident memory
    # after it is its own (ru_maxrss only grows; another form's column is the largest of the
    # peaks until its first round).  Factored: the fused kernel's path or fp32 CPU training's
    # explicit one; gathered: the bias path, or in fp32 CPU training with scores enough the
    # explicit path reading its positional scores as a window ("window"; where the gathered
    # arm took it, the bias path is timed too, as the "bias" arm, last in the first round).
    # FLOPs are counted after the rounds, in the gathered form on its bias path (the model's
    # arithmetic), so neither the factored form's wider heads nor the window path's pieces count
    # as more or less work done.
    arm = ["automatic"]
    taken = {name: {"factored": 0, "window": 0} for name in ("automatic", "gathered", "factored", "bias")}
    originals = {name: getattr(RelativeMultiHeadAttention, name) for name in ("_factored_attention", "_explicit_attention")}

    def record(form: str):  # the form a call of this arm took: "factored" or "window"
        taken[arm[0]][form] += 1

    # (factored threshold, explicit window threshold) per arm
    thresholds = {"factored": (0, AUTOMATIC_WINDOW), "gathered": (math.inf, AUTOMATIC_WINDOW),
                  "bias": (math.inf, math.inf)}
    per_form, peak_mb = {form: [] for form in thresholds}, {}
    try:
        for name, method in form_counting_methods(record).items():
            setattr(RelativeMultiHeadAttention, name, method)
        attention.FACTORED_MIN_ELEMENTS_PER_CHANNEL, attention.EXPLICIT_MIN_SCORES = AUTOMATIC_THRESHOLD, AUTOMATIC_WINDOW
        step()
        automatic = "factored" if taken["automatic"]["factored"] else "gathered"
        order = [automatic, *(f for f in ("gathered", "factored") if f != automatic), "bias"]
        for r in range(FORM_ROUNDS):
            for form in in_turn(order, r):
                if form == "bias" and not taken["gathered"]["window"]:
                    continue  # (the gathered arm is on the bias path itself)
                arm[0] = form
                attention.FACTORED_MIN_ELEMENTS_PER_CHANNEL, attention.EXPLICIT_MIN_SCORES = thresholds[form]
                per_form[form].append(timed(step, seconds, warmup=2 if r == 0 else 1))
                peak_mb.setdefault(form, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        attention.FACTORED_MIN_ELEMENTS_PER_CHANNEL, attention.EXPLICIT_MIN_SCORES = thresholds["bias"]
        with FlopCounterMode(display=False) as counter, discarded_positional_flops() as discarded:
            step()
        flops = counter.get_total_flops() - discarded[0]
        # What the form the model takes multiplies: the explicit path leaves out the masked ends of
        # causal rows, the factored form scores over heads d_model channels wider.
        attention.FACTORED_MIN_ELEMENTS_PER_CHANNEL, attention.EXPLICIT_MIN_SCORES = AUTOMATIC_THRESHOLD, AUTOMATIC_WINDOW
        with FlopCounterMode(display=False) as counter:
            step()
        executed = counter.get_total_flops()
    finally:
        for name, method in originals.items():
            setattr(RelativeMultiHeadAttention, name, method)
        attention.FACTORED_MIN_ELEMENTS_PER_CHANNEL = AUTOMATIC_THRESHOLD
        attention.EXPLICIT_MIN_SCORES = AUTOMATIC_WINDOW
    window = bool(taken["gathered"]["window"])
    rounds_s = per_form[automatic]  # (the form the model takes)
    seconds_per_step = statistics.median(rounds_s)
    result = {"name": size.name, "form": automatic, "gathered_s": statistics.median(per_form["gathered"]),
              "factored_s": statistics.median(per_form["factored"]), "factored_peak_mb": peak_mb["factored"],
              "gathered_peak_mb": peak_mb["gathered"], "window": window,
              "bias_s": statistics.median(per_form["bias"]) if window else None, "bias_peak_mb": peak_mb.get("bias"),
              "bias_ratios": [b / g for b, g in zip(per_form["bias"], per_form["gathered"], strict=True)]
              if window else None,
              "form_ratios": [g / f for g, f in zip(per_form["gathered"], per_form["factored"], strict=True)],
              "params": sum(p.numel() for p in model.parameters()),
              "tokens_per_s": 3 * size.batch * t / seconds_per_step, "gflop_per_step": flops / 1e9,
              "gflops": flops / seconds_per_step / 1e9, "peak_gflops": peak / 1e9,
              "executed_gflop_per_step": executed / 1e9, "executed_gflops": executed / seconds_per_step / 1e9,
              "rss_peak_mb": peak_mb[automatic], "rss_growth_mb": peak_mb[automatic] - rss_start / 1024,
              # (the rounds of the form the model takes: their slowest and fastest)
              "tokens_per_s_range": [3 * size.batch * t / s for s in (max(rounds_s), min(rounds_s))],
              "gflops_range": [flops / s / 1e9 for s in (max(rounds_s), min(rounds_s))]}
    result["positional"] = positional_fix(size, seconds)
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                step()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
        result["profile"] = [(e.key, e.self_cpu_time_total / total, e.count // 3) for e in top]
        result["copy_share"] = sum(e.self_cpu_time_total for e in events if e.key in COPY_OPS) / total
    return result


def run_kept(size: Size, seconds: float, keep: bool = True) -> dict:
    """The training step of ``size`` (the positional form the model takes) with freed memory kept
    (``keep``; else malloc's default, the pair's other half): seconds per step, the matmul peak
    measured in the same process, peak resident memory."""
    applied = keep_freed_memory() if keep else False
    peak = matmul_peak(seconds, PEAK_SIZE)
    model, step = training_step(size)
    t = size.K * size.N

    step()
    seconds_per_step = timed(step, seconds)
    return {"name": size.name, "applied": applied, "seconds_per_step": seconds_per_step,
            "tokens_per_s": 3 * size.batch * t / seconds_per_step, "peak_gflops": peak / 1e9,
            "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench.rate_training", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--seconds", type=positive_float, default=4.0)
    parser.add_argument("--out", type=Path, default=Path("results/performance_training.md"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child mode: one size, JSON on stdout
    args = parser.parse_args(argv)
    if not args.one and (status := unwritable(args.out)) is not None:  # (a child writes no page)
        return status
    torch.set_num_threads(args.threads)
    if args.one:
        name, _, malloc = args.one.partition(":")
        size = next(s for s in SIZES if s.name == name)
        print(json.dumps(run_kept(size, args.seconds, keep=malloc == "kept") if malloc else
                         run_one(size, args.seconds, profile=size.name == "reference-script")))
        return 0
    options = ["--threads", str(args.threads), "--seconds", str(args.seconds)]
    results = run_children("eval.bench.rate_training", [size.name for size in SIZES], options)
    # Freed memory kept or not: paired children per size, in alternating order over PAIR_ROUNDS
    # rounds, so that a machine slowing down between them shows in the range, not in the ratio.
    order = [(size.name, malloc) for r in range(PAIR_ROUNDS) for size in SIZES
             for malloc in in_turn(("default", "kept"), r)]
    paired = run_children("eval.bench.rate_training", [f"{name}:{malloc}" for name, malloc in order], options)
    pairs: dict[str, dict[str, list[dict]]] = {size.name: {"default": [], "kept": []} for size in SIZES}
    for (name, malloc), result in zip(order, paired, strict=True):
        pairs[name][malloc].append(result)
    info = machine_info()
    lines = ["# RATE training throughput", "",
             generated_by("eval.bench.rate_training", argv, info, args.threads)
             + " One training step = forward over N segments (full BPTT), loss, backward, AdamW "
             "(no dropout, no gradient clipping, at every size: the reference script's own config, dropout 0.2 and "
             "all, is timed on results/performance_official.md); "
             "tokens = 3 per step (memory tokens not counted); GFLOP: counted in the gathered form on its bias path, "
             "less the positional products it discards (Q + K - 1 distances scored, Q x K read): the model's arithmetic, "
             "the same for every form; executed: the matmul FLOPs of the form the model takes, all of them (nothing "
             "subtracted: the bias path's discarded positional products count; fp32 CPU training's explicit path "
             "leaves out the masked ends of causal score rows, the factored form scores over heads d_model channels "
             "wider); peak = fp32 2048^3 GEMM in "
             f"the same process.  Tokens/s, GFLOP/s and the shares of the peak: medians of the {FORM_ROUNDS} rounds "
             "of the form the model takes (the next table), their range in brackets.", "",
             "| config | d_model x layers, heads x d_head, FFN | m, K x N, batch, cache | params | scores | tokens/s | "
             "GFLOP/step | GFLOP/s | of matmul peak | executed GFLOP/step | executed, of matmul peak | "
             "peak RSS MiB (growth) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for size, r in zip(SIZES, results):
        lines.append(f"| {size.name} | {size.d_model} x {size.n_layers}, {size.n_heads} x {size.d_head}, "
                     f"{'yes' if size.use_ffn else 'no'} | {size.mem}, {size.K} x {size.N}, {size.batch}, {size.mem_len} | "
                     f"{r['params']} | {r['form']} | {r['tokens_per_s']:.0f} "
                     f"({r['tokens_per_s_range'][0]:.0f}-{r['tokens_per_s_range'][1]:.0f}) | "
                     f"{r['gflop_per_step']:.2f} | "
                     f"{r['gflops']:.1f} ({r['gflops_range'][0]:.1f}-{r['gflops_range'][1]:.1f}) | "
                     f"{r['gflops'] / r['peak_gflops']:.1%} ({r['gflops_range'][0] / r['peak_gflops']:.1%}-"
                     f"{r['gflops_range'][1] / r['peak_gflops']:.1%}) | {r['executed_gflop_per_step']:.2f} | "
                     f"{r['executed_gflops'] / r['peak_gflops']:.1%} | {r['rss_peak_mb']:.0f} "
                     f"({r['rss_growth_mb']:.0f}) |")
    lines += ["", "## Positional scores: gathered or factored, on the bias path or the explicit one", "",
              "Seconds per training step with each form of the Transformer-XL positional scores "
              f"(rate/core/attention.py), timed side by side in the same process over {FORM_ROUNDS} rounds, the "
              "order reversed every other round: medians of the rounds, their ratio, and the range of the rounds' own "
              "ratios.  Gathered: (q + v) R^T scored against the distances and read as a strided window of those "
              "scores (the name from before the model read a window rather than a gather: "
              "results/attention_forms.md), either made into a (B, H, Q, K) bias that the attention and its "
              "backward read (the bias path, RelativeMultiHeadAttention._full), or, in fp32 CPU training whose calls "
              f"have at least {AUTOMATIC_WINDOW:,} scores, on the explicit path: the attention written out around a "
              "kept softmax in pieces (_ExplicitSoftmaxAttention), each piece's positional scores against its own "
              "distances only ('window' in the 'gathered path' column; the bias path then timed too).  Factored: the same "
              "scores as query features d_model channels wide against key features shared by the batch, with no "
              "bias tensor (in this fp32 CPU training on the explicit path; elsewhere the fused kernel over heads "
              "d_model channels wider).  The model takes the factored form when a bias would hold at least "
              f"{AUTOMATIC_THRESHOLD:,} elements per channel of the widened heads (the 'scores' column above; the "
              "throughput and memory columns are for that form: its rounds' median time).  Peak RSS: the form the "
              "model takes runs first, so its column is its own; another form's column is the largest of the peaks "
              "until its first round.", "",
              "| config | elements per channel (full cache) | gathered path | gathered s/step | factored s/step | "
              "gathered / factored | gathered on the bias path s/step | bias path / explicit | "
              "peak RSS MiB gathered | peak RSS MiB factored | peak RSS MiB bias path |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for size, r in zip(SIZES, results):
        q_len = 3 * size.K + 2 * size.mem
        per_channel = size.batch * size.n_heads * q_len * (q_len + size.mem_len) / (size.d_head + size.d_model)
        bias = ((f"{r['bias_s']:.3f} | {r['bias_s'] / r['gathered_s']:.2f}x "
                 f"({min(r['bias_ratios']):.2f}-{max(r['bias_ratios']):.2f})") if r["bias_s"] is not None else "- | -")
        lines.append(f"| {size.name} | {per_channel:,.0f} | {'window' if r['window'] else 'bias'} | "
                     f"{r['gathered_s']:.3f} | {r['factored_s']:.3f} | {r['gathered_s'] / r['factored_s']:.2f}x "
                     f"({min(r['form_ratios']):.2f}-{max(r['form_ratios']):.2f}) | {bias} | "
                     f"{r['gathered_peak_mb']:.0f} | {r['factored_peak_mb']:.0f} | "
                     f"{'-' if r['bias_peak_mb'] is None else format(r['bias_peak_mb'], '.0f')} |")
    lines += ["", "## The positional term: broadcast matmul or one GEMM per head", "",
              "Transformer-XL's positional scores (q + v) R^T as a matmul that broadcasts R over the batch, or as "
              "one GEMM per head over all B x Q query rows.  rate/core/attention.py takes the GEMM per head when "
              "decoding.  Time per call at each size's training shape (the segment's rows against the segment and "
              "its cache) and at a decoding step's (3 new rows against the whole frame), over "
              f"{FORM_ROUNDS} rounds with the order reversed every other round: medians (min-max), the speed-up "
              "the ratio of the medians:", "",
              "| config | shape (B, H, Q, distances) | broadcast matmul ms | one GEMM per head ms | speed-up |",
              "|---|---|---|---|---|"]
    for size, r in zip(SIZES, results):
        q_train = 3 * size.K + 2 * size.mem
        for shape, times in r["positional"].items():
            q_len = q_train if shape == "training" else 3
            broadcast, per_head = ([1e3 * s for s in times[form]] for form in ("broadcast", "per head"))
            lines.append(f"| {r['name']}, {shape} | ({size.batch}, {size.n_heads}, {q_len}, "
                         f"{q_len + q_train + size.mem_len - 1}) | {spread(broadcast, '.3f')} | "
                         f"{spread(per_head, '.3f')} | "
                         f"{statistics.median(broadcast) / statistics.median(per_head):.1f}x |")
    applied = all(k["applied"] for p in pairs.values() for k in p["kept"])
    lines += ["", "## Freed memory kept (train.keep_freed_memory)", "",
              "Each configuration's step in a pair of children, one whose malloc keeps freed blocks for reuse instead "
              "of returning them to the kernel (rate/host_memory.py; "
              f"{'applied' if applied else 'NOT applied: no usable mallopt here'}) and one with malloc's default, "
              f"run one after the other in alternating order, {PAIR_ROUNDS} rounds: the positional form the model "
              "takes, GFLOP/step as counted above, each child's own matmul peak; medians over the rounds, the ratio "
              "per pair (min-max).", "",
              "| config | tokens/s default | tokens/s kept | kept / default (min-max) | of matmul peak default | "
              "of matmul peak kept | peak RSS MiB default | peak RSS MiB kept |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        d, k = pairs[r["name"]]["default"], pairs[r["name"]]["kept"]
        ratios = [b["tokens_per_s"] / a["tokens_per_s"] for a, b in zip(d, k, strict=True)]
        share = [statistics.median(r["gflop_per_step"] / x["seconds_per_step"] / x["peak_gflops"] for x in runs)
                 for runs in (d, k)]
        lines.append(f"| {r['name']} | {statistics.median(x['tokens_per_s'] for x in d):.0f} | "
                     f"{statistics.median(x['tokens_per_s'] for x in k):.0f} | {statistics.median(ratios):.2f}x "
                     f"({min(ratios):.2f}-{max(ratios):.2f}) | {share[0]:.1%} | {share[1]:.1%} | "
                     f"{statistics.median(x['rss_peak_mb'] for x in d):.0f} | "
                     f"{statistics.median(x['rss_peak_mb'] for x in k):.0f} |")
    ref = next(r for r in results if "profile" in r)
    lines += ["", "## Where the time goes (reference-script size, 3 training steps)", "",
              f"Layout copies ({', '.join(COPY_OPS)}) take {ref['copy_share']:.1%} of the self CPU time.", "",
              "| op | share of self CPU time | calls per step |", "|---|---|---|"]
    lines += [f"| `{name}` | {share:.1%} | {calls} |" for name, share, calls in ref["profile"]]
    text = "\n".join(lines) + "\n"
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
