"""The bad-input battery: every case through the ``python -m train`` entry point gets one clear
error naming the problem, exit status 2, and leaves the input files (config, dataset, earlier
checkpoint) byte for byte as they were."""

import errno
import hashlib
import io
import os
import shutil
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest
import torch
import yaml
from minari.data_collector.episode_buffer import EpisodeBuffer
from minari.storage import get_dataset_path

from rate.checkpoint import save_checkpoint
from rate.cli.records import read_rows
from rate.config import ConfigError
from tests.cli_errors import one_error_line
from tests.tiny_tmaze import TINY, held_by_another_process, tiny, tiny_data
from rate.cli.train import main
from rate.rl.trainer import STATE_FILE, train

pytestmark = pytest.mark.usefixtures("tmaze_data")

GOOD = TINY["dataset_id"]


def digest(*paths: Path) -> dict[str, str]:
    """sha256 of every file under ``paths``."""
    out = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def write_dataset(name: str, observations, actions, rewards, action_space=gym.spaces.Discrete(4)) -> str:
    """A one-episode Minari dataset with exactly the given arrays (no validation on the way in)."""
    dataset_id = f"rate/tmaze/{name}-v0"
    n = len(actions)
    buf = EpisodeBuffer(id=0, seed=0, observations=np.asarray(observations, dtype=np.float32),
                        actions=np.asarray(actions), rewards=list(rewards), terminations=[False] * (n - 1) + [True] if n else [],
                        truncations=[False] * n, infos={})
    minari.create_dataset_from_buffers(dataset_id, [buf], observation_space=gym.spaces.Box(-np.inf, np.inf, (4,)),
                                       action_space=action_space, algorithm_name="test")
    return dataset_id


def dataset_file(dataset_id: str) -> Path:
    return next(Path(get_dataset_path(dataset_id)).rglob("*.hdf5"))


def copy_of_good(name: str) -> str:
    dataset_id = f"rate/tmaze/{name}-v0"
    shutil.copytree(get_dataset_path(GOOD), get_dataset_path(dataset_id))
    meta = Path(get_dataset_path(dataset_id)) / "data" / "metadata.json"
    meta.write_text(meta.read_text().replace(GOOD, dataset_id))
    return dataset_id


def truncated_hdf5():
    path = dataset_file(copy_of_good("truncated"))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return {"dataset_id": "rate/tmaze/truncated-v0"}, "cannot be read"


def corrupt_hdf5():
    path = dataset_file(copy_of_good("corrupt"))
    data = bytearray(path.read_bytes())
    data[:512] = os.urandom(512)  # the superblock
    path.write_bytes(bytes(data))
    return {"dataset_id": "rate/tmaze/corrupt-v0"}, "cannot be read"


def corrupt_metadata():
    dataset_id = copy_of_good("badmeta")
    (Path(get_dataset_path(dataset_id)) / "data" / "metadata.json").write_text("{not json")
    return {"dataset_id": dataset_id}, "cannot be read"


def empty_metadata():
    """metadata.json of {} (Minari asserts on it, with no message of its own)."""
    dataset_id = copy_of_good("emptymeta")
    (Path(get_dataset_path(dataset_id)) / "data" / "metadata.json").write_text("{}")
    return {"dataset_id": dataset_id}, "cannot be read: AssertionError: its metadata.json or data files are damaged"


def steps(n):
    obs = np.zeros((n + 1, 4), dtype=np.float32)
    actions = np.zeros(n, dtype=np.int64)
    rewards = np.zeros(n, dtype=np.float32)
    return obs, actions, rewards


def dataset_case(name, pattern, field, index, value):
    """A 5-step episode with one bad value: ``field``[index] = value."""
    def make():
        obs, actions, rewards = steps(5)
        {"obs": obs, "actions": actions, "rewards": rewards}[field][index] = value
        return {"dataset_id": write_dataset(name, obs, actions, rewards)}, pattern
    return make


def zero_length_episode():
    """Minari's writer cannot store an episode of 0 steps, but a file can hold one: edit it in."""
    import h5py

    dataset_id = write_dataset("zerolen", *steps(3))
    with h5py.File(dataset_file(dataset_id), "r+") as f:
        episode = f["episode_0"]
        for name in ("actions", "rewards", "terminations", "truncations"):
            dtype = episode[name].dtype
            del episode[name]
            episode.create_dataset(name, shape=(0,), dtype=dtype)
        del episode["observations"]
        episode.create_dataset("observations", data=np.zeros((1, 4), dtype=np.float32))
        episode.attrs["total_steps"] = 0
    return {"dataset_id": dataset_id}, "no steps"


def config_case(changes: dict, pattern: str):
    return lambda: (changes, pattern)


