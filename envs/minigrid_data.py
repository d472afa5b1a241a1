"""Offline MiniGrid-Memory dataset: oracle episodes with a fraction of random actions, as Minari.

    python -m envs.minigrid_data --size 13 --episodes 1000 --noise 0.1 [--observation symbolic|rgb]
        [--view-size 3] [--tile-size 12] [--reward timed|success] [--seed 0] [--dataset-id ...]

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

from .minigrid_memory import OBSERVATIONS, REWARDS, MemoryOracle
from .recording import check_noise, generator_main, record_episode, write_oracle_dataset
from rate.data.minari_writer import check_dataset_id


def default_dataset_id(size: int, observation: str, reward: str = "timed") -> str:
    kind = observation if reward == "timed" else f"{observation}-{reward}"
    return f"rate/minigrid-memory/oracle-S{size}-{kind}-v0"


def generate_minigrid_dataset(size: int, episodes: int, seed: int, noise: float = 0.1, observation: str = "symbolic",
                              view_size: int = 3, tile_size: int = 12, dataset_id: str | None = None,
                              overwrite: bool = False, reward: str = "timed") -> minari.MinariDataset:
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    check_noise(noise)
    env = gym.make("rate/MiniGridMemory-v0", size=size, observation=observation, view_size=view_size,
                   tile_size=tile_size, reward=reward)  # checks size, view, observation and reward kind
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
    buffers = []
    for i, s in enumerate(seeds):
        try:
            buffers.append(record_episode(env, choose, int(s), i))
        except AssertionError as err:
            if noise == 0:
                raise  # the oracle alone failed: a bug, not a setting
            raise ValueError(f"episode {i} (seed {s}) failed: with {noise:.0%} random actions the oracle's detours "
                             f"used up the episode's {env.unwrapped.max_steps} steps; use a lower --noise") from err
    description = (f"MiniGrid-Memory {size}x{size}, {observation} {view_size}x{view_size} view, {reward} reward, oracle with "
                   f"{noise:.0%} random actions before the split, seed {seed}")
    return write_oracle_dataset(dataset_id, buffers, env, description, overwrite=overwrite)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m envs.minigrid_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=13, help="grid size of every training episode (odd, >= 9)")
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
        args.size, args.episodes, args.seed, args.noise, args.observation, args.view_size, args.tile_size,
        args.dataset_id, args.overwrite, args.reward))


if __name__ == "__main__":
    sys.exit(main())
