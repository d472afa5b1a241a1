"""Record scripted episodes into Minari episode buffers (shared by the dataset generators)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import minari
import numpy as np
from minari.data_collector.episode_buffer import EpisodeBuffer

from rate.data.minari_writer import write_minari_dataset


def check_noise(noise: float) -> None:
    """The fraction of random actions a generator mixes into its oracle's: a probability."""
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")


def with_random_actions(oracle: Callable[[gym.Env], int], n_actions: int, noise: float,
                        rng: np.random.Generator) -> Callable[[gym.Env], int]:
    """``oracle``'s choice, replaced with probability ``noise`` by a uniformly random action of
    0..n_actions-1 (both drawn from ``rng``, the chance first)."""

    def choose(env: gym.Env) -> int:
        return int(rng.integers(0, n_actions)) if rng.random() < noise else oracle(env)

    return choose


@dataclass
class PlayedEpisode:
    """One episode as played: T + 1 observations (the final one included), T actions, rewards,
    terminated and truncated flags, and T + 1 infos (reset's first)."""

    observations: list
    actions: list = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    terminations: list[bool] = field(default_factory=list)
    truncations: list[bool] = field(default_factory=list)
    infos: list[dict] = field(default_factory=list)


def play_episode(env: gym.Env, choose: Callable[[gym.Env], int], seed: int,
                 options: dict[str, Any] | None = None) -> PlayedEpisode:
    """Play one episode with ``choose(env.unwrapped) -> action`` from ``env.reset(seed, options)``."""
    obs, info = env.reset(seed=seed, options=options)
    played = PlayedEpisode(observations=[obs], infos=[info])
    done = False
    while not done:
        action = choose(env.unwrapped)
        obs, reward, terminated, truncated, info = env.step(action)
        played.observations.append(obs)
        played.actions.append(action)
        played.rewards.append(float(reward))
        played.terminations.append(bool(terminated))
        played.truncations.append(bool(truncated))
        played.infos.append(info)
        done = terminated or truncated
    return played


def record_episode(env: gym.Env, choose: Callable[[gym.Env], int], seed: int, episode_id: int,
                   options: dict[str, Any] | None = None, require_success: bool = True) -> EpisodeBuffer:
    """:func:`play_episode` as a Minari episode buffer.  Its infos are the reset ``options``, each
    repeated over the T + 1 steps (the environment's own infos are not kept): an episode replays
    from its seed (in Minari's episode metadata) with them,
    ``env.reset(seed=seed, options={k: int(v[0]) for k, v in ep.infos.items()})``.

    ``require_success``: an oracle that ends without reward is a bug in the oracle, not bad input,
    so it raises AssertionError instead of writing a failed episode into the dataset."""
    played = play_episode(env, choose, seed, options)
    if require_success and sum(played.rewards) <= 0:
        raise AssertionError(f"oracle failed on seed {seed} with options {options}")
    infos = {key: np.full(len(played.observations), value) for key, value in (options or {}).items()}
    return EpisodeBuffer(id=episode_id, seed=seed, observations=np.stack(played.observations),
                         actions=np.array(played.actions), rewards=played.rewards, terminations=played.terminations,
                         truncations=played.truncations, infos=infos)


