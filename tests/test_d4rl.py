"""D4RL-format import: episode splits at terminals versus timeouts, errors, normalised scores."""

import os
import subprocess
import sys
from pathlib import Path

import h5py
import minari
import numpy as np
import pytest

from rate.data.d4rl import import_d4rl, normalized_score, read_d4rl, split_episodes
from tests.cli_errors import one_error_line
from rate.data.episodes import DatasetError


@pytest.fixture(autouse=True)
def minari_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))


def write_d4rl(path, n=10, terminals=(3,), timeouts=(6,), next_obs=True, **override):
    obs = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    data = {"observations": obs, "actions": np.full((n, 2), 0.5, np.float32), "rewards": np.arange(n, dtype=np.float32),
            "terminals": np.isin(np.arange(n), terminals), "timeouts": np.isin(np.arange(n), timeouts)}
    if next_obs:
        data["next_observations"] = obs + 100
    data.update(override)
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            f[k] = v
    return path


def test_split_at_terminals_and_timeouts_with_a_trailing_run(tmp_path):
    eps = split_episodes(read_d4rl(write_d4rl(tmp_path / "d.hdf5")))
    assert [len(e["rewards"]) for e in eps] == [4, 3, 3]  # steps 0-3 | 4-6 | 7-9
    assert eps[0]["terminations"][-1] and not eps[0]["truncations"][-1]  # terminal at step 3
    assert eps[1]["truncations"][-1] and not eps[1]["terminations"][-1]  # timeout at step 6
    assert eps[2]["truncations"][-1]  # the file ends without a flag: truncated
    assert eps[0]["observations"].shape == (5, 3) and eps[0]["observations"][-1, 0] == 9 + 100  # next_observations[3]
    assert eps[1]["rewards"].tolist() == [4, 5, 6]


def test_without_next_observations_the_last_one_is_repeated(tmp_path):
    eps = split_episodes(read_d4rl(write_d4rl(tmp_path / "d.hdf5", next_obs=False)))
    np.testing.assert_array_equal(eps[0]["observations"][-1], eps[0]["observations"][-2])


def test_import_round_trip(tmp_path):
    ds, summary = import_d4rl(write_d4rl(tmp_path / "d.hdf5"), "test/d4rl/small-v0")
    again = minari.load_dataset("test/d4rl/small-v0")
    assert again.total_episodes == 3 and again.total_steps == 10 == ds.total_steps
    ep = again[1]
    assert ep.rewards.tolist() == [4, 5, 6] and ep.truncations[-1] and not ep.terminations[-1]
    assert summary.trailing_truncated and summary.dropped == []


def test_without_an_environment_the_actions_declare_their_own_space(tmp_path):
    ds, _ = import_d4rl(write_d4rl(tmp_path / "ids.hdf5", actions=np.arange(10) % 3), "test/d4rl/ids-v0")
    assert ds.spec.action_space == minari.load_dataset("test/d4rl/ids-v0").spec.action_space
    assert str(ds.spec.action_space) == "Discrete(3)"
    ds, _ = import_d4rl(write_d4rl(tmp_path / "box.hdf5"), "test/d4rl/box-v0")
    assert (ds.spec.action_space.low == -1).all() and (ds.spec.action_space.high == 1).all()
    wide = write_d4rl(tmp_path / "wide.hdf5", actions=np.full((10, 2), 3.0, np.float32))
    with pytest.raises(DatasetError, match=r"actions span 3..3, outside \[-1, 1\]; name the environment with --env"):
        import_d4rl(wide, "test/d4rl/wide-v0")
    assert "test/d4rl/wide-v0" not in minari.list_local_datasets()
    flags = write_d4rl(tmp_path / "flags.hdf5", actions=np.arange(10) % 2 == 1)
    with pytest.raises(DatasetError, match=r"boolean actions of shape \(\); .* store one flag per step as 0/1"):
        import_d4rl(flags, "test/d4rl/flags-v0")
    # Ids into the millions are no discrete action set (its one-logit-per-id head would not fit memory).
    huge = write_d4rl(tmp_path / "huge.hdf5", actions=np.array([0, 1, 2, 10**12] + [0] * 6))
    with pytest.raises(DatasetError, match=r"integer actions up to 1000000000000: more than 100000 action ids"):
        import_d4rl(huge, "test/d4rl/huge-v0")


