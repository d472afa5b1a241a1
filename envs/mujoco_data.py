"""Offline MuJoCo dataset made here, without downloads: a linear policy trained by ARS, replayed noisily.

    python -m envs.mujoco_data [--env HalfCheetah-v5] [--iterations 300] [--episodes 100]
                               [--action-noise 0.1] [--seed 0] [--dataset-id ID] [--overwrite]

1. Behaviour policy: Augmented Random Search V2-t (Mania, Guy and Recht 2018), a linear policy
   a = clip(M @ ((o - mu) / sigma), low, high) on running observation statistics.  Every iteration
   draws ``directions`` Gaussian perturbations delta, plays M + noise*delta and M - noise*delta for
   one episode each (both on the same environment seed), keeps the ``top`` directions by
   max(r+, r-) and steps M += step_size / (top * std of their 2*top returns) * sum (r+ - r-) delta.
   mu and sigma are frozen during an iteration and then updated with every state it visited (V2).
2. Data: ``snapshots`` copies of the policy taken evenly through training (the last one included)
   each play an equal share of the ``episodes``, with Gaussian action noise of std
   ``action_noise`` (clipped to the action bounds).  The snapshots differ and a linear cheetah
   policy is fragile under action noise (about half the default episodes flip it onto its back),
   so the returns spread like D4RL's medium-replay (default data: -554 .. 4739, mean 2777).
   Episodes are stored oldest snapshot first.

The Minari dataset recovers the environment (same id and episode limit).  Its metadata key
``generation`` records how it was made: ARS settings, the per-iteration return curve, every
snapshot's noiseless and in-data mean return, the data's return min/mean/max and the return of a
uniformly random policy.  ``ref_min_score`` is that random return and ``ref_max_score`` the best
snapshot's noiseless return (ARS is not monotone: the last snapshot need not be the best).  The
dataset is a pure function of its arguments: every random draw comes from one numpy Generator
seeded by ``seed``, and ``workers`` changes only the speed.
(ARS V2-t also subtracts a survival bonus on Hopper / Walker / Ant; this generator does not, so it
is tuned for HalfCheetah, which has none.)
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
from dataclasses import asdict, dataclass

import gymnasium as gym
import minari
import numpy as np
from minari.data_collector.episode_buffer import EpisodeBuffer
from tqdm import tqdm

from .recording import generator_main, record_episode
from rate.data.minari_writer import check_dataset_id, write_minari_dataset

STD_FLOOR = 1e-8  # observation features that never varied are left unscaled, not divided by ~0


@dataclass(frozen=True)
class ARSConfig:
    """ARS V2-t hyperparameters (the paper used 32 / 4 / 0.02 / 0.03 for HalfCheetah)."""

    # Seed 0 (default generation, ~4 minutes on 2 cores): noiseless returns 3608 after 30 iterations,
    # 5011 after 120, 1733 after 150, 5130 after 270, 3999 after 300 -- ARS is not monotone.
    iterations: int = 300
    directions: int = 16
    top: int = 8
    step_size: float = 0.02
    noise: float = 0.03

    def check(self) -> None:
        for name in ("iterations", "directions", "top"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.top > self.directions:
            raise ValueError(f"top must be <= directions, got top {self.top} > directions {self.directions}")
        if not self.step_size > 0 or not self.noise > 0:
            raise ValueError(f"step_size and noise must be > 0, got {self.step_size}, {self.noise}")


def default_dataset_id(env_id: str) -> str:
    """``HalfCheetah-v5`` -> ``rate/mujoco/halfcheetah-ars-v0``."""
    return f"rate/mujoco/{env_id.split('-')[0].lower()}-ars-v0"


def make_env(env_id: str, episode_steps: int | None = None) -> gym.Env:
    """The environment with an optional shorter episode limit; a clear ValueError for an unknown id
    or an action space that is not a Box (ARS's linear policy needs continuous actions)."""
    if episode_steps is not None and episode_steps < 1:
        raise ValueError(f"episode_steps must be >= 1, got {episode_steps}")
    kwargs = {} if episode_steps is None else {"max_episode_steps": episode_steps}
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.Error as err:
        raise ValueError(f"cannot make environment {env_id!r}: {err}") from err
    if not isinstance(env.action_space, gym.spaces.Box) or not isinstance(env.observation_space, gym.spaces.Box):
        env.close()
        raise ValueError(f"{env_id} needs Box observation and action spaces for a linear policy, got "
                         f"{type(env.observation_space).__name__} and {type(env.action_space).__name__}")
    return env


# --------------------------------------------------------------------------- policy and statistics

@dataclass
class RunningStats:
    """Running mean and sum of squared deviations of D-dim observations (Welford, in batches)."""

    count: int
    mean: np.ndarray  # (D,) float64
    m2: np.ndarray  # (D,) float64

    @classmethod
    def empty(cls, dim: int) -> RunningStats:
        return cls(0, np.zeros(dim), np.zeros(dim))

    @classmethod
    def of(cls, states: np.ndarray) -> RunningStats:
        """The statistics of states (T, D), computed in two passes (exact)."""
        mean = states.mean(0)
        return cls(len(states), mean, ((states - mean) ** 2).sum(0))

    def merge(self, other: RunningStats) -> None:
        """Add a batch (Chan et al.'s pairwise form of Welford's update)."""
        if other.count == 0:
            return
        n = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / n)
        self.m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / n)
        self.count = n

    def std(self) -> np.ndarray:
        """(D,) population std; 1 where it is below STD_FLOOR (and everywhere before any data)."""
        std = np.sqrt(self.m2 / max(self.count, 1))
        return np.where(std < STD_FLOOR, 1.0, std)


