"""MiniGrid-Memory with a partial egocentric view, and an oracle from the privileged grid state.

The task (``minigrid.envs.MemoryEnv``): the agent starts on the middle row of a size x size grid,
somewhere between a small room and the end of a long hallway.  In the room lies a cue (a key or
a ball); at the far end the hallway splits, with a key at one end and a ball at the other.
Stepping next to the object that matches the cue pays 1 - 0.9 t / max_steps, next to the other
one ends the episode with 0.  The RATE paper trains on one size and evaluates on larger ones.
``max_steps`` defaults to 5 x size here, not MiniGrid's 5 x size^2 (a failing rollout at size 91
would last 41,405 steps), so a success's timed reward is lower than under MiniGrid's own limit
at the same step: the return scale (and a target return taken from another setup) differs.

:class:`MiniGridMemoryEnv` exposes only what the agent sees: its view_size x view_size egocentric
window (walls block the view; never the full grid), either

- ``observation="symbolic"``: the window's (object, colour, state) indices, flattened to a float32
  vector of view_size * view_size * 3 values,
- ``observation="onehot"``: the same indices one-hot (11 object types, 6 colours, 3 door states:
  20 entries a cell), where a key and a ball differ in two features instead of by 1 in one, or
- ``observation="rgb"``: the window rendered as uint8 pixels, channel-first (3, V*tile, V*tile), for
  the CNN encoder (view 3 x tile 28 = 84 x 84, the paper's setting).

Actions are the three that matter: 0 turn left, 1 turn right, 2 forward.

Every ``info`` reports ``cue_step`` (the last step whose observation showed the cue; -1 before the
first) and ``decision`` (the agent stands at the split facing the upper object, where its next
action depends on the cue: step to it, or turn back), as T-Maze's does.  Facing the lower object
after turning back is not a decision: walking to it follows from the turn, not from the cue.

``reward="timed"`` keeps MiniGrid's 1 - 0.9 t / max_steps; ``reward="success"`` pays 1 for the
matching object and nothing else.  For return-conditioned models the timed reward leaks the
decision into offline data: turning back from the wrong upper object makes the path longer and the
return lower, so the return-to-go at the split tells which way the episode went, and a model can
learn that instead of remembering the cue (at rollout the return-to-go is the target, which says
nothing).  ``eval.teacher_forced`` measures such leaks.

:class:`MemoryOracle` solves every episode from the privileged state, acting only on what it has
seen: it walks to the room and faces the cue, walks the hallway to the split, looks up, and steps
next to the matching object (turning around first when the upper one is not it).  It plans each
move by breadth-first search, so it recovers from any detour a random action caused.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .checks import whole_number

try:
    from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX, STATE_TO_IDX
    from minigrid.envs.memory import MemoryEnv
except ImportError as err:  # an extra: rate-rmt[minigrid]
    raise ImportError(f"rate/MiniGridMemory-v0 needs the minigrid package (pip install 'rate-rmt[minigrid]'): "
                      f"{err}") from err

LEFT, RIGHT, FORWARD = 0, 1, 2
# MiniGrid directions: 0 = +x, 1 = +y (down), 2 = -x, 3 = -y (up).
DIR_VEC = [(1, 0), (0, 1), (-1, 0), (0, -1)]
ONEHOT_SIZES = (len(OBJECT_TO_IDX), len(COLOR_TO_IDX), len(STATE_TO_IDX))  # 11, 6, 3
OBSERVATIONS = ("symbolic", "onehot", "rgb")
REWARDS = ("timed", "success")


class MiniGridMemoryEnv(gym.ObservationWrapper):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    # The keyword that sets the episode's length (5 x size steps): what evaluation sweeps
    # (rate.rl.from_dataset; configs/minigrid's eval.length_kwarg).
    length_keywords = ("size",)

    def __init__(self, size: int = 13, view_size: int = 3, observation: str = "symbolic", tile_size: int = 28,
                 max_steps: int | None = None, random_length: bool = False, reward: str = "timed",
                 render_mode: str | None = None):
        if whole_number(size, "size") < 9 or size % 2 == 0:
            raise ValueError(f"size must be odd and >= 9, got {size}")
        if view_size < 3 or view_size % 2 == 0:
            raise ValueError(f"view_size must be odd and >= 3, got {view_size}")
        if observation not in OBSERVATIONS:
            raise ValueError(f"observation must be one of {OBSERVATIONS}, got {observation!r}")
        if tile_size < 1:
            raise ValueError(f"tile_size must be positive, got {tile_size}")
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be positive (None: 5 x size), got {max_steps}")
        # The oracle needs at most about 2 * size steps; 5 * size leaves room for detours (MemoryEnv's
        # own default, 5 * size^2, makes a failing rollout at size 91 last 41,405 steps).
        self._max_steps, self._random_length = max_steps, random_length  # (for a reset to another size)
        super().__init__(self._grid(size, view_size, render_mode))
        self.size, self.view_size, self.kind, self.tile_size = size, view_size, observation, tile_size
        self.reward_kind = reward
        self.action_space = spaces.Discrete(3)
        if observation == "symbolic":
            self.observation_space = spaces.Box(0.0, 255.0, shape=(view_size * view_size * 3,), dtype=np.float32)
        elif observation == "onehot":
            self.observation_space = spaces.Box(0.0, 1.0, shape=(view_size * view_size * sum(ONEHOT_SIZES),),
                                                dtype=np.float32)
        else:
            side = view_size * tile_size
            self.observation_space = spaces.Box(0, 255, shape=(3, side, side), dtype=np.uint8)

    def observation(self, obs: dict[str, Any]) -> np.ndarray:
        if self.kind == "symbolic":
            return obs["image"].astype(np.float32).reshape(-1)
        if self.kind == "onehot":
            cells = obs["image"].reshape(-1, 3)
            return np.concatenate([np.eye(n, dtype=np.float32)[cells[:, i]] for i, n in enumerate(ONEHOT_SIZES)],
                                  axis=1).reshape(-1)
        frame = self.env.unwrapped.get_frame(highlight=False, tile_size=self.tile_size, agent_pov=True)
        return np.ascontiguousarray(frame.transpose(2, 0, 1))

    def _grid(self, size: int, view_size: int, render_mode: str | None) -> MemoryEnv:
        max_steps = 5 * size if self._max_steps is None else self._max_steps
        return MemoryEnv(size=size, random_length=self._random_length, max_steps=max_steps,
                         agent_view_size=view_size, render_mode=render_mode)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """``options={"size": n}`` plays this episode (and the next ones) on an n x n grid: the
        observation's shape does not depend on the size, and a dataset of mixed sizes records
        each episode's size as this option, so that it replays from its seed and options
        (envs.recording.record_episode)."""
        size = (options or {}).get("size", self.size)
        if size != self.size:
            if whole_number(size, "reset option size") < 9 or size % 2 == 0:
                raise ValueError(f"reset option size must be odd and >= 9, got {size!r}")
            old = self.env.unwrapped
            self.env.close()
            self.env, self.size = self._grid(int(size), self.view_size, self.env.render_mode), int(size)
            self.env.unwrapped.spec = old.spec  # (gym.make attached it to the grid it made)
            if seed is None:  # unseeded resets go on with the seeded stream, as Gymnasium's do, whatever the size
                self.env.unwrapped.np_random = old.np_random
        options = {k: v for k, v in (options or {}).items() if k != "size"} or None
        obs, info = self.env.reset(seed=seed, options=options)
        self._cue_step = -1
        return self.observation(obs), {**info, **self._cue_info(obs)}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"invalid MiniGrid-Memory action {action!r}; expected 0 (left), 1 (right), 2 (forward)")
        obs, reward, terminated, truncated, info = self.env.step(int(action))
        if terminated or truncated:
            info = {**info, "success": reward > 0}
        if self.reward_kind == "success":
            reward = float(reward > 0)
        return self.observation(obs), reward, terminated, truncated, {**info, **self._cue_info(obs)}

    def _cue_info(self, obs: dict[str, Any]) -> dict[str, Any]:
        """Where the cue was last seen (read from the agent's own view) and whether this is a decision."""
        env = self.env.unwrapped
        mid = env.height // 2
        cue = env.grid.get(1, mid - 1)  # MemoryEnv puts the cue there
        view = env.relative_coords(1, mid - 1)
        if view is not None and obs["image"][view[0], view[1], 0] == OBJECT_TO_IDX[cue.type]:
            self._cue_step = env.step_count
        at_split = tuple(int(v) for v in env.agent_pos) == (int(env.success_pos[0]), mid)
        return {"cue_step": self._cue_step, "decision": at_split and int(env.agent_dir) == 3}  # 3: facing up


class MemoryOracle:
    """Scripted policy from the privileged grid state (``env.unwrapped`` of the task) that acts only
    on what it has seen, so a policy learned from its episodes can do the same.

    Phase 1: stand on the middle row at x = 2 facing the room's far wall: the cue at (1, mid - 1)
    is then in view for any view_size >= 3.  Phase 2: walk to the split at (end + 1, mid) and face
    up; the upper object (two cells ahead) is then in view.  If it matches the cue, step next to
    it; otherwise turn around and step next to the lower one.  (Turning straight to the matching
    object would use what the agent cannot see: with a 3 x 3 view neither object is visible from
    the split itself.)  Call :meth:`reset` at every episode start.
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.looked_at_cue = False
        self.looked_up = False

    def __call__(self, env: MemoryEnv) -> int:
        mid = env.height // 2
        split = (int(env.success_pos[0]), mid)
        pos, direction = tuple(int(v) for v in env.agent_pos), int(env.agent_dir)
        if not self.looked_at_cue and pos == (2, mid) and direction == 2:
            self.looked_at_cue = True
        if not self.looked_at_cue:
            return _navigate(env, pos, direction, (2, mid), final_dir=2)
        if pos == split and direction == 3:
            self.looked_up = True
        if not self.looked_up:
            return _navigate(env, pos, direction, split, final_dir=3)
        goal_dir = 3 if env.success_pos[1] < mid else 1
        if pos == split and direction == goal_dir:
            return FORWARD  # onto success_pos: next to the matching object
        return _navigate(env, pos, direction, split, final_dir=goal_dir)


def episode_oracle(rng: np.random.Generator) -> MemoryOracle:
    """A fresh oracle for one episode (``rng`` unused: the oracle acts on what it sees)."""
    return MemoryOracle()


def _navigate(env: MemoryEnv, pos: tuple[int, int], direction: int, target: tuple[int, int], final_dir: int) -> int:
    """Next action towards ``target`` along a shortest path, then a turn to ``final_dir``."""
    if pos == target:
        return _turn(direction, final_dir)
    step = _first_step(env, pos, target)
    want = DIR_VEC.index((step[0] - pos[0], step[1] - pos[1]))
    return FORWARD if want == direction else _turn(direction, want)


def _turn(direction: int, want: int) -> int:
    return RIGHT if (want - direction) % 4 in (1, 2) else LEFT


def _first_step(env: MemoryEnv, start: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """The first cell of a shortest path over free cells (breadth-first search)."""
    previous = {start: None}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell == target:
            break
        for dx, dy in DIR_VEC:
            nxt = (cell[0] + dx, cell[1] + dy)
            if nxt in previous or not (0 <= nxt[0] < env.width and 0 <= nxt[1] < env.height):
                continue
            obj = env.grid.get(*nxt)
            if obj is not None and not obj.can_overlap():
                continue
            if nxt in (tuple(env.failure_pos), tuple(env.success_pos)) and nxt != target:
                continue  # stepping there ends the episode
            previous[nxt] = cell
            queue.append(nxt)
    if target not in previous:
        raise RuntimeError(f"no path from {start} to {target}")  # a bug in the oracle, not bad input
    cell = target
    while previous[cell] != start:
        cell = previous[cell]
    return cell
