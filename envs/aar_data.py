"""Offline Action Associative Retrieval dataset: successful oracle episodes as a Minari dataset.

    python -m envs.aar_data --length 90 --episodes 2000 --noise 0.1 --seed 0 [--min-length 3] [--dataset-id ...]

Every episode has T = ``length`` steps (the paper trains at T = 90 and evaluates at 90, 180 and
900), or, with ``--min-length M``, a length drawn uniformly from M .. T.  A memory model learns
to carry the first action across as many segment boundaries as the data puts between it and the
recall: with one fixed length every recall sits the same number of memory updates after it (8 at
T = 90 in segments of 10), and RATE does not learn it; mixed lengths put recalls in every
segment (the reference code's AAR data mixes 29, 59 and 89 steps).  First actions alternate 0 / 1, so both answers are equally frequent.  ``noise`` is the
probability that a middle step takes a uniformly random action instead of the no-op: those
actions change nothing in the environment, so every episode still succeeds, but the data is not
one fixed action sequence.  The dataset is a pure function of its arguments.
"""

from __future__ import annotations

import argparse
import sys

import gymnasium as gym
import minari
import numpy as np

from .aar import oracle_action
from .recording import check_noise, generator_main, record_episode, write_oracle_dataset
from rate.data.minari_writer import check_dataset_id


def default_dataset_id(length: int, min_length: int | None = None) -> str:
    if min_length is not None and min_length != length:
        return f"rate/aar/oracle-T{min_length}to{length}-v0"
    return f"rate/aar/oracle-T{length}-v0"


def generate_aar_dataset(length: int, episodes: int, seed: int, noise: float = 0.1, dataset_id: str | None = None,
                         overwrite: bool = False, min_length: int | None = None) -> minari.MinariDataset:
    """``min_length``: draw each episode's length from min_length .. length (None: all ``length``)."""
    if length < 2:
        raise ValueError(f"length must be >= 2, got {length}")
    if min_length is not None and not 2 <= min_length <= length:
        raise ValueError(f"min_length must be in 2 .. length = {length}, got {min_length}")
    if episodes < 2:
        raise ValueError(f"episodes must be >= 2 (both answers), got {episodes}")
    check_noise(noise)
    dataset_id = dataset_id or default_dataset_id(length, min_length)
    check_dataset_id(dataset_id, overwrite)  # fails before the episodes are played; deletes nothing
    rng = np.random.default_rng(seed)
    env = gym.make("rate/AAR-v0", episode_length=length)

    def noisy_oracle(choice: int):
        def choose(e) -> int:
            middle = 0 < e.t < e.episode_length - 1
            return int(rng.integers(0, 3)) if middle and rng.random() < noise else oracle_action(e, choice)
        return choose

    seeds = rng.integers(0, 2**31 - 1, size=episodes)
    # Lengths from their own stream, so that a fixed-length dataset stays what it was before the option.
    lengths = (np.full(episodes, length) if min_length is None
               else np.random.default_rng([seed, 1]).integers(min_length, length + 1, size=episodes))
    buffers = [record_episode(env, noisy_oracle(i % 2), int(s), i, {"episode_length": int(t)})
               for i, (s, t) in enumerate(zip(seeds, lengths))]
    span = f"T = {length}" if min_length is None else f"T uniform in {min_length} .. {length}"
    description = f"Action Associative Retrieval oracle episodes, {span}, noise {noise}, seed {seed}"
    return write_oracle_dataset(dataset_id, buffers, env, description, overwrite=overwrite)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=90, help="episode length T (the longest, with --min-length)")
    parser.add_argument("--min-length", type=int, help="draw each episode's length uniformly from this .. --length")
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument("--noise", type=float, default=0.1, help="chance of a random action at a middle step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset-id")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    return generator_main(lambda: generate_aar_dataset(
        args.length, args.episodes, args.seed, args.noise, args.dataset_id, args.overwrite, args.min_length))


if __name__ == "__main__":
    sys.exit(main())
