"""The T-Maze (envs/tmaze.py) as one batched numpy ``gymnasium.vector.VectorEnv``.

Every environment of the batch behaves exactly as a :class:`~rate_envs.tmaze.TMazeEnv`: env i
reset with seed ``seed + i`` (Gymnasium's convention for vector seeds) draws its goal and every
step's observation noise from its own generator, in the order the single environment does, so a
batch shows the same observations as N single environments reset with seeds seed..seed+N-1
(tests/test_tmaze_vector.py plays both side by side).  The walk itself is array arithmetic over
the batch, and so are the draws: each generator's raw bits are taken in blocks
(:class:`_Uint32Streams`) and turned into goals and noise values the way numpy's
``Generator.integers`` turns them into one value per call, so a step costs a few numpy
operations for the whole batch, where N single environments cost N Python ``step`` calls and N
generator calls.

Made by ``gym.make_vec("rate/TMaze-v0", num_envs=N, corridor_length=L)`` (or ``episode_length=T``;
``render_mode="ansi"`` draws each environment as the single T-Maze does).
Autoreset follows Gymnasium's ``NEXT_STEP`` mode: the step after an environment's episode ended
resets it (its action is ignored; reward 0, not terminated).  Infos are vector infos: ``success``
with the mask ``_success`` for the environments whose episode ended on this step, and
``cue_step`` and ``decision`` for every environment (as the single environment's info).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from .tmaze import DOWN, LEFT, RIGHT, UP, ansi_frame, corridor_length_of


class TMazeVectorEnv(VectorEnv):
    metadata: ClassVar[dict] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, num_envs: int, corridor_length: int = 10, episode_length: int | None = None,
                 render_mode: str | None = None):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.render_mode = render_mode
        corridor_length = corridor_length_of(corridor_length, episode_length)
        self.num_envs, self.default_length = num_envs, corridor_length
        self.single_observation_space = spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        self.single_action_space = spaces.Discrete(4)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.corridor = np.full(num_envs, corridor_length, dtype=np.int64)
        self.goal = np.ones(num_envs, dtype=np.int64)
        self.x, self.y, self.t = (np.zeros(num_envs, dtype=np.int64) for _ in range(3))
        self.streams: _Uint32Streams | None = None
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self._last_obs = np.zeros((num_envs, 4), dtype=np.float32)

    # ------------------------------------------------------------------ Gymnasium API
    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        """``seed``: env i gets seed + i (or seed[i]); ``options`` as TMazeEnv.reset's
        ({"corridor_length": L}, {"goal": +1 or -1}) for every environment reset, plus
        Gymnasium's ``reset_mask`` (bool (N,)) to reset only some of them."""
        options = dict(options or {})
        mask = np.asarray(options.pop("reset_mask", np.ones(self.num_envs, dtype=bool)))
        # (SyncVectorEnv's rules: a mask of 0/1 or 2s is no mask, one without a True resets nothing)
        if mask.shape != (self.num_envs,) or mask.dtype != np.bool_ or not mask.any():
            raise ValueError(f"reset_mask must be a bool array of shape ({self.num_envs},) with at least one True, "
                             f"got {mask!r}")
        seeds = _env_seeds(seed, self.num_envs)
        length, goal = self._episode_options(options)  # (checked before any state changes)
        if self.streams is None:
            if not mask.all():  # (rows never started would play the constructor's defaults)
                raise ValueError("the first reset() starts every environment: its reset_mask must be all True")
            self.streams = _Uint32Streams([seeding.np_random(s)[0] for s in seeds])
        else:
            for i in np.flatnonzero(mask):
                if seeds[i] is not None:
                    self.streams.reseed(i, seeding.np_random(seeds[i])[0])
        rows = np.flatnonzero(mask)
        self._start(rows, length, goal)
        self._autoreset[rows] = False
        obs = self._observe(rows)
        # (as SyncVectorEnv: the rows not reset have no entries, 0 under a False mask)
        info = {"goal": np.where(mask, self.goal, 0), "_goal": mask.copy(),
                "corridor_length": np.where(mask, self.corridor, 0), "_corridor_length": mask.copy(),
                **self._cue_info(mask)}
        return obs, info

    def step(self, actions):
        if self.streams is None:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions)
        valid = (actions == RIGHT) | (actions == UP) | (actions == LEFT) | (actions == DOWN)  # (np.isin: 20x slower)
        # Integers only, as the single T-Maze's Discrete space takes (0.0 is not an action there);
        # a row that restarts ignores its action, as SyncVectorEnv's does.
        if (actions.shape != (self.num_envs,) or actions.dtype.kind not in "iu"
                or not (valid | self._autoreset).all()):
            raise ValueError(f"T-Maze actions must be {self.num_envs} integers in 0..3, got {actions!r}")
        reset = np.flatnonzero(self._autoreset)
        self._start(reset, self.default_length, None)
        moving = ~self._autoreset
        at_junction = self.x == self.corridor
        self.x += (moving & (actions == RIGHT) & ~at_junction).astype(np.int64)
        self.x -= (moving & (actions == LEFT) & (self.x > 0)).astype(np.int64)
        turned = moving & ((actions == UP) | (actions == DOWN)) & at_junction
        self.y = np.where(turned, np.where(actions == UP, 1, -1), self.y)
        reward = (turned & (self.y == self.goal)).astype(np.float64)
        self.t += moving
        terminated = turned
        truncated = moving & ~turned & (self.t >= self.corridor + 2)
        ended = terminated | truncated
        obs = self._observe(np.arange(self.num_envs))
        info: dict[str, Any] = self._cue_info()
        if len(reset):  # the restarted rows' reset info, as SyncVectorEnv merges it into this step's
            mask = self._autoreset.copy()
            info |= {"goal": np.where(mask, self.goal, 0), "_goal": mask,
                     "corridor_length": np.where(mask, self.corridor, 0), "_corridor_length": mask.copy()}
        if ended.any():
            info |= {"success": reward > 0, "_success": ended.copy()}  # (not the autoreset state itself)
        self._autoreset = ended
        return obs, reward, terminated, truncated, info

    def render(self) -> tuple[str, ...] | None:
        """Each environment's ``ansi`` frame, as the single T-Maze draws it (None without a render mode)."""
        if self.render_mode != "ansi" or self.streams is None:
            return None
        return tuple(ansi_frame(*map(int, row)) for row in zip(self.corridor, self.x, self.y, self.goal, self.t))

    # ------------------------------------------------------------------ internals
    def _episode_options(self, options: dict[str, Any]) -> tuple[int, int | None]:
        """(corridor length, goal or None) of reset's options, checked as TMazeEnv.reset does."""
        length = corridor_length_of(options.get("corridor_length", self.default_length))
        goal = options.get("goal")
        if goal is not None and goal not in (-1, 1):
            raise ValueError(f"goal must be +1 or -1, got {goal}")
        return length, goal

    def _start(self, rows: np.ndarray, length: int, goal: int | None) -> None:
        """New episodes in ``rows``: the goal drawn from each row's generator (as TMazeEnv.reset)."""
        if len(rows) == 0:
            return
        self.corridor[rows] = length
        # TMazeEnv.reset's Generator.choice([-1, 1]): one 32-bit draw x, index x * 2 >> 32.
        self.goal[rows] = int(goal) if goal is not None else np.where(self.streams.draw(rows) >> 31, 1, -1)
        self.x[rows] = self.y[rows] = self.t[rows] = 0

    def _observe(self, rows: np.ndarray) -> np.ndarray:
        """Observations (N, 4) [y, clue, junction flag, noise]; the rows in ``rows`` draw new
        noise (one draw each, as TMazeEnv._obs), the others show their last observation."""
        obs = self._last_obs
        obs[rows, 0] = self.y[rows]
        obs[rows, 1] = np.where(self.t[rows] == 0, self.goal[rows], 0)
        obs[rows, 2] = self.x[rows] == self.corridor[rows]
        obs[rows, 3] = self.streams.integers_minus1_to_1(rows)
        return obs.copy()

    def _cue_info(self, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The cue and decision entries of the environments in the bool mask ``rows`` (all: None)."""
        every = np.ones(self.num_envs, dtype=bool) if rows is None else rows
        return {"cue_step": np.zeros(self.num_envs, dtype=np.int64), "_cue_step": every.copy(),
                "decision": (self.x == self.corridor) & every, "_decision": every.copy()}


class _Uint32Streams:
    """The 32-bit draws of N numpy generators, taken from each one's bit generator in blocks.

    ``Generator.integers(lo, hi)`` called for one value reads one 32-bit word when hi - lo fits in
    32 bits (the bit generator hands out the low, then the high half of each 64-bit output) and
    maps it with Lemire's method: value = lo + (x * n >> 32) for n = hi - lo, x redrawn while
    (x * n) mod 2**32 < (2**32 - n) mod n.  Drawing the 64-bit outputs ahead with ``random_raw``
    and applying that map gives the same values as the calls, in the same order, with a few
    array operations for the whole batch.  This follows numpy's algorithm, which numpy does not
    promise to keep across versions: tests/test_tmaze_vector.py compares with single T-Mazes
    (which call ``integers``) over many block refills, so a change shows as a failing test.
    """

    BLOCK = 256  # 64-bit outputs fetched per refill: 512 draws

    def __init__(self, generators: list[np.random.Generator]):
        self.generators = list(generators)
        self.words = np.zeros((len(generators), 2 * self.BLOCK), dtype=np.uint64)
        self.pos = np.zeros(len(generators), dtype=np.int64)
        for i in range(len(generators)):
            self._refill(i)

    def reseed(self, i: int, generator: np.random.Generator) -> None:
        self.generators[i] = generator
        self._refill(i)

    def _refill(self, i: int) -> None:
        raw = self.generators[i].bit_generator.random_raw(self.BLOCK)
        self.words[i, 0::2], self.words[i, 1::2] = raw & np.uint64(0xFFFFFFFF), raw >> np.uint64(32)
        self.pos[i] = 0

    def draw(self, rows: np.ndarray) -> np.ndarray:
        """The next 32-bit word (as uint64) of each generator in ``rows`` (distinct indices)."""
        for i in rows[self.pos[rows] == self.words.shape[1]]:
            self._refill(i)
        out = self.words[rows, self.pos[rows]]
        self.pos[rows] += 1
        return out

    def integers_minus1_to_1(self, rows: np.ndarray) -> np.ndarray:
        """``Generator.integers(-1, 2)`` of each generator in ``rows``: n = 3, so a word is
        redrawn when (3 x) mod 2**32 < 1, which only x = 0 meets."""
        x = self.draw(rows)
        while (again := x == 0).any():
            x[again] = self.draw(rows[again])
        return (x * np.uint64(3) >> np.uint64(32)).astype(np.int64) - 1


def _env_seeds(seed: int | list[int | None] | None, n: int) -> list[int | None]:
    if seed is None:
        return [None] * n
    if isinstance(seed, (int, np.integer)):  # (numpy integers too, which a single T-Maze refuses)
        return [int(seed) + i for i in range(n)]
    if len(seed) != n:
        raise ValueError(f"expected {n} seeds, got {len(seed)}")
    return list(seed)
