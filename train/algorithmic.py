"""Train a model on an RMT algorithmic task.

    python -m train.algorithmic configs/algorithmic/reverse.yaml [key=value ...] \
        [--out runs/algorithmic/NAME] [--resume | --overwrite] [--csv results/algorithmic.csv] [--run-name NAME]
    python -m train.algorithmic --resume --out RUN_FOLDER [key=value ...]   (the run's own config)

Samples are drawn fresh from a seeded generator every step (no fixed training set); the final
evaluation uses free-running greedy generation on the test split (sqeq: equations never drawn
for training; see rate/tasks/algorithmic.py).  Every evaluation writes a checkpoint (safetensors
+ JSON) and the training state, which ``--resume`` continues from exactly as an uninterrupted run
would (a batch is a pure function of the seed and the step); TensorBoard scalars under OUT/tb;
with --csv, one result row.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from rate.tasks.algorithmic import generate
from train.experiments.algorithmic import (CHECKPOINT_KIND, AlgorithmicConfig, answer_loss, build_model, evaluate,
                                           left_plateau)
from rate.resume import ResumableRun
from rate.run_folder import claimed_for_training
from rate.training import TrainingLoop, compiled, resolve_device, setup_process
from rate.cli.run import add_run_arguments, make_parser, run_and_record


def train(cfg: AlgorithmicConfig, out: Path | None = None, progress: bool = True, resume: bool = False,
          overwrite: bool = False) -> tuple[torch.nn.Module, dict[str, float]]:
    """Train per ``cfg`` into run folder ``out`` (None: nothing written); ``resume`` continues the
    run there, ``overwrite`` replaces it once this one has a checkpoint
    (:class:`rate.resume.ResumableRun`).  Returns the model and the final test metrics (plus wall
    time; for retrieval also ``left_plateau_step``, the first evaluation step clearly above the
    context-guess plateau, None if none was)."""
    with claimed_for_training(out, resume, overwrite):  # (as rate.rl.trainer.train)
        tc = cfg.train
        setup_process(tc.seed, tc.threads)
        device = resolve_device(tc.device)
        model = build_model(cfg).to(device)
        run = ResumableRun(out, CHECKPOINT_KIND, cfg, overwrite)
        try:
            return _train_in(cfg, model, run, device, progress, resume)
        except BaseException:
            run.abandon()
            raise


def _train_in(cfg: AlgorithmicConfig, model: torch.nn.Module, run: ResumableRun, device: torch.device,
              progress: bool, resume: bool) -> tuple[torch.nn.Module, dict[str, float]]:
    tc, task = cfg.train, cfg.task
    loop = TrainingLoop(model, tc, run.log_dir, f"{task.name} x{cfg.segments}", progress, run_name=run.name)
    state = run.resume(model, loop, device) if resume else {}
    plateau_exit = state.get("left_plateau_step")
    net = compiled(model, tc)
    start = time.time() - state.get("train_seconds", 0.0)
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
            if not loop.done:  # (the last step's evaluation is the final one below, on every eval sample)
                metrics = evaluate(model, task, min(256, cfg.eval_samples), seed=tc.seed)
                loop.bar.set_postfix(loss=f"{loss.item():.3f}", gen_acc=f"{metrics['gen_token_acc']:.3f}")
                loop.log("eval", metrics)
                if task.name == "retrieval" and plateau_exit is None and left_plateau(metrics):
                    plateau_exit = loop.step
            run.save(model, loop, time.time() - start, device,
                     **({} if plateau_exit is None else {"left_plateau_step": plateau_exit}))
    train_time = time.time() - start
    metrics = evaluate(model, task, cfg.eval_samples, seed=tc.seed)
    loop.log("eval", metrics)
    if task.name == "retrieval" and plateau_exit is None and left_plateau(metrics):
        plateau_exit = loop.step
    metrics.update(train_seconds=round(train_time, 1), params=sum(p.numel() for p in model.parameters()))
    if task.name == "retrieval":
        metrics["left_plateau_step"] = plateau_exit
    run.finish(model, loop, metrics)
    loop.close()
    return model, metrics


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python -m train.algorithmic", __doc__)
    add_run_arguments(parser, "runs/algorithmic")
    args = parser.parse_intermixed_args(argv)  # options may come after the overrides too

    def train_run(cfg: AlgorithmicConfig, out: Path) -> dict:
        return train(cfg, out, progress=not args.no_progress, resume=args.resume, overwrite=args.overwrite)[1]

    return run_and_record(args, AlgorithmicConfig, "runs/algorithmic", train_run,
                          lambda cfg, metrics: {"segment_len": cfg.segment_len, **metrics},
                          checkpoint_kind=CHECKPOINT_KIND)


if __name__ == "__main__":
    sys.exit(main())
