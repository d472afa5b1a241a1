"""POPGym tasks: observation encoding, hidden-state oracles, Minari round trip, a tiny learning run."""

from dataclasses import replace

import gymnasium as gym
import minari
import numpy as np
import pytest

import rate_envs  # noqa: F401
from rate_envs.popgym_data import generate_popgym_dataset
from rate_envs.popgym_tasks import TASKS, POPGymTask, oracle_action


@pytest.fixture(autouse=True)
def minari_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))


def play(env, choose, seed):
    obs, info = env.reset(seed=seed)
    total, steps, done, infos = 0.0, 0, False, [info]
    while not done:
        obs, reward, terminated, truncated, info = env.step(choose(env.unwrapped))
        total, steps, done = total + reward, steps + 1, terminated or truncated
        infos.append(info)
    return total, steps, infos


@pytest.mark.parametrize("task", sorted(TASKS))
def test_oracle_earns_the_maximum_return_and_random_play_does_not(task):
    env = gym.make("rate/POPGym-v0", task=task)
    rng = np.random.default_rng(0)
    for seed in range(3):
        total, steps, infos = play(env, oracle_action, seed)
        assert total == pytest.approx(1.0) and steps == env.unwrapped.max_episode_length
        assert all(info == {} for info in infos)  # no hidden state leaks through info
    random_total, _, _ = play(env, lambda e: int(rng.integers(0, env.action_space.n)), 0)
    assert random_total < 0.9


def test_observations_are_one_hot_vectors():
    env = POPGymTask("CountRecallMedium")  # MultiDiscrete([4, 4]) -> 8 entries, one hot per part
    obs, _ = env.reset(seed=0)
    assert obs.shape == (8,) and obs.dtype == np.float32 and obs[:4].sum() == 1 and obs[4:].sum() == 1
    env = POPGymTask("AutoencodeEasy")  # Tuple(Discrete(2), Discrete(4)) -> 6
    obs, _ = env.reset(seed=0)
    from popgym.envs.autoencode import Mode

    assert obs.shape == (6,) and obs[Mode.WATCH.value] == 1.0 and obs[:2].sum() == 1 and obs[2:].sum() == 1
    env = POPGymTask("PositionOnlyCartPoleEasy")  # Box(2): position and angle only, no velocities
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2,) and np.allclose(obs, np.array(env.unwrapped.state)[[0, 2]])


def test_bad_task_and_wrong_length_are_refused():
    with pytest.raises(ValueError, match="unknown POPGym task 'Nope'"):
        POPGymTask("Nope")
    with pytest.raises(ValueError, match="RepeatFirstEasy episodes have 51 steps, not 90"):
        POPGymTask("RepeatFirstEasy", episode_length=90)
    assert POPGymTask("RepeatFirstEasy", episode_length=51).task == "RepeatFirstEasy"
    for task, action in (("RepeatPreviousEasy", 9), ("CountRecallEasy", -3), ("PositionOnlyCartPoleEasy", 5)):
        env = POPGymTask(task)
        env.reset(seed=0)
        with pytest.raises(ValueError, match=f"invalid action {action}"):
            env.step(action)


def test_a_render_mode_reaches_the_task_or_is_refused():
    """PositionOnlyCartPole renders CartPole's frames; the card tasks render nothing, so a mode
    asked of them is refused rather than dropped (render() would return None)."""
    for task in ("PositionOnlyCartPoleEasy", "PositionOnlyCartPoleMedium"):  # (Medium's constructor drops it)
        env = gym.make("rate/POPGym-v0", task=task, render_mode="rgb_array")
        env.reset(seed=0)
        assert env.unwrapped.render_mode == "rgb_array" and env.render().shape[2] == 3, task
        env.close()
    with pytest.raises(ValueError, match="RepeatPreviousEasy renders nothing, not 'rgb_array'"):
        POPGymTask("RepeatPreviousEasy", render_mode="rgb_array")


