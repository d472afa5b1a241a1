"""The main job (`make run`) end to end on a tiny configuration: dataset, training, rollouts, report."""

import json

import pytest
import yaml

from train.tmaze_quick import main
from tests.tiny_tmaze import TINY
from tests.cli_errors import one_error_line


def test_main_job_builds_data_trains_evaluates_and_reports(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "steps": 20, "eval_every": 20}}))
    report = tmp_path / "quick.md"
    code = main(["--config", str(config), "--episodes", "4", "--dataset-episodes", "40", "--lengths", "12", "30",
                 "--out", str(tmp_path / "run"), "--report", str(report)])
    assert code == 0
    text = report.read_text()
    assert "| 12 |" in text and "| 30 (beyond training horizon) |" in text
    assert (tmp_path / "quick.png").stat().st_size > 0
    assert (tmp_path / "run" / "config.json").is_file()
    # The trained run evaluates with `python -m eval`: JSON with a plot beside it, or without.
    from rate.cli.evaluate import main as evaluate

    results = []
    for name, flags in (("plotted", []), ("bare", ["--no-plot"])):
        out = tmp_path / f"{name}.json"
        assert evaluate([str(tmp_path / "run"), "--lengths", "12", "--episodes", "4", "--out", str(out), *flags]) == 0
        results.append(json.loads(out.read_text())["results"]["12"])
        assert out.with_suffix(".png").exists() == (name == "plotted")
    # the same checkpoint and episodes (the run's evaluation seeds): the same result, also the report's
    assert results[0] == results[1]
    assert f"| 12 | {results[0]['success']:.2f} | {results[0]['return']:.2f} +- " in text


def test_main_job_refuses_an_unknown_config_key(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({**TINY, "trian": {}}))
    assert main(["--config", str(config), "--out", str(tmp_path / "run"), "--report", str(tmp_path / "q.md")]) == 2
    assert "trian" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "q.md").exists()


@pytest.mark.slow
def test_main_job_errors_inside_training_are_one_line(tmp_path, capsys, monkeypatch):
    """An evaluation environment that does not exist, a dataset that does not fit the model, a run
    folder that another trainer holds: one error line and exit 2, no traceback, no report."""
    import pytest

    from tests.tiny_tmaze import held_by_another_process

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "steps": 2, "eval_every": 2}}))
    report = tmp_path / "q.md"
    args = ["--config", str(config), "--episodes", "1", "--dataset-episodes", "20", "--report", str(report)]
    for override, message in (("eval.env_id=rate/Nowhere-v0", "Nowhere"), ("model.obs_shape=[5]", "obs")):
        assert main([*args, "--out", str(tmp_path / "run"), override]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err
    held = tmp_path / "held"
    with held_by_another_process(held):
        assert main([*args, "--out", str(held)]) == 4  # (RUN_FOLDER_HELD_EXIT)
    assert "being written by another trainer" in capsys.readouterr().err
    assert not report.exists() and not held.exists()  # the refused run wrote nothing; the holder tidied up
    capsys.readouterr()
    with pytest.raises(SystemExit) as usage:
        main([*args, "--episodes", "0"])  # a usage error, not the config's own count
    assert usage.value.code == 2 and "--episodes" in capsys.readouterr().err
    # A report that cannot be written is found before the dataset and the training, not after them.
    (tmp_path / "a_file").write_text("")
    blocked = [a if a != str(report) else str(tmp_path / "a_file" / "q.md") for a in args]
    assert main([*blocked, "--out", str(tmp_path / "late")]) == 2
    err = capsys.readouterr().err
    assert "a file is where a folder would go" in err and err.count("\n") == 1
    assert not (tmp_path / "late").exists()  # (no run folder made: nothing trained)


def test_main_job_replaces_only_its_own_run_folder(tmp_path, capsys, monkeypatch):
    """--out names a folder of something else (results/, a home folder): refused before anything
    is built or trained, every file kept."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    other = tmp_path / "papers"
    other.mkdir()
    (other / "notes.txt").write_text("the user's")
    assert main(["--config", str(config), "--out", str(other), "--report", str(tmp_path / "q.md")]) == 2
    assert "holds files that are not a run's (notes.txt)" in capsys.readouterr().err
    assert [p.name for p in other.iterdir()] == ["notes.txt"] and not (tmp_path / "q.md").exists()
    assert not (tmp_path / "minari").exists()  # no dataset built either



def test_main_job_builds_no_dataset_under_an_id_of_another_horizon_and_refuses_bad_counts(tmp_path, capsys,
                                                                                           monkeypatch):
    """The shipped id names T = 90 oracle episodes: a window of another length would have built
    other corridors under it (and every later run would reuse them); too few episodes is one line."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    out = ["--out", str(tmp_path / "run"), "--report", str(tmp_path / "quick.md")]
    assert main(["model.num_segments=1", *out]) == 2
    err = capsys.readouterr().err
    assert "dataset_id rate/tmaze/oracle-T90-v0 names oracle episodes of another horizon" in err
    assert "window of 10 steps: set dataset_id=rate/tmaze/oracle-T10-v0" in err and err.count("\n") == 1
    assert main(["--dataset-episodes", "1", *out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: episodes must be >= 2") and err.count("\n") == 1, err
    assert not (tmp_path / "minari").exists() or not any((tmp_path / "minari").rglob("*.hdf5"))
    monkeypatch.setenv("MINARI_DATASETS_PATH", "")  # (Minari's own listing failed on it: "[Errno 2] ... ''")
    assert main(out) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MINARI_DATASETS_PATH is set but empty") and err.count("\n") == 1, err


def test_main_job_refuses_lengths_below_the_shortest_maze_before_training(tmp_path, capsys):
    """T-Maze needs T >= 3: a shorter --lengths is argparse's usage error at the start, not the
    environment's traceback after minutes of training."""
    with pytest.raises(SystemExit) as exit_:
        main(["--lengths", "30", "2", "--out", str(tmp_path / "run"), "--report", str(tmp_path / "quick.md")])
    assert exit_.value.code == 2 and "must be at least 3 (the shortest T-Maze), got 2" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_main_job_refuses_another_tasks_config_before_building_anything(tmp_path, capsys, monkeypatch):
    """An AAR config whose dataset is missing: it built T-Maze oracle episodes under the AAR id
    (every later AAR sweep then failed on them); a T-Maze dataset of another horizon than the
    window is refused also when it exists (the page would call its lengths within the horizon)."""
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    out = ["--out", str(tmp_path / "run"), "--report", str(tmp_path / "quick.md")]
    assert main(["--config", "configs/aar/rate.yaml", *out]) == 2
    err = capsys.readouterr().err
    assert "this job trains on the project's T-Maze oracle data" in err and "rate-train" in one_error_line(err)
    assert minari.list_local_datasets() == {} and not (tmp_path / "quick.md").exists()
    from rate_envs.tmaze_data import generate_tmaze_dataset

    generate_tmaze_dataset(horizon=90, episodes=4, seed=0)  # the shipped config's id, present
    assert main(["model.num_segments=1", *out]) == 2  # (a window of 10 steps)
    assert "names oracle episodes of another horizon than this config's window of 10" in capsys.readouterr().err
