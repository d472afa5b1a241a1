"""Offline Memory Maze dataset: oracle episodes with a fraction of random actions, as Minari.

    python -m envs.memory_maze_data [--size 9] [--episodes 300] [--episode-length 500]
                                    [--noise 0.2] [--seed 0] [--jpeg] [--dataset-id ...] [--overwrite]

Each step takes a uniformly random action (any of the 6) with probability ``noise`` instead of the
shortest-path oracle's (:class:`envs.memory_maze.MazeOracle`), which re-plans from wherever that
leaves the agent; so the data holds detours and wall bumps, not only straight runs.  Observations
are the 64 x 64 RGB images, uint8, stored as rendered: 12 KB a step (300 x 500 steps: about
1.8 GB); ``--jpeg`` stores them JPEG-encoded (Minari's own default; about 1.3 KB a step, lossy).

Rendering takes 20-40 ms a step on 2 CPU cores, plus 2-6 s to build each episode's maze (5
episodes of 500 steps took 1.6 min beside a training run), so the defaults are scaled to run in
the background within a session (about 1.5 hours); the printed full-scale command is the paper's
episode length (1000 steps at 9 x 9) and the size of its DreamerV3 dataset (5000 episodes, about
60 GB as rendered).  The dataset's episodes are a pure function of its arguments (its description
also records the generation's minutes).  Stopped part-way (Ctrl-C, a kill, a session's end), the
same command resumes after the episodes already played and writes the same episodes
(:class:`envs.recording.EpisodeStage`; the description says it resumed).
"""

from __future__ import annotations

import argparse
import sys
import time

import gymnasium as gym
import minari
import numpy as np

from .memory_maze import MAZES, MazeOracle
from .recording import (EpisodeStage, check_noise, generator_main, record_episodes, with_random_actions,
                        write_oracle_dataset)
from rate.data.minari_writer import check_dataset_id

PAPER_EPISODES = 5000  # the RATE paper's Memory Maze dataset (DreamerV3 episodes of 1000 steps)


def default_dataset_id(size: int, episode_length: int) -> str:
    return f"rate/memory-maze/oracle-{size}x{size}-T{episode_length}-v0"


def generate_memory_maze_dataset(size: int = 9, episodes: int = 300, episode_length: int = 500, seed: int = 0,
                                 noise: float = 0.2, dataset_id: str | None = None, overwrite: bool = False,
                                 progress: bool = True, jpeg: bool = False) -> minari.MinariDataset:
    """``jpeg``: store the frames JPEG-encoded (about 1.3 KB instead of 12 KB a step, lossy); by
    default they are stored as rendered."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    check_noise(noise)
    if size not in MAZES:
        raise ValueError(f"Memory Maze sizes are {sorted(MAZES)}, got {size}")
    env = gym.make(f"rate/MemoryMaze-{size}x{size}-v0", episode_length=episode_length)  # checks the length
    dataset_id = dataset_id or default_dataset_id(size, episode_length)
    check_dataset_id(dataset_id, overwrite)  # fails before the episodes are played; deletes nothing
    rng = np.random.default_rng(seed)
    oracle = MazeOracle()

    choose = with_random_actions(oracle, 6, noise, rng)
    seeds = rng.integers(0, 2**31 - 1, size=episodes)
    stage = EpisodeStage(dataset_id, dict(generator="memory_maze", size=size, episodes=episodes,
                                          episode_length=episode_length, seed=seed, noise=noise), rng)
    buffers, minutes = record_episodes(env, choose, seeds, progress, stage)
    returns = np.array([sum(b.rewards) for b in buffers])
    description = (f"Memory Maze {size}x{size}, episodes of {episode_length} steps, shortest-path oracle with {noise:.0%} "
                   f"random actions, seed {seed}; {returns.mean():.2f} +- {returns.std():.2f} targets per episode; "
                   f"generated in {minutes:.1f} min{stage.note()}")
    dataset = write_oracle_dataset(dataset_id, buffers, env, description, ref_min_score=0.0,
                                   ref_max_score=float(returns.max()), overwrite=overwrite, jpeg=jpeg)
    stage.remove()
    return dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=9, choices=sorted(MAZES))
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--episode-length", type=int, default=500, help="steps per episode (the package's: 1000 at 9x9)")
    parser.add_argument("--noise", type=float, default=0.2, help="chance of a random action at each step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset-id")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--jpeg", action="store_true", help="JPEG-encode the frames (lossy, ~10x smaller)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    full_length = MAZES[args.size][1]
    print(f"full scale (the paper's dataset size): python -m envs.memory_maze_data --size {args.size} "
          f"--episodes {PAPER_EPISODES} --episode-length {full_length} --noise {args.noise} --seed {args.seed}")
    started = time.perf_counter()
    code = generator_main(lambda: generate_memory_maze_dataset(
        args.size, args.episodes, args.episode_length, args.seed, args.noise, args.dataset_id, args.overwrite,
        progress=not args.no_progress, jpeg=args.jpeg))
    if code == 0:
        print(f"generated in {(time.perf_counter() - started) / 60:.1f} min")
    return code


if __name__ == "__main__":
    sys.exit(main())