@dataclass
class LinearPolicy:
    """a = clip(weights @ ((obs - mean) / std), low, high): weights (A, D), mean and std (D,),
    low and high (A,)."""

    weights: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    low: np.ndarray
    high: np.ndarray

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.clip(self.weights @ ((obs - self.mean) / self.std), self.low, self.high)

    def with_weights(self, weights: np.ndarray) -> LinearPolicy:
        return LinearPolicy(weights, self.mean, self.std, self.low, self.high)


def rollout(env: gym.Env, policy: LinearPolicy, seed: int) -> tuple[float, RunningStats]:
    """One noiseless episode: its return and the statistics of the observations acted on."""
    obs, _ = env.reset(seed=seed)
    states, total, done = [], 0.0, False
    while not done:
        states.append(obs)
        obs, reward, terminated, truncated, _ = env.step(policy(obs))
        total += float(reward)
        done = terminated or truncated
    return total, RunningStats.of(np.asarray(states, dtype=np.float64))


# Rollouts run in a pool of processes with one environment each; pool.map keeps the task order and
# each rollout depends only on its task, so the results do not depend on the number of workers.
_WORKER_ENV: gym.Env | None = None


def _init_worker(env_id: str, episode_steps: int | None) -> None:
    global _WORKER_ENV
    # Ctrl-C reaches every process of the terminal's group: the generator stops its pool and says
    # so in one line; a worker's own KeyboardInterrupt would print its traceback beside it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER_ENV = make_env(env_id, episode_steps)


def _rollout_task(task: tuple[LinearPolicy, int]) -> tuple[float, RunningStats]:
    return rollout(_WORKER_ENV, *task)


class RolloutPool:
    """``run([(policy, seed), ...]) -> [(return, stats), ...]`` in order, in-process for one worker."""

    def __init__(self, env_id: str, episode_steps: int | None, workers: int):
        self.pool = self.env = None
        if workers > 1:
            self.pool = multiprocessing.get_context().Pool(workers, _init_worker, (env_id, episode_steps))
        else:
            self.env = make_env(env_id, episode_steps)

    def run(self, tasks: list[tuple[LinearPolicy, int]]) -> list[tuple[float, RunningStats]]:
        if self.pool is None:
            return [rollout(self.env, *task) for task in tasks]
        return self.pool.map(_rollout_task, tasks, chunksize=1)

    def __enter__(self) -> RolloutPool:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
        if self.env is not None:
            self.env.close()


