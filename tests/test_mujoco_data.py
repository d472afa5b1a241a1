"""MuJoCo offline data made here: ARS learns, the dataset round-trips through Minari, it is a pure
function of its arguments, and bad arguments fail fast with one clear error."""

import minari
import numpy as np
import pytest

from rate_envs.mujoco_data import (ARSConfig, RunningStats, default_dataset_id, generate_mujoco_dataset, main,
                              random_policy_return, snapshot_iterations, train_ars)

ENV = "HalfCheetah-v5"
TINY = ARSConfig(iterations=3, directions=4, top=2)  # the data tests need a policy, not a good one


@pytest.fixture(autouse=True)
def minari_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))


def tiny_dataset(dataset_id="test/mujoco/cheetah-v0", **kwargs):
    args = dict(env_id=ENV, episodes=6, seed=0, action_noise=0.1, config=TINY, snapshots=3, episode_steps=30,
                dataset_id=dataset_id, progress=False)
    return generate_mujoco_dataset(**{**args, **kwargs})


@pytest.mark.slow
def test_ars_improves_the_return_on_short_episodes():
    result = train_ars(ENV, ARSConfig(iterations=10), np.random.default_rng(0), episode_steps=100,
                       snapshots=5, progress=False)
    assert [s.iteration for s in result.snapshots] == [2, 4, 6, 8, 10]
    assert len(result.returns) == 10
    first, last = result.snapshots[0].eval_return, result.snapshots[-1].eval_return
    assert last > first + 30, [s.eval_return for s in result.snapshots]  # measured: 0.2 -> 74
    assert result.returns[-1] > result.returns[0] + 15, result.returns


def test_the_number_of_workers_changes_nothing():
    runs = [train_ars(ENV, ARSConfig(iterations=3, directions=4, top=2), np.random.default_rng(1), episode_steps=20,
                      snapshots=1, workers=w, progress=False) for w in (1, 2)]
    assert runs[0].returns == runs[1].returns
    a, b = (r.snapshots[-1].policy for r in runs)
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.std, b.std)


def test_snapshot_iterations_are_even_and_end_at_the_last():
    assert snapshot_iterations(100, 5) == [20, 40, 60, 80, 100]
    assert snapshot_iterations(3, 5) == [1, 2, 3]  # fewer iterations than snapshots: no duplicates
    assert snapshot_iterations(3, 10) == [1, 2, 3]  # (no iteration 0: training's first is 1)
    assert snapshot_iterations(7, 1) == [7]


def test_running_stats_match_numpy_over_all_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 4)) for n in (1, 7, 50)]
    stats = RunningStats.empty(4)
    for batch in batches:
        stats.merge(RunningStats.of(batch))
    everything = np.concatenate(batches)
    np.testing.assert_allclose(stats.mean, everything.mean(0))
    np.testing.assert_allclose(stats.std(), everything.std(0))
    assert (RunningStats.empty(4).std() == 1.0).all()  # no data yet: observations pass unscaled


def test_dataset_round_trip_and_environment_recovery():
    tiny_dataset()
    ds = minari.load_dataset("test/mujoco/cheetah-v0")
    assert ds.total_episodes == 6 and ds.total_steps == 6 * 30
    low, high = ds.action_space.low, ds.action_space.high
    for ep in ds.iterate_episodes():
        assert ep.observations.shape == (31, 17) and ep.actions.shape == (30, 6) and ep.rewards.shape == (30,)
        assert ep.actions.dtype == np.float32 and (ep.actions >= low).all() and (ep.actions <= high).all()
        assert ep.truncations[-1] and not ep.terminations.any()  # HalfCheetah only ends at the time limit
    env = ds.recover_environment()
    assert env.spec.id == ENV and env.spec.max_episode_steps == 30

    record = ds.storage.metadata["generation"]
    returns = [float(ep.rewards.sum()) for ep in ds.iterate_episodes()]
    assert record["returns"]["min"] == pytest.approx(min(returns))
    assert record["returns"]["mean"] == pytest.approx(np.mean(returns))
    assert record["returns"]["max"] == pytest.approx(max(returns))
    assert [s["iteration"] for s in record["snapshots"]] == [1, 2, 3]
    assert [s["episodes"] for s in record["snapshots"]] == [2, 2, 2]
    assert record["ars"] == {"algorithm": "ARS V2-t", "iterations": 3, "directions": 4, "top": 2, "step_size": 0.02,
                             "noise": 0.03}
    assert len(record["ars_mean_returns"]) == 3 and record["seed"] == 0 and record["action_noise"] == 0.1
    assert ds.storage.metadata["ref_min_score"] == pytest.approx(record["random_policy_return"])
    assert ds.storage.metadata["ref_max_score"] == pytest.approx(max(s["eval_return"] for s in record["snapshots"]))


