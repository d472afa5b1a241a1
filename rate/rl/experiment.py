"""Offline-RL experiment config for RATE and its Transformer baselines, dataset checks, evaluation."""

from __future__ import annotations

import contextlib
import itertools
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from rate.config import check_choices
from rate.data.env_plugins import load_env_plugins
from rate.data.episodes import DatasetError, DatasetNotFound, Episode, load_minari_episodes, validate_episodes
from rate.rl.model import CHECKPOINT_KIND, RATEConfig, RATEModel
from rate.rl.policy import SegmentRecomputePolicy, StreamingPolicy, WindowPolicy
from rate.rl.rollout import rollout, summarise
from rate.training import SEED_LIMIT, TrainConfig


@dataclass
class EvalConfig:
    env_id: str = "rate/TMaze-v0"  # Gymnasium id of the evaluation environment ("module:id" imports module first)
    # The environment keyword the evaluation sweeps over ``lengths``: the episode length T for
    # T-Maze (corridor T - 2) and AAR, the grid size for MiniGrid-Memory ("size").
    length_kwarg: str = "episode_length"
    # Further keywords of every evaluation environment (e.g. MiniGrid-Memory's observation kind).
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    # Wrappers between the environment and the model, applied in order (rate.data.spaces.WRAPPERS):
    # FlattenObservation (Dict / Tuple observations), RescaleAction (continuous actions whose
    # bounds are not [-1, 1], or integer ones) and ActionsFromZero (Discrete actions that start elsewhere than 0);
    # the training data is transformed the same way.
    wrappers: list[str] = field(default_factory=list)
    # Gymnasium wrappers the dataset's environment was recorded through (its env_spec's
    # additional_wrappers, e.g. {entry_point: "gymnasium.wrappers:TimeAwareObservation", kwargs: {}}),
    # applied in order right after gym.make, before ``wrappers``, as gym.make applies a recorded spec's.
    env_wrappers: list[dict[str, Any]] = field(default_factory=list)
    # [low, high] (a list of one value per action dimension each) that RescaleAction maps the model's
    # [-1, 1] onto, in place of the action space's bounds: an action space with infinite bounds
    # (or of 1e30 and more), whose range the data's actions give, or the bounds of data recorded
    # without an environment (inferred); empty: the space's bounds.
    action_bounds: list[list[float]] = field(default_factory=list)
    # The first action of the data's Discrete(n, start) actions and the dtype of its Box actions,
    # recorded for data without an environment: Policy.env_action maps onto them (ActionsFromZero
    # and RescaleAction read an environment's own).
    action_start: int = 0
    action_dtype: str = ""
    # The lengths to evaluate at; empty: once, at the environment's own length.
    lengths: list[int] = field(default_factory=lambda: [30, 90])
    # Episodes per length, run side by side; 0: no evaluation while or after training (data with no
    # environment to roll out in: the run keeps its last checkpoint, and no checkpoint_best).
    episodes: int = 50
    seed: int = 0  # environment i is reset with seed + i
    target_return: float = 1.0  # the return-to-go the policy starts from (undivided)
    sample: bool = False  # argmax by default
    # The evaluation after the last step (the numbers a results table reports); empty / 0 = as above.
    final_lengths: list[int] = field(default_factory=list)
    final_episodes: int = 0  # episodes per length of that evaluation (0: episodes)
    # [min, max] reference returns: reports 100 (R - min) / (max - min), the D4RL normalised score.
    ref_scores: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        from rate.data.spaces import WRAPPERS

        unknown = [w for w in self.wrappers if w not in WRAPPERS]
        if unknown:
            raise ValueError(f"eval.wrappers: unknown {unknown}; known: {', '.join(WRAPPERS)}")
        from rate.data.spaces import action_bounds_error, recorded_wrapper_error

        if (problem := action_bounds_error(self.action_bounds)) is not None:
            raise ValueError(f"eval.action_bounds needs {problem} (or [] for the action space's own), got "
                             f"{self.action_bounds!r}")
        if self.action_bounds and "RescaleAction" not in self.wrappers:  # (the data would be clipped, not the env)
            raise ValueError("eval.action_bounds is what RescaleAction maps onto: it needs RescaleAction in "
                             "eval.wrappers")
        if self.action_dtype:
            try:
                numeric = np.issubdtype(np.dtype(self.action_dtype), np.number)
            except TypeError:
                numeric = False
            if not numeric:
                raise ValueError(f"eval.action_dtype must name a numpy number type (e.g. float32), got "
                                 f"{self.action_dtype!r}")
        if self.action_start and "ActionsFromZero" not in self.wrappers:
            raise ValueError("eval.action_start is where ActionsFromZero shifts the model's actions to: it needs "
                             "ActionsFromZero in eval.wrappers")
        for i, entry in enumerate(self.env_wrappers):
            if (problem := recorded_wrapper_error(entry)) is not None:
                raise ValueError(f"eval.env_wrappers[{i}] needs {problem}, got {entry!r}")
        if self.ref_scores and (len(self.ref_scores) != 2 or self.ref_scores[0] == self.ref_scores[1]):
            raise ValueError(f"eval.ref_scores must be [min, max] with min != max (or empty), got {self.ref_scores}")
        if self.episodes < 0 or self.final_episodes < 0 or any(t < 3 for t in self.lengths + self.final_lengths):
            raise ValueError("eval.episodes must be >= 0 (0: no evaluation) and every length T >= 3")
        if not 0 <= self.seed < SEED_LIMIT:  # Gymnasium refuses negative seeds, torch's generator huge ones
            raise ValueError(f"eval.seed must be in [0, 2**32), got {self.seed}")
        if not np.isfinite(self.target_return):
            raise ValueError(f"eval.target_return must be finite, got {self.target_return}")


