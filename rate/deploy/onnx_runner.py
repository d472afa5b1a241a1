"""Play an exported ONNX policy in its Gymnasium environment and report the success rate.

    rate-play-onnx POLICY.onnx [--env ID] [--lengths 30 90 900] [--episodes 100] [--seed 0]
                   [--target-return R] [--sample | --no-sample] [--threads N] [--import MODULE ...]

Standalone: this file imports only numpy, onnxruntime and gymnasium (and the environment's own
module, named in the policy's metadata), so it can ship on its own next to a policy made by
``rate-export CHECKPOINT --format onnx`` (``python onnx_runner.py POLICY.onnx``).  A policy of one
of the project's tasks (T-Maze, AAR, MiniGrid-Memory, POPGym) also needs the project's
environments: the installed ``rate_envs`` package, or the repository's ``envs/`` folder copied
beside this file as ``rate_envs/`` (it imports no torch either); other environments need their
own package, which ``--import MODULE`` imports first (MiniGrid's ``minigrid``, Gymnasium-Robotics'
``gymnasium_robotics``, your own): the runner imports no module that the file alone names.
``python -m rate.deploy.onnx_runner`` (and, in the repository, ``python -m eval.play_onnx``) is
the same command.  ``StepPolicy`` alone (``open_onnx``, ``reset``, ``act``) needs numpy and
onnxruntime only: observations go in as the environment gives them (inside the wrappers the data
was recorded through and the run's ``eval.wrappers``; the graph normalises them), continuous actions
come out in [-1, 1] where the run rescaled them (``RescaleAction``, onto ``eval.action_bounds`` where
the action space has infinite bounds or the data was recorded without an environment; the
metadata's ``config["eval"]`` holds them, and ``rate.load_policy(path).env_action`` applies them).  The policy's recurrent state (memory,
Transformer-XL cache, in-segment key/value cache, counters) lives in numpy arrays between steps;
its shapes and dtypes come from the metadata stored in the ONNX file.

``--lengths`` sets the evaluated length (the policy's ``length_kwarg``: T-Maze's episode length T,
MiniGrid-Memory's grid size, another environment's time limit ``max_episode_steps`` where the
policy was trained on a dataset of it); other keywords of another environment it cannot set.
Episodes run side by side, one batch row each; environment i is reset with seed ``seed + i``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # gymnasium is imported where environments are made: StepPolicy runs without it
    import gymnasium as gym

EXPORT_FORMAT = "rate-policy-step"
# Version 2 carries the last action in the state (one decoder call per step); version 3 is the same
# graph whose environment needs recorded wrappers or action bounds (env_wrappers, the run's
# eval.action_bounds), which a runner of version 2 would not apply: it refuses the file instead.
EXPORT_FORMAT_VERSION = 3
READABLE_FORMAT_VERSIONS = (2, 3)
METADATA_KEY = "rate_export"
# The project's environments package (the repository's envs/ folder, installed as rate_envs).
PROJECT_ENVS = "rate_envs."


def _sorted_keys(space: gym.Space) -> gym.Space:
    """``space`` with every Dict's keys in sorted order (rate.data.spaces.canonical_space)."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Dict):
        return gym.spaces.Dict({key: _sorted_keys(space[key]) for key in sorted(space.spaces)})
    if isinstance(space, gym.spaces.Tuple):
        return gym.spaces.Tuple([_sorted_keys(sub) for sub in space.spaces])
    return space


def _flatten_observations(env: gym.Env) -> gym.Env:
    """Flat observations with Dict keys in sorted order, the layout the model was trained on
    (rate.data.spaces.flatten_observations; gym's FlattenObservation keeps the env's key order)."""
    import gymnasium as gym

    space = _sorted_keys(env.observation_space)
    return gym.wrappers.TransformObservation(env, lambda obs: gym.spaces.flatten(space, obs),
                                             gym.spaces.flatten_space(space))