CASES = {
    "truncated HDF5": truncated_hdf5,
    "corrupt HDF5": corrupt_hdf5,
    "corrupt dataset metadata": corrupt_metadata,
    "empty dataset metadata": empty_metadata,
    "missing dataset": config_case({"dataset_id": "rate/tmaze/nothing-v0"}, "not found"),
    "observation space != config": config_case({"model.obs_shape": [5]}, r"observations of shape \(4,\)"),
    "action space != config": config_case({"model.act_dim": 6}, "6 discrete actions"),
    "actions out of range": dataset_case("outofrange", "actions outside 0..3", "actions", 2, 7),
    "negative action": dataset_case("negaction", "actions outside 0..3", "actions", 0, -1),
    "NaN observation": dataset_case("nanobs", "NaN or inf in its observations", "obs", (1, 2), np.nan),
    "inf observation": dataset_case("infobs", "NaN or inf in its observations", "obs", (3, 0), np.inf),
    "NaN reward": dataset_case("nanrew", "NaN or inf in its rewards", "rewards", 4, np.nan),
    "inf reward": dataset_case("infrew", "NaN or inf in its rewards", "rewards", 0, -np.inf),
    "zero-length episode": zero_length_episode,
    "unknown config key": config_case({"train.stepz": 5}, "unknown config key train.stepz"),
    "wrong type": config_case({"train.steps": "many"}, "train.steps: expected int"),
    "NaN learning rate": config_case({"train.lr": float("nan")}, "train.lr: nan is not a valid value"),
    "infinite learning rate": config_case({"train.lr": float("inf")}, "train.lr: inf is not a valid value"),
    "negative segment size": config_case({"model.segment_steps": -3}, "segment_steps.*must be positive"),
    "negative batch size": config_case({"train.batch_size": -1}, "train.batch_size must be positive"),
    "unknown window start": config_case({"window_start": "middle"}, "window_start: 'middle' is not one of"),
    # Evaluation environments are made once before training: a mistake there must not cost a run.
    "unknown eval environment": config_case({"eval.env_id": "rate/Nowhere-v0"}, "eval: cannot make 'rate/Nowhere-v0'"),
    "eval keyword the environment lacks": config_case({"eval.env_kwargs": {"colour": "red"}},
                                                      "eval: cannot make 'rate/TMaze-v0'.*colour"),
    "eval environment with other spaces": config_case(
        {"eval.env_id": "rate/POPGym-v0", "eval.env_kwargs": {"task": "CountRecallEasy"}, "eval.lengths": [51]},
        r"eval: 'rate/POPGym-v0' .* gives action space Discrete\(27\), but the config says 4 discrete actions"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_dataset_or_config(case, tmp_path, capsys):
    changes, pattern = CASES[case]()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_data(**changes)))
    inputs = [config, Path(os.environ["MINARI_DATASETS_PATH"])]
    before = digest(*inputs)
    code = main([str(config), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert __import__("re").search(pattern, err), err
    assert digest(*inputs) == before


def test_missing_and_invalid_config_files(tmp_path, capsys):
    assert main([str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    assert main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not valid YAML" in err and "(line 1, column 17)" in err and err.count("\n") == 1, err  # one line
    binary = tmp_path / "model.safetensors"  # a file of another kind given as the config
    binary.write_bytes(b"\x80\xfd\x00 weights")
    assert main([str(binary)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {binary}: not a text file (a YAML config was expected)\n", err
    folder = tmp_path / "some-dataset-v0"  # a dataset folder given where the config goes
    folder.mkdir()
    with pytest.raises(SystemExit) as usage:
        main([str(folder)])
    assert usage.value.code == 2 and (f"error: {folder} is a folder, not a YAML config file: a Minari dataset folder "
                                      "is trained with --dataset FOLDER") in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:  # a dataset id given where the config goes
        main(["rev/limited-v0"])
    assert usage.value.code == 2 and ("error: config file not found: rev/limited-v0 (a Minari dataset? rate-train "
                                      "--dataset rev/limited-v0)") in capsys.readouterr().err
    from rate.config import read_config_file  # (every trainer's: the folder named, no advice)

    with pytest.raises(ConfigError, match=f"^{folder} is a folder, not a YAML config file$"):
        read_config_file(folder)


def test_episodes_shorter_than_a_segment_are_padded_not_refused(tmp_path):
    """Not bad input: a 2-step episode in 4-step segments is padded and masked (exit 0), with a
    warning that most of each 12-step window is padding (a window far longer than the episodes
    cost the time of its padding without a word: a 1000-step segment on 12-step episodes)."""
    import warnings

    obs, actions, rewards = steps(2)
    dataset_id = write_dataset("short", obs, actions, rewards)
    cfg = tiny(dataset_id=dataset_id, **{"train.steps": 2, "train.eval_every": 2, "eval.episodes": 1,
                                         "eval.lengths": [12]})
    with pytest.warns(UserWarning, match=r"the window \(3 segments of K = 4 steps\) is 6.0x the longest episode "
                                         r"\(2 steps\): more than half of every window is padding"):
        _, metrics = train(cfg, tmp_path / "run", progress=False)
    from rate.data.episodes import Episode
    from rate.rl.experiment import warn_if_windows_are_mostly_padding

    def lengths(*ns):
        return [Episode(np.zeros((n, 4), np.float32), np.zeros(n, np.int64), np.zeros(n, np.float32)) for n in ns]

    with warnings.catch_warnings():  # (more than half of the 12-step window filled: no warning)
        warnings.simplefilter("error")
        warn_if_windows_are_mostly_padding(lengths(2, 7), cfg)
    with warnings.catch_warnings():  # (half of it: not more)
        warnings.simplefilter("error")
        warn_if_windows_are_mostly_padding(lengths(6, 3), cfg)
    with pytest.warns(UserWarning, match=r"2.4x the longest episode \(5 steps\)"):
        warn_if_windows_are_mostly_padding(lengths(5, 3), cfg)
    assert metrics["steps"] == 2
    from rate.rl.experiment import load_dataset_for
    from rate.rl.windows import TrajectoryWindows

    window = cfg.model.segment_steps * cfg.model.num_segments
    item = TrajectoryWindows(load_dataset_for(cfg), window).get(0)
    assert item["valid"].tolist() == [True, True] + [False] * (window - 2)  # the two steps, then padding


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tmaze_data_root):
    """A run trained once for the module: 2 steps with a checkpoint and training state."""
    cfg = tiny(**{"train.steps": 2, "train.eval_every": 2, "eval.episodes": 1, "eval.lengths": [12]})
    out = tmp_path_factory.mktemp("trained") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(tmaze_data_root))
        train(cfg, out, progress=False)
    return out


@pytest.fixture
def finished_run(tmp_path, trained_run):
    """A run folder with a complete checkpoint and training state at step 2 (a copy of
    ``trained_run``: a test may damage it), and its config file."""
    out = tmp_path / "run"
    shutil.copytree(trained_run, out)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_data()))
    return config, out


def resume_fails(config: Path, out: Path, capsys, *overrides: str, code: int = 2) -> str:
    """The error line of a refused --resume, which changed nothing; ``code`` 3: the run in ``out``
    cannot continue (RESUME_REFUSED_EXIT, on which a sweep starts it over)."""
    before = digest(config, out)
    assert main([str(config), *overrides, "--out", str(out), "--resume", "--no-progress"]) == code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert digest(config, out) == before
    return err


def test_resume_without_a_run(tmp_path, capsys, finished_run):
    config, _ = finished_run
    assert "holds no run to continue" in resume_fails(config, tmp_path / "empty", capsys)
    # Without a config the run's own is read: a folder that is not there is said to be missing.
    assert main(["--resume", "--out", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'empty'}: no such folder\n"


def test_resume_onto_another_architecture(capsys, finished_run):
    config, out = finished_run
    err = resume_fails(config, out, capsys, "model.backbone.d_model=16", "model.backbone.d_head=8", code=3)
    assert "trained with another config" in err and "model.backbone.d_model: 32 -> 16" in err


@pytest.mark.parametrize("override", ["train.lr=0.5", "train.seed=7", "model.backbone.mrv_activation=tanh",
                                      "window_start=random"])
def test_resume_with_a_changed_config_is_refused(capsys, finished_run, override):
    """Same shapes, other experiment: the weights would load, so the config itself is compared."""
    config, out = finished_run
    key = override.split("=")[0]
    assert f"{key}: " in resume_fails(config, out, capsys, override, code=3)


def test_resume_with_fewer_steps_than_trained_is_refused(capsys, finished_run):
    config, out = finished_run
    assert "has trained 2 steps; train.steps 1 cannot resume it" in resume_fails(config, out, capsys, "train.steps=1")


def test_overrides_may_follow_the_options(capsys, finished_run):
    """`python -m train config --out DIR key=value` reads the override (argparse alone would refuse it)."""
    config, out = finished_run
    assert main([str(config), "--out", str(out), "--resume", "train.steps=1", "--no-progress"]) == 2
    assert "has trained 2 steps; train.steps 1 cannot resume it" in capsys.readouterr().err


def test_resume_may_extend_training_and_reports_the_whole_time(tmp_path, capsys, finished_run):
    config, out = finished_run
    csv = tmp_path / "rows.csv"
    args = [str(config), "train.steps=3", "train.eval_every=3", "eval.episodes=1", "eval.lengths=[12]",
            "--out", str(out), "--resume", "--no-progress"]
    assert main([*args, "--csv", str(csv)]) == 0
    (row,) = read_rows(csv)
    assert row["train.steps"] == "3" and row["success_T12"] != ""
    # A finished run resumed again (a kill between its last checkpoint and its row) evaluates
    # again, so its row is complete, and keeps the training time of its last checkpoint (not the
    # first row's, which also counts the moments after that checkpoint).
    state = torch.load(out / STATE_FILE, weights_only=False)
    assert state["train_seconds"] > 0
    state["train_seconds"] = 1234.5  # (a marker: the row must carry exactly this, nothing added)
    torch.save(state, out / STATE_FILE)
    killed_before_its_row = tmp_path / "again.csv"
    assert main([*args, "--csv", str(killed_before_its_row)]) == 0
    (again,) = read_rows(killed_before_its_row)
    assert again["success_T12"] == row["success_T12"]
    assert float(again["train_seconds"]) == pytest.approx(1234.5, abs=0.1)
    # Into the CSV that has its row: one row per run (a sweep's second trainer of a run that
    # another sweep finished meanwhile stops here too).
    before = digest(out, csv)
    assert main([*args, "--csv", str(csv)]) == 2
    err = capsys.readouterr().err
    assert f"{csv} already has a row for run run; record this one under another --run-name" in err
    assert err.count("\n") == 1 and digest(out, csv) == before


def test_a_resume_removes_the_temporaries_a_killed_save_left_in_the_checkpoint_folders(capsys, finished_run):
    """A kill inside a save leaves a temporary beside the file it would have replaced, in the run
    folder or a checkpoint folder inside it; the next trainer of the folder removes them, and
    nothing else."""
    config, out = finished_run
    left = [out / ".training_state.pt.k1.tmp", out / "checkpoint_best" / ".model.safetensors.k2.tmp",
            out / "snapshots" / "step_2" / ".config.json.k3.tmp"]
    for tmp in left:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(b"partial")
    kept = out / "snapshots" / "notes.tmp"
    kept.write_text("the user's")
    assert main([str(config), "train.steps=3", "train.eval_every=3", "eval.episodes=1", "eval.lengths=[12]",
                 "--out", str(out), "--resume", "--no-progress"]) == 0
    assert not any(tmp.exists() for tmp in left) and kept.read_text() == "the user's"


def test_a_training_state_that_cannot_be_read_now_leaves_the_run_alone(capsys, finished_run, monkeypatch):
    """An I/O or permission error while the state is read says nothing of the file: bad input
    (exit 2), not a run that cannot continue (exit 3, on which a sweep would start it over and
    delete it)."""
    config, out = finished_run

    def failing_read(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr("rate.checkpoint.torch.load", failing_read)
    err = resume_fails(config, out, capsys, code=2)
    assert "cannot read the training state now (OSError: [Errno 5] Input/output error); the run is left as it is" in err


def test_a_training_state_cut_short_anywhere_is_damage_not_a_failed_read(capsys, finished_run):
    """torch's archive reader raises OSError EINVAL for some cut points (others a RuntimeError or
    EOFError): every one is a file that cannot continue (exit 3), not one to read again later."""
    from rate.checkpoint import load_plain_tensors

    config, out = finished_run
    path = out / "training_state.pt"
    whole = path.read_bytes()
    cuts = range(0, len(whole), max(1, len(whole) // 97))
    for cut in cuts:
        with pytest.raises(ValueError, match=r"^not plain tensors \("):
            load_plain_tensors(io.BytesIO(whole[:cut]) if cut % 2 else _written(path.with_name("cut.pt"), whole[:cut]))
    einval = next(cut for cut in cuts if _reader_errno(whole[:cut]) == errno.EINVAL)  # (the reported case)
    path.write_bytes(whole[:einval])
    err = resume_fails(config, out, capsys, code=3)
    assert "unreadable training state: not plain tensors (a damaged archive" in err


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _reader_errno(data: bytes) -> int | None:
    """The errno of torch.load's OSError on ``data`` written to a file, else None."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".pt") as file:
        file.write(data)
        file.flush()
        try:
            torch.load(file.name, weights_only=True)
        except OSError as err:
            return err.errno
        except Exception:
            return None
    return None


def test_a_resume_may_change_the_other_trainers_evaluation_sizes_and_the_logger():
    """The algorithmic tasks' and the language model's evaluation sizes, and where a run logs,
    change what is measured or where, not the run: resumable, as the RL evaluation section is."""
    import dataclasses

    from rate.config import to_dict
    from rate.resume import config_changes
    from train.experiments.algorithmic import AlgorithmicConfig
    from train.experiments.lm import LMExperimentConfig

    for cfg, evaluation in ((AlgorithmicConfig(), {"eval_samples": 64}),
                            (LMExperimentConfig(), {"eval_batch_size": 4, "valid_segments": 0})):
        now = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, logger="wandb"), **evaluation)
        assert config_changes(to_dict(cfg), now) == []
        other_seed = dataclasses.replace(now, train=dataclasses.replace(now.train, seed=cfg.train.seed + 1))
        assert config_changes(to_dict(cfg), other_seed) == [f"train.seed: {cfg.train.seed} -> {cfg.train.seed + 1}"]


@pytest.mark.slow
def test_a_run_folder_in_use_by_another_trainer_is_refused(capsys, finished_run):
    config, out = finished_run
    before = digest(config, out)
    with held_by_another_process(out):  # as a trainer still running would hold it
        # (status 4, not the 2 of bad input: a sweep skips the run, which another sweep trains)
        assert main([str(config), "--out", str(out), "--resume", "--no-progress"]) == 4
    err = capsys.readouterr().err
    assert "being written by another trainer" in err and "Traceback" not in err
    assert digest(config, out) == before


def test_resume_onto_a_checkpoint_of_another_kind(tmp_path, capsys, finished_run):
    config, _ = finished_run
    import torch

    other = tmp_path / "algorithmic"
    save_checkpoint(other, torch.nn.Linear(2, 2), "algorithmic", {})
    assert "expected 'rate'" in resume_fails(config, other, capsys)


def test_resume_from_a_truncated_training_state(capsys, finished_run):
    config, out = finished_run
    state = out / STATE_FILE
    state.write_bytes(state.read_bytes()[:100])
    err = resume_fails(config, out, capsys, code=3)
    assert "unreadable training state: not plain tensors (" in err and err.count("\n") == 1, err  # (torch's: 6 lines)


def test_resume_refuses_a_run_whose_training_windows_changed(capsys, finished_run):
    """Another number of windows under the same config (the dataset replaced, or a library update
    cutting windows otherwise): the batches of the resumed run would not continue the run's own."""
    config, out = finished_run
    state = torch.load(out / STATE_FILE, weights_only=False)
    state["windows"] += 1
    torch.save(state, out / STATE_FILE)
    assert "training windows, the data now gives" in resume_fails(config, out, capsys, code=3)


def test_resume_refuses_a_run_whose_episodes_changed_under_the_same_id(capsys, finished_run):
    """The same number of windows, other episodes (a dataset regenerated in place): the batches and
    the observation statistics in the weights would belong to other data."""
    config, out = finished_run
    state = torch.load(out / STATE_FILE, weights_only=False)
    assert len(state["data_fingerprint"]) == 16
    state["data_fingerprint"] = "0" * 16
    torch.save(state, out / STATE_FILE)
    assert "trained on other episodes than" in resume_fails(config, out, capsys, code=3)


def test_a_resume_that_changes_the_evaluation_does_not_compare_scores_across_it(finished_run):
    from rate.checkpoint import read_checkpoint
    from rate.rl.trainer import BEST_DIR

    _, out = finished_run
    changes = {"train.steps": 3, "train.eval_every": 3, "eval.episodes": 1}
    with pytest.warns(UserWarning, match=r"chosen under other evaluation settings \(eval.lengths\)"):
        train(tiny(**changes, **{"eval.lengths": [13]}), out, resume=True, progress=False)
    meta, _ = read_checkpoint(out / BEST_DIR, "rate")
    assert meta["extra"]["step"] == 3 and meta["config"]["eval"]["lengths"] == [13]  # replaced, whatever the score


def test_rate_train_resumes_a_run_with_its_own_config_as_rate_train_resume_out_does(finished_run):
    import rate

    _, out = finished_run
    policy, metrics = rate.train(out=out, resume=True, progress=False,
                                 overrides=["train.steps=3", "train.eval_every=3", "eval.episodes=1"])
    assert metrics["steps"] == 3 and policy is not None


def test_every_evaluation_setting_but_the_final_evaluations_and_references_voids_a_best_score(tmp_path):
    """A resumed run compares its scores with checkpoint_best's only under the same evaluation:
    every eval.* setting counts (SCORE_SETTINGS) except those the selection score does not read
    (the final evaluation's lengths and episodes, the reference scores of normalised returns, the
    recorded Discrete start and Box dtype that an environment's own replace)."""
    import dataclasses

    from rate.checkpoint import save_checkpoint
    from rate.config import to_dict
    from rate.rl.experiment import CHECKPOINT_KIND, EvalConfig
    from rate.rl.model import RATEModel
    from rate.rl.trainer import SCORE_SETTINGS, read_best_score

    left = {f.name for f in dataclasses.fields(EvalConfig)} - set(SCORE_SETTINGS)
    assert left == {"final_lengths", "final_episodes", "ref_scores", "action_start", "action_dtype"}
    cfg = tiny()
    best = save_checkpoint(tmp_path / "best", RATEModel(cfg.model), CHECKPOINT_KIND, to_dict(cfg), {"score": 0.9})
    assert read_best_score(best, cfg.eval) == 0.9
    wrapper = {"entry_point": "gymnasium.wrappers:RecordEpisodeStatistics"}
    wrapped = dataclasses.replace(cfg.eval, env_wrappers=[wrapper])
    with pytest.warns(UserWarning, match=r"other evaluation settings \(eval.env_wrappers\)"):
        assert read_best_score(best, wrapped) is None


def test_a_hand_edited_description_is_one_error_or_no_best_score(tmp_path):
    """config.json's "extra" of another type than a mapping is one CheckpointError (absent: none
    recorded); a best score that is no finite number counts as none (the next evaluation sets it);
    sizes the model cannot take (obs_shape [-5]) are one CheckpointError, not torch's."""
    import json

    from rate.checkpoint import CheckpointError, save_checkpoint
    from rate.config import to_dict
    from rate.rl.experiment import CHECKPOINT_KIND, load_policy_model
    from rate.rl.model import RATEModel
    from rate.rl.trainer import read_best_score

    cfg = tiny()
    best = save_checkpoint(tmp_path / "best", RATEModel(cfg.model), CHECKPOINT_KIND, to_dict(cfg), {"score": 0.9})
    meta = json.loads((best / "config.json").read_text())

    def described(**changes):
        (best / "config.json").write_text(json.dumps({**meta, **changes}))
        return best

    assert read_best_score(described(extra={"score": "high"})) is None
    assert read_best_score(described(extra={"score": float("nan")})) is None
    assert read_best_score(described(extra={})) is None
    del meta["extra"]
    assert read_best_score(described()) is None
    with pytest.raises(CheckpointError, match=r"'extra' is None, not a mapping"):
        load_policy_model(described(extra=None))
    bad = {**meta["config"], "model": {**meta["config"]["model"], "obs_shape": [-5]}}
    with pytest.raises(CheckpointError, match=r"obs_shape needs positive sizes, got \[-5\]"):
        load_policy_model(described(config=bad))


def test_a_resume_that_changes_the_arithmetic_is_warned():
    """train.threads, device and compile may change on resume (the run goes on), but the sums
    then round differently: a warning names what changed; the same settings say nothing."""
    import warnings

    from rate.resume import warn_arithmetic_change
    from rate.training import TrainConfig

    with pytest.warns(UserWarning, match=r"train.threads 2 -> 1, train.compile False -> True on resume"):
        warn_arithmetic_change({"threads": 2, "device": "cpu", "compile": False}, TrainConfig(threads=1, compile=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_arithmetic_change({"threads": 2, "device": "cpu", "compile": False}, TrainConfig(threads=2))
        warn_arithmetic_change({}, TrainConfig(threads=2))  # (a run saved without the keys: nothing to compare)


def test_a_resume_that_moves_the_end_of_the_schedule_says_the_learning_rate_jumps():
    from rate.resume import warn_schedule_change as _warn_schedule_change
    from rate.training import TrainConfig, lr_factor

    longer = TrainConfig(steps=4000, warmup_steps=100)
    # 1000 steps trained: the next batch takes the saved rate, the one after the new schedule's.
    before = lr_factor(TrainConfig(steps=2000, warmup_steps=100), 1001)
    with pytest.warns(UserWarning, match=f"at step 1001 the rate jumps from {before:.3g} to "
                                         f"{lr_factor(longer, 1001):.3g} x train.lr"):
        _warn_schedule_change(2000, longer, 1000)
    # Right after warmup both schedules are at 1.000 (apart by less than their 3 digits show): not a
    # jump "from 1 to 1", but the schedule's new end.
    with pytest.warns(UserWarning, match=r"now ends at step 4000 \(step 101 still at 1 x train.lr, the steps after on "
                                         r"the new schedule\) \(a run not the same"):
        _warn_schedule_change(2000, longer, 100)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_schedule_change(2000, longer, 50)  # still warming up: the same rate either way
        _warn_schedule_change(4000, longer, 1000)


def test_a_resume_on_another_number_of_processes_says_it_is_not_exact(tmp_path):
    import warnings

    from rate.config import to_dict
    from rate.rl.experiment import RATEExperimentConfig, build_policy_model
    from rate.rl.trainer import CHECKPOINT_KIND, load_training_state, save_training_state
    from rate.training import make_optimizer

    cfg = RATEExperimentConfig()
    model = build_policy_model(cfg.model)
    opt, sched = make_optimizer(model, cfg.train)
    save_checkpoint(tmp_path, model, CHECKPOINT_KIND, to_dict(cfg))
    save_training_state(tmp_path, model, opt, sched, 5, 1.0, world=2)
    with pytest.warns(UserWarning, match="was trained on 2 processes and resumes on 1: .* not exactly the run"):
        assert load_training_state(tmp_path, model, opt, sched, cfg, world=1)[0] == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_training_state(tmp_path, model, opt, sched, cfg, world=2)


def test_episodes_longer_than_the_window_from_the_episode_start_are_named():
    from rate.rl.experiment import load_dataset_for

    with pytest.warns(UserWarning, match="longer than the window \\(8 steps\\) and window_start is episode_start"):
        load_dataset_for(tiny(**{"model.num_segments": 2}))


def test_resume_refuses_random_windows_saved_before_they_were_one_per_step(tmp_path, capsys):
    changes = {"train.steps": 2, "train.eval_every": 2, "eval.episodes": 1, "eval.lengths": [12],
               "window_start": "random"}
    out = tmp_path / "run"
    train(tiny(**changes), out, progress=False)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_data(window_start="random")))
    state = torch.load(out / STATE_FILE, weights_only=False)
    del state["windows"]  # as an older version wrote it
    torch.save(state, out / STATE_FILE)
    assert "older version of the library" in resume_fails(config, out, capsys, code=3)


@pytest.mark.slow
def test_resume_with_a_missing_weights_file_or_description(capsys, finished_run):
    """The training state holds the weights: a run whose model.safetensors is gone (a kill
    between a checkpoint's renames leaves it from another save) continues from its state and
    writes it again.  Without config.json there is no run to continue (a first checkpoint cut
    short): status 3."""
    from rate.checkpoint import read_checkpoint

    config, out = finished_run  # (the config file trains longer than the run's 2 steps)
    (out / "model.safetensors").unlink()
    assert main([str(config), "--out", str(out), "--resume", "--no-progress"]) == 0
    meta, _ = read_checkpoint(out, "rate")  # whole again
    assert meta["extra"]["step"] == yaml.safe_load(config.read_text())["train"]["steps"] > 2
    (out / "model.safetensors").unlink()  # and at its last step, with nothing left to train
    assert main([str(config), "--out", str(out), "--resume", "--no-progress"]) == 0
    assert read_checkpoint(out, "rate")[0]["extra"]["step"] == meta["extra"]["step"]
    capsys.readouterr()
    (out / "config.json").unlink()
    assert "missing config.json); nothing to resume" in resume_fails(config, out, capsys, code=3)


def test_read_only_output_folder(tmp_path, capsys, monkeypatch):
    """The OS refuses every file in the output folder (root ignores chmod, so the refusal is injected
    at the one place files are created: mkstemp)."""
    import tempfile

    out = tmp_path / "run"
    real = tempfile.mkstemp

    def refuse(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve().is_relative_to(out.resolve()):
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_data(**{"train.steps": 2, "train.eval_every": 2, "eval.episodes": 1,
                                                  "eval.lengths": [12]})))
    assert main([str(config), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Permission denied" in err and str(out) in err


def test_full_disk_while_writing_a_checkpoint(capsys, finished_run, monkeypatch):
    """ENOSPC half-way through the weights file: the previous checkpoint stays complete and in place,
    and the half-written temporary is removed."""
    import rate.checkpoint as checkpoint

    config, out = finished_run
    before = digest(out / "model.safetensors", out / "config.json")

    def full_disk(tensors, path, **kwargs):
        Path(path).write_bytes(b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    code = main([str(config), "train.steps=4", "--out", str(out), "--resume", "--no-progress"])
    assert code == 2
    assert "No space left on device" in capsys.readouterr().err
    assert digest(out / "model.safetensors", out / "config.json") == before
    assert not list(out.glob(".*.tmp"))


def test_a_csv_that_is_not_a_results_file_is_refused_before_training(tmp_path, capsys, finished_run):
    """Appending a row rewrites the CSV: a markdown page passed as --csv would be mangled."""
    config, _ = finished_run
    page = tmp_path / "results.md"
    page.write_text("# Results\n\n| a | b |\n|---|---|\n| 1, 2 | 3 |\n")
    before = page.read_text()
    assert main([str(config), "--out", str(tmp_path / "new"), "--csv", str(page), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {page}: no 'run' column, not a results CSV") and err.count("\n") == 1, err
    assert page.read_text() == before and not (tmp_path / "new" / "model.safetensors").exists()


def test_a_csv_of_another_kind_of_experiment_is_refused_before_training(tmp_path, capsys, finished_run):
    """An RL run recorded in the language-modelling CSV would leave its rows without test_bpc
    (and the LM page stopped at them); the RL CSV of another task takes the row."""
    from rate.cli.records import append_row, check_results_csv
    from rate.config import config_row, load_yaml
    from rate.rl.experiment import RATEExperimentConfig

    from train.experiments.algorithmic import AlgorithmicConfig
    from train.experiments.lm import LMExperimentConfig

    config, _ = finished_run
    lm_csv, algorithmic_csv, rl_csv = tmp_path / "lm.csv", tmp_path / "algorithmic.csv", tmp_path / "popgym.csv"
    for path, cfg in ((lm_csv, LMExperimentConfig()), (algorithmic_csv, AlgorithmicConfig()),
                      (rl_csv, RATEExperimentConfig(dataset_id="rate/popgym/RepeatFirstEasy-oracle-v0"))):
        append_row(path, {"run": "a/seed0", **config_row(cfg), "train_seconds": 1.0})  # (as their trainers write)
    before = lm_csv.read_bytes()
    assert main([str(config), "--out", str(tmp_path / "new"), "--csv", str(lm_csv), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {lm_csv} holds rows of another kind of experiment (config sections model, train; "
                          "this run's are eval, model, train)") and err.count("\n") == 1, err
    assert lm_csv.read_bytes() == before and not (tmp_path / "new" / "model.safetensors").exists()
    columns = config_row(load_yaml(RATEExperimentConfig, config, []))
    check_results_csv(rl_csv, columns)  # (another RL task's rows: accepted)
    with pytest.raises(ConfigError, match="another kind of experiment"):
        check_results_csv(algorithmic_csv, columns)


def test_a_folder_that_holds_a_run_is_refused(capsys, finished_run):
    config, out = finished_run
    before = digest(out)
    assert main([str(config), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert digest(out) == before
    assert main([str(config), "--out", str(out), "--resume", "--overwrite"]) == 2  # one or the other
    assert "choose one" in capsys.readouterr().err


def test_overwrite_replaces_the_run_only_once_the_new_one_has_a_checkpoint(capsys, finished_run, monkeypatch):
    import rate.rl.trainer as trainer

    config, out = finished_run
    before = digest(out)
    real_step = trainer.train_step
    monkeypatch.setattr(trainer, "train_step", lambda *a, **k: float("nan"))  # the new run diverges at once
    assert main([str(config), "train.steps=4", "train.eval_every=2", "--out", str(out), "--overwrite",
                 "--no-progress"]) == 2
    assert "loss became nan" in capsys.readouterr().err
    assert digest(out) == before  # the earlier run is untouched
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []  # no staging left
    monkeypatch.setattr(trainer, "train_step", real_step)
    old_events = {p.name for p in (out / "tb").glob("events.*")}
    assert main([str(config), "train.steps=4", "train.eval_every=2", "--out", str(out), "--overwrite",
                 "--no-progress"]) == 0
    saved = yaml.safe_load((out / "config.json").read_text())
    assert saved["config"]["train"]["steps"] == 4 and saved["extra"]["step"] == 4
    assert not old_events & {p.name for p in (out / "tb").glob("events.*")}  # the earlier run's events are gone
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["diverges", "full disk at the first checkpoint"])
def test_a_new_run_that_fails_before_its_first_checkpoint_leaves_nothing(capsys, tmp_path, monkeypatch, failure):
    # What it wrote (TensorBoard events, a checkpoint cut short) would make the folder look like a
    # run: the same command again would be refused and --resume would find nothing to resume.
    import rate.checkpoint as checkpoint
    import rate.rl.trainer as trainer

    config, out = tmp_path / "config.yaml", tmp_path / "runs" / "new"
    config.write_text(yaml.safe_dump(tiny_data(**{"train.steps": 4, "train.eval_every": 4, "eval.episodes": 1,
                                                  "eval.lengths": [12]})))
    with monkeypatch.context() as patch:
        if failure == "diverges":  # at step 3 of 4, after it has logged steps 1 and 2
            real_step, calls = trainer.train_step, []

            def diverging(*args, **kwargs):
                calls.append(1)
                return real_step(*args, **kwargs) if len(calls) < 3 else float("nan")

            patch.setattr(trainer, "train_step", diverging)
        else:
            def full_disk(tensors, path, **kwargs):
                raise OSError(errno.ENOSPC, "No space left on device", str(path))

            patch.setattr(checkpoint, "save_file", full_disk)
        assert main([str(config), "--out", str(out), "--no-progress"]) == 2
        assert ("loss became nan" if failure == "diverges" else "No space left") in capsys.readouterr().err
        assert not out.exists()  # made by the run, so removed with what it wrote
        out.mkdir(parents=True)  # a folder the user made: emptied, kept
        assert main([str(config), "--out", str(out), "--no-progress"]) == 2
        assert out.is_dir() and not any(out.iterdir())
    assert main([str(config), "--out", str(out), "--no-progress"]) == 0  # the same command again
    assert (out / "model.safetensors").is_file()


def test_the_best_checkpoint_is_the_first_highest_score_also_across_a_resume(tmp_path, monkeypatch):
    """Evaluations scripted to score 0.5, 0.9, 0.7, 0.9 at steps 2-8: checkpoint_best holds step 4
    (a better score replaces it, an equal one does not); resumed to 12 steps with 0.8 and 0.85,
    it still does (the resumed run reads the best score back)."""
    import rate.rl.trainer as trainer

    scores = [0.5, 0.9, 0.7, 0.9]
    monkeypatch.setattr(trainer, "evaluate_lengths", lambda model, cfg, *a, **k: {
        12: {"success": scores.pop(0), "success_std": 0.0, "return": 0.0, "return_std": 0.0}})

    def best() -> tuple[int, float]:
        extra = yaml.safe_load((tmp_path / "run" / "checkpoint_best" / "config.json").read_text())["extra"]
        return extra["step"], extra["score"]

    changes = {"train.eval_every": 2, "eval.episodes": 1, "eval.lengths": [12]}
    train(tiny(**changes, **{"train.steps": 8}), tmp_path / "run", progress=False)
    assert not scores and best() == (4, 0.9)
    scores += [0.8, 0.85]
    train(tiny(**changes, **{"train.steps": 12}), tmp_path / "run", resume=True, progress=False)
    assert not scores and best() == (4, 0.9)


def test_best_checkpoint_and_snapshots(tmp_path):
    from rate.rl.trainer import selection_score

    cfg = tiny(**{"train.steps": 4, "train.eval_every": 2, "eval.episodes": 2, "eval.lengths": [12],
                  "snapshot_every": 2})
    train(cfg, tmp_path / "run", progress=False)
    best = yaml.safe_load((tmp_path / "run" / "checkpoint_best" / "config.json").read_text())["extra"]
    last = yaml.safe_load((tmp_path / "run" / "config.json").read_text())["extra"]
    assert best["score"] == selection_score(best["eval"]) >= selection_score(last["eval"])
    assert sorted(p.name for p in (tmp_path / "run" / "snapshots").iterdir()) == ["step_2", "step_4"]
    # Without evaluation (eval.episodes 0) the run still checkpoints every eval_every steps, and
    # its snapshots come with them (they were left out).
    train(tiny(**{"train.steps": 4, "train.eval_every": 2, "eval.episodes": 0, "snapshot_every": 2}),
          tmp_path / "quiet", progress=False)
    assert sorted(p.name for p in (tmp_path / "quiet" / "snapshots").iterdir()) == ["step_2", "step_4"]
    with pytest.raises(ConfigError, match="multiple of train.eval_every"):
        tiny(**{"train.eval_every": 2, "snapshot_every": 3})


def test_a_logged_run_is_named_after_its_folder_not_the_staging_folder_of_a_replacement(tmp_path, monkeypatch):
    """With train.logger wandb the run is named after the run folder as given: a replacement
    (--overwrite of a folder that holds a run) writes into a hidden staging folder, whose name
    (.seed0.new-XXXX) it took, and a sweep's runs were all named seed0, seed1, ..."""
    import rate.training

    names = []

    class Run:  # what TrainingLoop uses of a wandb run
        config = summary = type("Updates", (), {"update": lambda self, *a, **k: None})()

        def log(self, *args, **kwargs):
            pass

        def finish(self):
            pass

    monkeypatch.setattr(rate.training, "start_wandb", lambda name: names.append(name) or Run())
    out = tmp_path / "task" / "rate" / "seed0"
    cfg = tiny(**{"train.steps": 2, "train.eval_every": 2, "train.logger": "wandb"})
    train(cfg, out, progress=False)
    train(cfg, out, overwrite=True, progress=False)
    assert [n for n in names if n is not None] == [str(out), str(out)]


def test_a_wandb_run_gets_the_runs_metrics_steps_config_and_one_finish(tmp_path, monkeypatch):
    """train.logger wandb, through a stand-in ``wandb`` module (the extra is not installed here, so
    the offline test beside the foreign datasets skips): the run is started once, under the
    project ``rate``, every logged scalar reaches it under its TensorBoard tag at its step, the
    config and final metrics go to its config and summary, and it is finished once."""
    import sys
    import types

    calls = []

    class Run:
        def __init__(self):
            self.config = types.SimpleNamespace(update=lambda values, **kw: calls.append(("config", values)))
            self.summary = types.SimpleNamespace(update=lambda values: calls.append(("summary", values)))

        def log(self, values, step):
            calls.append(("log", values, step))

        def finish(self):
            calls.append(("finish",))

    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: calls.append(("init", kwargs)) or Run()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    out = tmp_path / "task" / "rate" / "seed0"
    train(tiny(**{"train.steps": 4, "train.eval_every": 2, "eval.episodes": 2, "eval.lengths": [12],
                  "train.logger": "wandb"}), out, progress=False)
    inits = [c for c in calls if c[0] == "init"]
    assert len(inits) == 1 and inits[0][1]["project"] == "rate" and inits[0][1]["name"] == str(out)
    logged = [(step, tag) for c in calls if c[0] == "log" for step in [c[2]] for tag in c[1]]
    assert [step for step, tag in logged if tag == "train/loss"] == [1, 2, 3, 4]
    assert {step for step, tag in logged if tag == "eval/success_T12"} == {2, 4}
    config = next(c[1] for c in calls if c[0] == "config")
    assert config["train.steps"] == 4 and config["model.segment_steps"] == 4
    assert "success_T12" in " ".join(next(c[1] for c in calls if c[0] == "summary"))
    assert calls[-1] == ("finish",) and calls.count(("finish",)) == 1


def test_a_window_stride_that_would_be_ignored_or_skip_steps_is_refused():
    window = tiny().model.window_steps
    with pytest.raises(ConfigError, match="window_stride sets where strided windows start; with window_start 'random'"):
        tiny(**{"window_start": "random", "window_stride": 2})
    with pytest.raises(ConfigError, match=f"window_stride {window + 1} is longer than a window .{window} steps."):
        tiny(**{"window_start": "strided", "window_stride": window + 1})
    assert tiny(**{"window_start": "strided", "window_stride": window}).window_stride == window


def test_resume_refuses_a_field_added_since_the_run_set_to_a_new_value():
    """A run saved before a field existed ran with its default: resuming it with that default is
    the same run, with another value it is not."""
    from rate.config import to_dict
    from rate.resume import config_changes

    cfg = tiny()
    saved = to_dict(cfg)
    del saved["model"]["backbone"]["cache_position"]  # as a run saved before the field existed
    assert config_changes(saved, cfg) == []
    changed = tiny(**{"model.backbone.mem_len": 0, "model.backbone.memory_sees_cache": False})
    saved_changed = to_dict(changed)
    del saved_changed["model"]["backbone"]["cache_position"]
    import dataclasses

    backbone = dataclasses.replace(changed.model.backbone, cache_position="contiguous")
    now = dataclasses.replace(changed, model=dataclasses.replace(changed.model, backbone=backbone))
    assert config_changes(saved_changed, now) == ["model.backbone.cache_position: 'official' -> 'contiguous'"]


def test_a_resume_refusal_names_the_outer_differences_first():
    """Another kind of model differs in many backbone fields; the refusal lists a few, and
    ``model.kind`` must be among them (alphabetically it came after four ``model.backbone.*``)."""
    from rate.config import to_dict
    from rate.resume import config_changes

    saved = to_dict(tiny(**{"model.kind": "bc_gru", "model.backbone.d_model": 16, "model.backbone.d_head": 8,
                            "model.backbone.n_heads": 1, "model.backbone.n_layers": 1, "model.backbone.d_inner": 8}))
    changes = config_changes(saved, tiny())
    assert changes[0].startswith("model.kind: 'bc_gru' -> ") and len(changes) > 4


def test_resume_may_change_how_the_run_computes_but_not_what():
    """Threads, compilation and the allocator setting change speed, not the experiment."""
    import dataclasses

    from rate.config import to_dict
    from rate.resume import config_changes

    cfg = tiny()
    faster = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threads=2, compile=True,
                                                                keep_freed_memory=not cfg.train.keep_freed_memory))
    assert config_changes(to_dict(cfg), faster) == []
    other_seed = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=cfg.train.seed + 1))
    assert config_changes(to_dict(cfg), other_seed) == ["train.seed: 0 -> 1"]
    # Of the evaluation settings, the wrappers shape the training data too (flattened, rescaled).
    wrapped = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, wrappers=["FlattenObservation"],
                                                                episodes=cfg.eval.episodes + 1))
    assert config_changes(to_dict(cfg), wrapped) == ["eval.wrappers: '' -> 'FlattenObservation'"]


@pytest.mark.parametrize("module, option", [
    ("train.cache_probe", ["--seeds", "-1"]), ("train.cache_probe", ["--threads", "0"]),
    ("train.cache_probe", ["--segment", "1300"]),  # (longer than a test stream's row: a traceback before)
    ("train.retrieval_reference", ["--seed", "-1"]), ("train.retrieval_reference", ["--steps", "0"]),
    ("eval.vizdoom_cue", ["--seed", "-1"]), ("eval.vizdoom_cue", ["--lr", "inf"]),
    ("eval.vizdoom_cue", ["--epochs", "zero"]),
])
def test_scripts_refuse_bad_numbers_as_usage_errors(module, option, capsys):
    """A negative seed (numpy refuses it), zero threads, a non-finite rate: argparse's usage error
    naming the option, status 2, before any work (these used to end in a traceback)."""
    import importlib

    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(option)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"argument {option[0]}:" in err and "Traceback" not in err


def test_scripts_refuse_an_output_they_cannot_write_before_the_work(tmp_path, capsys, monkeypatch):
    """cache_probe's table and prepare_lm's data folder under a path whose folder cannot be made
    (a file stands there): one error line, status 2, and the probe trains nothing first."""
    import train.cache_probe
    from train import prepare_lm

    (tmp_path / "file").write_text("")
    monkeypatch.setattr(train.cache_probe, "run", lambda *a, **k: pytest.fail("trained before checking --out"))
    assert train.cache_probe.main(["--out", str(tmp_path / "file" / "table.md")]) == 2
    # (the folder is made before any download: nothing reaches the network)
    assert prepare_lm.main(["--data-dir", str(tmp_path / "file" / "data")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: file system: ") for line in lines), lines


def test_ctrl_c_while_training_is_one_line_that_says_what_the_folder_holds(tmp_path, capsys, monkeypatch,
                                                                           tmaze_data_root):
    """After a checkpoint: continue with --resume; before the first: nothing kept, or with
    --overwrite the earlier run as it was."""
    import rate.rl.trainer as trainer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmaze_data_root))
    config, out = tmp_path / "config.yaml", tmp_path / "run"
    config.write_text(yaml.safe_dump(tiny_data()))
    real_step = trainer.train_step

    def ctrl_c_at(step: int):
        calls = []

        def step_then_ctrl_c(*args, **kwargs):
            calls.append(1)
            if len(calls) == step:
                raise KeyboardInterrupt
            return real_step(*args, **kwargs)

        monkeypatch.setattr(trainer, "train_step", step_then_ctrl_c)

    args = [str(config), "train.steps=4", "train.eval_every=2", "eval.episodes=1", "eval.lengths=[12]", "--out", str(out),
            "--no-progress"]
    ctrl_c_at(1)  # before the first checkpoint: the new folder goes
    assert main(args) == 130
    assert capsys.readouterr().err == "error: interrupted; the run reached no checkpoint: nothing was kept\n"
    assert not out.exists()
    ctrl_c_at(3)  # after the checkpoint of step 2
    assert main(args) == 130
    assert capsys.readouterr().err == f"error: interrupted; {out} keeps the run's last checkpoint: continue with --resume --out {out}\n"
    monkeypatch.setattr(trainer, "train_step", real_step)
    assert main([*args, "--resume"]) == 0
    assert torch.load(out / STATE_FILE, weights_only=True)["step"] == 4
    before = digest(config, out)
    ctrl_c_at(1)  # replacing it, before the new run's first checkpoint
    assert main([*args, "--overwrite"]) == 130
    assert capsys.readouterr().err == (f"error: interrupted; the earlier run in {out} is left as it was (the new one "
                                       "had no checkpoint yet)\n")
    assert digest(config, out) == before


def test_an_evaluation_written_to_a_folder_path_is_refused(tmp_path, capsys, trained_run):
    from rate.cli.evaluate import main as evaluate_main

    with pytest.raises(SystemExit) as exit_:
        evaluate_main([str(trained_run), "--out", f"{tmp_path / 'new'}/", "--episodes", "1"])
    assert exit_.value.code == 2 and "ends with /, a folder: name the file in it" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_a_missing_dataset_folder_and_the_default_dataset_are_named_as_such(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "root"))
    assert main(["--dataset", str(tmp_path / "no_such"), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'no_such'}: no such dataset folder\n"
    config = tmp_path / "mine.yaml"  # names no dataset_id: the default's absence is explained
    config.write_text("model: {kind: bc_mlp}\ntrain: {steps: 5}\n")
    assert main([str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: Minari dataset 'rate/tmaze/oracle-T90-v0' not found")
    assert "(it is also the default dataset_id, which a config naming none trains on" in err
    assert not (tmp_path / "run").exists()
    # A root set but empty (Minari reads it as the current folder) or naming a file: said as such,
    # not as "not found under : " or Minari's makedirs error on a dataset file's path.
    monkeypatch.setenv("MINARI_DATASETS_PATH", "")
    assert main(["--dataset", "ns/d-v0", "--out", str(tmp_path / "run")]) == 2
    assert one_error_line(capsys.readouterr().err).startswith("error: MINARI_DATASETS_PATH is set but empty: unset it")
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "file"))
    assert main(["--dataset", "ns/d-v0", "--out", str(tmp_path / "run")]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"error: MINARI_DATASETS_PATH={tmp_path / 'file'} is a file, not a folder: move the file away, or set "
        "MINARI_DATASETS_PATH to a folder for the datasets\n")
    assert not (tmp_path / "run").exists()


def test_a_learning_rate_that_is_no_positive_number_is_named_also_when_built_in_python():
    from rate.training import TrainConfig

    for lr in (float("nan"), -1.0, 0.0):
        with pytest.raises(ValueError, match=f"^train.lr must be positive, got {lr}$"):
            TrainConfig(lr=lr)


def test_an_export_written_to_a_folder_path_is_refused(tmp_path, capsys, trained_run):
    from rate.cli.export import main as export_main

    with pytest.raises(SystemExit) as exit_:
        export_main([str(trained_run), "--format", "onnx", "--out", f"{tmp_path / 'new'}/"])
    assert exit_.value.code == 2 and "ends with /, a folder: name the file in it" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("module", ["eval.algorithmic", "eval.lm", "eval.teacher_forced", "eval.tutorial",
                                    "eval.vizdoom_cue", "train.prepare_lm", "train.tmaze_quick", "train.demo",
                                    "train.cache_probe", "train.retrieval_reference"])
def test_ctrl_c_in_every_script_is_one_line(module, monkeypatch, capsys):
    """(Each printed a traceback.)  Ctrl-C anywhere in the script: here as its arguments are read."""
    import argparse
    import importlib

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    main = importlib.import_module(module).main
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", interrupted)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_intermixed_args", interrupted)
    assert main([]) == 130
    assert one_error_line(capsys.readouterr().err) == "error: interrupted\n"


def test_a_config_naming_no_dataset_says_it_trains_on_the_default_one(tmp_path, capsys, monkeypatch):
    """A template printed by --print-config and run without --dataset trained on the default T-Maze
    data without a word; where that data is missing, its not-found error says so already."""
    import re
    import warnings

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "root"))
    config = tmp_path / "tpl.yaml"
    config.write_text("model: {kind: bc_mlp}\ntrain: {steps: 5}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main([str(config), "--print-config"]) == 0  # (the default is not there: nothing to train on unnoticed)
    (tmp_path / "root" / "rate" / "tmaze" / "oracle-T90-v0").mkdir(parents=True)
    with pytest.warns(UserWarning, match=rf"^{re.escape(str(config))} names no dataset_id: training on the default, "
                                         r"rate/tmaze/oracle-T90-v0 \(name the data with --dataset ID or dataset_id=ID\)$"):
        assert main([str(config), "--print-config"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main([str(config), "dataset_id=ns/mine-v0", "--print-config"]) == 0
    capsys.readouterr()


def test_a_folder_that_cannot_take_a_file_is_named_not_the_write_probe():
    """(The error named the probe file, '/proc/.write-test-xd14vezn'.)"""
    from rate.cli.run import check_writable

    with pytest.raises(OSError, match=r"^\[Errno 2\] cannot make a file in /proc: No such file or directory$"):
        check_writable(Path("/proc"))