def test_import_says_what_it_dropped_and_keeps_infos_when_asked(tmp_path, capsys):
    from rate.cli.import_d4rl import main

    qpos = np.arange(20, dtype=np.float64).reshape(10, 2)
    path = write_d4rl(tmp_path / "d.hdf5", **{"infos/qpos": qpos, "infos/goal": np.zeros(10),
                                              "infos/goals_per_episode": np.zeros(3)})
    assert main([str(path), "test/d4rl/infos-v0"]) == 0
    line = capsys.readouterr().out
    assert "3 episodes, 10 steps" in line and "kept as truncated" in line
    assert "dropped: infos/goal, infos/goals_per_episode, infos/qpos" in line and "--keep-infos" in line
    assert main([str(path), "test/d4rl/infos-v0", "--overwrite", "--keep-infos"]) == 0
    line = capsys.readouterr().out
    assert "kept infos: infos/goal, infos/qpos" in line and "dropped: infos/goals_per_episode" in line
    ep = minari.load_dataset("test/d4rl/infos-v0")[1]
    np.testing.assert_array_equal(ep.infos["qpos"], np.concatenate([qpos[4:7], qpos[6:7]]))  # T + 1 rows
    # A variable-length array per step (an HDF5 vlen dataset, read as objects) cannot be stored: dropped
    # and said so, where Minari's writer raised a TypeError (a traceback) after the whole read.
    with h5py.File(path, "a") as f:
        ragged = f.create_dataset("infos/contacts", (10,), dtype=h5py.vlen_dtype(np.float32))
        for i in range(10):
            ragged[i] = np.arange(i % 3, dtype=np.float32)
    assert main([str(path), "test/d4rl/infos-v0", "--overwrite", "--keep-infos"]) == 0
    line = capsys.readouterr().out
    assert "kept infos: infos/goal, infos/qpos" in line and "dropped: infos/contacts, infos/goals_per_episode" in line


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"rewards": np.array([0.0, np.nan] + [0.0] * 8, np.float32)}, "NaN or inf in rewards"),
        ({"actions": np.zeros((9, 2), np.float32)}, "actions has 9 rows"),
        ({"next_observations": np.zeros((10, 4), np.float32)}, r"next_observations of shape \(10, 4\)"),
        # Per-step values of another shape: one line, not numpy's broadcasting into an (N, N) flag array.
        ({"rewards": np.float32(1.0)}, "rewards must hold one row per step, not a single value"),
        ({"rewards": np.zeros((10, 2), np.float32)}, r"rewards of shape \(10, 2\); one value per step"),
        ({"rewards": np.zeros((10, 1, 1), np.float32)}, r"rewards of shape \(10, 1, 1\)"),
        # Text where numbers belong (was a traceback), flags that are no flags (every step an episode end).
        ({"observations": np.array([b"abc"] * 10), "next_observations": np.array([b"abc"] * 10)},
         "observations of dtype |S3; D4RL arrays hold numbers"),
        ({"actions": np.zeros((10, 0), np.float32)}, r"actions of shape \(10, 0\): no features"),
    ],
)
def test_bad_files_are_refused(tmp_path, kwargs, pattern):
    with pytest.raises(DatasetError, match=pattern):
        read_d4rl(write_d4rl(tmp_path / "d.hdf5", **kwargs))


@pytest.mark.parametrize("key, values, pattern", [("terminals", np.array([b"no"] * 10), "terminals of dtype |S2"),
                                                  ("timeouts", np.array([0, 2] + [0] * 8),
                                                   "timeouts hold values other than 0 and 1")])
def test_flags_that_are_no_flags_are_refused(tmp_path, key, values, pattern):
    """(read as booleans, every such step would end an episode)"""
    path = write_d4rl(tmp_path / "d.hdf5")
    with h5py.File(path, "a") as f:
        del f[key]
        f[key] = values
    with pytest.raises(DatasetError, match=pattern):
        read_d4rl(path)


def test_missing_keys_truncated_and_missing_files(tmp_path):
    with h5py.File(tmp_path / "x.hdf5", "w") as f:
        f["observations"] = np.zeros((2, 3))
    with pytest.raises(DatasetError, match="missing actions"):
        read_d4rl(tmp_path / "x.hdf5")
    with h5py.File(tmp_path / "g.hdf5", "w") as f:
        for key in ("observations", "actions", "rewards", "terminals"):
            f[key] = np.zeros(2)
        f.create_group("timeouts")
    with pytest.raises(DatasetError, match="timeouts must be arrays, not HDF5 groups"):
        read_d4rl(tmp_path / "g.hdf5")
    good = write_d4rl(tmp_path / "d.hdf5").read_bytes()
    (tmp_path / "t.hdf5").write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        read_d4rl(tmp_path / "t.hdf5")
    with pytest.raises(DatasetError, match="not found"):
        read_d4rl(tmp_path / "none.hdf5")


