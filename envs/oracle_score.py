"""Score a task's scripted oracle: the reference rows a results page sets beside the models.

    python -m envs.oracle_score vizdoom [--length 2100] [--episodes 100] [--seed 0] [--noise 0.0] [--guess]
    python -m envs.oracle_score memory-maze [--size 9] [--length 1000] [--episodes 100] [--seed 0] [--noise 0.0]
    python -m envs.oracle_score popgym --popgym-task RepeatFirstMedium [--episodes 100] [--copy-previous]

Plays ``--episodes`` episodes of ``--length`` steps, reset with seeds seed .. seed + episodes - 1 (the
seeds a model's evaluation uses, ``rate.rl.rollout``), and prints the mean return with its standard
deviation and standard error, and the mean episode length.  The oracles act on the simulator's
privileged state, so they bound what a policy could collect in the same episodes:

- ``vizdoom``: :class:`envs.vizdoom_two_colors.ObjectOracle`, which knows the pillar's colour
  (the analogue of the paper's OracleDT row).  ``--guess`` makes it seek a colour drawn at random
  per episode instead: a walker as skilled but without the cue, what no memory at all gets;
- ``memory-maze``: :class:`envs.memory_maze.MazeOracle`, the shortest path to each target in turn
  (``--guess`` does not apply: the target's colour is always on screen);
- ``popgym``: :func:`envs.popgym_tasks.oracle_action` on ``--popgym-task`` (its own length;
  ``--length`` does not apply).  ``--copy-previous`` plays the oracle's first action and then
  repeats its own previous action at every step: a policy with nothing but one step of action
  feedback, which every model here has (RATE and DT read the previous action as a token, BC-GRU
  as an input).  Where it scores the oracle's return (RepeatFirst: the first action is the
  visible first card's suit, then the answer never changes) the task does not test memory for
  them.

``--noise p`` replaces each action by a uniformly random one with probability p, as the dataset
generators do (``envs.vizdoom_data``, ``envs.memory_maze_data``), so the data's own return can be
checked at any length.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from .recording import check_noise, play_episode, with_random_actions

TASKS = ("vizdoom", "memory-maze", "popgym")


@dataclass
class OracleScore:
    """Returns and lengths of the scored episodes, and the minutes they took."""

    returns: np.ndarray  # (episodes,)
    lengths: np.ndarray  # (episodes,)
    minutes: float

    def line(self) -> str:
        n = len(self.returns)
        sem = self.returns.std(ddof=1) / np.sqrt(n) if n > 1 else float("nan")
        return (f"return {self.returns.mean():.2f} +- {self.returns.std():.2f} (std; sem {sem:.2f}) over {n} episodes, "
                f"mean length {self.lengths.mean():.0f} steps, {self.minutes:.1f} min")


class _POPGymOracle:
    """The POPGym oracle as the other tasks' oracle classes are used: called with the env."""

    def __call__(self, env: gym.Env) -> int:
        from .popgym_tasks import oracle_action

        return oracle_action(env)


def _copy_previous(oracle, n_actions: int, noise: float, rng: np.random.Generator):
    """A chooser playing ``oracle``'s first action, then the previous action played again at every
    step; each replaced with probability ``noise`` by a random one (drawn as
    :func:`envs.recording.with_random_actions` draws them), which then is the previous action."""
    last = None

    def choose(env: gym.Env) -> int:
        nonlocal last
        if rng.random() < noise:
            last = int(rng.integers(0, n_actions))
        elif last is None:
            last = oracle(env)
        return last

    return choose


def _make(task: str, length: int, size: int, popgym_task: str = "") -> tuple[gym.Env, type]:
    import rate_envs  # noqa: F401  (registers the rate/ environments)

    if task == "popgym":
        return gym.make("rate/POPGym-v0", task=popgym_task), _POPGymOracle
    if task == "vizdoom":
        from .vizdoom_two_colors import ObjectOracle

        return gym.make("rate/ViZDoomTwoColors-v0", episode_length=length), ObjectOracle
    from .memory_maze import MazeOracle

    return gym.make(f"rate/MemoryMaze-{size}x{size}-v0", episode_length=length), MazeOracle


def score_oracle(task: str, length: int, episodes: int = 100, seed: int = 0, noise: float = 0.0,
                 guess: bool = False, size: int = 9, progress: bool = True, popgym_task: str = "",
                 copy_previous: bool = False) -> OracleScore:
    """Play the task's oracle (see the module docstring) and return its scores; closes the environment."""
    from rate.training import progress_bar

    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if guess and task != "vizdoom":
        raise ValueError("--guess applies to vizdoom only (Memory Maze shows the target colour all the time)")
    if (task == "popgym") != bool(popgym_task):
        raise ValueError("--popgym-task names the POPGym task, and goes with the popgym task only")
    if copy_previous and task != "popgym":
        raise ValueError("--copy-previous applies to popgym only")
    if length < 1 or episodes < 1:
        raise ValueError(f"length and episodes must be >= 1, got {length} and {episodes}")
    check_noise(noise)
    env, oracle_class = _make(task, length, size, popgym_task)
    rng = np.random.default_rng(seed)  # the random actions' and guessed colours' stream
    n_actions = int(env.action_space.n)
    returns, lengths, started = [], [], time.perf_counter()
    bar = progress_bar(total=episodes, desc="episodes", disable=not progress)
    try:
        for i in range(episodes):
            oracle = oracle_class(seek=str(rng.choice(["good", "bad"]))) if guess else oracle_class()
            choose = (_copy_previous if copy_previous else with_random_actions)(oracle, n_actions, noise, rng)
            played = play_episode(env, choose, seed + i)
            returns.append(sum(played.rewards))
            lengths.append(len(played.actions))
            bar.update(1)
            bar.set_postfix(mean_return=f"{np.mean(returns):.2f}")
    finally:
        bar.close()
        env.close()
    return OracleScore(np.array(returns), np.array(lengths), (time.perf_counter() - started) / 60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m envs.oracle_score", description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=TASKS)
    parser.add_argument("--length", type=int, help="episode length (default: 2100 for vizdoom, 1000 for memory-maze)")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="the first episode's seed")
    parser.add_argument("--noise", type=float, default=0.0, help="chance of a random action at each step")
    parser.add_argument("--guess", action="store_true", help="vizdoom: seek a random colour per episode")
    parser.add_argument("--size", type=int, default=9, help="memory-maze: the maze size")
    parser.add_argument("--popgym-task", default="", help="popgym: the task, e.g. RepeatFirstMedium")
    parser.add_argument("--copy-previous", action="store_true",
                        help="popgym: the oracle's first action, then its own previous action at every step")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.task == "popgym" and args.length is not None:
        parser.error("--length: a POPGym task has its own length")
    length = args.length if args.length is not None else {"vizdoom": 2100, "memory-maze": 1000}.get(args.task, 1)
    try:
        score = score_oracle(args.task, length, args.episodes, args.seed, args.noise, args.guess, args.size,
                             progress=not args.no_progress, popgym_task=args.popgym_task,
                             copy_previous=args.copy_previous)
    except (ValueError, OSError, ImportError, gym.error.Error) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    who = ("oracle seeking a random colour" if args.guess else "oracle's first action, then its previous action"
           if args.copy_previous else "oracle")
    seeds = f"{args.seed}..{args.seed + args.episodes - 1}"
    task = f"popgym {args.popgym_task}" if args.task == "popgym" else args.task
    length_text = "" if args.task == "popgym" else f", length {length}"
    print(f"{task} {who}{length_text}, noise {args.noise}, seeds {seeds}: {score.line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
