"""Cross-check for the associative-retrieval plateau: torch.nn.TransformerEncoder on the same data.

    python -m train.retrieval_reference [--steps 4000] [--seed 0]

A causal pre-LN ``nn.TransformerEncoder`` (2 layers, d_model 64, 4 heads, learned absolute
positions) trained on the same task as train.algorithmic's one-segment Transformer (AdamW 1e-3,
batch 64, fresh samples per step), with a plainer optimiser: no warm-up, no cosine decay, no
gradient clipping, AdamW's default weight decay on every parameter.  If it also stays near the
"guess a value that is in the context" level, the plateau is the task at this budget, not this
project's attention implementation.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from rate.tasks.algorithmic import TaskConfig, generate
from rate.training import nonnegative_int, positive_int
from rate.cli.run import interruptible
from train.experiments.algorithmic import TEST_SEED_OFFSET


@interruptible
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.retrieval_reference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=positive_int, default=4000)
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--threads", type=positive_int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    task = TaskConfig(name="retrieval")
    vocab, length, d = task.vocab_size, task.input_len, 64
    embed, pos = nn.Embedding(vocab, d), nn.Parameter(torch.randn(length, d) * 0.02)
    layer = nn.TransformerEncoderLayer(d, 4, 128, 0.0, batch_first=True, norm_first=True)
    body, head = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), nn.Linear(d, vocab)
    params = [*embed.parameters(), pos, *body.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3)
    causal = torch.triu(torch.full((length, length), float("-inf")), 1)

    def logits(z):
        return head(body(embed(z[:, :-1]) + pos, mask=causal))[:, -1]

    test = generate(task, 1024, args.seed + TEST_SEED_OFFSET, split="test")
    for step in range(args.steps):
        z = generate(task, 64, seed=args.seed * 1_000_000_007 + step)
        loss = F.cross_entropy(logits(z), z[:, -1])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 1000 == 0 or step + 1 == args.steps:  # (and the final state, whatever the count)
            with torch.no_grad():
                acc = (logits(test).argmax(-1) == test[:, -1]).float().mean().item()
            print(f"step {step + 1}: train loss {loss.item():.3f}, test accuracy {acc:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