# --------------------------------------------------------------------------------------- ARS V2-t

@dataclass
class Snapshot:
    """The policy after ``iteration`` ARS updates and its mean noiseless return."""

    iteration: int
    policy: LinearPolicy
    eval_return: float


@dataclass
class ARSResult:
    """``returns[i]``: mean return of the 2 * directions perturbed rollouts of iteration i + 1."""

    returns: list[float]
    snapshots: list[Snapshot]


def snapshot_iterations(iterations: int, count: int) -> list[int]:
    """``count`` iterations evenly spaced over training (iterations 1 .. ``iterations``), ending at
    the last: 100, 5 -> 20 40 60 80 100; fewer when there are fewer iterations than ``count``."""
    return sorted({max(1, round(iterations * (i + 1) / count)) for i in range(count)})


def ars_update(weights: np.ndarray, deltas: np.ndarray, r_plus: np.ndarray, r_minus: np.ndarray,
               config: ARSConfig) -> np.ndarray:
    """One V2-t step: weights (A, D), deltas (N, A, D), returns (N,) -> new weights (A, D)."""
    best = np.argsort(-np.maximum(r_plus, r_minus), kind="stable")[: config.top]
    spread = np.concatenate([r_plus[best], r_minus[best]]).std()
    # Equal returns everywhere give a zero step anyway; the guard only avoids 0 / 0.
    scale = config.step_size / (config.top * (spread if spread > 0 else 1.0))
    return weights + scale * np.einsum("k,kad->ad", r_plus[best] - r_minus[best], deltas[best])


def train_ars(env_id: str, config: ARSConfig, rng: np.random.Generator, episode_steps: int | None = None,
              snapshots: int = 10, eval_episodes: int = 5, workers: int = 1, progress: bool = True) -> ARSResult:
    """Train a linear policy from zero weights; ``snapshots`` copies are taken evenly through
    training (see :func:`snapshot_iterations`) and each evaluated on ``eval_episodes`` episodes."""
    config.check()
    if snapshots < 1 or eval_episodes < 1 or workers < 1:
        raise ValueError(f"snapshots, eval_episodes and workers must be >= 1, "
                         f"got {snapshots}, {eval_episodes}, {workers}")
    env = make_env(env_id, episode_steps)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    low, high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    env.close()
    stats = RunningStats.empty(obs_dim)
    weights = np.zeros((act_dim, obs_dim))
    keep = set(snapshot_iterations(config.iterations, snapshots))
    result = ARSResult([], [])
    with RolloutPool(env_id, episode_steps, workers) as pool:
        bar = tqdm(range(1, config.iterations + 1), desc="ARS", unit="it", disable=not progress)
        for it in bar:
            # V2: the normalisation is frozen for the iteration, then updated with all its states.
            base = LinearPolicy(weights, stats.mean.copy(), stats.std(), low, high)
            deltas = rng.standard_normal((config.directions, act_dim, obs_dim))
            seeds = rng.integers(0, 2**31 - 1, size=config.directions)
            tasks = [(base.with_weights(weights + sign * config.noise * d), int(s))
                     for d, s in zip(deltas, seeds) for sign in (1.0, -1.0)]
            outcomes = pool.run(tasks)
            returns = np.array([r for r, _ in outcomes])
            weights = ars_update(weights, deltas, returns[0::2], returns[1::2], config)
            for _, visited in outcomes:
                stats.merge(visited)
            result.returns.append(float(returns.mean()))
            bar.set_postfix(mean_return=f"{returns.mean():.1f}")
            if it in keep:
                policy = LinearPolicy(weights, stats.mean.copy(), stats.std(), low, high)
                seeds = rng.integers(0, 2**31 - 1, size=eval_episodes)
                evals = pool.run([(policy, int(s)) for s in seeds])
                result.snapshots.append(Snapshot(it, policy, float(np.mean([r for r, _ in evals]))))
    return result


# ------------------------------------------------------------------------------- reference returns

