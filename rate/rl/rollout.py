"""Batched lockstep rollouts of a stateful policy in Gymnasium environments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from rate.training import progress_bar


def rollout(
    envs: Callable[[], gym.Env] | gym.vector.VectorEnv,
    policy,
    n_episodes: int,
    seed: int,
    reset_options: dict[str, Any] | None = None,
    max_steps: int | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Run ``n_episodes`` environments side by side until every one has ended, or for at most
    ``max_steps`` steps (episodes still running then are cut off: their return so far, success NaN).

    ``envs``: a factory of single environments (the rollout makes ``n_episodes`` of them and steps
    each one in Python), or a ``gymnasium.vector.VectorEnv`` of ``n_episodes`` environments that
    steps them as one batch (e.g. ``gym.make_vec("rate/TMaze-v0", num_envs=n)``; Gymnasium's
    ``NEXT_STEP`` autoreset).  Either way environment i is reset with seed ``seed + i``, every
    row's episode is played once, and a row whose episode ended keeps showing the policy its last
    observation (its later actions and whatever its vector environment does next are ignored): where
    a task's vector environment steps as its single ones do (the T-Maze's, tested), the two kinds
    give the policy the same inputs and the same results.  The rollout closes the environments.
    Returns per-episode ``returns`` (the rewards as the environments report them, summed in
    float64), ``lengths`` and ``success``: 1.0 / 0.0 where the episode's last info holds
    ``success`` or ``is_success``, else NaN (the environment does not say).
    """
    vector = isinstance(envs, gym.vector.VectorEnv)
    try:
        if n_episodes < 1:
            raise ValueError(f"a rollout plays at least one episode, got n_episodes={n_episodes}")
        if vector and envs.num_envs != n_episodes:
            raise ValueError(f"a vector environment of {envs.num_envs} environments cannot play {n_episodes} episodes")
        stepper = _VectorSteps(envs) if vector else _SingleSteps([])
    except ValueError:
        if vector:  # (refused or played, the environments handed over are closed)
            envs.close()
        raise
    returns = np.zeros(n_episodes)
    lengths = np.zeros(n_episodes, dtype=np.int64)
    success = np.full(n_episodes, np.nan)
    done = np.zeros(n_episodes, dtype=bool)
    last_reward = None
    bar = progress_bar(total=max_steps, desc="rollout", unit="step", disable=not progress, leave=False)
    step = 0
    try:  # from the first environment made on: whatever fails, every one made is closed
        if isinstance(stepper, _SingleSteps):
            stepper.envs.extend(envs() for _ in range(n_episodes))
        obs = stepper.reset(seed, reset_options)
        policy.reset(n_episodes)
        while not done.all() and (max_steps is None or step < max_steps):
            actions = policy.act(obs, last_reward)
            rewards, ended, flags = stepper.step(obs, actions, done)
            returns += rewards
            lengths += ~done
            success[ended] = flags[ended]
            done |= ended
            # (float32, as training's returns-to-go were made and as the exported step takes them)
            last_reward = rewards.astype(np.float32)
            step += 1
            if ended.any():
                bar.set_postfix_str(f"{int(done.sum())}/{n_episodes} episodes ended", refresh=False)
            bar.update(1)
    finally:
        bar.close()
        stepper.close()
    return {"returns": returns, "lengths": lengths, "success": success}


class _SingleSteps:
    """Single environments stepped one by one; an ended one is not stepped again."""

    def __init__(self, envs: list[gym.Env]):
        self.envs = envs

    def reset(self, seed: int, options: dict[str, Any] | None) -> np.ndarray:
        """The first observations, (N, ...), of a dtype that holds the space's values too: later
        steps are written into it, and an integer first observation of a float Box would truncate them."""
        obs = np.stack([env.reset(seed=seed + i, options=options)[0] for i, env in enumerate(self.envs)])
        space_dtype = getattr(getattr(self.envs[0], "observation_space", None), "dtype", None)  # (duck-typed envs)
        return obs if space_dtype is None else obs.astype(np.result_type(obs.dtype, space_dtype), copy=False)

    def step(self, obs: np.ndarray, actions: np.ndarray, done: np.ndarray):
        """Step the rows not ``done``, their observations written into ``obs`` in place.  Returns
        rewards (float64 (N,), 0 for done rows), which rows ended now, and their success flags."""
        rewards = np.zeros(len(self.envs))
        ended = np.zeros(len(self.envs), dtype=bool)
        flags = np.full(len(self.envs), np.nan)
        for i, env in enumerate(self.envs):
            if done[i]:
                continue
            obs[i], rewards[i], terminated, truncated, info = env.step(actions[i])
            if terminated or truncated:
                ended[i], flags[i] = True, episode_success(info)
        return rewards, ended, flags

    def close(self) -> None:
        for env in self.envs:
            env.close()


