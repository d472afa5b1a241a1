"""Memory Maze (Pasukonis et al. 2022) as a Gymnasium 1.x environment, and an oracle from the
privileged maze state.

The task: a ball-shaped agent in a random 3D maze of size x size cells (9, 11, 13 or 15) holds
targets of 3-6 colours; it is shown one target colour at a time, and touching the target of that
colour pays +1 and picks the next colour.  An episode is a fixed number of steps (1000 at 9 x 9,
4 steps per simulated second), so the return counts the targets reached: an agent that remembers
where it saw each colour and how the maze is laid out collects more.

:class:`MemoryMazeEnv` wraps the dm_env task of the ``memory-maze`` package and exposes only what
the RATE paper's agent sees: the 64 x 64 RGB first-person image, uint8 (H, W, C), with the target
colour painted as its border (the package's ``target_color_in_image``).  The task's global state
(maze layout, agent and target positions) never enters the observation or the info; an oracle or
a diagnostic reads it through :meth:`MemoryMazeEnv.privileged_state`.

Actions (Discrete(6), the package's): 0 noop, 1 forward, 2 turn left, 3 turn right,
4 forward + left, 5 forward + right.

Two facts about the package shape this module:

- ``memory_maze/__init__.py`` registers its environments with the old ``gym`` package and re-raises
  the ImportError where ``gym`` is missing (as here: Gymnasium only).  :func:`memory_maze_tasks`
  loads the package's ``tasks`` module under an empty package object instead, so the ``__init__``
  never runs and nothing of ``gym`` is installed or faked (the only other thing that ``__init__``
  does is default ``MUJOCO_GL`` to ``egl``, which :func:`memory_maze_tasks` does too);
- the maze generator (labmaze) is seeded once, when the dm_env task is built, so ``reset(seed=s)``
  builds the task anew with seed s (about a second); ``reset()`` without a seed plays the next
  maze of the current task's own stream.

Rendering is MuJoCo's offscreen OpenGL: ``MUJOCO_GL`` defaults to ``egl`` (Mesa's EGL renders on
the CPU where no GPU is present); ``osmesa`` also works where libOSMesa is installed.  Where no
backend works, making or resetting the environment raises :class:`RenderingUnavailable` with what
to install.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import types
from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import RecordConstructorArgs

# Maze size -> (number of targets, the package's episode length in steps, extra generator settings),
# as memory_maze.tasks.memory_maze_{9x9,11x11,13x13,15x15} set them.
MAZES = {9: (3, 1000, {}), 11: (4, 2000, {}), 13: (5, 3000, {}), 15: (6, 4000, {"max_rooms": 9, "room_max_size": 3})}
CONTROL_FREQ = 4.0  # steps per simulated second (the package's default)
NOOP, FORWARD, LEFT, RIGHT, FORWARD_LEFT, FORWARD_RIGHT = range(6)
PRIVILEGED_KEYS = ("maze_layout", "agent_pos", "agent_dir", "target_pos", "targets_pos", "target_color")


class RenderingUnavailable(OSError):
    """No OpenGL backend renders MuJoCo's images here (a missing system library)."""


class _NoFreeJointWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "no free joint" not in record.getMessage()


_QUIET_BUILDS = _NoFreeJointWarning()  # one instance: logging adds it once, however often it is asked


def memory_maze_tasks() -> types.ModuleType:
    """The ``memory_maze.tasks`` module, loaded without ``memory_maze/__init__.py`` (see the module
    docstring).  Raises ModuleNotFoundError naming the package when it is not installed."""
    os.environ.setdefault("MUJOCO_GL", "egl")  # read by dm_control when it first renders
    if "memory_maze" not in sys.modules:
        spec = importlib.util.find_spec("memory_maze")
        if spec is None:
            raise ModuleNotFoundError("Memory Maze needs the memory-maze package (1.0.3): "
                                      "pip install 'rate-rmt[memory-maze]'",
                                      name="memory_maze")
        package = types.ModuleType("memory_maze")
        package.__path__, package.__spec__ = list(spec.submodule_search_locations), spec
        sys.modules["memory_maze"] = package
    # dm_control warns "Cannot set velocity on Entity with no free joint" at every maze it builds
    # (the targets are fixed bodies): a line per episode that says nothing to a user.
    logging.getLogger("absl").addFilter(_QUIET_BUILDS)
    try:
        return importlib.import_module("memory_maze.tasks")
    except ModuleNotFoundError:
        raise
    except Exception as err:  # dm_control refuses an unknown MUJOCO_GL, or fails to load its GL library
        raise RenderingUnavailable(rendering_hint(err)) from err


