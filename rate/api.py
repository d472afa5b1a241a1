"""The public Python API: load a trained policy from any of its forms, train, evaluate.

    import rate
    policy = rate.load_policy("runs/tmaze_quick")       # a checkpoint folder, a .pt2 or a .onnx
    policy.reset()                                      # one environment; reset(8) for eight
    action = policy.act(obs)                            # the first observation of an episode
    action = policy.act(obs, reward)                    # then every step: the previous reward

:class:`Policy` is the same object for the three forms: a checkpoint runs the eager policy its
run config names (streaming RATE, DT's window, a BC baseline); an exported artifact runs its
step function (torch.export or onnxruntime) with the recurrent state between calls.  Greedy
actions are the same in the three forms.  Sampled ones (``sample=True``) come from the same
softmax but from different random streams: the eager policy draws with torch (as every
evaluation of this project did), an artifact with Gumbel-max noise from numpy (what an ONNX
graph can take), so a seed repeats a form's own draws, not another form's.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rate.checkpoint import CheckpointError


class Policy:
    """A stateful policy: ``reset(n_envs=1)``, then ``act`` once per environment step.

    ``act(obs, reward=None, done=None)``:
      obs     one observation (obs_shape) or a batch (n_envs, *obs_shape);
      reward  the reward each environment received for the previous action; it lowers the
              return-to-go the policy conditions on.  None only on the first step after
              ``reset`` or where every environment is ``done`` (elsewhere a ValueError: a
              forgotten reward would leave the return-to-go where it was without a word);
      done    bool per environment: True where ``obs`` is the first of a new episode (the
              previous one ended and the environment was reset), so that environment's memory
              and return-to-go start over while the others go on (streaming policies; a window
              (DT), segment-recompute or BC policy restarts all environments together: ``done``
              for all or none).
    Returns one action, or a batch as ``obs`` was.  ``last_output`` holds the action logits
    (discrete) or means (continuous) of the last step, batched; ``target_return`` may be set
    before ``reset``.  Observations are those of the evaluation environment inside the run's
    ``eval.env_wrappers`` and ``eval.wrappers`` (``run_config["eval"]``; :func:`evaluate` and
    :meth:`make_env` apply them).
    """

    def __init__(self, backend: Any, obs_shape: Sequence[int], act_kind: str, target_return: float, source: str,
                 run_config: dict[str, Any]):
        self._backend, self.obs_shape, self.act_kind = backend, tuple(obs_shape), act_kind
        self._n: int | None = None
        self.target_return, self.source = float(target_return), source
        self.run_config = run_config  # the training run's config, as a mapping
        self.last_output: np.ndarray | None = None
        self._action_map: tuple | None = None  # see _data_action_space

    @property
    def target_return(self) -> float:
        """The return-to-go every episode starts from; a new value takes effect at the next
        :meth:`reset` (the episodes under way keep theirs)."""
        return self._target_return

    @target_return.setter
    def target_return(self, value: float) -> None:
        self._target_return = float(value)
        self._target_pending = self._n is not None  # (act() before the next reset() says so)

    def __repr__(self) -> str:
        return f"Policy({self.source!r}, obs_shape={self.obs_shape}, act_kind={self.act_kind!r})"

    @property
    def model(self):
        """The eager model of a checkpoint policy (a RATEModel or a BC baseline, with
        ``save_pretrained``); AttributeError for an exported artifact, which holds a graph."""
        if not isinstance(self._backend, _EagerBackend):
            raise AttributeError(f"{self.source} is an exported artifact: it holds a graph, not an eager model")
        return self._backend.model

    def reset(self, n_envs: int = 1) -> None:
        """Start ``n_envs`` environments' episodes: every memory, window and return-to-go anew."""
        _check_int("n_envs", n_envs, 1)
        _check_target(self.target_return)
        self._n, self._first, self._target_pending = n_envs, True, False
        self._backend.reset(n_envs, self.target_return)

    def make_env(self, length: int | None = None, env_id: str | None = None, length_kwarg: str | None = None,
                 **env_kwargs):
        """One environment as :func:`evaluate` plays it: the run's ``eval.env_id`` (or ``env_id``)
        with the run's keywords (in its own environment; ``env_kwargs`` over them), at ``length``
        (None: the environment's own; set through ``length_kwarg``, by default the run's
        ``eval.length_kwarg``, e.g. ``"max_episode_steps"`` for another environment's time limit), inside the
        wrappers the data was recorded through (``eval.env_wrappers``, in the run's own
        environment) and the run's ``eval.wrappers``,
        so that observations and actions are the ones the policy was trained on (Dict observations
        flattened as in training, actions rescaled to the environment's bounds, or to the run's
        ``eval.action_bounds`` where it has them: inferred from data with infinite bounds or
        recorded without an environment, whose units the model learned).  Checked as
        :func:`evaluate` checks: ConfigError (a ValueError) when the environment cannot be made
        with these keywords or its spaces are not the policy's, ValueError for a length keyword in
        ``env_kwargs`` that ``length`` would replace."""
        from rate.rl.experiment import make_checked_eval_env

        ev, _ = _checked_evaluation(self, env_id, length_kwarg, env_kwargs, None if length is None else [length])
        return make_checked_eval_env(ev, length)

    def act(self, obs, reward=None, done=None):
        """The action for ``obs`` (one observation, or a batch of ``reset``'s size), given the
        reward each environment received for the previous action and ``done`` where ``obs``
        starts a new episode (see the class docstring)."""
        if self._n is None:
            raise RuntimeError("call reset(n_envs) before act()")
        if self._target_pending:
            self._target_pending = False
            warnings.warn("target_return was set after reset(): it takes effect at the next reset(); the episodes "
                          "under way keep their returns-to-go", stacklevel=2)
        if isinstance(obs, dict):
            raise TypeError("a Dict observation: the policy takes it flattened as in training; play the "
                            "environment that policy.make_env() returns (inside the run's eval.wrappers)")
        obs = np.asarray(obs, dtype=np.float32)
        single = obs.shape == self.obs_shape
        if single:
            obs = obs[None]
        if obs.shape != (self._n, *self.obs_shape):
            batch = f"({self._n}, {', '.join(map(str, self.obs_shape))})"
            takes = (f"one of shape {self.obs_shape} (or a batch of 1)" if self._n == 1 else
                     f"a batch of shape {batch}, one row per environment; one of shape {self.obs_shape} needs reset(1)")
            raise ValueError(f"observation of shape {obs.shape[1:] if single else obs.shape}: after "
                             f"reset({self._n}) act() takes {takes}")
        if not np.isfinite(obs).all():
            row = int(np.flatnonzero(~np.isfinite(obs).reshape(self._n, -1).all(axis=1))[0])
            raise ValueError(f"the observation of environment {row} holds NaN or inf: it would enter that "
                             "environment's memory and make its actions NaN for the rest of the episode")
        reward = None if reward is None else _per_environment(reward, np.float32, self._n, "reward")
        done = np.zeros(self._n, dtype=bool) if done is None else _flags(done, self._n)
        if self._first:  # every environment starts an episode
            done, reward = np.ones(self._n, dtype=bool), None
        elif reward is None and not done.all():
            raise ValueError("act() without reward: pass the reward each environment received for the previous "
                             "action (the policy conditions on the return still to collect); None only on the first "
                             "step after reset() or where every environment is done")
        bad = [] if reward is None else np.flatnonzero(~np.isfinite(reward) & ~done)
        if len(bad):
            raise ValueError(f"reward {reward[bad[0]]} for environment {bad[0]}: a NaN or infinite reward would make "
                             "its return-to-go, and so its actions, NaN for the rest of the episode")
        action, self.last_output = self._backend.act(obs, reward, done)
        self._first = False  # (only once the step was taken: a step that raised is still the first)
        return action[0] if single else action

    def env_action(self, action):
        """``action`` as :meth:`act` returned it (one or a batch) in the units of the action space
        the run's ``eval.wrappers`` map onto: what they hand the environment (RescaleAction:
        [-1, 1] onto ``eval.action_bounds`` or the environment's bounds, in the space's dtype, an
        integer one rounded; ActionsFromZero: 0..n-1 onto its Discrete start..start + n - 1); an
        action they leave alone comes back as it is.  For a system played without a Gymnasium
        environment: data recorded without one keeps its action space's bounds, dtype and start
        in the run; a run with an environment reads its action space (the environment's package
        must be installed).  :meth:`make_env` and :func:`evaluate` wrap their environments, which
        take :meth:`act`'s actions as they are."""
        from rate.data.spaces import onto_bounds

        action = np.asarray(action)
        low, high, dtype, start = self._data_action_space()
        if low is not None:
            return onto_bounds(action, low, high, dtype)
        return action + start if start else action

    def _data_action_space(self) -> tuple:
        """(low, high, dtype) of RescaleAction's map (None, None, None without it) and
        ActionsFromZero's start (0 without it), as the run's wrappers apply them: recorded bounds
        first, else the environment's; the environment's start where the run names one, else
        the recorded start (made once, then kept)."""
        if self._action_map is None:
            ev = self.run_config.get("eval", {})
            mapping = [name for name in ev.get("wrappers", []) if name in ("RescaleAction", "ActionsFromZero")]
            bounds, env_id = ev.get("action_bounds") or [], ev.get("env_id")
            rescale, shift = "RescaleAction" in mapping, "ActionsFromZero" in mapping
            space = None
            if env_id and ((rescale and not (bounds and ev.get("action_dtype"))) or shift):
                env = self.make_env()
                try:
                    inner = env
                    for _ in ev["wrappers"]:  # (each of eval.wrappers is one Gymnasium wrapper, outermost)
                        inner = inner.env
                    space = inner.action_space
                finally:
                    env.close()
            elif (rescale and not bounds) or (shift and not ev.get("action_start")):
                raise ValueError(f"{self.source}: the run maps actions ({', '.join(mapping)}) but records no action "
                                 "space (bounds, start) to map them onto and names no environment")
            low = high = dtype = None
            if rescale:
                low, high = (np.asarray(b, dtype=np.float64) for b in (bounds or (space.low, space.high)))
                dtype = np.dtype(space.dtype if space is not None else ev.get("action_dtype") or "float32")
            start = 0
            if shift:
                start = int(space.start) if space is not None else int(ev["action_start"])
            self._action_map = (low, high, dtype, start)
        return self._action_map


