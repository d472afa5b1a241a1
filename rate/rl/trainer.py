"""Offline training of RATE (and its Transformer baselines) from a Minari dataset.

    python -m train CONFIG [key=value ...] [--out runs/tmaze/NAME] [--resume] [--csv FILE]
    torchrun --nproc_per_node 2 -m train CONFIG ...      # data parallel, same command line

Batches are a pure function of (seed, step): the window order of epoch e is a permutation drawn
from (seed, e) (random windows are one per step of the data, rate/rl/windows.py).  Together with
the saved optimiser, scheduler and random-generator states this makes ``--resume`` continue
exactly like an uninterrupted run.  Every ``train.eval_every`` steps: rollouts at ``eval.lengths`` (TensorBoard
``eval/success_T``), then the checkpoint (safetensors + JSON) and ``training_state.pt`` are
written atomically.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from rate.checkpoint import BEST_DIR, WEIGHTS, CheckpointError, ResumeRefused, read_checkpoint, save_checkpoint
from rate.run_folder import RunFolder, claimed_for_training
from rate.config import ConfigError, config_row, to_dict
from rate.rl.experiment import (CHECKPOINT_KIND, EvalConfig, RATEExperimentConfig, build_rate, check_eval_envs,
                                eval_lengths, evaluate_lengths, load_dataset_for)
from rate.rl.rollout import length_suffix, short_result
from rate.distributed import Group, join_group
from rate.rl.model import TOKENS_PER_STEP, RATEModel
from rate.resume import (STATE_FILE, commit_checkpoint, continue_at, read_training_state, remove_stale_temporaries,
                         restore, save_training_state)
from rate.training import TrainingLoop, compiled, resolve_device, seed_batch, setup_process
from rate.rl.windows import TrajectoryWindows


def batch_items(n_windows: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Window indices of batch ``step``: epochs are seeded permutations, read in order."""
    per_epoch = max(1, n_windows // batch_size)
    epoch, k = divmod(step, per_epoch)
    perm = _epoch_order(n_windows, seed, epoch)
    return perm[k * batch_size : (k + 1) * batch_size] if n_windows >= batch_size else perm


@functools.lru_cache(maxsize=1)
def _epoch_order(n_windows: int, seed: int, epoch: int) -> np.ndarray:
    """One epoch's permutation, made once (random windows are one per step of the data: millions)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n_windows)
    perm.flags.writeable = False
    return perm


def train_step(net, model: RATEModel, cfg: RATEExperimentConfig, batch: dict, loop: TrainingLoop,
               group: Group = Group()) -> float:
    """One batch (this rank's share); returns the mean loss over the global batch.

    net: ``model`` or its DistributedDataParallel wrapper (which synchronises the gradients).
    bptt: one step over whole windows; official: memory detached and one step per segment.
    """
    obs, actions, rtg, valid = batch["obs"], batch["actions"], batch["rtg"], batch["valid"]

    def optimise(out, seg_actions, seg_valid) -> float:
        with loop.autocast():
            loss, logged = group.scale_loss(model.head.loss(out, seg_actions, seg_valid), seg_valid.sum())
        loop.optimise(loss)
        return logged

    if cfg.training_mode == "bptt":
        with loop.autocast():
            # detach_state: the returned state (dropped) would hold the last memory update's graph,
            # which DDP walks and counts as used: with bptt_depth 0, or one segment, the loss never
            # reaches the valve and DDP waits for its gradients.  The outputs' gradients are the same.
            out, _ = net(obs, actions, rtg, valid, detach_state=True)
        return optimise(out, actions, valid)
    k, state, losses, counts = cfg.model.segment_steps, None, [], []
    for start in range(0, obs.shape[1], k):
        seg = slice(start, start + k)
        count = group.total(valid[:, seg].sum()).item()  # valid steps of this segment over the ranks
        if not count:  # no rank has a step left
            break
        # detach_state: the reference code's one-segment truncation
        with loop.autocast():
            out, state = net(obs[:, seg], actions[:, seg], rtg[:, seg], valid[:, seg], state, detach_state=True)
        counts.append(count)
        losses.append(optimise(out, actions[:, seg], valid[:, seg]))
    # weighted by the segments' valid steps: windows are padded at the end, so later segments hold
    # fewer, and the unweighted mean of the segments' means is not the batch's mean loss
    return float(np.average(losses, weights=counts))


def load_training_state(out: Path, model: RATEModel, opt, sched, cfg: RATEExperimentConfig,
                        device: torch.device = torch.device("cpu"), windows: int | None = None,
                        data_fingerprint: str | None = None, world: int = 1) -> tuple[int, float]:
    """Restore weights, optimiser, scheduler and generators from ``out``
    (:func:`rate.resume.read_training_state` says what it refuses); returns the step and the
    seconds trained so far.  Refused too (ResumeRefused) when the run drew its batches from other
    data: another number of training windows than ``windows`` (the data changed, or how windows
    are cut) or other episodes than ``data_fingerprint`` says.  ``world``: the processes resuming
    it (another number than trained it warns: not exact)."""
    state = read_training_state(out, CHECKPOINT_KIND, cfg)
    path = out / STATE_FILE
    saved = state.get("windows")
    if saved is None and windows is not None and cfg.window_start == "random":
        # Saved before random windows became one per step (2026-12-05): they were one per episode.
        raise ResumeRefused(f"{path}: this run drew random windows the way of an older version of the library "
                            "(one per episode); its batches cannot continue: train into a new --out")
    if saved is not None and windows is not None and int(saved) != windows:
        raise ResumeRefused(f"{path}: the run drew its batches from {int(saved)} training windows, the data now "
                            f"gives {windows} (another dataset, or another way of cutting windows); its batches "
                            "cannot continue: train into a new --out")
    saved_data = state.get("data_fingerprint")
    if saved_data is not None and data_fingerprint is not None and saved_data != data_fingerprint:
        raise ResumeRefused(f"{path}: the run trained on other episodes than {cfg.dataset_id} now holds (the "
                            "dataset was changed or regenerated under its id); its batches and observation "
                            "statistics would not continue: train into a new --out")
    saved_world = int(state.get("world", 1))
    if saved_world != world:  # each rank seeds its own dropout over its own rows; the reduction order changes too
        warnings.warn(f"{out} was trained on {saved_world} process{'es' if saved_world > 1 else ''} and resumes on "
                      f"{world}: the same batches and schedule, but other dropout masks and another order of the "
                      "gradient sums, so not exactly the run an uninterrupted one would be", stacklevel=2)
    return restore(state, model, opt, sched, device, path)


def save_resumable(folder: RunFolder, loop: TrainingLoop, model: RATEModel, cfg: RATEExperimentConfig, extra: dict,
                   train_seconds: float, device: torch.device, windows: TrajectoryWindows, fingerprint: str,
                   world: int) -> None:
    """The run folder's checkpoint and training state at this step (what --resume reads)."""
    save_checkpoint(folder.path, model, CHECKPOINT_KIND, to_dict(cfg), extra)
    save_training_state(folder.path, model, loop.opt, loop.sched, loop.step, train_seconds, device,
                        windows=len(windows), data_fingerprint=fingerprint, world=world)


def save_snapshot(folder: RunFolder, model: RATEModel, cfg: RATEExperimentConfig, step: int, extra: dict) -> None:
    """A copy of the checkpoint in snapshots/step_STEP at every ``snapshot_every`` steps (with or
    without evaluation: a multiple of eval_every, so where the run checkpoints)."""
    if cfg.snapshot_every and step % cfg.snapshot_every == 0:
        save_checkpoint(folder.path / "snapshots" / f"step_{step}", model, CHECKPOINT_KIND, to_dict(cfg), extra)


def eval_scalars(results: dict) -> dict[str, float]:
    """The evaluation per length as TensorBoard scalars: mean return, and success rate and
    normalised score where defined (POPGym and MuJoCo are read by their return)."""
    return {f"{kind}{length_suffix(t)}": r[kind] for t, r in results.items()
            for kind in ("success", "return", "normalized_score") if r.get(kind) is not None}


def selection_score(results: dict) -> float | None:
    """What ``checkpoint_best`` maximises: the success rate averaged over the evaluated lengths
    where the task defines success, else the mean return."""
    if not results:
        return None
    rows = list(results.values())
    key = "success" if all(r.get("success") is not None for r in rows) else "return"
    return float(np.mean([r[key] for r in rows]))


# The evaluation settings a selection score depends on: a score under others is not comparable.
SCORE_SETTINGS = ("env_id", "length_kwarg", "env_kwargs", "wrappers", "env_wrappers", "action_bounds", "lengths",
                  "episodes", "seed", "target_return", "sample")


def read_best_score(path: Path, ev: EvalConfig | None = None) -> float | None:
    """The score of a run's ``checkpoint_best`` (None when it has none), so a resumed run keeps it;
    with ``ev``, None (and a warning) when that score was measured under other evaluation settings
    (:data:`SCORE_SETTINGS`: a resume may change ``eval.*``), so the next evaluation replaces it."""
    try:
        meta, _ = read_checkpoint(path, CHECKPOINT_KIND)
    except CheckpointError:
        return None
    score = meta["extra"].get("score")
    if not (isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score)):
        score = None  # (none recorded, or not a number: the next evaluation sets it)
    if ev is not None and score is not None:
        before, now = meta["config"].get("eval", {}), to_dict(ev)
        changed = [key for key in SCORE_SETTINGS if key in before and before[key] != now[key]]
        if changed:
            warnings.warn(f"{path} was chosen under other evaluation settings ({', '.join(f'eval.{k}' for k in changed)}"
                          "): the next evaluation replaces it", stacklevel=2)
            return None
    return score


def run_provenance(cfg: RATEExperimentConfig) -> dict[str, str]:
    """What the checkpoint records of where it came from: package version, git commit, dataset."""
    from rate.checkpoint import provenance

    return provenance() | {"dataset_id": cfg.dataset_id}


def train(cfg: RATEExperimentConfig, out: Path, resume: bool = False, progress: bool = True,
          overwrite: bool = False) -> tuple[RATEModel, dict]:
    """Train (on every rank when started by torchrun); rank 0 logs, evaluates and checkpoints.
    ``overwrite``: an earlier run in ``out`` is replaced once this run's first checkpoint is
    complete (:class:`rate.run_folder.RunFolder`); a folder that holds anything else is refused
    unless ``resume`` (:func:`rate.run_folder.check_run_dir`), and it is held while the run trains."""
    with claimed_for_training(out, resume, overwrite):  # (before the group: no rank has written yet)
        tc = cfg.train
        setup_process(tc.seed, tc.threads)
        group, device_name = join_group(tc.device)
        try:
            result = _train(cfg, out, resume, progress and group.is_main, group, resolve_device(device_name),
                            overwrite)
            # Every rank leaves together, after rank 0's last evaluation and writes: a rank that tears
            # its process group down while a peer still holds the connection can die at exit with
            # SIGABRT ("terminate called without an active exception").  Only on success: after an
            # error on one rank the others may be inside another collective.
            group.barrier()
            return result
        finally:
            group.close()


def _train(cfg: RATEExperimentConfig, out: Path, resume: bool, progress: bool, group: Group,
           device: torch.device, overwrite: bool = False) -> tuple[RATEModel, dict]:
    tc = cfg.train
    if tc.batch_size % group.world:
        raise ConfigError(f"train.batch_size {tc.batch_size} does not split over {group.world} processes")
    episodes = load_dataset_for(cfg)
    check_eval_envs(cfg)
    model = build_rate(cfg, episodes).to(device)
    windows = TrajectoryWindows(episodes, cfg.model.window_steps, cfg.model.rtg_scale, cfg.window_start,
                                cfg.window_stride or None, cfg.model.action_pad)
    if len(windows) < group.world:
        raise ConfigError(f"{len(windows)} training windows cannot feed {group.world} processes")
    if len(windows) < tc.batch_size and group.is_main:
        warnings.warn(f"{cfg.dataset_id} gives {len(windows)} training windows, fewer than train.batch_size "
                      f"{tc.batch_size}: every batch holds those {len(windows)}", stacklevel=2)
    folder = RunFolder(out, overwrite and group.is_main)
    try:
        return _train_in(cfg, out, folder, resume, progress, group, device, model, windows)
    except BaseException:
        folder.abandon()  # failed before its first checkpoint: an earlier run stays, a new one leaves nothing
        raise


def _train_in(cfg: RATEExperimentConfig, out: Path, folder: RunFolder, resume: bool, progress: bool, group: Group,
              device: torch.device, model: RATEModel, windows: TrajectoryWindows) -> tuple[RATEModel, dict]:
    tc = cfg.train
    loop = TrainingLoop(model, tc, folder.path / "tb" if group.is_main else None, "train", progress,
                        run_name=str(out))
    if group.is_main:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)
    group.barrier()
    fingerprint = windows.fingerprint()
    step, seconds_before = (load_training_state(out, model, loop.opt, loop.sched, cfg, device, len(windows),
                                                fingerprint, group.world) if resume else (0, 0.0))
    continue_at(loop, out, step)
    # Some parameters get no gradient in some configurations (the valve in official mode or with
    # bptt_depth 0, the last memory update of a window), which DDP must be told.
    net = compiled(group.wrap(model, device, find_unused=True), tc)
    start = time.time() - seconds_before
    eval_results: dict = {}
    best = read_best_score(out / BEST_DIR, cfg.eval) if resume else None
    model.train()
    while not loop.done:
        seed_batch(tc.seed, loop.step, group.rank)
        items = batch_items(len(windows), tc.batch_size, tc.seed, loop.step)
        batch = windows.batch(items)  # the global batch
        tokens = int(batch["valid"].sum()) * TOKENS_PER_STEP
        batch = {k: v.to(device) for k, v in group.share(batch).items()}
        loss = train_step(net, model, cfg, batch, loop, group)
        loop.end_batch(loss, tokens=tokens)
        if loop.evaluation_due and cfg.eval.episodes and group.is_main:
            eval_results = evaluate_lengths(model, cfg)
            model.train()
            loop.log("eval", eval_scalars(eval_results))
            loop.bar.set_postfix(loss=f"{loss:.4f}", **{f"T{t}" if t else "eval": short_result(r)
                                                        for t, r in eval_results.items()})
            extra = {"step": loop.step, "eval": eval_results, **run_provenance(cfg)}
            score = selection_score(eval_results)
            # The best checkpoint and the snapshot before the training state: a run killed between
            # them resumes before this step and evaluates it again, instead of skipping it.
            if score is not None and (best is None or score > best):  # the first of equals stays
                best = score
                save_checkpoint(folder.path / BEST_DIR, model, CHECKPOINT_KIND, to_dict(cfg), extra | {"score": score})
            save_snapshot(folder, model, cfg, loop.step, extra)
            save_resumable(folder, loop, model, cfg, extra, time.time() - start, device, windows, fingerprint,
                           group.world)
            commit_checkpoint(folder, loop)
            loop.pause_clock()
        elif (cfg.checkpoint_every and loop.step % cfg.checkpoint_every == 0
              or loop.evaluation_due and not cfg.eval.episodes) and group.is_main:  # (no evaluation: checkpoint only)
            extra = {"step": loop.step, **run_provenance(cfg)}
            save_snapshot(folder, model, cfg, loop.step, extra)
            save_resumable(folder, loop, model, cfg, extra, time.time() - start, device, windows, fingerprint,
                           group.world)
            commit_checkpoint(folder, loop)
            loop.pause_clock()
    loop.close_bar()  # before the final evaluation's own bars
    train_seconds = round(time.time() - start, 1)
    ev = cfg.eval
    if ev.episodes and group.is_main:  # (eval.episodes 0: no evaluation; the last checkpoint is the run's)
        if ev.final_lengths or ev.final_episodes:
            eval_results = evaluate_lengths(model, cfg, eval_lengths(ev, final=True),
                                            ev.final_episodes or ev.episodes, progress=progress)
            loop.log("final", eval_scalars(eval_results))
            save_checkpoint(out, model, CHECKPOINT_KIND, to_dict(cfg),
                            {"step": loop.step, "eval": eval_results, **run_provenance(cfg)})
        elif not eval_results:
            # Resumed at its last step (killed after the last checkpoint, before its row): evaluate
            # again, so that the row it writes has its results.
            eval_results = evaluate_lengths(model, cfg)
    if group.is_main and not (folder.path / WEIGHTS).is_file():
        # A run resumed at its last step whose model.safetensors was lost: its weights came from
        # the training state, and the folder gets its checkpoint back.
        save_checkpoint(folder.path, model, CHECKPOINT_KIND, to_dict(cfg), {"step": loop.step, **run_provenance(cfg)})
    if group.is_main:
        loop.log_hparams(config_row(cfg), eval_scalars(eval_results))
    loop.close()
    return model, {"train_seconds": train_seconds, "steps": loop.step, "eval": eval_results, "rank": group.rank}