class MemoryMazeEnv(gym.Env, RecordConstructorArgs):
    """A Memory Maze of ``size`` x ``size`` cells, ``episode_length`` steps per episode (default: the
    package's, 1000 at 9 x 9).  Observations uint8 (64, 64, 3); rewards 1 per target reached; the
    episode is truncated at ``episode_length`` (never terminated).  ``info["targets"]``: targets
    reached so far this episode."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": int(CONTROL_FREQ)}
    length_keywords = ("episode_length",)  # (what evaluation sweeps: rate.rl.from_dataset.length_kwarg_for)

    def __init__(self, size: int = 9, episode_length: int | None = None, render_mode: str | None = None):
        if size not in MAZES:
            raise ValueError(f"Memory Maze sizes are {sorted(MAZES)}, got {size}")
        if episode_length is not None and episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        RecordConstructorArgs.__init__(self, size=size, episode_length=episode_length, render_mode=render_mode)
        self.size, self.render_mode = size, render_mode
        self.n_targets, default_length, self._maze_kwargs = MAZES[size]
        self.episode_length = default_length if episode_length is None else episode_length
        self._tasks = memory_maze_tasks()
        self.observation_space = spaces.Box(0, 255, (64, 64, 3), np.uint8)
        self.action_space = spaces.Discrete(6)
        self._dm_env = None
        self._last: dict[str, np.ndarray] = {}
        self._steps = self._targets = 0

    def _build(self, seed: int | None) -> None:
        """A new dm_env task whose maze generator and physics streams start from ``seed``."""
        if self._dm_env is not None:
            self._dm_env.close()
        self._dm_env = self._tasks._memory_maze(  # pinned memory-maze 1.0.3; the public builders fix the time limit
            self.size, self.n_targets, self.episode_length / CONTROL_FREQ, global_observables=True,
            seed=seed, **self._maze_kwargs)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        try:
            if seed is not None or self._dm_env is None:
                # Without a seed the first maze still comes from this env's generator (gym's np_random).
                # (Building the task renders a first frame: OpenGL can fail here too.)
                self._build(seed if seed is not None else int(self.np_random.integers(2**31 - 1)))
            timestep = self._dm_env.reset()
        except Exception as err:
            # dm_control raises several kinds when OpenGL is missing: a failure is reported as a
            # rendering problem only when an empty scene cannot render either.
            renders, why = rendering_available()
            if renders:
                raise
            raise RenderingUnavailable(why) from err
        self._steps = self._targets = 0
        return self._observe(timestep.observation), {"targets": 0}

    def step(self, action):
        if self._dm_env is None:
            raise RuntimeError("call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(f"Memory Maze actions are 0..5, got {action!r}")
        timestep = self._dm_env.step(int(action))
        reward = float(timestep.reward or 0.0)
        self._steps += 1
        self._targets += int(reward > 0)
        obs = self._observe(timestep.observation)
        truncated = timestep.last() or self._steps >= self.episode_length
        return obs, reward, False, bool(truncated), {"targets": self._targets}

    def _observe(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        self._last = observation
        return np.array(observation["image"], dtype=np.uint8)

    def privileged_state(self) -> dict[str, np.ndarray]:
        """The task's global state at the last step (copies): ``maze_layout`` (size, size) uint8,
        1 where a cell is free, indexed [y, x]; ``agent_pos`` (2,) and ``target_pos`` (2,) in cell
        units (x, y); ``agent_dir`` (2,) unit heading; ``targets_pos`` (n_targets, 2);
        ``target_color`` (3,) RGB in [0, 1].  For oracles and diagnostics, never a policy's input."""
        if not self._last:
            raise RuntimeError("call reset() before privileged_state()")
        return {key: np.array(self._last[key]) for key in PRIVILEGED_KEYS}

    def render(self):
        return np.array(self._last["image"], dtype=np.uint8) if self._last else None

    def close(self) -> None:
        if self._dm_env is not None:
            self._dm_env.close()
            self._dm_env = None


