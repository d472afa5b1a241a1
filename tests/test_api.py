"""The public API: unbatched and batched observations, per-environment restarts, clear errors,
train and evaluate through the README's example.  That a checkpoint, its .pt2 and its .onnx act
alike through rate.load_policy is tested in tests/test_export.py, on its exported artifacts."""

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import rate
import rate.api
from rate.checkpoint import CheckpointError, save_checkpoint
from rate.config import ConfigError, to_dict
from rate.core.rmt import RMTConfig
from rate.rl.experiment import CHECKPOINT_KIND, RATEExperimentConfig
from rate.rl.model import RATEConfig, RATEModel

ROOT = Path(__file__).resolve().parents[1]


def checkpoint(tmp_path: Path, **model) -> Path:
    torch.manual_seed(0)
    backbone = RMTConfig(d_model=32, n_layers=2, n_heads=2, d_head=16, d_inner=32, num_mem_tokens=2,
                         memory_update="mrv", mrv_heads=2)
    cfg = RATEExperimentConfig(model=RATEConfig(backbone=backbone, segment_steps=3, num_segments=2, obs_shape=[4],
                                                **model))
    return save_checkpoint(tmp_path / "ckpt", RATEModel(cfg.model), CHECKPOINT_KIND, to_dict(cfg))


def test_a_window_policy_acts_and_evaluates_through_the_api_restarting_all_rows_together(tmp_path):
    """DT's window policy (policy: window) through load_policy and evaluate: past its window, then
    a new episode for every row (the same first step as after reset); a new episode for some rows
    only is refused (it has no per-row state)."""
    torch.manual_seed(0)
    backbone = RMTConfig(d_model=32, n_layers=2, n_heads=2, d_head=16, d_inner=32, num_mem_tokens=0)
    cfg = RATEExperimentConfig(model=RATEConfig(backbone=backbone, segment_steps=6, num_segments=1, obs_shape=[4]),
                               policy="window")
    path = save_checkpoint(tmp_path / "dt", RATEModel(cfg.model), CHECKPOINT_KIND, to_dict(cfg))
    policy = rate.load_policy(path)
    policy.reset(2)
    first = policy.act(np.zeros((2, 4), np.float32))
    first_output = policy.last_output.copy()
    for t in range(8):  # (the 6-step window slides)
        policy.act(np.full((2, 4), t, np.float32), np.zeros(2))
    with pytest.raises(ValueError, match="restarts all environments together"):
        policy.act(np.zeros((2, 4), np.float32), np.zeros(2), done=np.array([True, False]))
    again = policy.act(np.zeros((2, 4), np.float32), np.zeros(2), done=np.array([True, True]))
    np.testing.assert_array_equal(again, first)
    np.testing.assert_allclose(policy.last_output, first_output, atol=1e-6)
    result = rate.evaluate(path, lengths=[9], episodes=2)
    assert set(result) == {9} and result[9]["success"] in (0.0, 0.5, 1.0)  # (the mean over 2 episodes)
    assert rate.evaluate(path, lengths=[9], episodes=2) == result  # the same seeds: the same episodes


