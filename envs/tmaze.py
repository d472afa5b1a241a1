"""The passive T-Maze memory task (Ni et al. 2023, as modified for RATE).

The agent starts at the left end (x = 0) of a corridor of length L.  Only the first observation
carries the clue (+1: the goal is up, -1: down).  At the junction (x = L) it must turn towards
the clue.  Observation, float32 (4,): [y, clue, junction flag, noise], noise uniform in {-1, 0, 1}
every step.  Actions: 0 right (+x), 1 up, 2 left (-x), 3 down; a move that leaves the maze keeps
the agent in place.  Reward 1 for turning to the clue's side at the junction, 0 otherwise; the
episode terminates when the agent turns at the junction and is truncated after T = L + 2 steps.

Every ``info`` (from reset and step) reports, for the observation it comes with, ``cue_step``
(the step whose observation last showed the clue: always 0) and ``decision`` (whether the action
taken now is scored against the clue: at the junction); ``eval.teacher_forced --by-boundaries``
groups decisions by the segment boundaries between the two.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .checks import whole_number

RIGHT, UP, LEFT, DOWN = 0, 1, 2, 3


def corridor_length_of(corridor_length: Any, episode_length: Any = None) -> int:
    """The corridor length L of a T-Maze's keywords: ``episode_length`` T sets L = T - 2 where
    given; a whole number >= 1, else ValueError naming the keyword (2.5 would be cut to 2)."""
    name, value = ("episode_length", episode_length) if episode_length is not None else ("corridor_length",
                                                                                         corridor_length)
    length = whole_number(value, name) - (2 if name == "episode_length" else 0)
    if length < 1:
        raise ValueError(f"corridor_length must be >= 1, got {length}" + (f" (episode_length {value})"
                                                                         if name == "episode_length" else ""))
    return length


class TMazeEnv(gym.Env):
    metadata = {"render_modes": ["ansi"], "render_fps": 4}
    # Keywords that set the episode's length; the first is the one evaluation sweeps (a run config
    # made from a dataset takes it: rate.rl.from_dataset.length_kwarg_for).  An evaluation that
    # passes episode_length overrides the corridor_length a dataset was recorded with
    # (rate.rl.experiment.eval_env_differences).
    length_keywords = ("episode_length", "corridor_length")

    def __init__(self, corridor_length: int = 10, render_mode: str | None = None, episode_length: int | None = None):
        """``episode_length`` T, when given, sets the corridor to T - 2 (the length keyword of most
        tasks of envs/, which the evaluation sweeps: envs/__init__.py)."""
        corridor_length = corridor_length_of(corridor_length, episode_length)
        self.default_length = corridor_length
        self.render_mode = render_mode
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        self.action_space = spaces.Discrete(4)
        self.corridor_length = corridor_length
        self.goal = 1
        self.x = self.y = self.t = 0
        self._started = False  # (a step before the first reset would play a maze without a cue)

    @property
    def time_limit(self) -> int:
        """T = L + 2: the oracle needs L + 1 steps."""
        return self.corridor_length + 2

    def _obs(self) -> np.ndarray:
        clue = float(self.goal) if self.t == 0 else 0.0
        flag = 1.0 if self.x == self.corridor_length else 0.0
        noise = float(self.np_random.integers(-1, 2))
        return np.array([self.y, clue, flag, noise], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """options: {"corridor_length": L} for this episode, {"goal": +1 or -1} to fix the clue."""
        options = options or {}
        # (checked before any state changes)
        length, goal = corridor_length_of(options.get("corridor_length", self.default_length)), options.get("goal")
        if goal is not None and goal not in (-1, 1):
            raise ValueError(f"goal must be +1 or -1, got {goal}")
        super().reset(seed=seed)
        self.corridor_length = length
        self.goal = int(goal) if goal is not None else int(self.np_random.choice([-1, 1]))
        self.x = self.y = self.t = 0
        self._started = True
        return self._obs(), {"goal": self.goal, "corridor_length": self.corridor_length, **self._cue_info()}

    def _cue_info(self) -> dict[str, Any]:
        return {"cue_step": 0, "decision": self.x == self.corridor_length}

    def step(self, action):
        if not self._started:
            raise RuntimeError("call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(f"invalid T-Maze action {action!r}; expected 0..3")
        at_junction = self.x == self.corridor_length
        terminated, reward = False, 0.0
        if action == RIGHT and not at_junction:
            self.x += 1
        elif action == LEFT and self.x > 0:
            self.x -= 1
        elif action in (UP, DOWN) and at_junction:
            self.y = 1 if action == UP else -1
            terminated = True
            reward = 1.0 if self.y == self.goal else 0.0
        self.t += 1
        truncated = not terminated and self.t >= self.time_limit
        info = {"success": reward > 0} if terminated or truncated else {}
        return self._obs(), reward, terminated, truncated, {**info, **self._cue_info()}

    def render(self):
        if self.render_mode != "ansi":  # (Gymnasium: no render mode, nothing rendered)
            return None
        return ansi_frame(self.corridor_length, self.x, self.y, self.goal, self.t)


def ansi_frame(corridor_length: int, x: int, y: int, goal: int, t: int) -> str:
    """The ``ansi`` render of one T-Maze: goal, time, the corridor with the agent, and the arm."""
    cells = ["."] * (corridor_length + 1)
    cells[x] = "A"
    return f"goal {'up' if goal > 0 else 'down'} t={t} |{''.join(cells)}| y={y}"


def episode_oracle(rng: np.random.Generator):
    """A fresh oracle for one episode (``rng`` unused: the oracle has no choice to make)."""
    return oracle_action


def oracle_action(env: TMazeEnv) -> int:
    """The optimal action from the privileged state: walk right, then turn towards the goal."""
    if env.x < env.corridor_length:
        return RIGHT
    return UP if env.goal > 0 else DOWN