def _rescale_actions(env: gym.Env, bounds: list | None = None) -> gym.Env:
    """The policy's actions in [-1, 1] mapped onto the environment's bounds, or onto ``bounds``
    ([low, high], the run's eval.action_bounds: an action space with infinite bounds, or the data's
    bounds where it was recorded without an environment), in float64;
    an integer Box takes the nearest integer (as rate.data.spaces.rescale_actions)."""
    import gymnasium as gym

    space = env.action_space
    if not isinstance(space, gym.spaces.Box):  # (--env: another environment than the run's)
        raise ArtifactError(f"the policy's actions are mapped onto a Box's bounds (RescaleAction); "
                            f"{env.spec.id if env.spec else 'this environment'} acts in {space}")
    if bounds:
        low, high = (np.asarray(b, dtype=np.float64) for b in bounds)
        if low.shape != space.shape:
            raise ArtifactError(f"the run's eval.action_bounds give {low.size} values per side; "
                                f"{env.spec.id if env.spec else 'this environment'} acts in {space}")
    else:
        low, high = np.asarray(space.low, dtype=np.float64), np.asarray(space.high, dtype=np.float64)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ArtifactError(f"the policy's actions are mapped onto the action space's bounds; {space} has "
                                "infinite ones")
    integer = np.issubdtype(space.dtype, np.integer)

    def onto_bounds(action):
        unit = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        value = low + (unit + 1.0) * (high - low) / 2.0
        return (np.rint(value) if integer else value).astype(space.dtype)

    return gym.wrappers.TransformAction(env, onto_bounds, gym.spaces.Box(-1.0, 1.0, low.shape, np.float32))


def _actions_from_zero(env: gym.Env) -> gym.Env:
    """The policy's discrete actions 0..n-1 as the environment's Discrete(n, start=s) ones."""
    import gymnasium as gym

    if not isinstance(env.action_space, gym.spaces.Discrete):  # (--env: another environment than the run's)
        raise ArtifactError(f"the policy's actions start at 0 of a Discrete space (ActionsFromZero); "
                            f"{env.spec.id if env.spec else 'this environment'} acts in {env.action_space}")
    start, n = int(env.action_space.start), int(env.action_space.n)
    return gym.wrappers.TransformAction(env, lambda action: start + int(action), gym.spaces.Discrete(n))


# The run config's eval.wrappers between the environment and the policy: a copy of
# rate.data.spaces.WRAPPERS, as this file imports nothing of the library
# (tests/test_foreign_datasets.py checks that the two lay observations out and shift actions alike).
WRAPPERS: dict[str, Callable[[gym.Env], gym.Env]] = {
    "FlattenObservation": _flatten_observations,
    "RescaleAction": _rescale_actions,
    "ActionsFromZero": _actions_from_zero,
}


class ArtifactError(RuntimeError):
    """A file that is not an exported policy this runner can play."""


def warn_if_older_than_its_run(path: Path, meta: dict) -> None:
    """Warn when the artifact ``path`` was written beside the checkpoint it was exported from (the
    export records whether) and the checkpoint there was saved again since: another save id
    (the run trained on, e.g. resumed, or weights saved there by save_pretrained), or, for an
    artifact that records none, another training step."""

    record = meta.get("provenance") or {}
    exported, exported_save = (record.get("trained") or {}).get("step"), record.get("checkpoint_save_id")
    if record.get("beside_checkpoint") is False:
        return  # written elsewhere than its checkpoint's folder (checkpoint_best's into the run folder)
    try:
        beside = json.loads((path.parent / "config.json").read_text())
        run_step, run_save = beside.get("extra", {}).get("step"), beside.get("save_id")
    except (OSError, ValueError, AttributeError):  # no run beside it (a shipped file), or not ours
        return
    again = f"export again (rate-export {path.parent} --format {path.suffix[1:].lower()}) to play the current one"
    if isinstance(exported, int) and isinstance(run_step, int) and exported != run_step:
        warnings.warn(f"{path.name} was exported from step {exported}, but the checkpoint beside it is at step "
                      f"{run_step}: {again}", stacklevel=2)
    elif isinstance(exported_save, str) and isinstance(run_save, str) and exported_save != run_save:
        warnings.warn(f"{path.name} was exported from an earlier save of the checkpoint beside it (its weights were "
                      f"saved again since): {again}", stacklevel=2)