class _VectorSteps:
    """A Gymnasium vector environment: every row stepped in one call; rows already done keep
    their last observation in ``obs`` and get reward 0."""

    def __init__(self, envs: gym.vector.VectorEnv):
        # NEXT_STEP only: with SAME_STEP an ended row's info is its next episode's (the flag sits in
        # final_info), and with DISABLED a row that ended cannot be stepped beside the others.
        mode = envs.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        if mode != gym.vector.AutoresetMode.NEXT_STEP:
            raise ValueError(f"vector environments are played with NEXT_STEP autoreset; this one resets {mode}")
        self.envs = envs

    def reset(self, seed: int, options: dict[str, Any] | None) -> np.ndarray:
        return np.asarray(self.envs.reset(seed=seed, options=options)[0]).copy()

    def step(self, obs: np.ndarray, actions: np.ndarray, done: np.ndarray):
        new_obs, rewards, terminated, truncated, info = self.envs.step(actions)
        active = ~done
        obs[active] = new_obs[active]
        ended = active & (np.asarray(terminated) | np.asarray(truncated))
        flags = np.full(len(done), np.nan)
        for key in ("success", "is_success"):  # vector infos: values and a mask of the rows that have them
            if key in info:
                has = np.asarray(info.get(f"_{key}", np.ones(len(done), dtype=bool)), dtype=bool)
                flags = np.where(has, np.asarray(info[key], dtype=bool).astype(float), flags)
                break
        return np.where(active, np.asarray(rewards, dtype=np.float64), 0.0), ended, flags

    def close(self) -> None:
        self.envs.close()


def episode_success(info: dict) -> float:
    """1.0 / 0.0 from the last step's ``info["success"]`` (the project's tasks, MiniGrid wrappers)
    or ``info["is_success"]`` (Gymnasium-Robotics), NaN when it has neither."""
    for key in ("success", "is_success"):
        if key in info:
            return float(bool(np.asarray(info[key]).any()))
    return float("nan")


def summarise(out: dict[str, np.ndarray], ref_scores: tuple[float, float] | None = None) -> dict[str, float | None]:
    """Mean return of a :func:`rollout` and, where defined, the success rate, each with its
    standard deviation over the episodes.  Success is defined when any episode reported it (an
    episode that ended without the flag, e.g. at a time limit, then counts as a failure); else
    ``success`` is None.  ``ref_scores`` (min, max): also the D4RL normalised score
    ``normalized_score`` = 100 (R - min) / (max - min)."""
    returns, success = out["returns"], out["success"]
    defined = not np.isnan(success).all()
    success = np.nan_to_num(success, nan=0.0)
    result = {"success": float(success.mean()) if defined else None,
              "success_std": float(success.std()) if defined else None,
              "return": float(returns.mean()), "return_std": float(returns.std())}
    if ref_scores is not None:
        lo, hi = ref_scores
        scores = 100.0 * (returns - lo) / (hi - lo)
        result |= {"normalized_score": float(scores.mean()), "normalized_score_std": float(scores.std())}
    return result


def length_suffix(length: int | None) -> str:
    """``_T90`` for a result at length 90; empty for the environment's own length (None)."""
    return "" if length is None else f"_T{length}"


def short_result(r: dict[str, float | None]) -> str:
    """``success/return`` where success is defined, else the return (a progress bar's postfix)."""
    return (f"{r['success']:.2f}/" if r.get("success") is not None else "") + f"{r['return']:.4g}"


def result_table(results: dict[int | None, dict[str, float | None]], length_kwarg: str | None = None) -> str:
    """The evaluation per length as a plain-text table (length "-": the environment's own), the
    first column headed T for an episode length or time limit, else by the keyword (MiniGrid's size)."""
    score = any("normalized_score" in r for r in results.values())
    head = "T" if length_kwarg in (None, "episode_length", "max_episode_steps") else length_kwarg
    lines = [f"{head:>6} {'success':>9} {'return':>20}" + (f" {'normalised score':>20}" if score else "")]
    for t, r in results.items():
        success = "-" if r.get("success") is None else f"{r['success']:.3f}"
        line = f"{'-' if t is None else t:>6} {success:>9} {r['return']:>10.3f} +- {r['return_std']:<6.3f}"
        if score:
            line += f" {r['normalized_score']:>10.1f} +- {r['normalized_score_std']:<6.1f}"
        lines.append(line)
    return "\n".join(lines)