DEFAULT_DATASET = "rate/tmaze/oracle-T90-v0"  # (make run's)


@dataclass
class RATEExperimentConfig:
    """One offline training run: data, model, how the window is trained, how the policy is run."""

    dataset_id: str = DEFAULT_DATASET  # Minari dataset id (under MINARI_DATASETS_PATH) or folder
    model: RATEConfig = field(default_factory=RATEConfig)  # the policy network and its interface to the environment
    # where training windows start in an episode; random: at every step, drawn in random order
    # (episodes weigh by their length, as in Decision Transformer)
    window_start: Literal["episode_start", "strided", "random"] = "episode_start"
    window_stride: int = 0  # strided windows (0 = the window length)
    # bptt: one optimiser step per batch of whole windows, gradient depth model.backbone.bptt_depth;
    # official: memory detached and one optimiser step per segment, as the RATE reference code (so,
    # as there, the valve gets no gradient and stays at its initialisation)
    training_mode: Literal["bptt", "official"] = "bptt"
    # window = DT's sliding window; recompute = the RATE reference procedure (re-run the segment
    # every step; same actions as streaming, slower; a comparison mode)
    policy: Literal["streaming", "window", "recompute"] = "streaming"
    eval: EvalConfig = field(default_factory=EvalConfig)  # rollouts in the evaluation environment
    train: TrainConfig = field(default_factory=TrainConfig)  # optimisation
    # Keep a copy of the checkpoint every this many steps in snapshots/step_N/ (0: none; a
    # multiple of train.eval_every, where checkpoints are written).
    snapshot_every: int = 0
    # Also save the weights and training state every this many steps between evaluations (0:
    # only at evaluations), so that a run killed between them loses at most this many steps to
    # --resume (train.sweep resumes the runs a stopped sweep left in flight).
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        check_choices(self)
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0 (0: checkpoints at evaluations only), got {self.checkpoint_every}")
        if self.snapshot_every < 0 or (self.snapshot_every and self.snapshot_every % self.train.eval_every):
            raise ValueError(f"snapshot_every must be 0 or a multiple of train.eval_every {self.train.eval_every}, "
                             f"got {self.snapshot_every}")
        if self.window_stride < 0:
            raise ValueError(f"window_stride must be >= 0 (0 = the window length), got {self.window_stride}")
        if self.window_stride and self.window_start != "strided":
            raise ValueError(f"window_stride sets where strided windows start; with window_start "
                             f"{self.window_start!r} it would be ignored")
        if self.window_stride > self.model.window_steps:
            raise ValueError(f"window_stride {self.window_stride} is longer than a window ({self.model.window_steps} "
                             "steps): the steps between windows would never be trained on")
        if self.eval.sample and self.model.act_kind != "discrete":
            raise ValueError("eval.sample draws discrete actions from the softmax; this model's actions are "
                             f"{self.model.act_kind} (the policy plays their mean)")


