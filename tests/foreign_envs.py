"""Two small memory tasks that are not the project's, for the "any Minari dataset" tests: one
with Dict observations (the shape of Gymnasium-Robotics' goal envs), one with images stored
(H, W, C) uint8.  In both, a cue shown at the first step decides which action pays at the last.

Importing this module registers ``ForeignDictCue-v0``, ``ForeignImageCue-v0`` and
``ForeignShiftedCue-v0`` (actions that start at -1); a dataset
recorded in them names this module as the entry point, so ``tests.foreign_envs:ForeignDictCue-v0``
makes them in a fresh process."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

LENGTH = 6


class _CueEnv(gym.Env):
    """Cue c in {0, 1} at step 0; reward 1 at step LENGTH - 1 for action c, info["is_success"]."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None):
        self.action_space = spaces.Discrete(2)
        self.render_mode = render_mode
        self.t, self.cue = 0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.cue = 0, int(self.np_random.integers(2))
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        if self.t < LENGTH:
            return self._obs(), 0.0, False, False, {}
        success = int(action) == self.cue
        return self._obs(), float(success), True, False, {"is_success": success}

    def render(self):
        frame = np.zeros((48, 48, 3), dtype=np.uint8)
        if self.t == 0:
            frame[..., self.cue] = 255
        return frame

    def oracle(self) -> int:
        return self.cue


class ForeignDictCue(_CueEnv):
    def __init__(self, render_mode: str | None = None):
        super().__init__(render_mode)
        self.observation_space = spaces.Dict({"cue": spaces.Box(0.0, 1.0, (2,), np.float32),
                                              "time": spaces.Box(0.0, 1.0, (1,), np.float32)})

    def _obs(self):
        cue = np.zeros(2, np.float32)
        if self.t == 0:
            cue[self.cue] = 1.0
        return {"cue": cue, "time": np.array([self.t / LENGTH], np.float32)}


class ForeignImageCue(_CueEnv):
    def __init__(self, render_mode: str | None = None):
        super().__init__(render_mode)
        self.observation_space = spaces.Box(0, 255, (40, 40, 3), np.uint8)

    def _obs(self):
        image = np.full((40, 40, 3), 64, np.uint8)
        if self.t == 0:
            image[..., self.cue] = 255
        return image


class ForeignShiftedCue(_CueEnv):
    """Vector observations and ``Discrete(2, start=-1)`` actions (as some environments number
    them): action -1 pays for cue 0, action 0 for cue 1."""

    def __init__(self, render_mode: str | None = None):
        super().__init__(render_mode)
        self.action_space = spaces.Discrete(2, start=-1)
        self.observation_space = spaces.Box(0, 1, (3,), np.float32)

    def _obs(self):
        obs = np.zeros(3, np.float32)
        obs[2] = self.t / LENGTH
        if self.t == 0:
            obs[self.cue] = 1
        return obs

    def step(self, action):
        assert self.action_space.contains(action), action  # (the wrapper must hand it -1 or 0)
        return super().step(int(action) + 1)

    def oracle(self) -> int:
        return self.cue - 1


for _name in ("ForeignDictCue", "ForeignImageCue", "ForeignShiftedCue"):
    if f"{_name}-v0" not in gym.registry:
        gym.register(f"{_name}-v0", entry_point=f"tests.foreign_envs:{_name}", max_episode_steps=50)


class ClosableEnv(gym.Env):
    """An environment that only resets and records whether it was closed (rollout clean-up tests)."""

    closed = False

    def reset(self, *, seed=None, options=None):
        return np.zeros(4, np.float32), {}

    def close(self):
        self.closed = True


def factory_failing_at(made: list, failing: int | None = None):
    """An environment factory that appends each ClosableEnv it makes to ``made`` and raises on the
    ``failing``-th call (0-based; None: never)."""

    def make():
        if len(made) == failing:
            raise RuntimeError(f"environment {failing} cannot start")
        made.append(ClosableEnv())
        return made[-1]

    return make


class Tenths(gym.Env):
    """1000 steps of reward 0.1 (float64, as reported), whatever the action: returns summed in
    float32 would be off in their 6th digit."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(1, np.float32), 0.1, self.t == 1000, False, {}