def random_policy_return(env_id: str, episodes: int = 10, seed: int = 0, episode_steps: int | None = None) -> float:
    """Mean return of actions drawn uniformly within the action bounds (a reference minimum)."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env = make_env(env_id, episode_steps)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    totals = []
    for s in rng.integers(0, 2**31 - 1, size=episodes):
        env.reset(seed=int(s))
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(rng.uniform(low, high).astype(env.action_space.dtype))
            total += float(reward)
            done = terminated or truncated
        totals.append(total)
    env.close()
    return float(np.mean(totals))


# ------------------------------------------------------------------------------------------ data

class LastObservation(gym.Wrapper):
    """Keeps the latest observation: record_episode hands its policy the unwrapped env, not the
    observation.  Only used while recording; the dataset stores the inner env's spec."""

    def reset(self, **kwargs):
        self.last, info = self.env.reset(**kwargs)
        return self.last, info

    def step(self, action):
        self.last, *rest = self.env.step(action)
        return self.last, *rest


def noisy_episode(env: LastObservation, policy: LinearPolicy, action_noise: float, rng: np.random.Generator,
                  seed: int, episode_id: int) -> EpisodeBuffer:
    """One episode of ``policy`` plus N(0, action_noise^2) noise, clipped to the action bounds;
    actions stored in the action space's dtype (float32 for MuJoCo)."""
    space = env.action_space

    def choose(_unwrapped) -> np.ndarray:
        action = policy(env.last) + action_noise * rng.standard_normal(space.shape)
        return np.clip(action.astype(space.dtype), space.low, space.high)

    return record_episode(env, choose, seed, episode_id, require_success=False)


