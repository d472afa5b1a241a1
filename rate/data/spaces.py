"""How a recorded environment's observations and actions become the model's arrays.

The model takes vector observations (obs_dim,), images (H, W, C) or (C, H, W), and discrete or
continuous actions, the latter inside the tanh head's [-1, 1].  A dataset recorded in another
environment is brought to that form the same way its evaluation environment is wrapped:

- observations that are neither a rank-1 nor a rank-3 Box (Dict, Tuple, Discrete, a rank-2 Box,
  ...) are flattened as ``gymnasium.spaces.flatten`` flattens them, with every Dict's keys in
  sorted order (:func:`canonical_space`): Minari restores a dataset's Dict space from a plain
  dict, which Gymnasium sorts, while the live environment may keep its own key order, and the
  two must lay the features out alike;
- continuous actions of a Box with other finite bounds are mapped to [-1, 1] linearly, as
  :func:`rescale_actions` maps them back (``RescaleAction`` in ``eval.wrappers``); a Box with
  infinite bounds, or bounds of placeholder size (:data:`rate.rl.from_dataset.UNBOUNDED`), takes
  the range of the data's actions instead (``eval.action_bounds``); data recorded without an
  environment keeps its space's bounds there (an environment named later has no say);
- discrete actions of a ``Discrete(n, start=s)`` with s != 0 are shifted to the model's 0..n-1
  (:func:`actions_from_zero` shifts them back).

:data:`WRAPPERS` names these wrappers for ``eval.wrappers``.  Wrappers the dataset's environment
was itself recorded through (its EnvSpec's ``additional_wrappers``, ``eval.env_wrappers``) come
first, right after ``gym.make`` (:func:`wrap_recorded`): the data was recorded behind them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


def canonical_space(space: gym.Space) -> gym.Space:
    """``space`` with the keys of every Dict in it (nested ones too) in sorted order."""
    if isinstance(space, spaces.Dict):
        return spaces.Dict({key: canonical_space(space[key]) for key in sorted(space.spaces)})
    if isinstance(space, spaces.Tuple):
        return spaces.Tuple([canonical_space(sub) for sub in space.spaces])
    return space


def flatten_observations(env: gym.Env) -> gym.Env:
    """``env`` with flat observations laid out as :func:`flatten_batch` lays out the data's:
    ``gymnasium.spaces.flatten`` over :func:`canonical_space` of its observation space."""
    space = canonical_space(env.observation_space)
    return gym.wrappers.TransformObservation(env, lambda obs: spaces.flatten(space, obs), spaces.flatten_space(space))


def actions_from_zero(env: gym.Env) -> gym.Env:
    """``env`` taking the model's discrete actions 0..n-1 for its ``Discrete(n, start=s)`` actions
    s..s+n-1 (the data's actions are shifted down by s alike)."""
    space = env.action_space
    if not isinstance(space, spaces.Discrete):
        raise ValueError(f"ActionsFromZero shifts Discrete actions; this action space is {space}")
    start = int(space.start)
    return gym.wrappers.TransformAction(env, lambda action: start + int(action), spaces.Discrete(int(space.n)))


def rescale_actions(env: gym.Env, bounds: list[list[float]] | None = None) -> gym.Env:
    """``env`` taking actions in [-1, 1], mapped linearly onto its action space's bounds, or onto
    ``bounds`` ([low, high] per dimension, ``eval.action_bounds``) where given: an action space
    with infinite bounds, whose range the data's actions fix, or data recorded without an
    environment, whose space's bounds the run keeps.  The inverse of
    :func:`rescale_to_unit`, in float64 (``gymnasium.wrappers.RescaleAction`` computes in the
    space's dtype: an integer Box divides by zero, float32 bounds of 1e38 lose every digit); an
    integer Box takes the nearest integer."""
    space = env.action_space
    if not isinstance(space, spaces.Box):
        raise ValueError(f"RescaleAction maps [-1, 1] onto a Box's bounds; this action space is {space}")
    if bounds:
        low, high = (np.asarray(b, dtype=np.float64) for b in bounds)
        if low.shape != space.shape:  # (another environment than the data's: its actions would not fit)
            raise ValueError(f"eval.action_bounds give {low.size} values per side; this environment acts in {space}")
    else:
        low, high = np.asarray(space.low, dtype=np.float64), np.asarray(space.high, dtype=np.float64)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ValueError(f"RescaleAction maps [-1, 1] onto the action space's bounds; {space} has infinite "
                             "ones: give eval.action_bounds (rate-train --dataset infers them from the data)")
    return gym.wrappers.TransformAction(env, lambda action: onto_bounds(action, low, high, space.dtype),
                                        spaces.Box(-1.0, 1.0, low.shape, np.float32))


def onto_bounds(action, low: np.ndarray, high: np.ndarray, dtype=np.float64) -> np.ndarray:
    """The model's continuous ``action`` (..., dim) in [-1, 1] (clipped to it) mapped linearly onto
    [low, high], in float64, then in ``dtype`` (an integer dtype: the nearest integer):
    RescaleAction's map, and :meth:`rate.api.Policy.env_action`'s."""
    unit = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    value = low + (unit + 1.0) * (high - low) / 2.0
    return (np.rint(value) if np.issubdtype(dtype, np.integer) else value).astype(dtype)


# The wrappers a run config may list (eval.wrappers), in the order they are applied.
WRAPPERS: dict[str, Callable[[gym.Env], gym.Env]] = {
    "FlattenObservation": flatten_observations,
    "RescaleAction": rescale_actions,
    "ActionsFromZero": actions_from_zero,
}


def wrap_env(env: gym.Env, names: list[str], action_bounds: list[list[float]] | None = None) -> gym.Env:
    """``env`` inside the named wrappers of :data:`WRAPPERS` (ValueError for an unknown name);
    ``action_bounds``: what RescaleAction maps onto in place of the action space's bounds."""
    for name in names:
        if name not in WRAPPERS:
            raise ValueError(f"unknown wrapper {name!r}; eval.wrappers takes {', '.join(WRAPPERS)}")
        env = rescale_actions(env, action_bounds) if name == "RescaleAction" else WRAPPERS[name](env)
    return env


def action_bounds_error(bounds: Any) -> str | None:
    """Why ``bounds`` is not an ``eval.action_bounds`` value ([] or [low, high]: two lists of one
    finite value per action dimension, each low below its high), or None when it is one."""
    if not bounds:
        return None
    if (not isinstance(bounds, list) or len(bounds) != 2 or not all(isinstance(b, list) for b in bounds)
            or len(bounds[0]) != len(bounds[1]) or not bounds[0]):
        return "[low, high]: two lists of one value per action dimension"
    low, high = np.asarray(bounds[0], dtype=np.float64), np.asarray(bounds[1], dtype=np.float64)
    if not (np.isfinite(low).all() and np.isfinite(high).all()) or np.any(high <= low):
        return "finite values, each low below its high"
    return None


# What an ``eval.env_wrappers`` entry holds: a recorded EnvSpec's WrapperSpec as plain data.
RECORDED_WRAPPER_KEYS = ("name", "entry_point", "kwargs")


def recorded_wrapper_error(entry: Any) -> str | None:
    """Why ``entry`` is not an ``eval.env_wrappers`` entry ({entry_point: "module:Class", kwargs:
    {...}}, name optional), or None when it is one."""
    if not isinstance(entry, dict) or set(entry) - set(RECORDED_WRAPPER_KEYS):
        return f"a mapping of {', '.join(RECORDED_WRAPPER_KEYS)}"
    point = entry.get("entry_point")
    if not isinstance(point, str) or point.count(":") != 1 or not all(point.split(":")):
        return "an entry_point 'module:Class'"
    if not isinstance(entry.get("kwargs") or {}, dict):
        return "kwargs as a mapping"
    return None


def wrap_recorded(env: gym.Env, entries: list[dict[str, Any]]) -> gym.Env:
    """``env`` inside the Gymnasium wrappers ``entries`` ({entry_point, kwargs}, in order), as
    ``gym.make`` applies a recorded EnvSpec's ``additional_wrappers``.  ValueError naming the entry
    point when its module or class cannot be loaded."""
    from gymnasium.envs.registration import load_env_creator

    # Wrappers the registered entry point applies itself (it is a wrapper) come first in a record
    # of its spec; gym.make has applied them, so they are skipped, as gym.make skips them.
    made = [w.entry_point for w in (getattr(env.spec, "additional_wrappers", None) or ())]
    while entries and made and entries[0]["entry_point"] == made[0]:
        entries, made = entries[1:], made[1:]
    for entry in entries:
        try:
            creator = load_env_creator(entry["entry_point"])
        except (ImportError, AttributeError, ValueError) as err:
            raise ValueError(f"the recorded wrapper {entry['entry_point']!r} cannot be loaded ({type(err).__name__}: "
                             f"{err}); install its package, or train without it (rate-train ... "
                             "eval.env_wrappers=[])") from None
        env = creator(env, **(entry.get("kwargs") or {}))
    return env


def is_model_observation(space: gym.Space) -> bool:
    """True when the model reads this space as it is: a Box of rank 1 (vector) or 3 (image)."""
    return isinstance(space, spaces.Box) and len(space.shape) in (1, 3)


def flattens_for_the_model(space: gym.Space) -> bool:
    """Whether :func:`flatten_batch` takes observations of ``space`` (Gymnasium calls Text and
    OneOf spaces flattenable too, into forms of no use to a model)."""
    if isinstance(space, (spaces.Box, spaces.Discrete, spaces.MultiBinary)):
        return True
    if isinstance(space, spaces.MultiDiscrete):
        return space.nvec.ndim == 1
    if isinstance(space, (spaces.Dict, spaces.Tuple)):
        return all(flattens_for_the_model(sub) for sub in (space.spaces.values() if isinstance(space, spaces.Dict)
                                                            else space.spaces))
    return False


def flatten_batch(space: gym.Space, x: Any) -> np.ndarray:
    """(T, flat_dim) float32 from T stacked observations of ``space`` (a Box array, a dict of
    stacked arrays, a tuple of them), equal row by row to ``gymnasium.spaces.flatten`` over
    :func:`canonical_space`.  ValueError for a discrete value outside its space."""
    if isinstance(space, spaces.Box):
        x = np.asarray(x)
        return x.reshape(len(x), -1).astype(np.float32)
    if isinstance(space, spaces.Discrete):
        x = _check_ids(np.asarray(x).reshape(-1) - space.start, int(space.n), space)
        return np.eye(space.n, dtype=np.float32)[x]
    if isinstance(space, spaces.MultiBinary):
        x = np.asarray(x)
        return x.reshape(len(x), -1).astype(np.float32)
    if isinstance(space, spaces.MultiDiscrete) and space.nvec.ndim == 1:
        x = np.asarray(x) - space.start
        return np.concatenate([np.eye(n, dtype=np.float32)[_check_ids(x[:, i], int(n), space)]
                               for i, n in enumerate(space.nvec)], axis=1)
    if isinstance(space, spaces.Dict):
        return np.concatenate([flatten_batch(space[key], x[key]) for key in sorted(space.spaces)], axis=1)
    if isinstance(space, spaces.Tuple):
        return np.concatenate([flatten_batch(sub, x[i]) for i, sub in enumerate(space.spaces)], axis=1)
    raise ValueError(f"observations of {space} cannot be flattened for the model (supported: Box, Discrete, "
                     "MultiBinary, MultiDiscrete, and Dict / Tuple of those)")


def _check_ids(ids: np.ndarray, n: int, space: gym.Space) -> np.ndarray:
    """Discrete values shifted to 0.. (a one-hot row index each): all in [0, n), else ValueError
    (numpy would wrap a negative index round to another category)."""
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise ValueError(f"observations hold values outside {space}")
    return ids


def image_channels_last(shape: tuple[int, ...]) -> bool:
    """Whether an image of ``shape`` (rank 3) stores its channels last (H, W, C): channels are
    the axis of 1, 3 or 4 entries, else an end axis shorter than both others (stacked frames,
    (84, 84, 12) or (9, 64, 64)); (H, W, C) when both ends could be, as Gymnasium renders."""
    if len(shape) != 3:
        raise ValueError(f"an image has rank 3, got shape {shape}")
    if shape[-1] in (1, 3, 4) or shape[0] in (1, 3, 4):
        return shape[-1] in (1, 3, 4)
    if shape[-1] < min(shape[:2]) or shape[0] < min(shape[1:]):
        return shape[-1] < min(shape[:2])
    raise ValueError(f"image observations of shape {shape}: no end axis of 1, 3 or 4 channels, nor one shorter than "
                     "the other two")


def rescale_to_unit(actions: np.ndarray, space: spaces.Box, bounds: list[list[float]] | None = None) -> np.ndarray:
    """Continuous actions in [low, high] -> [-1, 1], the inverse of :func:`rescale_actions`:
    ``space``'s bounds, or ``bounds`` ([low, high], ``eval.action_bounds``) where given."""
    if not isinstance(space, spaces.Box):
        raise ValueError(f"RescaleAction maps continuous (Box) actions to [-1, 1]; this action space is {space}")
    if bounds:
        space = spaces.Box(np.asarray(bounds[0]), np.asarray(bounds[1]), dtype=np.float64)
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ValueError(f"action space {space} has infinite bounds: its actions cannot be rescaled to [-1, 1] "
                         "without eval.action_bounds (which rate-train --dataset infers from the data)")
    if np.any(high <= low):  # (a dimension fixed at one value has no [-1, 1] image; dividing gives NaN)
        raise ValueError(f"action space {space} has dimensions whose low bound is not below the high one "
                         f"({np.flatnonzero(high.ravel() <= low.ravel()).tolist()}): their actions cannot be rescaled "
                         "to [-1, 1]")
    return (2.0 * (np.asarray(actions, dtype=np.float64) - low) / (high - low) - 1.0).astype(np.float32)


def needs_rescaling(space: gym.Space) -> bool:
    """A continuous action space whose bounds are not [-1, 1], or whose values are integers (the
    model's are not: :func:`rescale_actions` rounds them)."""
    return isinstance(space, spaces.Box) and (np.issubdtype(space.dtype, np.integer)
                                              or not (np.all(space.low == -1.0) and np.all(space.high == 1.0)))