class EpisodeStage:
    """Episodes recorded so far, one file each, so that a generator killed part-way (a long image
    dataset, a session that ends) resumes where it stopped and writes the same dataset.

    The folder ``.rate-episodes-<name>-<hash>`` lies beside the dataset's folder (hidden, so Minari
    never lists it); the hash covers the generator's arguments and the package version, so other
    arguments (or another version) never reuse episodes.  Each file holds an episode and the state
    of the generator's random stream after it (the oracle's random actions draw from one stream
    across episodes): a resumed run restores it and plays on as an uninterrupted one would.  Files
    are written atomically; the folder is removed once the dataset is written."""

    def __init__(self, dataset_id: str, arguments: dict[str, Any], rng: np.random.Generator):
        from rate.data.minari_writer import dataset_folder

        from rate import __version__

        # (the package version too: episodes staged by another version are not taken as this one's)
        staged = json.dumps({**arguments, "rate_version": __version__}, sort_keys=True)
        key = hashlib.sha256(staged.encode()).hexdigest()[:12]
        target = dataset_folder(dataset_id)
        self.folder = target.parent / f".rate-episodes-{target.name}-{key}"
        self.rng = rng
        self.resumed = 0  # episodes taken from an earlier run (load)

    def _file(self, i: int) -> Path:
        return self.folder / f"episode_{i:06d}.npz"

    def load(self) -> list[EpisodeBuffer]:
        """The episodes staged so far (0, 1, ... without gaps); restores the random stream to its
        state after the last of them."""
        buffers = []
        while self._file(len(buffers)).is_file():
            i = len(buffers)
            try:
                with np.load(self._file(i)) as f:
                    buffers.append(EpisodeBuffer(
                        id=i, seed=int(f["seed"]), observations=f["observations"], actions=f["actions"],
                        rewards=f["rewards"].tolist(), terminations=f["terminations"].tolist(),
                        truncations=f["truncations"].tolist(), infos={}))
                    state = json.loads(str(f["rng_state"]))
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:  # (empty, cut short)
                raise OSError(f"{self._file(i)}: unreadable staged episode ({err}); delete {self.folder} to "
                              "record from the start") from err
            self.rng.bit_generator.state = state
        self.resumed = len(buffers)
        return buffers

    def note(self) -> str:
        """What a dataset's description says of a resumed recording ('' when nothing was resumed)."""
        return f", resumed after {self.resumed} staged episodes" if self.resumed else ""

    def save(self, buffer: EpisodeBuffer) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._file(buffer.id)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, seed=buffer.seed, observations=buffer.observations, actions=buffer.actions,
                     rewards=np.asarray(buffer.rewards), terminations=np.asarray(buffer.terminations),
                     truncations=np.asarray(buffer.truncations), rng_state=json.dumps(self.rng.bit_generator.state))
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename: a power cut leaves no empty episode behind
        os.replace(tmp, path)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def record_episodes(env: gym.Env, choose: Callable[[gym.Env], int], seeds, progress: bool = True,
                    stage: EpisodeStage | None = None) -> tuple[list[EpisodeBuffer], float]:
    """One :func:`record_episode` per seed (no success required: with random actions a return of 0
    is allowed), behind a progress bar showing the mean return so far; closes ``env``.  With a
    ``stage``, episodes staged by an earlier run are taken as they are and each new one is staged
    as it ends (:class:`EpisodeStage`).  Returns the buffers and the minutes this run took."""
    from rate.training import progress_bar

    started = time.perf_counter()
    buffers = stage.load() if stage is not None else []
    bar = progress_bar(total=len(seeds), initial=len(buffers), desc="episodes", disable=not progress)
    try:
        for i in range(len(buffers), len(seeds)):
            buffers.append(record_episode(env, choose, int(seeds[i]), i, require_success=False))
            if stage is not None:
                stage.save(buffers[-1])
            bar.update(1)
            bar.set_postfix(mean_return=f"{np.mean([sum(b.rewards) for b in buffers]):.2f}")
    finally:
        bar.close()
        env.close()
    return buffers, (time.perf_counter() - started) / 60


def write_oracle_dataset(dataset_id: str, buffers: list[EpisodeBuffer], env: gym.Env, description: str,
                         ref_min_score: float = 0.0, ref_max_score: float = 1.0,
                         overwrite: bool = False, jpeg: bool = False) -> minari.MinariDataset:
    """The recorded episodes as a Minari dataset (HDF5) that recovers ``env``; an old dataset of
    that id is replaced (``overwrite``) only once the new one is complete.

    ``jpeg``: let Minari JPEG-encode image observations (uint8 Boxes of at least 32 x 32 pixels in
    the first two axes; lossy, about 10x smaller).  Minari does so by default; here the default is
    lossless, so that a dataset holds exactly the frames its environment rendered (a policy is
    evaluated on those) and an episode replays bit for bit from its seed (and the reset options
    :func:`record_episode` stores as its infos)."""
    return write_minari_dataset(dataset_id, buffers, overwrite=overwrite, env=env, algorithm_name="oracle", author="rate",
                                description=description, data_format="hdf5", ref_min_score=ref_min_score,
                                ref_max_score=ref_max_score, jpeg_encoding=jpeg)


class _Stopped(BaseException):
    """SIGTERM, raised where the generator is (a BaseException: no ``except Exception`` keeps it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def generator_main(make: Callable[[], minari.MinariDataset]) -> int:
    """A generator CLI's body: build the dataset, print its size; bad arguments, an existing
    dataset, a missing package or system library, or a failed write (a full or read-only disk) are
    one line on stderr and exit status 2.  Ctrl-C, and SIGTERM (``timeout``, a job scheduler) alike,
    stop it through the clean-up: the environment is closed (a ViZDoom or Memory Maze simulator
    would otherwise outlive the generator), no dataset is written or replaced (the writer moves a
    dataset in only once it is complete) and the staged episodes stay for a resume; one line, exit
    status 128 + the signal (130, 143)."""
    generator = os.getpid()

    def stop(signum, frame):
        if os.getpid() != generator:  # a forked worker (MuJoCo's rollout pool) that its pool terminates
            os._exit(128 + signum)
        raise _Stopped(signum)

    handles = threading.current_thread() is threading.main_thread()  # (signals are the main thread's)
    previous = signal.signal(signal.SIGTERM, stop) if handles else None
    try:
        ds = make()
    except (ValueError, OSError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, _Stopped) as err:
        signum = err.signum if isinstance(err, _Stopped) else signal.SIGINT
        print(f"error: stopped by {signal.Signals(signum).name}: no dataset was written or replaced (a generator "
              "that stages its episodes, Memory Maze's and ViZDoom's, goes on from them when run again with the "
              "same arguments)", file=sys.stderr)
        return 128 + signum
    finally:
        if handles:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    print(f"{ds.spec.dataset_id}: {ds.total_episodes} episodes, {ds.total_steps} steps")
    return 0
