"""MiniGrid-Memory: partial view, oracle, Minari round trip, a tiny learning run."""

import gymnasium as gym
import minari
import numpy as np
import pytest
import torch
from minigrid.core.constants import OBJECT_TO_IDX

import rate_envs  # noqa: F401
from rate_envs.minigrid_data import generate_minigrid_dataset
from rate_envs.minigrid_memory import FORWARD, MemoryOracle, MiniGridMemoryEnv

CUE_IDS = [OBJECT_TO_IDX["key"], OBJECT_TO_IDX["ball"]]


@pytest.fixture(autouse=True)
def minari_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))


def run_oracle(env, seed):
    obs, _ = env.reset(seed=seed)
    oracle, done, observations, reward = MemoryOracle(), False, [obs], 0.0
    while not done:
        obs, reward, terminated, truncated, _ = env.step(oracle(env.unwrapped))
        observations.append(obs)
        done = terminated or truncated
    return reward, observations


@pytest.mark.parametrize("size", [9, 13, 41])
def test_oracle_always_succeeds_and_sees_the_cue(size):
    env = MiniGridMemoryEnv(size=size)
    for seed in range(15):
        reward, observations = run_oracle(env, seed)
        assert reward > 0
        # The cue (key or ball) is in view at some step while the agent is still in the room.
        views = [o.reshape(3, 3, 3)[..., 0] for o in observations]
        assert any(np.isin(v, CUE_IDS).any() for v in views[: len(views) // 2 + 2])


def test_success_reward_pays_one_where_the_timed_reward_pays_by_length():
    timed, success = MiniGridMemoryEnv(size=9), MiniGridMemoryEnv(size=9, reward="success")
    for seed in range(5):
        t_reward, t_obs = run_oracle(timed, seed)
        s_reward, s_obs = run_oracle(success, seed)
        assert 0 < t_reward < 1 and s_reward == 1.0
        assert all(np.array_equal(a, b) for a, b in zip(t_obs, s_obs))  # the same episode
    with pytest.raises(ValueError, match="reward must be one of"):
        MiniGridMemoryEnv(reward="dense")
    # The dataset's id names the reward, and its returns are all 1: no return-to-go tells the side.
    ds = generate_minigrid_dataset(size=9, episodes=10, seed=0, noise=0.2, reward="success")
    assert ds.spec.dataset_id == "rate/minigrid-memory/oracle-S9-symbolic-success-v0"
    assert all(float(ep.rewards.sum()) == 1.0 for ep in ds.iterate_episodes())
    assert ds.recover_environment().get_wrapper_attr("reward_kind") == "success"


@pytest.mark.parametrize("observation, shape", [("symbolic", (27,)), ("onehot", (180,)), ("rgb", (3, 36, 36))])
def test_observation_is_the_egocentric_window_whatever_the_grid_size(observation, shape):
    for size in (9, 41):
        env = MiniGridMemoryEnv(size=size, observation=observation, tile_size=12)
        obs, _ = env.reset(seed=0)
        assert obs.shape == shape == env.observation_space.shape and env.observation_space.contains(obs)


def test_the_view_never_shows_the_whole_grid():
    """The symbolic observation is MiniGrid's egocentric window (7 x 7 here) of a 13 x 13 grid."""
    env = MiniGridMemoryEnv(size=13, view_size=7)
    obs, _ = env.reset(seed=1)
    window = env.unwrapped.gen_obs()["image"]
    assert window.shape == (7, 7, 3) and np.array_equal(obs, window.reshape(-1).astype(np.float32))
    assert obs.size < env.unwrapped.grid.encode().size


def test_wrong_object_ends_the_episode_without_reward():
    env = MiniGridMemoryEnv(size=9)
    env.reset(seed=0)
    inner = env.unwrapped
    inner.agent_pos = np.array((inner.failure_pos[0], inner.height // 2))
    inner.agent_dir = 3 if inner.failure_pos[1] < inner.height // 2 else 1
    _, reward, terminated, _, info = env.step(FORWARD)
    assert terminated and reward == 0 and info["success"] is False


def test_bad_arguments_and_actions_are_refused():
    with pytest.raises(ValueError, match="odd and >= 9"):
        MiniGridMemoryEnv(size=10)
    with pytest.raises(ValueError, match="view_size"):
        MiniGridMemoryEnv(view_size=4)
    with pytest.raises(ValueError, match="observation must be one of"):
        MiniGridMemoryEnv(observation="full")
    with pytest.raises(ValueError, match="max_steps must be positive"):  # (0 was read as the default)
        MiniGridMemoryEnv(max_steps=0)
    env = MiniGridMemoryEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="invalid MiniGrid-Memory action 3"):
        env.step(3)


def test_dataset_round_trip_holds_detours_and_recovers_the_environment():
    generate_minigrid_dataset(size=9, episodes=30, seed=0, noise=0.3)
    ds = minari.load_dataset("rate/minigrid-memory/oracle-S9-symbolic-v0")
    lengths = []
    for ep in ds.iterate_episodes():
        assert ep.rewards.sum() > 0 and ep.terminations[-1] and ep.observations.shape[1:] == (27,)
        lengths.append(len(ep.actions))
    clean = generate_minigrid_dataset(size=9, episodes=30, seed=0, noise=0.0, dataset_id="rate/mg/clean-v0")
    clean_lengths = [len(ep.actions) for ep in clean.iterate_episodes()]
    assert sum(lengths) > sum(clean_lengths)  # random actions add detours
    env = ds.recover_environment()
    assert env.spec.id == "rate/MiniGridMemory-v0" and env.observation_space.shape == (27,)
    assert gym.make("rate/MiniGridMemory-v0", size=41).observation_space.shape == (27,)
    # No tile size recorded for a view without pixels: the evaluation's default is no difference
    # (every shipped MiniGrid run warned "recorded with tile_size=12 ... evaluated with 28").
    from rate.config import from_dict
    from rate.rl.experiment import RATEExperimentConfig, eval_env_differences

    assert "tile_size" not in ds.spec.env_spec.kwargs
    ev = from_dict(RATEExperimentConfig, {"eval": {"env_id": "rate/MiniGridMemory-v0", "length_kwarg": "size"}}).eval
    assert eval_env_differences(ds.spec.env_spec, ev) == []


def test_a_size_mixture_draws_each_episode_from_one_of_the_sizes():
    """Episode i of a mixture is episode i of the one-size dataset of its drawn size (same seeds)."""
    mixed = generate_minigrid_dataset(size=[9, 11], episodes=10, seed=0, noise=0.0)
    assert mixed.spec.dataset_id == "rate/minigrid-memory/oracle-S9-11-symbolic-v0"
    single = {s: list(generate_minigrid_dataset(size=s, episodes=10, seed=0, noise=0.0).iterate_episodes())
              for s in (9, 11)}
    sources = []
    for i, ep in enumerate(mixed.iterate_episodes()):
        match = [s for s in (9, 11) if np.array_equal(ep.observations, single[s][i].observations)
                 and np.array_equal(ep.actions, single[s][i].actions)]
        assert len(match) >= 1
        sources.append(match)
    assert {m[0] for m in sources} == {9, 11}
    # Each episode replays from its seed and its size, recorded as the reset option "size", in
    # the environment the dataset recovers (made at the first size).
    env = mixed.recover_environment()
    sizes = []
    for ep in mixed.iterate_episodes():
        (meta,) = mixed.storage.get_episode_metadata([ep.id])
        options = {k: int(v[0]) for k, v in ep.infos.items()}
        sizes.append(options["size"])
        obs, _ = env.reset(seed=int(meta["seed"]), options=options)
        replayed = [obs] + [env.step(int(a))[0] for a in ep.actions]
        np.testing.assert_array_equal(np.stack(replayed), ep.observations)
        assert env.unwrapped.width == options["size"]
    assert set(sizes) == {9, 11} and all(size in match for size, match in zip(sizes, sources))
    with pytest.raises(ValueError, match="reset option size must be odd and >= 9, got 10"):
        env.reset(seed=0, options={"size": 10})
    with pytest.raises(ValueError, match="reset option size must be a whole number, got 10.5"):
        env.reset(seed=0, options={"size": 10.5})
    assert not single[9][0].infos  # (one size: no options recorded)
    with pytest.raises(ValueError, match="distinct"):
        generate_minigrid_dataset(size=[9, 9], episodes=2, seed=0)


@pytest.mark.slow
def test_tiny_rate_learns_to_walk_to_the_split_and_end_the_episode(tmp_path):
    """RATE trained on 9 x 9 grids (one-hot 3 x 3 view) learns the walk: room, hallway, split, and
    a step next to an object, ending the episode long before the time limit.

    Choosing the *matching* object is not learned at this size and budget: the decision compares
    the object seen at the split with the cue seen about ten steps earlier, and tiny models stayed
    at the 0.5 of always picking one side (2000 steps, 2 or 3 layers: 0.475).  That part of the
    task is measured by the results runs, not asserted here."""
    from rate.config import from_dict
    from rate.rl.experiment import RATEExperimentConfig, make_policy
    from rate.rl.rollout import rollout
    from rate.rl.trainer import train

    generate_minigrid_dataset(size=9, episodes=200, seed=0, noise=0.1, observation="onehot")
    cfg = from_dict(RATEExperimentConfig, {
        "dataset_id": "rate/minigrid-memory/oracle-S9-onehot-v0",
        "model": {"segment_steps": 8, "num_segments": 4, "obs_shape": [180], "act_dim": 3,
                  "backbone": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_head": 16, "d_inner": 32,
                               "use_ffn": False, "num_mem_tokens": 4, "memory_update": "rmt"}},
        "eval": {"env_id": "rate/MiniGridMemory-v0", "length_kwarg": "size", "env_kwargs": {"observation": "onehot"},
                 "lengths": [9], "episodes": 20, "target_return": 0.6},
        "train": {"steps": 200, "batch_size": 32, "lr": 0.003, "warmup_steps": 10, "eval_every": 200, "threads": 1},
    })
    model, _ = train(cfg, tmp_path / "run", progress=False)
    out = rollout(lambda: gym.make("rate/MiniGridMemory-v0", size=9, observation="onehot"),
                  make_policy(model.eval(), cfg), 40, seed=100)
    assert (out["lengths"] < 45).mean() >= 0.9, out["lengths"]  # 45 = the time limit at size 9
    assert out["lengths"].max() <= 30  # the oracle needs at most about 20 steps here


def test_rgb_variant_trains_through_the_cnn_encoder(tmp_path, monkeypatch):
    """The RGB dataset (3 x 36 x 36 pixels a step) feeds the Nature-DQN encoder end to end:
    three training steps (the trainer stops at a non-finite loss) that change every convolution,
    and a rollout of both episodes on a larger grid than the data's."""
    import rate.rl.trainer
    from rate.config import from_dict
    from rate.rl.experiment import RATEExperimentConfig
    from rate.rl.trainer import train

    initial, build = {}, rate.rl.trainer.build_rate

    def recorded(cfg, episodes):
        model = build(cfg, episodes)
        initial.update({k: v.clone() for k, v in model.state_dict().items() if k.startswith("encoders.obs_enc")})
        return model

    monkeypatch.setattr(rate.rl.trainer, "build_rate", recorded)

    generate_minigrid_dataset(size=9, episodes=8, seed=0, observation="rgb", tile_size=12)
    cfg = from_dict(RATEExperimentConfig, {
        "dataset_id": "rate/minigrid-memory/oracle-S9-rgb-v0",
        "model": {"segment_steps": 8, "num_segments": 2, "obs_shape": [3, 36, 36], "obs_kind": "image",
                  "act_dim": 3, "backbone": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_head": 16,
                                             "num_mem_tokens": 2, "memory_update": "mrv", "mrv_heads": 2}},
        "eval": {"env_id": "rate/MiniGridMemory-v0", "length_kwarg": "size",
                 "env_kwargs": {"observation": "rgb", "tile_size": 12}, "lengths": [11], "episodes": 2},
        "train": {"steps": 3, "batch_size": 4, "lr": 0.001, "warmup_steps": 1, "eval_every": 3, "threads": 1},
    })
    model, metrics = train(cfg, tmp_path / "run", progress=False)
    assert metrics["steps"] == 3
    convs = [k for k, v in initial.items() if v.dim() == 4]  # (out, in, kh, kw): the three convolutions
    assert len(convs) == 3
    for name in convs:
        assert not torch.equal(model.state_dict()[name], initial[name]), f"{name} did not train"
    # 2 episodes: a success rate in halves (the rollout ran both episodes to an outcome)
    assert metrics["eval"][11]["success"] in (0.0, 0.5, 1.0)


def test_info_reports_where_the_cue_was_last_seen_and_the_decision():
    """The oracle last sees the cue size - 2 steps before it faces the first object at the split."""
    turned_back = 0
    for size, seed in ((13, 3), (21, 3), (13, 0), (13, 1), (13, 5)):  # seed 5 steps to the upper object
        env = gym.make("rate/MiniGridMemory-v0", size=size)
        oracle = MemoryOracle()
        _, info = env.reset(seed=seed)
        infos, actions, done = [info], [], False
        assert info["cue_step"] == -1 and not info["decision"]
        while not done:
            actions.append(oracle(env.unwrapped))
            _, _, terminated, truncated, info = env.step(actions[-1])
            infos.append(info)
            done = terminated or truncated
        decisions = [t for t, i in enumerate(infos) if i["decision"]]
        # One decision, facing the upper object; not the step facing the lower one after turning back.
        assert len(decisions) == 1 and decisions[0] - infos[decisions[0]]["cue_step"] == size - 2
        turned_back += actions[decisions[0]] != 2  # a turn, not the step to the upper object
    assert 0 < turned_back < 5  # both kinds of episode were checked


def test_an_unseeded_reset_to_another_size_goes_on_with_the_seeded_stream():
    """reset(seed=s), then reset(options={"size": n}) without a seed: the same episode on every
    instance (the new grid took fresh entropy before), and the environment keeps its spec."""
    starts = []
    for _ in range(3):
        env = gym.make("rate/MiniGridMemory-v0", size=13)
        env.reset(seed=0)
        env.reset(options={"size": 15})
        grid = env.unwrapped
        starts.append((tuple(int(v) for v in grid.agent_pos), tuple(int(v) for v in grid.success_pos)))
        assert env.unwrapped.spec is not None and env.unwrapped.spec.id == "rate/MiniGridMemory-v0"
        env.close()
    assert starts[0] == starts[1] == starts[2]