@pytest.mark.slow
def test_cli_exit_code_and_input_untouched(tmp_path):
    bad = tmp_path / "t.hdf5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 50)
    before = bad.read_bytes()
    proc = subprocess.run([sys.executable, "-m", "rate.cli.import_d4rl", str(bad), "test/x/y-v0"], capture_output=True, text=True)
    assert proc.returncode == 2 and "corrupt" in one_error_line(proc.stderr)
    assert bad.read_bytes() == before


def test_normalized_scores_use_the_d4rl_constants():
    np.testing.assert_allclose(normalized_score("hopper-medium-v2", [-20.272305, 3234.3]), [0.0, 1.0])
    np.testing.assert_allclose(normalized_score("halfcheetah", [12135.0]), [1.0])
    np.testing.assert_allclose(normalized_score("walker2d", [(1.629008 + 4592.3) / 2]), [0.5])
    with pytest.raises(KeyError, match="no D4RL reference"):
        normalized_score("ant", [0.0])


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({}, r"observations have shape \(3,\), CartPole-v1 gives \(4,\)"),  # write_d4rl's 3-wide observations
        ({"observations": np.zeros((10, 4), np.float32), "next_observations": np.zeros((10, 4), np.float32)},
         "takes one integer action"),  # write_d4rl's (10, 2) float actions
        ({"observations": np.zeros((10, 4), np.float32), "next_observations": np.zeros((10, 4), np.float32),
          "actions": np.array([0, 1, 2] + [0] * 7)}, "actions outside"),
        # one float per step (the importer's (N, 1) column) named as the file holds it
        ({"observations": np.zeros((10, 4), np.float32), "next_observations": np.zeros((10, 4), np.float32),
          "actions": np.zeros(10, np.float32)}, r"actions of shape \(\) and dtype float32, but CartPole-v1 takes one "
                                               "integer action per step"),
        # beyond float32 (CartPole's bound is inf there, so no warning either): would be stored as inf
        ({"observations": np.full((10, 4), 1e39), "next_observations": np.zeros((10, 4)),
          "actions": np.zeros(10, np.int64)}, "observations hold values beyond CartPole-v1's float32 range"),
        # spaces other than Box and Discrete actions: every row checked (FrozenLake's Discrete(16) observations)
        ({"observations": np.array([0, 1, 99, 3, 4, 5, 6, 7, 8, 9]), "next_observations": np.arange(10),
          "actions": np.zeros(10, np.int64)}, r"observations outside FrozenLake-v1's Discrete\(16\): step 2 holds 99"),
        ({"observations": np.array([0, 0.5] + [0] * 8), "next_observations": np.arange(10),
          "actions": np.zeros(10, np.int64)}, "observations of dtype float64 hold values that FrozenLake-v1's int64 "
                                              "space cannot"),
        # 2.0**63 is whole and, compared in float64, "<=" int64's max, which rounds up to it: it wrapped
        ({"observations": np.array([0.0, 2.0**63] + [0.0] * 8), "next_observations": np.arange(10),
          "actions": np.zeros(10, np.int64)}, "observations of dtype float64 hold values that FrozenLake-v1's int64 "
                                              "space cannot"),
        ({"observations": np.arange(10), "next_observations": np.array([-3] + [0] * 9),
          "actions": np.zeros(10, np.int64)}, "next_observations outside FrozenLake-v1's Discrete\\(16\\): step 0"),
    ],
)
def test_arrays_that_do_not_fit_the_named_environment_are_refused(tmp_path, kwargs, pattern):
    """--env makes the dataset declare that environment's spaces, so its arrays must have them."""
    env_id = "FrozenLake-v1" if "FrozenLake" in pattern else "CartPole-v1"
    with pytest.raises(DatasetError, match=pattern):
        import_d4rl(write_d4rl(tmp_path / "d.hdf5", **kwargs), "test/x/y-v0", env_id=env_id)
    assert "test/x/y-v0" not in minari.list_local_datasets()


