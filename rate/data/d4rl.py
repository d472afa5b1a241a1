"""D4RL-format HDF5 files -> Minari datasets, and D4RL normalised scores.

The ``d4rl`` package is not a dependency (it needs old gym and mujoco-py and cannot work
offline); its file format is simple: flat arrays of N steps ``observations`` (N, obs),
``actions`` (N, act), ``rewards`` (N,), ``terminals`` (N,) (true terminations) and ``timeouts``
(N,) (time-limit ends; optional, as in D4RL's older files), optionally ``next_observations``.
Episodes end where ``terminals | timeouts``; a trailing run without either becomes a truncated
episode.  Actions of one dimension are read as one action per step (a (N, 1) Box, or integers).

    python -m rate.cli.import_d4rl FILE.hdf5 DATASET_ID [--env Hopper-v5] [--overwrite]
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from rate.data.minari_writer import check_dataset_id, write_minari_dataset
from rate.data.episodes import ACTION_BOUND_TOLERANCE, DatasetError

REQUIRED = ("observations", "actions", "rewards", "terminals")
# D4RL's older files have no timeouts (its own qlearning_dataset treats the field as optional):
# then only terminals end episodes, and a time-limit end runs into the next episode.
OPTIONAL = ("timeouts", "next_observations")
# D4RL's reference returns (d4rl/infos.py, the -random-v0 and expert entries used for v1/v2).
REF_SCORES = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
}


def reference_task(env: str) -> str | None:
    """The D4RL task (a REF_SCORES key) that ``env`` is: Gymnasium's MuJoCo ids (``Hopper-v5``,
    ``module:Hopper-v4``) or D4RL's names (``hopper-medium-v2``), not another suite's task of a
    similar name (``dm_control/hopper-hop-v0``: other reward, other scale)."""
    name = env.split(":")[-1]
    if "/" in name:  # a namespaced id: another suite
        return None
    key = name.lower().split("-")[0]
    return key if key in REF_SCORES else None


def normalized_score(env: str, returns) -> np.ndarray:
    """D4RL normalised score (a fraction; papers print x100) of raw episode returns."""
    key = reference_task(env)
    if key is None:
        raise KeyError(f"no D4RL reference scores for {env!r}; known: {sorted(REF_SCORES)}")
    lo, hi = REF_SCORES[key]
    return (np.asarray(returns, dtype=np.float64) - lo) / (hi - lo)


def d4rl_contents(path: str | Path) -> list[str]:
    """Every array in a D4RL file by its path (``observations``, ``infos/qpos``, ...)."""
    import h5py

    names: list[str] = []
    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
    except OSError as err:
        raise DatasetError(f"{path}: unreadable HDF5 (truncated or corrupt): {err}") from err
    return sorted(names)


def read_d4rl(path: str | Path, keep_infos: bool = False) -> dict[str, np.ndarray]:
    """The flat arrays of a D4RL file, checked for presence, length and finite values.
    ``keep_infos``: also the per-step arrays under ``infos/`` (``infos/qpos``, ...)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"D4RL file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in REQUIRED if k not in f]
            if missing:
                raise DatasetError(f"{path}: not a D4RL file, missing {', '.join(missing)}")
            keys = [k for k in REQUIRED + OPTIONAL if k in f]
            groups = [k for k in keys if not isinstance(f[k], h5py.Dataset)]
            if groups:
                raise DatasetError(f"{path}: {', '.join(groups)} must be arrays, not HDF5 groups")
            data = {k: f[k][()] for k in keys}
            if keep_infos and isinstance(f.get("infos"), h5py.Group):
                data |= {f"infos/{k}": v[()] for k, v in f["infos"].items() if isinstance(v, h5py.Dataset)}
    except OSError as err:
        raise DatasetError(f"{path}: unreadable HDF5 (truncated or corrupt): {err}") from err
    scalars = [k for k, arr in data.items() if not k.startswith("infos/") and np.ndim(arr) == 0]
    if scalars:
        raise DatasetError(f"{path}: {', '.join(scalars)} must hold one row per step, not a single value")
    for key in ("rewards", "terminals", "timeouts"):  # one value per step: (N,), or (N, 1) as a column
        if key in data and data[key].ndim == 2 and data[key].shape[1] == 1:
            data[key] = data[key][:, 0]
        elif key in data and data[key].ndim != 1:
            raise DatasetError(f"{path}: {key} of shape {data[key].shape}; one value per step is (N,) or (N, 1)")
    for key, arr in data.items():
        if not key.startswith("infos/") and not (np.issubdtype(arr.dtype, np.integer)
                                                 or np.issubdtype(arr.dtype, np.floating) or arr.dtype == np.bool_):
            raise DatasetError(f"{path}: {key} of dtype {arr.dtype}; D4RL arrays hold numbers")
        if key in ("observations", "actions", "next_observations") and 0 in arr.shape[1:]:
            raise DatasetError(f"{path}: {key} of shape {arr.shape}: no features")
    for key in ("terminals", "timeouts"):  # (any other value would be read as an episode end)
        if key in data and not np.isin(data[key], (0, 1)).all():
            raise DatasetError(f"{path}: {key} hold values other than 0 and 1 (they are flags)")
    n = len(data["rewards"])
    if n == 0:
        raise DatasetError(f"{path}: no steps")
    if "timeouts" not in data:
        import warnings

        warnings.warn(f"{path} has no timeouts (an older D4RL file): episodes end at terminals only, so an "
                      "episode cut by a time limit runs into the next one", stacklevel=2)
        data["timeouts"] = np.zeros(n, dtype=bool)
    for key in [k for k in data if k.startswith("infos/")]:
        arr = data[key]
        if arr.ndim == 0 or len(arr) != n:  # not per step (a per-episode goal list): no episode info
            del data[key]
        elif arr.dtype == object and not all(isinstance(v, (bytes, str)) for v in arr.ravel()):
            del data[key]  # arrays of another length at each step (HDF5 variable-length): Minari stores none
    for key, arr in data.items():
        if key.startswith("infos/"):
            continue  # carried as they are (NaN may mean "not recorded at this step")
        if len(arr) != n:
            raise DatasetError(f"{path}: {key} has {len(arr)} rows, rewards has {n}")
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise DatasetError(f"{path}: NaN or inf in {key}")
    actions = data["actions"]
    if actions.ndim == 1 and np.issubdtype(actions.dtype, np.floating):
        data["actions"] = actions[:, None]  # one continuous action per step: (N, 1), as a Box of shape (1,)
    elif actions.ndim == 2 and actions.shape[1] == 1 and np.issubdtype(actions.dtype, np.integer):
        data["actions"] = actions[:, 0]  # one discrete action per step stored as a column
    if "next_observations" in data and data["next_observations"].shape != data["observations"].shape:
        raise DatasetError(f"{path}: next_observations of shape {data['next_observations'].shape}, observations "
                           f"{data['observations'].shape}")
    return data


