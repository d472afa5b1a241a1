"""The public Python API: load a trained policy from any of its forms, train, evaluate.

    import rate
    policy = rate.load_policy("runs/tmaze_quick")       # a checkpoint folder, a .pt2 or a .onnx
    policy.reset()                                      # one environment; reset(8) for eight
    action = policy.act(obs)                            # the first observation of an episode
    action = policy.act(obs, reward)                    # then every step: the previous reward

:class:`Policy` is the same object for the three forms: a checkpoint runs the eager policy its
run config names (streaming RATE, DT's window, a BC baseline); an exported artifact runs its
step function (torch.export or onnxruntime) with the recurrent state between calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rate.checkpoint import CheckpointError


class Policy:
    """A stateful policy: ``reset(n_envs=1)``, then ``act`` once per environment step.

    ``act(obs, reward=None, done=None)``:
      obs     one observation (obs_shape) or a batch (n_envs, *obs_shape);
      reward  the reward each environment received for the previous action (None on the first
              step after ``reset``); it lowers the return-to-go the policy conditions on;
      done    bool per environment: True where ``obs`` is the first of a new episode (the
              previous one ended and the environment was reset), so that environment's memory
              and return-to-go start over while the others go on.
    Returns one action, or a batch as ``obs`` was.  ``last_output`` holds the action logits
    (discrete) or means (continuous) of the last step, batched; ``target_return`` may be set
    before ``reset``.
    """

    def __init__(self, backend: Any, obs_shape: Sequence[int], act_kind: str, target_return: float, source: str):
        self._backend, self.obs_shape, self.act_kind = backend, tuple(obs_shape), act_kind
        self.target_return, self.source = float(target_return), source
        self.last_output: np.ndarray | None = None
        self._n: int | None = None

    def __repr__(self) -> str:
        return f"Policy({self.source!r}, obs_shape={self.obs_shape}, act_kind={self.act_kind!r})"

    def reset(self, n_envs: int = 1) -> None:
        if n_envs < 1:
            raise ValueError(f"n_envs must be at least 1, got {n_envs}")
        self._n, self._first = n_envs, True
        self._backend.reset(n_envs, self.target_return)

    def act(self, obs, reward=None, done=None):
        if self._n is None:
            raise RuntimeError("call reset(n_envs) before act()")
        obs = np.asarray(obs, dtype=np.float32)
        single = obs.shape == self.obs_shape
        if single:
            obs = obs[None]
        if obs.shape != (self._n, *self.obs_shape):
            raise ValueError(f"observation of shape {obs.shape if not single else obs.shape[1:]}: this policy takes "
                             f"{self.obs_shape} or a batch ({self._n}, {', '.join(map(str, self.obs_shape))}) "
                             f"after reset({self._n})")
        reward = None if reward is None else np.asarray(reward, dtype=np.float32).reshape(self._n)
        done = np.zeros(self._n, dtype=bool) if done is None else np.asarray(done, dtype=bool).reshape(self._n)
        if self._first:  # every environment starts an episode
            done, reward, self._first = np.ones(self._n, dtype=bool), None, False
        action, self.last_output = self._backend.act(obs, reward, done)
        return action[0] if single else action


class _EagerBackend:
    """A checkpoint folder: the run config's eager policy."""

    def __init__(self, model, cfg, device: str):
        self.model, self.cfg = model.to(device), cfg

    def reset(self, n: int, target_return: float) -> None:
        from dataclasses import replace

        from rate.rl.experiment import make_policy

        self.policy = make_policy(self.model, replace(self.cfg, eval=replace(self.cfg.eval, target_return=target_return)))
        self.policy.reset(n)
        self.streaming = hasattr(self.policy, "step")  # per-row restarts (StreamingPolicy)

    def act(self, obs, reward, done):
        if done.any() and not self.streaming:
            if not done.all():
                raise ValueError(f"a {self.cfg.policy!r} policy of kind {self.cfg.model.kind!r} restarts all "
                                 "environments together: pass done for every one or none")
            self.policy.reset(len(done))
            reward = None
        kwargs = {"new_episode": done} if self.streaming else {}
        action = self.policy.act(obs, reward, **kwargs)
        return action, self.policy.last_output.detach().cpu().numpy()


class _ArtifactBackend:
    """An exported step function (.pt2 or .onnx) and its recurrent state."""

    def __init__(self, step_policy):
        self.step = step_policy

    def reset(self, n: int, target_return: float) -> None:
        self.step.reset(n)
        self.target_return = target_return

    def act(self, obs, reward, done):
        reward = np.zeros(len(obs), dtype=np.float32) if reward is None else reward
        out, action = self.step.act(obs, reward, done, self.target_return)
        return np.asarray(action), np.asarray(out)