class _EagerBackend:
    """A checkpoint folder: the run config's eager policy."""

    def __init__(self, model, cfg, device: str, sample: bool, seed: int):
        self.model, self.cfg, self.sample, self.seed = model.to(device), cfg, sample, seed

    def reset(self, n: int, target_return: float) -> None:
        from dataclasses import replace

        from rate.rl.experiment import make_policy
        from rate.rl.policy import StreamingPolicy

        ev = replace(self.cfg.eval, target_return=target_return, sample=self.sample, seed=self.seed)
        self.policy = make_policy(self.model, replace(self.cfg, eval=ev))
        self.policy.reset(n)
        self.streaming = isinstance(self.policy, StreamingPolicy)  # (per-row restarts; the others in lockstep)

    def act(self, obs, reward, done):
        if done.any() and not self.streaming:
            if not done.all():
                raise ValueError(f"a {self.cfg.policy!r} policy of kind {self.cfg.model.kind!r} restarts all "
                                 "environments together: pass done for every one or none")
            self.policy.reset(len(done))
            reward = None
        kwargs = {"new_episode": done} if self.streaming else {}
        action = self.policy.act(obs, reward, **kwargs)
        return action, self.policy.last_output.detach().cpu().numpy().copy()  # (its own, as the action)


class _ArtifactBackend:
    """An exported step function (.pt2 or .onnx) and its recurrent state; ``sample``: discrete
    actions drawn from the softmax with the Gumbel-max noise the step function takes."""

    def __init__(self, step_policy, sample: bool, seed: int):
        self.step, self.sample, self.seed = step_policy, sample, seed

    def reset(self, n: int, target_return: float) -> None:
        self.step.reset(n)
        self.target_return = target_return
        self.rng = np.random.default_rng(self.seed)

    def act(self, obs, reward, done):
        from rate.deploy.onnx_runner import ArtifactError, gumbel_noise

        reward = np.zeros(len(obs), dtype=np.float32) if reward is None else reward
        noise = gumbel_noise(self.rng, len(obs), self.step.meta["act_dim"]) if self.sample else None
        try:
            out, action = self.step.act(obs, reward, done, self.target_return, noise)
        except ArtifactError as err:  # the graph failed in its runtime: the library's error, as at loading
            raise CheckpointError(str(err)) from err
        return np.asarray(action), np.asarray(out)


