"""Training on Minari datasets the project did not make, with no YAML: CartPole (discrete vector),
InvertedPendulum (continuous actions in [-3, 3]), a Dict-observation task and an image task,
each recorded here with ``minari.DataCollector``, trained for a few steps and evaluated through
the public API."""

from __future__ import annotations

import json
import math
import re
import warnings

import gymnasium as gym
import minari
import numpy as np
import pytest

import rate
from rate.cli.train import main as train_main
from rate.config import ConfigError
from rate.data.episodes import DatasetError, load_minari_episodes
from rate.data.spaces import flatten_batch
from rate.rl.experiment import check_eval_envs
from rate.rl.from_dataset import config_for_dataset, infer_from_dataset, run_name_for
from tests import foreign_envs

TINY = ["model.backbone.d_model=32", "model.backbone.n_layers=1", "model.backbone.n_heads=2",
        "model.backbone.d_head=16", "model.backbone.d_inner=32", "model.segment_steps=3", "model.num_segments=2",
        "train.steps=4", "train.eval_every=4", "train.batch_size=8", "train.warmup_steps=1", "train.threads=1",
        "eval.episodes=3"]


def record(env_id: str, dataset_id: str, episodes: int, act, with_env: bool = True, wrap=None,
           **create_kwargs) -> None:
    """A Minari dataset of ``episodes`` episodes of ``act(env, rng)`` in ``gym.make(env_id)`` (inside
    ``wrap(env)`` where given: its spec then lists the wrapper), written with
    ``minari.create_dataset_from_buffers`` (Minari's DataCollector needs jax); ``with_env`` False
    records its spaces only, no environment (as data from a real system)."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    env = gym.make(env_id)
    if wrap is not None:
        env = wrap(env)
    rng = np.random.default_rng(0)
    buffers = []
    for i in range(episodes):
        obs, _ = env.reset(seed=i)
        observations, actions, rewards, terms, truncs = [obs], [], [], [], []
        done = False
        while not done:
            action = act(env, rng)
            obs, reward, terminated, truncated, _ = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(float(reward))
            terms.append(terminated)
            truncs.append(truncated)
            done = terminated or truncated
        if isinstance(observations[0], dict):
            stacked = {key: np.stack([o[key] for o in observations]) for key in observations[0]}
        else:
            stacked = np.stack(observations)
        buffers.append(EpisodeBuffer(id=i, seed=i, observations=stacked, actions=np.array(actions), rewards=rewards,
                                     terminations=terms, truncations=truncs, infos={}))
    where = {"env": env} if with_env else {"observation_space": env.observation_space,
                                            "action_space": env.action_space}
    minari.create_dataset_from_buffers(dataset_id, buffers, algorithm_name="tests", data_format="hdf5", **where,
                                       **create_kwargs)
    env.close()


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("minari")

    def oracle(env, rng):  # the cue's action, with 10 % random actions
        return int(rng.integers(2)) if rng.random() < 0.1 else env.unwrapped.oracle()

    with pytest.MonkeyPatch.context() as patch:  # restored however the recording ends
        patch.setenv("MINARI_DATASETS_PATH", str(root))
        record("CartPole-v1", "tests/cartpole-random-v0", 12, lambda env, rng: int(rng.integers(2)))
        record("CartPole-v1", "tests/no-environment-v0", 6, lambda env, rng: int(rng.integers(2)), with_env=False)
        # Recorded through a wrapper that adds the time step to the 4 CartPole features.
        record("CartPole-v1", "tests/cartpole-timeaware-v0", 6, lambda env, rng: int(rng.integers(2)),
               wrap=gym.wrappers.TimeAwareObservation)
        record("InvertedPendulum-v5", "tests/pendulum-random-v0", 12,
               lambda env, rng: rng.uniform(-3.0, 3.0, 1).astype(np.float32), ref_min_score=0.0, ref_max_score=1000.0)
        record("ForeignDictCue-v0", "tests/dict-cue-v0", 40, oracle)
        record("ForeignImageCue-v0", "tests/image-cue-v0", 40, oracle)
        record("ForeignShiftedCue-v0", "tests/shifted-cue-v0", 40,
               lambda env, rng: int(rng.integers(2)) - 1 if rng.random() < 0.1 else env.unwrapped.oracle())
        # The same two action spaces from "real systems": spaces only, no environment.
        record("ForeignShiftedCue-v0", "tests/shifted-noenv-v0", 6, lambda env, rng: int(rng.integers(2)) - 1,
               with_env=False)
        record("InvertedPendulum-v5", "tests/pendulum-noenv-v0", 4,
               lambda env, rng: rng.uniform(-3.0, 3.0, 1).astype(np.float32), with_env=False)
        yield root


def test_cartpole_discrete_vectors_train_and_evaluate_with_no_yaml(datasets, tmp_path):
    inferred = infer_from_dataset("tests/cartpole-random-v0")
    assert inferred["model"]["obs_kind"] == "vector" and inferred["model"]["obs_shape"] == [4]
    assert (inferred["model"]["act_kind"], inferred["model"]["act_dim"]) == ("discrete", 2)
    assert inferred["eval"]["env_id"] == "CartPole-v1" and inferred["eval"]["wrappers"] == []
    # Returns-to-go of order one (the power of 10 at or above the largest return), aimed at the best episode.
    returns = [float(np.sum(ep.rewards)) for ep in minari.load_dataset("tests/cartpole-random-v0").iterate_episodes()]
    assert inferred["eval"]["target_return"] == max(returns)
    assert inferred["model"]["rtg_scale"] == 10.0 ** math.ceil(math.log10(max(returns))) and max(returns) > 10
    cfg = config_for_dataset("tests/cartpole-random-v0", "rate", overrides=TINY)
    assert cfg.eval.lengths == [] and cfg.model.normalize_obs
    policy, metrics = rate.train(dataset="tests/cartpole-random-v0", overrides=TINY, out=tmp_path / "run",
                                 progress=False)
    assert list(metrics["eval"]) == [None]  # one evaluation, at CartPole's own length
    # The dataset's observation statistics reach the trained model, its checkpoint and the loaded policy.
    from rate.data.episodes import observation_stats

    mean, std = observation_stats(load_minari_episodes("tests/cartpole-random-v0")[0])
    assert not np.allclose(mean, 0) and not np.allclose(std, 1)
    for model in (policy.model, rate.load_policy(tmp_path / "run").model):
        np.testing.assert_allclose(model.encoders.obs_mean.numpy(), mean, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(model.encoders.obs_std.numpy(), std, rtol=1e-6, atol=1e-7)
    (result,) = rate.evaluate(policy, episodes=3).values()
    assert result["success"] is None  # CartPole reports no success: none is made up
    assert result["return"] >= 8 and "normalized_score" not in result  # CartPole lasts >= 8 steps
    # Lengths set the time limit of an environment that takes no length of its own.
    assert inferred["eval"]["length_kwarg"] == "max_episode_steps"
    capped = rate.evaluate(policy, episodes=3, lengths=[5])
    assert list(capped) == [5] and capped[5]["return"] <= 5


def test_data_recorded_through_a_wrapper_is_evaluated_through_it(datasets, tmp_path, capsys):
    # TimeAwareObservation adds the time step to CartPole's 4 features: the data holds 5, and a
    # CartPole made without the wrapper would give the model 4.
    inferred = infer_from_dataset("tests/cartpole-timeaware-v0")
    assert inferred["model"]["obs_shape"] == [5]
    (entry,) = inferred["eval"]["env_wrappers"]
    assert entry["entry_point"].endswith(":TimeAwareObservation") and entry["kwargs"]["flatten"] is True
    policy, metrics = rate.train(dataset="tests/cartpole-timeaware-v0", overrides=TINY, out=tmp_path / "run",
                                 progress=False)
    assert metrics["eval"][None]["return"] >= 8  # evaluated at training's end, through the wrapper
    env = policy.make_env()
    assert env.observation_space.shape == (5,) == policy.obs_shape
    obs, _ = env.reset(seed=0)
    policy.reset()
    assert obs[-1] == 0 and env.step(policy.act(obs))[0][-1] == 1  # the recorded feature: the time step
    env.close()
    (result,) = rate.evaluate(policy, episodes=2).values()
    assert result["return"] >= 8
    # Another environment than the recorded one is not wrapped: the wrapper belongs to the data's
    # (its 6 features, not 7; make_env refuses it, as evaluate does, since the policy takes 5).
    with pytest.raises(ConfigError, match=r"'Acrobot-v1' with {} gives observations of shape \(6,\), but the "
                                          r"config says model.obs_shape \[5\]"):
        policy.make_env(env_id="Acrobot-v1")
    other = config_for_dataset("tests/cartpole-timeaware-v0", overrides=["eval.env_id=Acrobot-v1"])
    assert other.eval.env_wrappers == []
    # Without it (the user's choice) the policy meets 4 features where it was trained on 5: one line.
    assert train_main(["--dataset", "tests/cartpole-timeaware-v0", *TINY, "eval.env_wrappers=[]", "--out",
                       str(tmp_path / "unwrapped")]) == 2
    assert "observations of shape (4,), but the config says model.obs_shape [5]" in capsys.readouterr().err


def test_recorded_wrappers_are_checked_and_a_missing_one_is_one_line(datasets):
    from rate.config import from_dict
    from rate.rl.experiment import EvalConfig, make_checked_eval_env

    for bad in ({"entry_point": "no_colon"}, {"entry_point": "a:B", "kwargs": [1]}, {"entry": "a:B"}):
        with pytest.raises(ConfigError, match=r"eval.env_wrappers\[0\] needs"):
            from_dict(EvalConfig, {"env_id": "CartPole-v1", "env_wrappers": [bad]})
    with pytest.raises(ConfigError, match=r"env_wrappers\[0\]: expected a mapping"):
        from_dict(EvalConfig, {"env_id": "CartPole-v1", "env_wrappers": ["a:B"]})
    missing = from_dict(EvalConfig, {"env_id": "CartPole-v1", "env_wrappers": [{"entry_point": "no_such_pkg:W"}]})
    with pytest.raises(ConfigError, match=r"'no_such_pkg:W' cannot be loaded .*eval.env_wrappers=\[\]"):
        make_checked_eval_env(missing)


def test_data_recorded_without_an_environment_trains_without_evaluation(datasets, tmp_path):
    with pytest.raises(ConfigError, match="records no environment .* or train without evaluation: eval.episodes=0"):
        config_for_dataset("tests/no-environment-v0", "rate", overrides=TINY)
    run = tmp_path / "run"
    policy, metrics = rate.train(dataset="tests/no-environment-v0", overrides=[*TINY, "eval.episodes=0"], out=run,
                                 progress=False)
    assert metrics["eval"] == {} and metrics["steps"] == 4
    assert (run / "model.safetensors").is_file() and not (run / "checkpoint_best").exists()
    with pytest.raises(ConfigError, match="the run names no environment"):
        rate.evaluate(policy)
    (result,) = rate.evaluate(run, env_id="CartPole-v1", episodes=2).values()  # where the user says
    assert result["return"] >= 8


def test_a_run_without_an_environment_maps_its_actions_back_onto_the_datas(datasets, tmp_path):
    """No environment to wrap: the run keeps the data's Discrete start and Box bounds, and
    Policy.env_action gives the policy's actions in the data's units (the model's are 0..n-1 and
    [-1, 1]); runs with an environment read its action space."""
    for dataset, recorded in (("tests/shifted-noenv-v0", {"action_start": -1}),
                              ("tests/pendulum-noenv-v0", {"action_bounds": [[-3.0], [3.0]]})):
        with pytest.warns(UserWarning, match="records no environment, and the model acts in its own units"):
            cfg = config_for_dataset(dataset, "rate", overrides=[*TINY, "eval.episodes=0"])
        assert {key: getattr(cfg.eval, key) for key in recorded} == recorded
        rate.train(dataset=dataset, overrides=[*TINY, "eval.episodes=0"], out=tmp_path / dataset, progress=False)
    shifted, pendulum = (rate.load_policy(tmp_path / name) for name in ("tests/shifted-noenv-v0",
                                                                       "tests/pendulum-noenv-v0"))
    np.testing.assert_array_equal(shifted.env_action(np.array([0, 1])), [-1, 0])
    assert shifted.env_action(1) == 0
    shifted.reset(2)
    actions = shifted.act(np.zeros((2, 3), np.float32))
    assert set(shifted.env_action(actions)) <= {-1, 0}
    np.testing.assert_allclose(pendulum.env_action(np.array([[-1.0], [0.0], [0.5], [1.0], [7.0]])),
                               [[-3.0], [0.0], [1.5], [3.0], [3.0]])  # (clipped to [-1, 1] first, as RescaleAction)
    older = rate.load_policy(tmp_path / "tests/shifted-noenv-v0")  # as saved before the start was kept
    del older.run_config["eval"]["action_start"]
    with pytest.raises(ValueError, match="maps actions .ActionsFromZero. but records no action space"):
        older.env_action(0)
    # The recorded wrappers of a run with an environment: its action space, inside what the run wraps.
    rate.train(dataset="tests/shifted-cue-v0", overrides=TINY, out=tmp_path / "shifted", progress=False)
    np.testing.assert_array_equal(rate.load_policy(tmp_path / "shifted").env_action(np.array([0, 1])), [-1, 0])
    rate.train(dataset="tests/pendulum-random-v0", overrides=TINY, out=tmp_path / "pendulum", progress=False)
    np.testing.assert_allclose(rate.load_policy(tmp_path / "pendulum").env_action([[-1.0], [1.0]]), [[-3.0], [3.0]])
    # Actions no wrapper maps come back as they are.
    rate.train(dataset="tests/cartpole-random-v0", overrides=TINY, out=tmp_path / "cartpole", progress=False)
    np.testing.assert_array_equal(rate.load_policy(tmp_path / "cartpole").env_action(np.array([0, 1])), [0, 1])


def test_policy_needs_reset_and_takes_one_observation(datasets, tmp_path):
    rate.train(dataset="tests/cartpole-random-v0", overrides=TINY, out=tmp_path / "run", progress=False)
    policy = rate.load_policy(tmp_path / "run")
    with pytest.raises(RuntimeError, match="reset"):
        policy.act(np.zeros(4, np.float32))
    policy.reset()
    assert policy.act(np.zeros(4, np.float32)) in (0, 1)


def test_continuous_actions_outside_unit_range_are_rescaled(datasets, tmp_path):
    raw, _ = load_minari_episodes("tests/pendulum-random-v0")
    scaled, _ = load_minari_episodes("tests/pendulum-random-v0", rescale_actions=True)
    np.testing.assert_allclose(scaled[0].actions, raw[0].actions / 3.0, rtol=1e-6, atol=1e-6)
    cfg = config_for_dataset("tests/pendulum-random-v0", "bc_mlp", overrides=TINY)
    assert cfg.eval.wrappers == ["RescaleAction"] and cfg.model.act_kind == "continuous"
    assert cfg.eval.ref_scores == [0.0, 1000.0]  # the dataset's own reference returns
    policy, _ = rate.train(cfg, out=tmp_path / "run", progress=False)
    (result,) = rate.evaluate(policy, episodes=2).values()
    assert result["normalized_score"] == pytest.approx(100 * result["return"] / 1000)


def test_dict_observations_are_flattened_and_success_is_read(datasets, tmp_path):
    cfg = config_for_dataset("tests/dict-cue-v0", "rate", overrides=TINY)
    assert cfg.eval.wrappers == ["FlattenObservation"] and cfg.model.obs_shape == [3]
    assert cfg.eval.env_id == "ForeignDictCue-v0" and cfg.eval.env_kwargs == {"max_episode_steps": 50}
    policy, metrics = rate.train(cfg, out=tmp_path / "run", progress=False)
    (result,) = metrics["eval"].values()
    # info["is_success"]: here success is exactly a return of 1 (the cue's reward)
    assert result["success"] is not None and result["success"] == pytest.approx(result["return"])


@pytest.mark.slow
def test_a_dict_task_is_learned_through_memory(datasets, tmp_path):
    """The cue is gone after step 0 and decides the action at step 5: three segments of 2 steps
    need the memory to carry it.  Trained on 40 episodes with 10 % noise."""
    steps = ["train.steps=150", "train.eval_every=150", "train.lr=0.003", "model.segment_steps=2",
             "model.num_segments=3", "eval.episodes=40", "window_start=episode_start"]
    policy, metrics = rate.train(dataset="tests/dict-cue-v0", overrides=TINY + steps, out=tmp_path / "run",
                                 progress=False)
    (result,) = metrics["eval"].values()
    assert result["success"] >= 0.9, metrics
    _, memoryless = rate.train(dataset="tests/dict-cue-v0", model="bc_mlp", overrides=TINY + steps,
                               out=tmp_path / "mlp", progress=False)
    assert memoryless["eval"][None]["success"] <= 0.8, memoryless  # the cue is gone by the decision


def test_images_in_channels_last_order(datasets, tmp_path):
    inferred = infer_from_dataset("tests/image-cue-v0")["model"]
    assert inferred["obs_kind"] == "image" and inferred["channels_last"] and inferred["obs_shape"] == [40, 40, 3]
    assert inferred["obs_scale"] == pytest.approx(1 / 255) and not inferred["normalize_obs"]
    policy, metrics = rate.train(dataset="tests/image-cue-v0", model="dt", overrides=TINY, out=tmp_path / "run",
                                 progress=False)
    policy.reset(2)
    actions = policy.act(np.zeros((2, 40, 40, 3), np.uint8))
    assert actions.shape == (2,) and policy.last_output.shape == (2, 2)


def test_evaluation_records_video(datasets, tmp_path, capsys):
    pytest.importorskip("moviepy", reason="the video extra (moviepy) is not installed")
    from rate.cli.evaluate import main as eval_main

    rate.train(dataset="tests/image-cue-v0", model="bc_mlp", overrides=TINY, out=tmp_path / "run", progress=False)
    assert eval_main([str(tmp_path / "run"), "--episodes", "2", "--record-video", str(tmp_path / "video"),
                      "--no-progress"]) == 0
    videos = sorted(p.name for p in (tmp_path / "video").glob("*.mp4"))
    assert videos == ["ForeignImageCue-v0-env0-episode-0.mp4", "ForeignImageCue-v0-env1-episode-0.mp4"]
    assert all((tmp_path / "video" / v).stat().st_size > 0 for v in videos)


def test_video_of_a_pygame_drawn_environment_prints_no_display_error(datasets, tmp_path):
    """CartPole draws with pygame, which looks for a display and prints SDL's 'error: XDG_RUNTIME_DIR
    is invalid or not set' on a headless machine (exit 0: a line that reads like rate-eval's own
    error); frames are drawn off-screen.  In a fresh process: pygame prints it once per process."""
    import os
    import subprocess
    import sys

    pytest.importorskip("moviepy", reason="the video extra (moviepy) is not installed")
    rate.train(dataset="tests/cartpole-random-v0", model="bc_mlp", overrides=TINY, out=tmp_path / "run", progress=False)
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "SDL_VIDEODRIVER")}
    done = subprocess.run([sys.executable, "-m", "rate.cli.evaluate", str(tmp_path / "run"), "--episodes", "1",
                           "--record-video", str(tmp_path / "video"), "--no-progress"],
                          env=env | {"MINARI_DATASETS_PATH": str(datasets)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not [line for line in done.stderr.splitlines() if line.startswith("error")], done.stderr
    assert list((tmp_path / "video").glob("*.mp4"))


def test_wandb_logging_offline(datasets, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the wandb extra is not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    rate.train(dataset="tests/cartpole-random-v0", overrides=TINY + ["train.logger=wandb"], out=tmp_path / "run",
               progress=False)
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    assert list(run.glob("*.wandb"))  # the run's log, to `wandb sync` later


def test_training_logs_gradient_norm_tokens_per_second_and_hparams(datasets, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rate.train(dataset="tests/cartpole-random-v0", overrides=TINY, out=tmp_path / "run", progress=False)
    (events,) = (tmp_path / "run" / "tb").glob("events.*")  # one event stream per run
    tags = EventAccumulator(str(events)).Reload().Tags()["scalars"]
    assert {"train/loss", "train/grad_norm", "train/tokens_per_s", "train/lr", "eval/return"} <= set(tags)
    assert "hparams/return" in tags


def test_the_command_line_trains_a_dataset_with_overrides_only(datasets, tmp_path, capsys):
    out = tmp_path / "cartpole"
    assert train_main(["--dataset", "tests/cartpole-random-v0", "--model", "bc_gru", *TINY, "--out", str(out),
                       "--no-progress"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["run"] == "cartpole" and line["steps"] == 4  # the run is named after --out
    assert (out / "checkpoint_best" / "model.safetensors").is_file()
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["model"]["kind"] == "bc_gru"
    assert saved["extra"]["dataset_id"] == "tests/cartpole-random-v0" and saved["extra"]["rate_version"]
    # --resume with the folder alone continues the run under its own config; overrides change it.
    assert train_main(["--resume", "--out", str(out), "train.steps=6", "train.eval_every=6", "--no-progress"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["run"] == "cartpole" and line["steps"] == 6
    assert json.loads((out / "config.json").read_text())["config"]["model"]["kind"] == "bc_gru"
    with pytest.warns(UserWarning, match="has trained all 6 steps: nothing to train, its final evaluation runs again"):
        assert train_main(["--resume", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    for args in (["--resume"], ["--resume", "--print-config"]):  # (which folder? said by argparse)
        with pytest.raises(SystemExit):
            train_main(args)
        assert "name the folder with --out" in capsys.readouterr().err
    assert train_main(["--resume", "--out", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    # A replacement killed inside its swap (config.json still in the staging folder): the run's
    # own config is read once the swap is finished, not from the mix ("not a checkpoint").
    from rate.run_folder import swap_journal

    names = sorted(p.name for p in out.iterdir())
    (tmp_path / ".cartpole.old-x").mkdir()
    (tmp_path / ".cartpole.new-x").mkdir()
    (out / "config.json").rename(tmp_path / ".cartpole.new-x" / "config.json")
    swap_journal(out).write_text(json.dumps({"old": ".cartpole.old-x", "new": ".cartpole.new-x", "old_names": [],
                                             "new_names": names, "phase": "filling"}))
    with pytest.warns(UserWarning, match="finished replacing the earlier run"):
        assert train_main(["--resume", "--out", str(out), "--print-config"]) == 0
    assert "kind: bc_gru" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == names and not swap_journal(out).exists()


def test_print_config_shows_the_inferred_values_with_docs(datasets, capsys):
    assert train_main(["--dataset", "tests/pendulum-random-v0", "--print-config", "train.steps=7"]) == 0
    text = capsys.readouterr().out
    assert "wrappers: [RescaleAction]" in text and "act_kind: continuous" in text and "steps: 7" in text
    assert "# optimiser steps (batches)" in text  # each field's doc
    import yaml

    from rate.config import from_dict
    from rate.rl.experiment import RATEExperimentConfig

    assert from_dict(RATEExperimentConfig, yaml.safe_load(text)).train.steps == 7  # it reads back


def test_the_template_documents_every_field_and_leaves_the_inferred_ones_to_the_dataset(datasets, capsys):
    from pathlib import Path

    from rate.rl.from_dataset import template

    path = Path(__file__).resolve().parents[1] / "configs" / "minari_template.yaml"
    assert path.read_text() == template("rate")  # regenerate: rate-train --print-config > configs/minari_template.yaml
    assert train_main([str(path), "--dataset", "tests/pendulum-random-v0", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "obs_shape: [4]" in text and "act_kind: continuous" in text and "wrappers: [RescaleAction]" in text


def test_a_missing_dataset_says_how_to_download_it(datasets, capsys, tmp_path):
    assert train_main(["--dataset", "D4RL/pointmaze/umaze-v2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "minari download D4RL/pointmaze/umaze-v2" in err and "--download" in err
    assert "pip install 'rate-rmt[download]'" in err  # (the hub client is an extra)
    # A typo of a local id is named first.
    assert train_main(["--dataset", "tests/cartpole-random-v1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'tests/cartpole-random-v0'? If not, download it with" in err
    # A D4RL file is imported first, not downloaded.
    (d4rl_file := tmp_path / "hopper-medium-v2.hdf5").write_bytes(b"")
    assert train_main(["--dataset", str(d4rl_file), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"is a file, not a Minari dataset (a folder or an id): import a D4RL file " \
                                     f"first: rate-import-d4rl {d4rl_file} NAMESPACE/NAME-v0" in err


def test_a_small_config_file_keeps_the_defaults_of_a_dataset_run(datasets, tmp_path):
    """A file that sets only a learning rate: the evaluation still runs at the environment's own
    length (CartPole takes no episode_length), as without a file."""
    path = tmp_path / "mine.yaml"
    path.write_text("train: {lr: 0.0005}\n")
    cfg = config_for_dataset("tests/cartpole-random-v0", config=path, overrides=TINY)
    assert cfg.train.lr == 0.0005 and cfg.eval.lengths == [] and cfg.window_start == "random"
    check_eval_envs(cfg)  # makes CartPole as evaluation will


def test_default_run_names_of_dataset_ids_and_folders():
    assert run_name_for("mujoco/hopper/expert-v0") == "mujoco-hopper-expert-v0"
    assert run_name_for("/data/ds/") == "data-ds"  # under runs/, not /-data-ds at the root
    assert run_name_for("./ds") == "ds" and run_name_for("/a/b/c/d") == "b-c-d"


def test_the_current_folder_as_dataset_is_named_by_where_it_is(tmp_path, monkeypatch):
    folder = tmp_path / "hopper" / "expert-v0"
    folder.mkdir(parents=True)
    monkeypatch.chdir(folder)
    assert run_name_for(".") == run_name_for("./") == f"{tmp_path.name}-hopper-expert-v0"
    assert run_name_for("/") == "run"


def test_a_dataset_folder_works_as_well_as_an_id(datasets, tmp_path, monkeypatch):
    folder = datasets / "tests" / "cartpole-random-v0"
    cfg = config_for_dataset(str(folder), "dt", overrides=TINY)
    assert cfg.model.obs_shape == [4] and cfg.policy == "window"
    # A relative folder is kept as an absolute one: the run resumes from any working directory.
    monkeypatch.chdir(datasets / "tests")
    absolute = config_for_dataset("./cartpole-random-v0", "dt", overrides=TINY)
    assert absolute.dataset_id == str(folder.resolve())
    # A run saved with the relative path (before) resumes under the absolute one: the same folder.
    from dataclasses import replace

    from rate.config import to_dict
    from rate.resume import config_changes

    assert config_changes(to_dict(replace(absolute, dataset_id="./cartpole-random-v0")), absolute) == []
    assert config_changes(to_dict(replace(absolute, dataset_id="./dict-cue-v0")), absolute) != []


def test_flattening_matches_gymnasium():
    space = gym.spaces.Dict({"b": gym.spaces.Box(-1, 1, (2, 2)), "a": gym.spaces.Discrete(3, start=1),
                             "t": gym.spaces.Tuple((gym.spaces.MultiBinary(3), gym.spaces.MultiDiscrete([2, 4])))})
    space.seed(0)
    samples = [space.sample() for _ in range(5)]
    stacked = {"b": np.stack([s["b"] for s in samples]), "a": np.array([s["a"] for s in samples]),
               "t": (np.stack([s["t"][0] for s in samples]), np.stack([s["t"][1] for s in samples]))}
    expected = np.stack([gym.spaces.flatten(space, s) for s in samples])
    np.testing.assert_array_equal(flatten_batch(space, stacked), expected.astype(np.float32))


def test_a_dict_in_its_own_key_order_is_evaluated_in_the_datas_layout():
    """Minari restores a dataset's Dict space with sorted keys; the live environment may keep
    its own order (an OrderedDict).  Evaluation must lay the features out as training did."""
    from collections import OrderedDict

    from rate.data.spaces import WRAPPERS

    class Unsorted(gym.Env):
        observation_space = gym.spaces.Dict(OrderedDict([("z", gym.spaces.Box(-9, 9, (2,))),
                                                         ("a", gym.spaces.Box(-9, 9, (1,)))]))
        action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            return OrderedDict([("z", np.array([0.1, 0.2], np.float32)), ("a", np.array([7.0], np.float32))]), {}

    assert list(Unsorted.observation_space.spaces) == ["z", "a"]
    as_restored = gym.spaces.Dict({"z": gym.spaces.Box(-9, 9, (2,)), "a": gym.spaces.Box(-9, 9, (1,))})
    assert list(as_restored.spaces) == ["a", "z"]  # what a dataset's space is after a round trip
    trained_on = flatten_batch(as_restored, {"z": np.array([[0.1, 0.2]]), "a": np.array([[7.0]])})[0]
    evaluated_on, _ = WRAPPERS["FlattenObservation"](Unsorted()).reset()
    np.testing.assert_allclose(evaluated_on, trained_on)
    np.testing.assert_allclose(trained_on, [7.0, 0.1, 0.2])
    # The standalone ONNX runner's copy of the wrapper (it imports nothing of the library).
    from rate.deploy.onnx_runner import WRAPPERS as RUNNER_WRAPPERS

    assert set(RUNNER_WRAPPERS) == set(WRAPPERS)
    played_on, _ = RUNNER_WRAPPERS["FlattenObservation"](Unsorted()).reset()
    np.testing.assert_allclose(played_on, trained_on)


def test_discrete_actions_that_start_elsewhere_than_zero_are_shifted_for_the_model_and_back(datasets):
    """Discrete(2, start=-1): the data's actions -1, 0 train as 0, 1 (ActionsFromZero, inferred),
    and the library's and the standalone runner's wrappers hand the environment -1, 0 again."""
    from rate.data.spaces import WRAPPERS
    from rate.deploy.onnx_runner import WRAPPERS as RUNNER_WRAPPERS

    inferred = infer_from_dataset("tests/shifted-cue-v0")
    assert (inferred["model"]["act_kind"], inferred["model"]["act_dim"]) == ("discrete", 2)
    assert inferred["eval"]["wrappers"] == ["ActionsFromZero"]
    recorded, _ = load_minari_episodes("tests/shifted-cue-v0")
    shifted, _ = load_minari_episodes("tests/shifted-cue-v0", actions_from_zero=True)
    assert set(np.concatenate([e.actions for e in recorded]).tolist()) == {-1, 0}
    for before, after in zip(recorded, shifted):
        np.testing.assert_array_equal(after.actions, before.actions + 1)
    for wrappers in (WRAPPERS, RUNNER_WRAPPERS):
        env = wrappers["ActionsFromZero"](gym.make("ForeignShiftedCue-v0"))
        assert env.action_space == gym.spaces.Discrete(2)
        env.reset(seed=3)
        terminated = False
        while not terminated:
            _, _, terminated, _, info = env.step(env.unwrapped.cue)  # the model's action for the cue: 0 or 1
        assert info["is_success"]
    with pytest.raises(ConfigError, match="start at 0 .eval.wrappers: .ActionsFromZero. shifts them"):
        check_eval_envs(config_for_dataset("tests/shifted-cue-v0", "rate", overrides=["eval.wrappers=[]"]))


@pytest.mark.slow
def test_a_task_with_actions_from_minus_one_is_learned(datasets, tmp_path):
    steps = ["train.steps=150", "train.eval_every=150", "train.lr=0.003", "eval.episodes=20",
             "window_start=episode_start"]
    _, metrics = rate.train(dataset="tests/shifted-cue-v0", overrides=TINY + steps, out=tmp_path / "run",
                            progress=False)
    assert metrics["eval"][None]["success"] >= 0.9, metrics


def test_discrete_values_outside_their_space_are_refused_not_wrapped_round():
    with pytest.raises(ValueError, match="outside Discrete"):
        flatten_batch(gym.spaces.Discrete(4, start=1), np.array([0, 1]))  # 0 - 1 would index the last one-hot
    with pytest.raises(ValueError, match="outside MultiDiscrete"):
        flatten_batch(gym.spaces.MultiDiscrete([3, 3]), np.array([[0, -1]]))


def test_constant_features_keep_scale_one():
    from rate.data.episodes import Episode, observation_stats

    obs = np.stack([np.arange(5, dtype=np.float32), np.zeros(5, np.float32)], axis=1)  # feature 1 never moves
    mean, std = observation_stats([Episode(obs, np.zeros(5, np.int64), np.zeros(5, np.float32))])
    np.testing.assert_allclose(mean, [2.0, 0.0])
    np.testing.assert_allclose(std, [np.arange(5).std(), 1.0])
    # In the encoder's units (model.obs_scale): the constant feature's std stays 1 after scaling
    # (scaled with the rest, the encoder would read it as x - mean: a pixel of 255 as 255).
    mean, std = observation_stats([Episode(obs, np.zeros(5, np.int64), np.zeros(5, np.float32))], scale=0.5)
    np.testing.assert_allclose(mean, [1.0, 0.0])
    np.testing.assert_allclose(std, [0.5 * np.arange(5).std(), 1.0])
    # Merged episode by episode, they are the statistics of all observations together.
    rng = np.random.default_rng(0)
    episodes = [Episode((rng.normal(3.0, 2.0, (n, 3)) * [1, 10, 1e-3]).astype(np.float32), np.zeros(n, np.int64),
                        np.zeros(n, np.float32)) for n in (1, 7, 40, 3)]
    everything = np.concatenate([ep.observations for ep in episodes]).astype(np.float64)
    mean, std = observation_stats(episodes)
    np.testing.assert_allclose(mean, everything.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, everything.std(0), rtol=1e-6)


def test_the_model_takes_the_statistics_in_its_encoders_units():
    """build_rate hands the encoder the statistics of scaled observations (obs_scale), so a
    feature the data never varies reaches the network as (x - mean) * scale, not x - mean."""
    import dataclasses

    import torch

    from rate.config import load_yaml
    from rate.data.episodes import Episode
    from rate.rl.experiment import RATEExperimentConfig, build_rate

    cfg = load_yaml(RATEExperimentConfig, "configs/tmaze/rate.yaml")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, normalize_obs=True, obs_scale=1 / 255))
    obs = np.zeros((6, 4), np.float32)
    obs[:, 0] = np.arange(6) * 50  # feature 0 varies, the others never do
    model = build_rate(cfg, [Episode(obs, np.zeros(6, np.int64), np.zeros(6, np.float32))])
    std = model.encoders.obs_std.flatten()
    torch.testing.assert_close(std, torch.tensor([np.arange(6).std() * 50 / 255, 1.0, 1.0, 1.0], dtype=torch.float32))


def test_actions_of_a_space_with_infinite_bounds_are_rescaled_from_the_datas_range(datasets, tmp_path):
    """A Box(-inf, inf) action space (logs of a real system) has no bounds for the tanh head's
    [-1, 1]: the range the data's actions take stands in (eval.action_bounds), the data is rescaled
    from it, and evaluation maps the policy's actions back onto it (the ONNX runner's copy alike)."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    from rate.data.spaces import rescale_actions
    from rate.deploy.onnx_runner import _rescale_actions

    rng = np.random.default_rng(0)
    buffers = [EpisodeBuffer(id=i, observations=rng.standard_normal((6, 3)).astype(np.float32),
                             actions=np.stack([rng.uniform(-4.0, 2.0, 5), np.full(5, 0.5)], 1).astype(np.float32),
                             rewards=[1.0] * 5, terminations=[False] * 4 + [True], truncations=[False] * 5)
               for i in range(4)]
    unbounded = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    minari.create_dataset_from_buffers("tests/unbounded-v0", buffers, observation_space=gym.spaces.Box(
        -np.inf, np.inf, (3,), np.float32), action_space=unbounded)
    actions = np.concatenate([b.actions for b in buffers])
    with pytest.warns(UserWarning, match=r"infinite bounds; the model's \[-1, 1\] is mapped onto the range"):
        cfg = config_for_dataset("tests/unbounded-v0", overrides=TINY + ["eval.episodes=0"])
    low, high = cfg.eval.action_bounds
    assert low[0] == pytest.approx(actions[:, 0].min()) and high[0] == pytest.approx(actions[:, 0].max())
    assert (low[1], high[1]) == (-0.5, 1.5)  # a dimension the data never varies: a range around its value
    assert cfg.eval.wrappers == ["RescaleAction"]
    from dataclasses import replace

    from rate.rl.experiment import load_dataset_for

    rescaled = np.concatenate([ep.actions for ep in load_dataset_for(cfg)])
    assert rescaled[:, 0].min() == pytest.approx(-1.0) and rescaled[:, 0].max() == pytest.approx(1.0)
    np.testing.assert_allclose(rescaled[:, 1], 0.0)
    # Evaluation maps [-1, 1] back onto the bounds, in the library and in the standalone runner.
    seen = []
    env = gym.wrappers.TransformAction(gym.make("Pendulum-v1"), lambda a: seen.append(a) or np.zeros(1, np.float32),
                                       gym.spaces.Box(-np.inf, np.inf, (2,), np.float32))
    for wrap in (rescale_actions, _rescale_actions):
        wrapped = wrap(env, cfg.eval.action_bounds)
        assert wrapped.action_space == gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        wrapped.reset(seed=0)
        wrapped.step(np.array([1.0, -1.0], np.float32))
        np.testing.assert_allclose(seen[-1], [high[0], low[1]], rtol=1e-6)
    # Bounds of another size than the environment's actions are refused, not sliced or broadcast
    # (Pendulum would read the first of three actions and say nothing).
    from rate.deploy.onnx_runner import ArtifactError

    for wrap, error in ((rescale_actions, ValueError), (_rescale_actions, ArtifactError)):
        with pytest.raises(error, match=r"eval.action_bounds give 2 values per side; .*acts in Box\(-2.0, 2.0, \(1,\)"):
            wrap(gym.make("Pendulum-v1"), cfg.eval.action_bounds)
    with pytest.raises(ConfigError, match=r"eval: cannot make 'Pendulum-v1'.*give 2 values per side"):
        check_eval_envs(config_for_dataset("tests/unbounded-v0", overrides=TINY + ["eval.env_id=Pendulum-v1"]))
    policy, _ = rate.train(cfg, out=tmp_path / "run", progress=False)  # trains on the rescaled actions
    assert policy.act_kind == "continuous"
    with pytest.raises(ConfigError, match=r"eval.action_bounds needs finite values, each low below its high"):
        config_for_dataset("tests/unbounded-v0", overrides=["eval.episodes=0", "eval.action_bounds=[[1, 0], [0, 0]]"])
    with pytest.raises(ConfigError, match=r"eval.action_bounds is what RescaleAction maps onto"):
        config_for_dataset("tests/unbounded-v0", overrides=["eval.episodes=0", "eval.wrappers=[]"])
    short = config_for_dataset("tests/unbounded-v0",
                               overrides=TINY + ["eval.episodes=0", "eval.action_bounds=[[0], [1]]"])
    with pytest.raises(DatasetError, match=r"eval.action_bounds give 1 values per side for model.act_dim 2"):
        load_dataset_for(short)
    longer = replace(short, eval=replace(short.eval, action_bounds=[[0, 0, 0], [1, 1, 1]]))
    with pytest.raises(DatasetError, match=r"eval.action_bounds give 3 values per side for model.act_dim 2"):
        load_dataset_for(longer)
    # A constant dimension with one finite side keeps its range inside that side.
    half = gym.spaces.Box(np.array([-np.inf, 0.0]), np.array([np.inf, np.inf]), dtype=np.float32)
    at_zero = [EpisodeBuffer(id=0, observations=np.zeros((3, 3), np.float32),
                             actions=np.array([[-1.0, 0.0], [1.0, 0.0]], np.float32), rewards=[0.0, 1.0],
                             terminations=[False, True], truncations=[False, False])]
    minari.create_dataset_from_buffers("tests/half-bounded-v0", at_zero, observation_space=gym.spaces.Box(
        -np.inf, np.inf, (3,), np.float32), action_space=half)
    with pytest.warns(UserWarning, match="infinite bounds"):
        assert infer_from_dataset("tests/half-bounded-v0")["eval"]["action_bounds"] == [[-1.0, 0.0], [1.0, 2.0]]


