"""Train a model on an RMT algorithmic task.

    python -m train.algorithmic configs/algorithmic/reverse.yaml [key=value ...] \
        [--out runs/algorithmic/NAME] [--csv results/algorithmic.csv] [--run-name NAME]

Samples are drawn fresh from a seeded generator every step (no fixed training set); the final
evaluation uses free-running greedy generation on the test split (sqeq: equations never drawn
for training; see rate/tasks/algorithmic.py).  Writes a checkpoint
(safetensors + JSON), TensorBoard scalars under OUT/tb, and, with --csv, one result row.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from rate.tasks.algorithmic import generate
from train.experiments.algorithmic import (CHECKPOINT_KIND, AlgorithmicConfig, answer_loss, build_model, evaluate,
                                           left_plateau)
from rate.checkpoint import save_checkpoint
from rate.config import to_dict
from rate.training import TrainingLoop, compiled, resolve_device, setup_process
from rate.cli.run import add_run_arguments, make_parser, run_and_record


def train(
    cfg: AlgorithmicConfig, out: Path | None = None, progress: bool = True
) -> tuple[torch.nn.Module, dict[str, float]]:
    """Train per ``cfg``; returns the model and the final test metrics (plus wall time; for
    retrieval also ``left_plateau_step``, the first evaluation step clearly above the context-guess
    plateau, None if none was)."""
    tc = cfg.train
    setup_process(tc.seed, tc.threads)
    device = resolve_device(tc.device)
    model = build_model(cfg).to(device)
    task = cfg.task
    loop = TrainingLoop(model, tc, out / "tb" if out is not None else None, f"{task.name} x{cfg.segments}", progress)
    net = compiled(model, tc)
    start = time.time()
    plateau_exit = None
    model.train()
    while not loop.done:
        # Batch `step` of seed s is a pure function of (s, step): reruns see identical data.
        z = generate(task, tc.batch_size, seed=tc.seed * 1_000_000_007 + loop.step, split="train").to(device)
        with loop.autocast():
            logits, _ = net(z[:, :-1])
            loss = answer_loss(logits, z, task.answer_len)
        grad_norm = loop.optimise(loss)
        loop.end_batch(loss.item(), grad_norm=grad_norm.item())
        if loop.evaluation_due:
            metrics = evaluate(model, task, min(256, cfg.eval_samples), seed=tc.seed)
            loop.bar.set_postfix(loss=f"{loss.item():.3f}", gen_acc=f"{metrics['gen_token_acc']:.3f}")
            loop.log("eval", metrics)
            if task.name == "retrieval" and plateau_exit is None and left_plateau(metrics):
                plateau_exit = loop.step
    train_time = time.time() - start
    metrics = evaluate(model, task, cfg.eval_samples, seed=tc.seed)
    metrics.update(train_seconds=round(train_time, 1), params=sum(p.numel() for p in model.parameters()))
    if task.name == "retrieval":
        metrics["left_plateau_step"] = plateau_exit
    loop.close()
    return model, metrics


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python -m train.algorithmic", __doc__)
    add_run_arguments(parser, "runs/algorithmic", resume=False)
    args = parser.parse_intermixed_args(argv)  # options may come after the overrides too

    def train_run(cfg: AlgorithmicConfig, out: Path) -> dict:
        model, metrics = train(cfg, out, progress=not args.no_progress)
        save_checkpoint(out, model, CHECKPOINT_KIND, to_dict(cfg), extra={"metrics": metrics})
        return metrics

    return run_and_record(args, AlgorithmicConfig, "runs/algorithmic", train_run,
                          lambda cfg, metrics: {"segment_len": cfg.segment_len, **metrics})


if __name__ == "__main__":
    sys.exit(main())
