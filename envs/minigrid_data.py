"""Offline MiniGrid-Memory dataset: oracle episodes with a fraction of random actions, as Minari.

    python -m envs.minigrid_data --size 13 --episodes 1000 --noise 0.1 [--observation symbolic|onehot|rgb]
        [--view-size 3] [--tile-size 12] [--reward timed|success] [--seed 0] [--dataset-id ...]
    python -m envs.minigrid_data --sizes 13 21 31 ...     # each episode's grid size drawn from the list

The oracle last sees the cue size - 2 steps before its decision, so one grid size trains a memory
model on one or two segment-boundary counts between cue and decision (13 x 13 in segments of 10
steps: 1 or 2), and larger grids need more; a mixture of sizes covers the counts the evaluation
sizes need (``python -m eval.teacher_forced CKPT --by-boundaries`` shows which ones a run learned).

Each step of the horizontal part of the maze (before the split) takes a uniformly random action
(left, right, forward) with probability ``noise`` instead of the oracle's; the oracle re-plans
from wherever that leaves the agent, so every episode still succeeds unless the detours use up the
episode's 5 x size steps (high noise on a small grid: then the generator stops with one error that
names the episode; lower --noise), and the data holds detours, not one action sequence per start
position.  At the split the oracle acts alone (a random
step there could end the episode at the wrong object).  The dataset is a pure function of its
arguments.  RGB datasets are large (3 x 36 x 36 bytes a step at tile 12; 84 x 84 at the paper's
tile 28): the symbolic view is the default.
"""

from __future__ import annotations

import argparse
import sys

import gymnasium as gym
import minari
import numpy as np

from .recording import check_noise, generator_main, record_episode, write_oracle_dataset
from rate.data.minari_writer import check_dataset_id


def default_dataset_id(size: int | list[int], observation: str, reward: str = "timed") -> str:
    kind = observation if reward == "timed" else f"{observation}-{reward}"
    sizes = "-".join(map(str, size)) if isinstance(size, list) else size
    return f"rate/minigrid-memory/oracle-S{sizes}-{kind}-v0"


def generate_minigrid_dataset(size: int | list[int], episodes: int, seed: int, noise: float = 0.1,
                              observation: str = "symbolic", view_size: int = 3, tile_size: int = 12,
                              dataset_id: str | None = None, overwrite: bool = False,
                              reward: str = "timed") -> minari.MinariDataset:
    """``size``: one grid size, or a list to draw each episode's size from (uniformly; the dataset
    records the environment at the first size, and each episode's size as its reset option
    ``size``, so that it replays from its seed)."""
    from .minigrid_memory import MemoryOracle  # (the minigrid extra: ImportError names it)

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    check_noise(noise)
    sizes = list(size) if isinstance(size, list) else [size]
    if not sizes or len(set(sizes)) != len(sizes):
        raise ValueError(f"sizes must be distinct and at least one, got {sizes}")
    # The tile size only where there are pixels: recorded for a symbolic view, it would differ from
    # the environment's default that an evaluation makes it with (a warning about nothing).
    pixels = {"tile_size": tile_size} if observation == "rgb" else {}
    for s in sizes:  # (checks size, view, observation and reward at once)
        gym.make("rate/MiniGridMemory-v0", size=s, observation=observation, view_size=view_size, reward=reward,
                 **pixels).close()
    env = gym.make("rate/MiniGridMemory-v0", size=sizes[0], observation=observation, view_size=view_size,
                   reward=reward, **pixels)
    dataset_id = dataset_id or default_dataset_id(size, observation, reward)
    check_dataset_id(dataset_id, overwrite)  # fails before the episodes are played; deletes nothing
    rng = np.random.default_rng(seed)
    oracle = MemoryOracle()

    def choose(e) -> int:
        if e.step_count == 0:
            oracle.reset()
        if e.agent_pos[0] < e.success_pos[0] and rng.random() < noise:
            return int(rng.integers(0, 3))
        return oracle(e)

    seeds = rng.integers(0, 2**31 - 1, size=episodes)
    # Sizes from their own stream, so that a one-size dataset stays what it was before the option.
    grid = np.random.default_rng([seed, 1]).choice(sizes, size=episodes) if len(sizes) > 1 else [sizes[0]] * episodes
    buffers = []
    for i, (s, g) in enumerate(zip(seeds, grid)):
        # A mixture's episodes record their size as a reset option (replayable from seed and options).
        try:
            buffers.append(record_episode(env, choose, int(s), i, {"size": int(g)} if len(sizes) > 1 else None))
        except AssertionError as err:
            if noise == 0:
                raise  # the oracle alone failed: a bug, not a setting
            raise ValueError(f"episode {i} (seed {s}) failed: with {noise:.0%} random actions the oracle's detours "
                             f"used up the episode's {env.unwrapped.max_steps} steps; use a lower --noise") from err
    grids = " or ".join(f"{s}x{s}" for s in sizes)
    description = (f"MiniGrid-Memory {grids}, {observation} {view_size}x{view_size} view, {reward} reward, oracle with "
                   f"{noise:.0%} random actions before the split, seed {seed}")
    return write_oracle_dataset(dataset_id, buffers, env, description, overwrite=overwrite)


def main(argv: list[str] | None = None) -> int:
    try:
        from .minigrid_memory import OBSERVATIONS, REWARDS  # (an extra: without it, one error line)
    except ImportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=13, help="grid size of every training episode (odd, >= 9)")
    parser.add_argument("--sizes", type=int, nargs="+", help="draw each episode's grid size from these instead")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=0.1, help="chance of a random action before the split")
    parser.add_argument("--observation", choices=list(OBSERVATIONS), default="symbolic")
    parser.add_argument("--view-size", type=int, default=3)
    parser.add_argument("--tile-size", type=int, default=12, help="pixels per cell of the RGB view")
    parser.add_argument("--reward", choices=list(REWARDS), default="timed",
                        help="timed: 1 - 0.9 t / max_steps (MiniGrid's; its return leaks the decision to "
                             "return-conditioned models); success: 1 for the matching object")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset-id")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    return generator_main(lambda: generate_minigrid_dataset(
        args.sizes or args.size, args.episodes, args.seed, args.noise, args.observation, args.view_size, args.tile_size,
        args.dataset_id, args.overwrite, args.reward))


if __name__ == "__main__":
    sys.exit(main())
