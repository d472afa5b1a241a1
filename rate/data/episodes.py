"""Offline episodes: read from a Minari dataset, checked, summarised.

An :class:`Episode` is the arrays of one recorded episode; :func:`load_minari_episodes` reads a
Minari dataset (an id or a folder) with its :class:`DatasetInfo`, :func:`validate_episodes` checks its arrays against a model's spaces (one
:class:`DatasetError` for the first problem), :func:`observation_stats` gives the normalisation
statistics stored with a model, :func:`returns_to_go` the conditioning target of every step.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


class DatasetError(ValueError):
    """An offline dataset that is missing, empty, malformed, or does not match the config."""


class DatasetNotFound(DatasetError):
    """A dataset id that is not under the Minari root, or a dataset folder that is not there."""


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
    """rtg[t] = sum_{t' >= t} rewards[t'] / rtg_scale, float32 (T,); summed in float64 (a float32
    running sum of a long episode drifts: each small reward added to a large sum rounds)."""
    return (np.cumsum(rewards[::-1], dtype=np.float64)[::-1] / rtg_scale).astype(np.float32)


def check_finite(values: np.ndarray, name: str, episode: int, field: str) -> np.ndarray:
    """``values`` (one episode's ``field``) when every float is finite and within float32's range,
    which the model reads (a float64 value beyond it would turn into inf); else DatasetError."""
    if np.issubdtype(values.dtype, np.floating):
        if not np.isfinite(values).all():
            raise DatasetError(f"{name}: episode {episode} has NaN or inf in its {field}")
        if values.dtype == np.float64 and np.abs(values).max(initial=0.0) > np.finfo(np.float32).max:
            raise DatasetError(f"{name}: episode {episode} has {field} beyond float32's range (|x| > 3.4e38)")
    return values


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
        if ep.rewards.ndim != 1:
            raise DatasetError(f"{name}: episode {i} has rewards of shape {ep.rewards.shape}; returns-to-go need one "
                               "scalar reward per step")
        if obs_shape is not None and tuple(ep.observations.shape[1:]) != tuple(obs_shape):
            raise DatasetError(f"{name}: episode {i} has observations of shape {tuple(ep.observations.shape[1:])}, "
                               f"the model expects {tuple(obs_shape)}")
        for field in ("observations", "rewards") + (() if discrete_actions else ("actions",)):
            check_finite(getattr(ep, field), name, i, field)
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


@dataclass
class DatasetInfo:
    """What a Minari dataset records besides its episodes: the spaces as recorded, the
    environment it was made in (``env_spec``) and the one meant for evaluation
    (``eval_env_spec``, else ``env_spec``), each a Gymnasium EnvSpec or None, and the D4RL-style
    reference returns ``ref_scores`` (min, max) where the dataset carries them."""

    dataset_id: str
    observation_space: Any
    action_space: Any
    env_spec: Any = None
    eval_env_spec: Any = None
    ref_scores: tuple[float, float] | None = None


def unreadable(err: BaseException, fallback: str = "its data does not match its declared spaces") -> str:
    """Why Minari or h5py could not read a dataset, for a DatasetError: the exception's type and
    message (Minari asserts with no message where data and spaces disagree: ``fallback`` then)."""
    return f"{type(err).__name__}: {str(err) or fallback}"


def open_minari_dataset(id_or_path: str, download: bool = False):
    """The MinariDataset of a dataset id (under ``MINARI_DATASETS_PATH``) or a dataset folder.
    ``download``: fetch a missing id from the Minari hub (needs the network).  DatasetError
    (with the ``minari download`` command) when it is not there."""
    import minari

    path = Path(id_or_path).expanduser()
    if path.is_dir():  # a dataset folder (holding data/) or its data/ folder
        data = path / "data" if (path / "data").is_dir() else path
        try:
            return minari.MinariDataset(data)
        except Exception as err:
            raise DatasetError(f"{path}: not a readable Minari dataset folder: {err}") from err
    if path.is_file():  # a file is no Minari dataset (a folder or an id); a D4RL file is imported into one
        hint = (f"import a D4RL file first: rate-import-d4rl {id_or_path} NAMESPACE/NAME-v0 [--env ID]"
                if path.suffix.lower() in (".hdf5", ".h5") else "pass its folder or its id")
        raise DatasetError(f"{path} is a file, not a Minari dataset (a folder or an id): {hint}")
    if id_or_path.startswith(("/", "./", "../", "~")):  # (a path, which no Minari id is)
        raise DatasetNotFound(f"{path}: no such dataset folder")
    from rate.data.minari_writer import datasets_root

    datasets_root()  # (an empty or file MINARI_DATASETS_PATH: said as such, not as Minari's makedirs error)
    try:
        return minari.load_dataset(id_or_path, download=download)
    except FileNotFoundError as err:
        root = os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")
        close = _close_local_ids(id_or_path)
        typo = f"did you mean {' or '.join(map(repr, close))}? If not, " if close else ""  # (a local id misspelt)
        raise DatasetNotFound(f"Minari dataset {id_or_path!r} not found under {root}: {typo}download it with "
                           f"`minari download {id_or_path}` (rate-train --dataset ... --download does it too; both "
                           "need `pip install 'rate-rmt[download]'`), or generate it (the project's tasks: python -m "
                           "rate_envs.tmaze_data and the other rate_envs.*_data)") from err
    except ImportError as err:  # the hub client, for --download
        raise DatasetError(f"downloading {id_or_path!r} needs Minari's hub client: pip install 'rate-rmt[download]' "
                           f"({err})") from err
    except Exception as err:  # h5py/json errors of a damaged dataset, the hub's errors
        raise DatasetError(f"Minari dataset {id_or_path!r} cannot be {'downloaded or ' if download else ''}"
                           f"read: {unreadable(err, 'its metadata.json or data files are damaged')}") from err


def _close_local_ids(dataset_id: str) -> list[str]:
    """Local Minari dataset ids spelt like ``dataset_id`` (difflib's close matches), at most two."""
    import difflib

    import minari

    try:
        local = list(minari.list_local_datasets())
    except Exception:  # (an unreadable dataset under the root must not hide the not-found error)
        return []
    return difflib.get_close_matches(dataset_id, local, n=2, cutoff=0.8)


def dataset_info(ds) -> DatasetInfo:
    """The :class:`DatasetInfo` of an open MinariDataset."""
    meta = ds.storage.metadata
    try:
        env_spec = ds.spec.env_spec
    except Exception:  # an environment this Gymnasium cannot describe: nothing to compare with
        env_spec = None
    eval_spec = env_spec
    if isinstance(meta.get("eval_env_spec"), str):
        try:
            eval_spec = env_spec_from_json(meta["eval_env_spec"])
        except Exception as err:  # (a record this Gymnasium cannot rebuild at all)
            warnings.warn(f"{ds.id}: its evaluation environment's record cannot be read ({type(err).__name__}: "
                          f"{err}); evaluating in the environment it was recorded in", stacklevel=2)
    lo, hi = meta.get("ref_min_score"), meta.get("ref_max_score")
    ref = (float(lo), float(hi)) if lo is not None and hi is not None and float(hi) != float(lo) else None
    return DatasetInfo(ds.id, ds.observation_space, ds.action_space, env_spec, eval_spec, ref)


def env_spec_from_json(text: str):
    """A Gymnasium EnvSpec from its JSON record, leaving out the fields that the Gymnasium which
    wrote it had and this one has not (``autoreset``, ``apply_api_compatibility`` of Gymnasium
    before 1.0, on many hub datasets), as Minari's own loader does for the collection record."""
    from gymnasium.envs.registration import EnvSpec

    fields = {f.name for f in dataclasses.fields(EnvSpec)}
    return EnvSpec.from_json(json.dumps({k: v for k, v in json.loads(text).items() if k in fields}))


def load_minari_episodes(dataset_id: str, flatten_observations: bool = False, rescale_actions: bool = False,
                         actions_from_zero: bool = False,
                         action_bounds: list[list[float]] | None = None) -> tuple[list[Episode], DatasetInfo]:
    """Episodes and :class:`DatasetInfo` of a Minari dataset (an id or a folder).

    ``flatten_observations``: observations as ``FlattenObservation`` gives them (Dict, Tuple, ...
    -> (T, flat_dim)); ``rescale_actions``: continuous actions mapped from the action space's
    bounds to [-1, 1] (rate.data.spaces); ``actions_from_zero``: the actions of a
    ``Discrete(n, start=s)`` shifted to 0..n-1; ``action_bounds`` ([low, high]): the range
    rescaled from in place of the space's bounds (``eval.action_bounds``).  Continuous actions
    recorded outside the bounds (unclipped exploration noise) are clipped to them, as the
    environment's own clipping has them, with a warning.  The returned info keeps the spaces as
    recorded."""
    import gymnasium as gym

    from rate.data.spaces import flatten_batch, rescale_to_unit

    ds = open_minari_dataset(dataset_id)
    info = dataset_info(ds)
    episodes, clipped, total = [], 0, 0
    try:
        for i, ep in enumerate(ds.iterate_episodes()):
            # Checked as recorded (a float64 reward beyond float32 would read as inf once cast);
            # float32 as the model reads them (MiniGrid stores int64 rewards).
            rewards = check_finite(np.asarray(ep.rewards), dataset_id, i, "rewards").astype(np.float32)
            n = len(rewards)
            if flatten_observations:
                obs = flatten_batch(info.observation_space, ep.observations)
            elif isinstance(ep.observations, (dict, tuple)):
                raise DatasetError(f"{dataset_id}: observations of {info.observation_space} need flattening "
                                   "(eval.wrappers: [FlattenObservation])")
            else:
                obs = np.asarray(ep.observations)
            if len(obs) not in (n, n + 1):  # checked before the final observation is dropped
                raise DatasetError(f"{dataset_id}: episode {i} has {len(obs)} observations for {n} steps (one per "
                                   f"step and the final one: {n + 1})")
            obs = obs[:n]
            actions = np.asarray(ep.actions)
            if isinstance(info.action_space, gym.spaces.Box):
                check_finite(actions, dataset_id, i, "actions")  # (NaN would count as clipped, then stay)
                low, high = info.action_space.low, info.action_space.high
                if action_bounds:
                    low, high = np.asarray(action_bounds, dtype=np.float64)
                    if np.issubdtype(actions.dtype, np.integer):  # the integers inside hand-set bounds
                        low, high = np.ceil(low), np.floor(high)
                    low, high = low.astype(actions.dtype), high.astype(actions.dtype)
                inside = np.clip(actions, low, high)
                clipped, total = clipped + int(np.sum(inside != actions)), total + actions.size
                actions = inside
            if rescale_actions:
                actions = rescale_to_unit(actions, info.action_space, action_bounds)
            if actions_from_zero and isinstance(info.action_space, gym.spaces.Discrete):
                actions = actions - int(info.action_space.start)
            episodes.append(Episode(obs, actions, rewards))
    except DatasetError:
        raise
    except ValueError as err:  # an unsupported space, infinite action bounds
        raise DatasetError(f"{dataset_id}: {err}") from err
    except Exception as err:  # h5py raises OSError/KeyError/ValueError for truncated or corrupt files
        raise DatasetError(f"Minari dataset {dataset_id!r} cannot be read: {unreadable(err)}") from err
    if clipped:
        bounds = "eval.action_bounds" if action_bounds else "the action space's bounds"
        warnings.warn(f"{dataset_id}: {clipped} of {total} recorded action values ({clipped / total:.2%}) lie outside "
                      f"{bounds} and were clipped to them", stacklevel=2)
    return episodes, info


@dataclass(frozen=True)
class DatasetStats:
    """What one pass over an open MinariDataset's episodes tells the config inference."""

    returns: np.ndarray  # (n_episodes,) float64: each episode's undiscounted return
    largest_to_go: float  # the largest |return-to-go| of any step (see dataset_stats)
    action_low: np.ndarray | None = None  # (act_dim,) float64 per-dimension minimum of the actions, when asked
    action_high: np.ndarray | None = None  # (act_dim,) float64 maximum


def dataset_stats(ds, action_range: bool = False) -> DatasetStats:
    """Returns and, with ``action_range``, the per-dimension range of the continuous actions of an
    open MinariDataset, in one pass (Minari decodes whole episodes: each pass reads every
    observation too).  The largest |return-to-go| is larger than every |return| where rewards
    change sign (a step penalty and a goal bonus: returns of 1, returns-to-go of 100 before the bonus)."""
    returns, largest, lows, highs = [], 0.0, [], []
    try:
        for ep in ds.iterate_episodes():
            to_go = np.cumsum(np.asarray(ep.rewards, dtype=np.float64)[::-1])
            returns.append(float(to_go[-1]) if len(to_go) else 0.0)
            largest = max(largest, float(np.abs(to_go).max(initial=0.0)))  # (NaN: refused by the caller)
            if action_range and len(ep.actions):
                actions = np.asarray(ep.actions, dtype=np.float64).reshape(len(ep.actions), -1)
                lows.append(actions.min(axis=0))
                highs.append(actions.max(axis=0))
    except Exception as err:  # h5py raises OSError/KeyError/ValueError for truncated or corrupt files
        raise DatasetError(f"Minari dataset {ds.id!r} cannot be read: {unreadable(err)}") from err
    stats = DatasetStats(np.array(returns), largest)
    if not action_range:
        return stats
    if not lows:
        if not returns:  # (no episodes: the caller says so)
            return stats
        raise DatasetError(f"Minari dataset {ds.id!r} has no actions")
    low, high = np.min(lows, axis=0), np.max(highs, axis=0)
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise DatasetError(f"Minari dataset {ds.id!r} has NaN or inf among its actions")
    return dataclasses.replace(stats, action_low=low, action_high=high)


def observation_stats(episodes: list[Episode], scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std over every stored observation, in the units the encoder reads
    (the stored values times ``scale``, model.obs_scale).  A feature that (nearly) never varies in
    the data keeps the std 1 in those units: dividing by its tiny std would turn a value it takes
    only at evaluation (a category the data never shows) into an input of a million."""
    # Merged episode by episode (Chan et al.'s pairwise update, in float64): a float64 copy of all
    # observations at once would take twice the memory of the float32 dataset.
    count, mean, m2 = 0, 0.0, 0.0
    for ep in (ep for ep in episodes if len(ep)):
        obs = ep.observations.reshape(len(ep), -1).astype(np.float64)
        n, ep_mean = len(obs), obs.mean(0)
        delta, total = ep_mean - mean, count + n
        mean = mean + delta * (n / total)
        m2 = m2 + ((obs - ep_mean) ** 2).sum(0) + delta**2 * (count * n / total)
        count = total
    std = np.sqrt(m2 / count)
    # (the fallback after scaling: taken before it, the std became ``scale``, and such a feature
    # reached the network unscaled)
    return (np.asarray(mean * scale, np.float32),
            np.where(std < 1e-6, 1.0, std * scale).astype(np.float32))
