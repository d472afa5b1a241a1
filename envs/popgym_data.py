"""Offline POPGym datasets: oracle episodes with a fraction of random actions, as Minari datasets.

    python -m envs.popgym_data --task RepeatPreviousEasy --episodes 1000 --noise 0.1 [--seed 0]

Each step takes a uniformly random action with probability ``noise`` instead of the oracle's
(:func:`envs.popgym_tasks.oracle_action`, which reads the hidden state).  Random actions cost
reward, so the dataset's returns spread below the oracle's 1.0 and return-to-go conditioning has
something to condition on.  (The RATE paper's POPGym data came from PPO-GRU agents instead.)
The dataset is a pure function of its arguments.
"""

from __future__ import annotations

import argparse
import sys

import gymnasium as gym
import minari
import numpy as np

from .recording import check_noise, generator_main, record_episode, with_random_actions, write_oracle_dataset
from rate.data.minari_writer import check_dataset_id


def default_dataset_id(task: str) -> str:
    return f"rate/popgym/{task}-oracle-v0"


def generate_popgym_dataset(task: str, episodes: int, seed: int, noise: float = 0.1, dataset_id: str | None = None,
                            overwrite: bool = False) -> minari.MinariDataset:
    from .popgym_tasks import TASKS, oracle_action  # (the popgym extra: ImportError names it)

    if task not in TASKS:
        raise ValueError(f"unknown POPGym task {task!r}; one of {sorted(TASKS)}")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    check_noise(noise)
    dataset_id = dataset_id or default_dataset_id(task)
    check_dataset_id(dataset_id, overwrite)  # fails before the episodes are played; deletes nothing
    rng = np.random.default_rng(seed)
    env = gym.make("rate/POPGym-v0", task=task)
    n_actions = env.action_space.n

    choose = with_random_actions(oracle_action, n_actions, noise, rng)
    seeds = rng.integers(0, 2**31 - 1, size=episodes)
    buffers = [record_episode(env, choose, int(s), i, require_success=False) for i, s in enumerate(seeds)]
    description = f"POPGym {task}: hidden-state oracle with {noise:.0%} random actions, seed {seed}"
    return write_oracle_dataset(dataset_id, buffers, env, description, ref_min_score=-1.0, ref_max_score=1.0,
                                overwrite=overwrite)


def main(argv: list[str] | None = None) -> int:
    try:
        from .popgym_tasks import TASKS  # (an extra: without it, one error line as generator_main's)
    except ImportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="RepeatPreviousEasy", choices=sorted(TASKS))
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=0.1, help="chance of a random action at each step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset-id")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    return generator_main(lambda: generate_popgym_dataset(
        args.task, args.episodes, args.seed, args.noise, args.dataset_id, args.overwrite))


if __name__ == "__main__":
    sys.exit(main())
