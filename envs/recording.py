"""Record scripted episodes into Minari episode buffers (shared by the dataset generators)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import gymnasium as gym
import minari
import numpy as np
from minari.data_collector.episode_buffer import EpisodeBuffer

from rate.data.minari_writer import write_minari_dataset


def check_noise(noise: float) -> None:
    """The fraction of random actions a generator mixes into its oracle's: a probability."""
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")


@dataclass
class PlayedEpisode:
    """One episode as played: T + 1 observations (the final one included), T actions, rewards,
    terminated and truncated flags, and T + 1 infos (reset's first)."""

    observations: list
    actions: list = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    terminations: list[bool] = field(default_factory=list)
    truncations: list[bool] = field(default_factory=list)
    infos: list[dict] = field(default_factory=list)


def play_episode(env: gym.Env, choose: Callable[[gym.Env], int], seed: int,
                 options: dict[str, Any] | None = None) -> PlayedEpisode:
    """Play one episode with ``choose(env.unwrapped) -> action`` from ``env.reset(seed, options)``."""
    obs, info = env.reset(seed=seed, options=options)
    played = PlayedEpisode(observations=[obs], infos=[info])
    done = False
    while not done:
        action = choose(env.unwrapped)
        obs, reward, terminated, truncated, info = env.step(action)
        played.observations.append(obs)
        played.actions.append(action)
        played.rewards.append(float(reward))
        played.terminations.append(bool(terminated))
        played.truncations.append(bool(truncated))
        played.infos.append(info)
        done = terminated or truncated
    return played


def record_episode(env: gym.Env, choose: Callable[[gym.Env], int], seed: int, episode_id: int,
                   options: dict[str, Any] | None = None, require_success: bool = True) -> EpisodeBuffer:
    """:func:`play_episode` as a Minari episode buffer (without the infos).

    ``require_success``: an oracle that ends without reward is a bug in the oracle, not bad input,
    so it raises AssertionError instead of writing a failed episode into the dataset."""
    played = play_episode(env, choose, seed, options)
    if require_success and sum(played.rewards) <= 0:
        raise AssertionError(f"oracle failed on seed {seed} with options {options}")
    return EpisodeBuffer(id=episode_id, seed=seed, observations=np.stack(played.observations),
                         actions=np.array(played.actions), rewards=played.rewards, terminations=played.terminations,
                         truncations=played.truncations, infos={})


def record_episodes(env: gym.Env, choose: Callable[[gym.Env], int], seeds, progress: bool = True
                    ) -> tuple[list[EpisodeBuffer], float]:
    """One :func:`record_episode` per seed (no success required: with random actions a return of 0
    is allowed), behind a progress bar showing the mean return so far; closes ``env``.  Returns
    the buffers and the minutes it took."""
    from rate.training import progress_bar

    buffers, started = [], time.perf_counter()
    bar = progress_bar(total=len(seeds), desc="episodes", disable=not progress)
    try:
        for i, s in enumerate(seeds):
            buffers.append(record_episode(env, choose, int(s), i, require_success=False))
            bar.update(1)
            bar.set_postfix(mean_return=f"{np.mean([sum(b.rewards) for b in buffers]):.2f}")
    finally:
        bar.close()
        env.close()
    return buffers, (time.perf_counter() - started) / 60


def write_oracle_dataset(dataset_id: str, buffers: list[EpisodeBuffer], env: gym.Env, description: str,
                         ref_min_score: float = 0.0, ref_max_score: float = 1.0,
                         overwrite: bool = False, jpeg: bool = False) -> minari.MinariDataset:
    """The recorded episodes as a Minari dataset (HDF5) that recovers ``env``; an old dataset of
    that id is replaced (``overwrite``) only once the new one is complete.

    ``jpeg``: let Minari JPEG-encode image observations (uint8 Boxes of at least 32 x 32 pixels in
    the first two axes; lossy, about 10x smaller).  Minari does so by default; here the default is
    lossless, so that a dataset holds exactly the frames its environment rendered (a policy is
    evaluated on those) and an episode replays bit for bit from its seed."""
    return write_minari_dataset(dataset_id, buffers, overwrite=overwrite, env=env, algorithm_name="oracle", author="rate",
                                description=description, data_format="hdf5", ref_min_score=ref_min_score,
                                ref_max_score=ref_max_score, jpeg_encoding=jpeg)


def generator_main(make: Callable[[], minari.MinariDataset]) -> int:
    """A generator CLI's body: build the dataset, print its size; bad arguments, an existing
    dataset, a missing package or system library, or a failed write (a full or read-only disk) are
    one line on stderr and exit status 2."""
    try:
        ds = make()
    except (ValueError, OSError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{ds.spec.dataset_id}: {ds.total_episodes} episodes, {ds.total_steps} steps")
    return 0