def test_dataset_round_trip_with_noise_and_environment_recovery():
    generate_popgym_dataset("RepeatPreviousEasy", episodes=6, seed=0, noise=0.3)
    ds = minari.load_dataset("rate/popgym/RepeatPreviousEasy-oracle-v0")
    returns = [float(ep.rewards.sum()) for ep in ds.iterate_episodes()]
    assert len(returns) == 6 and all(-1.0 <= r < 1.0 for r in returns)  # random actions cost reward
    env = ds.recover_environment()
    assert env.unwrapped.__class__.__name__ == "RepeatPreviousEasy" and env.observation_space.shape == (4,)
    clean = generate_popgym_dataset("RepeatPreviousEasy", episodes=2, seed=0, noise=0.0, dataset_id="rate/p/clean-v0")
    assert all(float(ep.rewards.sum()) == pytest.approx(1.0) for ep in clean.iterate_episodes())
    # The registered entry point is itself a wrapper (POPGymTask), which the recorded spec lists
    # first: gym.make applies it, so a run on the dataset applies it once, not twice.
    from rate.rl.experiment import make_checked_eval_env
    from rate.rl.from_dataset import config_for_dataset

    assert [w.name for w in ds.spec.env_spec.additional_wrappers] == ["POPGymTask"]
    cfg = config_for_dataset("rate/popgym/RepeatPreviousEasy-oracle-v0")
    assert cfg.eval.env_wrappers == []
    recorded = {"entry_point": "rate_envs.popgym_tasks:POPGymTask", "kwargs": {"task": "RepeatPreviousEasy"}}
    for ev in (cfg.eval, replace(cfg.eval, env_wrappers=[recorded])):  # (the made env's own are skipped)
        env = make_checked_eval_env(ev)
        assert env.observation_space.shape == (4,)
        env.close()


@pytest.mark.slow
def test_tiny_rate_learns_repeat_previous(tmp_path):
    """RATE on RepeatPreviousEasy (output the suit dealt 4 steps ago; 51 steps, so 6 segments of
    9 steps): far above the random policy's return of about -0.5."""
    from rate.config import from_dict
    from rate.rl.experiment import RATEExperimentConfig
    from rate.rl.trainer import train

    generate_popgym_dataset("RepeatPreviousEasy", episodes=300, seed=0, noise=0.1)
    cfg = from_dict(RATEExperimentConfig, {
        "dataset_id": "rate/popgym/RepeatPreviousEasy-oracle-v0",
        "model": {"segment_steps": 9, "num_segments": 6, "obs_shape": [4], "act_dim": 4,
                  "backbone": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_head": 16, "d_inner": 32,
                               "use_ffn": False, "num_mem_tokens": 4, "memory_update": "rmt"}},
        "eval": {"env_id": "rate/POPGym-v0", "lengths": [51], "episodes": 20},
        "train": {"steps": 300, "batch_size": 32, "lr": 0.003, "warmup_steps": 10, "eval_every": 300, "threads": 1},
    })
    _, metrics = train(cfg, tmp_path / "run", progress=False)
    assert metrics["eval"][51]["return"] >= 0.8, metrics


def test_repeat_first_is_solved_by_copying_the_previous_action_and_the_others_are_not(capsys):
    """One step of action feedback (what every model here has) solves RepeatFirst: the first action
    is the visible first card's suit, and the answer never changes.  The reference row of
    results/popgym_notes.md (python -m envs.oracle_score popgym --copy-previous)."""
    from rate_envs.oracle_score import main, score_oracle

    copy = {task: score_oracle("popgym", 1, episodes=5, popgym_task=task, copy_previous=True,
                               progress=False).returns.mean() for task in ("RepeatFirstMedium", "RepeatPreviousEasy")}
    assert copy["RepeatFirstMedium"] == pytest.approx(1.0) and copy["RepeatPreviousEasy"] < 0
    assert main(["popgym", "--popgym-task", "RepeatFirstEasy", "--copy-previous", "--episodes", "2",
                 "--no-progress"]) == 0
    assert "return 1.00" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--copy-previous applies to popgym only"):
        score_oracle("vizdoom", 90, copy_previous=True)
    # With random actions, a random action is the previous one that the next step copies.
    from rate_envs.oracle_score import _copy_previous

    rng = np.random.default_rng(0)
    choose = _copy_previous(lambda env: 7, 4, 0.5, rng)
    played = [choose(None) for _ in range(40)]
    again = np.random.default_rng(0)
    expected, last = [], None
    for _ in range(40):
        last = int(again.integers(0, 4)) if again.random() < 0.5 else (7 if last is None else last)
        expected.append(last)
    assert played == expected and len(set(played)) > 2


@pytest.mark.parametrize("module, package", [("envs.popgym_data", "popgym"), ("envs.minigrid_data", "minigrid")])
def test_a_dataset_generator_without_its_extra_is_one_error_line(monkeypatch, capsys, module, package):
    """The task's package missing (an optional extra): the generator names it in one line and
    exits 2, as its docstring says, instead of an ImportError traceback at import."""
    import importlib
    import sys

    for name in [name for name in sys.modules if name == package or name.startswith(package + ".")]:
        monkeypatch.setitem(sys.modules, name, None)  # importing the package or a submodule now fails
    monkeypatch.setitem(sys.modules, package, None)
    for name in ("envs.popgym_tasks", "envs.minigrid_memory"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert importlib.import_module(module).main(["--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and f"rate-rmt[{package}]" in err[0], err
