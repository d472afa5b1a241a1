"""Teacher-forced action accuracy of a checkpoint: at the end of its own episodes, or at the
decision steps of oracle episodes grouped by memory hops.

    python -m eval.teacher_forced CHECKPOINT [--episodes 300] [--last 8] [--constant-rtg VALUE]
    python -m eval.teacher_forced CHECKPOINT --by-boundaries [--lengths 13 21 31] [--episodes 300]

The model reads a whole episode (observations, the previous actions and the returns-to-go) and
predicts every action; an action counts as right when its argmax equals the episode's.

Default mode: the first ``--episodes`` episodes of the run's dataset; printed is the accuracy at
each of the last ``--last`` steps, where memory tasks take their decision.

``--by-boundaries``: ``--episodes`` oracle episodes per length (default the run's
``eval.final_lengths``), played in the run's evaluation environment, whose ``info`` reports
``cue_step`` (the step that last showed the cue) and ``decision`` (the action now depends on
it): T-Maze, AAR, MiniGrid-Memory.  Accuracy at the decision steps is grouped by b = the number of
segment boundaries (K = ``model.segment_steps``) between cue and decision.  A memory model
carries a cue across the b its training data showed it; this table tells which b those were.

``--constant-rtg VALUE`` replaces the returns-to-go by VALUE, as a rollout conditions on its
target until the first reward (a rollout subtracts each reward from it; in tasks that pay only at
the end, T-Maze and AAR, the two agree up to the decision): accuracy that drops when the true returns-to-go are hidden means the model reads the
decision from the return (a leak of the future into the offline data), not from memory.
Discrete actions only.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections import defaultdict

import numpy as np
import torch
from rate_envs.recording import play_episode

from rate.checkpoint import CheckpointError
from rate.config import ConfigError
from rate.data.env_plugins import load_env_plugins
from rate.data.episodes import DatasetError, Episode, returns_to_go
from rate.rl.experiment import RATEExperimentConfig, eval_lengths, load_dataset_for, load_policy_model, make_eval_env
from rate.training import nonnegative_int, positive_int, setup_process
from rate.cli.run import interruptible


@torch.no_grad()
def predict(model, episode: Episode, rtg_scale: float, constant_rtg: float | None = None) -> np.ndarray:
    """(T,) argmax action at every step of ``episode``, read teacher-forced in one forward."""
    rtg = returns_to_go(episode.rewards, rtg_scale)
    if constant_rtg is not None:
        rtg = np.full_like(rtg, constant_rtg / rtg_scale)
    out, _ = model(torch.as_tensor(episode.observations[None], dtype=torch.float32),
                   torch.as_tensor(episode.actions[None], dtype=torch.long),
                   torch.as_tensor(rtg[None, :, None], dtype=torch.float32),
                   torch.ones(1, len(episode), dtype=torch.bool))
    return out[0].argmax(-1).numpy()


def accuracy_from_end(model, episodes: list[Episode], rtg_scale: float, last: int,
                      constant_rtg: float | None = None) -> np.ndarray:
    """(last,) accuracy at the last, second-to-last, ... step over the episodes that long (NaN where
    no episode is)."""
    hits, counts = np.zeros(last), np.zeros(last)
    for e in episodes:
        pred = predict(model, e, rtg_scale, constant_rtg)
        k = min(last, len(e))
        hits[:k] += pred[::-1][:k] == e.actions[::-1][:k]
        counts[:k] += 1
    return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


def oracle_module(env):
    """The module that defines the task and its ``episode_oracle``: the environment's own, or that
    of a wrapper around it (the MiniGrid task wraps minigrid's environment); None without one."""
    while True:
        module = importlib.import_module(type(env).__module__)
        if hasattr(module, "episode_oracle"):
            return module
        if not hasattr(env, "env"):
            return None
        env = env.env


def oracle_episodes(cfg: RATEExperimentConfig, length: int | None, n: int, seed: int) -> list[tuple[Episode, list[dict]]]:
    """``n`` episodes of the evaluation environment at ``length`` played by its module's
    ``episode_oracle``, each with the ``info`` of every observation (reset's first)."""
    load_env_plugins()
    try:
        env = make_eval_env(cfg.eval, length)
    except Exception as err:  # the registry's errors, or whatever the constructor raises (a bad --lengths value)
        raise ValueError(f"cannot make {cfg.eval.env_id} at {cfg.eval.length_kwarg}={length}: "
                         f"{type(err).__name__}: {err}") from err
    module = oracle_module(env)
    if module is None:
        env.close()
        raise ValueError(f"{cfg.eval.env_id} has no oracle (an episode_oracle function in the module of its "
                         f"environment or of a wrapper around it: {type(env.unwrapped).__module__}), so "
                         "--by-boundaries cannot play it")
    rng = np.random.default_rng(seed)
    episodes = []
    try:
        for _ in range(n):
            choose = module.episode_oracle(rng)
            played = play_episode(env, choose, int(rng.integers(0, 2**31 - 1)))
            if "cue_step" not in played.infos[0] or "decision" not in played.infos[0]:
                raise ValueError(f"{cfg.eval.env_id} does not report cue_step and decision in its info")
            episode = Episode(np.stack(played.observations[:-1]), np.array(played.actions), np.array(played.rewards))
            episodes.append((episode, played.infos[:-1]))
    finally:
        env.close()
    return episodes


def accuracy_by_boundaries(model, episodes: list[tuple[Episode, list[dict]]], segment_steps: int, rtg_scale: float,
                           constant_rtg: float | None = None) -> dict[int, tuple[int, int]]:
    """{b: (right, decisions)} over every decision step whose cue was seen, b = the segment
    boundaries (segments of ``segment_steps`` from the episode start) between cue and decision."""
    tally = defaultdict(lambda: [0, 0])
    for episode, infos in episodes:
        pred = predict(model, episode, rtg_scale, constant_rtg)
        for t, info in enumerate(infos):
            if info["decision"] and info["cue_step"] >= 0:
                b = t // segment_steps - info["cue_step"] // segment_steps
                tally[b][0] += int(pred[t] == episode.actions[t])
                tally[b][1] += 1
    return {b: (right, n) for b, (right, n) in sorted(tally.items())}


def boundary_table(by_length: dict[int | None, dict[int, tuple[int, int]]]) -> str:
    """Markdown: one row per b, one column per length; cells 'accuracy (decisions)'."""
    hops = sorted({b for table in by_length.values() for b in table})
    names = ["default" if t is None else str(t) for t in by_length]
    lines = ["| boundaries b | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]

    def cell(entry: tuple[int, int] | None) -> str:
        return "-" if entry is None else f"{entry[0] / entry[1]:.3f} ({entry[1]})"

    for b in hops:
        lines.append(f"| {b} | " + " | ".join(cell(table.get(b)) for table in by_length.values()) + " |")
    return "\n".join(lines)


@interruptible
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.teacher_forced", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--episodes", type=int, default=300, help="dataset episodes, or oracle episodes per length")
    parser.add_argument("--last", type=int, default=8, help="steps from the episode end to report")
    parser.add_argument("--by-boundaries", action="store_true",
                        help="accuracy at the decision of oracle episodes, by segment boundaries between cue and decision")
    parser.add_argument("--lengths", type=int, nargs="+", help="with --by-boundaries: the run's eval.length_kwarg values "
                        "(default its eval.final_lengths)")
    parser.add_argument("--seed", type=nonnegative_int, help="with --by-boundaries: seed of the oracle episodes "
                                                             "(default 0)")
    parser.add_argument("--constant-rtg", type=float, help="condition on this return instead of the data's")
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.last < 1:
        parser.error("--episodes and --last must be positive")
    if args.constant_rtg is not None and not math.isfinite(args.constant_rtg):  # (NaN logits: every argmax 0)
        parser.error(f"--constant-rtg must be a finite number, got {args.constant_rtg}")
    if not args.by_boundaries and (args.lengths or args.seed is not None):  # (they would be ignored)
        parser.error("--lengths and --seed choose the oracle episodes of --by-boundaries; without it the "
                     "dataset's own episodes are read")
    setup_process(0, args.threads)
    rtg = "the episodes' returns-to-go" if args.constant_rtg is None else f"returns-to-go fixed at {args.constant_rtg}"
    left_out = 0  # episodes longer than a window policy's window
    try:
        model, cfg = load_policy_model(args.checkpoint)
        if cfg.model.act_kind != "discrete":
            raise ValueError("teacher-forced accuracy needs discrete actions")
        if args.by_boundaries:
            if cfg.policy == "window":
                # One forward over a whole episode is not what such a policy plays beyond its window.
                raise ValueError(f"{args.checkpoint} acts from a sliding window of {cfg.model.window_steps} steps "
                                 "(policy: window), not across segment boundaries; --by-boundaries groups the "
                                 "decisions of a model that carries memory from segment to segment")
            k = cfg.model.segment_steps
            lengths = args.lengths or eval_lengths(cfg.eval, final=True)
            by_length = {t: accuracy_by_boundaries(model, oracle_episodes(cfg, t, args.episodes, args.seed or 0), k,
                                                   cfg.model.rtg_scale, args.constant_rtg) for t in lengths}
        else:
            episodes = load_dataset_for(cfg)[: args.episodes]
            if cfg.policy == "window":  # one forward over a longer episode is not what the policy plays
                fitting = [e for e in episodes if len(e) <= cfg.model.window_steps]
                if not fitting:
                    raise ValueError(f"{args.checkpoint} acts from a sliding window of {cfg.model.window_steps} "
                                     "steps and every episode is longer: nothing to read teacher-forced as it plays")
                left_out, episodes = len(episodes) - len(fitting), fitting
    except (CheckpointError, ConfigError, DatasetError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.by_boundaries:
        print(f"{args.checkpoint}: {args.episodes} oracle episodes of {cfg.eval.env_id} per {cfg.eval.length_kwarg}, "
              f"{rtg}, segments of K = {k} steps; accuracy at the decision by boundaries b between cue and decision")
        print(boundary_table(by_length))
        return 0
    acc = accuracy_from_end(model, episodes, cfg.model.rtg_scale, args.last, args.constant_rtg)
    print(f"{args.checkpoint}: {len(episodes)} episodes of {cfg.dataset_id}, {rtg}"
          + (f" ({left_out} longer than the policy's window of {cfg.model.window_steps} steps left out)"
             if left_out else ""))
    print("steps from the end: " + " ".join(f"{-k:>6}" for k in range(1, args.last + 1)))
    print("accuracy:           " + " ".join(f"{a:6.3f}" for a in acc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