def test_placeholder_wide_and_integer_action_bounds(datasets, tmp_path):
    """Box(-3.4e38, 3.4e38) is an unbounded space written in finite numbers: rescaled from those
    bounds every recorded action became 0.0 and evaluation acted at 1e31, so it takes the data's
    range as infinite bounds do.  Bounds far wider than the data warn.  An integer Box is mapped in
    float64 and rounded (Gymnasium's RescaleAction divided by zero in the space's dtype and sent inf),
    in the library and in the standalone ONNX runner."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    from rate.data.spaces import rescale_actions
    from rate.deploy.onnx_runner import _rescale_actions
    from rate.rl.experiment import load_dataset_for

    rng = np.random.default_rng(0)

    def record(dataset_id: str, space: gym.spaces.Box, actions: np.ndarray) -> None:
        buffers = [EpisodeBuffer(id=i, observations=rng.standard_normal((6, 3)).astype(np.float32),
                                 actions=actions[5 * i : 5 * i + 5], rewards=[1.0] * 5,
                                 terminations=[False] * 4 + [True], truncations=[False] * 5) for i in range(4)]
        minari.create_dataset_from_buffers(dataset_id, buffers, observation_space=gym.spaces.Box(
            -np.inf, np.inf, (3,), np.float32), action_space=space)

    big = float(np.finfo(np.float32).max)
    actions = rng.uniform(-2.0, 2.0, (20, 2)).astype(np.float32)
    record("tests/placeholder-bounds-v0", gym.spaces.Box(-big, big, (2,), np.float32), actions)
    with pytest.warns(UserWarning, match=r"bounds of 1e\+30 or more, read as infinite bounds; the model's"):
        cfg = config_for_dataset("tests/placeholder-bounds-v0", overrides=TINY + ["eval.episodes=0"])
    np.testing.assert_allclose(cfg.eval.action_bounds, [actions.min(0), actions.max(0)], rtol=1e-6)
    rescaled = np.concatenate([ep.actions for ep in load_dataset_for(cfg)])
    np.testing.assert_allclose([rescaled.min(0), rescaled.max(0)], [[-1.0, -1.0], [1.0, 1.0]], atol=1e-6)

    record("tests/wide-bounds-v0", gym.spaces.Box(-1e6, 1e6, (2,), np.float32), actions)
    with pytest.warns(UserWarning, match=r"span less than 1% of the action space's range in 2 of its 2 dimensions"):
        cfg = config_for_dataset("tests/wide-bounds-v0", overrides=TINY + ["eval.episodes=0"])
    # (data without an environment keeps its space's bounds, which no environment will give later)
    assert cfg.eval.action_bounds == [[-1e6, -1e6], [1e6, 1e6]] and cfg.eval.wrappers == ["RescaleAction"]
    record("tests/unit-bounds-v0", gym.spaces.Box(-1.0, 1.0, (2,), np.float32), actions / 1000)
    with warnings.catch_warnings():  # (the model's own range: nothing to rescale, no advice to give)
        warnings.simplefilter("error")
        assert config_for_dataset("tests/unit-bounds-v0", overrides=TINY + ["eval.episodes=0"]).eval.wrappers == []

    steps = rng.integers(0, 5, (20, 2))
    record("tests/integer-box-v0", gym.spaces.Box(0, 4, (2,), np.int64), steps)
    cfg = config_for_dataset("tests/integer-box-v0", overrides=TINY + ["eval.episodes=0"])
    assert cfg.model.act_kind == "continuous" and cfg.eval.wrappers == ["RescaleAction"]
    assert cfg.eval.action_bounds == [[0.0, 0.0], [4.0, 4.0]] and cfg.eval.action_dtype == "int64"
    # Policy.env_action rounds as RescaleAction does for an integer Box, in its dtype.
    rate.train(config=cfg, out=tmp_path / "integer", progress=False)
    mapped = rate.load_policy(tmp_path / "integer").env_action(np.array([[0.3, -0.2], [-1.0, 1.0]]))
    assert mapped.dtype == np.int64 and mapped.tolist() == [[3, 2], [0, 4]]
    rescaled = np.concatenate([ep.actions for ep in load_dataset_for(cfg)])
    np.testing.assert_allclose(rescaled, steps / 2.0 - 1.0)
    # Hand-set bounds between integers clip to the integers inside them (1..3 for [0.5, 3.5]),
    # not to the bounds cast to integers (0..3, below the low bound).
    from dataclasses import replace

    between = replace(cfg, eval=replace(cfg.eval, action_bounds=[[0.5, 0.0], [3.5, 4.0]]))
    with pytest.warns(UserWarning, match=r"lie outside eval.action_bounds and were clipped"):
        clipped = np.concatenate([ep.actions for ep in load_dataset_for(between)])
    np.testing.assert_allclose(clipped[:, 0], (np.clip(steps[:, 0], 1, 3) - 0.5) / 1.5 - 1.0)
    np.testing.assert_allclose(clipped[:, 1], steps[:, 1] / 2.0 - 1.0)
    seen = []
    env = gym.wrappers.TransformAction(gym.make("Pendulum-v1"), lambda a: seen.append(a) or np.zeros(1, np.float32),
                                       gym.spaces.Box(0, 4, (2,), np.int64))
    for wrap in (rescale_actions, _rescale_actions):
        wrapped = wrap(env)
        wrapped.reset(seed=0)
        for action, expected in (([1.0, -1.0], [4, 0]), ([0.5, -0.2], [3, 2]), ([0.3, 2.0], [3, 4])):
            wrapped.step(np.array(action, np.float32))
            assert seen[-1].dtype == np.int64 and seen[-1].tolist() == expected, (wrap, action, seen[-1])
    unbounded = gym.wrappers.TransformAction(gym.make("Pendulum-v1"), lambda a: np.zeros(1, np.float32),
                                             gym.spaces.Box(-np.inf, np.inf, (2,), np.float32))
    with pytest.raises(ValueError, match="has infinite ones: give eval.action_bounds"):
        rescale_actions(unbounded)
    from rate.deploy.onnx_runner import ArtifactError

    with pytest.raises(ValueError, match=r"onto a Box's bounds; this action space is Discrete\(2\)"):
        rescale_actions(gym.make("CartPole-v1"))
    with pytest.raises(ArtifactError, match=r"CartPole-v1 acts in Discrete\(2\)"):
        _rescale_actions(gym.make("CartPole-v1"))


def test_float64_values_beyond_float32_are_refused_before_they_turn_into_inf(tmp_path, monkeypatch):
    from rate.data.episodes import Episode, validate_episodes

    big = Episode(np.array([[0.0], [1e39]]), np.zeros(2, np.int64), np.zeros(2))  # finite in float64
    with pytest.raises(DatasetError, match=r"episode 0 has observations beyond float32's range"):
        validate_episodes([big], True, 2, "d")
    validate_episodes([Episode(np.array([[0.0], [1e38]]), np.zeros(2, np.int64), np.zeros(2))], True, 2, "d")
    # Rewards recorded in float64: checked before the loader casts them to float32 (as inf they
    # were reported as "NaN or inf", which the file does not hold).
    from minari.data_collector.episode_buffer import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))  # (the datasets it writes are its own)
    box = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    rewards = np.array([1.0, 1e39])  # finite in float64
    minari.create_dataset_from_buffers("tests/huge-reward-v0", [EpisodeBuffer(
        id=0, observations=np.zeros((3, 1), np.float32), actions=np.zeros(2, np.int64), rewards=rewards,
        terminations=[False, True], truncations=[False, False])], observation_space=box,
        action_space=gym.spaces.Discrete(2))
    with pytest.raises(DatasetError, match=r"tests/huge-reward-v0: episode 0 has rewards beyond float32's range"):
        load_minari_episodes("tests/huge-reward-v0")


def test_data_minari_cannot_decode_and_nan_actions_are_named(tmp_path, monkeypatch):
    """A Tuple space stored as one array (Minari writes it, then cannot decode it, asserting with no
    message) is named with a reason, not "cannot be read: " and nothing; a NaN action is refused
    as NaN, not first reported as clipped to the bounds."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    ends = {"terminations": [False, False, True], "truncations": [False, False, False]}
    pair = gym.spaces.Tuple((gym.spaces.Discrete(3), gym.spaces.Discrete(2)))
    minari.create_dataset_from_buffers("tests/one-array-tuple-v0", [EpisodeBuffer(
        id=0, observations=np.zeros((4, 2), np.int64), actions=np.array([0, 1, 0]), rewards=[1.0] * 3, **ends)],
        observation_space=pair, action_space=gym.spaces.Discrete(2))
    for read in (lambda: infer_from_dataset("tests/one-array-tuple-v0"),
                 lambda: load_minari_episodes("tests/one-array-tuple-v0", True)):
        with pytest.raises(DatasetError, match=r"cannot be read: AssertionError: its data does not match its "
                                               r"declared spaces$"):
            read()
    box = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    minari.create_dataset_from_buffers("tests/nan-action-v0", [EpisodeBuffer(
        id=0, observations=np.zeros((4, 1), np.float32), actions=np.array([[0.5], [np.nan], [0.0]], np.float32),
        rewards=[1.0] * 3, **ends)], observation_space=box, action_space=box)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (no "clipped" warning first)
        with pytest.raises(DatasetError, match=r"tests/nan-action-v0: episode 0 has NaN or inf in its actions"):
            load_minari_episodes("tests/nan-action-v0")