def space_mismatch(obs_space: gym.Space, act_space: gym.Space, m: RATEConfig) -> str | None:
    """What in (observation space, action space) does not fit the model config, or None."""
    if tuple(obs_space.shape or ()) != tuple(m.obs_shape):
        return f"observations of shape {tuple(obs_space.shape or ())}, but the config says model.obs_shape {m.obs_shape}"
    if m.act_kind == "discrete":
        if not isinstance(act_space, gym.spaces.Discrete) or act_space.n != m.act_dim:
            return f"action space {act_space}, but the config says {m.act_dim} discrete actions"
        if act_space.start != 0:  # the model's actions are 0..act_dim-1, which such a space refuses
            return (f"action space {act_space}: the model takes discrete actions that start at 0 "
                    "(eval.wrappers: [ActionsFromZero] shifts them)")
    elif not isinstance(act_space, gym.spaces.Box) or act_space.shape != (m.act_dim,):
        return f"action space {act_space}, but the config says {m.act_dim} continuous actions"
    elif not (np.all(act_space.low == -1.0) and np.all(act_space.high == 1.0)):
        # The continuous head is a tanh: it cannot reach actions outside [-1, 1], and it would
        # waste its range on actions a narrower space refuses.
        return (f"action space {act_space}, but the model's tanh head gives actions in [-1, 1]; rescale the "
                "environment's actions to [-1, 1] (gymnasium.wrappers.RescaleAction)")
    return None


def load_dataset_for(cfg: RATEExperimentConfig) -> list[Episode]:
    """The dataset's episodes, brought to the model's form as ``eval.wrappers`` brings the
    environment (flattened observations, actions rescaled to [-1, 1]) and checked against the
    model config (spaces, values).  Warns when the evaluation environment is the dataset's with
    other settings (:func:`eval_env_differences`)."""
    wrappers = cfg.eval.wrappers
    bounds = cfg.eval.action_bounds
    if bounds and cfg.model.act_kind == "continuous" and len(bounds[0]) != cfg.model.act_dim:
        raise DatasetError(f"{cfg.dataset_id}: eval.action_bounds give {len(bounds[0])} values per side for "
                           f"model.act_dim {cfg.model.act_dim} action dimensions")
    try:
        episodes, info = load_minari_episodes(cfg.dataset_id, "FlattenObservation" in wrappers,
                                              "RescaleAction" in wrappers, "ActionsFromZero" in wrappers, bounds)
    except DatasetNotFound as err:
        if cfg.dataset_id != DEFAULT_DATASET:
            raise
        raise DatasetNotFound(f"{err} (it is also the default dataset_id, which a config naming none trains on: "
                              "name another with dataset_id, or rate-train --dataset ID)") from None
    obs_space, act_space = model_spaces(info.observation_space, info.action_space, wrappers)
    problem = space_mismatch(obs_space, act_space, cfg.model)
    if problem:
        raise DatasetError(f"{cfg.dataset_id}: {problem}")
    validate_episodes(episodes, cfg.model.act_kind == "discrete", cfg.model.act_dim, cfg.dataset_id,
                      tuple(cfg.model.obs_shape))
    longer = sum(len(ep) > cfg.model.window_steps for ep in episodes)
    if cfg.window_start == "episode_start" and longer:
        cut = sum(max(0, len(ep) - cfg.model.window_steps) for ep in episodes) / sum(len(ep) for ep in episodes)
        warnings.warn(f"{cfg.dataset_id}: {longer} of {len(episodes)} episodes are longer than the window "
                      f"({cfg.model.window_steps} steps) and window_start is episode_start, so only their first "
                      f"{cfg.model.window_steps} steps train ({cut:.0%} of the data's steps never do); "
                      "window_start=random draws windows from every step", stacklevel=2)
    warn_if_windows_are_mostly_padding(episodes, cfg)
    hops = single_hop_count(episodes, cfg)
    if hops is not None:
        warnings.warn(f"{cfg.dataset_id}: every episode ends in segment {hops} of its window (K = "
                      f"{cfg.model.segment_steps} steps), so a decision at the end is always {hops} memory updates "
                      "after the start: the memory learns to carry a cue across that many boundaries only. Mix "
                      "episode lengths in the data (a generator's length mixture) to train other hop counts",
                      stacklevel=2)
    # Against the environment the dataset names for evaluation (its own record of one, else the
    # one it was recorded in): a dataset may mean its evaluation to differ from its recording.
    differences = eval_env_differences(info.eval_env_spec, cfg.eval)
    if differences:
        how = "recorded in" if info.eval_env_spec is info.env_spec else "meant to be evaluated in"
        warnings.warn(f"{cfg.dataset_id} was {how} {info.eval_env_spec.id} with {', '.join(differences)}: the policy "
                      "is evaluated on another task than the dataset's (set eval.env_kwargs to the dataset's if that "
                      "is not meant)", stacklevel=2)
    return episodes


