"""Training attention with the positional scores as a bias: written out, or the fused kernel's generic path;
the bias read from the scores as a strided window, or gathered.

    python -m eval.bench.attention_forms [--threads 2] [--seconds 3] [--out results/attention_forms.md]

With the Transformer-XL positional scores made into a (B, H, Q, K) bias, that bias needs a
gradient, and ``F.scaled_dot_product_attention`` on the CPU then takes its generic path: it
scales q and k apart, and guards every softmax row against having no key at all (a reduction and
a select over the scores), which the RMT masks never need (every row sees at least itself,
rate/core/masks.py).  rate/core/attention.py therefore writes that attention out: the scale folded
into q once, the content scores added to the bias by the batched matmul itself, a plain softmax.
With positions in order (every training call of the official layout) it reads the bias as a
strided window of the scores against the reversed distance table, where it used to gather it
(whose backward is a scatter-add); explicit positions still gather.  This benchmark times one
layer's attention, forward and backward, three ways side by side at the training shapes of
eval/bench/rate_training.py's sizes: written out with the window (the model's bias form), written
out with the gather, and the fused kernel's generic path with the gather (the form before both),
and checks that the three agree.

The bias form is the model's where fp32 CPU training's explicit path (``_ExplicitSoftmaxAttention``)
is not taken: under bf16 autocast, with attention dropout, on CUDA, and in fp32 CPU training of
calls below ``EXPLICIT_MIN_SCORES`` scores (the T-Maze CPU size).  At the d_model 128 and 256 sizes
fp32 CPU training takes the explicit path (results/performance_training.md's scores column), so
those rows time the form their bf16 and dropout runs take, not their fp32 training.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from eval.bench.rate_training import SIZES, Size
from eval.bench.throughput import generated_by, in_turn, timed
from rate.cli.records import machine_info
from rate.cli.run import unwritable
from rate.config import atomic_write_text
from rate.core.attention import EXPLICIT_MIN_SCORES, RelativeMultiHeadAttention, RelativePositions
from rate.core.masks import mask_to_bias, rmt_segment_mask
from rate.training import positive_float, positive_int, setup_process


def fused_generic(attn: RelativeMultiHeadAttention, q, k, v, positions: RelativePositions, mask_bias):
    """The same attention through the fused kernel with the gathered bias (the form before)."""
    b, h, q_len, _ = q.shape
    r = attn._positional_table(positions.table)
    pos_scores = torch.matmul(q + attn.v_bias[:, None, :], r.transpose(-1, -2))
    bias = torch.gather(pos_scores, -1, positions.index.expand(b, h, q_len, k.shape[2])) * attn.scale + mask_bias
    return F.scaled_dot_product_attention(q + attn.u_bias[:, None, :], k, v, attn_mask=bias, scale=attn.scale)


FORMS = ("written out, window", "written out, gathered", "fused, generic path")


def measure(size: Size, seconds: float, round_index: int = 0) -> dict:
    """The three FORMS at ``size``, in their order in even rounds and reversed in odd ones;
    seconds per forward and backward of each, and whether they agree."""
    torch.manual_seed(0)
    attn = RelativeMultiHeadAttention(size.d_model, size.n_heads, size.d_head)
    with torch.no_grad():  # u and v start at zero; give them values so that their terms count
        attn.u_bias.normal_()
        attn.v_bias.normal_()
    q_len = 2 * size.mem + 3 * size.K  # [read | segment | write], no cache
    positions = RelativePositions(0, q_len, q_len, size.d_model, torch.device("cpu"))
    mask_bias = mask_to_bias(rmt_segment_mask(0, size.mem, 3 * size.K))
    shape = (size.batch, size.n_heads, q_len, size.d_head)
    x = torch.randn(size.batch, q_len, size.d_model, requires_grad=True)
    if attn._factored_pays(positions, size.batch, q_len, q_len):
        raise ValueError(f"{size.name} takes the factored form, not the gathered one")

    def qkv():  # as the layer makes them: permuted views of one projection
        return attn.qkv(x).view(size.batch, q_len, 3, size.n_heads, size.d_head).permute(2, 0, 3, 1, 4)

    probe = torch.randn(shape)
    # The same positions given explicitly, which the model gathers (as for the contiguous cache layout).
    gathered = RelativePositions(0, q_len, q_len, size.d_model, torch.device("cpu"), q_pos=torch.arange(q_len),
                                 k_pos=torch.arange(q_len))
    forms = {"written out, window": (attn._full, positions),
             "written out, gathered": (attn._full, gathered),
             "fused, generic path": (lambda *a: fused_generic(attn, *a), positions)}
    if not positions.in_order:
        raise ValueError("the window form needs positions in order")
    results, seconds_of = {}, {}
    for name in in_turn(FORMS, round_index):
        fn, where = forms[name]
        out = fn(*qkv(), where, mask_bias)
        inputs = (x, attn.qkv.weight, attn.u_bias, attn.v_bias, attn.r_proj.weight)
        results[name] = (out.detach(), torch.autograd.grad((out * probe).sum(), inputs))

        def step(fn=fn, where=where):
            (fn(*qkv(), where, mask_bias) * probe).sum().backward()

        seconds_of[name] = timed(step, seconds)
    out_a, grads_a = results[FORMS[0]]
    agree = all(torch.allclose(out_a, out_b, atol=1e-5, rtol=1e-4) and all(
        torch.allclose(a, b, atol=1e-4, rtol=1e-4) for a, b in zip(grads_a, grads_b))
        for out_b, grads_b in (results[name] for name in FORMS[1:]))
    return {"seconds": seconds_of, "agree": agree, "shape": shape, "order": in_turn(FORMS, round_index)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench.attention_forms", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--seconds", type=positive_float, default=3.0, help="timing per form and size")
    parser.add_argument("--repeats", type=positive_int, default=3, help="measurements of each row, the forms alternated")
    parser.add_argument("--out", type=Path, default=Path("results/attention_forms.md"))
    args = parser.parse_args(argv)
    if (status := unwritable(args.out)) is not None:
        return status
    setup_process(0, args.threads)
    info = machine_info()
    sizes = [s for s in SIZES if s.name in ("tmaze-cpu", "d128-L4-ffn", "d256-L4-ffn")]  # (no factored form)
    rows, all_agree, small = [], True, []
    for size in sizes:
        runs = [measure(size, args.seconds, round_index=i) for i in range(args.repeats)]
        all_agree &= all(r["agree"] for r in runs)
        b, h, q_len, _ = runs[0]["shape"]  # (no cache: as many keys as query rows)
        if b * h * q_len * q_len < EXPLICIT_MIN_SCORES:
            small.append(size.name)

        def ms(name):
            return f"{statistics.median(r['seconds'][name] for r in runs) * 1e3:.1f}"

        def speed_up(slower, faster):
            ratios = [r["seconds"][slower] / r["seconds"][faster] for r in runs]
            return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"

        rows.append(f"| {size.name} | {tuple(runs[0]['shape'])} | {ms(FORMS[2])} | {ms(FORMS[1])} | {ms(FORMS[0])} | "
                    f"{speed_up(FORMS[1], FORMS[0])} | {speed_up(FORMS[2], FORMS[1])} | "
                    f"{'yes' if all(r['agree'] for r in runs) else 'NO'} |")
    text = "\n".join([
        "# Training attention with the positional scores as a bias", "",
        generated_by("eval.bench.attention_forms", argv, info, args.threads)
        + " One layer's attention (the positional scores made "
        "into a bias, the RMT segment mask, no cache; q, k and v projected from the layer input as the layer does), "
        f"forward and backward, median seconds over about {args.seconds:g} s of calls per form; {args.repeats} "
        "repeats, the forms' order reversed every other repeat: medians; each speed-up is the median of the "
        "repeats' own ratios (the slower form's time over the faster one's within a repeat), their range in "
        "brackets. The model's bias form is the written-out attention with the bias read as a strided window of "
        "the scores; the window against the gather isolates the read of the bias, the fused kernel against the "
        "written-out attention (both gathered) the attention. The bias form runs where fp32 CPU training's "
        "explicit path does not: under bf16 autocast, with attention dropout, on CUDA, and in fp32 CPU training of "
        f"calls below {EXPLICIT_MIN_SCORES:,} scores (of these sizes: {', '.join(small) or 'none'}); the others' fp32 "
        "CPU training takes the explicit path (results/performance_training.md). "
        "Same outputs and gradients: within 1e-5 / 1e-4 of the model's form.", "",
        "| config | q, k, v shape (B, H, Q, dh) | fused kernel, generic path, gathered ms | written out, gathered ms "
        "| written out, window ms | speed-up of the window over the gather | speed-up of the written-out attention "
        "over the fused kernel (both gathered) | same outputs and gradients |",
        "|---|---|---|---|---|---|---|---|", *rows, "",
    ])
    atomic_write_text(args.out, text)
    print(text)
    return 0 if all_agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
