"""A run's training state, what ``--resume`` continues from: written beside the checkpoint by every
trainer (RATE, the algorithmic tasks, language modelling), read back, checked against the config
the run resumes with, and restored.

The state holds the weights, the optimiser and scheduler states and every random generator, so a
resumed run draws what an uninterrupted one would; a trainer adds what else its batches depend on
(``extra`` of :func:`save_training_state`: RATE's window count and data digest, the language
model's carried memory and cache) and checks it itself.

Exactly, bit for bit, where the arithmetic is the same: on the CPU with the run's own
``train.threads``, device and ``train.compile`` (a resume may change them, with a warning: other
thread counts, devices and compiled kernels sum in another order); CUDA's attention and
index-accumulating backward kernels are not deterministic from run to run, so two uninterrupted
GPU runs can already differ.
"""

from __future__ import annotations

import dataclasses
import io
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rate.checkpoint import (CONFIG, STATE_FILE, WEIGHTS, CheckpointError, ResumeRefused, load_plain_tensors,
                             load_weights, provenance, read_description, save_checkpoint)
from rate.run_folder import RunFolder
from rate.config import ConfigError, atomic_write, config_row, flatten, to_dict
from rate.training import TrainConfig, TrainingLoop, lr_factor


# What a resumed run may change: how long it trains, how often and how it is evaluated (the RL
# evaluation section; the algorithmic tasks' and the language model's evaluation sizes), where it
# runs and where it logs.  Everything else (model, data, optimiser, seed) must be the run's own,
# or the resumed run is a mix of two experiments that no config describes.
RESUMABLE_CHANGES = ("train.steps", "train.eval_every", "train.threads", "train.device", "train.compile",
                     "train.keep_freed_memory", "train.logger", "eval.", "eval_samples", "eval_batch_size",
                     "valid_segments", "snapshot_every", "checkpoint_every")
# ... but for the evaluation settings that also shape the training data: the wrappers (the
# episodes' observations are flattened, their actions rescaled or shifted, as the environment's)
# and the bounds actions are rescaled from.
NOT_RESUMABLE = ("eval.wrappers", "eval.action_bounds")

_REQUIRED = ("step", "model", "optimizer", "scheduler", "rng_torch", "rng_numpy", "rng_python")


def save_training_state(out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, sched, step: int,
                        train_seconds: float, device: torch.device = torch.device("cpu"), **extra: Any) -> None:
    """Everything a resume needs, weights included, in one file written atomically: a kill at any
    moment leaves either the previous complete state or the new one (the safetensors checkpoint,
    written separately for evaluation and export, may then be a step ahead; resume ignores it).
    ``extra``: the trainer's own entries (tensors, numbers, strings, lists and dicts of them)."""
    state = {
        "step": step,
        "train_seconds": train_seconds,  # so that a resumed run reports its whole training time
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng_torch": torch.get_rng_state(),
        # GPU dropout draws from the training device's CUDA generator, which torch.get_rng_state
        # does not hold.  Only that one: asking for all would start CUDA in a CPU run.
        "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.empty(0, dtype=torch.uint8),
        "rng_numpy": {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v)
                      for k, v in zip(("name", "keys", "pos", "has_gauss", "cached"), np.random.get_state())},
        "rng_python": random.getstate(),
        **extra,
    }
    atomic_write(out / STATE_FILE, lambda tmp: write_torch(state, tmp))