def warn_if_windows_are_mostly_padding(episodes: list[Episode], cfg: RATEExperimentConfig) -> None:
    """A warning when the longest episode fills less than half of the window: the padding is
    computed every batch and trains nothing (a 1000-step segment on 12-step episodes is 300x the
    time)."""
    longest, m = max(len(ep) for ep in episodes), cfg.model
    if 2 * longest < m.window_steps:
        warnings.warn(f"{cfg.dataset_id}: the window ({m.num_segments} segments of K = {m.segment_steps} steps) is "
                      f"{m.window_steps / longest:.1f}x the longest episode ({longest} steps): more than half of every "
                      "window is padding, computed and learnt nothing from (fewer model.num_segments or a smaller "
                      "model.segment_steps train the same episodes faster)", stacklevel=3)


def single_hop_count(episodes: list[Episode], cfg: RATEExperimentConfig) -> int | None:
    """The segment index every episode's last step falls in, when it is the same for all of them
    (and > 0) in a memory model's windows from the episode start; else None.  Then every end-of-
    episode decision sits the same number of memory updates after the start (issue 24).  Only for
    data rewarded at the episode's end alone (T-Maze, AAR, MiniGrid-Memory): where steps before
    the last are rewarded too (POPGym's tasks), decisions fall at every step, not at the end."""
    m = cfg.model
    if (m.kind != "transformer" or not m.backbone.num_mem_tokens or m.num_segments < 2
            or cfg.window_start != "episode_start" or len(episodes) < 2
            or max(len(ep) for ep in episodes) > m.window_steps  # cut windows: their ends are not decisions
            or any(ep.rewards[:-1].any() for ep in episodes)):
        return None
    ends = {(len(ep) - 1) // m.segment_steps for ep in episodes}
    return ends.pop() if len(ends) == 1 and min(ends) > 0 else None


def model_spaces(obs_space: gym.Space, act_space: gym.Space, wrappers: list[str]) -> tuple[gym.Space, gym.Space]:
    """The (observation, action) spaces the model sees after ``wrappers``."""
    if "FlattenObservation" in wrappers:
        try:
            obs_space = gym.spaces.flatten_space(obs_space)
        except NotImplementedError as err:
            raise DatasetError(f"observations of {obs_space} cannot be flattened: {err}") from err
    if "RescaleAction" in wrappers and isinstance(act_space, gym.spaces.Box):
        act_space = gym.spaces.Box(-1.0, 1.0, act_space.shape, np.float32)
    if "ActionsFromZero" in wrappers and isinstance(act_space, gym.spaces.Discrete):
        act_space = gym.spaces.Discrete(int(act_space.n))
    return obs_space, act_space


def eval_env_differences(env_spec, ev: EvalConfig) -> list[str]:
    """``key=recorded (evaluated with key=value)`` for each keyword the dataset's environment (same
    id) was recorded with another value of than the evaluation makes it with: one of
    ``eval.env_kwargs``, or one they leave out, which takes the environment's default (its
    registration's, else its constructor's).  The swept length keyword is left out: evaluating at
    other lengths or sizes than the training data's is what it is for; so are the keywords it
    overrides where every evaluation passes it (an environment's ``length_keywords``, e.g.
    T-Maze's corridor_length, which its episode_length sets)."""
    from rate.data.env_plugins import same_environment

    if env_spec is None or not same_environment(env_spec.id, ev.env_id):  # ("module:id" is the same id)
        return []
    recorded = env_spec.kwargs or {}
    swept = {ev.length_kwarg}
    aliases = set(length_keywords(ev.env_id))
    if ev.length_kwarg in aliases and ev.lengths:  # (then the final evaluation's lengths are given too)
        swept |= aliases  # every evaluation passes a length: none runs at the default corridor
    given = [f"{key}={recorded[key]!r} (evaluated with {key}={value!r})" for key, value in sorted(ev.env_kwargs.items())
             if key not in swept and key in recorded and recorded[key] != value]
    defaults = default_env_kwargs(ev.env_id)
    omitted = [f"{key}={value!r} (evaluated with its default {key}={defaults[key]!r})"
               for key, value in sorted(recorded.items())
               if key not in swept and key not in ev.env_kwargs and key in defaults and defaults[key] != value]
    return given + omitted


def entry_point_of(env_id: str) -> Any:
    """The callable ``gym.make(env_id)`` builds the environment with (its class, mostly); None for
    an id not registered here."""
    from gymnasium.envs.registration import load_env_creator

    load_env_plugins()  # (the project's ids, e.g. rate/POPGym-v0, and other packages' are registered there)
    try:
        spec = gym.spec(env_id.rsplit(":", 1)[-1])  # ("module:id": the id, registered by the plugins)
        return load_env_creator(spec.entry_point) if isinstance(spec.entry_point, str) else spec.entry_point
    except (gym.error.Error, ImportError, AttributeError, ValueError):
        return None


def length_keywords(env_id: str) -> tuple[str, ...]:
    """The keywords ``env_id``'s environment declares as setting its length (its class's
    ``length_keywords``: T-Maze's episode_length and corridor_length, MiniGrid-Memory's size); ()
    where it declares none or the id is not registered here."""
    return tuple(getattr(entry_point_of(env_id), "length_keywords", ())) if env_id else ()


def default_env_kwargs(env_id: str) -> dict[str, Any]:
    """The keywords ``gym.make(env_id)`` makes the environment with when given none: the
    registration's, over the entry point's keyword defaults; {} for an id not registered here."""
    import inspect

    creator = entry_point_of(env_id)
    try:
        parameters = inspect.signature(creator).parameters.values()
    except (TypeError, ValueError):  # (None, or a callable without a signature)
        return {}
    spec = gym.spec(env_id.rsplit(":", 1)[-1])
    return {**{p.name: p.default for p in parameters if p.default is not p.empty}, **(spec.kwargs or {})}


def eval_env_kwargs(ev: EvalConfig, length: int | None) -> dict[str, Any]:
    """Keywords of the evaluation environment at ``length`` (None: its own): ``env_kwargs`` and
    the swept one.  An ``episode_length`` longer than the environment's time limit (recorded in
    ``env_kwargs``, or registered) raises the limit to it: the limit would cut every episode short
    without a word."""
    kwargs = {**ev.env_kwargs, **({} if length is None else {ev.length_kwarg: length})}
    if length is not None and ev.length_kwarg == "episode_length":
        limit = kwargs.get("max_episode_steps")
        if limit is None:
            with contextlib.suppress(gym.error.Error):
                limit = gym.spec(ev.env_id).max_episode_steps
        if limit is not None and limit < length:
            kwargs["max_episode_steps"] = length
    return kwargs


def make_eval_env(ev: EvalConfig, length: int | None = None, video: tuple[Path, str] | None = None) -> gym.Env:
    """The evaluation environment at ``length`` (None: its own), inside ``ev.env_wrappers``, then
    ``ev.wrappers``.  ``video`` (folder, name prefix): rendering ``rgb_array``, every episode recorded by
    ``gymnasium.wrappers.RecordVideo`` (its encoder is moviepy, the ``video`` extra: ImportError
    without it); :func:`check_renders` says beforehand, once, whether the environment can."""
    from rate.data.spaces import wrap_env, wrap_recorded

    if video is not None:
        try:
            import moviepy  # noqa: F401  (RecordVideo's encoder)
        except ImportError:
            raise ImportError("recording video needs moviepy: pip install 'rate-rmt[video]'") from None
    render = {} if video is None else {"render_mode": "rgb_array"}
    if video is not None:
        _offscreen()
    env = gym.make(ev.env_id, **render, **eval_env_kwargs(ev, length))
    try:
        env = wrap_recorded(env, ev.env_wrappers)
        if video is not None:
            with warnings.catch_warnings():  # "overwriting existing videos": the folder is shared by design
                warnings.simplefilter("ignore")
                env = gym.wrappers.RecordVideo(env, str(video[0]), episode_trigger=lambda _: True,
                                               name_prefix=video[1], disable_logger=True)
        return wrap_env(env, ev.wrappers, ev.action_bounds)
    except BaseException:  # (a wrapper that refuses the environment: close what was made)
        env.close()
        raise


def _offscreen() -> None:
    """Frames are drawn off-screen (rgb_array): pygame-drawn environments (Gymnasium's classic
    control) would look for a display and print SDL's "error: XDG_RUNTIME_DIR ..." on a headless
    machine, a line that reads like an error of the evaluation.  A driver the user set is kept."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


def check_frames(ev: EvalConfig, length: int | None = None) -> None:
    """ValueError unless the evaluation environment renders a frame here: made with
    ``render_mode="rgb_array"``, reset and rendered once, before any rollout records video (a
    MuJoCo or Memory Maze task without an OpenGL context fails there, not in the middle of the
    evaluation with a traceback)."""
    _offscreen()
    try:
        env = gym.make(ev.env_id, render_mode="rgb_array", **eval_env_kwargs(ev, length))
        try:
            env.reset(seed=ev.seed)
            frame = env.render()
        finally:
            env.close()
    except Exception as err:  # whatever the renderer raises (GL errors have their own types)
        raise ValueError(f"{ev.env_id} cannot render frames here ({type(err).__name__}: {err}); a MuJoCo-based task "
                         "needs an OpenGL context (e.g. MUJOCO_GL=egl or osmesa)") from err
    if not isinstance(frame, np.ndarray) or frame.ndim != 3:
        raise ValueError(f"{ev.env_id} rendered {type(frame).__name__}, not an rgb_array frame, so no video")


def make_checked_eval_env(ev: EvalConfig, length: int | None = None) -> gym.Env:
    """:func:`make_eval_env`, with whatever the registry or the constructor raises (an unknown
    id, a keyword it does not take, a bad value) turned into one ConfigError naming the
    environment and its keywords."""
    from rate.config import ConfigError

    load_env_plugins()
    try:
        return make_eval_env(ev, length)
    except Exception as err:  # the registry's errors, or whatever the constructor raises
        raise ConfigError(f"cannot make {ev.env_id!r} with {eval_env_kwargs(ev, length)}: "
                          f"{type(err).__name__}: {err}") from err


def check_renders(env_id: str) -> None:
    """ValueError unless ``env_id`` renders frames (``rgb_array``, in its class's
    metadata["render_modes"]), what recording video needs; before any rollout runs.  An id or
    entry point that cannot be looked up yet is left to gym.make."""
    import importlib

    load_env_plugins()
    try:
        entry = gym.spec(env_id).entry_point
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
    except (gym.error.Error, ImportError, AttributeError):
        return
    metadata = getattr(entry, "metadata", None)
    if isinstance(metadata, dict) and "rgb_array" not in metadata.get("render_modes", []):
        modes = ", ".join(metadata.get("render_modes", [])) or "nothing"
        raise ValueError(f"{env_id} cannot record video: it renders {modes}, not rgb_array frames")


# Whose native vector environments an evaluation steps: the project's own, which reset
# environment i with seed + i as the single ones are (tested).  Others need not: Gymnasium's
# CartPoleVectorEnv draws every environment's start from one generator, so it would play other
# episodes than single CartPoles, a recorded video or the ONNX runner.
OWN_VECTOR_ENVS = "rate_envs."


def make_eval_envs(ev: EvalConfig, n: int, length: int | None = None):
    """``n`` evaluation environments at ``length`` for :func:`rate.rl.rollout.rollout`: the task's
    native vector environment (``gym.make_vec``, e.g. the T-Maze's batched numpy one) where the
    project registers one for its id (:data:`OWN_VECTOR_ENVS`), it takes every keyword and
    there are no wrappers (``ev.wrappers``, ``ev.env_wrappers``), else a factory of single ones
    (:func:`make_eval_env`).  The two play the same episodes (same seeds, same observations)."""
    try:
        spec = gym.spec(ev.env_id)
    except gym.error.Error:  # "module:id" before its module is imported: the single path imports it
        spec = None
    kwargs = eval_env_kwargs(ev, length)
    if (spec is not None and str(spec.vector_entry_point or "").startswith(OWN_VECTOR_ENVS) and not ev.wrappers
            and not ev.env_wrappers and _takes(spec, kwargs)):
        return gym.make_vec(ev.env_id, num_envs=n, **kwargs)
    return lambda: make_eval_env(ev, length)


def _takes(spec, kwargs: dict) -> bool:
    """Whether the native vector environment of ``spec`` takes ``kwargs`` (gym.make_vec passes
    them all to it).  A keyword only single environments take (``max_episode_steps``, which
    gym.make turns into a TimeLimit, a ``render_mode`` the vector environment does not draw, ...)
    sends the rollout to single ones."""
    import inspect

    from gymnasium.envs.registration import load_env_creator

    creator = spec.vector_entry_point
    creator = load_env_creator(creator) if isinstance(creator, str) else creator
    mode = kwargs.get("render_mode")
    if mode is not None and mode not in getattr(creator, "metadata", {}).get("render_modes", ()):
        return False  # (a mode it does not draw: single environments take it, as gym.make does, with a warning)
    try:
        params = inspect.signature(creator).parameters
    except (TypeError, ValueError):  # no signature to read: let gym.make_vec try
        return True
    return any(p.kind is p.VAR_KEYWORD for p in params.values()) or set(kwargs) <= set(params)


def eval_lengths(ev: EvalConfig, final: bool = False) -> list[int | None]:
    """The lengths an evaluation runs at ([None]: once, at the environment's own)."""
    lengths = (ev.final_lengths or ev.lengths) if final else ev.lengths
    return list(lengths) or [None]


def check_eval_envs(cfg: RATEExperimentConfig) -> None:
    """Make each evaluation environment once and check its spaces against the model, so that a
    wrong env id, keyword or task fails before training with one ConfigError, not in the first
    evaluation after many minutes of training (nothing to check with ``eval.episodes`` 0)."""
    if not cfg.eval.episodes:
        return
    check_envs(cfg.eval, sorted(set(cfg.eval.lengths + cfg.eval.final_lengths)) or [None], cfg.model)


def check_envs(ev: EvalConfig, lengths: list[int | None], model: RATEConfig | None) -> None:
    """Make ``ev``'s environment once at each length (None: its own) and check its spaces against
    ``model`` (None: not checked); ConfigError naming the environment and its keywords when one
    cannot be made or does not fit."""
    load_env_plugins()
    from rate.config import ConfigError

    for t in lengths:
        kwargs = eval_env_kwargs(ev, t)
        try:
            env = make_checked_eval_env(ev, t)
        except ConfigError as err:
            raise ConfigError(f"eval: {err}") from err.__cause__
        try:
            problem = None if model is None else space_mismatch(env.observation_space, env.action_space, model)
        finally:
            env.close()
        if problem:
            raise ConfigError(f"eval: {ev.env_id!r} with {kwargs} gives {problem}")
        try:  # the task's own vector environment, where the rollouts take it
            envs = make_eval_envs(ev, 1, t)
        except Exception as err:  # what its constructor raises for keywords the single one takes
            raise ConfigError(f"eval: cannot make the vector environment of {ev.env_id!r} with {kwargs}: "
                              f"{type(err).__name__}: {err}") from err
        if not callable(envs):
            envs.close()


def make_policy(model: RATEModel, cfg: RATEExperimentConfig):
    if cfg.model.kind != "transformer":
        from rate.rl.baselines import RecurrentBCPolicy

        return RecurrentBCPolicy(model, cfg.eval.target_return, sample=cfg.eval.sample, seed=cfg.eval.seed)
    if cfg.policy == "window":
        return WindowPolicy(model, cfg.eval.target_return, sample=cfg.eval.sample, seed=cfg.eval.seed)
    if cfg.policy == "recompute":
        return SegmentRecomputePolicy(model, cfg.eval.target_return, sample=cfg.eval.sample, seed=cfg.eval.seed)
    return StreamingPolicy(model, cfg.eval.target_return, sample=cfg.eval.sample, seed=cfg.eval.seed)


def evaluate_lengths(model: RATEModel, cfg: RATEExperimentConfig, lengths: list[int | None] | None = None,
                     episodes: int | None = None, progress: bool = False) -> dict[int | None, dict[str, float]]:
    """Rollout summary (:func:`rate.rl.rollout.summarise`: success where defined, return, the
    normalised score where ``eval.ref_scores`` are known) per length T, ``gym.make(env_id,
    **{length_kwarg: T})`` inside ``eval.wrappers``; None: the environment's own length.
    The id may come from any package of the ``gymnasium.envs`` entry-point group."""
    ev = cfg.eval
    # A new policy per length: a sampling policy's generator starts from eval.seed at each.
    return rollout_lengths(ev, lambda: make_policy(model, cfg), lengths or eval_lengths(ev),
                           ev.episodes if episodes is None else episodes, ev.seed, progress)


def rollout_lengths(ev: EvalConfig, policy_for_length: Callable[[], Any], lengths: list[int | None], episodes: int,
                    seed: int, progress: bool = False, video: Path | None = None) -> dict[int | None, dict[str, float]]:
    """The policy that ``policy_for_length()`` gives (any batched policy of rate.rl.policy, or a
    :class:`rate.api.Policy`) played in ``episodes`` environments of ``ev`` at each length
    (environment i reset with seed ``seed + i``): the summary per length, as
    :func:`evaluate_lengths`.  ``video``: a folder that every episode is recorded into as
    ``<env>-T<length>-env<i>-episode-0.mp4`` (:func:`make_eval_env`)."""
    load_env_plugins()
    if None in lengths and not ends_by_itself(ev.env_id, ev.env_kwargs):
        warnings.warn(f"{ev.env_id} registers no time limit: at its own length the rollouts run until every episode "
                      "ends (set one: lengths with eval.length_kwarg max_episode_steps, rate-eval --lengths N "
                      "--length-kwarg max_episode_steps)", stacklevel=3)
    results = {}
    for t in lengths:
        policy = policy_for_length()  # first: a policy that cannot be made leaves no environment open
        if video is None:
            envs = make_eval_envs(ev, episodes, t)
        else:
            prefix = f"{ev.env_id.split(':')[-1].replace('/', '_')}{'' if t is None else f'-T{t}'}-env"
            index = itertools.count()

            def envs(t=t, prefix=prefix, index=index):
                return make_eval_env(ev, t, video=(video, f"{prefix}{next(index)}"))

        results[t] = summarise(rollout(envs, policy, episodes, seed=seed, progress=progress),
                               ev.ref_scores or None)
    return results


def ends_by_itself(env_id: str, env_kwargs: dict[str, Any]) -> bool:
    """Whether episodes of the environment end without a length given: a time limit in its
    keywords or its registration, or one of this project's tasks (each truncates itself).  An id
    that cannot be looked up: assumed so."""
    if "max_episode_steps" in env_kwargs:
        return True
    try:
        spec = gym.spec(env_id)
    except gym.error.Error:
        return True
    return spec.max_episode_steps is not None or str(spec.entry_point).startswith("rate_envs")


def build_policy_model(cfg: RATEConfig) -> RATEModel:
    """RATEModel, or a BC baseline with the same interface, as ``cfg.kind`` says."""
    from rate.rl.baselines import BCGRU, BCMLP

    return {"transformer": RATEModel, "bc_mlp": BCMLP, "bc_gru": BCGRU}[cfg.kind](cfg)


def build_rate(cfg: RATEExperimentConfig, episodes: list[Episode] | None = None) -> RATEModel:
    model = build_policy_model(cfg.model)
    if episodes is not None and cfg.model.normalize_obs:
        from rate.data.episodes import observation_stats

        model.encoders.set_obs_stats(*observation_stats(episodes, cfg.model.obs_scale))
    return model


def load_policy_model(path) -> tuple[RATEModel, RATEExperimentConfig]:
    """The model (eval mode) and run config of a RATE checkpoint folder (CheckpointError when it is
    not one).  The model's ``training_record`` holds what trained its weights (package version,
    commit, dataset, step) and its ``run_config`` the run's config, which its exports and
    re-saves carry forward."""
    from rate.checkpoint import TRAINING_RECORD_KEYS, load_checkpoint

    model, cfg, meta = load_checkpoint(path, CHECKPOINT_KIND, RATEExperimentConfig,
                                       lambda c: build_policy_model(c.model))
    extra = meta.get("extra") or {}
    model.training_record = {key: extra[key] for key in TRAINING_RECORD_KEYS if key in extra}
    model.run_config = cfg  # (what save_pretrained writes back: the copy evaluates as the run did)
    return model, cfg