def load_policy(path: str | Path, device: str = "cpu", target_return: float | None = None) -> Policy:
    """A :class:`Policy` from a checkpoint folder (model.safetensors + config.json), an exported
    ``.pt2`` (needs torch) or ``.onnx`` (needs onnxruntime, the ``export`` extra).
    ``target_return``: default the run's ``eval.target_return`` (the export's, for an artifact).
    Raises CheckpointError (a RuntimeError) for anything that is not a policy this code reads."""
    path = Path(path)
    if path.suffix in (".pt2", ".onnx"):
        from rate.deploy.export import open_artifact

        if device != "cpu":
            raise ValueError(f"exported policies run on the CPU here; got device {device!r}")
        step = open_artifact(path)
        meta = step.meta
        target = meta["target_return"] if target_return is None else target_return
        return Policy(_ArtifactBackend(step), meta["obs_shape"], meta["act_kind"], target, str(path))
    if not path.is_dir():
        raise CheckpointError(f"{path}: neither a checkpoint folder nor a .pt2 / .onnx file")
    from rate.rl.experiment import load_policy_model
    from rate.training import resolve_device

    model, cfg = load_policy_model(path)
    target = cfg.eval.target_return if target_return is None else target_return
    return Policy(_EagerBackend(model, cfg, str(resolve_device(device))), cfg.model.obs_shape, cfg.model.act_kind,
                  target, str(path))


def train(config, overrides: Sequence[str] = (), out: str | Path = "runs/rate", resume: bool = False,
          progress: bool = True) -> tuple[Policy | None, dict[str, Any]]:
    """Train RATE or one of its baselines offline, as ``config`` says: a YAML file or a
    :class:`rate.rl.experiment.RATEExperimentConfig`, with ``key.sub=value`` ``overrides``.

    The run folder ``out`` is held for the run (a second trainer of it fails at once) and gets
    the checkpoint, the training state (``resume=True`` continues it exactly) and TensorBoard
    logs.  Returns the trained :class:`Policy` (None on a torchrun rank other than 0) and the
    metrics: ``train_seconds``, ``steps`` and the evaluation per length (``eval``).
    Bad input raises rate.config.ConfigError, rate.data.episodes.DatasetError or CheckpointError."""
    from rate.checkpoint import exclusive_run_dir
    from rate.config import apply_overrides, from_dict, load_yaml, to_dict
    from rate.rl.experiment import RATEExperimentConfig
    from rate.rl.trainer import train as train_rate

    if isinstance(config, RATEExperimentConfig):
        cfg = from_dict(RATEExperimentConfig, apply_overrides(to_dict(config), overrides))
    else:
        cfg = load_yaml(RATEExperimentConfig, config, overrides)
    out = Path(out)
    with exclusive_run_dir(out):
        _, metrics = train_rate(cfg, out, resume=resume, progress=progress)
    rank = metrics.pop("rank")
    return (load_policy(out) if rank == 0 else None), metrics


def evaluate(policy: Policy | str | Path, env_id: str, episodes: int = 100, lengths: Sequence[int] | None = None,
             length_kwarg: str = "episode_length", env_kwargs: dict[str, Any] | None = None, seed: int = 0,
             progress: bool = False) -> dict[int | None, dict[str, float]]:
    """Roll ``policy`` (a :class:`Policy` or a path for :func:`load_policy`) out in ``episodes``
    environments ``gym.make(env_id, **env_kwargs, length_kwarg=T)`` side by side, for each T of
    ``lengths`` (None: the environment's own length, keyed None).  Environment i is reset with
    seed ``seed + i``.  Returns per length the success rate (``info["success"]`` at the end, else
    return > 0) and the return, each with its standard deviation over the episodes."""
    import gymnasium as gym

    from rate.data.env_plugins import load_env_plugins
    from rate.rl.rollout import rollout, summarise

    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    policy = policy if isinstance(policy, Policy) else load_policy(policy)
    load_env_plugins()
    results: dict[int | None, dict[str, float]] = {}
    for length in lengths or [None]:
        kwargs = dict(env_kwargs or {}) | ({} if length is None else {length_kwarg: length})
        results[length] = summarise(rollout(lambda: gym.make(env_id, **kwargs), policy, episodes, seed=seed,
                                            progress=progress))
    return results
