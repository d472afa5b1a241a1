"""Train a character-level language model on the ordered corpus stream (Transformer-XL style).

    python -m train.lm configs/lm/base.yaml [key=value ...] [--out DIR] [--resume | --overwrite] [--csv results/lm.csv]
    python -m train.lm --resume --out RUN_FOLDER [key=value ...]   (continue a run with its own config)

The training corpus is read as ``train.batch_size`` parallel streams, one segment per step, in
order; memory tokens and the Transformer-XL cache are carried from step to step and reset only
when the stream starts over.  With ``model.bptt_depth = k`` a step re-decodes the k previous
segments from the detached state k segments back and back-propagates the current segment's
loss through all k+1 (as in the RMT paper's language-model training): k = 0 detaches the memory
at every step.  The final evaluation reads the whole validation and test streams in order.
Every evaluation writes a checkpoint and the training state, with the memory and cache the
stream carries: ``--resume`` continues from it exactly as an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from rate.checkpoint import ResumeRefused
from rate.cli.run import add_run_arguments, make_parser, run_and_record
from rate.config import ConfigError
from rate.core.lm import RecurrentLM
from rate.core.rmt import RMTState
from rate.resume import ResumableRun
from rate.run_folder import claimed_for_training
from rate.tasks.lm_data import CorpusError, load_split
from rate.tasks.lm_stream import OrderedStream
from rate.training import TrainingLoop, compiled, resolve_device, setup_process
from train.experiments.lm import CHECKPOINT_KIND, LMExperimentConfig, build_lm, evaluate_stream


class SlidingBPTT:
    """Which segments a step decodes, and the detached state the window starts from.

    ``window`` holds the indices of the last k+1 segments (the current one last); ``start`` is
    the state at the input of window[0].  After a step the window slides by one segment and
    ``start`` becomes the (detached) state after the old window[0].

    This is the RMT paper's language-model training: one segment's loss per optimiser step, the
    window sliding *between* steps, every re-decode with the weights of its own step.
    ``RecurrentMemoryTransformer.forward`` with ``bptt_depth`` k truncates the gradient the same
    way *within* one call over a whole window (RATE and the algorithmic tasks, one optimiser
    step per window), so the LM trainer keeps this small bookkeeping and decodes through the
    model's own ``forward_segment``.
    """

    def __init__(self, model: RecurrentLM, stream: OrderedStream, depth: int,
                 decode: Callable[..., tuple[torch.Tensor, RMTState]] | None = None):
        """``decode``: the segment forward to use (default ``model.forward_segment``; a compiled one)."""
        self.model, self.stream, self.depth = model, stream, depth
        self.decode = decode or model.forward_segment
        self.reset()

    def reset(self) -> None:
        self.window: list[int] = []
        self.start: RMTState = self.model.decoder.initial_state(self.stream.rows.shape[0])
        # Until the window first slides, start is the initial state: the learned memory tokens
        # themselves (a view that follows their updates and takes their gradient), not a copy.
        self.start_is_initial = True

    def loss(self, i: int, device: torch.device) -> torch.Tensor:
        """Decode window + segment i from ``start``; cross-entropy of segment i; slides the window."""
        if i == 0:
            self.reset()  # the stream starts over: fresh memory and cache
        self.window.append(i)
        state, after_first = self.start, None
        for j in self.window:
            x, y = (t.to(device) for t in self.stream.segment(j))
            logits, state = self.decode(x, state)
            if after_first is None:
                after_first = state
        if len(self.window) > self.depth:
            self.window.pop(0)
            self.start = after_first.detached()
            self.start_is_initial = False
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())

    def state_dict(self) -> dict:
        """The window and its start state (None while it is the initial one; else memory
        (B, m, D) or None, and one (B, C, D) cache per layer), for a resumed run to carry on as
        this one would."""
        start = None if self.start_is_initial else {
            "memory": None if self.start.memory is None else self.start.memory.cpu(),
            "cache": [c.cpu() for c in self.start.cache]}
        return {"window": list(self.window), "start": start}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        """Carry on from :meth:`state_dict`'s window and start state (the initial state made
        from the model's restored memory tokens where it was the initial one)."""
        self.reset()
        self.window = [int(i) for i in state["window"]]
        if state["start"] is None:
            return
        memory, cache = state["start"]["memory"], list(state["start"]["cache"])
        expected = self.start.memory
        shapes_match = ((memory is None) == (expected is None) and (memory is None or memory.shape == expected.shape)
                        and all(c.shape[0] == self.stream.rows.shape[0] for c in cache))
        if not shapes_match:
            raise ResumeRefused("the training state's carried memory does not fit this model and batch")
        self.start = RMTState(None if memory is None else memory.to(device), [c.to(device) for c in cache])
        self.start_is_initial = False


