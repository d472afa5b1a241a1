"""A run config for any Minari dataset, with nothing written by hand.

    cfg = config_for_dataset("D4RL/pointmaze/umaze-v2", model="rate", overrides=["train.steps=500"])

The model's interface comes from what the dataset records: observation kind and shape (a rank-1
Box is a vector, a rank-3 Box an image with its channel order detected; anything else flattened
by ``FlattenObservation``), action kind and size (continuous actions whose bounds are not
[-1, 1] rescaled by ``RescaleAction``), the evaluation environment (the dataset's
``eval_env_spec``, else its ``env_spec``, at its own length), the return-to-go scale and target
(the best episode's return), the D4RL reference scores.  The architecture comes from
:data:`MODEL_PRESETS`.  Order of precedence, lowest first: the preset (or a config file's
values), the inferred values where the file does not set them, the ``key=value`` overrides.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rate.config import ConfigError, apply_overrides, from_dict, merge_sections, read_config_file
from rate.rl.model import MIN_IMAGE_SIZE

# Shared by the Transformer presets: K = 20 steps x N = 3 segments (the RATE paper's MuJoCo
# setting), 3 layers of 4 heads x 32, d_model 128.
_TRANSFORMER = {"n_layers": 3, "d_model": 128, "n_heads": 4, "d_head": 32, "d_inner": 256, "use_ffn": False}

# The architectures --model names.  Each sees the same 60 steps of context: RATE / RMT through 5
# memory tokens carried over 3 segments of 20 steps, TrXL through a cache of the 2 previous
# segments, DT through one 60-step window slid over the episode; BC-GRU carries a GRU state
# through the episode, BC-MLP sees the current step only.
def _segmented(**backbone: Any) -> dict[str, Any]:
    """A Transformer preset decoded in 3 segments of 20 steps by the streaming policy."""
    return {"model": {"segment_steps": 20, "num_segments": 3, "backbone": _TRANSFORMER | backbone},
            "policy": "streaming"}


MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "rate": _segmented(num_mem_tokens=5, memory_update="mrv", mrv_heads=2),
    "rmt": _segmented(num_mem_tokens=5, memory_update="rmt"),
    "trxl": _segmented(num_mem_tokens=0, memory_update="rmt", mem_len=120),
    "dt": {"model": {"segment_steps": 60, "num_segments": 1,
                     "backbone": _TRANSFORMER | {"num_mem_tokens": 0, "memory_update": "rmt"}},
           "policy": "window"},
    "bc_gru": {"model": {"kind": "bc_gru", "segment_steps": 60, "num_segments": 1,
                         "backbone": {"d_model": 128, "n_layers": 2, "num_mem_tokens": 0, "memory_update": "rmt"}}},
    "bc_mlp": {"model": {"kind": "bc_mlp", "segment_steps": 60, "num_segments": 1,
                         "backbone": {"d_model": 128, "n_layers": 2, "num_mem_tokens": 0, "memory_update": "rmt"}}},
}
# What a foreign task gets unless told otherwise: rollouts of a whole episode at the
# environment's own length, 10 of them (a MuJoCo episode is 1000 steps).
DEFAULTS = {"eval": {"lengths": [], "episodes": 10}, "window_start": "random"}


# What infer_from_dataset sets: a config file that leaves these out gets the dataset's values.
INFERRED = ("dataset_id", "model.obs_kind", "model.obs_shape", "model.channels_last", "model.obs_scale",
            "model.normalize_obs", "model.act_kind", "model.act_dim", "model.rtg_scale", "eval.env_id",
            "eval.env_kwargs", "eval.length_kwarg", "eval.wrappers", "eval.env_wrappers", "eval.action_bounds",
            "eval.action_start", "eval.action_dtype", "eval.target_return", "eval.ref_scores")


def template(model: str = "rate") -> str:
    """configs/minari_template.yaml: every field of a run on a dataset with ``model``'s preset,
    documented; the fields the dataset determines are left as comments (so the dataset fills them:
    ``rate-train TEMPLATE --dataset ID``)."""
    from rate.config import describe_config
    from rate.rl.experiment import RATEExperimentConfig

    cfg = from_dict(RATEExperimentConfig, merge_sections(DEFAULTS, MODEL_PRESETS[model]))
    header = (f"# A run on any Minari dataset: the {model!r} preset of `rate-train --dataset ID --model {model}`,\n"
              "# every field with its doc.  Fields marked \"from the dataset\" are inferred from it (set one to\n"
              "# override).  Copy, edit, then: rate-train THIS.yaml --dataset ID [key=value ...]\n"
              f"# (written by: rate-train --print-config --model {model} > configs/minari_template.yaml)\n\n")
    return header + describe_config(cfg, unset={key: "from the dataset" for key in INFERRED})


def infer_from_dataset(dataset: str) -> dict[str, Any]:
    """The config values a Minari dataset (an id or a folder) determines, as a nested mapping.
    DatasetError when it cannot be read or its spaces are not ones the model takes."""
    import gymnasium as gym

    from rate.data.episodes import DatasetError, dataset_info, dataset_stats, open_minari_dataset
    from rate.data.spaces import flattens_for_the_model, image_channels_last, is_model_observation, needs_rescaling

    ds = open_minari_dataset(dataset)
    info = dataset_info(ds)
    obs_space, act_space = info.observation_space, info.action_space
    model: dict[str, Any] = {}
    wrappers: list[str] = []
    image = is_model_observation(obs_space) and len(obs_space.shape) == 3
    if image:
        if sorted(obs_space.shape)[1] < MIN_IMAGE_SIZE:
            image = False  # no two sides that large: a small grid (MiniGrid's 7 x 7 view), read as a vector
        else:
            try:
                last = image_channels_last(obs_space.shape)
            except ValueError:  # no channel axis (a voxel grid, a stack of maps): features, not pixels
                warnings.warn(f"{dataset}: observations of shape {obs_space.shape} have no channel axis (no end axis "
                              "of 1, 3 or 4 entries, nor one shorter than the other two): read as one flat vector, "
                              "not an image", stacklevel=2)
                image = False
            else:
                h, w = obs_space.shape[:2] if last else obs_space.shape[1:]
                image = min(h, w) >= MIN_IMAGE_SIZE  # smaller grids are read as vectors
    if image:
        model |= {"obs_kind": "image", "obs_shape": list(obs_space.shape), "channels_last": last,
                  "obs_scale": _pixel_scale(obs_space, dataset), "normalize_obs": False}
    else:
        if not (is_model_observation(obs_space) and len(obs_space.shape) == 1):
            wrappers.append("FlattenObservation")
            images = _images_inside(obs_space) if isinstance(obs_space, (gym.spaces.Dict, gym.spaces.Tuple)) else []
            if images:  # flattened with the rest: the linear encoder reads every pixel as a feature
                warnings.warn(f"{dataset}: the image{'s' if len(images) > 1 else ''} {', '.join(images)} inside "
                              f"{type(obs_space).__name__} observations {'are' if len(images) > 1 else 'is'} "
                              "flattened into one vector with the rest (no CNN); a CNN reads a dataset whose "
                              "observation is the image itself", stacklevel=2)
            if not flattens_for_the_model(obs_space):
                raise DatasetError(f"{dataset}: observations of {info.observation_space} have no fixed-size flat "
                                   "form the model can read; it takes Box, Discrete, MultiBinary, one-dimensional "
                                   "MultiDiscrete, and Dict and Tuple of those (no Text, Graph, Sequence, OneOf)")
            try:
                obs_space = gym.spaces.flatten_space(obs_space)
            except NotImplementedError as err:
                raise DatasetError(f"{dataset}: observations of {info.observation_space} cannot be flattened "
                                   f"({err}); the model takes Box, Discrete, MultiBinary, MultiDiscrete, Dict and "
                                   "Tuple observations") from None
        model |= {"obs_kind": "vector", "obs_shape": [int(np.prod(obs_space.shape))], "normalize_obs": True}
    continuous = isinstance(act_space, gym.spaces.Box) and len(act_space.shape) == 1
    if not (continuous or isinstance(act_space, gym.spaces.Discrete)):
        raise DatasetError(f"{dataset}: actions of {act_space}; the model takes Discrete or a rank-1 Box")
    stats = dataset_stats(ds, action_range=continuous)  # (one pass: Minari decodes whole episodes)
    returns, largest_to_go = stats.returns, stats.largest_to_go
    if not len(returns):
        raise DatasetError(f"{dataset}: the dataset has no episodes")
    if not np.isfinite(returns).all():
        bad = np.flatnonzero(~np.isfinite(returns))
        raise DatasetError(f"{dataset}: {len(bad)} episode returns are NaN or inf (episode {int(bad[0])} first)")
    action_bounds: list[list[float]] = []
    if continuous:
        model |= {"act_kind": "continuous", "act_dim": int(act_space.shape[0])}
        action_bounds = _action_bounds(act_space, stats.action_low, stats.action_high, dataset)
        if action_bounds or needs_rescaling(act_space):
            wrappers.append("RescaleAction")
    else:
        model |= {"act_kind": "discrete", "act_dim": int(act_space.n)}
        if act_space.start != 0:
            wrappers.append("ActionsFromZero")
    best = float(returns.max())
    # Returns-to-go of order 1, as DT divides MuJoCo returns by 1000: the power of 10 at or above
    # the largest return-to-go the model reads (the largest return where rewards keep one sign).
    model["rtg_scale"] = float(10 ** math.ceil(math.log10(largest_to_go))) if largest_to_go > 1 else 1.0
    evaluation: dict[str, Any] = {"target_return": best, "wrappers": wrappers}
    if action_bounds:
        evaluation["action_bounds"] = action_bounds
    spec = info.eval_env_spec
    if spec is not None:
        evaluation |= eval_env_from_spec(spec)
    else:  # the user names the environment; the time limit is what any id takes a length as
        evaluation["length_kwarg"] = "max_episode_steps"
        # No environment's action space to map the model's actions onto later: the data's is kept
        # in the run (Policy.env_action).  Its bounds are what RescaleAction maps onto in an
        # environment the user names too (the model learned the data's units), as inferred bounds
        # are; ActionsFromZero reads a named environment's own start.
        if "RescaleAction" in wrappers:
            if not action_bounds:
                evaluation["action_bounds"] = [act_space.low.astype(np.float64).tolist(),
                                               act_space.high.astype(np.float64).tolist()]
            evaluation["action_dtype"] = str(act_space.dtype)
        if "ActionsFromZero" in wrappers:
            evaluation["action_start"] = int(act_space.start)
        if "RescaleAction" in wrappers or "ActionsFromZero" in wrappers:
            units = ("in [-1, 1]" if "RescaleAction" in wrappers else f"0..{act_space.n - 1}, not "
                     f"{act_space.start}..{act_space.start + act_space.n - 1}")
            warnings.warn(f"{dataset} records no environment, and the model acts in its own units ({units}): "
                          "Policy.env_action(action) maps its actions onto the data's action space", stacklevel=2)
    ref = info.ref_scores or d4rl_ref_scores(evaluation.get("env_id", ""))
    if ref:
        evaluation["ref_scores"] = list(ref)
    # A folder as an absolute path: the run config resumes and evaluates from any working directory.
    folder = Path(dataset).expanduser()
    return {"dataset_id": str(folder.resolve()) if folder.is_dir() else dataset, "model": model, "eval": evaluation}


# A bound this large stands for "unbounded" (Box(-3.4e38, 3.4e38) is how many environments write it):
# mapped onto [-1, 1] it would squeeze every recorded action to 0.
UNBOUNDED = 1e30
# The part of a bounded range below which the data's actions are worth a warning: rescaled from the
# space's bounds, the model's targets would all lie in that part of [-1, 1].
NARROW_DATA = 0.01


def _action_bounds(space, seen_low: np.ndarray, seen_high: np.ndarray, dataset: str) -> list[list[float]]:
    """``eval.action_bounds`` for a continuous action space, given the data's per-dimension range:
    [] where the space's own bounds serve, else [low, high], a side that is unbounded (infinite or
    at least :data:`UNBOUNDED`) taking the data's value, with a warning.  Also warns where the data
    spans under :data:`NARROW_DATA` of bounds that RescaleAction maps [-1, 1] onto."""
    from rate.data.spaces import needs_rescaling

    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    bounded_low, bounded_high = np.abs(low) < UNBOUNDED, np.abs(high) < UNBOUNDED  # (False for inf)
    if bounded_low.all() and bounded_high.all():
        span, seen = high - low, seen_high - seen_low
        # (a [-1, 1] space is the model's own: nothing rescales it, nothing to choose instead)
        narrow = np.flatnonzero((seen > 0) & (seen < NARROW_DATA * span)) if needs_rescaling(space) else []
        if len(narrow):
            i = int(narrow[0])
            warnings.warn(f"{dataset}: the data's actions span less than {NARROW_DATA:.0%} of the action space's "
                          f"range in {len(narrow)} of its {len(low)} dimensions (dimension {i}: "
                          f"[{seen_low[i]:.4g}, {seen_high[i]:.4g}] of [{low[i]:.4g}, {high[i]:.4g}]): rescaled "
                          "from those bounds the model's targets lie in a sliver of its [-1, 1]; "
                          "eval.action_bounds=[[...], [...]] maps it onto a range of your choosing instead",
                          stacklevel=3)
        return []
    fitted = ~(bounded_low & bounded_high)
    low, high = np.where(bounded_low, low, seen_low), np.where(bounded_high, high, seen_high)
    for i in np.flatnonzero(fitted & (high <= low)):  # the data never varies it: a range of 2,
        if bounded_low[i]:  # inside a bounded side, else around the data's value
            low[i], high[i] = space.low[i], space.low[i] + 2.0
        elif bounded_high[i]:
            low[i], high[i] = space.high[i] - 2.0, space.high[i]
        else:
            low[i], high[i] = low[i] - 1.0, low[i] + 1.0
    infinite = not (np.isfinite(space.low).all() and np.isfinite(space.high).all())
    kind = "infinite bounds" if infinite else f"bounds of {UNBOUNDED:.0e} or more, read as infinite bounds"
    warnings.warn(f"{dataset}: the action space {space} has {kind}; the model's [-1, 1] is mapped onto the range "
                  "of the data's actions (eval.action_bounds), so the policy acts inside what the data did",
                  stacklevel=3)
    return [low.tolist(), high.tolist()]


def _forget_other_environment(evaluation: dict[str, Any], inferred: dict[str, Any], given: dict[str, Any]) -> None:
    """Evaluating in another environment than the recorded one (``eval.env_id`` set by the user):
    the recorded one's keywords (a maze layout, its time limit), wrappers and reference scores are
    dropped; only those the user gave stay (``eval.env_kwargs.max_episode_steps=50`` alone is
    every keyword, not one merged into the recorded ones); D4RL's scores of the new id take their
    place where it has some, and its own length keyword (:func:`length_kwarg_for`) that of the
    recorded one unless the user gave one.  Data recorded without an environment takes the length
    keyword of the id the user names."""
    from rate.data.env_plugins import same_environment

    if "env_id" not in inferred:  # data recorded without an environment: the user's id may have D4RL scores
        ref = d4rl_ref_scores(str(evaluation.get("env_id", "")))
        if ref and "ref_scores" not in given:
            evaluation["ref_scores"] = list(ref)
        if "length_kwarg" not in given and evaluation.get("env_id"):
            evaluation["length_kwarg"] = length_kwarg_for(str(evaluation["env_id"]), evaluation.get("env_kwargs") or {})
        return
    if same_environment(evaluation.get("env_id"), inferred["env_id"]):
        return
    for key in ("env_kwargs", "env_wrappers"):
        if key in given:  # (the merged value holds the recorded environment's entries too)
            evaluation[key] = given[key]
        else:
            evaluation.pop(key, None)
    if "length_kwarg" not in given:  # (the new id's own, not the recorded one's)
        evaluation["length_kwarg"] = length_kwarg_for(str(evaluation.get("env_id", "")), evaluation.get("env_kwargs") or {})
    if "ref_scores" not in given:
        evaluation.pop("ref_scores", None)
        ref = d4rl_ref_scores(str(evaluation.get("env_id", "")))
        if ref:
            evaluation["ref_scores"] = list(ref)


def eval_env_from_spec(spec) -> dict[str, Any]:
    """``env_id``, ``env_kwargs`` and ``env_wrappers`` that make the environment a recorded EnvSpec
    describes, and the ``length_kwarg`` that sets its length.  An
    id this process has not registered is written ``module:id`` (Gymnasium imports the module,
    which registers it) when the spec names its entry point's module."""
    import gymnasium as gym

    from rate.data.env_plugins import load_env_plugins
    from rate.data.spaces import recorded_wrapper_error

    load_env_plugins()
    env_id = spec.id
    if env_id not in gym.registry and isinstance(spec.entry_point, str) and ":" in spec.entry_point:
        env_id = f"{spec.entry_point.split(':')[0]}:{spec.id}"
    kwargs, dropped = {}, []
    for key, value in (spec.kwargs or {}).items():
        if key == "render_mode":  # how it was watched while recorded, not the task (rollouts set their own)
            continue
        try:  # what a YAML config can hold (PointMaze's maze_map is a list of lists: kept)
            kwargs[key] = yaml.safe_load(yaml.safe_dump(value))
        except yaml.YAMLError:
            dropped.append(key)
    if dropped:
        warnings.warn(f"{spec.id}: the recorded environment keywords {dropped} are not plain data and are left out "
                      "of eval.env_kwargs; set them there if the environment needs them", stacklevel=2)
    from rate.rl.experiment import ends_by_itself

    if spec.max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(spec.max_episode_steps)
    elif "episode_length" not in kwargs and not ends_by_itself(env_id, kwargs):  # (POPGym's tasks end by themselves)
        warnings.warn(f"{spec.id} was recorded without a time limit: an evaluation runs until every episode ends "
                      "by itself; set eval.env_kwargs.max_episode_steps=N (or eval.lengths) to cap it",
                      stacklevel=2)
    recorded, unusable = [], []
    wrappers = list(getattr(spec, "additional_wrappers", None) or ())
    try:
        registered = gym.spec(spec.id).entry_point
    except gym.error.Error:  # (not registered here: made through "module:id", which imports it)
        registered = spec.entry_point
    if wrappers and wrappers[0].entry_point == spec.entry_point == registered:
        wrappers = wrappers[1:]  # the registered entry point is itself a wrapper: gym.make applies it
    for wrapper in wrappers:
        try:  # plain data only, as for the keywords above; None: keywords not recorded (gym.make refuses it)
            entry = None if wrapper.kwargs is None else yaml.safe_load(yaml.safe_dump(
                {"name": wrapper.name, "entry_point": wrapper.entry_point, "kwargs": dict(wrapper.kwargs)}))
        except (yaml.YAMLError, TypeError):
            entry = None
        if unusable or entry is None or recorded_wrapper_error(entry) is not None:
            unusable.append(wrapper.name)  # (and every one after it: it would wrap another environment)
        else:
            recorded.append(entry)
    if unusable:
        warnings.warn(f"{spec.id} was recorded through the wrappers {unusable}, which evaluation does not apply (the "
                      "first one's keywords are not recorded or not plain data; the others come after it): where they "
                      "change observations, actions or rewards, the model is evaluated on other inputs than it was "
                      "trained on; set eval.env_wrappers or eval.env_id to an environment registered with them",
                      stacklevel=2)
    return {"env_id": env_id, "env_kwargs": kwargs, "length_kwarg": length_kwarg_for(env_id, kwargs),
            "env_wrappers": recorded}