def rendering_hint(err: BaseException) -> str:
    backend = os.environ.get("MUJOCO_GL", "egl")
    return (f"Memory Maze cannot render with MUJOCO_GL={backend} ({type(err).__name__}: {err}); install Mesa's EGL "
            "(Debian: apt-get install libegl1 libegl-mesa0) or OSMesa (libosmesa6, then MUJOCO_GL=osmesa)")


def rendering_available() -> tuple[bool, str]:
    """Whether Memory Maze can be made and render here, and if not, why (for skipping tests): the
    package imports, and MuJoCo renders a few pixels of an empty scene with ``MUJOCO_GL``."""
    try:
        memory_maze_tasks()
        from dm_control import mujoco

        physics = mujoco.Physics.from_xml_string("<mujoco><worldbody><light/></worldbody></mujoco>")
        try:
            physics.render(height=8, width=8)
        except Exception as err:  # dm_control raises several kinds when OpenGL is missing
            raise RenderingUnavailable(rendering_hint(err)) from err
        finally:
            physics.free()
    except (ModuleNotFoundError, RenderingUnavailable) as err:
        return False, str(err)
    return True, ""


class MazeOracle:
    """Walks to the current target by breadth-first search on the privileged maze grid.

    Each step: the shortest cell path from the agent's cell to the target's; the next waypoint is
    the centre of the path's second cell (the target itself once in its cell); the agent turns in
    place when the waypoint lies more than ``turn_deg`` off its heading, walks and turns when more
    than ``steer_deg``, else walks straight.  Acts only on :meth:`MemoryMazeEnv.privileged_state`.
    On 9 x 9 mazes it reaches 23.1 +- 5.0 targets in the paper's 1000 steps (seeds 0-9, 2-core
    CPU: ``python -m envs.oracle_score memory-maze --episodes 10``).
    """

    def __init__(self, turn_deg: float = 45.0, steer_deg: float = 10.0):
        self.turn, self.steer = np.radians(turn_deg), np.radians(steer_deg)

    def __call__(self, env: MemoryMazeEnv) -> int:
        state = env.privileged_state()
        pos, heading = state["agent_pos"], state["agent_dir"]
        path = shortest_path(state["maze_layout"], cell_of(pos), cell_of(state["target_pos"]))
        waypoint = state["target_pos"] if path is None or len(path) < 2 else np.array(path[1]) + 0.5
        want = waypoint - pos
        # Signed angle from the heading to the waypoint, counter-clockwise positive (LEFT turns that way).
        angle = np.arctan2(heading[0] * want[1] - heading[1] * want[0], heading @ want)
        if abs(angle) > self.turn:
            return LEFT if angle > 0 else RIGHT
        if abs(angle) > self.steer:
            return FORWARD_LEFT if angle > 0 else FORWARD_RIGHT
        return FORWARD


def cell_of(position: np.ndarray) -> tuple[int, int]:
    """The (x, y) grid cell of a position in cell units."""
    return int(position[0]), int(position[1])


def shortest_path(layout: np.ndarray, start: tuple[int, int], goal: tuple[int, int]) -> list[tuple[int, int]] | None:
    """Breadth-first shortest path of (x, y) cells from ``start`` to ``goal`` through free cells
    (``layout[y, x]`` nonzero), both ends included; None when the goal is unreachable."""
    height, width = layout.shape
    previous = {start: start}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell == goal:
            path = [cell]
            while path[-1] != start:
                path.append(previous[path[-1]])
            return path[::-1]
        x, y = cell
        for nx, ny in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
            if 0 <= nx < width and 0 <= ny < height and layout[ny, nx] and (nx, ny) not in previous:
                previous[(nx, ny)] = cell
                queue.append((nx, ny))
    return None