def split_episodes(data: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Episodes as dicts with observations (T+1, obs), actions, rewards, terminations, truncations (T,)."""
    ends = np.flatnonzero(data["terminals"].astype(bool) | data["timeouts"].astype(bool))
    n = len(data["rewards"])
    bounds = list(zip(np.concatenate([[0], ends[:-1] + 1]), ends + 1)) if len(ends) else []
    if not len(ends) or ends[-1] != n - 1:
        bounds.append((ends[-1] + 1 if len(ends) else 0, n))  # trailing run: truncated
    episodes = []
    for s, e in bounds:
        obs = data["observations"][s:e]
        # The observation after the last step: next_observations when the file has it, else
        # the last observation repeated (nothing reads it: no action is taken there).
        last = data["next_observations"][e - 1] if "next_observations" in data else obs[-1]
        terminal = bool(data["terminals"][e - 1])
        terms = np.zeros(e - s, dtype=bool)
        truncs = np.zeros(e - s, dtype=bool)
        terms[-1] = terminal
        truncs[-1] = not terminal
        # Minari keeps an info per observation (T + 1, the reset's first): the last step's repeated.
        infos = {k.removeprefix("infos/"): np.concatenate([v[s:e], v[e - 1 : e]]) for k, v in data.items()
                 if k.startswith("infos/")}
        episodes.append({"observations": np.concatenate([obs, last[None]]), "actions": data["actions"][s:e],
                         "rewards": data["rewards"][s:e].astype(np.float64), "terminations": terms,
                         "truncations": truncs, "infos": infos})
    return episodes


@dataclass
class ImportSummary:
    """What an import wrote and what it changed or left out, for its summary line."""

    episodes: int
    steps: int
    trailing_truncated: bool  # the file's last steps had no terminal or timeout flag: kept as a truncated episode
    dropped: list[str]  # arrays of the file not written (infos/* unless kept, anything unknown)
    kept_infos: list[str]

    def line(self, dataset_id: str) -> str:
        parts = [f"{dataset_id}: {self.episodes} episodes, {self.steps} steps"]
        if self.trailing_truncated:
            parts.append("the last episode had no terminal or timeout flag: kept as truncated")
        if self.kept_infos:
            parts.append(f"kept infos: {', '.join(self.kept_infos)}")
        if self.dropped:
            parts.append(f"dropped: {', '.join(self.dropped)}" +
                         (" (--keep-infos keeps infos/*)" if any(d.startswith("infos/") for d in self.dropped) else ""))
        return "; ".join(parts)


def check_fits_env(data: dict[str, np.ndarray], env_id: str) -> dict[str, np.ndarray]:
    """DatasetError unless the file's arrays fit the spaces of ``env_id`` (which the dataset will
    declare): observation shape; discrete actions as integers in range, or continuous actions
    of the space's shape inside its bounds; for other spaces (a Discrete observation,
    MultiDiscrete or MultiBinary actions) every row inside the space.  ValueError for an id
    Gymnasium cannot make.

    Returns ``data`` with Box observations and actions in their space's dtype (a float64 file
    declared float32 would hold observations its own space does not contain; integer spaces take
    only whole values), and warns when observations lie outside the space's finite bounds (other
    units, or another order of the features, than the environment's)."""
    from rate.data.env_plugins import load_env_plugins

    load_env_plugins()  # ids registered through entry points (rate/TMaze-v0, ...)
    try:
        env = gym.make(env_id)
    except Exception as err:  # the registry's errors, or a missing optional dependency
        raise ValueError(f"--env {env_id!r}: {type(err).__name__}: {err}") from err
    obs_space, act_space = env.observation_space, env.action_space
    env.close()
    obs, act = data["observations"], data["actions"]
    if obs.shape[1:] != obs_space.shape:
        raise DatasetError(f"observations have shape {obs.shape[1:]}, {env_id} gives {obs_space.shape}")
    if isinstance(act_space, gym.spaces.Discrete):
        if act.dtype == np.bool_ and act.ndim == 1:  # one flag per step: the ids 0 and 1
            act = act.astype(np.int64)
            data = {**data, "actions": act}
        if act.ndim != 1 or not np.issubdtype(act.dtype, np.integer):
            stored = act[:, 0] if act.ndim == 2 and act.shape[1] == 1 else act  # (as the file holds them)
            raise DatasetError(f"actions of shape {stored.shape[1:]} and dtype {stored.dtype}, but {env_id} takes "
                               "one integer action per step")
        if len(act) and (act.min() < act_space.start or act.max() >= act_space.start + act_space.n):
            raise DatasetError(f"actions outside {env_id}'s {act_space}")
    elif isinstance(act_space, gym.spaces.Box):
        if act.shape[1:] != act_space.shape:
            raise DatasetError(f"actions have shape {act.shape[1:]}, {env_id} takes {act_space.shape}")
        tol = ACTION_BOUND_TOLERANCE  # (float rounding of a rescaling, as training allows)
        if len(act) and ((act < act_space.low - tol).any() or (act > act_space.high + tol).any()):
            raise DatasetError(f"actions outside {env_id}'s bounds {act_space.low.min()}..{act_space.high.max()}")
        data = {**data, "actions": _in_dtype(act, act_space.dtype, "actions", env_id)}
    else:  # MultiDiscrete, MultiBinary, ...: every row must be in the space
        data = {**data, "actions": _rows_in_space(act, act_space, "actions", env_id)}
    if not isinstance(obs_space, gym.spaces.Box):  # Discrete, MultiDiscrete, MultiBinary
        data = {**data, **{key: _rows_in_space(data[key], obs_space, key, env_id)
                           for key in ("observations", "next_observations") if key in data}}
    else:
        features = obs.reshape(len(obs), int(np.prod(obs_space.shape)))  # (N, F)
        low, high = (np.broadcast_to(b, obs_space.shape).reshape(-1) for b in (obs_space.low, obs_space.high))
        outside = np.flatnonzero(((features < low) | (features > high)).any(0))
        if len(outside):
            i = int(outside[0])
            warnings.warn(f"observations outside {env_id}'s bounds in {len(outside)} of {len(low)} features "
                          f"(feature {i}: {features[:, i].min():.4g}..{features[:, i].max():.4g}, the space "
                          f"{low[i]:.4g}..{high[i]:.4g}): other units or another order of the features than the "
                          "environment's?", stacklevel=3)
        data = {**data, **{key: _in_dtype(data[key], obs_space.dtype, key, env_id)
                           for key in ("observations", "next_observations") if key in data}}
    return data


