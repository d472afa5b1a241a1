"""Train a model on an RMT algorithmic task.

    python -m train.algorithmic configs/algorithmic/reverse.yaml [key=value ...] \
        [--out runs/algorithmic/NAME] [--csv results/algorithmic.csv] [--run-name NAME]

Samples are drawn fresh from a seeded generator every step (no fixed training set); the final
evaluation uses free-running greedy generation on the test split (sqeq: equations never drawn
for training; see rate/tasks/algorithmic.py).  Writes a checkpoint
(safetensors + JSON), TensorBoard scalars under OUT/tb, and, with --csv, one result row.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from rate.tasks.algorithmic import generate
from train.experiments.algorithmic import CHECKPOINT_KIND, AlgorithmicConfig, answer_loss, build_model, evaluate
from rate.deploy.checkpoint import save_checkpoint
from rate.config import to_dict
from rate.training import make_optimizer, resolve_device, setup_process
from rate.cli.run import run_and_record


def train(
    cfg: AlgorithmicConfig, out: Path | None = None, progress: bool = True
) -> tuple[torch.nn.Module, dict[str, float]]:
    """Train per ``cfg``; returns the model and the final test metrics (plus wall time)."""
    tc = cfg.train
    setup_process(tc.seed, tc.threads)
    device = resolve_device(tc.device)
    model = build_model(cfg).to(device)
    opt, sched = make_optimizer(model, tc)
    writer = SummaryWriter(str(out / "tb")) if out is not None else None
    task = cfg.task
    start = time.time()
    bar = tqdm(range(tc.steps), desc=f"{task.name} x{cfg.segments}", disable=not progress, dynamic_ncols=True)
    model.train()
    for step in bar:
        # Batch `step` of seed s is a pure function of (s, step): reruns see identical data.
        z = generate(task, tc.batch_size, seed=tc.seed * 1_000_000_007 + step, split="train").to(device)
        logits, _ = model(z[:, :-1])
        loss = answer_loss(logits, z, task.answer_len)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower train.lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        sched.step()
        if writer is not None:
            writer.add_scalar("train/loss", loss.item(), step)
            writer.add_scalar("train/grad_norm", grad_norm.item(), step)
            writer.add_scalar("train/lr", sched.get_last_lr()[0], step)
        if (step + 1) % tc.eval_every == 0 or step + 1 == tc.steps:
            metrics = evaluate(model, task, min(256, cfg.eval_samples), seed=tc.seed)
            bar.set_postfix(loss=f"{loss.item():.3f}", gen_acc=f"{metrics['gen_token_acc']:.3f}")
            if writer is not None:
                for k, v in metrics.items():
                    writer.add_scalar(f"eval/{k}", v, step + 1)
    train_time = time.time() - start
    metrics = evaluate(model, task, cfg.eval_samples, seed=tc.seed)
    metrics.update(train_seconds=round(train_time, 1), params=sum(p.numel() for p in model.parameters()))
    if writer is not None:
        writer.close()
    return model, metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.algorithmic", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="YAML config (configs/algorithmic/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.seed=1 segments=4")
    parser.add_argument("--out", type=Path, help="output folder (default runs/algorithmic/<config name>)")
    parser.add_argument("--csv", type=Path, help="append one result row to this CSV")
    parser.add_argument("--run-name", help="name stored in the CSV row (default: config stem)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_intermixed_args(argv)  # options may come after the overrides too

    def train_run(cfg: AlgorithmicConfig, out: Path) -> dict:
        model, metrics = train(cfg, out, progress=not args.no_progress)
        save_checkpoint(out, model, CHECKPOINT_KIND, to_dict(cfg), extra={"metrics": metrics})
        return metrics

    return run_and_record(args, AlgorithmicConfig, "runs/algorithmic", train_run,
                          lambda cfg, metrics: {"segment_len": cfg.segment_len, **metrics})


if __name__ == "__main__":
    sys.exit(main())
