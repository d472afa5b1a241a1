"""Evaluate an algorithmic-task checkpoint by free-running greedy generation.

    python -m eval.algorithmic CHECKPOINT [--samples 1024] [--seed SEED (the run's train.seed)] [--show 0]

Prints JSON with gen_token_acc (per-token accuracy of free-running generation on the answer,
the RMT paper's metric for copy, reverse and retrieval; for sqeq it counts the answer slot's
padding too, which the paper leaves out: its metric there is answer_acc), answer_acc (whole answer generated exactly; sqeq: the answer slot),
tf_token_acc (teacher-forced per-token accuracy) and the answer loss.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from rate.tasks.algorithmic import decode_sqeq, generate
from train.experiments.algorithmic import CHECKPOINT_KIND, TEST_SEED_OFFSET, AlgorithmicConfig, build_model, evaluate
from rate.checkpoint import CheckpointError, load_checkpoint
from rate.training import nonnegative_int, positive_int, setup_process
from rate.cli.run import interruptible


def load_model(path: Path) -> tuple[torch.nn.Module, AlgorithmicConfig]:
    model, cfg, _ = load_checkpoint(path, CHECKPOINT_KIND, AlgorithmicConfig, build_model)
    return model, cfg


@interruptible
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.algorithmic", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--seed", type=nonnegative_int, help="test-set seed (default: the run's train.seed, the "
                                                               "test set its result row was measured on)")
    parser.add_argument("--show", type=int, default=0, help="print this many generated samples")
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.samples <= 0 or args.show < 0:
        parser.error("--samples must be positive, --show at least 0")
    setup_process(0, args.threads)
    try:
        model, cfg = load_model(args.checkpoint)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.seed is None:
        args.seed = cfg.train.seed
    metrics = evaluate(model, cfg.task, args.samples, seed=args.seed)
    print(json.dumps({"checkpoint": str(args.checkpoint), "task": cfg.task.name, "segments": cfg.segments, **metrics}))
    if args.show:
        z = generate(cfg.task, args.show, args.seed + TEST_SEED_OFFSET, split="test")
        gen = model.generate_greedy(z[:, : cfg.task.prompt_len], cfg.task.input_len)
        show = decode_sqeq if cfg.task.name == "sqeq" else (lambda t: " ".join(map(str, t.tolist())))
        for target, out in zip(z, gen):
            print(f"target:    {show(target)}\ngenerated: {show(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