def test_fitting_arrays_import_with_the_environment(tmp_path):
    path = write_d4rl(tmp_path / "d.hdf5", observations=np.zeros((10, 4), np.float32), actions=np.arange(10) % 2,
                      next_obs=False)
    ds, _ = import_d4rl(path, "test/x/cartpole-v0", env_id="CartPole-v1")
    assert ds.spec.env_spec.id == "CartPole-v1" and ds.total_steps == 10
    # float64 observations are stored in the space's float32 (the dataset declares that space);
    # observations outside its finite bounds (positions of 10 where CartPole stops at 4.8) are
    # named: other units, or the features in another order?
    observations = np.zeros((10, 4))
    observations[:, 0] = 10.0
    path = write_d4rl(tmp_path / "far.hdf5", observations=observations, actions=np.arange(10) % 2, next_obs=False)
    with pytest.warns(UserWarning, match=r"outside CartPole-v1's bounds in 1 of 4 features \(feature 0: 10..10, the "
                                         r"space -4.8..4.8\)"):
        ds, _ = import_d4rl(path, "test/x/cartpole-far-v0", env_id="CartPole-v1")
    episode = next(ds.iterate_episodes())
    assert episode.observations.dtype == np.float32 and ds.observation_space.dtype == np.float32
    # One flag per step is a Discrete environment's ids 0 and 1.
    path = write_d4rl(tmp_path / "flags.hdf5", observations=np.zeros((10, 4), np.float32),
                      actions=np.arange(10) % 2 == 1, next_obs=False)
    ds, _ = import_d4rl(path, "test/x/cartpole-flags-v0", env_id="CartPole-v1")
    assert next(ds.iterate_episodes()).actions.tolist()[:4] == [0, 1, 0, 1]