def record_snapshots(env_id: str, snapshots: list[Snapshot], episodes: int, action_noise: float,
                     rng: np.random.Generator,
                     episode_steps: int | None = None) -> tuple[list[EpisodeBuffer], list[int]]:
    """``episodes`` noisy episodes split into equal contiguous shares, oldest snapshot first.
    Returns the buffers and, per buffer, the index of the snapshot that played it."""
    env = LastObservation(make_env(env_id, episode_steps))
    owners = [i * len(snapshots) // episodes for i in range(episodes)]
    seeds = rng.integers(0, 2**31 - 1, size=episodes)
    buffers = [noisy_episode(env, snapshots[k].policy, action_noise, rng, int(s), i)
               for i, (k, s) in enumerate(zip(owners, seeds))]
    env.close()
    return buffers, owners


def generation_record(env_id: str, episode_steps: int | None, seed: int, config: ARSConfig, action_noise: float,
                      ars: ARSResult, buffers: list[EpisodeBuffer], owners: list[int], random_return: float) -> dict:
    """How the dataset was made, JSON-ready (stored in the Minari metadata under ``generation``)."""
    returns = np.array([sum(b.rewards) for b in buffers])
    owners_arr = np.array(owners)
    snapshots = [{"iteration": s.iteration, "eval_return": s.eval_return, "episodes": int((owners_arr == k).sum()),
                  "dataset_mean_return": float(returns[owners_arr == k].mean()) if (owners_arr == k).any() else None}
                 for k, s in enumerate(ars.snapshots)]
    return {"generator": "envs.mujoco_data", "env": env_id, "episode_steps": episode_steps, "seed": seed,
            "ars": {"algorithm": "ARS V2-t", **asdict(config)}, "ars_mean_returns": ars.returns,
            "snapshots": snapshots, "action_noise": action_noise, "episodes": len(buffers),
            "returns": {"min": float(returns.min()), "mean": float(returns.mean()), "max": float(returns.max())},
            "random_policy_return": random_return}


def check_arguments(episodes: int, action_noise: float, snapshots: int, workers: int) -> None:
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if not action_noise >= 0:  # also refuses NaN
        raise ValueError(f"action_noise must be >= 0, got {action_noise}")
    if snapshots < 1:
        raise ValueError(f"snapshots must be >= 1, got {snapshots}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")


def generate_mujoco_dataset(env_id: str = "HalfCheetah-v5", episodes: int = 100, seed: int = 0,
                            action_noise: float = 0.1, config: ARSConfig = ARSConfig(), snapshots: int = 10,
                            episode_steps: int | None = None, dataset_id: str | None = None, overwrite: bool = False,
                            workers: int = 1, progress: bool = True) -> minari.MinariDataset:
    """Train ARS, record the snapshots' noisy episodes, write them as a Minari dataset."""
    check_arguments(episodes, action_noise, snapshots, workers)
    config.check()
    make_env(env_id, episode_steps).close()  # bad env ids and spaces fail before minutes of training
    dataset_id = dataset_id or default_dataset_id(env_id)
    check_dataset_id(dataset_id, overwrite)  # a malformed or taken id fails now, not after training

    ars_rng, data_rng, random_rng = np.random.default_rng(seed).spawn(3)
    ars = train_ars(env_id, config, ars_rng, episode_steps, snapshots, workers=workers, progress=progress)
    buffers, owners = record_snapshots(env_id, ars.snapshots, episodes, action_noise, data_rng, episode_steps)
    random_return = random_policy_return(env_id, seed=int(random_rng.integers(2**31 - 1)), episode_steps=episode_steps)
    record = generation_record(env_id, episode_steps, seed, config, action_noise, ars, buffers, owners, random_return)

    env = make_env(env_id, episode_steps)
    description = (f"{env_id}: {episodes} episodes of {len(ars.snapshots)} snapshots of a linear ARS V2-t policy "
                   f"({config.iterations} iterations), Gaussian action noise {action_noise}, seed {seed}")
    ds = write_minari_dataset(dataset_id, buffers, env=env, algorithm_name="ARS V2-t", author="rate",
                              description=description, data_format="hdf5", ref_min_score=random_return,
                              ref_max_score=max(s.eval_return for s in ars.snapshots), overwrite=overwrite,
                              metadata={"generation": record})  # an old dataset is replaced only now
    env.close()
    return ds


def summary(record: dict) -> str:
    """A few lines for the terminal: the ARS curve's ends, the snapshots, the data's returns."""
    curve = record["ars_mean_returns"]
    lines = [f"ARS mean return: iteration 1 {curve[0]:.1f}, iteration {len(curve)} {curve[-1]:.1f}"]
    lines += [f"  snapshot @ {s['iteration']:>4}: eval return {s['eval_return']:8.1f}, "
              f"{s['episodes']} episodes, mean return in data "
              + ("-" if s["dataset_mean_return"] is None else f"{s['dataset_mean_return']:.1f}")
              for s in record["snapshots"]]
    r = record["returns"]
    lines.append(f"dataset returns: min {r['min']:.1f}, mean {r['mean']:.1f}, max {r['max']:.1f}; "
                 f"uniformly random policy {record['random_policy_return']:.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="HalfCheetah-v5", help="a Gymnasium env id with Box spaces")
    parser.add_argument("--iterations", type=int, default=ARSConfig.iterations, help="ARS iterations")
    parser.add_argument("--episodes", type=int, default=100, help="episodes in the dataset")
    parser.add_argument("--action-noise", type=float, default=0.1, help="std of the Gaussian noise on dataset actions")
    parser.add_argument("--snapshots", type=int, default=10, help="policies taken evenly through training")
    parser.add_argument("--episode-steps", type=int, help="episode limit (default: the env's, 1000 for HalfCheetah)")
    parser.add_argument("--directions", type=int, default=ARSConfig.directions)
    parser.add_argument("--top", type=int, default=ARSConfig.top)
    parser.add_argument("--step-size", type=float, default=ARSConfig.step_size)
    parser.add_argument("--ars-noise", type=float, default=ARSConfig.noise, help="std of ARS's parameter perturbations")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="rollout processes (speed only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset-id")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    config = ARSConfig(args.iterations, args.directions, args.top, args.step_size, args.ars_noise)

    def make() -> minari.MinariDataset:
        ds = generate_mujoco_dataset(args.env, args.episodes, args.seed, args.action_noise, config, args.snapshots,
                                     args.episode_steps, args.dataset_id, args.overwrite, args.workers)
        print(summary(ds.storage.metadata["generation"]))
        return ds

    return generator_main(make)


if __name__ == "__main__":
    sys.exit(main())
