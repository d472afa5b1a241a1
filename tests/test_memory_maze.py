"""Memory Maze: the Gymnasium wrapper, partial observability, the oracle, the Minari round trip and a
tiny learning run.  Everything that renders skips, with the reason, where no OpenGL backend works."""

import functools
from pathlib import Path

import gymnasium as gym
import h5py
import minari
import numpy as np
import pytest

import rate_envs  # noqa: F401
from rate_envs.memory_maze import FORWARD, PRIVILEGED_KEYS, MemoryMazeEnv, cell_of, shortest_path
from rate_envs.memory_maze import rendering_available


@functools.cache
def _rendering() -> tuple[bool, str]:
    return rendering_available()


@pytest.fixture
def renders():
    ok, why = _rendering()
    if not ok:
        pytest.skip(f"Memory Maze does not render here: {why}")


@pytest.fixture(autouse=True)
def minari_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))


def test_shortest_path_on_a_grid():
    layout = np.array([[1, 1, 1],
                       [0, 0, 1],
                       [1, 1, 1]], dtype=np.uint8)  # [y, x]
    assert shortest_path(layout, (0, 0), (0, 2)) == [(0, 0), (1, 0), (2, 0), (2, 1), (2, 2), (1, 2), (0, 2)]
    assert shortest_path(layout, (1, 0), (1, 0)) == [(1, 0)]
    layout[1, 2] = 0
    assert shortest_path(layout, (0, 0), (0, 2)) is None
    assert cell_of(np.array([2.7, 0.2])) == (2, 0)


def test_without_a_working_gl_backend_the_generator_says_what_to_install(tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, MUJOCO_GL="osmesa-typo", MINARI_DATASETS_PATH=str(tmp_path / "minari"))
    done = subprocess.run([sys.executable, "-m", "envs.memory_maze_data", "--episodes", "1", "--episode-length", "5"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=Path(__file__).parents[1])
    assert done.returncode == 2
    assert done.stderr.startswith("error: Memory Maze cannot render with MUJOCO_GL=osmesa-typo") and "apt-get" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "minari").exists()


def test_bad_arguments_are_refused_before_anything_renders():
    with pytest.raises(ValueError, match="sizes are"):
        MemoryMazeEnv(size=10)
    with pytest.raises(ValueError, match="episode_length"):
        MemoryMazeEnv(episode_length=0)


@pytest.mark.slow
def test_the_agent_sees_only_the_image_and_the_target_colour(renders):
    env = gym.make("rate/MemoryMaze-9x9-v0", episode_length=3)
    assert env.observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert env.action_space == gym.spaces.Discrete(6)
    obs, info = env.reset(seed=0)
    for action in (2.7, 6, "2"):  # not an action id: refused, not truncated or converted
        with pytest.raises(ValueError, match="Memory Maze actions are 0..5"):
            env.unwrapped.step(action)
    assert isinstance(obs, np.ndarray) and obs.shape == (64, 64, 3) and set(info) == {"targets"}
    state = env.unwrapped.privileged_state()
    assert set(state) == set(PRIVILEGED_KEYS)
    # The border shows the target colour (the package paints it at 70 % intensity).
    np.testing.assert_allclose(obs[0, 32], state["target_color"] * 255 * 0.7, atol=1)
    flags = []
    for _ in range(3):
        _, _, terminated, truncated, info = env.step(FORWARD)
        assert set(info) == {"targets"}
        flags.append((terminated, truncated))
    assert flags == [(False, False), (False, False), (False, True)]  # truncated at episode_length
    env.close()


@pytest.mark.slow
def test_a_reset_failure_is_called_a_rendering_problem_only_when_nothing_renders(renders, monkeypatch):
    import rate_envs.memory_maze as module

    env = MemoryMazeEnv(episode_length=3)
    env.reset(seed=0)

    def broken():
        raise ValueError("not a GL problem")

    monkeypatch.setattr(env._dm_env, "reset", broken)
    with pytest.raises(ValueError, match="not a GL problem"):  # rendering works: the error is the task's
        env.reset()
    monkeypatch.setattr(module, "rendering_available", lambda: (False, "no OpenGL backend here"))
    with pytest.raises(module.RenderingUnavailable, match="no OpenGL backend here"):
        env.reset()
    # Building a new maze (a seeded reset) renders a first frame: its failure is reported alike.
    monkeypatch.setattr(env, "_build", lambda seed: broken())
    with pytest.raises(module.RenderingUnavailable, match="no OpenGL backend here"):
        env.reset(seed=1)
    env.close()


