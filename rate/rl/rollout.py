"""Batched lockstep rollouts of a stateful policy in Gymnasium environments."""

from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np
from tqdm import tqdm


def rollout(
    make_env: Callable[[], gym.Env],
    policy,
    n_episodes: int,
    seed: int,
    reset_options: dict[str, Any] | None = None,
    max_steps: int | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Run ``n_episodes`` environments side by side until every one has ended.

    Environment i is reset with seed ``seed + i``.  Finished environments are no longer stepped
    (their slot in the batch keeps its last observation; its actions are ignored).  Returns
    per-episode ``returns``, ``lengths`` and ``success`` (info["success"] at the end, else
    return > 0).
    """
    envs = [make_env() for _ in range(n_episodes)]
    obs = np.stack([env.reset(seed=seed + i, options=reset_options)[0] for i, env in enumerate(envs)])
    policy.reset(n_episodes)
    returns = np.zeros(n_episodes)
    lengths = np.zeros(n_episodes, dtype=np.int64)
    success = np.zeros(n_episodes, dtype=bool)
    done = np.zeros(n_episodes, dtype=bool)
    last_reward = None
    bar = tqdm(total=max_steps, desc="rollout", disable=not progress, leave=False)
    step = 0
    while not done.all() and (max_steps is None or step < max_steps):
        actions = policy.act(obs, last_reward)
        rewards = np.zeros(n_episodes, dtype=np.float32)
        for i, env in enumerate(envs):
            if done[i]:
                continue
            obs[i], rewards[i], terminated, truncated, info = env.step(actions[i])
            returns[i] += rewards[i]
            lengths[i] += 1
            if terminated or truncated:
                done[i] = True
                success[i] = bool(info.get("success", returns[i] > 0))
        last_reward = rewards
        step += 1
        bar.update(1)
    bar.close()
    for env in envs:
        env.close()
    return {"returns": returns, "lengths": lengths, "success": success}


def summarise(out: dict[str, np.ndarray]) -> dict[str, float]:
    """Success rate and mean return of a :func:`rollout`, each with its standard deviation over the episodes."""
    return {"success": float(out["success"].mean()), "success_std": float(out["success"].std()),
            "return": float(out["returns"].mean()), "return_std": float(out["returns"].std())}
