"""What every trainer shares: TrainConfig, process setup, the optimiser and schedule, and the
training-loop skeleton (:class:`TrainingLoop`)."""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from rate.config import ConfigError, check_choices
from rate.host_memory import keep_freed_memory

_THREADS_SET = False
SEED_LIMIT = 2**32  # numpy's seeds are below it


@dataclass
class TrainConfig:
    steps: int = 2000  # optimiser steps (batches)
    batch_size: int = 64  # windows per batch, over all processes
    lr: float = 1e-3  # peak learning rate (AdamW)
    weight_decay: float = 0.01  # AdamW decay of matrices but those named *embed* and the memory tokens (make_optimizer)
    warmup_steps: int = 100  # linear warm-up, then cosine decay
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    grad_clip: float = 1.0  # gradient norm clipped to this
    eval_every: int = 500  # evaluate and checkpoint every this many steps (and after the last)
    seed: int = 0  # seeds weights, batches and dropout
    # torch CPU threads; 0: torch's default (OMP_NUM_THREADS when set, else the machine's cores)
    threads: int = 0
    device: str = "cpu"  # cpu, cuda or cuda:N
    # tensorboard: event files in the run folder's tb/; wandb: Weights & Biases as well (the wandb
    # extra; project "rate", run named after the run folder as given, e.g. runs/X/seed0; files in
    # ./wandb or WANDB_DIR; WANDB_MODE=offline needs no network).
    logger: Literal["tensorboard", "wandb"] = "tensorboard"
    # fp32, or bf16: forward and loss under torch.autocast in bfloat16 (CPUs with avx512_bf16 or
    # AMX, CUDA); weights, gradients and optimiser state stay fp32, so no loss scaling is needed.
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False  # torch.compile the training forward (the first steps compile: a minute or more on a CPU)
    # On the CPU (glibc): malloc keeps freed blocks for the next batch instead of returning them to
    # the kernel, which saves re-faulting the activations every step but fragments the heap:
    # faster, at a higher peak memory (full BPTT at the RATE run script's size: 1.40x the
    # tokens/s at 1.27x the peak; results/performance_official.md, rate/host_memory.py).
    keep_freed_memory: bool = False

    def __post_init__(self) -> None:
        check_choices(self, "train.")
        for name in ("steps", "batch_size", "eval_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.threads < 0:
            raise ValueError(f"train.threads must be >= 0 (0: torch's default), got {self.threads}")
        for name in ("lr", "grad_clip"):
            if not getattr(self, name) > 0:  # (NaN too)
                raise ValueError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise ValueError(f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"train.precision must be fp32 or bf16, got {self.precision!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:  # a negative ratio would turn the step into ascent
            raise ValueError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.weight_decay < 0 or not 0 <= self.seed < SEED_LIMIT:
            raise ValueError(f"train.weight_decay must be >= 0 and train.seed in [0, 2**32), got {self.weight_decay}, "
                             f"{self.seed}")
        try:
            device = torch.device(self.device)
        except RuntimeError as err:
            raise ValueError(f"train.device {self.device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from err
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"train.device {self.device!r}: the trainers run on cpu or cuda")


def start_wandb(name: str | None):
    """A Weights & Biases run (project ``rate``, named ``name``; its files where wandb keeps them,
    ``./wandb`` or ``WANDB_DIR``: a run folder may move while it trains, see
    rate.run_folder.RunFolder); with ``name`` None only checks that wandb is installed.
    ConfigError when it is not.  A resumed run starts a second wandb run of the same name (what the
    killed one logged after its checkpoint stays in the first); TensorBoard's event files, which
    a resume purges, are the exact record."""
    try:
        import wandb
    except ImportError:
        raise ConfigError("train.logger wandb needs the wandb package: pip install 'rate-rmt[wandb]'") from None
    if name is None:
        return None
    return wandb.init(project="rate", name=name, reinit="finish_previous")


def progress_bar(**kwargs) -> tqdm:
    """A tqdm bar; when stderr is not a terminal (a log file, CI) it prints a line at most every
    30 s instead of redrawing, and none for work done within 30 s (a log would get an empty
    "0it" line per short rollout), so logs are not flooded."""
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 30.0)
        kwargs.setdefault("maxinterval", 60.0)
        kwargs.setdefault("delay", 30.0)
    return tqdm(dynamic_ncols=True, **kwargs)


def positive_int(text: str) -> int:
    """argparse type of counts such as --threads: an int >= 1, else a usage error (exit 2)."""
    return _whole_number(text, 1)


def nonnegative_int(text: str) -> int:
    """argparse type of seeds: an int in [0, 2**32) (numpy's seeds), else a usage error."""
    return _whole_number(text, 0, SEED_LIMIT - 1)


def positive_float(text: str) -> float:
    """argparse type of durations and rates such as --seconds: a finite number > 0, else a usage error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def _whole_number(text: str, least: int, most: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    if most is not None and value > most:
        raise argparse.ArgumentTypeError(f"must be at most {most}, got {value}")
    return value


def setup_process(seed: int, threads: int | None) -> None:
    """Seed every generator; set torch's thread count once per process (changing it later is
    slow).  ``threads`` 0 or None keeps torch's default: OMP_NUM_THREADS when set, else the
    machine's cores (a fixed count would starve a large machine or oversubscribe a small one).
    A later call that asks for another count (a second ``rate.train`` in a notebook) keeps the
    first one, with a warning that says so."""
    global _THREADS_SET
    if not _THREADS_SET:
        if threads:
            torch.set_num_threads(threads)
        _THREADS_SET = True
    elif threads and threads != torch.get_num_threads():
        warnings.warn(f"train.threads={threads} is ignored: this process already set torch's thread count to "
                      f"{torch.get_num_threads()} (once per process; start a new one for another count)",
                      stacklevel=2)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def seed_batch(seed: int, step: int, rank: int = 0) -> None:
    """Seed torch's generators (dropout's stream) for batch ``step`` on process ``rank``.

    Per batch, so that a resumed run draws exactly the masks an uninterrupted one did, whatever
    took numbers from the global stream in between (an evaluation, a rank's uneven share); per
    rank, so that data-parallel processes draw masks of their own instead of all repeating one
    process's."""
    torch.manual_seed(int(np.random.SeedSequence([seed, step, rank, 2]).generate_state(1)[0]))


def compiled(fn: Callable, cfg: TrainConfig) -> Callable:
    """A module or function through torch.compile when train.compile is set (a module's
    parameters are shared; evaluation keeps using the eager one), else itself."""
    return torch.compile(fn) if cfg.compile else fn


def resolve_device(name: str) -> torch.device:
    """``name`` as a torch device the library runs on (cpu, cuda, cuda:N), else one ConfigError."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {name!r}: the library runs on cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                          f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW + warmup/cosine.  Weight decay on every parameter of two or more dimensions except
    those named ``*embed*`` (the LM's token embedding) and the memory tokens; none on vectors
    (norms, biases).  So the Transformer-XL u/v biases (H, d_head) and RATE's action embedding
    (``act_enc``) are decayed: every committed result was trained so, and the rule stays for
    them to reproduce (at the shipped weight decays of 0.0001-0.1 a small pull)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        plain = p.dim() < 2 or "embed" in name or "memory.weight" in name
        (no_decay if plain else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )

    def factor(step: int) -> float:  # (a function: LambdaLR's state then holds no copy of cfg)
        return lr_factor(cfg, step)

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """The learning rate at ``step`` as a fraction of ``cfg.lr``: linear warmup over
    ``warmup_steps``, then a cosine decay to ``min_lr_ratio`` at ``steps``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _warn_idle_attention_checkpointing(model: nn.Module, cfg: TrainConfig) -> None:
    """A warning when a model asks for checkpoint_attention (RMTConfig) where it changes nothing:
    it is a path of eager fp32 CPU training (rate/core/attention.py)."""
    if not any(getattr(m, "checkpoint_attention", False) for m in model.modules()):
        return
    idle = [name for name, on in (("train.precision bf16", cfg.precision == "bf16"), ("train.compile", cfg.compile),
                                  (f"train.device {cfg.device}", torch.device(cfg.device).type != "cpu")) if on]
    if idle:
        warnings.warn(f"checkpoint_attention saves memory in eager fp32 CPU training only; with {', '.join(idle)} "
                      "it changes nothing", stacklevel=3)


class TrainingLoop:
    """The loop skeleton of the trainers (RATE, algorithmic tasks, language modelling): AdamW with
    warmup and cosine decay (:func:`make_optimizer`), gradient clipping, one scheduler step per
    batch, a stop on a non-finite loss, TensorBoard scalars, the progress bar and the evaluation
    cadence.  The trainer supplies batches, losses and evaluations::

        loop = TrainingLoop(model, cfg.train, log_dir=out / "tb", desc="reverse", run_name=str(out))
        while not loop.done:
            loss = ...                      # the batch's loss
            loop.optimise(loss)             # zero_grad, backward, clip, optimiser step
            loop.end_batch(loss.item())     # scheduler, step counter, TensorBoard, progress bar
            if loop.evaluation_due:
                loop.log("eval", evaluate(model))

    ``optimise`` may run several times per batch (RATE's official mode steps once per segment).
    The progress bar and the TensorBoard writer are made when first used, so a run that fails
    before its first batch (a refused resume) prints no bar and leaves no event file behind.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, log_dir: Path | None = None, desc: str = "train",
                 progress: bool = True, run_name: str | None = None):
        self.model, self.cfg, self.log_dir = model, cfg, log_dir
        # The run's name where it is logged by name (wandb): the run folder as named (not the log
        # folder's parent, which is a staging folder while a run replaces another; see RunFolder).
        self.run_name = run_name
        self.opt, self.sched = make_optimizer(model, cfg)
        _warn_idle_attention_checkpointing(model, cfg)
        if cfg.keep_freed_memory and torch.device(cfg.device).type == "cpu":
            keep_freed_memory()
        self.step = 0
        self._resumed_at: int | None = None  # see start_at
        self._desc, self._progress = desc, progress
        self._grad_norm: float | None = None  # of the batch's last optimiser step
        self._wandb = None  # the wandb run (train.logger: wandb), made with the writer
        self._moved = False  # logs moved (move_logs): a new writer there must not purge
        if cfg.logger == "wandb" and log_dir is not None:
            start_wandb(None)  # fails now, not after the first batch, when wandb is missing
        self._last_time: float | None = None
        self._bar: tqdm | None = None
        self._writer: SummaryWriter | None = None

    def start_at(self, step: int) -> None:
        """Continue a resumed run at ``step`` (its optimiser and scheduler states already loaded)."""
        self.step = self._resumed_at = step

    @property
    def bar(self) -> tqdm:
        """The progress bar, shown from the first batch on (not before a run that fails at setup)."""
        if self._bar is None:
            self._bar = progress_bar(total=self.cfg.steps, initial=self.step, desc=self._desc, disable=not self._progress)
        return self._bar

    @property
    def done(self) -> bool:
        return self.step >= self.cfg.steps

    @property
    def evaluation_due(self) -> bool:
        """Every ``eval_every`` batches, and after the last."""
        return self.step % self.cfg.eval_every == 0 or self.step == self.cfg.steps

    def autocast(self) -> torch.autocast:
        """The context of a training forward and its loss: bfloat16 autocast when train.precision
        is bf16, a no-op for fp32."""
        device = next(self.model.parameters()).device.type
        return torch.autocast(device, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16")

    def optimise(self, loss: torch.Tensor) -> torch.Tensor:
        """Backpropagate ``loss``, clip the gradient norm to ``grad_clip``, step the optimiser;
        returns the norm before clipping."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        if not torch.isfinite(norm):  # before the step: NaN weights would reach the next checkpoint
            raise FloatingPointError(f"the gradient norm became {float(norm)} at step {self.step}; lower train.lr")
        self.opt.step()
        self._grad_norm = float(norm)
        return norm

    def end_batch(self, loss: float, tokens: int | None = None, **scalars: float) -> None:
        """Close batch ``step``: FloatingPointError on a non-finite loss; else scheduler step,
        counter, progress bar and ``train/`` scalars: loss, the learning rate of this batch, the
        gradient norm before clipping, ``tokens_per_s`` when the batch's ``tokens`` are given
        (timed from the previous batch's end: evaluations between them are left out), ``scalars``."""
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss became {loss} at step {self.step}; lower train.lr")
        lr = self.sched.get_last_lr()[0]
        bar = self.bar  # made before the count moves, so that it starts at the steps done before
        self.sched.step()
        self.step += 1
        bar.update(1)
        now = time.perf_counter()
        if tokens is not None and self._last_time is not None:
            scalars = {**scalars, "tokens_per_s": tokens / max(now - self._last_time, 1e-9)}
        if self._grad_norm is not None:
            scalars = {**scalars, "grad_norm": self._grad_norm}
        self.log("train", {"loss": loss, **scalars, "lr": lr})
        self._last_time = time.perf_counter()

    def pause_clock(self) -> None:
        """Leave the time until the next batch ends out of tokens/s (an evaluation, a checkpoint)."""
        self._last_time = None

    def log(self, section: str, metrics: dict[str, float], step: int | None = None) -> None:
        """TensorBoard scalars ``section/name`` at ``step`` (default: batches done); none without a log_dir."""
        if self.log_dir is None:
            return
        if self._writer is None:
            # A resumed run drops the events its killed predecessor logged after the checkpoint
            # (those of the checkpoint's own step stay: a run resumed at its last step logs no batch).
            purge = None if self._moved or not self._resumed_at else self._resumed_at + 1
            self._writer = SummaryWriter(str(self.log_dir), purge_step=purge)
            if self.cfg.logger == "wandb" and self._wandb is None:
                self._wandb = start_wandb(self.run_name)
        step = self.step if step is None else step
        for name, value in metrics.items():
            self._writer.add_scalar(f"{section}/{name}", value, step)
        if self._wandb is not None and metrics:
            self._wandb.log({f"{section}/{name}": value for name, value in metrics.items()}, step=step)

    def move_logs(self, move: Callable[[], Path]) -> None:
        """Close the event file, run ``move()`` (which moves this run's files and returns where
        its log folder now is), log there from now on.  TensorBoard's writer reopens its file by
        name at every write, so it cannot follow a moved folder; the next one starts a second file
        in the same folder, which TensorBoard reads as the same run."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.log_dir = move()
        self._moved = True

    def log_hparams(self, hparams: dict, metrics: dict[str, float]) -> None:
        """The run's config and final metrics on TensorBoard's HParams tab, in this run's event
        file (``SummaryWriter.add_hparams`` would open a second one)."""
        if self.log_dir is None:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        self.log("hparams", {})  # makes the writer
        values = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
        for summary in hparams_summary(values, {f"hparams/{k}": v for k, v in metrics.items()}):
            self._writer.file_writer.add_summary(summary)
        for name, value in metrics.items():
            self._writer.add_scalar(f"hparams/{name}", value, self.step)
        if self._wandb is not None:
            self._wandb.config.update(values, allow_val_change=True)
            self._wandb.summary.update(metrics)

    def close_bar(self) -> None:
        """End the progress bar (before a final evaluation's own bars), if it was shown."""
        if self._bar is not None:
            self._bar.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