def test_one_observation_gives_one_action_and_a_batch_a_batch(tmp_path):
    policy = rate.load_policy(checkpoint(tmp_path))
    with pytest.raises(RuntimeError, match="reset"):
        policy.act(np.zeros(4))
    policy.reset()
    action = policy.act(np.zeros(4))
    assert np.ndim(action) == 0 and 0 <= int(action) < 4
    assert policy.last_output.shape == (1, 4)
    policy.act(np.ones(4), 1.0)
    with pytest.raises(ValueError, match="act\\(\\) without reward"):  # it would condition on a stale return
        policy.act(np.ones(4))
    policy.act(np.ones(4), done=True)  # a new episode needs none
    policy.reset(2)
    assert policy.act(np.zeros((2, 4))).shape == (2,)
    with pytest.raises(ValueError, match=r"after reset\(2\) act\(\) takes a batch of shape \(2, 4\), one row per "
                                         r"environment; one of shape \(4,\) needs reset\(1\)"):
        policy.act(np.zeros(4))
    with pytest.raises(ValueError, match=r"observation of shape \(2, 5\)"):
        policy.act(np.zeros((2, 5)))
    # One reward and one done flag per environment, named when they are not.
    policy.act(np.zeros((2, 4)), np.zeros(2))
    with pytest.raises(ValueError, match=r"reward has 1 entries; after reset\(2\) act\(\) takes one per environment"):
        policy.act(np.zeros((2, 4)), np.zeros(1))
    with pytest.raises(ValueError, match=r"done has 3 entries"):
        policy.act(np.zeros((2, 4)), np.zeros(2), done=[False, False, True])
    # A NaN reward would turn that environment's return-to-go and actions NaN for the rest of its
    # episode; where the environment starts over with this observation it does not count.
    with pytest.raises(ValueError, match=r"reward nan for environment 1: a NaN or infinite reward"):
        policy.act(np.zeros((2, 4)), [0.0, np.nan])
    policy.act(np.zeros((2, 4)), [0.0, np.nan], done=[False, True])
    # A target return set after reset applies from the next reset on: said, not silently ignored
    # (and nothing is said when a reset follows, the documented use).
    policy.target_return = 0.5
    with pytest.warns(UserWarning, match=r"target_return was set after reset\(\): it takes effect at the next"):
        policy.act(np.zeros((2, 4)), np.zeros(2))
    assert policy.target_return == 0.5
    policy.target_return = 0.7
    policy.reset(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        policy.act(np.zeros((2, 4)))
    with pytest.raises(TypeError, match=r"a Dict observation: .* policy.make_env\(\)"):
        policy.act({"position": np.zeros(2), "cue": np.zeros(2)})
    # The eager model behind a checkpoint policy, to save or inspect; saved, it keeps the run's config.
    assert isinstance(policy.model, RATEModel)
    assert torch.equal(policy.model.head.linear.weight, RATEModel.from_pretrained(tmp_path / "ckpt").head.linear.weight)
    ran = rate.load_policy(checkpoint(tmp_path / "cartpole"))
    ran.model.run_config.eval.env_id, ran.model.run_config.dataset_id = "CartPole-v1", "some/data-v0"
    ran.model.save_pretrained(tmp_path / "copy")
    copy = RATEModel.from_pretrained(tmp_path / "copy").run_config
    assert (copy.eval.env_id, copy.dataset_id) == ("CartPole-v1", "some/data-v0")  # not T-Maze's defaults


def test_a_first_step_that_fails_is_still_the_first(tmp_path, monkeypatch):
    """act() raising on the first step after reset (here, its backend) leaves the policy where it
    was: the next act needs no reward, as a first step."""
    policy = rate.load_policy(checkpoint(tmp_path))
    policy.reset()
    real = policy._backend.act

    def fails(*args):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(policy._backend, "act", fails)
    with pytest.raises(RuntimeError, match="out of memory"):
        policy.act(np.zeros(4))
    monkeypatch.setattr(policy._backend, "act", real)
    assert 0 <= int(policy.act(np.zeros(4))) < 4  # no "act() without reward"


def test_a_restarted_environment_starts_over_while_the_others_go_on(tmp_path):
    """done=True for one row: its actions from then on equal a fresh single-environment policy's,
    and the other row carries on exactly as in a policy that never restarted anything."""
    policy, alone, never = (rate.load_policy(checkpoint(tmp_path)) for _ in range(3))
    rng = np.random.default_rng(1)
    policy.reset(2)
    never.reset(2)
    for t in range(5):
        obs = rng.standard_normal((2, 4))
        policy.act(obs, None if t == 0 else np.ones(2))
        never.act(obs, None if t == 0 else np.ones(2))
    alone.reset(1)
    for t in range(7):
        obs = rng.standard_normal((2, 4))
        both = policy.act(obs, np.zeros(2), done=[t == 0, False])  # (row 0's reward unused where it restarts)
        assert both[0] == alone.act(obs[0], None if t == 0 else 0.0)
        np.testing.assert_allclose(policy.last_output[0], alone.last_output[0], atol=1e-5)
        assert both[1] == never.act(obs, np.zeros(2))[1]
        np.testing.assert_allclose(policy.last_output[1], never.last_output[1], atol=1e-5)


def test_what_is_not_a_policy_is_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="nothing: no such checkpoint folder or .pt2 / .onnx file"):
        rate.load_policy(tmp_path / "nothing")
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(CheckpointError, match="neither a checkpoint folder nor a .pt2 / .onnx file"):
        rate.load_policy(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        rate.load_policy(tmp_path / "empty")


def test_rate_eval_of_an_artifact_it_cannot_read_is_one_error_line(tmp_path, capsys):
    from rate.cli.evaluate import main

    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    for path in (tmp_path / "missing.onnx", tmp_path / "broken.onnx"):
        assert main([str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    with pytest.raises(SystemExit) as usage:  # the plot goes beside the JSON: it cannot be the JSON
        main([str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "results.png")])
    assert usage.value.code == 2 and "--out is the results JSON" in capsys.readouterr().err


def test_rate_eval_of_an_artifact_whose_graph_fails_while_playing_is_one_error_line(tmp_path, monkeypatch, capsys):
    """The runtime failing in the middle of the rollouts (onnxruntime's INVALID_ARGUMENT, a .pt2
    past its batch bound) is the library's CheckpointError, as when an artifact cannot be opened:
    rate-eval printed the runner's ArtifactError as a traceback."""
    import rate.deploy.export
    from rate.cli.evaluate import main
    from rate.config import to_dict
    from rate.deploy.onnx_runner import EXPORT_FORMAT, StepPolicy
    from rate.rl.model import RATEConfig

    model = to_dict(RATEConfig())

    def run(arrays):
        raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Unexpected input data type")

    meta = {"format": EXPORT_FORMAT, "format_version": 2, "state": [{"name": "rtg", "shape": ["batch"],
            "dtype": "float64"}], "obs_shape": model["obs_shape"], "act_dim": model["act_dim"], "target_return": 1.0,
            "act_kind": model["act_kind"], "env_id": "rate/TMaze-v0",
            "config": {"eval": {"env_id": "rate/TMaze-v0", "episodes": 2, "lengths": [10]}, "model": model}}
    monkeypatch.setattr(rate.deploy.export, "open_artifact", lambda path: StepPolicy(meta, run, str(path)))
    assert main([str(tmp_path / "p.onnx"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "INVALID_ARGUMENT" in err, err


def test_evaluate_plays_the_runs_environment_even_when_its_eval_settings_are_of_an_older_version(tmp_path):
    policy = rate.load_policy(checkpoint(tmp_path))
    policy.run_config["eval"] = {"env_id": "rate/Nowhere-v0", "a_field_since_removed": 1}
    with pytest.raises(ConfigError, match="eval: cannot make 'rate/Nowhere-v0'"):  # not EvalConfig's default T-Maze
        rate.evaluate(policy, episodes=1)


def test_evaluate_refuses_an_environment_that_does_not_fit_before_the_rollouts(tmp_path, monkeypatch):
    import rate.rl.experiment

    policy = rate.load_policy(checkpoint(tmp_path))
    with monkeypatch.context() as patched:
        patched.setattr(rate.rl.experiment, "rollout_lengths", lambda *a, **k: pytest.fail("rollouts started"))
        with pytest.raises(ConfigError, match="'CartPole-v1' with {} gives action space Discrete\\(2\\), but the "
                                              "config says 4 discrete actions"):
            rate.evaluate(policy, env_id="CartPole-v1", episodes=1)
    # A model section of an older version: the environment is still made, its spaces not compared.
    policy.run_config["model"] = {**policy.run_config["model"], "a_field_since_removed": 1}
    result = rate.evaluate(policy, lengths=[5], episodes=2)
    assert set(result) == {5} and result[5]["success"] in (0.0, 0.5, 1.0)  # (the mean over 2 episodes)


def test_another_environment_gets_none_of_the_runs_keywords(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("rate.rl.experiment.check_envs", lambda ev, lengths, model: seen.append(ev))
    monkeypatch.setattr("rate.rl.experiment.rollout_lengths", lambda ev, *a, **k: {})
    policy = rate.load_policy(checkpoint(tmp_path))
    policy.run_config["eval"] = {**policy.run_config["eval"], "env_kwargs": {"maze": "its own"}, "ref_scores": [0, 1]}
    rate.evaluate(policy, episodes=1)
    rate.evaluate(policy, env_id="rate/Elsewhere-v0", episodes=1)
    rate.evaluate(policy, env_id="rate/Elsewhere-v0", env_kwargs={"size": 9}, episodes=1)
    rate.evaluate(policy, env_id="rate_envs:" + policy.run_config["eval"]["env_id"], episodes=1)  # the same one
    rate.evaluate(policy, env_id="Hopper-v5", episodes=1)  # one D4RL scores: its reference returns (rate-eval --env)
    assert [(ev.env_kwargs, ev.ref_scores) for ev in seen] == [
        ({"maze": "its own"}, [0.0, 1.0]), ({}, []), ({"size": 9}, []), ({"maze": "its own"}, [0.0, 1.0]),
        ({}, [-20.272305, 3234.3])]


def test_a_target_return_that_is_not_a_number_is_refused(tmp_path):
    path = checkpoint(tmp_path)
    with pytest.raises(ValueError, match="target return must be a finite number, got nan"):
        rate.load_policy(path, target_return=float("nan"))
    policy = rate.load_policy(path)
    policy.target_return = float("inf")
    with pytest.raises(ValueError, match="finite number, got inf"):
        policy.reset()


def test_rate_eval_names_a_wrong_environment_in_one_line(tmp_path, capsys):
    from rate.cli.evaluate import main

    assert main([str(checkpoint(tmp_path)), "--env", "rate/Nowhere-v0", "--episodes", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: eval: cannot make 'rate/Nowhere-v0'") and err.count("\n") == 1, err


@pytest.mark.parametrize("device, pattern", [("tpu", "not a torch device"), ("meta", "runs on cpu or cuda"),
                                             ("mps", "runs on cpu or cuda")])
def test_rate_eval_refuses_a_device_it_cannot_run_on_in_one_line(tmp_path, capsys, device, pattern):
    from rate.cli.evaluate import main

    assert main([str(checkpoint(tmp_path)), "--device", device, "--episodes", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: device {device!r}") and pattern in err and err.count("\n") == 1, err


def test_rate_eval_refuses_to_record_video_of_an_environment_without_frames(tmp_path, capsys):
    # The T-Maze renders text only: refused before any rollout, and no video folder is made.
    from rate.cli.evaluate import main

    video = tmp_path / "video"
    assert main([str(checkpoint(tmp_path)), "--env", "rate/TMaze-v0", "--lengths", "5", "--episodes", "1",
                 "--record-video", str(video), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "rate/TMaze-v0 cannot record video: it renders ansi" in err and err.count("\n") == 1, err
    assert not video.exists()
    with pytest.raises(ValueError, match="cannot record video"):
        rate.evaluate(checkpoint(tmp_path), "rate/TMaze-v0", episodes=1, lengths=[5], record_video=video)
    assert not video.exists()


class _NoDisplay(gym.Env):
    """Says it renders frames, but its renderer has no display (a MuJoCo task without OpenGL)."""

    metadata = {"render_modes": ["rgb_array"]}
    observation_space, action_space = gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(4)

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(4, np.float32), {}

    def step(self, action):
        return np.zeros(4, np.float32), 0.0, True, False, {}

    def render(self):
        raise RuntimeError("GLFW error 65544: X11: The DISPLAY environment variable is missing")


def test_recording_video_where_frames_cannot_be_rendered_is_one_error_before_the_rollouts(tmp_path, capsys):
    from rate.cli.evaluate import main

    if "NoDisplay-v0" not in gym.registry:
        gym.register("NoDisplay-v0", entry_point=_NoDisplay, max_episode_steps=5)
    video = tmp_path / "video"
    with pytest.raises(ValueError, match="NoDisplay-v0 cannot render frames here .RuntimeError: GLFW error 65544"):
        rate.evaluate(checkpoint(tmp_path), "NoDisplay-v0", episodes=1, lengths=[], record_video=video)
    assert not video.exists()
    assert main([str(tmp_path / "ckpt"), "--env", "NoDisplay-v0", "--episodes", "1", "--record-video", str(video),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cannot render frames here" in err and err.count("\n") == 1 and not video.exists(), err


def test_a_checkpoint_with_non_finite_weights_is_refused(tmp_path):
    # It would play (every action the argmax of NaN logits) and report a success rate of 0.
    from safetensors.torch import load_file, save_file

    folder = checkpoint(tmp_path)
    weights = load_file(folder / "model.safetensors")
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name][0] = float("nan")
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=f"weight {re.escape(name)} holds NaN or infinite values"):
        rate.load_policy(folder)


def test_save_pretrained_round_trip_records_where_the_model_came_from(tmp_path):
    from rate.rl.baselines import BCGRU

    model = RATEModel.from_pretrained(checkpoint(tmp_path))
    cfg = to_dict(RATEExperimentConfig(dataset_id="some/data-v0", model=model.cfg))
    model.save_pretrained(tmp_path / "again", run_config=cfg)
    again = RATEModel.from_pretrained(tmp_path / "again")
    assert model.state_dict().keys() == again.state_dict().keys()
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    import json

    from rate.checkpoint import provenance

    extra = json.loads((tmp_path / "again" / "config.json").read_text())["extra"]
    assert extra["saved_with"] == provenance() and extra["saved_with"]["rate_version"] == rate.__version__
    policy = rate.load_policy(tmp_path / "again")  # what save_pretrained writes is a policy
    policy.reset()
    assert 0 <= int(policy.act(np.zeros(4))) < 4
    with pytest.raises(CheckpointError, match="holds a RATEModel, not a BCGRU"):
        BCGRU.from_pretrained(tmp_path / "again")
    # The config object itself is taken too.
    model.save_pretrained(tmp_path / "object", run_config=RATEExperimentConfig(model=model.cfg))
    assert RATEModel.from_pretrained(tmp_path / "object").cfg == model.cfg
    # Loaded and saved again without a run config, the run's own goes with it (not the defaults).
    again.save_pretrained(tmp_path / "shipped")
    assert rate.load_policy(tmp_path / "shipped").run_config["dataset_id"] == "some/data-v0"
    assert RATEModel.from_pretrained(tmp_path / "shipped").run_config.dataset_id == "some/data-v0"
    # dataset_id= alone is read back too (not only recorded beside the config).
    model.save_pretrained(tmp_path / "named", dataset_id="my/ds-v0")
    assert RATEModel.from_pretrained(tmp_path / "named").run_config.dataset_id == "my/ds-v0"


def test_a_loaded_model_saved_again_keeps_the_record_of_the_run_that_trained_it(tmp_path):
    import json

    folder = checkpoint(tmp_path)
    meta = json.loads((folder / "config.json").read_text())
    trained = {"rate_version": "0.0.1", "git_commit": "0123abc", "dataset_id": "some/data-v0", "step": 700}
    meta["extra"] = trained | {"eval": {"30": {"success": 1.0}}}
    (folder / "config.json").write_text(json.dumps(meta))
    model = RATEModel.from_pretrained(folder)
    model.run_config.dataset_id = "renamed/data-v0"  # what the config names now: not what trained it
    assert model.training_record == trained  # (the evaluation is of that run's settings: not carried)
    model.save_pretrained(tmp_path / "again")
    extra = json.loads((tmp_path / "again" / "config.json").read_text())["extra"]
    assert {k: extra[k] for k in trained} == trained  # not this checkout's commit, and the step kept
    assert extra["saved_with"]["rate_version"] == rate.__version__ and "eval" not in extra
    # A model made in this process records the code that made it; one whose record was dropped too.
    model.training_record = None
    model.save_pretrained(tmp_path / "changed")
    extra = json.loads((tmp_path / "changed" / "config.json").read_text())["extra"]
    assert extra["rate_version"] == rate.__version__ and "step" not in extra and "saved_with" not in extra
    assert extra["dataset_id"] == "renamed/data-v0"


def test_save_pretrained_refuses_a_config_that_would_load_another_model_or_half_write(tmp_path):
    from dataclasses import replace

    model = RATEModel.from_pretrained(checkpoint(tmp_path))
    before = {p.name: p.read_bytes() for p in (tmp_path / "ckpt").iterdir()}
    other = to_dict(RATEExperimentConfig(model=replace(model.cfg, rtg_scale=10.0)))
    with pytest.raises(ValueError, match="model section differs from this model's config.*rtg_scale"):
        model.save_pretrained(tmp_path / "ckpt", run_config=other)
    unreadable = to_dict(RATEExperimentConfig(model=model.cfg)) | {"note": np.float32(1.5)}
    with pytest.raises(ValueError, match="cannot be read back as a run config: unknown config key note"):
        model.save_pretrained(tmp_path / "ckpt", run_config=unreadable)
    invalid = to_dict(RATEExperimentConfig(model=model.cfg))
    invalid["eval"]["episodes"] = -1
    with pytest.raises(ValueError, match="cannot be read back as a run config: .*episodes must be >= 0"):
        model.save_pretrained(tmp_path / "ckpt", run_config=invalid)
    assert {p.name: p.read_bytes() for p in (tmp_path / "ckpt").iterdir()} == before  # untouched


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path, monkeypatch):
    """The README's "Use in Python" code, as written, on a small T-Maze dataset of the id it names."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Use in Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    from rate_envs.tmaze_data import generate_tmaze_dataset

    generate_tmaze_dataset(horizon=90, episodes=100, seed=0)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "success" in done.stdout and (tmp_path / "runs" / "api_demo" / "model.safetensors").is_file()


@pytest.mark.slow
def test_the_readme_walkthrough_runs(tmp_path, monkeypatch):
    """"Train on your own dataset": its Python block, then its commands (fewer steps and episodes)."""
    from eval.tutorial import walkthrough

    code, commands = walkthrough((ROOT / "README.md").read_text())  # (what python -m eval.tutorial runs)
    env = {**os.environ, "MINARI_DATASETS_PATH": str(tmp_path / "minari")}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    scripts = Path(sys.executable).parent
    assert [line.split()[0] for line in commands] == ["rate-train", "rate-eval", "rate-export", "rate-train"]
    for line in commands:
        # (a one-layer model: rate-export's trace, most of the test's time, grows with the layers)
        line = line.replace("train.steps=500", "train.steps=4 train.eval_every=4 eval.episodes=2 "
                                               "model.backbone.n_layers=1")
        args = line.replace("--episodes 20", "--episodes 2").split()
        done = subprocess.run([str(scripts / args[0]), *args[1:]], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, (line, done.stderr[-3000:])
    assert (tmp_path / "runs" / "cartpole" / "policy.onnx").is_file()
    assert "# optimiser steps (batches)" in done.stdout  # the last command: --print-config


def test_rate_eval_changes_one_environment_keyword_over_the_runs_own(tmp_path, monkeypatch, capsys):
    from rate.cli.evaluate import main

    seen = []
    monkeypatch.setattr("rate.rl.experiment.check_envs", lambda ev, lengths, model: seen.append(ev.env_kwargs))
    monkeypatch.setattr("rate.rl.experiment.rollout_lengths",
                        lambda ev, *a, **k: {5: {"return": 0.0, "return_std": 0.0}})
    path = checkpoint(tmp_path)
    config = path / "config.json"
    run = json.loads(config.read_text())
    run["config"]["eval"]["env_kwargs"] = {"noise": 0.5, "corridor": "its own"}
    config.write_text(json.dumps(run))
    out = tmp_path / "probe.json"
    assert main([str(path), "--env-kwarg", "noise=0", "--env-kwarg", "extra=[1, 2]", "--lengths", "5",
                 "--out", str(out), "--no-plot", "--no-progress"]) == 0
    assert main([str(path), "--env", "rate/Elsewhere-v0", "--env-kwarg", "size=9", "--no-progress"]) == 0
    assert main([str(path), "--no-progress"]) == 0
    assert seen == [{"noise": 0, "corridor": "its own", "extra": [1, 2]}, {"size": 9},
                    {"noise": 0.5, "corridor": "its own"}]
    assert json.loads(out.read_text())["env_kwargs"] == seen[0]  # the file says what was played
    capsys.readouterr()
    assert main([str(path), "--env-kwarg", "noise"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: override 'noise' is not of the form key=value") and err.count("\n") == 1, err


def test_evaluate_plays_the_runs_own_settings_as_rate_eval_does(tmp_path, monkeypatch):
    played = []
    monkeypatch.setattr("rate.rl.experiment.check_envs", lambda ev, lengths, model: None)
    monkeypatch.setattr("rate.rl.experiment.rollout_lengths",
                        lambda ev, make, lengths, episodes, seed, *a, **k:
                        played.append((lengths, episodes, seed, ev.env_kwargs)) or {})
    policy = rate.load_policy(checkpoint(tmp_path))
    policy.run_config["eval"] |= {"lengths": [5, 9], "episodes": 3, "seed": 7, "env_kwargs": {"noise": 0.5, "a": 1}}
    rate.evaluate(policy)
    rate.evaluate(policy, episodes=2, lengths=[], seed=0)  # [] : once, at the environment's own length
    rate.evaluate(policy, env_id="rate/Elsewhere-v0")  # another environment: its own length and keywords
    rate.evaluate(policy, env_kwargs={"noise": 0.0})  # one keyword over the run's (its others stay)
    mine = {"noise": 0.5, "a": 1}
    assert played == [([5, 9], 3, 7, mine), ([None], 2, 0, mine), ([None], 3, 7, {}),
                      ([5, 9], 3, 7, {**mine, "noise": 0.0})]
    # The swept keyword given as an environment keyword would be replaced by every length unseen.
    with pytest.raises(ValueError, match=r"sets episode_length=8, which each length of \[5, 9\] replaces: give 8 as "
                                         r"the length instead \(evaluate: lengths=\[8\]"):
        rate.evaluate(policy, env_kwargs={"episode_length": 8})
    with pytest.raises(ValueError, match=r"sets episode_length='abc', .* give N as the length instead"):
        rate.evaluate(policy, env_kwargs={"episode_length": "abc"})  # (not "--lengths abc")
    rate.evaluate(policy, env_kwargs={"episode_length": 8}, lengths=[])  # at the environment's own: it is the length
    assert played[-1] == ([None], 3, 7, {**mine, "episode_length": 8})
    # numpy's lengths (an array's truth value is ambiguous) and lengths under 3 (as rate-eval)
    rate.evaluate(policy, lengths=np.geomspace(10, 1000, 3).astype(int))
    assert played[-1][0] == [10, 100, 1000] and all(type(t) is int for t in played[-1][0])
    with pytest.raises(ValueError, match=r"lengths must be at least 3 each, got \[1, 5\]"):
        rate.evaluate(policy, lengths=[1, 5])
    rate.evaluate(policy, lengths=[None, 50])  # (the environment's own length among others)
    assert played[-1][0] == [None, 50]


def test_train_refuses_what_it_would_otherwise_ignore_or_misread(tmp_path):
    from rate.api import _override_list

    with pytest.raises(ValueError, match="model='dt' picks the architecture of a dataset without a config"):
        rate.train("configs/tmaze/rate.yaml", model="dt", out=tmp_path / "run")
    with pytest.raises(ConfigError, match=r"a dataset\? rate.train\(dataset='tutorial/cartpole-noisy-v0'\)"):
        rate.train("tutorial/cartpole-noisy-v0", out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    # One override string is one override (not one per character); a mapping reads back as typed.
    assert _override_list("train.steps=5") == ["train.steps=5"]
    overrides = _override_list({"train.steps": 5, "eval.lengths": [30, 90], "model.backbone.pre_ln": False})
    from rate.config import apply_overrides

    assert apply_overrides({}, overrides) == {"train": {"steps": 5}, "eval": {"lengths": [30, 90]},
                                              "model": {"backbone": {"pre_ln": False}}}


def test_train_names_its_run_folder_as_rate_train_does(tmp_path, monkeypatch):
    """Without ``out``: runs/<config file's name>, else runs/<dataset's name> (two datasets trained
    one after the other do not meet in one folder, which the second would be refused)."""
    import rate.rl.trainer

    folders = []

    def fake_train(cfg, out, **kwargs):
        folders.append(Path(out))
        raise KeyboardInterrupt  # (stop before training)

    monkeypatch.setattr(rate.rl.trainer, "train", fake_train)
    monkeypatch.chdir(tmp_path)
    for config in (ROOT / "configs/tmaze/rate.yaml", RATEExperimentConfig(dataset_id="mujoco/hopper/expert-v0")):
        with pytest.raises(KeyboardInterrupt):
            rate.train(config)
    assert folders == [Path("runs/rate"), Path("runs/mujoco-hopper-expert-v0")]


def test_rate_eval_sets_the_length_keyword_it_is_told(tmp_path, monkeypatch, capsys):
    from rate.cli.evaluate import main

    seen = []
    monkeypatch.setattr("rate.rl.experiment.check_envs", lambda ev, lengths, model: seen.append((ev.length_kwarg,
                                                                                                 lengths)))
    monkeypatch.setattr("rate.rl.experiment.rollout_lengths", lambda ev, *a, **k: {7: {"return": 0.0, "return_std": 0.0}})
    path, out = checkpoint(tmp_path), tmp_path / "cartpole.json"
    assert main([str(path), "--lengths", "7", "--no-progress"]) == 0
    assert main([str(path), "--env", "CartPole-v1", "--lengths", "7", "--length-kwarg", "max_episode_steps",
                 "--out", str(out), "--no-plot", "--no-progress"]) == 0
    assert seen == [("episode_length", [7]), ("max_episode_steps", [7])]
    assert json.loads(out.read_text())["length_kwarg"] == "max_episode_steps"


def test_the_api_names_its_own_keywords_and_environment_errors_in_one_line(tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("the user's")
    with pytest.raises(CheckpointError, match="pass resume=True to continue it, overwrite=True to replace it"):
        rate.train("configs/tmaze/rate.yaml", out=used)
    with pytest.raises(CheckpointError, match=r"not a run's \(notes.txt\): overwrite=True replaces only a run folder"):
        rate.train("configs/tmaze/rate.yaml", out=used, overwrite=True)  # (it would delete the notes)
    assert [p.name for p in used.iterdir()] == ["notes.txt"]
    policy = rate.load_policy(checkpoint(tmp_path))
    with pytest.raises(ConfigError, match=r"cannot make 'rate/TMaze-v0' with .*'colour': 3.*TypeError"):
        policy.make_env(colour=3)


def test_sampled_actions_start_over_at_every_reset_and_follow_the_seed(tmp_path):
    """sample=True draws from the softmax, seeded at every reset: two resets play the same draws,
    another seed other ones; a continuous policy (which plays its mean) is refused sampling."""
    folder = checkpoint(tmp_path)
    obs = np.random.default_rng(0).normal(size=(40, 16, 4)).astype(np.float32)

    def play(policy):
        policy.reset(16)
        actions = [policy.act(obs[0])]
        actions += [policy.act(o, np.zeros(16)) for o in obs[1:]]
        return np.stack(actions)

    sampled = rate.load_policy(folder, sample=True, seed=5)
    first = play(sampled)
    assert np.array_equal(play(sampled), first)
    assert not np.array_equal(play(rate.load_policy(folder, sample=True, seed=6)), first)
    assert not np.array_equal(play(rate.load_policy(folder)), first)  # the argmax: not a draw
    with pytest.raises(ValueError, match="acts in a continuous space .* sampling draws discrete actions"):
        rate.load_policy(checkpoint(tmp_path / "continuous", act_kind="continuous", act_dim=2), sample=True)


def test_a_run_trained_without_evaluation_is_evaluated_on_100_episodes(tmp_path):
    policy = rate.load_policy(checkpoint(tmp_path))
    policy.run_config["eval"] = {**policy.run_config["eval"], "episodes": 0, "seed": 7}
    defaults = rate.evaluation_defaults(policy)
    assert (defaults["episodes"], defaults["seed"]) == (100, 7)
    assert rate.evaluation_defaults(policy, "CartPole-v1")["env_kwargs"] == {}  # another environment: none of its


def test_rate_eval_notes_when_checkpoint_best_is_scored_on_the_seeds_it_was_chosen_on(tmp_path, monkeypatch, capsys):
    from rate.cli.evaluate import main
    from rate.rl.trainer import BEST_DIR

    monkeypatch.setattr("rate.rl.experiment.check_envs", lambda ev, lengths, model: None)
    monkeypatch.setattr("rate.rl.experiment.rollout_lengths",
                        lambda ev, *a, **k: {7: {"return": 0.0, "return_std": 0.0}})
    from rate.rl.experiment import load_policy_model

    last = checkpoint(tmp_path)
    model, cfg = load_policy_model(last)
    best = save_checkpoint(tmp_path / BEST_DIR, model, CHECKPOINT_KIND, to_dict(cfg), {"score": 0.5})
    capsys.readouterr()
    for path, args, noted in [(best, [], True), (best, ["--seed", "1000"], False), (last, [], False)]:
        assert main([str(path), "--no-progress", *args]) == 0
        err = capsys.readouterr().err
        seeds = f"on these seeds (0 to {cfg.eval.episodes - 1})"  # the run's evaluation episodes
        assert (f"chosen as the best of the run's evaluations {seeds}" in err) is noted, err


@pytest.mark.parametrize("flag, sample", [([], None), (["--sample"], True), (["--no-sample"], False)])
def test_rate_eval_samples_as_the_run_did_unless_told(tmp_path, monkeypatch, flag, sample):
    """--sample / --no-sample override the run's eval.sample either way (--no-sample: the argmax
    for a run evaluated with sampled actions); neither: the run's own (None to load_policy)."""
    from rate.checkpoint import CheckpointError
    from rate.cli import evaluate

    seen = []

    def load_policy(path, device, target_return, sample_arg, seed):
        seen.append(sample_arg)
        raise CheckpointError("stop here")

    monkeypatch.setattr("rate.api.load_policy", load_policy)
    assert evaluate.main([str(tmp_path), *flag, "--no-progress"]) == 2
    assert seen == [sample]


def test_rate_eval_refuses_lengths_below_3_as_configs_and_the_onnx_runner_do(tmp_path, capsys):
    from rate.cli import evaluate

    assert evaluate.main([str(checkpoint(tmp_path)), "--lengths", "2", "--no-progress"]) == 2
    assert "--lengths must be at least 3 each, got [2]" in capsys.readouterr().err


def test_evaluate_draws_sampled_actions_from_its_seed_as_rate_eval_does(tmp_path, monkeypatch):
    """rate.evaluate(PATH, seed=S) loads the policy with S for its draws, as `rate-eval PATH
    --seed S` does (the run's eval.seed only when no seed is given)."""
    seen = []
    real = rate.api.load_policy

    def recording(path, *args, seed=None, **kwargs):
        seen.append(seed)
        return real(path, *args, seed=seed, **kwargs)

    monkeypatch.setattr("rate.api.load_policy", recording)
    monkeypatch.setattr("rate.rl.experiment.rollout_lengths", lambda ev, *a, **k: {})
    folder = checkpoint(tmp_path)
    rate.evaluate(folder, seed=1000)
    rate.evaluate(folder)
    assert seen == [1000, None]


def test_the_returned_actions_are_the_callers_to_change(tmp_path):
    """Scaling or clipping the returned array in place changes neither the a_{t-1} the policy
    decodes next nor its last_output (a CPU tensor's numpy view would share both)."""
    obs = np.random.default_rng(0).normal(size=(3, 2, 4)).astype(np.float32)
    for kind in ({}, {"act_kind": "continuous", "act_dim": 2}):
        folder = checkpoint(tmp_path / str(len(kind)), **kind)
        outputs = []
        for change in (False, True):
            policy = rate.load_policy(folder)
            policy.reset(2)
            action = policy.act(obs[0])
            before = policy.last_output.copy()
            if change:
                original = action.copy()
                action[:] = (action + 1) % 4 if action.dtype.kind in "iu" else action * 3 + 0.5
                assert not np.array_equal(action, original)  # (every row really changed)
                assert np.array_equal(policy.last_output, before)
            policy.act(obs[1], np.zeros(2))
            outputs.append(policy.last_output)
        np.testing.assert_array_equal(outputs[0], outputs[1])


def test_rate_eval_refuses_a_seed_beyond_numpys_in_one_line(tmp_path, capsys):
    from rate.cli import evaluate

    with pytest.raises(SystemExit) as exit_:
        evaluate.main([str(tmp_path), "--seed", str(2**64)])
    assert exit_.value.code == 2 and "--seed: must be at most 4294967295" in capsys.readouterr().err


def test_rate_eval_refuses_an_out_that_is_a_file_of_the_policy(tmp_path, capsys):
    """--out RUN/config.json replaced the checkpoint's description (the next rate-eval RUN failed);
    a file of the run folder, or the policy file itself, is one error line and stays as it was.
    A results file of its own inside the run folder is fine."""
    from rate.cli.evaluate import main

    run = checkpoint(tmp_path)
    config = (run / "config.json").read_text()
    for out in (run / "config.json", run / "model.json"):  # (model.json's plot would be model.png: allowed)
        code = main([str(run), "--out", str(out), "--episodes", "1", "--lengths", "5", "--no-progress"])
        err = capsys.readouterr().err
        if out.name == "config.json":
            assert code == 2 and "would replace" in err and err.count("\n") == 1, err
        else:
            assert code == 0 and out.is_file(), err
    assert (run / "config.json").read_text() == config


def test_rate_eval_refuses_an_out_that_is_a_file_of_the_run_around_the_policy(tmp_path, capsys):
    """A run's checkpoint_best/ evaluated into the run's own config.json (the last checkpoint's:
    --resume and rate-eval RUN then fail), the run evaluated into its checkpoint_best/, an export
    into its run's files: each one error line, every file as it was.  A results file of its own
    inside the run or checkpoint folder is fine."""
    from rate.cli.evaluate import main

    run = checkpoint(tmp_path)
    best = shutil.copytree(run, tmp_path / "checkpoint_best")  # (the checkpoint alone, before the run's other files)
    best = best.rename(run / "checkpoint_best")
    shutil.copytree(best, run / "snapshots" / "step_2")
    (run / "policy.onnx").write_bytes(b"not read: refused before loading")
    (run / "training_state.pt").write_bytes(b"not read either")
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    refused = [(best, run / "config.json"), (best, run / "model.safetensors"), (run, best / "config.json"),
               (run / "snapshots" / "step_2", run / "training_state.pt"), (run / "policy.onnx", run / "config.json"),
               (best, run / "policy.onnx")]
    for policy, out in refused:
        code = main([str(policy), "--out", str(out), "--episodes", "1", "--lengths", "5", "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and "would replace" in err and err.count("\n") == 1, (policy, out, err)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files
    for policy, out in ((best, run / "eval_best.json"), (run, best / "eval.json")):
        code = main([str(policy), "--out", str(out), "--episodes", "1", "--lengths", "5", "--no-progress"])
        assert code == 0 and out.is_file(), capsys.readouterr().err


def test_bad_arguments_to_act_and_reset_are_refused_before_anything_changes(tmp_path):
    """A NaN observation would sit in the environment's memory for the rest of its episode; a
    done that is not a bool (numpy reads "False" and NaN as True) would restart it; a count that
    is not an int would leave reset half done.  Each is one ValueError, the policy as it was."""
    policy = rate.load_policy(checkpoint(tmp_path))
    for n in (3.0, 2.5, True, "2"):
        with pytest.raises(ValueError, match=r"n_envs must be an int"):
            policy.reset(n)
    policy.reset(2)
    obs = np.zeros((2, 4), np.float32)
    first = policy.act(obs)
    for bad in (np.nan, np.inf):
        obs_bad = obs.copy()
        obs_bad[1, 2] = bad
        with pytest.raises(ValueError, match=r"the observation of environment 1 holds NaN or inf"):
            policy.act(obs_bad, np.zeros(2))
    for done in ("False", [np.nan, 0.0], [2, 0]):
        with pytest.raises(ValueError, match=r"done takes a bool \(or 0/1\) per environment"):
            policy.act(obs, np.zeros(2), done=done)
    # The refused calls changed nothing: the second step is a fresh policy's second step.
    policy.act(obs, np.zeros(2))
    fresh = rate.load_policy(checkpoint(tmp_path))
    fresh.reset(2)
    fresh.act(obs)
    fresh.act(obs, np.zeros(2))
    np.testing.assert_array_equal(policy.last_output, fresh.last_output)
    again = policy.act(obs, np.zeros(2), done=[1, 1])  # (0/1 are flags: both restart)
    np.testing.assert_array_equal(again, first)


def test_load_policy_and_evaluate_refuse_arguments_of_the_wrong_type_in_one_error(tmp_path):
    path = checkpoint(tmp_path)
    with pytest.raises(ValueError, match=r"sample must be True or False, got 'False'"):
        rate.load_policy(path, sample="False")
    for seed, message in ((1.5, r"seed must be an int, got 1.5"), (2**40, r"seed must be in \[0, 4294967296\)")):
        with pytest.raises(ValueError, match=message):
            rate.load_policy(path, seed=seed)
        with pytest.raises(ValueError, match=message):
            rate.evaluate(path, seed=seed)
    for kwargs, message in (({"lengths": 12}, r"lengths is a list of episode lengths \(e.g. \[12\]\)"),
                            ({"lengths": "345"}, r"lengths is a list of episode lengths"),
                            ({"lengths": [12.7]}, r"each length must be an int, got 12.7"),
                            ({"episodes": 2.0}, r"episodes must be an int, got 2.0"),
                            ({"seed": -1}, r"seed must be in \[0, 4294967296\), got -1"),
                            ({"env_id": 123}, r"env_id must be a string, got 123"),
                            ({"env_kwargs": "x"}, r"env_kwargs must be a mapping")):
        with pytest.raises(ValueError, match=message):
            rate.evaluate(path, **kwargs)


def test_make_env_checks_what_evaluate_checks(tmp_path):
    """Policy.make_env refuses the conflicts rate.evaluate refuses: a length keyword the length
    would replace, an environment whose spaces the policy cannot play."""
    policy = rate.load_policy(checkpoint(tmp_path))
    with pytest.raises(ValueError, match=r"env_kwargs sets episode_length=20, which each length of \[12\] replaces"):
        policy.make_env(12, episode_length=20)
    # T-Maze's other length keyword, which the swept episode_length overrides (it was dropped unsaid).
    with pytest.raises(ValueError, match=r"env_kwargs sets corridor_length=5, which rate/TMaze-v0's episode_length "
                                         r"\(each length of \[12\]\) overrides"):
        policy.make_env(12, corridor_length=5)
    with pytest.raises(ConfigError, match=r"'CartPole-v1' with {} gives action space Discrete\(2\)"):
        policy.make_env(env_id="CartPole-v1")
    policy.make_env(12).close()
    # Another environment's length through its own keyword (the run's, episode_length, it lacks).
    with pytest.raises(ConfigError, match=r"cannot make 'rate/TMaze-v0' with {'no_such_keyword': 12}"):
        policy.make_env(12, env_id="rate/TMaze-v0", length_kwarg="no_such_keyword")
    assert policy.make_env(12, env_id="rate/TMaze-v0", length_kwarg="corridor_length").unwrapped.corridor_length == 12


def test_exported_policies_take_the_cpu_however_it_is_written(tmp_path, monkeypatch):
    """device="cpu:0" or torch.device("cpu") is the CPU (the eager checkpoint takes both); another
    device is refused before the file is opened."""
    opened = []
    monkeypatch.setattr("rate.deploy.export.open_artifact", lambda path: opened.append(path) or (_ for _ in ()).throw(
        RuntimeError("opened")))
    for device in ("cpu:0", torch.device("cpu")):
        with pytest.raises(RuntimeError, match="opened"):
            rate.load_policy(tmp_path / "policy.onnx", device=device)
    with pytest.raises(ValueError, match="exported policies run on the CPU here"):
        rate.load_policy(tmp_path / "policy.onnx", device="cuda")
    assert len(opened) == 2


def test_train_and_save_refuse_bad_types_and_places_in_one_library_error(tmp_path):
    from rate.config import ConfigError

    for overrides in (5, [{"train.steps": 3}]):
        with pytest.raises(ConfigError, match=r"overrides are key=value strings"):
            rate.train("configs/tmaze/rate.yaml", overrides=overrides, out=tmp_path / "run")
    with pytest.raises(ConfigError, match=r"config is a YAML file, a RATEExperimentConfig or its mapping, got int"):
        rate.train(5, out=tmp_path / "run")
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(CheckpointError, match=r"afile is a file, not a folder"):
        rate.train("configs/tmaze/rate.yaml", out=tmp_path / "afile" / "sub")
    model = RATEModel.from_pretrained(checkpoint(tmp_path))
    with pytest.raises(CheckpointError, match=r"afile is a file, not a folder to save a checkpoint in"):
        model.save_pretrained(tmp_path / "afile")
    with pytest.raises(CheckpointError, match=r"afile is a file, not a folder to save a checkpoint in"):
        model.save_pretrained(tmp_path / "afile" / "sub")
    assert (tmp_path / "afile").read_text() == "mine"
    for device in ("cuda", "gpu"):
        with pytest.raises(ConfigError, match=rf"device '{device}'"):
            RATEModel.from_pretrained(tmp_path / "ckpt", device=device)


def test_save_pretrained_into_a_folder_a_trainer_holds_is_refused(tmp_path):
    from rate.checkpoint import RunFolderHeld
    from rate.run_folder import exclusive_run_dir

    model = RATEModel.from_pretrained(checkpoint(tmp_path))
    held = tmp_path / "run"
    code = (f"import sys, time; from rate.run_folder import exclusive_run_dir\n"
            f"with exclusive_run_dir({str(held)!r}):\n    print('held', flush=True); time.sleep(30)")
    trainer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert trainer.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderHeld, match="is being written by another trainer"):
            model.save_pretrained(held)
    finally:
        trainer.kill()
        trainer.wait()
    with exclusive_run_dir(held):  # (this process's own hold nests: saving works)
        model.save_pretrained(held)
    assert (held / "model.safetensors").is_file()


def test_rate_eval_heads_its_lengths_by_what_they_set():
    """MiniGrid's lengths are grid sizes: its column is headed size, not T."""
    from rate.rl.rollout import result_table

    results = {9: {"success": 1.0, "return": 1.0, "return_std": 0.0}}
    assert result_table(results, "size").split()[0] == "size"
    for kwarg in (None, "episode_length", "max_episode_steps"):
        assert result_table(results, kwarg).split()[0] == "T"