def load_policy(path: str | Path, device: str = "cpu", target_return: float | None = None,
                sample: bool | None = None, seed: int | None = None) -> Policy:
    """A :class:`Policy` from a checkpoint folder (model.safetensors + config.json: a run folder,
    its ``checkpoint_best/``), an exported ``.pt2`` (needs torch) or ``.onnx`` (needs
    onnxruntime, the ``export`` extra).  ``target_return``: default the run's
    ``eval.target_return`` (the export's, for an artifact).  ``sample``: discrete actions drawn
    from the softmax (seeded by ``seed`` at every ``reset``) instead of the argmax; both default
    to the run's ``eval.sample`` and ``eval.seed``.
    Raises CheckpointError (a RuntimeError) for anything that is not a policy this code reads,
    ValueError for a request it cannot serve (sampling continuous actions, an artifact on a GPU)."""
    path = Path(path)
    if path.suffix.lower() in (".pt2", ".onnx"):
        from rate.deploy.export import open_artifact
        from rate.deploy.onnx_runner import ArtifactError, warn_if_older_than_its_run

        if str(device).split(":")[0] != "cpu":  # ("cpu", "cpu:0", torch.device("cpu"))
            raise ValueError(f"exported policies run on the CPU here; got device {device!r}")
        try:
            step = open_artifact(path)
        except ArtifactError as err:  # (the standalone runner's own error type)
            raise CheckpointError(str(err)) from None
        warn_if_older_than_its_run(path, step.meta)
        meta = step.meta
        run_eval = meta.get("config", {}).get("eval", {})
        sample = bool(run_eval.get("sample", False)) if sample is None else sample
        seed = int(run_eval.get("seed", 0)) if seed is None else seed
        _check_sampling(path, sample, meta["act_kind"], seed)
        target = _check_target(meta["target_return"] if target_return is None else target_return)
        return Policy(_ArtifactBackend(step, sample, seed), meta["obs_shape"], meta["act_kind"], target, str(path),
                      meta.get("config", {}))
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint folder or .pt2 / .onnx file")
    if not path.is_dir():
        raise CheckpointError(f"{path}: neither a checkpoint folder nor a .pt2 / .onnx file")
    from rate.config import to_dict
    from rate.rl.experiment import load_policy_model
    from rate.training import resolve_device

    model, cfg = load_policy_model(path)
    sample = cfg.eval.sample if sample is None else sample
    seed = cfg.eval.seed if seed is None else seed
    _check_sampling(path, sample, cfg.model.act_kind, seed)
    target = _check_target(cfg.eval.target_return if target_return is None else target_return)
    return Policy(_EagerBackend(model, cfg, str(resolve_device(device)), sample, seed), cfg.model.obs_shape,
                  cfg.model.act_kind, target, str(path), to_dict(cfg))