def _episode_seeds(dataset) -> list[int]:
    """The reset seed of every episode (Minari's HDF5 layout keeps it as an attribute of the
    episode's group)."""
    with h5py.File(dataset.storage.data_path / "main_data.hdf5") as f:
        return [int(f[f"episode_{i}"].attrs["seed"]) for i in range(dataset.total_episodes)]


def _play(env, seed, act):
    obs, _ = env.reset(seed=seed)
    frames, total, done = [obs], 0.0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(act())
        frames.append(obs)
        total += reward
        done = terminated or truncated
    assert info["targets"] == total and truncated and not terminated
    return np.stack(frames), total


@pytest.mark.slow
def test_oracle_data_replays_from_its_seed_and_random_actions_reach_fewer_targets(renders):
    """One oracle episode through the generator: it reaches targets, Minari stores its frames as
    rendered and recovers the environment, which replays the episode bit for bit from its seed
    (determinism); random actions in the same maze reach fewer targets; another seed is another
    maze."""
    from rate_envs.memory_maze_data import generate_memory_maze_dataset

    ds = generate_memory_maze_dataset(episodes=1, episode_length=50, seed=1, noise=0.0, progress=False)
    loaded = minari.load_dataset(ds.spec.dataset_id)
    episode = next(loaded.iterate_episodes())
    assert episode.observations.shape == (51, 64, 64, 3) and episode.observations.dtype == np.uint8
    oracle_targets = float(episode.rewards.sum())
    assert oracle_targets >= 1  # the oracle collected 8-14 targets in 500 steps (3 mazes)
    env = loaded.recover_environment()
    assert env.spec.id == "rate/MemoryMaze-9x9-v0" and env.spec.kwargs["episode_length"] == 50
    seed = _episode_seeds(loaded)[episode.id]
    actions = iter(episode.actions)
    frames, total = _play(env, seed, lambda: int(next(actions)))
    np.testing.assert_array_equal(frames, episode.observations)
    assert total == oracle_targets
    rng = np.random.default_rng(0)
    _, random_targets = _play(env, seed, lambda: int(rng.integers(6)))
    assert random_targets < oracle_targets
    other, _ = env.reset(seed=seed + 1)
    assert not np.array_equal(other, episode.observations[0])
    env.close()


def _path_cells(env) -> int:
    state = env.unwrapped.privileged_state()
    return len(shortest_path(state["maze_layout"], cell_of(state["agent_pos"]), cell_of(state["target_pos"]))) - 1


def _progress(policy, seeds, steps: int) -> float:
    """Cells of shortest path to the target walked off per step (a reached target counts its whole
    path; a policy that wanders scores about 0, the oracle about 0.2)."""
    env = gym.make("rate/MemoryMaze-9x9-v0", episode_length=steps)
    total = 0
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        policy.reset(1)
        before, reward, done = _path_cells(env), None, False
        while not done:
            obs, r, terminated, truncated, _ = env.step(int(policy.act(obs[None], reward)[0]))
            reward, done = np.array([r], dtype=np.float32), terminated or truncated
            after = _path_cells(env)
            total += before if r > 0 else before - after  # after a target: the distance to the next one
            before = after
    env.close()
    return total / (len(seeds) * steps)


@pytest.mark.slow
def test_tiny_rate_learns_to_walk_toward_the_target(renders, tmp_path):
    """RATE with the image encoder, trained on a few oracle episodes, walks toward the target in
    their mazes: the path to it shrinks faster than under the same model untrained.  (Two mazes
    teach the layouts they show, not yet new ones: generalising is what the results runs measure.)"""
    import torch
    from rate_envs.memory_maze_data import generate_memory_maze_dataset

    from rate.rl.experiment import build_rate, make_policy
    from rate.rl.trainer import train
    from tests.tiny_image import tiny_image_rate

    ds = generate_memory_maze_dataset(episodes=2, episode_length=40, seed=0, noise=0.1, progress=False)
    seeds = _episode_seeds(ds)
    cfg = tiny_image_rate(ds.spec.dataset_id, "rate/MemoryMaze-9x9-v0", [64, 64, 3], 6, target_return=2.0)
    torch.manual_seed(0)
    untrained = _progress(make_policy(build_rate(cfg).eval(), cfg), seeds, steps=40)
    model, _ = train(cfg, tmp_path / "run", progress=False)
    trained = _progress(make_policy(model.eval(), cfg), seeds, steps=40)
    assert trained > untrained + 0.05, (trained, untrained)  # 0.15 against 0.00 measured