def train(cfg: LMExperimentConfig, out: Path | None = None, progress: bool = True, resume: bool = False,
          overwrite: bool = False) -> tuple[RecurrentLM, dict]:
    """Train per ``cfg`` into run folder ``out`` (None: nothing written); ``resume`` continues the
    run there, ``overwrite`` replaces it once this one has a checkpoint
    (:class:`rate.resume.ResumableRun`).  Returns the model and the final metrics."""
    with claimed_for_training(out, resume, overwrite):  # (as rate.rl.trainer.train)
        tc = cfg.train
        setup_process(tc.seed, tc.threads)
        device = resolve_device(tc.device)
        try:  # a split too short for this many streams of this segment length is a config problem
            streams = {split: OrderedStream(load_split(cfg.data_dir, split),
                                            tc.batch_size if split == "train" else cfg.eval_batch_size, cfg.segment_len)
                       for split in ("train", "valid", "test")}
        except ValueError as err:
            raise ConfigError(f"train.batch_size {tc.batch_size}, eval_batch_size {cfg.eval_batch_size}, segment_len "
                              f"{cfg.segment_len}: {err}") from err
        model = build_lm(cfg).to(device)
        # What the run reads, as a digest: a resume refuses a corpus prepared anew under data_dir.
        corpus = hashlib.sha256(streams["train"].rows.numpy().tobytes()).hexdigest()[:16]
        run = ResumableRun(out, CHECKPOINT_KIND, cfg, overwrite, data_fingerprint=corpus)
        try:
            return _train_in(cfg, model, streams, run, device, progress, resume)
        except BaseException:
            run.abandon()
            raise


def _train_in(cfg: LMExperimentConfig, model: RecurrentLM, streams: dict[str, OrderedStream], run: ResumableRun,
              device: torch.device, progress: bool, resume: bool) -> tuple[RecurrentLM, dict]:
    tc = cfg.train
    loop = TrainingLoop(model, tc, run.log_dir, "lm", progress, run_name=run.name)
    window = SlidingBPTT(model, streams["train"], cfg.model.bptt_depth, decode=compiled(model.forward_segment, tc))
    state = run.resume(model, loop, device) if resume else {}
    if "sliding_bptt" in state:
        window.load_state_dict(state["sliding_bptt"], device)
    start = time.time() - state.get("train_seconds", 0.0)
    model.train()
    while not loop.done:
        with loop.autocast():
            loss = window.loss(loop.step % len(streams["train"]), device)
        loop.optimise(loss)
        loop.end_batch(loss.item(), bpc=loss.item() / math.log(2))
        if loop.evaluation_due:
            if not loop.done:  # (the last step's is the final evaluation's)
                valid = evaluate_stream(model, streams["valid"], cfg.valid_segments)
                loop.bar.set_postfix(train_bpc=f"{loss.item() / math.log(2):.3f}", valid_bpc=f"{valid['bpc']:.3f}")
                loop.log("valid", {"bpc": valid["bpc"]})
            run.save(model, loop, time.time() - start, device, sliding_bptt=window.state_dict())
    train_seconds = time.time() - start
    test = evaluate_stream(model, streams["test"], progress=progress)
    metrics = {
        "valid_bpc": evaluate_stream(model, streams["valid"], progress=progress)["bpc"],
        "test_bpc": test["bpc"],
        # the first HEAD_POSITIONS characters of each segment, and the rest (results/lm.md)
        "test_bpc_head": test["bpc_head"],
        "test_bpc_tail": test["bpc_tail"],
        "train_seconds": round(train_seconds, 1),
        "tokens_seen": tc.steps * tc.batch_size * cfg.segment_len,
        "params": sum(p.numel() for p in model.parameters()),
    }
    loop.log("test", {"bpc": metrics["test_bpc"]})
    run.finish(model, loop, metrics)
    loop.close()
    return model, metrics


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python -m train.lm", __doc__)
    add_run_arguments(parser, "runs/lm")
    args = parser.parse_intermixed_args(argv)  # options may come after the overrides too

    def train_run(cfg: LMExperimentConfig, out: Path) -> dict:
        return train(cfg, out, progress=not args.no_progress, resume=args.resume, overwrite=args.overwrite)[1]

    return run_and_record(args, LMExperimentConfig, "runs/lm", train_run, lambda cfg, metrics: metrics,
                          errors=(CorpusError,), checkpoint_kind=CHECKPOINT_KIND)


if __name__ == "__main__":
    sys.exit(main())
