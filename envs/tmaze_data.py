"""Offline T-Maze dataset: successful oracle episodes written as a Minari dataset.

    python -m envs.tmaze_data --horizon 90 --episodes 2000 --seed 0 [--dataset-id rate/tmaze/oracle-T90-v0]

As in the RATE paper, corridor lengths are drawn uniformly from 1 .. horizon - 2 (so every episode
fits in the training horizon) and both goals are equally frequent.  The dataset is a pure
function of (horizon, episodes, seed).  ``MINARI_DATASETS_PATH`` chooses the storage folder.
"""

from __future__ import annotations

import argparse
import sys

import gymnasium as gym
import minari
import numpy as np
from minari.data_collector.episode_buffer import EpisodeBuffer

from .recording import generator_main, record_episode, write_oracle_dataset
from rate.data.minari_writer import check_dataset_id
from .tmaze import oracle_action


def default_dataset_id(horizon: int) -> str:
    return f"rate/tmaze/oracle-T{horizon}-v0"


def oracle_episode(env: gym.Env, seed: int, corridor_length: int, goal: int, episode_id: int) -> EpisodeBuffer:
    return record_episode(env, oracle_action, seed, episode_id, {"corridor_length": corridor_length, "goal": goal})


def generate_tmaze_dataset(horizon: int, episodes: int, seed: int, dataset_id: str | None = None,
                           overwrite: bool = False) -> minari.MinariDataset:
    """Create the Minari dataset of ``episodes`` successful oracle runs with L in 1..horizon-2."""
    if horizon < 3:
        raise ValueError(f"horizon must be >= 3 (a corridor of at least 1), got {horizon}")
    if episodes < 2:
        raise ValueError(f"episodes must be >= 2 (both goals), got {episodes}")
    dataset_id = dataset_id or default_dataset_id(horizon)
    check_dataset_id(dataset_id, overwrite)  # fails before the episodes are played; deletes nothing
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, horizon - 1, size=episodes)  # 1 .. horizon-2
    goals = np.where(np.arange(episodes) % 2 == 0, 1, -1)
    seeds = rng.integers(0, 2**31 - 1, size=episodes)
    env = gym.make("rate/TMaze-v0", corridor_length=horizon - 2)
    buffers = [oracle_episode(env, int(s), int(L), int(g), i) for i, (s, L, g) in enumerate(zip(seeds, lengths, goals))]
    description = f"Passive T-Maze oracle episodes, corridor lengths 1..{horizon - 2}, seed {seed}"
    return write_oracle_dataset(dataset_id, buffers, env, description, overwrite=overwrite)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--horizon", type=int, default=90, help="training horizon T; corridors up to T-2")
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset-id")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    return generator_main(lambda: generate_tmaze_dataset(
        args.horizon, args.episodes, args.seed, args.dataset_id, args.overwrite))


if __name__ == "__main__":
    sys.exit(main())
