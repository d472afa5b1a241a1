"""Record scripted episodes into Minari episode buffers (shared by the dataset generators)."""

from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np
from minari.data_collector.episode_buffer import EpisodeBuffer


def record_episode(env: gym.Env, choose: Callable[[gym.Env], int], seed: int, episode_id: int,
                   options: dict[str, Any] | None = None, require_success: bool = True) -> EpisodeBuffer:
    """Play one episode with ``choose(env.unwrapped) -> action`` from ``env.reset(seed, options)``.

    ``require_success``: an oracle that ends without reward is a bug in the oracle, not bad input,
    so it raises AssertionError instead of writing a failed episode into the dataset."""
    obs, _ = env.reset(seed=seed, options=options)
    observations, actions, rewards, terms, truncs = [obs], [], [], [], []
    done = False
    while not done:
        action = choose(env.unwrapped)
        obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(float(reward))
        terms.append(bool(terminated))
        truncs.append(bool(truncated))
        done = terminated or truncated
    if require_success and sum(rewards) <= 0:
        raise AssertionError(f"oracle failed on seed {seed} with options {options}")
    return EpisodeBuffer(id=episode_id, seed=seed, observations=np.stack(observations), actions=np.array(actions),
                         rewards=rewards, terminations=terms, truncations=truncs, infos={})