def write_torch(obj: Any, path: Path) -> None:
    """``torch.save`` through memory: torch's zip writer aborts the process (a C++ exception in
    its destructor) when the disk fills under it; a plain file write raises OSError instead."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    path.write_bytes(buffer.getbuffer())


def defaults_like(cfg: Any) -> Any:
    """``cfg``'s config class at its defaults, nested configs of ``cfg``'s own classes where they
    differ from the defaults' (a baseline's model config stays a baseline's)."""
    base = type(cfg)()
    swaps = {f.name: defaults_like(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
             if dataclasses.is_dataclass(getattr(cfg, f.name))
             and type(getattr(cfg, f.name)) is not type(getattr(base, f.name))}
    return dataclasses.replace(base, **swaps) if swaps else base


def config_changes(saved: dict, cfg: Any) -> list[str]:
    """``key: saved -> now`` for each config value a resume must not change (all but
    :data:`RESUMABLE_CHANGES`, :data:`NOT_RESUMABLE` included).  A field added to the schema
    since the run was saved counts as its default there (the behaviour the run had): it blocks
    the resume only when set to something else now.  Outer keys first (``model.kind`` before
    ``model.backbone.*``): a refusal names only the first few, and the outer ones say most."""
    before, now = flatten("", saved, {}), config_row(cfg)
    defaults = config_row(defaults_like(cfg))
    before |= {key: defaults[key] for key in set(now) - set(before) if key in defaults}
    keys = sorted(set(before) & set(now), key=lambda key: (key.count("."), key))
    return [f"{key}: {before[key]!r} -> {now[key]!r}" for key in keys
            if (not key.startswith(RESUMABLE_CHANGES) or key.startswith(NOT_RESUMABLE)) and before[key] != now[key]
            and not (key == "dataset_id" and _same_folder(before[key], now[key]))]


def _same_folder(a: Any, b: Any) -> bool:
    """Whether two dataset ids name one existing folder (a run saved before folders were stored
    absolute keeps the relative path it was given)."""
    try:
        return Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve() and Path(str(b)).is_dir()
    except (OSError, RuntimeError, ValueError):
        return False


def warn_schedule_change(steps_before: int | None, tc: TrainConfig, step: int) -> None:
    """A warning when a resume changes train.steps (allowed: to train longer) and with it the
    cosine schedule's horizon: the learning rate jumps, and the run is not the one a config of the
    new length trains from the start.  ``step``: the steps trained; the first batch of the resumed
    run still takes the rate saved with them, the new schedule rules from the next (step + 1)."""
    if steps_before is None or steps_before == tc.steps:
        return
    at = step + 1
    before, now = lr_factor(dataclasses.replace(tc, steps=int(steps_before)), at), lr_factor(tc, at)
    if abs(before - now) > 1e-9:
        # (a change too small to show in 3 digits is not called a jump: "from 1 to 1")
        jump = (f", so at step {at} the rate jumps from {before:.3g} to {now:.3g} x train.lr"
                if f"{before:.3g}" != f"{now:.3g}" else f" (step {at} still at {now:.3g} x train.lr, the steps after on "
                                                        "the new schedule)")
        warnings.warn(f"train.steps {steps_before} -> {tc.steps} on resume: the learning-rate schedule now ends at step "
                      f"{tc.steps}{jump} (a run not the same as one of {tc.steps} steps from the start)", stacklevel=3)


def warn_arithmetic_change(saved_train: dict, tc: TrainConfig) -> None:
    """A warning when a resume changes how the same steps are computed (``train.threads``,
    ``device`` or ``compile``: allowed, the run goes on): the sums run in another order, so the
    resumed run is not bit for bit the uninterrupted one."""
    changed = [f"train.{key} {saved_train[key]!r} -> {getattr(tc, key)!r}" for key in ("threads", "device", "compile")
               if key in saved_train and saved_train[key] != getattr(tc, key)]
    if changed:
        warnings.warn(f"{', '.join(changed)} on resume: the same training computed in another order (threads, "
                      "device or compiled kernels round differently), so the run continues, but not bit for bit as "
                      "an uninterrupted one", stacklevel=3)


def read_training_state(out: Path, kind: str, cfg: Any) -> dict:
    """The training state in run folder ``out``, checked but not applied (:func:`restore`).  Only
    the folder's ``config.json`` is read besides it (the state holds the weights): CheckpointError
    when it describes another kind of model than ``kind``; ResumeRefused (a CheckpointError) when
    it is missing (a first checkpoint cut short), the run was trained with another config than
    ``cfg`` (:data:`RESUMABLE_CHANGES` aside), or its training state is missing or unreadable."""
    # The description only: the weights come from the training state, and a kill between the
    # checkpoint's two renames leaves new weights beside the previous config.json (the same config).
    if not (out / CONFIG).is_file():  # a first checkpoint cut short: nothing to continue
        raise ResumeRefused(f"{out}: not a checkpoint (missing {CONFIG}); nothing to resume")
    meta = read_description(out, kind)  # (another kind of checkpoint: CheckpointError)
    changes = config_changes(meta["config"], cfg)
    if changes:
        raise ResumeRefused(f"{out} was trained with another config ({'; '.join(changes[:4])}"
                            f"{'; ...' if len(changes) > 4 else ''}); resume with the config and overrides it was "
                            "started with, or train into a new --out")
    path = out / STATE_FILE
    if not path.is_file():
        raise ResumeRefused(f"{out}: no {STATE_FILE} to resume from")
    try:
        state = load_plain_tensors(path)
    except (OSError, MemoryError) as err:
        # The file could not be read now (I/O error, permissions, memory), which says nothing of
        # its content: not ResumeRefused, on which a sweep would start the run over and lose it.
        raise CheckpointError(f"{path}: cannot read the training state now ({type(err).__name__}: {err}); the "
                              "run is left as it is") from err
    except ValueError as err:  # a truncated or foreign file
        raise ResumeRefused(f"{path}: unreadable training state: {err}") from err
    missing = [k for k in _REQUIRED if not isinstance(state, dict) or k not in state]
    if missing:
        raise ResumeRefused(f"{path}: not a training state of this library (no {', '.join(missing)})")
    warn_schedule_change(meta["config"].get("train", {}).get("steps"), cfg.train, int(state["step"]))
    warn_arithmetic_change(meta["config"].get("train", {}), cfg.train)
    return state


def restore(state: dict, model: torch.nn.Module, opt: torch.optim.Optimizer, sched,
            device: torch.device = torch.device("cpu"), path: Path | str = STATE_FILE) -> tuple[int, float]:
    """Load ``state``'s weights, optimiser, scheduler and generators; returns the step and the
    seconds trained so far.  ``path``: the file named in a weights error."""
    load_weights(model, state["model"], path)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng_torch"])
    cuda_state = state.get("rng_cuda")
    if device.type == "cuda" and cuda_state is not None and cuda_state.numel():
        torch.cuda.set_rng_state(cuda_state, device)  # (a run saved on the CPU keeps CUDA's fresh seed)
    n = state["rng_numpy"]
    np.random.set_state((n["name"], n["keys"].numpy(), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(state["rng_python"])
    return int(state["step"]), float(state.get("train_seconds", 0.0))


def continue_at(loop: TrainingLoop, out: Path, step: int) -> None:
    """Start ``loop`` at ``step``, the steps the run in ``out`` has trained; ConfigError when the
    config now trains fewer (a row would record fewer steps than the model has had)."""
    if step > loop.cfg.steps:
        raise ConfigError(f"{out} has trained {step} steps; train.steps {loop.cfg.steps} cannot resume it (a row would "
                          "record fewer steps than the model has had)")
    if step == loop.cfg.steps:
        warnings.warn(f"{out} has trained all {step} steps: nothing to train, its final evaluation runs again "
                      "(raise train.steps to train on)", stacklevel=2)
    loop.start_at(step)


def commit_checkpoint(folder: RunFolder, loop: TrainingLoop) -> None:
    """After a complete checkpoint the run stays if it fails later (:class:`RunFolder`): a run
    that replaces an earlier one takes its place (the first time), a new run is kept."""
    if folder.replacing:
        loop.move_logs(lambda: folder.commit() / "tb")
    else:
        folder.commit()


def remove_stale_temporaries(out: Path) -> None:
    """Delete the temporary files that a killed run left behind (never a complete file): those of
    its checkpoints, in the run folder and the checkpoint folders inside it (``checkpoint_best``,
    ``snapshots/step_N``).  The caller holds the folder (no other trainer writes it)."""
    for name in (WEIGHTS, CONFIG, STATE_FILE):
        for tmp in out.rglob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


class ResumableRun:
    """The run folder of a trainer that checkpoints as it trains and can resume (the algorithmic
    tasks, language modelling): a :class:`RunFolder` (a run it replaces goes once the new one has
    its first checkpoint; one that fails before then leaves the folder as it found it), the resume
    of the run left there, and each checkpoint: weights and description (``kind``, ``cfg``), then
    the training state.  ``out`` None: a run in memory, nothing written::

        run = ResumableRun(out, CHECKPOINT_KIND, cfg, overwrite)
        loop = TrainingLoop(model, cfg.train, run.log_dir, run_name=run.name)
        state = run.resume(model, loop, device) if resume else {}
        ...                                  # every evaluation:
        run.save(model, loop, seconds, device, **trainer_entries)
        run.finish(model, loop, metrics)     # the last checkpoint, with the run's results

    The caller calls :meth:`abandon` when the run fails.  ``data_fingerprint``: a digest of the
    data the run reads where a config alone does not fix it (a corpus prepared under a folder);
    a resume on other data is refused."""

    def __init__(self, out: Path | None, kind: str, cfg: Any, overwrite: bool = False,
                 data_fingerprint: str | None = None):
        self.kind, self.cfg, self.data_fingerprint = kind, cfg, data_fingerprint
        self.name = None if out is None else str(out)  # the run folder as named: the run's name where logged
        self.folder = RunFolder(out, overwrite) if out is not None else None
        if self.folder is not None and self.folder.out.is_dir():
            remove_stale_temporaries(self.folder.out)

    @property
    def log_dir(self) -> Path | None:
        """Where the run's TensorBoard events go (None for a run in memory)."""
        return None if self.folder is None else self.folder.path / "tb"

    def resume(self, model: torch.nn.Module, loop: TrainingLoop, device: torch.device) -> dict:
        """Continue the run in the folder: weights, optimiser, scheduler, generators and the loop's
        step restored (:func:`read_training_state` says what it refuses); returns the training
        state for the trainer's own entries and ``train_seconds``."""
        if self.folder is None:
            raise ValueError("a run without a folder (out None) has nothing to resume")
        out = self.folder.out
        state = read_training_state(out, self.kind, self.cfg)
        saved = state.get("data_fingerprint")
        if saved is not None and self.data_fingerprint is not None and saved != self.data_fingerprint:
            raise ResumeRefused(f"{out / STATE_FILE}: the run trained on other data than its config's now holds (it "
                                "was changed or prepared anew); its batches would not continue: train into a new --out")
        step, _ = restore(state, model, loop.opt, loop.sched, device, out / STATE_FILE)
        continue_at(loop, out, step)
        return state

    def save(self, model: torch.nn.Module, loop: TrainingLoop, train_seconds: float, device: torch.device,
             **entries: Any) -> None:
        """The checkpoint and training state at the loop's step (``entries``: the trainer's own, in
        the training state); the first one puts the run in place of any it replaces."""
        if self.folder is None:
            return
        save_checkpoint(self.folder.path, model, self.kind, to_dict(self.cfg), {"step": loop.step, **provenance()})
        if self.data_fingerprint is not None:
            entries["data_fingerprint"] = self.data_fingerprint
        save_training_state(self.folder.path, model, loop.opt, loop.sched, loop.step, train_seconds, device, **entries)
        commit_checkpoint(self.folder, loop)
        loop.pause_clock()

    def finish(self, model: torch.nn.Module, loop: TrainingLoop, metrics: dict) -> None:
        """The run's last checkpoint, its final ``metrics`` in the description."""
        if self.folder is not None:
            save_checkpoint(self.folder.path, model, self.kind, to_dict(self.cfg),
                            {"step": loop.step, "metrics": metrics, **provenance()})

    def abandon(self) -> None:
        """After a failure: a run that never checkpointed leaves nothing (:meth:`RunFolder.abandon`);
        one that did stays, resumable."""
        if self.folder is not None:
            self.folder.abandon()