def length_kwarg_for(env_id: str, env_kwargs: dict[str, Any]) -> str:
    """What --lengths / eval.lengths set in ``env_id``: the first of the keywords its environment
    declares as setting its length (``length_keywords``: T-Maze's episode_length, although its data
    records corridor_length; MiniGrid-Memory's size), else an ``episode_length`` among
    ``env_kwargs``, else the time limit, a keyword gym.make takes for any id."""
    from rate.rl.experiment import length_keywords

    declared = length_keywords(env_id)
    return declared[0] if declared else "episode_length" if "episode_length" in env_kwargs else "max_episode_steps"


def d4rl_ref_scores(env_id: str) -> tuple[float, float] | None:
    """D4RL's (random, expert) returns for an environment id of a task D4RL scores, else None."""
    from rate.data.d4rl import REF_SCORES, reference_task

    key = reference_task(env_id)
    return None if key is None else REF_SCORES[key]


def config_for_dataset(dataset: str, model: str | None = "rate", config: str | Path | None = None,
                       overrides: Sequence[str] = ()):
    """A :class:`rate.rl.experiment.RATEExperimentConfig` for ``dataset`` (a Minari id or folder):
    the ``config`` file's values, or the ``model`` preset's, with the inferred values under any
    the file sets and the ``overrides`` over all.  ConfigError / DatasetError on bad input."""
    from rate.rl.experiment import RATEExperimentConfig

    if config is not None:
        given = read_config_file(config)
        base = merge_sections(DEFAULTS, given)
    else:
        if model not in MODEL_PRESETS:
            raise ConfigError(f"model preset {model!r}: choose one of {', '.join(MODEL_PRESETS)}")
        given, base = {}, merge_sections(DEFAULTS, MODEL_PRESETS[model])
    inferred = infer_from_dataset(dataset)
    data = merge_sections(inferred, base) if config is not None else merge_sections(base, inferred)
    data["dataset_id"] = inferred["dataset_id"]
    data = apply_overrides(data, overrides, RATEExperimentConfig)
    where = f"{config or f'the {model} preset'} on {dataset}"
    if not isinstance(data.get("eval"), dict):  # (read below before from_dict checks the types)
        raise ConfigError(f"{where}: eval: expected a mapping for EvalConfig, got {data.get('eval')!r}")
    if not isinstance(data["eval"].get("env_id", ""), str):
        raise ConfigError(f"{where}: eval.env_id: expected str, got {data['eval']['env_id']!r}")
    given_eval = apply_overrides(given, overrides).get("eval")
    _forget_other_environment(data["eval"], inferred["eval"], given_eval if isinstance(given_eval, dict) else {})
    if "env_id" not in data["eval"]:
        if data["eval"].get("episodes") != 0:
            raise ConfigError(f"{dataset} records no environment (made without env_spec): name the one to evaluate "
                              "in with eval.env_id=ID (and eval.env_kwargs), or train without evaluation: "
                              "eval.episodes=0")
        data["eval"]["env_id"] = ""  # none: rate-eval then needs --env
    try:
        return from_dict(RATEExperimentConfig, data)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def _pixel_scale(space, dataset: str) -> float:
    """obs_scale of an image Box: its pixels scaled so that the declared maximum is 1 (images are
    not normalised per feature, so nothing else would).  uint8 0..255 -> 1/255, a 0/1 mask stored
    as uint8 stays as it is; a float image only where it declares 255 or at most 1.  Bounds that
    differ by channel are all divided by the largest, with a warning; anything else (no finite
    bound, a placeholder like float32's maximum) is read as stored, with a warning naming the setting."""
    high = np.asarray(space.high, dtype=np.float64)
    top = float(high.max())
    if np.isfinite(high).all() and (top <= 1.0 or top == 255.0 or space.dtype == np.uint8):
        if not (high == top).all():
            warnings.warn(f"{dataset}: image observations of {space} have upper bounds that differ by channel: every "
                          f"channel is divided by the largest, {top:g} (model.obs_scale)", stacklevel=3)
        return 1.0 / top if top > 1.0 else 1.0
    warnings.warn(f"{dataset}: image observations of {space} declare no single pixel range the scale can be read "
                  "from: the CNN reads them as stored (model.obs_scale 1; set it, e.g. 0.00392156862745098 for "
                  "0..255 pixels)", stacklevel=3)
    return 1.0