def test_recorded_render_mode_is_left_out_and_recorded_wrappers_are_kept():
    from gymnasium.envs.registration import EnvSpec, WrapperSpec

    from rate.rl.from_dataset import eval_env_from_spec

    spec = EnvSpec("CartPole-v1", entry_point="gymnasium.envs.classic_control:CartPoleEnv",
                   kwargs={"render_mode": "rgb_array", "sutton_barto_reward": True}, max_episode_steps=500)
    assert eval_env_from_spec(spec)["env_kwargs"] == {"sutton_barto_reward": True, "max_episode_steps": 500}
    assert eval_env_from_spec(spec)["env_wrappers"] == []
    rescale = WrapperSpec("RescaleObservation", "gymnasium.wrappers:RescaleObservation",
                          {"min_obs": -1.0, "max_obs": 1.0})
    spec.additional_wrappers = (rescale,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # plain data: applied at evaluation, nothing to warn about
        assert eval_env_from_spec(spec)["env_wrappers"] == [
            {"name": "RescaleObservation", "entry_point": "gymnasium.wrappers:RescaleObservation",
             "kwargs": {"min_obs": -1.0, "max_obs": 1.0}}]
    # Keywords that are not plain data (an array) cannot be written into the run config: named.
    arrays = WrapperSpec("RescaleObservation", "gymnasium.wrappers:RescaleObservation",
                         {"min_obs": np.zeros(4), "max_obs": np.ones(4)})
    spec.additional_wrappers = (rescale, arrays)
    with pytest.warns(UserWarning, match=r"recorded through the wrappers \['RescaleObservation'\], which evaluation"):
        assert len(eval_env_from_spec(spec)["env_wrappers"]) == 1
    # A recorded entry point that was itself a wrapper is left to gym.make only where this
    # registration still applies it (Pendulum-v1's entry point is PendulumEnv here).
    clip = WrapperSpec("ClipReward", "gymnasium.wrappers:ClipReward", {"min_reward": -1.0, "max_reward": 1.0})
    moved = EnvSpec("Pendulum-v1", entry_point="gymnasium.wrappers:ClipReward", additional_wrappers=(clip,),
                    max_episode_steps=200)
    assert [w["name"] for w in eval_env_from_spec(moved)["env_wrappers"]] == ["ClipReward"]
    # Keywords not recorded (a wrapper without RecordConstructorArgs: gym.make refuses such a
    # spec) are not guessed as {}.
    spec.additional_wrappers = (WrapperSpec("ClipReward", "gymnasium.wrappers:ClipReward", None),)
    with pytest.warns(UserWarning, match=r"\['ClipReward'\], which evaluation does not apply"):
        assert eval_env_from_spec(spec)["env_wrappers"] == []
    # The chain is kept up to the first that cannot be: a later one would wrap another environment.
    spec.additional_wrappers = (arrays, rescale)
    with pytest.warns(UserWarning, match=r"\['RescaleObservation', 'RescaleObservation'\], which evaluation"):
        assert eval_env_from_spec(spec)["env_wrappers"] == []
    # No time limit recorded, but gym.make applies the registered one (500 steps): nothing to say
    # (an id registered without one: test_the_projects_tasks_are_not_said_to_lack_a_time_limit).
    unlimited = EnvSpec("CartPole-v1", entry_point="gymnasium.envs.classic_control:CartPoleEnv")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert eval_env_from_spec(unlimited)["env_kwargs"] == {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a task that ends at its own episode_length is not warned about
        eval_env_from_spec(EnvSpec("rate/TMaze-v0", entry_point="rate_envs.tmaze:TMazeEnv",
                                   kwargs={"episode_length": 90}))


def test_unsupported_action_spaces_are_one_clear_error(datasets, tmp_path, monkeypatch):
    from minari.data_collector.episode_buffer import EpisodeBuffer

    space = gym.spaces.MultiDiscrete([2, 2])
    buffer = EpisodeBuffer(observations=[np.zeros(2, np.float32)] * 3, actions=[np.zeros(2, np.int64)] * 2,
                           rewards=[0.0, 1.0], terminations=[False, True], truncations=[False, False])
    minari.create_dataset_from_buffers("tests/multidiscrete-v0", [buffer], action_space=space,
                                       observation_space=gym.spaces.Box(-1, 1, (2,), np.float32))
    with pytest.raises(DatasetError, match="MultiDiscrete"):
        infer_from_dataset("tests/multidiscrete-v0")


def two_step_dataset(dataset_id: str, observations: int = 3) -> None:
    """A one-episode Minari dataset of 2 steps (Discrete(2) actions, Box(4) observations, no
    environment recorded) holding ``observations`` observations."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    buffer = EpisodeBuffer(observations=np.zeros((observations, 4), np.float32), actions=np.array([0, 1]),
                           rewards=[0.0, 1.0], terminations=[False, True], truncations=[False, False])
    minari.create_dataset_from_buffers(dataset_id, [buffer], action_space=gym.spaces.Discrete(2),
                                       observation_space=gym.spaces.Box(-1, 1, (4,), np.float32))


def test_episodes_with_more_observations_than_steps_plus_one_are_refused(datasets):
    """Observations are one per step and the final one (or one per step); more would be cut
    silently and could be misaligned with the actions: one clear error."""
    from rate.data.episodes import load_minari_episodes

    two_step_dataset("tests/extra-obs-v0", observations=5)
    with pytest.raises(DatasetError, match="episode 0 has 5 observations for 2 steps"):
        load_minari_episodes("tests/extra-obs-v0")


def test_a_dataset_without_an_environment_asks_for_one(datasets):
    from rate.config import ConfigError

    two_step_dataset("tests/no-env-v0")
    with pytest.raises(ConfigError, match="eval.env_id=ID"):
        config_for_dataset("tests/no-env-v0")
    assert config_for_dataset("tests/no-env-v0", overrides=["eval.env_id=CartPole-v1"]).eval.env_id == "CartPole-v1"
    # (an imported D4RL file records no environment: the id the user names brings D4RL's scores)
    hopper = config_for_dataset("tests/no-env-v0", overrides=["eval.env_id=Hopper-v5"]).eval
    assert hopper.ref_scores == [-20.272305, 3234.3]


def test_evaluating_in_another_environment_drops_the_recorded_ones_settings(datasets):
    # The pendulum dataset records InvertedPendulum-v5 (with its time limit) and reference scores.
    recorded = config_for_dataset("tests/pendulum-random-v0")
    assert recorded.eval.env_kwargs == {"max_episode_steps": 1000} and recorded.eval.ref_scores == [0.0, 1000.0]
    other = config_for_dataset("tests/pendulum-random-v0", overrides=["eval.env_id=InvertedDoublePendulum-v5"])
    assert other.eval.env_kwargs == {} and other.eval.ref_scores == []
    given = config_for_dataset("tests/pendulum-random-v0", overrides=[
        "eval.env_id=InvertedDoublePendulum-v5", "eval.env_kwargs={max_episode_steps: 50}", "eval.ref_scores=[1, 2]"])
    assert given.eval.env_kwargs == {"max_episode_steps": 50} and given.eval.ref_scores == [1.0, 2.0]
    # D4RL's scores follow the new id where D4RL scores it.
    hopper = config_for_dataset("tests/pendulum-random-v0", overrides=["eval.env_id=Hopper-v5"])
    assert len(hopper.eval.ref_scores) == 2 and hopper.eval.ref_scores != [0.0, 1000.0]


def test_one_keyword_given_for_another_environment_is_all_of_its_keywords():
    """eval.env_kwargs.max_episode_steps=50 with another eval.env_id: the recorded environment's
    other keywords (POPGym's task) do not follow into CartPole (a TypeError naming a keyword the
    user never wrote; with an environment that takes it, another task without a word)."""
    from rate.rl.from_dataset import _forget_other_environment

    evaluation = {"env_id": "CartPole-v1", "env_kwargs": {"task": "RepeatFirstMedium", "max_episode_steps": 50}}
    _forget_other_environment(evaluation, {"env_id": "rate/POPGym-v0", "env_kwargs": {"task": "RepeatFirstMedium"}},
                              {"env_id": "CartPole-v1", "env_kwargs": {"max_episode_steps": 50}})
    assert evaluation["env_kwargs"] == {"max_episode_steps": 50}


def test_non_finite_returns_and_small_grids_without_channels(datasets):
    from minari.data_collector.episode_buffer import EpisodeBuffer

    buffer = EpisodeBuffer(observations=np.zeros((3, 4), np.float32), actions=np.array([0, 1]),
                           rewards=[0.0, np.inf], terminations=[False, True], truncations=[False, False])
    minari.create_dataset_from_buffers("tests/inf-return-v0", [buffer], action_space=gym.spaces.Discrete(2),
                                       observation_space=gym.spaces.Box(-1, 1, (4,), np.float32))
    with pytest.raises(DatasetError, match="NaN or inf"):
        infer_from_dataset("tests/inf-return-v0")
    space = gym.spaces.Box(0, 1, (5, 5, 2), np.float32)  # two planes of a 5 x 5 grid: no image channels
    buffer = EpisodeBuffer(observations=np.zeros((3, 5, 5, 2), np.float32), actions=np.array([0, 1]),
                           rewards=[0.0, 1.0], terminations=[False, True], truncations=[False, False])
    minari.create_dataset_from_buffers("tests/planes-v0", [buffer], action_space=gym.spaces.Discrete(2),
                                       observation_space=space)
    inferred = infer_from_dataset("tests/planes-v0")
    assert inferred["model"]["obs_kind"] == "vector" and inferred["model"]["obs_shape"] == [50]


del foreign_envs  # imported for its registrations


def test_small_images_are_read_as_vectors_and_a_small_image_model_is_refused(datasets):
    from rate.config import ConfigError, from_dict
    from rate.rl.experiment import RATEExperimentConfig

    space = gym.spaces.Box(0, 255, (7, 7, 3), np.uint8)
    buffer = {"observations": np.zeros((3, 7, 7, 3), np.uint8), "actions": np.array([0, 1]), "rewards": [0.0, 1.0],
              "terminations": [False, True], "truncations": [False, False]}
    from minari.data_collector.episode_buffer import EpisodeBuffer

    minari.create_dataset_from_buffers("tests/small-image-v0", [EpisodeBuffer(**buffer)], observation_space=space,
                                       action_space=gym.spaces.Discrete(2))
    inferred = infer_from_dataset("tests/small-image-v0")
    assert inferred["model"]["obs_kind"] == "vector" and inferred["model"]["obs_shape"] == [147]
    assert inferred["eval"]["wrappers"] == ["FlattenObservation"]
    with pytest.raises(ConfigError, match="at least 36 x 36"):
        from_dict(RATEExperimentConfig, {"model": {"obs_kind": "image", "obs_shape": [7, 7, 3], "channels_last": True}})


def test_image_scale_follows_the_declared_bounds_and_rtg_scale_the_largest_return_to_go(datasets):
    """A 0/1 mask stored as uint8 is not divided by 255; a step penalty with a goal bonus (returns
    of 1, returns-to-go up to 100) is scaled by the returns-to-go, not by the returns."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    rewards = [-1.0] * 99 + [100.0]
    for name, space in (("mask-image", gym.spaces.Box(0, 1, (40, 40, 1), np.uint8)),
                        ("pixel-image", gym.spaces.Box(0, 255, (40, 40, 1), np.uint8)),
                        ("unbounded-image", gym.spaces.Box(-np.inf, np.inf, (40, 40, 1), np.float32))):
        buffer = EpisodeBuffer(observations=np.zeros((101, 40, 40, 1), space.dtype), actions=np.zeros(100, np.int64),
                               rewards=rewards, terminations=[False] * 99 + [True], truncations=[False] * 100)
        minari.create_dataset_from_buffers(f"tests/{name}-v0", [buffer], observation_space=space, jpeg_encoding=False,
                                           action_space=gym.spaces.Discrete(2))  # (PIL has no (H, W, 1) mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # bounded images: no warning
        mask, pixels = infer_from_dataset("tests/mask-image-v0"), infer_from_dataset("tests/pixel-image-v0")
    assert mask["model"]["obs_kind"] == "image" and mask["model"]["obs_scale"] == 1.0
    assert pixels["model"]["obs_scale"] == pytest.approx(1 / 255)
    with pytest.warns(UserWarning, match="declare no single pixel range the scale can be read from: the CNN reads"):
        assert infer_from_dataset("tests/unbounded-image-v0")["model"]["obs_scale"] == 1.0
    from rate.rl.from_dataset import _pixel_scale

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _pixel_scale(gym.spaces.Box(0, 15, (40, 40, 3), np.uint8), "d") == pytest.approx(1 / 15)
        assert _pixel_scale(gym.spaces.Box(0.0, 255.0, (40, 40, 3), np.float32), "d") == pytest.approx(1 / 255)
        assert _pixel_scale(gym.spaces.Box(-1.0, 1.0, (40, 40, 3), np.float32), "d") == 1.0
    big = np.finfo(np.float32).max  # a placeholder bound, not a pixel range: not divided by it
    with pytest.warns(UserWarning, match="declare no single pixel range"):
        assert _pixel_scale(gym.spaces.Box(0.0, big, (40, 40, 3), np.float32), "d") == 1.0
    per_channel = np.broadcast_to(np.array([255, 255, 1], np.uint8), (40, 40, 3))  # RGB and a 0/1 mask
    with pytest.warns(UserWarning, match="differ by channel: every channel is divided by the largest, 255"):
        assert _pixel_scale(gym.spaces.Box(0, per_channel, dtype=np.uint8), "d") == pytest.approx(1 / 255)
    assert mask["eval"]["target_return"] == 1.0 and mask["model"]["rtg_scale"] == 100.0


def test_a_rank_3_observation_without_a_channel_axis_is_read_as_a_vector(datasets):
    from minari.data_collector.episode_buffer import EpisodeBuffer

    space = gym.spaces.Box(0.0, 1.0, (40, 40, 40), np.float32)  # a voxel grid: no axis of 1, 3 or 4 channels
    buffer = {"observations": np.zeros((3, 40, 40, 40), np.float32), "actions": np.array([0, 1]),
              "rewards": [0.0, 1.0], "terminations": [False, True], "truncations": [False, False]}
    minari.create_dataset_from_buffers("tests/voxels-v0", [EpisodeBuffer(**buffer)], observation_space=space,
                                       action_space=gym.spaces.Discrete(2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inferred = infer_from_dataset("tests/voxels-v0")
    (warning,) = caught  # (not also called an image inside the observations)
    assert re.search(r"\(40, 40, 40\) have no channel axis .* read as one flat vector", str(warning.message))
    assert inferred["model"]["obs_kind"] == "vector" and inferred["model"]["obs_shape"] == [64000]
    assert inferred["eval"]["wrappers"] == ["FlattenObservation"]
    (episode,), _ = load_minari_episodes("tests/voxels-v0", flatten_observations=True)
    assert episode.observations.shape[1:] == (64000,)


def test_an_image_inside_a_dict_is_flattened_with_a_warning(datasets):
    from minari.data_collector.episode_buffer import EpisodeBuffer

    space = gym.spaces.Dict({"camera": gym.spaces.Box(0, 255, (40, 40, 3), np.uint8),
                             "position": gym.spaces.Box(-1.0, 1.0, (2,), np.float32)})
    buffer = EpisodeBuffer(observations={"camera": np.zeros((3, 40, 40, 3), np.uint8),
                                         "position": np.zeros((3, 2), np.float32)},
                           actions=np.array([0, 1]), rewards=[0.0, 1.0], terminations=[False, True],
                           truncations=[False, False])
    minari.create_dataset_from_buffers("tests/dict-image-v0", [buffer], observation_space=space,
                                       action_space=gym.spaces.Discrete(2))
    with pytest.warns(UserWarning, match="the image camera inside Dict observations is flattened into one vector"):
        inferred = infer_from_dataset("tests/dict-image-v0")
    assert inferred["model"]["obs_kind"] == "vector" and inferred["model"]["obs_shape"] == [40 * 40 * 3 + 2]


def test_a_run_that_samples_is_evaluated_sampling(datasets, tmp_path):
    rate.train(dataset="tests/dict-cue-v0", overrides=TINY + ["eval.sample=true", "eval.seed=3"], out=tmp_path / "run",
               progress=False)
    policy = rate.load_policy(tmp_path / "run")
    assert policy._backend.sample and policy._backend.seed == 3
    assert not rate.load_policy(tmp_path / "run", sample=False)._backend.sample


def test_a_failed_recording_leaves_the_video_folder_as_it_was(datasets, tmp_path, monkeypatch):
    """Videos are staged and moved into the folder only when every rollout has finished."""
    pytest.importorskip("moviepy", reason="the video extra (moviepy) is not installed")
    import rate.rl.experiment

    rate.train(dataset="tests/image-cue-v0", model="bc_mlp", overrides=TINY, out=tmp_path / "run", progress=False)
    folder = tmp_path / "video"
    folder.mkdir()
    (folder / "ForeignImageCue-v0-env0-episode-0.mp4").write_bytes(b"an earlier video")
    seen = []

    def fail_after_recording(*args, **kwargs):  # the rollouts ran and wrote their videos
        seen.append(sorted(p.name for p in folder.rglob("*.mp4")))
        raise RuntimeError("interrupted")

    monkeypatch.setattr(rate.rl.experiment, "summarise", fail_after_recording)
    with pytest.raises(RuntimeError, match="interrupted"):
        rate.evaluate(tmp_path / "run", episodes=2, record_video=folder)
    assert len(seen[0]) == 3  # the earlier video and the two staged ones
    assert [p.name for p in folder.iterdir()] == ["ForeignImageCue-v0-env0-episode-0.mp4"]
    assert (folder / "ForeignImageCue-v0-env0-episode-0.mp4").read_bytes() == b"an earlier video"


def test_make_env_gives_the_environment_as_the_policy_was_trained_on_it(datasets, tmp_path):
    policy, _ = rate.train(dataset="tests/dict-cue-v0", overrides=TINY, out=tmp_path / "run", progress=False)
    env = policy.make_env()
    assert isinstance(gym.make("ForeignDictCue-v0").observation_space, gym.spaces.Dict)
    assert env.observation_space.shape == policy.obs_shape  # flattened as the training data was
    obs, _ = env.reset(seed=0)
    policy.reset()
    action = policy.act(obs)
    for _ in range(3):
        obs, reward, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
        action = policy.act(obs, reward)
    env.close()
    capped = policy.make_env(length=3)  # the inferred length keyword: the time limit
    capped.reset(seed=0)
    assert capped.step(0)[3] is False and capped.step(0)[3] is False and capped.step(0)[3] is True
    capped.close()


def test_actions_that_cannot_be_rescaled_are_named():
    """Rescaling to [-1, 1] needs a Box with finite bounds, each low below its high: a dimension
    fixed at one value (it would divide by zero into NaN, then be blamed on the data) and a
    Discrete space are refused in words."""
    from rate.data.spaces import rescale_to_unit

    fixed = gym.spaces.Box(low=np.array([-2.0, 0.5]), high=np.array([2.0, 0.5]), dtype=np.float32)
    with pytest.raises(ValueError, match=r"low bound is not below the high one \(\[1\]\)"):
        rescale_to_unit(np.zeros((3, 2)), fixed)
    with pytest.raises(ValueError, match="continuous \\(Box\\) actions"):
        rescale_to_unit(np.zeros(3), gym.spaces.Discrete(3))
    box = gym.spaces.Box(low=np.array([-2.0, 0.0]), high=np.array([2.0, 1.0]), dtype=np.float32)
    assert np.allclose(rescale_to_unit(np.array([[2.0, 0.0], [0.0, 0.5]]), box), [[1.0, -1.0], [0.0, 0.0]])


def test_stacked_frames_go_to_the_cnn_and_text_observations_are_refused_at_inference(datasets):
    """An image whose channels are neither 1, 3 nor 4 (stacked frames) has its channel axis at the
    end shorter than both others; a Text field (Gymnasium calls it flattenable) is refused when the
    config is inferred, not when training starts."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    from rate.data.spaces import image_channels_last

    assert image_channels_last((84, 84, 12)) and not image_channels_last((9, 64, 64))
    assert image_channels_last((64, 64, 3)) and not image_channels_last((4, 84, 84))
    with pytest.raises(ValueError, match="nor one shorter than the other two"):
        image_channels_last((64, 64, 64))
    space = gym.spaces.Box(0.0, 1.0, (40, 40, 12), np.float32)  # (Minari's HDF5 stores uint8 frames as PNG: 1-4 channels)
    buffer = EpisodeBuffer(observations=np.zeros((3, 40, 40, 12), np.float32), actions=np.array([0, 1]),
                           rewards=[0.0, 1.0], terminations=[False, True], truncations=[False, False])
    minari.create_dataset_from_buffers("tests/stacked-v0", [buffer], action_space=gym.spaces.Discrete(2),
                                       observation_space=space)
    inferred = infer_from_dataset("tests/stacked-v0")["model"]
    assert inferred["obs_kind"] == "image" and inferred["channels_last"] and inferred["obs_shape"] == [40, 40, 12]
    space = gym.spaces.Dict({"mission": gym.spaces.Text(5), "x": gym.spaces.Box(-1, 1, (2,), np.float32)})
    buffer = EpisodeBuffer(observations={"mission": ["go", "go", "go"], "x": np.zeros((3, 2), np.float32)},
                           actions=np.array([0, 1]), rewards=[0.0, 1.0], terminations=[False, True],
                           truncations=[False, False])
    minari.create_dataset_from_buffers("tests/text-v0", [buffer], action_space=gym.spaces.Discrete(2),
                                       observation_space=space)
    with pytest.raises(DatasetError, match="no Text, Graph, Sequence, OneOf"):
        infer_from_dataset("tests/text-v0")


def test_actions_recorded_outside_the_bounds_are_clipped_with_a_warning(datasets):
    from minari.data_collector.episode_buffer import EpisodeBuffer

    space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    buffer = EpisodeBuffer(observations=np.zeros((4, 3), np.float32), actions=np.array([[2.5], [0.0], [-1.0]]),
                           rewards=[0.0, 0.0, 1.0], terminations=[False, False, True], truncations=[False] * 3)
    minari.create_dataset_from_buffers("tests/noisy-actions-v0", [buffer], action_space=space,
                                       observation_space=gym.spaces.Box(-1, 1, (3,), np.float32))
    with pytest.warns(UserWarning, match=r"1 of 3 recorded action values \(33.33%\) lie outside"):
        (episode,), _ = load_minari_episodes("tests/noisy-actions-v0", rescale_actions=True)
    np.testing.assert_allclose(episode.actions[:, 0], [1.0, 0.0, -0.5])


def test_an_evaluation_environment_recorded_by_an_older_gymnasium_is_read():
    """Records written before Gymnasium 1.0 carry fields (autoreset, apply_api_compatibility) that
    EnvSpec no longer takes; the evaluation environment they describe is kept, not replaced by the
    collection one."""
    import json

    from rate.data.episodes import env_spec_from_json

    record = json.loads(gym.spec("CartPole-v1").to_json()) | {"max_episode_steps": 300, "autoreset": False,
                                                              "apply_api_compatibility": False}
    spec = env_spec_from_json(json.dumps(record))
    assert spec.id == "CartPole-v1" and spec.max_episode_steps == 300


def test_a_dataset_evaluated_as_it_says_draws_no_another_task_warning(datasets):
    """A dataset whose evaluation environment differs from its recording on purpose (a keyword of
    its own): evaluating as the dataset says is no "another task" warning; evaluating otherwise is."""
    import warnings

    from rate.rl.experiment import load_dataset_for

    record("CartPole-v1", "tests/cartpole-eval-v0", 2, lambda env, rng: int(rng.integers(2)),
           eval_env=gym.make("CartPole-v1", sutton_barto_reward=True))
    cfg = config_for_dataset("tests/cartpole-eval-v0", "bc_mlp", overrides=TINY)
    assert cfg.eval.env_kwargs["sutton_barto_reward"] is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset_for(cfg)
    other = config_for_dataset("tests/cartpole-eval-v0", "bc_mlp", overrides=[*TINY, "eval.env_kwargs={sutton_barto_reward: false}"])
    with pytest.warns(UserWarning, match="was meant to be evaluated in CartPole-v1 with sutton_barto_reward=True"):
        load_dataset_for(other)


def test_the_projects_tasks_are_not_said_to_lack_a_time_limit():
    """POPGym's tasks end by themselves: their recorded spec has no time limit, which is no reason
    to warn (every rate-train --dataset rate/popgym/... printed that it was); another id is."""
    import dataclasses

    from rate.data.env_plugins import load_env_plugins
    from rate.rl.from_dataset import eval_env_from_spec

    load_env_plugins()
    popgym = dataclasses.replace(gym.spec("rate/POPGym-v0"), kwargs={"task": "RepeatFirstEasy"}, max_episode_steps=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert eval_env_from_spec(popgym)["env_kwargs"] == {"task": "RepeatFirstEasy"}
    gym.register("NoLimitCue-v0", entry_point="tests.foreign_envs:ForeignDictCue")  # (no max_episode_steps)
    try:
        with pytest.warns(UserWarning, match="recorded without a time limit.*max_episode_steps=N"):
            eval_env_from_spec(gym.spec("NoLimitCue-v0"))
    finally:
        del gym.registry["NoLimitCue-v0"]


def test_an_episode_length_beyond_the_recorded_time_limit_raises_the_limit():
    """A dataset recorded with episode_length 90 under a 100-step time limit, evaluated at 300:
    the limit would have truncated every episode at 100 without a word."""
    from rate.data.env_plugins import load_env_plugins
    from rate.rl.experiment import EvalConfig, eval_env_kwargs, make_eval_env

    load_env_plugins()  # (rate/TMaze-v0, as a run's evaluation loads it)
    ev = EvalConfig(env_id="rate/TMaze-v0", env_kwargs={"episode_length": 90, "max_episode_steps": 100})
    assert eval_env_kwargs(ev, 300) == {"episode_length": 300, "max_episode_steps": 300}
    assert eval_env_kwargs(ev, 50) == {"episode_length": 50, "max_episode_steps": 100}  # (a longer limit stays)
    assert eval_env_kwargs(ev, None) == ev.env_kwargs
    env = make_eval_env(ev, 300)
    assert env.spec.max_episode_steps == 300
    env.close()
    # The standalone runner (rate-play-onnx) applies the same rule: an exported policy plays the
    # same episodes as rate-eval.
    from rate.deploy.onnx_runner import make_env_factory

    meta = {"env_id": "rate/TMaze-v0", "env_kwargs": ev.env_kwargs, "length_kwarg": "episode_length"}
    for length, limit in ((300, 300), (50, 100)):
        env = make_env_factory(meta, length)()
        assert env.spec.max_episode_steps == limit and env.spec.kwargs["episode_length"] == length
        env.close()


def test_the_runner_refuses_actions_from_zero_in_an_environment_without_discrete_actions(monkeypatch):
    """`rate-play-onnx --env` keeps the run's wrappers: ActionsFromZero in an environment with
    Box actions is one ArtifactError (it was an AttributeError traceback), and the environment
    made for it is closed."""
    from rate.deploy.onnx_runner import ArtifactError, make_env_factory

    closed = []
    close = gym.Wrapper.close  # (gym.make's outer wrappers)
    monkeypatch.setattr(gym.Wrapper, "close", lambda self: closed.append(type(self).__name__) or close(self))
    meta = {"env_id": "Pendulum-v1", "config": {"eval": {"wrappers": ["ActionsFromZero"]}}}
    with pytest.raises(ArtifactError, match=r"ActionsFromZero.*Box"):
        make_env_factory(meta, None)()
    assert closed
    # rate-eval's environment alike: the library's wrapper refuses it, and what was made is closed.
    from rate.rl.experiment import EvalConfig, make_eval_env

    closed.clear()
    with pytest.raises(ValueError):
        make_eval_env(EvalConfig(env_id="Pendulum-v1", wrappers=["ActionsFromZero"]))
    assert closed


def test_an_eval_section_that_is_not_a_mapping_is_one_error(datasets, tmp_path):
    """The dataset's evaluation settings are read before the config's types are checked: an eval
    section that is no mapping (a YAML `eval:` with every key commented out) or an env_id that is
    no string is one ConfigError, as without --dataset."""
    for override, pattern in (("eval=5", r"eval: expected a mapping for EvalConfig, got 5"),
                              ("eval=null", r"eval: expected a mapping for EvalConfig, got None"),
                              ("eval.env_id=[1]", r"eval.env_id: expected str, got \[1\]")):
        with pytest.raises(ConfigError, match=pattern):
            config_for_dataset("tests/pendulum-random-v0", overrides=[override])
    (tmp_path / "empty_eval.yaml").write_text("eval:\n  # episodes: 5\n")
    with pytest.raises(ConfigError, match=r"empty_eval.yaml on tests/pendulum-random-v0: eval: expected a mapping"):
        config_for_dataset("tests/pendulum-random-v0", config=tmp_path / "empty_eval.yaml")


def test_the_swept_length_is_the_keyword_the_environment_names_though_its_data_records_another():
    """T-Maze data records corridor_length (the generator's env), MiniGrid data its grid size: a
    run config made from either sweeps the environment's own length keyword, so T = 30 plays a
    28-cell corridor (under max_episode_steps, the inference before, it played the recorded
    88-cell corridor cut off at 30 steps, and T = 900 played T = 90)."""
    from gymnasium.envs.registration import EnvSpec

    from rate.data.env_plugins import load_env_plugins
    from rate.rl.experiment import EvalConfig, make_eval_env
    from rate.rl.from_dataset import eval_env_from_spec

    load_env_plugins()
    tmaze = eval_env_from_spec(EnvSpec("rate/TMaze-v0", entry_point="rate_envs.tmaze:TMazeEnv",
                                       kwargs={"corridor_length": 88}, max_episode_steps=None))
    assert tmaze["length_kwarg"] == "episode_length" and tmaze["env_kwargs"] == {"corridor_length": 88}
    ev = EvalConfig(env_id="rate/TMaze-v0", length_kwarg=tmaze["length_kwarg"], env_kwargs=tmaze["env_kwargs"])
    assert make_eval_env(ev, 30).unwrapped.corridor_length == 28
    grid = eval_env_from_spec(EnvSpec("rate/MiniGridMemory-v0", entry_point="rate_envs.minigrid_memory:MiniGridMemoryEnv",
                                      kwargs={"size": 13}, max_episode_steps=None))
    assert grid["length_kwarg"] == "size"


def test_an_environment_the_user_names_brings_its_own_length_keyword(datasets):
    """Another environment than the recorded one, or one named for data recorded without any:
    its own length keyword (they took max_episode_steps, which plays T-Maze's default corridor
    under a time limit), unless the user gives one."""
    def swept(dataset: str, *overrides: str) -> str:
        return config_for_dataset(dataset, "rate", overrides=[*TINY, *overrides]).eval.length_kwarg

    assert swept("tests/cartpole-random-v0") == "max_episode_steps"  # (CartPole declares none)
    assert swept("tests/cartpole-random-v0", "eval.env_id=rate/TMaze-v0") == "episode_length"
    assert swept("tests/cartpole-random-v0", "eval.env_id=rate/MiniGridMemory-v0") == "size"
    assert swept("tests/no-environment-v0", "eval.env_id=rate/TMaze-v0") == "episode_length"
    assert swept("tests/no-environment-v0", "eval.env_id=rate/TMaze-v0",
                 "eval.length_kwarg=corridor_length") == "corridor_length"