def test_same_arguments_same_data_and_another_seed_other_data():
    first, again = tiny_dataset("test/mujoco/a-v0"), tiny_dataset("test/mujoco/b-v0")
    other = tiny_dataset("test/mujoco/c-v0", seed=1)
    for ep_a, ep_b in zip(first.iterate_episodes(), again.iterate_episodes()):
        np.testing.assert_array_equal(ep_a.observations, ep_b.observations)
        np.testing.assert_array_equal(ep_a.actions, ep_b.actions)
        np.testing.assert_array_equal(ep_a.rewards, ep_b.rewards)
    assert not np.array_equal(first[0].actions, other[0].actions)


def test_an_existing_dataset_is_kept_unless_overwrite():
    tiny_dataset()
    with pytest.raises(FileExistsError, match="already exists"):
        tiny_dataset()
    assert tiny_dataset(overwrite=True, episodes=3).total_episodes == 3


def test_random_policy_return_is_a_seeded_low_reference():
    a = random_policy_return(ENV, episodes=2, seed=0, episode_steps=50)
    assert a == random_policy_return(ENV, episodes=2, seed=0, episode_steps=50)
    assert a < 0  # the control cost of uniform actions outweighs their aimless motion


@pytest.mark.parametrize("kwargs, pattern", [
    ({"episodes": 0}, "episodes must be >= 1, got 0"),
    ({"action_noise": -0.1}, "action_noise must be >= 0"),
    ({"action_noise": float("nan")}, "action_noise must be >= 0"),
    ({"snapshots": 0}, "snapshots must be >= 1"),
    ({"config": ARSConfig(iterations=0)}, "iterations must be >= 1, got 0"),
    ({"config": ARSConfig(directions=4, top=5)}, "top must be <= directions"),
    ({"config": ARSConfig(step_size=0.0)}, "step_size and noise must be > 0"),
    ({"episode_steps": 0}, "episode_steps must be >= 1"),
    ({"env_id": "CartPole-v1"}, "needs Box observation and action spaces"),
    ({"env_id": "NoSuchEnv-v0"}, "cannot make environment 'NoSuchEnv-v0'"),
    ({"dataset_id": "not a valid id"}, "malformed dataset id"),
])
def test_bad_arguments_raise_one_clear_error(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        tiny_dataset(**kwargs)


def test_cli_builds_a_tiny_dataset_and_refuses_bad_arguments(capsys):
    tiny = ["--episode-steps", "10", "--iterations", "2", "--directions", "2", "--top", "1", "--episodes", "2",
            "--snapshots", "2", "--workers", "1"]
    assert main(tiny) == 0
    out = capsys.readouterr().out
    assert f"{default_dataset_id(ENV)}: 2 episodes, 20 steps" in out and "uniformly random policy" in out
    assert default_dataset_id(ENV) == "rate/mujoco/halfcheetah-ars-v0"
    assert main(tiny + ["--action-noise", "-1"]) == 2
    assert "error: action_noise must be >= 0, got -1.0" in capsys.readouterr().err
    assert main(tiny) == 2  # exists already
    assert "already exists" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_rate_imitates_the_ars_policy_with_continuous_actions(tmp_path):
    """RATE with continuous actions (MSE, tanh head), normalised observations and scaled returns on
    a small HalfCheetah dataset of 100-step episodes: its rollouts close most of the gap between a
    random policy and the data."""
    from rate.config import from_dict
    from rate.rl.experiment import RATEExperimentConfig
    from rate.rl.trainer import train

    ds = generate_mujoco_dataset(episodes=20, seed=0, config=ARSConfig(iterations=12, directions=8, top=4),
                                 snapshots=2, episode_steps=100, dataset_id="rate/mujoco/tiny-v0", progress=False)
    generation = ds.storage.metadata["generation"]
    cfg = from_dict(RATEExperimentConfig, {
        "dataset_id": "rate/mujoco/tiny-v0",
        "model": {"segment_steps": 10, "num_segments": 2, "obs_shape": [17], "act_kind": "continuous", "act_dim": 6,
                  "rtg_scale": 100.0, "normalize_obs": True,
                  "backbone": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_head": 16, "d_inner": 32,
                               "use_ffn": False, "num_mem_tokens": 2, "memory_update": "rmt"}},
        "window_start": "random",
        "eval": {"env_id": "HalfCheetah-v5", "length_kwarg": "max_episode_steps", "lengths": [100], "episodes": 5,
                 "target_return": float(generation["returns"]["max"])},
        "train": {"steps": 300, "batch_size": 32, "lr": 0.003, "warmup_steps": 10, "eval_every": 300, "threads": 1},
    })
    _, metrics = train(cfg, tmp_path / "run", progress=False)
    random_return, data_mean = generation["random_policy_return"], generation["returns"]["mean"]
    assert data_mean > random_return + 50, generation  # the behaviour is worth imitating
    assert metrics["eval"][100]["return"] > random_return + 0.5 * (data_mean - random_return), (metrics, generation)