def missing_artifact(path: Path, suffix: str) -> str:
    """Why ``path`` (not a file) cannot be opened as a ``suffix`` artifact: missing, or a run
    folder, where rate-export writes policy.onnx / policy.pt2."""
    if not path.is_dir():
        return f"{path}: no such file"
    inside = path / f"policy{suffix}"
    hint = (f"did you mean {inside}?" if inside.is_file()
            else f"export one with: rate-export {path} --format {suffix[1:]}")
    return f"{path} is a folder, not an exported policy; {hint}"


def read_metadata(text: str, source: str | Path) -> dict:
    """An artifact's ``rate_export`` metadata (JSON text) as a mapping, else one ArtifactError."""
    try:
        meta = json.loads(text)
    except ValueError as err:
        raise ArtifactError(f"{source}: corrupt {METADATA_KEY} metadata: {err}") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{source}: {METADATA_KEY} metadata is not a mapping")
    return meta


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# The run's evaluation settings the runner reads (metadata "config" -> "eval"), and their types.
_RUN_EVAL_TYPES: dict[str, Callable[[Any], bool]] = {
    "lengths": lambda v: isinstance(v, list) and all(_is_int(t) for t in v),
    "episodes": lambda v: _is_int(v) and v >= 0,
    "seed": lambda v: _is_int(v) and v >= 0,
    "sample": lambda v: isinstance(v, bool),
    "wrappers": lambda v: isinstance(v, list) and all(isinstance(w, str) for w in v),
    "action_bounds": lambda v: isinstance(v, list),
}


def _mistyped_run_settings(meta: dict) -> list[str]:
    """The metadata entries beyond the step function's that the runner reads (the run's
    environment and evaluation settings) and that do not have their type: an edited file."""
    wrong = [key for key, kind in (("env_kwargs", dict), ("env_wrappers", list))
             if meta.get(key) is not None and not isinstance(meta[key], kind)]
    config = meta.get("config", {})
    run_eval = config.get("eval", {}) if isinstance(config, dict) else None
    if not isinstance(run_eval, dict):
        return [*wrong, "config.eval"]
    return wrong + [f"config.eval.{key}" for key, fits in _RUN_EVAL_TYPES.items()
                    if run_eval.get(key) is not None and not fits(run_eval[key])]