def _in_dtype(values: np.ndarray, dtype: np.dtype, name: str, env_id: str) -> np.ndarray:
    """``values`` in ``dtype``: floats to the space's float type, within its range; to an integer
    type only whole values within its range (DatasetError otherwise)."""
    if values.dtype == dtype:
        return values
    if np.issubdtype(dtype, np.integer) and len(values):
        info = np.iinfo(dtype)
        # (compared as floats: float(int64's max) rounds up to 2**63, so "<= max" let 2**63 through,
        # to wrap round to -2**63 in the cast; "< max + 1" is exact for every integer type)
        if not (np.all(np.mod(values, 1) == 0) and values.min() >= info.min and values.max() < float(info.max) + 1):
            raise DatasetError(f"{name} of dtype {values.dtype} hold values that {env_id}'s {dtype} space cannot "
                               f"(not whole, or outside {info.min}..{info.max})")
    if np.issubdtype(dtype, np.floating) and len(values) and np.abs(values).max() > np.finfo(dtype).max:
        raise DatasetError(f"{name} hold values beyond {env_id}'s {np.dtype(dtype).name} range (up to "
                           f"{np.finfo(dtype).max:.3g}): they would be stored as inf")
    return values.astype(dtype)


def _rows_in_space(values: np.ndarray, space: gym.Space, name: str, env_id: str) -> np.ndarray:
    """``values`` (N, *shape) in ``space``'s dtype, or DatasetError naming the first row the space
    does not contain (a Discrete(16) observation of 99, -3 or 0.5)."""
    if space.shape is None or values.shape[1:] != space.shape:
        raise DatasetError(f"{name} have shape {values.shape[1:]}, {env_id}'s {space} has {space.shape}")
    values = _in_dtype(values, space.dtype, name, env_id)
    bad = next((i for i, row in enumerate(values) if not space.contains(row)), None)
    if bad is not None:
        raise DatasetError(f"{name} outside {env_id}'s {space}: step {bad} holds {values[bad].tolist()}")
    return values


