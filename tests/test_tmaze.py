"""T-Maze dynamics, reward, oracle and the Minari dataset round trip."""

import subprocess
import sys

import gymnasium as gym
import minari
import numpy as np
import pytest

import rate_envs  # noqa: F401
from rate_envs.tmaze import DOWN, LEFT, RIGHT, UP, TMazeEnv, oracle_action
from rate_envs.tmaze_data import generate_tmaze_dataset


@pytest.fixture(autouse=True)
def minari_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))


def test_observation_carries_the_clue_only_first():
    env = TMazeEnv(corridor_length=3)
    obs, info = env.reset(seed=0, options={"goal": -1})
    assert obs[1] == -1 and obs[0] == 0 and obs[2] == 0 and info["goal"] == -1
    for _ in range(3):
        obs, *_ = env.step(RIGHT)
        assert obs[1] == 0
    assert obs[2] == 1  # junction flag
    assert env.observation_space.contains(obs)


def test_info_reports_the_clue_step_and_the_decision_at_the_junction():
    env = TMazeEnv(corridor_length=2)
    _, info = env.reset(seed=0)
    infos = [info] + [env.step(RIGHT)[4] for _ in range(2)]
    assert [i["cue_step"] for i in infos] == [0, 0, 0] and [i["decision"] for i in infos] == [False, False, True]


def test_noise_takes_all_three_values():
    env = TMazeEnv(corridor_length=50)
    env.reset(seed=0)
    noise = {env.step(RIGHT)[0][3] for _ in range(50)}
    assert noise == {-1.0, 0.0, 1.0}


def test_invalid_moves_stay_put_and_time_limit_truncates():
    env = TMazeEnv(corridor_length=2)
    env.reset(seed=0, options={"goal": 1})
    env.step(LEFT)  # wall at x = 0
    env.step(UP)  # no turn before the junction
    assert (env.x, env.y) == (0, 0)
    _, reward, terminated, truncated, info = env.step(RIGHT)  # t = 3 = L + 1
    assert (reward, terminated, truncated) == (0.0, False, False)
    _, reward, terminated, truncated, info = env.step(RIGHT)  # t = 4 = L + 2: timeout
    assert truncated and not terminated and reward == 0.0 and info["success"] is False


@pytest.mark.parametrize("goal, action, reward", [(1, UP, 1.0), (1, DOWN, 0.0), (-1, DOWN, 1.0), (-1, UP, 0.0)])
def test_reward_only_for_turning_to_the_clue(goal, action, reward):
    env = TMazeEnv(corridor_length=4)
    env.reset(seed=1, options={"goal": goal})
    for _ in range(4):
        env.step(RIGHT)
    _, r, terminated, truncated, info = env.step(action)
    assert r == reward and terminated and not truncated and info["success"] == (reward == 1.0)


@pytest.mark.parametrize("length", [1, 2, 7, 88, 1000])
def test_oracle_always_succeeds_within_l_plus_2(length):
    env = gym.make("rate/TMaze-v0", corridor_length=length)
    for seed in range(6):
        env.reset(seed=seed)
        steps, done = 0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(oracle_action(env.unwrapped))
            steps += 1
            done = terminated or truncated
        assert terminated and reward == 1.0 and steps == length + 1


def test_bad_actions_and_options_are_refused():
    env = TMazeEnv()
    with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\)"):  # (no cue shown yet)
        env.step(UP)
    with pytest.raises(ValueError, match="corridor_length must be a whole number, got None"):
        env.reset(options={"corridor_length": None})
    with pytest.raises(ValueError, match="corridor_length must be a whole number, got 2.5"):  # (not cut to 2)
        TMazeEnv(corridor_length=2.5)
    with pytest.raises(ValueError, match=r"episode_length must be a whole number, got '12'"):
        TMazeEnv(episode_length="12")
    assert TMazeEnv(corridor_length=np.int64(7)).corridor_length == 7
    env.reset(seed=0)
    with pytest.raises(ValueError, match="invalid T-Maze action"):
        env.step(7)
    with pytest.raises(ValueError, match="goal must be"):
        env.reset(options={"goal": 0})
    with pytest.raises(ValueError, match="corridor_length"):
        TMazeEnv(corridor_length=0)


def test_dataset_round_trip_and_environment_recovery():
    ds = generate_tmaze_dataset(horizon=12, episodes=20, seed=3)
    again = minari.load_dataset("rate/tmaze/oracle-T12-v0")
    assert again.total_episodes == 20
    lengths = []
    for ep in again.iterate_episodes():
        assert ep.rewards.sum() == 1.0 and ep.terminations[-1] and ep.observations.shape == (len(ep.actions) + 1, 4)
        assert ep.observations[0, 1] in (-1.0, 1.0) and (ep.observations[1:, 1] == 0).all()
        assert (ep.actions[-1] == UP) == (ep.observations[0, 1] == 1.0)
        lengths.append(len(ep.actions) - 1)  # corridor length L = steps - 1
    assert min(lengths) >= 1 and max(lengths) <= 10
    assert ds.observation_space == gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    env = again.recover_environment()
    assert env.unwrapped.__class__.__name__ == "TMazeEnv"
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4,)
    # Every episode replays from its seed and the reset options stored as its infos (noise included).
    for ep in again.iterate_episodes():
        assert set(ep.infos) == {"corridor_length", "goal"} and len(ep.infos["goal"]) == len(ep.observations)
        (meta,) = again.storage.get_episode_metadata([ep.id])
        obs, _ = env.reset(seed=int(meta["seed"]), options={k: int(v[0]) for k, v in ep.infos.items()})
        replayed = [obs] + [env.step(int(a))[0] for a in ep.actions]
        np.testing.assert_array_equal(np.stack(replayed), ep.observations)


def test_dataset_is_reproducible_and_not_silently_overwritten():
    a = generate_tmaze_dataset(horizon=10, episodes=6, seed=1, dataset_id="rate/tmaze/a-v0")
    b = generate_tmaze_dataset(horizon=10, episodes=6, seed=1, dataset_id="rate/tmaze/b-v0")
    assert a.total_episodes == b.total_episodes == 6
    for ea, eb in zip(a.iterate_episodes(), b.iterate_episodes(), strict=True):
        assert np.array_equal(ea.observations, eb.observations) and np.array_equal(ea.actions, eb.actions)
    with pytest.raises(FileExistsError, match="already exists"):
        generate_tmaze_dataset(horizon=10, episodes=6, seed=1, dataset_id="rate/tmaze/a-v0")


def test_recovery_works_in_a_fresh_process(tmp_path):
    generate_tmaze_dataset(horizon=8, episodes=4, seed=0)
    code = "import minari; env = minari.load_dataset('rate/tmaze/oracle-T8-v0').recover_environment(); print(env.reset(seed=0)[0].shape)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "(4,)" in proc.stdout
