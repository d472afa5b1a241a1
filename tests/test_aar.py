"""Action Associative Retrieval: dynamics, reward, oracle, Minari round trip, a tiny learning run."""

import gymnasium as gym
import minari
import numpy as np
import pytest

import rate_envs  # noqa: F401
from rate_envs.aar import NOOP, ActionAssociativeRetrievalEnv, oracle_action
from rate_envs.aar_data import generate_aar_dataset


@pytest.fixture(autouse=True)
def minari_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))


def play(env, actions):
    env.reset(seed=0)
    out = None
    for a in actions:
        out = env.step(a)
    return out


@pytest.mark.parametrize("first, last, reward", [(0, 0, 1.0), (1, 1, 1.0), (0, 1, 0.0), (1, 0, 0.0),
                                                 (NOOP, NOOP, 0.0), (1, NOOP, 0.0)])
def test_reward_only_for_repeating_the_first_action_at_the_recall_step(first, last, reward):
    env = ActionAssociativeRetrievalEnv(episode_length=6)
    _, r, terminated, truncated, info = play(env, [first, 0, 1, NOOP, 1, last])  # middle actions change nothing
    assert (r, terminated, truncated, info["success"]) == (reward, True, False, reward > 0)


def test_observations_never_reveal_the_first_action():
    trajectories = []
    for first in (0, 1):
        env = ActionAssociativeRetrievalEnv(episode_length=5)
        obs, _ = env.reset(seed=3)
        seen = [obs]
        for a in [first, NOOP, NOOP, NOOP]:
            seen.append(env.step(a)[0])
        trajectories.append(np.stack(seen))
    assert np.array_equal(trajectories[0], trajectories[1])
    flags = trajectories[0][:, :2]
    assert flags[0].tolist() == [1.0, 0.0] and flags[4].tolist() == [0.0, 1.0] and not flags[1:4].any()


@pytest.mark.parametrize("length", [2, 3, 90, 900])
def test_oracle_always_succeeds(length):
    env = gym.make("rate/AAR-v0", episode_length=length)
    for choice in (0, 1):
        env.reset(seed=choice)
        done, steps, reward = False, 0, 0.0
        while not done:
            _, reward, terminated, truncated, _ = env.step(oracle_action(env.unwrapped, choice))
            done, steps = terminated or truncated, steps + 1
        assert reward == 1.0 and steps == length


def test_info_puts_the_cue_at_the_first_step_and_the_decision_at_the_recall():
    env = ActionAssociativeRetrievalEnv(episode_length=4)
    _, info = env.reset(seed=0)
    infos = [info] + [env.step(a)[4] for a in (1, NOOP, NOOP)]  # the last info follows the episode's end
    assert [i["cue_step"] for i in infos] == [0, 0, 0, 0]
    assert [i["decision"] for i in infos] == [False, False, False, True]


def test_bad_actions_and_lengths_are_refused():
    with pytest.raises(ValueError, match="episode_length must be >= 2"):
        ActionAssociativeRetrievalEnv(episode_length=1)
    with pytest.raises(ValueError, match=r"episode_length must be a whole number, got 9.5"):  # (not cut to 9)
        ActionAssociativeRetrievalEnv(episode_length=9.5)
    env = ActionAssociativeRetrievalEnv()
    with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\)"):  # (no episode, no cue yet)
        env.step(0)
    with pytest.raises(ValueError, match="episode_length must be a whole number, got None"):
        env.reset(options={"episode_length": None})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="invalid AAR action 3"):
        env.step(3)
    env.step(0)
    with pytest.raises(ValueError, match="episode_length must be >= 2"):
        env.reset(options={"episode_length": 0})
    # The refused reset changed nothing: the episode goes on at its own length and step.
    assert env.episode_length == env.default_length and env.t == 1


