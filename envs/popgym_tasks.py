"""POPGym memory tasks as vector-observation environments, with oracles from their hidden state.

    import rate_envs, gymnasium as gym
    env = gym.make("rate/POPGym-v0", task="RepeatPreviousEasy")

:class:`POPGymTask` wraps one ``popgym`` environment and encodes its observation as a float32
vector: a ``Discrete(n)`` value as n one-hot entries, each part of a ``MultiDiscrete`` or ``Tuple``
likewise (concatenated), a ``Box`` as it is.  Actions are the task's own (``Discrete``).  The
tasks in :data:`TASKS` have an oracle (:func:`oracle_action`) that reads the environment's
hidden state and earns the maximum return:

- RepeatPrevious: the suit of the card dealt k steps ago;
- RepeatFirst: the suit of the first card;
- CountRecall: how often the queried card has been dealt so far;
- Autoencode: anything while the cards are shown, then their suits in reverse order;
- PositionOnlyCartPole: a linear controller on the full state (x, x', theta, theta'), of which
  the agent sees only x and theta.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

try:
    from popgym.envs.autoencode import AutoencodeEasy, AutoencodeMedium, Mode
    from popgym.envs.count_recall import CountRecallEasy, CountRecallMedium
    from popgym.envs.position_only_cartpole import PositionOnlyCartPoleEasy, PositionOnlyCartPoleMedium
    from popgym.envs.repeat_first import RepeatFirstEasy, RepeatFirstMedium
    from popgym.envs.repeat_previous import RepeatPreviousEasy, RepeatPreviousMedium
except ImportError as err:  # an extra: rate-rmt[popgym]
    raise ImportError(f"rate/POPGym-v0 needs the popgym package (pip install 'rate-rmt[popgym]'): {err}") from err

TASKS = {cls.__name__: cls for cls in (
    RepeatPreviousEasy, RepeatPreviousMedium, RepeatFirstEasy, RepeatFirstMedium, CountRecallEasy,
    CountRecallMedium, AutoencodeEasy, AutoencodeMedium, PositionOnlyCartPoleEasy, PositionOnlyCartPoleMedium)}


def _width(space: spaces.Space) -> int:
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return int(space.nvec.sum())
    if isinstance(space, spaces.Tuple):
        return sum(_width(s) for s in space.spaces)
    if isinstance(space, spaces.Box):
        return int(np.prod(space.shape))
    raise TypeError(f"unsupported POPGym observation space {space}")


def _encode(space: spaces.Space, value: Any, out: list[np.ndarray]) -> None:
    if isinstance(space, spaces.Discrete):
        out.append(np.eye(space.n, dtype=np.float32)[int(value) - int(space.start)])
    elif isinstance(space, spaces.MultiDiscrete):
        for n, v in zip(space.nvec, np.asarray(value).reshape(-1)):
            out.append(np.eye(int(n), dtype=np.float32)[int(v)])
    elif isinstance(space, spaces.Tuple):
        for s, v in zip(space.spaces, value):
            _encode(s, v, out)
    else:
        out.append(np.asarray(value, dtype=np.float32).reshape(-1))


class POPGymTask(gym.ObservationWrapper):
    """One POPGym task (a name of :data:`TASKS`) with a flat float32 observation vector."""

    def __init__(self, task: str = "RepeatPreviousEasy", episode_length: int | None = None,
                 render_mode: str | None = None):
        """``episode_length``, when given, must be the task's own (every task has a fixed length;
        the argument lets the evaluation's length sweep name it, and catches a wrong config)."""
        if task not in TASKS:
            raise ValueError(f"unknown POPGym task {task!r}; one of {sorted(TASKS)}")
        modes = TASKS[task].metadata.get("render_modes", [])  # (PositionOnlyCartPole's: CartPole's frames)
        if render_mode is not None and render_mode not in modes:
            raise ValueError(f"{task} renders {', '.join(modes) or 'nothing'}, not {render_mode!r}")
        super().__init__(TASKS[task](render_mode=render_mode) if render_mode is not None else TASKS[task]())
        if self.env.unwrapped.render_mode != render_mode:
            # PositionOnlyCartPoleMedium/Hard's constructors drop their keywords; CartPole reads
            # the mode only when it renders, so setting it afterwards is what the keyword does.
            self.env.unwrapped.render_mode = render_mode
        self.task = task
        own = int(self.env.unwrapped.max_episode_length)
        if episode_length is not None and episode_length != own:
            raise ValueError(f"{task} episodes have {own} steps, not {episode_length}")
        inner = self.env.observation_space
        low = -np.inf if isinstance(inner, spaces.Box) else 0.0
        high = np.inf if isinstance(inner, spaces.Box) else 1.0
        self.observation_space = spaces.Box(low, high, shape=(_width(inner),), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, _ = self.env.reset(seed=seed, options=options)
        return self.observation(obs), {}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"invalid action {action!r} for {self.action_space}")
        # The task's info can hold hidden state (CountRecall's counts): the agent gets none of it.
        obs, reward, terminated, truncated, _ = self.env.step(action)
        return self.observation(obs), reward, terminated, truncated, {}

    def observation(self, obs: Any) -> np.ndarray:
        out: list[np.ndarray] = []
        _encode(self.env.observation_space, obs, out)
        return np.concatenate(out)

    @property
    def max_return(self) -> float:
        """The return the oracle earns: 1 for every task here (POPGym scales rewards to [-1, 1])."""
        return 1.0


def oracle_action(env: gym.Env) -> int:
    """The reward-maximising action from the hidden state of ``env`` (the unwrapped POPGym task)."""
    name = type(env).__name__
    if name.startswith("RepeatPrevious"):
        if env.deck.hand_size("player") < env.k:
            return 0  # no reward is given before k cards have been dealt
        return int(env.deck.suits_idx[env.deck["player"][-env.k]])
    if name.startswith("RepeatFirst"):
        return int(env.card)
    if name.startswith("CountRecall"):
        return int(env.counts[env.query])
    if name.startswith("Autoencode"):
        if env.mode != Mode.PLAY:
            return 0  # watching: the action is ignored
        return int(env.deck.suits_idx[env.deck["system"][-1]])
    if name.startswith("PositionOnlyCartPole"):
        x, x_dot, theta, theta_dot = env.state
        return int(theta + 0.5 * theta_dot + 0.05 * x + 0.1 * x_dot > 0)  # push right when falling right
    raise ValueError(f"no oracle for {name}")