def _images_inside(space, path: str = "") -> list[str]:
    """Keys (``a.b``) of the rank-3 Boxes of at least MIN_IMAGE_SIZE on two sides inside a Dict
    or Tuple observation space."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Dict):
        return [k for key, sub in space.spaces.items() for k in _images_inside(sub, f"{path}{key}.")]
    if isinstance(space, gym.spaces.Tuple):
        return [k for i, sub in enumerate(space.spaces) for k in _images_inside(sub, f"{path}{i}.")]
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 3 and sorted(space.shape)[1] >= MIN_IMAGE_SIZE:
        return [path.rstrip(".")]
    return []


def run_name_for(dataset: str) -> str:
    """Default run name of a dataset: its id's or folder's last three parts joined by "-"
    (mujoco/hopper/expert-v0 -> mujoco-hopper-expert-v0, so that two datasets of one name do not
    share a folder), without the root of an absolute folder (runs/data-ds for /data/ds, not /-data-ds).
    A relative folder is named by where it is (``.`` in /data/ds: data-ds); "run" if nothing is left."""
    path = Path(dataset.rstrip("/") or "/")
    if path.is_dir():
        path = path.resolve()
    return "-".join([p for p in path.parts if p not in (path.anchor, ".", "..")][-3:]) or "run"