def import_d4rl(path: str | Path, dataset_id: str, env_id: str | None = None, overwrite: bool = False,
                keep_infos: bool = False):
    """Write the episodes of a D4RL file as the Minari dataset ``dataset_id``; returns it and an
    :class:`ImportSummary`.  With ``env_id`` the arrays must fit that environment's spaces
    (:func:`check_fits_env`).  ``overwrite`` replaces an existing dataset of that id, only once
    the new one is complete.  ``keep_infos``: the per-step ``infos/*`` arrays become the episodes'
    infos (else they are dropped, and the summary says so)."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    check_dataset_id(dataset_id, overwrite=overwrite)  # before the file is read; deletes nothing
    data = read_d4rl(path, keep_infos)
    if env_id is not None:
        data = check_fits_env(data, env_id)
    n = len(data["rewards"])
    episodes = split_episodes(data)
    buffers = [EpisodeBuffer(id=i, observations=ep["observations"], actions=ep["actions"],
                             rewards=list(ep["rewards"]), terminations=list(ep["terminations"]),
                             truncations=list(ep["truncations"]), infos=ep["infos"]) for i, ep in enumerate(episodes)]
    ends = data["terminals"].astype(bool) | data["timeouts"].astype(bool)
    summary = ImportSummary(len(episodes), n, not ends[-1], sorted(set(d4rl_contents(path)) - set(data)),
                            sorted(k for k in data if k.startswith("infos/")))
    obs_dim, act = data["observations"].shape[1:], data["actions"]
    # jpeg_encoding off: Minari would otherwise store uint8 images of 32 x 32 pixels or more as lossy
    # JPEG (and fail on 1- or 4-channel ones); an import keeps the file's values.
    kwargs = {"algorithm_name": "d4rl-import", "description": f"imported from {Path(path).name}", "data_format": "hdf5",
              "jpeg_encoding": False}
    if env_id is not None:
        kwargs["env"] = env_id
    else:
        dtype = data["observations"].dtype
        # Integer observations (pixels, ids) take their type's range, booleans 0 and 1: Gymnasium refuses
        # infinite bounds for both.
        if dtype == np.bool_:
            low, high = 0, 1
        elif np.issubdtype(dtype, np.integer):
            low, high = np.iinfo(dtype).min, np.iinfo(dtype).max
        else:
            low, high = -np.inf, np.inf
        kwargs["observation_space"] = gym.spaces.Box(low, high, obs_dim, dtype=dtype)
        kwargs["action_space"] = spaces_of_actions(act, path)
    return write_minari_dataset(dataset_id, buffers, overwrite=overwrite, **kwargs), summary


# The most discrete actions spaces_of_actions infers from integer ids (Atari has 18; a file whose
# ids run into the millions holds something else, and its one-logit-per-id head would not fit).
MAX_INFERRED_ACTIONS = 100_000


def spaces_of_actions(actions: np.ndarray, path: str | Path) -> gym.Space:
    """The action space a D4RL file's actions (N, ...) declare without an environment: integer ids
    0..n-1 are Discrete(n); continuous ones in [-1, 1] (every D4RL control task) Box(-1, 1).  Other
    actions need the environment's own bounds (``--env``): a space guessed from the data would
    rescale them differently from the environment they are played in."""
    if actions.dtype == np.bool_:  # (Gymnasium's bounds error for a Box of booleans said nothing useful)
        raise DatasetError(f"{path}: boolean actions of shape {actions.shape[1:]}; the model takes integer action "
                           "ids or continuous actions: store one flag per step as 0/1 integers, or name its "
                           "environment with --env (a Discrete one takes the flags as ids 0 and 1)")
    if np.issubdtype(actions.dtype, np.integer):
        if actions.ndim != 1 or actions.min() < 0:
            raise DatasetError(f"{path}: integer actions of shape {actions.shape[1:]} from {actions.min()}: not "
                               "action ids 0..n-1; name the environment with --env")
        if int(actions.max()) >= MAX_INFERRED_ACTIONS:  # (the policy's output layer is one logit per id)
            raise DatasetError(f"{path}: integer actions up to {int(actions.max())}: more than "
                               f"{MAX_INFERRED_ACTIONS} action ids is not a discrete action set this importer guesses; "
                               "name the environment with --env")
        return gym.spaces.Discrete(int(actions.max()) + 1)
    if actions.min() < -1.0 - ACTION_BOUND_TOLERANCE or actions.max() > 1.0 + ACTION_BOUND_TOLERANCE:
        raise DatasetError(f"{path}: actions span {actions.min():.3g}..{actions.max():.3g}, outside [-1, 1]; name "
                           "the environment with --env so that the dataset records its action bounds")
    return gym.spaces.Box(-1.0, 1.0, actions.shape[1:], dtype=actions.dtype)
