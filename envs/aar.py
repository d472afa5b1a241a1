"""Action Associative Retrieval (AAR): recall your own first action at the end of the episode.

A diagnostic memory task of the RATE paper.  At t = 0 the agent chooses 0 or 1; nothing in any
later observation reveals which.  At the last step (t = T - 1, flagged in the observation) it
must repeat that choice: reward 1 if it does, 0 otherwise.  Actions in between change nothing
(2 is the intended no-op).  Unlike T-Maze, the information to remember is not in an observation
but in the agent's own action token, which a sequence model sees only while it is in context.

Observation, float32 (3,): [choose now (1 at t = 0), recall now (1 at t = T - 1), noise uniform
in {-1, 0, 1}].  Actions: Discrete(3): 0, 1, 2 (no-op).  A no-op as the first action is a choice
that can never be matched.  The episode terminates after the recall step, T steps in all.
(The reference code's observation is [state, flag, noise]; this layout is our own.)

Every ``info`` reports ``cue_step`` (0: the cue is the action taken after the first observation)
and ``decision`` (whether the action taken now is the recall), as T-Maze's does.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .checks import whole_number

NOOP = 2


class ActionAssociativeRetrievalEnv(gym.Env):
    metadata = {"render_modes": ["ansi"], "render_fps": 4}
    length_keywords = ("episode_length",)  # (what evaluation sweeps: rate.rl.from_dataset.length_kwarg_for)

    def __init__(self, episode_length: int = 90, render_mode: str | None = None):
        self.default_length = self.episode_length = _check_length(episode_length)
        self.render_mode = render_mode
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
        self.action_space = spaces.Discrete(3)
        self.t = 0
        self.first_action: int | None = None
        self._started = False  # (a step before the first reset would play an episode without its cue)

    def _obs(self) -> np.ndarray:
        noise = float(self.np_random.integers(-1, 2))
        return np.array([float(self.t == 0), float(self.t == self.episode_length - 1), noise], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """options: {"episode_length": T} for this episode."""
        # (checked before any state changes: a refused reset leaves the episode as it was)
        length = _check_length((options or {}).get("episode_length", self.default_length))
        super().reset(seed=seed)
        self.episode_length, self.t, self.first_action, self._started = length, 0, None, True
        return self._obs(), {"episode_length": self.episode_length, **self._cue_info()}

    def _cue_info(self) -> dict[str, Any]:
        return {"cue_step": 0, "decision": self.t == self.episode_length - 1}

    def step(self, action):
        if not self._started:
            raise RuntimeError("call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(f"invalid AAR action {action!r}; expected 0, 1 or 2")
        action = int(action)
        reward, terminated = 0.0, False
        if self.t == 0:
            self.first_action = action
        if self.t == self.episode_length - 1:
            terminated = True
            reward = 1.0 if self.first_action != NOOP and action == self.first_action else 0.0
        self.t += 1
        info = {"success": reward > 0} if terminated else {}
        return self._obs(), reward, terminated, False, {**info, **self._cue_info()}

    def render(self):
        if self.render_mode != "ansi":  # (Gymnasium: no render mode, nothing rendered)
            return None
        return f"t={self.t}/{self.episode_length} first={self.first_action}"


def oracle_action(env: ActionAssociativeRetrievalEnv, choice: int) -> int:
    """The optimal action from the privileged state: ``choice`` (0 or 1) first, no-ops, then the
    recorded first action at the recall step."""
    if env.t == 0:
        return choice
    return env.first_action if env.t == env.episode_length - 1 else NOOP


def episode_oracle(rng: np.random.Generator):
    """A fresh oracle for one episode: a first choice of 0 or 1 drawn from ``rng``, recalled at the end."""
    choice = int(rng.integers(0, 2))
    return lambda env: oracle_action(env, choice)


def _check_length(length: Any) -> int:
    """``length`` as an episode length: a whole number >= 2, else ValueError (9.5 would be cut to 9)."""
    length = whole_number(length, "episode_length")
    if length < 2:
        raise ValueError(f"episode_length must be >= 2 (choose, then recall), got {length}")
    return length