class StepPolicy:
    """An exported step function and its recurrent state: ``reset(batch)``, then ``act`` every step.

    run: list of input arrays (inputs then state, in the metadata's order) -> list of outputs
    (action_output, action, then the next state).
    """

    def __init__(self, meta: dict, run: Callable[[list[np.ndarray]], Sequence[np.ndarray]], source: str):
        if meta.get("format") != EXPORT_FORMAT or meta.get("format_version") not in READABLE_FORMAT_VERSIONS:
            raise ArtifactError(f"{source}: format {meta.get('format')!r} version {meta.get('format_version')!r}, "
                                f"this runner reads {EXPORT_FORMAT!r} versions "
                                f"{', '.join(map(str, READABLE_FORMAT_VERSIONS))}")
        state, obs_shape = meta.get("state"), meta.get("obs_shape")
        if not (isinstance(state, list) and all(isinstance(s, dict) and {"shape", "dtype"} <= s.keys() for s in state)
                and isinstance(obs_shape, list) and isinstance(meta.get("act_dim"), int)
                and isinstance(meta.get("target_return"), (int, float)) and np.isfinite(meta["target_return"])
                and meta.get("act_kind") in ("discrete", "continuous")):
            raise ArtifactError(f"{source}: its {METADATA_KEY} metadata lacks the state, obs_shape, act_dim, act_kind "
                                "or finite target_return the runner needs (a damaged or edited file)")
        wrong = _mistyped_run_settings(meta)
        if wrong:
            raise ArtifactError(f"{source}: its {METADATA_KEY} metadata holds {', '.join(wrong)} of the wrong type (a "
                                "damaged or edited file)")
        self.meta, self._run, self.source = meta, run, source
        self.state: list[np.ndarray] = []
        self._batch, self._fresh = 0, True

    def reset(self, batch: int) -> None:
        """All-zero state of ``batch`` rows; the first ``act`` marks every row as a new episode."""
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        self.state = [np.zeros([batch if d == "batch" else d for d in s["shape"]], dtype=s["dtype"])
                      for s in self.meta["state"]]
        self._batch, self._fresh = batch, True

    def act(self, obs, last_reward, new_episode, target_return: float | None = None,
            action_noise: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One step of every row: obs (B, *obs_shape) as the environment gives it (the graph
        normalises), last_reward (B,) (None only where every row starts an episode), new_episode
        (B,) bool (all True on the first step after ``reset``), action_noise (B, act_dim) or None
        (greedy) -> (action_output (B, act_dim), action).  ValueError for anything else: an
        all-zero state read as an episode in progress would give actions without a word."""
        if not self.state:
            raise RuntimeError("call reset(batch) before act()")
        obs = np.asarray(obs, dtype=np.float32)
        if obs.ndim == 0 or list(obs.shape[1:]) != list(self.meta["obs_shape"]) or obs.shape[0] != self._batch:
            raise ValueError(f"observations of shape {obs.shape}: the policy takes ({self._batch}, "
                             f"{', '.join(map(str, self.meta['obs_shape']))}) after reset({self._batch})")
        new_episode = np.asarray(new_episode, dtype=bool).reshape(self._batch)
        if self._fresh and not new_episode.all():
            raise ValueError("the first act() after reset() starts every row's episode: pass new_episode all True")
        if last_reward is None:
            if not new_episode.all():
                raise ValueError("act() without last_reward: pass the reward each row received for the previous "
                                 "action (None only where every row starts an episode)")
            last_reward = np.zeros(self._batch, dtype=np.float32)
        batch = self._batch
        target = self.meta["target_return"] if target_return is None else target_return
        noise = np.zeros((batch, self.meta["act_dim"]), np.float32) if action_noise is None else action_noise
        inputs = [obs, np.asarray(last_reward, dtype=np.float32).reshape(batch), new_episode,
                  np.full(batch, target, dtype=np.float32), np.asarray(noise, dtype=np.float32).reshape(batch, -1)]
        try:
            out = self._run(inputs + self.state)
        except Exception as err:  # the runtime's own error types (onnxruntime's, torch's) for a graph that fails
            raise ArtifactError(f"{self.source}: the step function failed: {err}") from err
        self.state, self._fresh = list(out[2:]), False
        return out[0], out[1]


def gumbel_noise(rng: np.random.Generator, batch: int, act_dim: int) -> np.ndarray:
    """Noise that makes argmax(logits + noise) a sample of softmax(logits) (the Gumbel-max trick)."""
    return -np.log(-np.log(rng.uniform(1e-12, 1.0, size=(batch, act_dim)))).astype(np.float32)


def open_onnx(path: str | Path, threads: int = 0) -> StepPolicy:
    """The ONNX policy at ``path`` on onnxruntime's CPU provider with ``threads`` intra-op threads
    (0: onnxruntime's default, one per physical core)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ArtifactError("playing an ONNX policy needs onnxruntime: pip install onnxruntime") from None

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(missing_artifact(path, ".onnx"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # No busy-waiting between calls: a rollout steps its environments (Python) between policy
    # steps, and spinning worker threads would take those cores from them (and from torch).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for unreadable models
        raise ArtifactError(f"{path}: not a readable ONNX model: {err}") from err
    custom = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in custom:
        raise ArtifactError(f"{path}: an ONNX model without {METADATA_KEY!r} metadata (not made by rate.deploy.export)")
    meta = read_metadata(custom[METADATA_KEY], path)
    names, outputs = meta.get("inputs", []), meta.get("outputs", [])
    if sorted(names) != sorted(i.name for i in session.get_inputs()) or \
            sorted(outputs) != sorted(o.name for o in session.get_outputs()):
        raise ArtifactError(f"{path}: the model's inputs or outputs do not match its metadata")
    # Outputs asked for by name, in the metadata's order (action_output, action, then the state).
    return StepPolicy(meta, lambda arrays: session.run(outputs, dict(zip(names, arrays))), str(path))


def _ends_by_itself(meta: dict) -> bool:
    """Whether episodes of ``meta``'s environment end without a length given: a time limit in its
    keywords or its registration, or one of this project's tasks (each truncates itself); an id
    that cannot be looked up yet (its module imported when it is made): assumed so.  (As
    rate.rl.experiment's check for rate-eval.)"""
    import gymnasium as gym

    env_id = str(meta.get("env_id", ""))
    if "max_episode_steps" in (meta.get("env_kwargs") or {}):
        return True
    try:
        spec = gym.spec(env_id.split(":")[-1] if ":" in env_id else env_id)
    except gym.error.Error:
        return True
    return spec.max_episode_steps is not None or str(spec.entry_point).startswith(PROJECT_ENVS)


def make_env_factory(meta: dict, length: int | None) -> Callable[[], gym.Env]:
    """Environments as the policy was evaluated in: ``meta``'s ``env_id`` (only the project's own
    entry points are imported for it), ``env_kwargs``, recorded ``env_wrappers`` and the run's
    wrappers, at ``length`` (None: its own)."""
    import gymnasium as gym

    env_id, entry_point = meta.get("env_id"), meta.get("env_entry_point")
    if not env_id:
        raise ArtifactError("the policy records no environment (trained on data recorded without one): name the "
                            "one to play in (--env ID)")
    if ":" in env_id:  # "module:id", which gym.make would import: only the project's own module is imported
        module, env_id = env_id.split(":", 1)
        if module == PROJECT_ENVS.rstrip(".") or module.startswith(PROJECT_ENVS):
            _import_project_envs(env_id, module)
        elif env_id not in gym.registry:
            raise ArtifactError(f"the policy plays {env_id} of {module}, which is not registered; import {module} "
                                "first (this runner imports only the project's own environments)")
    if env_id not in gym.registry and entry_point:
        # The file names the module to import: only the project's own environments are trusted;
        # register any other environment before calling (its package does so on import).
        if not str(entry_point).startswith(PROJECT_ENVS):
            raise ArtifactError(f"{env_id} is not registered and {entry_point!r} is not a project environment; "
                                "import the package that registers it first")
        # The project's package registers its tasks with their default keywords (a Memory Maze id
        # holds its maze size there): registered here with the entry point alone, the 11x11 maze
        # would be played at the class's default 9x9.
        _import_project_envs(env_id, str(entry_point).split(":")[0])
        register_envs = getattr(sys.modules.get(PROJECT_ENVS.rstrip(".")), "register_envs", None)
        if env_id not in gym.registry and register_envs is not None:
            register_envs()  # (idempotent: registers the ids missing from the registry)
        if env_id not in gym.registry:  # (a copied rate_envs/ that does not know this id)
            gym.register(id=env_id, entry_point=entry_point)
    if env_id not in gym.registry:
        raise ArtifactError(f"the policy plays {env_id}, which is not registered and has no project entry point "
                            "in the metadata; import the package that registers it first")
    module = str(gym.spec(env_id).entry_point).split(":")[0]
    if module.startswith(PROJECT_ENVS):
        _import_project_envs(env_id, module)
    kwargs = dict(meta.get("env_kwargs") or {})
    if length is not None:
        length_kwarg = meta.get("length_kwarg", "episode_length")
        if length_kwarg != "max_episode_steps" and not str(gym.spec(env_id).entry_point).startswith(PROJECT_ENVS):
            raise ArtifactError(f"--lengths sets the project's tasks' lengths and other environments' time limits; "
                                f"this policy sets {length_kwarg!r} of {env_id}")
        kwargs[length_kwarg] = length
        # As rate-eval (rate.rl.experiment.eval_env_kwargs): a time limit shorter than the episode
        # (recorded with a dataset's environment, or registered) is raised to it, else it would
        # cut every episode short without a word.
        limit = kwargs.get("max_episode_steps", gym.spec(env_id).max_episode_steps)
        if length_kwarg == "episode_length" and limit is not None and limit < length:
            kwargs["max_episode_steps"] = length
    wrappers = meta.get("config", {}).get("eval", {}).get("wrappers", [])
    bounds = meta.get("config", {}).get("eval", {}).get("action_bounds") or None
    unknown = [w for w in wrappers if w not in WRAPPERS]
    if unknown:
        raise ArtifactError(f"the policy's environment needs the wrappers {unknown}, which this runner does not know")
    recorded = [_recorded_wrapper(entry) for entry in meta.get("env_wrappers") or []]
    points = [entry["entry_point"] for entry in meta.get("env_wrappers") or []]

    def make() -> gym.Env:
        try:
            env = gym.make(env_id, **kwargs)
        except ImportError as err:  # (ViZDoom, Memory Maze: a package of their own, not installed here)
            raise ArtifactError(f"{env_id} cannot be made here: {err}") from err
        # What the data was recorded through, first; those the entry point applies itself (it is a
        # wrapper, listed first in its spec) were applied by gym.make.
        made = [w.entry_point for w in (getattr(env.spec, "additional_wrappers", None) or ())]
        todo = list(zip(points, recorded))
        while todo and made and todo[0][0] == made[0]:
            todo, made = todo[1:], made[1:]
        try:
            for _, (wrapper, wrapper_kwargs) in todo:
                env = wrapper(env, **wrapper_kwargs)
            for name in wrappers:
                env = _rescale_actions(env, bounds) if name == "RescaleAction" else WRAPPERS[name](env)
        except BaseException:
            env.close()
            raise
        # (metadata that names only the environment, as the benchmarks pass, is not checked)
        problem = _space_mismatch(env, meta) if {"obs_shape", "act_kind", "act_dim"} <= meta.keys() else None
        if problem is not None:  # (the environment's own refusal of an action would be a traceback)
            env.close()
            raise ArtifactError(f"{env_id} with {kwargs}: {problem}")
        return env

    return make


def _space_mismatch(env: gym.Env, meta: dict) -> str | None:
    """What in the environment's spaces the policy cannot play, or None (rate.rl.experiment's
    space_mismatch, on the artifact's metadata: this file imports nothing of the library)."""
    import gymnasium as gym

    obs_shape, act_space, act_dim = tuple(env.observation_space.shape or ()), env.action_space, meta["act_dim"]
    if obs_shape != tuple(meta["obs_shape"]):
        return f"observations of shape {obs_shape}, but the policy takes {tuple(meta['obs_shape'])}"
    if meta["act_kind"] == "discrete":
        if not isinstance(act_space, gym.spaces.Discrete) or act_space.n != act_dim or act_space.start != 0:
            return f"action space {act_space}, but the policy chooses among {act_dim} discrete actions from 0"
    elif not isinstance(act_space, gym.spaces.Box) or act_space.shape != (act_dim,):
        return f"action space {act_space}, but the policy gives {act_dim} continuous actions"
    elif not (np.all(act_space.low == -1.0) and np.all(act_space.high == 1.0)):
        return f"action space {act_space}, but the policy's actions lie in [-1, 1] (its run rescaled none)"
    return None


def _recorded_wrapper(entry) -> tuple[Callable[..., gym.Env], dict]:
    """The wrapper class and keywords of one of the metadata's ``env_wrappers`` (those the
    training data was recorded through, {entry_point: "module:Class", kwargs}).  Gymnasium's and
    the project's are imported here; any other module must be imported first (``--import``)."""
    from gymnasium.envs.registration import load_env_creator

    point = entry.get("entry_point") if isinstance(entry, dict) else None
    if not isinstance(point, str) or ":" not in point or not isinstance(entry.get("kwargs") or {}, dict):
        raise ArtifactError(f"the metadata's recorded wrapper {entry!r} is not {{entry_point: 'module:Class', kwargs}}")
    module = point.split(":")[0]
    trusted = module == "gymnasium" or module.startswith(("gymnasium.", PROJECT_ENVS))
    if not trusted and module not in sys.modules:
        raise ArtifactError(f"the policy's training data was recorded through the wrapper {point}; import its "
                            f"module first (--import {module})")
    try:
        return load_env_creator(point), dict(entry.get("kwargs") or {})
    except (ImportError, AttributeError) as err:
        raise ArtifactError(f"the recorded wrapper {point} cannot be loaded here "
                            f"({type(err).__name__}: {err})") from None


def _import_project_envs(env_id: str, module: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise ArtifactError(f"the policy plays {env_id}, one of the project's environments ({module}), which "
                            f"cannot be imported here ({err}); install the project, or copy its envs/ folder "
                            "next to this file as rate_envs/") from None


def play(policy: StepPolicy, make_env: Callable[[], gym.Env], episodes: int, seed: int,
         target_return: float | None = None, max_steps: int | None = None,
         sample: bool = False) -> dict[str, np.ndarray]:
    """Run ``episodes`` environments side by side until all have ended (finished ones idle) or
    ``max_steps`` steps have passed.  ``sample``: discrete actions drawn from the softmax (seeded);
    a continuous policy plays its mean, as the eager policy does, so sampling it is refused.

    A deliberate copy of the rollout loop of rate/rl/rollout.py: this file must run where neither
    torch nor the library is installed (tests/test_export.py plays both on the same episodes)."""
    if sample and policy.meta.get("act_kind") == "continuous":
        raise ValueError("sampling draws discrete actions from the softmax; this policy's actions are "
                         "continuous (it plays their mean): leave --sample out")
    rng = np.random.default_rng(seed)
    envs: list[gym.Env] = []
    try:
        envs.extend(make_env() for _ in range(episodes))
        return _play(policy, envs, rng, seed, target_return, max_steps, sample)
    finally:
        for env in envs:
            env.close()


def _play(policy: StepPolicy, envs: list[gym.Env], rng: np.random.Generator, seed: int, target_return: float | None,
          max_steps: int | None, sample: bool) -> dict[str, np.ndarray]:
    episodes = len(envs)
    obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
    policy.reset(episodes)
    returns = np.zeros(episodes)
    success = np.full(episodes, np.nan)  # NaN: the environment does not report success
    done = np.zeros(episodes, dtype=bool)
    rewards = np.zeros(episodes, dtype=np.float32)
    new_episode = np.ones(episodes, dtype=bool)
    step = 0
    while not done.all() and (max_steps is None or step < max_steps):
        step += 1
        noise = gumbel_noise(rng, episodes, policy.meta["act_dim"]) if sample else None
        _, actions = policy.act(obs, rewards, new_episode, target_return, noise)
        new_episode[:] = False
        rewards = np.zeros(episodes, dtype=np.float32)
        for i, env in enumerate(envs):
            if done[i]:
                continue
            obs[i], reward, terminated, truncated, info = env.step(actions[i])
            rewards[i] = reward  # (float32, as the policy takes it)
            returns[i] += float(reward)  # (summed as reported, as rate.rl.rollout sums them)
            if terminated or truncated:
                done[i] = True
                flag = info.get("success", info.get("is_success"))
                success[i] = np.nan if flag is None else float(bool(np.asarray(flag).any()))
    if not np.isnan(success).all():  # reported: an episode that ended without the flag failed
        success = np.nan_to_num(success, nan=0.0)
    return {"returns": returns, "success": success}


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module's docstring); Ctrl-C is one line and exit status 130."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)  # as called: rate-play-onnx or python -m ...
    module = spec.name if spec is not None and spec.name.split(".")[0] in ("rate", "eval") else None
    parser = argparse.ArgumentParser(prog=f"python -m {module}" if module else "rate-play-onnx",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("policy", type=Path, help="an .onnx file written by rate-export --format onnx")
    parser.add_argument("--env", metavar="ID", help="the Gymnasium id to play in (default: the policy's own; another "
                                                    "one gets none of the policy's environment keywords)")
    parser.add_argument("--lengths", type=int, nargs="+",
                        help="values of the policy's length argument, each >= 3: T-Maze's T, MiniGrid-Memory's grid "
                             "size, ... (default: the run's eval.lengths in its own environment, else the "
                             "environment's own length)")
    parser.add_argument("--episodes", type=int, help="episodes per length, side by side (default: the run's "
                                                     "eval.episodes, 100 for a run without evaluation)")
    parser.add_argument("--seed", type=int, help="environment i is reset with SEED + i, and --sample draws from SEED "
                                                 "(default: the run's eval.seed)")
    parser.add_argument("--target-return", type=float, help="default: the one stored at export")
    parser.add_argument("--threads", type=int,
                        help="onnxruntime threads (default: onnxruntime's, one per physical core)")
    parser.add_argument("--max-steps", type=int, help="stop episodes that run longer (default: the env's own limit)")
    parser.add_argument("--sample", action=argparse.BooleanOptionalAction, default=None,
                        help="sample discrete actions from the softmax, or take the argmax (default: as the run "
                             "evaluated, its eval.sample)")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import MODULE first: the package that registers the policy's environment (repeatable)")
    args = parser.parse_args(argv)
    # (checked here, not by rate.training's argparse types: this runner needs neither torch nor the package)
    for option, value, least in (("--episodes", args.episodes, 1), ("--seed", args.seed, 0),
                                 ("--lengths", min(args.lengths or [3]), 3), ("--threads", args.threads, 1),
                                 ("--max-steps", args.max_steps, 1)):
        if value is not None and value < least:
            parser.error(f"{option} must be at least {least}, got {value}")
    if args.target_return is not None and not np.isfinite(args.target_return):
        parser.error(f"--target-return must be a finite number, got {args.target_return}")
    try:
        import gymnasium as gym
    except ImportError:
        print("error: playing a policy in its environment needs gymnasium: pip install gymnasium", file=sys.stderr)
        return 2
    try:
        for name in args.imports:
            try:
                importlib.import_module(name)
            except ImportError as err:
                raise ArtifactError(f"--import {name}: {err}") from None
        policy = open_onnx(args.policy, args.threads or 0)
        with warnings.catch_warnings(record=True) as said:  # a command's warning: one line, as rate-eval's
            warnings.simplefilter("always")
            warn_if_older_than_its_run(Path(args.policy), policy.meta)
        for warning in said:
            print(f"warning: {warning.message}", file=sys.stderr)
        meta = policy.meta
        # As rate-eval plays a run where not told: its evaluation's episodes, seed and (in its own
        # environment) lengths.
        run_eval = meta.get("config", {}).get("eval", {})
        # (an id with or without its module prefix, "rate_envs:rate/TMaze-v0", is the same environment)
        own = not args.env or args.env.split(":")[-1] == str(meta.get("env_id", "")).split(":")[-1]
        if not own:  # another environment: none of the run's keywords
            meta = {**meta, "env_id": args.env, "env_entry_point": None, "env_kwargs": {}, "env_wrappers": []}
        episodes = args.episodes or int(run_eval.get("episodes") or 100)
        seed = int(run_eval.get("seed", 0)) if args.seed is None else args.seed
        lengths = args.lengths or (list(run_eval.get("lengths") or []) if own else [])
        factories = [(t, make_env_factory(meta, t)) for t in (lengths or [None])]
        sample = args.sample
        if sample is None:
            sample = bool(run_eval.get("sample", False))
            sample = sample and meta.get("act_kind") == "discrete"  # (a continuous policy plays its mean)
        if sample and meta.get("act_kind") == "continuous":
            raise ArtifactError(f"{args.policy} acts in a continuous space (it plays the mean); --sample draws "
                                "discrete actions only")
    except ArtifactError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if None in (lengths or [None]) and args.max_steps is None and not _ends_by_itself(meta):
        print(f"warning: {meta['env_id']} registers no time limit: at its own length the episodes run until each "
              "ends (pass --max-steps N)", file=sys.stderr)
    print(f"{'T':>6} {'success':>9} {'return':>8} {'seconds':>8}" + ("   (sampled actions)" if sample else ""))
    for t, make_env in factories:
        start = time.perf_counter()
        try:  # an environment that refuses the length, observations the graph does not take
            out = play(policy, make_env, episodes, seed, args.target_return, args.max_steps, sample)
        except (ArtifactError, ValueError, TypeError, gym.error.Error) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        rate = "-" if np.isnan(out["success"]).all() else f"{out['success'].mean():.3f}"
        print(f"{t if t is not None else '-':>6} {rate:>9} {out['returns'].mean():>8.3f} "
              f"{time.perf_counter() - start:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
