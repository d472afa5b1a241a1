"""Key/value buffer layouts for the streaming step's attention, measured side by side.

    python -m eval.bench.kv_layouts [--threads 2] [--out results/kv_layouts.md]

At batch 64 a decoding step spends most of its time reading each layer's key/value buffer
(rate/core/streaming.py).  This benchmark isolates that read: the attention of 3 new query rows over
the first U filled slots of every layer, U growing by one environment step (3 tokens) at a time
over a whole segment, at the reference run script's size (10 layers, 4 heads of 32, K = 50,
m = 15, no cache: W = 165 slots).  The layouts compared are in ``LAYOUTS``; every one computes
softmax(q k^T + bias) v with the same shapes, and the table gives the time per step (all layers)
and the ratio to the flat prefix view.  This comparison moved the decoder to pages on one
machine, and later, once the transposed keys were added to it, back to a flat buffer with
transposed keys (rate/core/kv_buffer.py), the fastest on the 2-core AMD EPYC of that week; the
machine changes from week to week, so rerun it before moving again.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch

from eval.bench.throughput import generated_by, in_turn, spread
from rate.config import atomic_write_text
from rate.cli.records import machine_info
from rate.cli.run import unwritable
from rate.training import positive_int, setup_process

BATCH, HEADS, D_HEAD, LAYERS, QUERIES = 64, 4, 32, 10, 3
SLOTS = 15 + 3 * 50  # read memory + a segment of 50 steps (3 tokens each)
PAGE = 32
LAYOUTS = {
    "prefix": "view of the first U slots of a flat (B, H, W, dh) buffer (rate/core/streaming.py before pages)",
    "dense": "contiguous buffers of exactly U slots, keys not transposed (copies of the prefix: what the prefix "
             "view reads, without its strides)",
    "paged": f"{PAGE}-slot pages (W / {PAGE}, B, H, {PAGE}, dh): the used pages are one dense region "
             "(rate/core/streaming.py's page_slots option)",
    "bf16": "prefix view of a bfloat16 buffer (half the bytes; not exact)",
    "keys transposed": "keys stored (B, H, dh, W), values (B, H, W, dh): q k^T reads the first U columns of each "
                       "key block as a plain matrix (no transposed view; rate/core/streaming.py's default layout)",
    "paged, keys transposed": f"{PAGE}-slot pages with keys stored (P, B, H, dh, {PAGE})",
}


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """q (B, H, Q, dh), k and v (B, H, U, dh), bias (B, H, Q, U) -> (B, H, Q, dh)."""
    return torch.matmul((torch.matmul(q, k.transpose(-1, -2)) + bias).softmax(-1), v)


def attend_paged(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """q (B, H, Q, dh), k and v (P, B, H, page, dh) (the used pages), bias (B, H, Q, P * page)."""
    pages, b, h, page, _ = k.shape
    scores = torch.matmul(q, k.transpose(-1, -2)).permute(1, 2, 3, 0, 4).reshape(b, h, q.shape[2], pages * page)
    weights = (scores + bias).softmax(-1).view(b, h, q.shape[2], pages, page).permute(3, 0, 1, 2, 4)
    return torch.matmul(weights, v).sum(0)


def time_segment(step, used: list[int]) -> float:
    """Mean seconds per step of ``step(u)`` over one pass of the segment."""
    start = time.perf_counter()
    for u in used:
        step(u)
    return (time.perf_counter() - start) / len(used)


def measure(repeats: int = 3) -> dict[str, list[float]]:
    """Seconds per decoding step (all layers) for each layout, one value per pass: after an
    untimed warm-up pass of each, ``repeats`` rounds of one pass per layout in turn (so drift of
    the machine hits every layout alike)."""
    g = torch.Generator().manual_seed(0)
    shape = (BATCH, HEADS, SLOTS, D_HEAD)
    q = torch.randn(BATCH, HEADS, QUERIES, D_HEAD, generator=g)
    flat = [(torch.randn(shape, generator=g), torch.randn(shape, generator=g)) for _ in range(LAYERS)]
    used = list(range(15 + 3, SLOTS + 1, 3))  # the filled prefix after each of the segment's 50 steps
    biases = {u: torch.zeros(BATCH, HEADS, QUERIES, u) for u in used}

    # The paged form computes the same attention (its padding slots masked): checked once here.
    u = used[len(used) // 2]
    pages = math.ceil(SLOTS / PAGE)
    paged_kv = [tuple(torch.cat([x, x.new_zeros(BATCH, HEADS, pages * PAGE - SLOTS, D_HEAD)], 2)
                      .view(BATCH, HEADS, pages, PAGE, D_HEAD).permute(2, 0, 1, 3, 4).contiguous() for x in kv)
                for kv in flat]
    n = math.ceil(u / PAGE)
    masked = torch.zeros(BATCH, HEADS, QUERIES, n * PAGE)
    masked[..., u:] = float("-inf")
    torch.testing.assert_close(attend_paged(q, paged_kv[0][0][:n], paged_kv[0][1][:n], masked),
                               attend(q, flat[0][0][:, :, :u], flat[0][1][:, :, :u], biases[u]), atol=1e-5, rtol=1e-5)

    def prefix(u):
        for k, v in flat:
            attend(q, k[:, :, :u], v[:, :, :u], biases[u])

    dense_kv = {u: [(k[:, :, :u].contiguous(), v[:, :, :u].contiguous()) for k, v in flat] for u in used[::4]}

    def dense(u):
        for k, v in dense_kv[u]:
            attend(q, k, v, biases[u])

    paged_bias = {n: torch.zeros(BATCH, HEADS, QUERIES, n * PAGE) for n in range(1, pages + 1)}

    def paged(u):
        n = math.ceil(u / PAGE)
        for k, v in paged_kv:
            attend_paged(q, k[:n], v[:n], paged_bias[n])

    half = [(k.bfloat16(), v.bfloat16()) for k, v in flat]
    q_half = q.bfloat16()
    half_biases = {u: b.bfloat16() for u, b in biases.items()}

    def bf16(u):
        for k, v in half:
            attend(q_half, k[:, :, :u], v[:, :, :u], half_biases[u])

    transposed = [(k.transpose(-1, -2).contiguous(), v) for k, v in flat]  # (B, H, dh, W), (B, H, W, dh)
    torch.testing.assert_close(
        torch.matmul((torch.matmul(q, transposed[0][0][..., :u]) + biases[u]).softmax(-1), flat[0][1][:, :, :u]),
        attend(q, flat[0][0][:, :, :u], flat[0][1][:, :, :u], biases[u]), atol=1e-5, rtol=1e-5)

    def keys_transposed(u):
        for k_t, v in transposed:
            torch.matmul((torch.matmul(q, k_t[..., :u]) + biases[u]).softmax(-1), v[:, :, :u])

    paged_t = [(k.transpose(-1, -2).contiguous(), v) for k, v in paged_kv]  # (P, B, H, dh, page)

    def paged_keys_transposed(u):
        n = math.ceil(u / PAGE)
        for k_t, v in paged_t:
            scores = torch.matmul(q, k_t[:n]).permute(1, 2, 3, 0, 4).reshape(BATCH, HEADS, QUERIES, n * PAGE)
            weights = (scores + paged_bias[n]).softmax(-1).view(BATCH, HEADS, QUERIES, n, PAGE).permute(3, 0, 1, 2, 4)
            torch.matmul(weights, v[:n]).sum(0)

    passes = {"prefix": (prefix, used), "dense": (dense, used[::4]), "paged": (paged, used), "bf16": (bf16, used),
              "keys transposed": (keys_transposed, used), "paged, keys transposed": (paged_keys_transposed, used)}
    for step, steps in passes.values():  # warm-up: allocator and caches settle
        time_segment(step, steps)
    times = {name: [] for name in passes}
    for r in range(repeats):
        for name in in_turn(passes, r):  # (prefix, the baseline, not always first)
            step, steps = passes[name]
            times[name].append(time_segment(step, steps))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench.kv_layouts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results/kv_layouts.md"))
    args = parser.parse_args(argv)
    if (status := unwritable(args.out)) is not None:
        return status
    setup_process(0, args.threads)
    info = machine_info()
    seconds = measure(args.repeats)
    base = statistics.median(seconds["prefix"])
    rows = [f"| {name} | {LAYOUTS[name]} | {spread([x * 1e3 for x in s], '.2f')} | {base / statistics.median(s):.2f}x |"
            for name, s in seconds.items()]
    text = "\n".join([
        "# Key/value buffer layouts for the streaming step", "",
        generated_by("eval.bench.kv_layouts", argv, info, args.threads), "",
        "The attention of a decoding step's 3 new query rows over the first U filled key/value slots of "
        f"every layer, U swept over a whole segment: batch {BATCH}, {LAYERS} layers, {HEADS} heads of {D_HEAD}, "
        f"{SLOTS} slots (the reference run script's size, K = 50, m = 15, no cache). Medians of {args.repeats} "
        "passes over the segment (min-max), after a warm-up pass, the layouts taking turns pass by pass, in "
        "reverse order every other "
        "repeat ('dense' over every 4th step, to bound its memory); the speed-up is the ratio of the medians.", "",
        "| layout | what it reads | ms per step (all layers) | speed-up over prefix |", "|---|---|---|---|", *rows, "",
    ])
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