@pytest.mark.slow
@pytest.mark.parametrize("args, pattern", [([""], "malformed dataset id"), (["test/x/y-v0", "--env", "NoSuch-v0"], "NoSuch")])
def test_cli_bad_id_or_env_is_one_line_and_the_root_is_kept(tmp_path, args, pattern):
    import_d4rl(write_d4rl(tmp_path / "d.hdf5"), "keep/a-v0")
    root = tmp_path / "minari"
    before = sorted(str(p) for p in root.rglob("*"))
    proc = subprocess.run([sys.executable, "-m", "rate.cli.import_d4rl", str(tmp_path / "d.hdf5"), *args], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and pattern in one_error_line(proc.stderr)
    assert sorted(str(p) for p in root.rglob("*")) == before


def test_cli_replaces_a_dataset_only_with_overwrite(tmp_path, capsys):
    from rate.cli.import_d4rl import main

    import_d4rl(write_d4rl(tmp_path / "old.hdf5", n=10), "test/x/d-v0")
    new = write_d4rl(tmp_path / "new.hdf5", n=12, terminals=(5,), timeouts=(11,))
    assert main([str(new), "test/x/d-v0"]) == 2  # kept: the error names --overwrite
    assert capsys.readouterr().err.startswith("error: Minari dataset test/x/d-v0 already exists")  # (a refusal)
    assert minari.load_dataset("test/x/d-v0").total_steps == 10
    assert main([str(new), "test/x/d-v0", "--overwrite"]) == 0
    assert minari.load_dataset("test/x/d-v0").total_steps == 12


def test_ctrl_c_while_importing_is_one_line_and_leaves_the_dataset_there_as_it_was(tmp_path, capsys, monkeypatch):
    """(It was a 26-line traceback.)  Stopped in Minari's write, --overwrite keeps the old dataset
    and leaves no staging folder."""
    from rate.cli.import_d4rl import main

    import_d4rl(write_d4rl(tmp_path / "old.hdf5", n=10), "test/x/d-v0")
    root = Path(os.environ["MINARI_DATASETS_PATH"])
    before = sorted(str(p) for p in root.rglob("*"))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(minari, "create_dataset_from_buffers", interrupted)
    assert main([str(write_d4rl(tmp_path / "new.hdf5", n=12)), "test/x/d-v0", "--overwrite"]) == 130
    assert one_error_line(capsys.readouterr().err) == (
        "error: interrupted; nothing was written (test/x/d-v0, if there was one, is as it was)\n")
    assert sorted(str(p) for p in root.rglob("*")) == before
    assert minari.load_dataset("test/x/d-v0").total_steps == 10


def test_per_step_columns_are_read_as_one_value_per_step(tmp_path):
    """Rewards and flags stored as (N, 1) columns split and import as (N,) ones: mixed with (N,)
    flags they broadcast into an (N, N) array, and (N, 1) rewards were refused only at training."""
    column = write_d4rl(tmp_path / "column.hdf5", rewards=np.arange(10, dtype=np.float32)[:, None])
    with h5py.File(column, "a") as f:
        del f["timeouts"]
        f["timeouts"] = np.isin(np.arange(10), [6])[:, None]  # the step-6 timeout as a column
    eps = split_episodes(read_d4rl(column))
    assert [len(e["rewards"]) for e in eps] == [4, 3, 3] and eps[1]["rewards"].tolist() == [4, 5, 6]
    import_d4rl(column, "test/d4rl/column-v0")
    assert minari.load_dataset("test/d4rl/column-v0")[1].rewards.shape == (3,)


def test_boolean_observations_without_an_environment_are_bounded_by_0_and_1(tmp_path):
    obs = (np.arange(30).reshape(10, 3) % 2).astype(bool)
    ds, _ = import_d4rl(write_d4rl(tmp_path / "bits.hdf5", observations=obs, next_observations=obs),
                        "test/d4rl/bits-v0")
    space = ds.spec.observation_space
    assert space.dtype == np.bool_ and space.shape == (3,) and space.contains(obs[0])


def test_integer_observations_without_an_environment_take_their_types_range(tmp_path):
    obs = (np.arange(30) % 256).astype(np.uint8).reshape(10, 3)
    ds, _ = import_d4rl(write_d4rl(tmp_path / "pixels.hdf5", observations=obs, next_observations=obs),
                        "test/d4rl/pixels-v0")
    space = ds.spec.observation_space
    assert space.dtype == np.uint8 and (space.low == 0).all() and (space.high == 255).all()


def test_images_keep_their_exact_values_and_any_channel_count(tmp_path):
    """Minari would JPEG-encode uint8 images of 32 x 32 pixels or more (lossy, and refusing 1 or 4
    channels); an import stores the file's values."""
    rng = np.random.default_rng(0)
    for channels in (1, 3, 4):
        obs = rng.integers(0, 256, (10, 32, 32, channels), dtype=np.uint8)
        ds, _ = import_d4rl(write_d4rl(tmp_path / f"img{channels}.hdf5", observations=obs, next_observations=obs),
                            f"test/d4rl/img{channels}-v0")
        first = next(ds.iterate_episodes())
        np.testing.assert_array_equal(first.observations[:4], obs[:4])


@pytest.mark.slow
def test_older_files_without_timeouts_and_one_dimensional_actions(tmp_path):
    path = write_d4rl(tmp_path / "old.hdf5", actions=np.linspace(-1, 1, 10).astype(np.float32))
    with h5py.File(path, "a") as f:
        del f["timeouts"]
    with pytest.warns(UserWarning, match="no timeouts"):
        ds, summary = import_d4rl(path, "test/d4rl/old-v0")
    assert summary.episodes == 2  # the terminal at step 3, then a trailing run
    assert ds.spec.action_space.shape == (1,)  # one continuous action per step
    # The command says it in one line, as its errors are said, not as a Python warning with source.
    done = subprocess.run([sys.executable, "-m", "rate.cli.import_d4rl", str(path), "test/d4rl/old-cli-v0"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr.startswith("warning: ") and done.stderr.count("\n") == 1, done.stderr
    column = write_d4rl(tmp_path / "column.hdf5", observations=np.zeros((10, 4), np.float32), next_obs=False,
                        actions=(np.arange(10) % 2)[:, None])
    ds, _ = import_d4rl(column, "test/d4rl/cartpole-column-v0", env_id="CartPole-v1")
    assert ds.spec.action_space.n == 2


def test_env_ids_from_entry_points_rounded_bounds_and_reference_tasks(tmp_path):
    from rate.data.d4rl import reference_task

    tmaze = write_d4rl(tmp_path / "tmaze.hdf5", observations=np.zeros((10, 4), np.float32), next_obs=False,
                       actions=np.arange(10) % 4)
    ds, _ = import_d4rl(tmaze, "test/d4rl/tmaze-v0", env_id="rate/TMaze-v0")  # registered by an entry point
    assert ds.spec.env_spec.id == "rate/TMaze-v0"
    rounded = write_d4rl(tmp_path / "rounded.hdf5", actions=np.full((10, 2), 1.0000001, np.float32))
    assert import_d4rl(rounded, "test/d4rl/rounded-v0")[1].steps == 10
    assert [reference_task(e) for e in ("Hopper-v5", "mujoco:Walker2d-v4", "hopper-medium-v2",
                                        "dm_control/hopper-hop-v0", "Ant-v5")] == ["hopper", "walker2d", "hopper",
                                                                                   None, None]