def test_dataset_round_trip_noise_and_environment_recovery():
    ds = generate_aar_dataset(length=10, episodes=40, seed=2, noise=0.5)
    again = minari.load_dataset("rate/aar/oracle-T10-v0")
    firsts, middles = [], []
    for ep in again.iterate_episodes():
        assert len(ep.actions) == 10 and ep.rewards.sum() == 1.0 and ep.terminations[-1]
        assert ep.actions[-1] == ep.actions[0]
        firsts.append(int(ep.actions[0]))
        middles += ep.actions[1:-1].tolist()
    assert sorted(set(firsts)) == [0, 1] and firsts.count(0) == 20
    assert set(middles) == {0, 1, 2} and 0.2 < np.mean(np.array(middles) != NOOP) < 0.5  # 1/2 noisy, 2/3 of those not no-op
    assert ds.action_space == gym.spaces.Discrete(3)
    env = again.recover_environment()
    assert env.unwrapped.__class__.__name__ == "ActionAssociativeRetrievalEnv"
    with pytest.raises(FileExistsError, match="already exists"):
        generate_aar_dataset(length=10, episodes=40, seed=2)


def test_mixed_lengths_cover_the_range_and_every_episode_recalls_its_first_action():
    generate_aar_dataset(length=12, episodes=60, seed=0, noise=0.1, min_length=3)
    lengths = []
    for ep in minari.load_dataset("rate/aar/oracle-T3to12-v0").iterate_episodes():
        lengths.append(len(ep.actions))
        assert ep.rewards.sum() == 1.0 and ep.actions[-1] == ep.actions[0]
        assert (ep.infos["episode_length"] == len(ep.actions)).all()  # the reset option it replays with
    assert min(lengths) == 3 and max(lengths) == 12 and len(set(lengths)) == 10
    with pytest.raises(ValueError, match="min_length must be in 2 .. length = 12"):
        generate_aar_dataset(length=12, episodes=4, seed=0, min_length=13)


@pytest.mark.slow
def test_tiny_rmt_learns_to_recall_its_own_action_beyond_the_training_length(tmp_path):
    """The memory-token decoder trained on T = 12 (3 segments of 4 steps) repeats its first action
    at T = 12 and, with the memory carried further, at T = 24: the answer lives only in the first
    action token.  Actions are sampled: with argmax a policy that always chooses and answers the
    same action succeeds without memory, while sampled it scores 0.5 (the data chooses 0 and 1
    equally often).  (The RMT update rule: at this size the valve did not learn the task in 600
    steps, 0.4 to 0.55 at T = 12, while it learns the tiny T-Maze in 200.)"""
    from rate.config import from_dict
    from rate.rl.experiment import RATEExperimentConfig
    from rate.rl.trainer import train

    generate_aar_dataset(length=12, episodes=200, seed=0)
    cfg = from_dict(RATEExperimentConfig, {
        "dataset_id": "rate/aar/oracle-T12-v0",
        "model": {"segment_steps": 4, "num_segments": 3, "obs_shape": [3], "act_dim": 3,
                  "backbone": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_head": 16, "d_inner": 32,
                               "use_ffn": False, "num_mem_tokens": 4, "memory_update": "rmt"}},
        "eval": {"env_id": "rate/AAR-v0", "lengths": [12, 24], "episodes": 100, "sample": True},
        "train": {"steps": 600, "batch_size": 32, "lr": 0.003, "warmup_steps": 10, "eval_every": 600, "threads": 1},
    })
    _, metrics = train(cfg, tmp_path / "run", progress=False)
    assert metrics["eval"][12]["success"] >= 0.95, metrics
    assert metrics["eval"][24]["success"] >= 0.85, metrics


def test_a_relative_minari_root_works(tmp_path, monkeypatch):
    """MINARI_DATASETS_PATH=data/minari (as the README writes it): Minari 0.5 alone fails on a
    relative root when it writes; the generators resolve it first."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINARI_DATASETS_PATH", "rel/minari")
    generate_aar_dataset(length=4, episodes=2, seed=0)
    assert (tmp_path / "rel/minari/rate/aar/oracle-T4-v0/data/main_data.hdf5").is_file()
