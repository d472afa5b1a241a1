"""Offline ViZDoom-Two-Colors dataset: oracle episodes with a fraction of random actions, as Minari.

    python -m envs.vizdoom_data [--episodes 1000] [--episode-length 90] [--pillar-steps 45]
                                [--noise 0.2] [--seed 0] [--jpeg] [--dataset-id ...] [--overwrite]

Each step takes a uniformly random action (any of the 5) with probability ``noise`` instead of the
oracle's (:class:`envs.vizdoom_two_colors.ObjectOracle`, which knows the episode's colour and where
every object lies), so the data holds wrong turns and some wrong objects.  Episodes are drawn red or
green with equal chance.  The RATE paper trains on 5000 episodes of 90 steps (pillar gone after
45) collected by an A2C agent; the default here is 1000 of them: 64 x 112 RGB frames, uint8,
21.5 KB a step stored as rendered (2.5 GB on disk for the default 1000 episodes), or about 10x
smaller with ``--jpeg`` (lossy).  The engine renders about a thousand steps a second, so
generation takes minutes (1.1 min on a 2-core CPU).  The dataset's episodes are a pure function of
its arguments (its description also records the generation's minutes); a stopped run resumes
where it stopped (:class:`envs.recording.EpisodeStage`).
"""

from __future__ import annotations

import argparse
import sys

import gymnasium as gym
import minari
import numpy as np

from rate.data.minari_writer import check_dataset_id

from .recording import (EpisodeStage, check_noise, generator_main, record_episodes, with_random_actions,
                        write_oracle_dataset)
from .vizdoom_two_colors import BUTTONS, ObjectOracle

PAPER_EPISODES = 5000


def default_dataset_id(episode_length: int, pillar_steps: int) -> str:
    return f"rate/vizdoom-two-colors/oracle-T{episode_length}-P{pillar_steps}-v0"


def generate_vizdoom_dataset(episodes: int = 1000, episode_length: int = 90, pillar_steps: int = 45, seed: int = 0,
                             noise: float = 0.2, dataset_id: str | None = None, overwrite: bool = False,
                             progress: bool = True, jpeg: bool = False) -> minari.MinariDataset:
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    check_noise(noise)
    dataset_id = dataset_id or default_dataset_id(episode_length, pillar_steps)
    check_dataset_id(dataset_id, overwrite)  # fails before the engine starts; deletes nothing
    env = gym.make("rate/ViZDoomTwoColors-v0", episode_length=episode_length, pillar_steps=pillar_steps)
    rng = np.random.default_rng(seed)
    oracle = ObjectOracle()

    choose = with_random_actions(oracle, len(BUTTONS), noise, rng)
    seeds = rng.integers(0, 2**31 - 1, size=episodes)
    stage = EpisodeStage(dataset_id, dict(generator="vizdoom", episodes=episodes, episode_length=episode_length,
                                          pillar_steps=pillar_steps, seed=seed, noise=noise), rng)
    buffers, minutes = record_episodes(env, choose, seeds, progress, stage)
    returns = np.array([sum(b.rewards) for b in buffers])
    description = (f"ViZDoom-Two-Colors, episodes of at most {episode_length} steps, pillar shown {pillar_steps} steps, "
                   f"oracle with {noise:.0%} random actions, seed {seed}; return {returns.mean():.2f} +- "
                   f"{returns.std():.2f}; generated in {minutes:.1f} min{stage.note()}")
    dataset = write_oracle_dataset(dataset_id, buffers, env, description, ref_min_score=float(returns.min()),
                                   ref_max_score=float(returns.max()), overwrite=overwrite, jpeg=jpeg)
    stage.remove()
    return dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--episode-length", type=int, default=90)
    parser.add_argument("--pillar-steps", type=int, default=45, help="steps the pillar stands before it vanishes")
    parser.add_argument("--noise", type=float, default=0.2, help="chance of a random action at each step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jpeg", action="store_true", help="JPEG-encode the frames (lossy, ~10x smaller)")
    parser.add_argument("--dataset-id")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    print(f"full scale (the paper's dataset size): python -m envs.vizdoom_data --episodes {PAPER_EPISODES} "
          f"--episode-length {args.episode_length} --pillar-steps {args.pillar_steps} --noise {args.noise} --seed {args.seed}")
    return generator_main(lambda: generate_vizdoom_dataset(
        args.episodes, args.episode_length, args.pillar_steps, args.seed, args.noise, args.dataset_id, args.overwrite,
        progress=not args.no_progress, jpeg=args.jpeg))


if __name__ == "__main__":
    sys.exit(main())