def _check_int(name: str, value, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int when it is one (not a bool, not a float) in [low, high); else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if (low is not None and value < low) or (high is not None and value >= high):
        bound = f"in [{low}, {high})" if high is not None else f"at least {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def _flags(value, n: int) -> np.ndarray:
    """``done`` as (n,) bool: booleans, or 0/1 (numpy's bool("False") is True, a NaN true too)."""
    array = np.asarray(value)
    if array.dtype != bool and not (np.issubdtype(array.dtype, np.integer) and np.isin(array, (0, 1)).all()):
        raise ValueError(f"done takes a bool (or 0/1) per environment, got {value!r}")
    return _per_environment(array, bool, n, "done")


def _per_environment(value, dtype, n: int, name: str) -> np.ndarray:
    """``value`` as (n,) ``dtype``: one entry per environment of reset(n) (a scalar for n = 1)."""
    array = np.asarray(value, dtype=dtype)
    if array.size != n:
        raise ValueError(f"{name} has {array.size} entries; after reset({n}) act() takes one per environment")
    return array.reshape(n)


def _check_target(target_return: float) -> float:
    """The target return as a float; a NaN or infinite one is refused (the policy would act on NaN
    returns-to-go and its results would look like an evaluation)."""
    target = float(target_return)
    if not math.isfinite(target):
        raise ValueError(f"the target return must be a finite number, got {target_return!r}")
    return target


def _check_sampling(path: Path, sample: bool, act_kind: str, seed: int) -> None:
    """``sample`` a bool, ``seed`` an int in [0, 2**32) (as eval.seed); refuse to sample a
    continuous policy (it plays its mean): a "sampled" result would be greedy."""
    from rate.training import SEED_LIMIT

    if not isinstance(sample, (bool, np.bool_)):  # (sample="False" would sample)
        raise ValueError(f"sample must be True or False, got {sample!r}")
    _check_int("seed", seed, 0, SEED_LIMIT)
    if sample and act_kind != "discrete":
        raise ValueError(f"{path} acts in a continuous space (it plays the mean): sampling draws discrete actions")


def train(config=None, overrides: Sequence[str] | str | dict[str, Any] = (), out: str | Path | None = None,
          resume: bool = False, overwrite: bool = False, progress: bool = True, dataset: str | None = None,
          model: str | None = None) -> tuple[Policy | None, dict[str, Any]]:
    """Train RATE or one of its baselines offline and return the trained :class:`Policy` (None
    on a torchrun rank other than 0) and the metrics: ``train_seconds``, ``steps`` and the
    evaluation per length (``eval``).

    ``config``: a YAML file, a :class:`rate.rl.experiment.RATEExperimentConfig` or its mapping
    (``to_dict``), with ``overrides``: ``key.sub=value`` strings (one, or a list), or a mapping
    {"key.sub": value}; none with ``resume`` and ``out``: the run's own config, saved there.
    ``dataset`` (a Minari id or folder): infer the model's interface, evaluation environment and
    return scale from it (:mod:`rate.rl.from_dataset`); without ``config`` the architecture is the
    ``model`` preset (rate, the default, rmt, trxl, dt, bc_gru, bc_mlp), which a config sets itself.

    The run folder ``out`` (default, as ``rate-train``'s: ``runs/<name>``, the config file's
    name, else the dataset's, e.g. runs/mujoco-hopper-expert-v0) is held for the run (a second
    trainer of it fails at once).  One that
    already holds a run is refused unless ``resume`` (continue it exactly) or ``overwrite``
    (replace it once the new run's first checkpoint is complete).  It gets the last checkpoint,
    ``checkpoint_best/`` (where the run evaluates), the training state and TensorBoard logs.
    Bad input raises rate.config.ConfigError, rate.data.episodes.DatasetError or CheckpointError;
    arguments that do not go together (``dataset`` with a config object, ``model`` without a
    dataset, nothing to train from) raise ValueError."""
    from rate.config import ConfigError, apply_overrides, from_dict, load_yaml, to_dict
    from rate.rl.experiment import RATEExperimentConfig
    from rate.rl.trainer import train as train_rate

    if dataset is not None and isinstance(config, (RATEExperimentConfig, dict)):
        raise ValueError("rate.train: a RATEExperimentConfig (or its mapping) names its own dataset_id; pass "
                         "dataset= with a YAML file or no config")
    if model is not None and (config is not None or dataset is None):
        raise ValueError(f"rate.train: model={model!r} picks the architecture of a dataset without a config "
                         "(dataset=...); a config sets its own")
    overrides = _override_list(overrides)
    if isinstance(config, (str, Path)) and not Path(config).exists() and Path(config).suffix not in (".yaml", ".yml"):
        raise ConfigError(f"config file not found: {config} (a dataset? rate.train(dataset={str(config)!r}))")
    if dataset is not None:
        from rate.rl.from_dataset import config_for_dataset

        cfg = config_for_dataset(dataset, model or "rate", config, overrides)
    elif isinstance(config, (RATEExperimentConfig, dict)):
        plain = to_dict(config) if isinstance(config, RATEExperimentConfig) else config
        cfg = from_dict(RATEExperimentConfig, apply_overrides(plain, overrides, RATEExperimentConfig))
    elif config is None and resume and out is not None:  # continue the run with its own config
        from rate.rl.model import CHECKPOINT_KIND
        from rate.run_folder import saved_run_config

        cfg = saved_run_config(out, RATEExperimentConfig, CHECKPOINT_KIND, overrides)
    elif config is None:
        raise ValueError("rate.train needs a config (a YAML file or a RATEExperimentConfig), a dataset, or "
                         "resume=True with the run folder out")
    elif isinstance(config, (str, Path)):
        cfg = load_yaml(RATEExperimentConfig, config, overrides)
    else:
        raise ConfigError(f"rate.train: config is a YAML file, a RATEExperimentConfig or its mapping, got "
                          f"{type(config).__name__}")
    if out is None:
        from rate.rl.from_dataset import run_name_for

        name = Path(config).stem if isinstance(config, (str, Path)) else run_name_for(dataset or cfg.dataset_id)
        out = Path("runs") / name
    out = Path(out)
    _, metrics = train_rate(cfg, out, resume=resume, progress=progress, overwrite=overwrite)  # (claims the folder)
    rank = metrics.pop("rank")
    return (load_policy(out) if rank == 0 else None), metrics


def _override_list(overrides: Sequence[str] | str | dict[str, Any]) -> list[str]:
    """``key=value`` strings from one string, a list of them, or a mapping {key: value} (each
    value written as JSON, which the YAML reader of the overrides reads back as it was)."""
    import json

    from rate.config import ConfigError

    if isinstance(overrides, str):
        return [overrides]
    if isinstance(overrides, dict):
        return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    if not isinstance(overrides, Sequence) or not all(isinstance(item, str) for item in overrides):
        raise ConfigError(f"overrides are key=value strings (one, or a list) or a mapping {{key: value}}, got "
                          f"{overrides!r}")
    return list(overrides)


# The fields of a run's EvalConfig that say which environment it plays, and how.
ENVIRONMENT_KEYS = ("env_id", "env_kwargs", "length_kwarg", "wrappers", "env_wrappers", "action_bounds")


def evaluation_defaults(policy: Policy, env_id: str | None = None) -> dict[str, Any]:
    """What :func:`evaluate` (and ``rate-eval``) play where not told: ``env_kwargs``, ``episodes``,
    ``lengths`` and ``seed`` of the run's ``eval`` section where ``env_id`` is the run's own
    environment (or None); in another one no keywords and its own length (the run's keywords and
    lengths, a maze layout or a corridor length, belong to its environment), the run's episode
    count and seed."""
    from rate.data.env_plugins import same_environment

    run_eval = policy.run_config.get("eval", {})
    own = not env_id or same_environment(env_id, run_eval.get("env_id"))
    return {"env_kwargs": dict(run_eval.get("env_kwargs") or {}) if own else {},
            "lengths": list(run_eval.get("lengths") or []) if own else [],
            # (a run trained without evaluation, eval.episodes 0, is evaluated on 100 when asked)
            "episodes": int(run_eval.get("episodes") or 100), "seed": int(run_eval.get("seed", 0))}


def _eval_config(policy: Policy, env_id: str | None, length_kwarg: str | None, env_kwargs: dict[str, Any]):
    """The run's EvalConfig with ``env_id``, ``length_kwarg`` (each None: the run's) and
    ``env_kwargs`` in place; another environment than the run's drops the run's reference returns
    (for D4RL's of that environment, where it has some) and recorded wrappers (``eval.env_wrappers``).
    ConfigError when no environment is named at all."""
    from dataclasses import replace

    from rate.config import ConfigError, from_dict
    from rate.data.env_plugins import same_environment
    from rate.rl.experiment import EvalConfig
    from rate.rl.from_dataset import d4rl_ref_scores

    run_eval = policy.run_config.get("eval", {})
    try:
        ev = from_dict(EvalConfig, run_eval)
    except ConfigError:  # an artifact of an older run config: its environment settings only
        ev = from_dict(EvalConfig, {k: v for k, v in run_eval.items() if k in ENVIRONMENT_KEYS})
    ev = replace(ev, env_id=env_id or ev.env_id, length_kwarg=length_kwarg or ev.length_kwarg,
                 env_kwargs=dict(env_kwargs))
    if env_id and not same_environment(env_id, run_eval.get("env_id")):
        # The run's reference returns and recorded wrappers are its own environment's; D4RL's
        # returns of the new id take their place where D4RL scores it (as in training, eval.env_id).
        ev = replace(ev, ref_scores=list(d4rl_ref_scores(env_id) or []), env_wrappers=[])
    if not ev.env_id:
        raise ConfigError("the run names no environment (trained with eval.episodes=0 on data recorded without "
                          "one): pass the one to evaluate in (env_id, rate-eval --env)")
    return ev


def _check_environment_arguments(env_id, length_kwarg, env_kwargs) -> None:
    """ValueError unless ``env_id`` and ``length_kwarg`` are strings (or None) and ``env_kwargs`` a
    mapping (or None)."""
    from collections.abc import Mapping

    for name, value in (("env_id", env_id), ("length_kwarg", length_kwarg)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
    if env_kwargs is not None and not isinstance(env_kwargs, Mapping):
        raise ValueError(f"env_kwargs must be a mapping of keyword to value, got {env_kwargs!r}")


def _checked_evaluation(policy: Policy, env_id: str | None, length_kwarg: str | None,
                        env_kwargs: dict[str, Any] | None, lengths) -> tuple[Any, list[int | None]]:
    """The EvalConfig that :func:`evaluate` and :meth:`Policy.make_env` play (``env_kwargs`` over
    the run's keywords) and the lengths ([None]: the environment's own), each checked as a config
    would be: types, lengths of at least 3, a keyword the lengths would replace unseen, and the
    environment made once with its spaces compared to the policy's (one ConfigError, not a
    traceback in the first rollout)."""
    from rate.config import ConfigError, from_dict
    from rate.rl.experiment import check_envs, length_keywords
    from rate.rl.model import RATEConfig

    _check_environment_arguments(env_id, length_kwarg, env_kwargs)
    if isinstance(lengths, (str, bytes)) or not (lengths is None or hasattr(lengths, "__len__")):
        raise ValueError(f"lengths is a list of episode lengths (e.g. [{lengths!r}]), got {lengths!r}")
    # (any sequence: a list, or numpy's np.geomspace(...).astype(int), whose truth value is ambiguous)
    lengths = [None] if lengths is None or len(lengths) == 0 else [
        None if t is None else _check_int("each length", t) for t in lengths]
    if any(t is not None and t < 3 for t in lengths):  # (as eval.lengths in a config, and rate-eval --lengths)
        raise ValueError(f"lengths must be at least 3 each, got {lengths}")
    ev = _eval_config(policy, env_id, length_kwarg, {**evaluation_defaults(policy, env_id)["env_kwargs"],
                                                     **(env_kwargs or {})})
    if ev.length_kwarg in (env_kwargs or {}) and lengths != [None]:  # (the lengths would replace it unseen)
        value = env_kwargs[ev.length_kwarg]
        n = value if isinstance(value, int) and not isinstance(value, bool) else "N"  # (no advice to pass 'abc')
        raise ValueError(f"env_kwargs sets {ev.length_kwarg}={value!r}, which each length of {lengths} replaces: "
                         f"give {n} as the length instead (evaluate: lengths=[{n}], rate-eval --lengths "
                         f"{n}; make_env({n})), or leave it out of env_kwargs")
    # Another keyword the environment sets its length by (T-Maze's corridor_length) loses to the swept one.
    shadowed = [key for key in length_keywords(ev.env_id) if key != ev.length_kwarg and key in (env_kwargs or {})]
    if shadowed and lengths != [None]:
        key = shadowed[0]
        raise ValueError(f"env_kwargs sets {key}={env_kwargs[key]!r}, which {ev.env_id}'s {ev.length_kwarg} (each "
                         f"length of {lengths}) overrides: give the length instead, or leave {key} out of env_kwargs")
    try:
        model = from_dict(RATEConfig, policy.run_config.get("model", {}))
    except ConfigError:  # an older run config: the environments are made, their spaces not compared
        model = None
    check_envs(ev, lengths, model)
    return ev, lengths


def evaluate(policy: Policy | str | Path, env_id: str | None = None, episodes: int | None = None,
             lengths: Sequence[int] | None = None, length_kwarg: str | None = None,
             env_kwargs: dict[str, Any] | None = None, seed: int | None = None, progress: bool = False,
             record_video: str | Path | None = None) -> dict[int | None, dict[str, float | None]]:
    """Roll ``policy`` (a :class:`Policy` or a path for :func:`load_policy`) out in ``episodes``
    environments side by side, once per length T of ``lengths`` (empty: once, at the
    environment's own length, keyed None).  Environment i is reset with seed ``seed + i``.

    The environment is ``gym.make(env_id, **env_kwargs, **{length_kwarg: T})`` inside the run's
    ``eval.env_wrappers`` (its own environment only) and ``eval.wrappers``; ``env_id`` and
    ``length_kwarg`` default to the run's; ``episodes``, ``lengths`` and ``seed`` to
    :func:`evaluation_defaults` (the run's ``eval`` settings, as ``rate-eval`` plays them), and
    ``env_kwargs`` go over its keywords (as ``Policy.make_env``'s and ``rate-eval --env-kwarg``).
    ``record_video``: a folder for MP4s of every episode (``gymnasium.wrappers.RecordVideo``; the
    environment must render ``rgb_array``; needs the ``video`` extra, moviepy), moved in when
    every rollout has finished, so a failed evaluation leaves the folder as it was.  A
    :class:`Policy` passed in is reset for the rollouts and left in the state of their last step:
    call ``reset`` before acting with it again.

    Returns per length T (None: the environment's own) a dict: ``return`` (the mean),
    ``success`` (the rate, where the environment reports ``info["success"]`` /
    ``info["is_success"]``; else None) and, where the run knows reference returns,
    ``normalized_score`` (D4RL's), each with its standard deviation over the episodes as
    ``return_std``, ``success_std``, ``normalized_score_std``."""
    from rate.config import staged_files
    from rate.rl.experiment import check_frames, check_renders, rollout_lengths
    from rate.training import SEED_LIMIT

    _check_environment_arguments(env_id, length_kwarg, env_kwargs)
    if seed is not None:
        _check_int("seed", seed, 0, SEED_LIMIT)
    # (a path: its sampling draws from ``seed`` too, as rate-eval's --seed; a Policy keeps its own)
    policy = policy if isinstance(policy, Policy) else load_policy(policy, seed=seed)
    defaults = evaluation_defaults(policy, env_id)
    episodes = _check_int("episodes", defaults["episodes"] if episodes is None else episodes, 1)
    seed = defaults["seed"] if seed is None else seed
    ev, lengths = _checked_evaluation(policy, env_id, length_kwarg, env_kwargs,
                                      defaults["lengths"] if lengths is None else lengths)
    if record_video is not None:
        check_renders(ev.env_id)
        check_frames(ev, lengths[0])
    # Videos are written into a staging folder and moved into record_video when every rollout
    # has finished: a failed evaluation leaves the folder as it was.
    with contextlib.nullcontext() if record_video is None else staged_files(record_video) as staging:
        return rollout_lengths(ev, lambda: policy, lengths, episodes, seed, progress, video=staging)
