"""Where the Transformer-XL cache sits beside memory tokens, measured on a task that needs it.

    python -m train.cache_probe [--steps 1500] [--seeds 0 1] [--out results/lm_cache_probe.md]

The stream: token t = (token t-1 + token t-2) mod 16, except that with probability ``--noise``
a token is drawn uniformly instead.  The first token of each segment therefore depends on the
last two tokens of the previous segment, which only the cache holds exactly.  Three models, same
backbone, trained as the LM rows are (ordered stream, state carried, bptt_depth 0):

* Transformer-XL (cache only);
* Transformer-XL + RMT with ``model.cache_position: official``: keys ``[cache | read | segment |
  write]``, the cache m positions further from the segment than in plain Transformer-XL;
* the same with ``cache_position: contiguous``: the cache right before the segment.

Printed (and written to ``--out``) is the test loss in nats per position group.  The task's own
floor (the entropy of the noise) is printed beside it: position 0 at the floor means the cache's
last two tokens were used.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import torch

from rate.cli.run import interruptible, unwritable
from rate.config import atomic_write_text
from rate.core.lm import RecurrentLM
from rate.core.rmt import RMTConfig
from rate.tasks.lm_stream import OrderedStream
from rate.training import TrainConfig, TrainingLoop, nonnegative_int, positive_int, setup_process
from train.experiments.lm import evaluate_stream
from train.lm import SlidingBPTT

VOCAB = 16
MODELS = {
    "Transformer-XL": {},
    "TrXL + RMT, official cache position": {"num_mem_tokens": 4},
    "TrXL + RMT, contiguous cache": {"num_mem_tokens": 4, "cache_position": "contiguous"},
}


def fibonacci_stream(n: int, noise: float, seed: int) -> torch.Tensor:
    """(n,) tokens: t = (t-1 + t-2) mod 16, or uniform with probability ``noise``."""
    g = torch.Generator().manual_seed(seed)
    random = torch.randint(0, VOCAB, (n,), generator=g)
    keep_rule = torch.rand(n, generator=g) >= noise
    out = random.clone()
    for t in range(2, n):  # sequential by definition; 10^5 tokens take well under a second
        if keep_rule[t]:
            out[t] = (out[t - 1] + out[t - 2]) % VOCAB
    return out


def noise_floor(noise: float) -> float:
    """Entropy (nats) of the next token given the two before it: the best possible loss."""
    p_rule = 1 - noise + noise / VOCAB
    p_other = noise / VOCAB
    return -(p_rule * math.log(p_rule) + (VOCAB - 1) * p_other * math.log(p_other))


TRAIN_TOKENS, TEST_TOKENS, STREAMS = 200_000, 40_000, 32  # the streams' lengths and the parallel rows


def segment_length(text: str) -> int:
    """--segment: 3 tokens at least, and short enough that each of the STREAMS rows of the test
    stream holds a segment and its next token."""
    longest = TEST_TOKENS // STREAMS - 1
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 3 <= value <= longest:
        raise argparse.ArgumentTypeError(f"must be 3 to {longest}, got {value}")
    return value


def run(name: str, extra: dict, args, seed: int) -> dict[str, float]:
    setup_process(seed, args.threads)
    cfg = RMTConfig(d_model=64, n_layers=2, n_heads=4, d_head=16, d_inner=128, mem_len=args.segment,
                    bptt_depth=0, **extra)
    model = RecurrentLM(VOCAB, args.segment, cfg)
    train = OrderedStream(fibonacci_stream(TRAIN_TOKENS, args.noise, seed), STREAMS, args.segment)
    test = OrderedStream(fibonacci_stream(TEST_TOKENS, args.noise, seed + 10_000), STREAMS, args.segment)
    loop = TrainingLoop(model, TrainConfig(steps=args.steps, batch_size=STREAMS, lr=1e-3, warmup_steps=100,
                                           eval_every=args.steps, seed=seed), None, f"{name} s{seed}",
                        progress=not args.no_progress)
    window = SlidingBPTT(model, train, cfg.bptt_depth)
    while not loop.done:
        loss = window.loss(loop.step % len(train), torch.device("cpu"))
        loop.optimise(loss)
        loop.end_batch(loss.item())
    loop.close()
    nats = [b * math.log(2) for b in evaluate_stream(model, test)["bpc_by_position"]]
    return {"position 0": nats[0], "position 1": nats[1], "positions 2+": statistics.fmean(nats[2:])}


@interruptible
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.cache_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=positive_int, default=1500)
    parser.add_argument("--seeds", type=nonnegative_int, nargs="+", default=[0, 1])
    parser.add_argument("--segment", type=segment_length, default=16, help="segment length = cache length")
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if not 0 < args.noise < 1:
        parser.error("--noise must be in (0, 1)")
    if (status := unwritable(args.out)) is not None:  # before the training, not after it
        return status
    results = {name: [run(name, extra, args, s) for s in args.seeds] for name, extra in MODELS.items()}
    groups = list(next(iter(results.values()))[0])
    lines = [f"Test loss (nats per token) by position in the segment; segment = cache = {args.segment}, 4 memory "
             f"tokens, {args.steps} steps, seeds {args.seeds} (mean, and each seed). Floor (noise {args.noise}): "
             f"{noise_floor(args.noise):.3f}.", "",
             "| model | " + " | ".join(groups) + " |", "|---" * (len(groups) + 1) + "|"]
    for name, per_seed in results.items():
        cells = [f"{statistics.fmean(r[g] for r in per_seed):.3f} ("
                 + ", ".join(f"{r[g]:.3f}" for r in per_seed) + ")" for g in groups]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        header = (f"# Cache position beside memory tokens: a probe\n\nGenerated by `python -m train.cache_probe "
                  f"--steps {args.steps} --seeds {' '.join(map(str, args.seeds))}"
                  + (f" --segment {args.segment}" if args.segment != 16 else "")
                  + (f" --noise {args.noise}" if args.noise != 0.1 else "") + "` (see its docstring); "
                  f"torch {torch.__version__}, CPU.\n\n")
        atomic_write_text(args.out, header + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
