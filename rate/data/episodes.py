"""Offline episodes: read from a Minari dataset, checked, summarised.

An :class:`Episode` is the arrays of one recorded episode; :func:`load_minari_episodes` reads a
local Minari dataset, :func:`validate_episodes` checks its arrays against a model's spaces (one
:class:`DatasetError` for the first problem), :func:`observation_stats` gives the normalisation
statistics stored with a model, :func:`returns_to_go` the conditioning target of every step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np


class DatasetError(ValueError):
    """An offline dataset that is missing, empty, malformed, or does not match the config."""


@dataclass
class Episode:
    """One episode: observations (T, *obs_shape) (the final observation dropped), actions (T,) int or
    (T, act_dim) float, rewards (T,)."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray

    def __len__(self) -> int:
        return len(self.rewards)


# Continuous actions may exceed [-1, 1] by float rounding of a rescaling, not more.
ACTION_BOUND_TOLERANCE = 1e-5


def returns_to_go(rewards: np.ndarray, rtg_scale: float) -> np.ndarray:
    """rtg[t] = sum_{t' >= t} rewards[t'] / rtg_scale, float32 (T,)."""
    return (np.cumsum(rewards[::-1])[::-1] / rtg_scale).astype(np.float32)


def validate_episodes(episodes: list[Episode], discrete_actions: bool, act_dim: int, name: str,
                      obs_shape: tuple[int, ...] | None = None) -> None:
    """One clear DatasetError for the first problem found: no episodes or steps, lengths that
    disagree, observations not of ``obs_shape``, NaN/inf, discrete actions that are not integers
    in 0..act_dim-1, continuous actions not (T, act_dim) inside the tanh head's [-1, 1].

    The arrays are checked, not only the spaces the dataset declares: an imported file can
    declare spaces its arrays do not have."""
    if not episodes:
        raise DatasetError(f"{name}: the dataset has no episodes")
    for i, ep in enumerate(episodes):
        if len(ep) == 0:
            raise DatasetError(f"{name}: episode {i} has no steps")
        if not (len(ep.observations) == len(ep.actions) == len(ep.rewards)):
            raise DatasetError(f"{name}: episode {i} has {len(ep.observations)} observations, {len(ep.actions)} "
                               f"actions and {len(ep.rewards)} rewards")
        if obs_shape is not None and tuple(ep.observations.shape[1:]) != tuple(obs_shape):
            raise DatasetError(f"{name}: episode {i} has observations of shape {tuple(ep.observations.shape[1:])}, "
                               f"the model expects {tuple(obs_shape)}")
        for field in ("observations", "rewards") + (() if discrete_actions else ("actions",)):
            values = getattr(ep, field)
            if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
                raise DatasetError(f"{name}: episode {i} has NaN or inf in its {field}")
        if discrete_actions:
            if ep.actions.ndim != 1 or not np.issubdtype(ep.actions.dtype, np.integer):
                raise DatasetError(f"{name}: episode {i} has actions of shape {ep.actions.shape[1:]} and dtype "
                                   f"{ep.actions.dtype}, but discrete actions are single integers")
            if ep.actions.min() < 0 or ep.actions.max() >= act_dim:
                raise DatasetError(f"{name}: episode {i} has actions outside 0..{act_dim - 1}")
        else:
            if ep.actions.shape[1:] != (act_dim,):
                raise DatasetError(f"{name}: episode {i} has actions of shape {ep.actions.shape[1:]}, "
                                   f"the model expects ({act_dim},)")
            if np.abs(ep.actions).max() > 1.0 + ACTION_BOUND_TOLERANCE:
                raise DatasetError(f"{name}: episode {i} has actions up to {np.abs(ep.actions).max():.3g} in size, "
                                   "outside the [-1, 1] of the model's tanh head; rescale them to [-1, 1]")


def load_minari_episodes(dataset_id: str) -> tuple[list[Episode], object, object, object]:
    """Episodes, observation space, action space and recorded environment spec (a Gymnasium
    EnvSpec, or None for a dataset made without an environment) of a local Minari dataset."""
    import minari

    try:
        ds = minari.load_dataset(dataset_id)
    except FileNotFoundError as err:
        root = os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")
        raise DatasetError(f"Minari dataset {dataset_id!r} not found under {root}; generate it first "
                           f"(for T-Maze: python -m rate_envs.tmaze_data)") from err
    except Exception as err:  # h5py/json errors of a damaged dataset
        raise DatasetError(f"Minari dataset {dataset_id!r} cannot be read: {err}") from err
    episodes = []
    try:
        for ep in ds.iterate_episodes():
            rewards = np.asarray(ep.rewards, dtype=np.float32)  # MiniGrid stores int64 rewards
            episodes.append(Episode(np.asarray(ep.observations)[: len(rewards)], np.asarray(ep.actions), rewards))
    except Exception as err:  # h5py raises OSError/KeyError/ValueError for truncated or corrupt files
        raise DatasetError(f"Minari dataset {dataset_id!r} cannot be read: {err}") from err
    try:
        env_spec = ds.spec.env_spec
    except Exception:  # an environment this Gymnasium cannot describe: nothing to compare with
        env_spec = None
    return episodes, ds.observation_space, ds.action_space, env_spec


def observation_stats(episodes: list[Episode]) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (floored at 1e-6) over every stored observation."""
    obs = np.concatenate([ep.observations.reshape(len(ep), -1) for ep in episodes]).astype(np.float64)
    return obs.mean(0).astype(np.float32), np.maximum(obs.std(0), 1e-6).astype(np.float32)
