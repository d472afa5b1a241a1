"""The resumable sweep runner and CSV rows."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_errors import one_error_line
from rate.cli.records import append_row, read_rows
from rate.config import ConfigError, load_yaml
from train.sweep import ListedRun, Run, Sweep, expand, main, trainer_command, trainer_environment

def tiny_sweep(tmp_path: Path, steps: int, seeds=(0,), segments=(1, 2), threads: bool = True) -> tuple[Path, Path]:
    """A sweep file of tiny reverse runs ``reverse/tiny/segN`` and its CSV; ``threads``: the runs
    set train.threads=1 themselves (else the caller passes it with --set)."""
    csv = tmp_path / "r.csv"
    sweep_file = tmp_path / "s.yaml"
    overrides = ["model.d_model=16", "model.n_heads=2", "model.d_head=8", "model.d_inner=16", "model.n_layers=1",
                 f"train.steps={steps}", f"train.eval_every={steps}", "eval_samples=8", "task.length=2"]
    overrides += ["train.threads=1"] if threads else []
    runs = "".join(f"  - {{name: reverse/tiny/seg{n}, config: configs/algorithmic/reverse.yaml, "
                   f"overrides: {[f'segments={n}', *overrides]}}}\n" for n in segments)
    sweep_file.write_text(f"csv: {csv}\nout_root: {tmp_path / 'runs'}\nseeds: {list(seeds)}\nruns:\n{runs}")
    return sweep_file, csv


@pytest.mark.slow
def test_nested_run_folders_are_refused_and_rows_written_meanwhile_are_skipped(tmp_path, monkeypatch, capsys):
    nested = Sweep(csv=str(tmp_path / "r.csv"), out_root=str(tmp_path), seeds=[0],
                   runs=[ListedRun(name="a", config="c.yaml"), ListedRun(name="a/seed0", config="c.yaml")])
    with pytest.raises(ConfigError, match="run a/seed0/seed0's folder lies inside run a/seed0's"):
        expand(nested)
    # A second sweep (overlapping --only) finished a run after this one listed it as pending.
    sweep_file, csv = tiny_sweep(tmp_path, steps=3)
    import train.sweep as sweep_module

    real = sweep_module.trainer_command

    def first_launch_finishes_the_other(sweep, run, fresh=False):
        append_row(csv, {"run": "reverse/tiny/seg2/seed0"})  # written while seg1 starts
        return real(sweep, run, fresh)

    monkeypatch.setattr(sweep_module, "trainer_command", first_launch_finishes_the_other)
    assert main([str(sweep_file)]) == 0
    assert "reverse/tiny/seg2/seed0: its row was written meanwhile" in capsys.readouterr().out
    assert sorted(r["run"] for r in read_rows(csv)) == ["reverse/tiny/seg1/seed0", "reverse/tiny/seg2/seed0"]


@pytest.mark.slow
def test_finished_runs_are_skipped_and_rows_accumulate(tmp_path, capsys):
    sweep_file, csv = tiny_sweep(tmp_path, steps=3)
    append_row(csv, {"run": "reverse/tiny/seg1/seed0", "gen_token_acc": 0.5})  # pretend it is done
    assert main([str(sweep_file)]) == 0
    rows = read_rows(csv)
    assert [r["run"] for r in rows] == ["reverse/tiny/seg1/seed0", "reverse/tiny/seg2/seed0"]
    assert rows[1]["segments"] == "2" and rows[1]["model.d_model"] == "16" and float(rows[1]["train_seconds"]) >= 0
    assert (tmp_path / "runs/reverse/tiny/seg2/seed0/model.safetensors").is_file()
    capsys.readouterr()
    assert main([str(sweep_file)]) == 0  # nothing left to do
    assert "0 to run" in capsys.readouterr().out
    assert len(read_rows(csv)) == 2


def test_bad_sweep_file_fails_before_running(tmp_path, capsys):
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text("csv: a.csv\nout_root: r\nseeds: [0]\nruns:\n"
                          "  - {name: a, config: configs/algorithmic/reverse.yaml, overrides: [model.nope=1]}\n")
    assert main([str(sweep_file)]) == 2
    assert "nope" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "a.csv").exists()


def test_listed_runs_use_their_own_seeds_and_the_named_trainer():
    sweep = Sweep(csv="x.csv", out_root="runs", seeds=[0], trainer="train.lm",
                  runs=[ListedRun(name="a", config="configs/lm/base.yaml", overrides=["model.mem_len=8"], seeds=[0, 1]),
                        ListedRun(name="b", config="configs/lm/base.yaml")])
    assert [(r.name, r.overrides) for r in expand(sweep)] == [
        ("a/seed0", ["model.mem_len=8", "train.seed=0"]), ("a/seed1", ["model.mem_len=8", "train.seed=1"]),
        ("b/seed0", ["train.seed=0"])]
    # --set overrides end every run's list
    assert expand(sweep, ["train.lr=0.1"])[2].overrides == ["train.seed=0", "train.lr=0.1"]


def test_shipped_sweeps_expand_and_validate(capsys):
    for path in ("configs/algorithmic/sweep.yaml", "configs/lm/sweep.yaml", "configs/tmaze/sweep.yaml",
                 "configs/aar/sweep.yaml", "configs/minigrid/sweep.yaml", "configs/popgym/sweep.yaml",
                 "configs/mujoco/sweep.yaml", "configs/tmaze/valve_sweep.yaml"):
        assert main([path, "--dry-run"]) == 0
    assert "to run" in capsys.readouterr().out


@pytest.mark.slow
def test_parallel_jobs_keep_every_row_and_extra_overrides_are_recorded(tmp_path):
    """Four tiny runs two at a time: the locked append keeps all four rows, and --set reaches
    every run (and its row's overrides)."""
    sweep_file, csv = tiny_sweep(tmp_path, steps=2, seeds=(0, 1), threads=False)
    assert main([str(sweep_file), "--jobs", "2", "--set", "train.threads=1", "--set", "train.lr=0.002"]) == 0
    rows = read_rows(csv)
    assert sorted(r["run"] for r in rows) == ["reverse/tiny/seg1/seed0", "reverse/tiny/seg1/seed1",
                                              "reverse/tiny/seg2/seed0", "reverse/tiny/seg2/seed1"]
    assert all(r["train.lr"] == "0.002" and "train.lr=0.002" in r["overrides"] for r in rows)


def test_parallel_trainers_share_the_cores_unless_omp_num_threads_is_set(monkeypatch):
    """With --jobs N each trainer's torch default (train.threads 0) is 1/N of the cores, not all of
    them; one trainer, or a user's OMP_NUM_THREADS, leaves the environment as it is."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert trainer_environment(1) is None
    assert trainer_environment(4)["OMP_NUM_THREADS"] == "4"
    assert trainer_environment(32)["OMP_NUM_THREADS"] == "1"
    assert trainer_environment(4)["PATH"] == os.environ["PATH"]
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert trainer_environment(4) is None


def test_concurrent_appends_lose_no_row(tmp_path):
    from concurrent.futures import ProcessPoolExecutor

    csv = tmp_path / "r.csv"
    with ProcessPoolExecutor(4) as pool:
        list(pool.map(append_row, [csv] * 24, [{"run": f"r{i}", "x": i} for i in range(24)]))
    assert sorted(int(r["x"]) for r in read_rows(csv)) == list(range(24))


def test_rows_written_through_a_symbolic_link_reach_its_target_and_keep_the_link(tmp_path):
    shared, mine = tmp_path / "shared", tmp_path / "mine"
    shared.mkdir()
    mine.mkdir()
    append_row(shared / "r.csv", {"run": "a/seed0", "x": 1})
    (mine / "r.csv").symlink_to(shared / "r.csv")
    append_row(mine / "r.csv", {"run": "a/seed1", "x": 2})
    append_row(shared / "r.csv", {"run": "a/seed2", "x": 3})
    assert (mine / "r.csv").is_symlink()
    assert [r["x"] for r in read_rows(shared / "r.csv")] == ["1", "2", "3"] == [r["x"] for r in read_rows(mine / "r.csv")]


def test_a_row_names_the_gpu_the_run_trained_on(monkeypatch):
    """cuda:1 is named, not the first GPU (the current device); a CPU run on a GPU machine names none."""
    import torch

    from rate.cli.records import machine_info

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"GPU {device or 'current'}")
    assert machine_info("cuda:1")["gpu"] == "GPU cuda:1"
    assert machine_info("cpu")["gpu"] == ""
    assert machine_info()["gpu"] == "GPU current"  # (benchmarks: the process's device)


def test_a_row_for_a_run_recorded_meanwhile_is_refused_not_doubled(tmp_path):
    """Two trainers of one run name into different folders both pass the trainer's check before
    training; the second to finish is refused under the CSV's lock instead of adding a second row."""
    csv = tmp_path / "r.csv"
    append_row(csv, {"run": "a/seed0", "x": 1})
    with pytest.raises(ConfigError, match=r"got a row for run a/seed0 while this one trained"):
        append_row(csv, {"run": "a/seed0", "x": 2})
    assert [r["x"] for r in read_rows(csv)] == ["1"]


def test_sweep_with_a_wrong_evaluation_environment_fails_before_running(tmp_path, capsys):
    # The T = 51 task's length given to a 103-step task: POPGym refuses it, and the sweep says so
    # before any run starts.
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(f"csv: {tmp_path / 'a.csv'}\nout_root: {tmp_path / 'r'}\nseeds: [0]\ntrainer: train\n"
                          "runs:\n  - {name: a, config: configs/popgym/rate.yaml,\n"
                          "     overrides: ['eval.env_kwargs={task: RepeatPreviousMedium}', 'eval.lengths=[51]']}\n")
    assert main([str(sweep_file)]) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "eval: cannot make 'rate/POPGym-v0'" in err and "103 steps, not 51" in err, err
    assert not (tmp_path / "a.csv").exists() and not (tmp_path / "r").exists()


def test_a_missing_dataset_fails_the_sweep_before_any_run_and_a_dry_run_notes_it(tmp_path, capsys, tmaze_data):
    """The second of two runs trains on a dataset that is not here: the sweep says so, and which
    runs, before the first run trains (it failed only after it, with an empty result line); a dry
    run lists the pending runs with a note; --only leaving those runs out lets the sweep pass."""
    import yaml

    from tests.tiny_tmaze import tiny_data

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_data(**{"train.steps": 2, "train.eval_every": 2, "eval.episodes": 0})))
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(f"csv: {tmp_path / 'a.csv'}\nout_root: {tmp_path / 'r'}\nseeds: [0, 1]\ntrainer: train\n"
                          f"runs:\n  - {{name: here, config: {config}}}\n"
                          f"  - {{name: gone, config: {config}, overrides: [dataset_id=rate/nope/gone-v0]}}\n")
    assert main([str(sweep_file)]) == 2
    err = one_error_line(capsys.readouterr().err)
    assert err.startswith("error: run gone/seed0 and 1 more pending run would train on a dataset that cannot be "
                          "opened: Minari dataset 'rate/nope/gone-v0' not found"), err
    assert err.rstrip().endswith("or run the others with --only PREFIX")
    assert not (tmp_path / "a.csv").exists() and not (tmp_path / "r").exists()
    assert main([str(sweep_file), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "note: 2 of the runs train on rate/nope/gone-v0, which cannot be opened now (DatasetNotFound)" in out
    assert "gone/seed1" in out
    # A second unusable dataset, here a file where a dataset folder would be, is named in the same line.
    (tmp_path / "d.hdf5").write_text("not a dataset")
    with sweep_file.open("a") as f:
        f.write(f"  - {{name: file, config: {config}, overrides: [dataset_id={tmp_path / 'd.hdf5'}]}}\n")
    assert main([str(sweep_file)]) == 2
    assert f"(and 1 other dataset: {tmp_path / 'd.hdf5'}): Minari dataset 'rate/nope/gone-v0'" in one_error_line(
        capsys.readouterr().err)
    assert main([str(sweep_file), "--only", "here/seed0"]) == 0
    assert [r["run"] for r in read_rows(tmp_path / "a.csv")] == ["here/seed0"]
    assert "here/seed0: failed" not in capsys.readouterr().out


def test_bad_set_override_fails_before_running(tmp_path, capsys):
    assert main(["configs/lm/sweep.yaml", "--set", "train.nope=1", "--dry-run"]) == 2
    assert "nope" in one_error_line(capsys.readouterr().err)
    # A bad value names the --set override, not the config file it was applied to.
    assert main(["configs/lm/sweep.yaml", "--set", "train.steps=abc", "--dry-run"]) == 2
    assert re.search(r"error: configs/lm/\S+\.yaml, override train.steps=abc: train.steps: expected int",
                     capsys.readouterr().err)
    # every seed would train the same run under another name
    assert main(["configs/lm/sweep.yaml", "--set", "train.seed=3", "--dry-run"]) == 2
    assert "train.seed is set by the sweep's seeds" in capsys.readouterr().err
    assert main(["configs/lm/sweep.yaml", "--set", "train={seed: 7}", "--dry-run"]) == 2  # (the mapping form too)
    assert "(they make it 7)" in capsys.readouterr().err


def test_an_only_prefix_that_names_no_run_is_an_error_not_a_finished_sweep(tmp_path, capsys):
    sweep_file, _ = tiny_sweep(tmp_path, steps=3)
    assert main([str(sweep_file), "--only", "revrse/", "--dry-run"]) == 2
    assert "error: --only revrse/: no run of the sweep has a name starting so (e.g. reverse/tiny/seg1/seed0)" in (
        capsys.readouterr().err)
    assert main([str(sweep_file), "--only", "reverse/tiny/seg2", "--dry-run"]) == 0
    assert "1 to run" in capsys.readouterr().out


def test_a_csv_replaced_by_another_kind_of_file_while_the_sweep_runs_is_one_error_line(tmp_path, capsys,
                                                                                      monkeypatch):
    """The sweep re-reads its CSV before each run (rows other sweeps wrote): a file that is no
    results CSV by then stops it with one line, not a KeyError traceback."""
    import train.sweep

    sweep_file, csv = tiny_sweep(tmp_path, steps=3)

    def replaced_meanwhile(sweep, pending, jobs):
        csv.write_text("name,score\na,1\n")
        return real(sweep, pending, jobs)

    real = train.sweep.run_all
    monkeypatch.setattr(train.sweep, "run_all", replaced_meanwhile)
    assert main([str(sweep_file)]) == 2
    err = capsys.readouterr().err
    assert f"\nerror: {csv}: no 'run' column, not a results CSV" in err and "Traceback" not in err, err
    assert csv.read_text() == "name,score\na,1\n" and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "text, pattern",
    [("csv: [unclosed\n", "not valid YAML"),
     ("", "s.yaml: Sweep needs the keys csv, out_root, seeds, runs"),  # (not the constructor's argument names)
     ("csv: a.csv\nseeds: [0]\n", "s.yaml: Sweep needs the keys out_root, runs"),
     ("csv: a.csv\nout_root: r\nseeds: [0]\nruns: []\n", "a sweep lists at least one run"),
     ("csv: a.csv\nout_root: r\nseeds: [0]\nruns: [{name: a, config: configs/lm/base.yaml}]\ngroups: []\n",
      "unknown config key groups"),
     ("csv: a.csv\nout_root: r\nseeds: [0]\nruns: [{name: a, config: configs/algorithmic/reverse.yaml},\n"
      "  {name: a, config: configs/algorithmic/copy.yaml}]\n", "run names repeat: ['a/seed0']"),
     ("csv: a.csv\nout_root: r\nseeds: [0]\nruns: [{name: a, config: configs/algorithmic/reverse.yaml, seeds: []}]\n",
      "seeds is empty"),
     ("csv: a.csv\nout_root: r\nseeds: [0, 1]\nruns: [{name: a, config: configs/algorithmic/reverse.yaml,\n"
      "  overrides: [train.seed=5]}]\n", "train.seed is set by the sweep's seeds"),
     ("csv: a.csv\nout_root: r\nseeds: []\nruns: [{name: a, config: configs/algorithmic/reverse.yaml}]\n",
      "seeds: empty"),
     # the name is a folder under out_root: it must not climb out of it
     ("csv: a.csv\nout_root: r\nseeds: [0]\nruns: [{name: ../../elsewhere, config: configs/algorithmic/reverse.yaml}]\n",
      "run name '../../elsewhere'")],
)
def test_malformed_sweep_files_are_one_error_line(tmp_path, capsys, text, pattern):
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(text)
    assert main([str(sweep_file), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and pattern in err and "Traceback" not in err, err


def test_a_csv_of_another_kind_is_one_error_line(tmp_path, capsys):
    sweep_file, csv = tiny_sweep(tmp_path, steps=3)
    csv.write_text("name,score\na,1\n")
    assert main([str(sweep_file), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no 'run' column" in err and err.count("\n") == 1, err
    assert csv.read_text() == "name,score\na,1\n"


@pytest.mark.slow
def test_a_dry_run_piped_into_a_reader_that_stops_early_exits_quietly(tmp_path):
    """`--dry-run | head`: the reader closes the pipe after its lines; no BrokenPipeError traceback."""
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(f"csv: {tmp_path / 'a.csv'}\nout_root: {tmp_path / 'r'}\nseeds: {list(range(4000))}\n"
                          "runs: [{name: reverse, config: configs/algorithmic/reverse.yaml}]\n")
    proc = subprocess.Popen([sys.executable, "-m", "train.sweep", str(sweep_file), "--dry-run"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1])
    assert proc.stdout.readline().startswith(b"4000 runs in the sweep")
    proc.stdout.close()  # more than a pipe's buffer is still to come
    assert proc.wait(timeout=60) == 0
    assert proc.stderr.read() == b""


def test_a_csv_that_cannot_be_a_results_file_is_refused_before_any_run(tmp_path, capsys):
    sweep_file, csv = tiny_sweep(tmp_path, steps=3)
    csv.write_bytes(b"\x80\xfd binary")
    assert main([str(sweep_file), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {csv}: not a text file, not a results CSV") and err.count("\n") == 1, err
    csv.write_bytes(b"run,score\n" + b"a" * 200_000 + b",1\n")  # text, but a field over the csv module's limit
    assert main([str(sweep_file), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {csv}: not a readable CSV (") and err.count("\n") == 1, err
    csv.unlink()
    csv.mkdir()  # a folder where the CSV would go
    assert main([str(sweep_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(csv) in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()  # refused before the first trainer started


@pytest.mark.slow
def test_a_run_another_process_holds_or_finished_meanwhile_is_skipped_not_failed(tmp_path, monkeypatch, capsys):
    """Two sweeps over the same runs: a run whose folder the other's trainer holds (exit 4), and
    one whose row the other wrote after this sweep launched its trainer (which then refuses a
    second row), are skipped; this sweep trains the rest and exits 0."""
    import train.sweep as sweep_module
    from tests.tiny_tmaze import held_by_another_process

    sweep_file, csv = tiny_sweep(tmp_path, steps=3, segments=(1, 2, 4))
    real = sweep_module.trainer_command

    def row_written_as_the_trainer_starts(sweep, run, fresh=False):
        if run.name == "reverse/tiny/seg2/seed0":  # (after the sweep's own look at the CSV)
            append_row(csv, {"run": run.name})
        return real(sweep, run, fresh)

    monkeypatch.setattr(sweep_module, "trainer_command", row_written_as_the_trainer_starts)
    with held_by_another_process(tmp_path / "runs/reverse/tiny/seg1/seed0"):
        assert main([str(sweep_file)]) == 0
    out = capsys.readouterr().out
    assert "reverse/tiny/seg1/seed0: its folder is held by another trainer (another sweep's?); skipped" in out
    assert "reverse/tiny/seg2/seed0: its row was written meanwhile (another sweep); skipped" in out
    assert sorted(r["run"] for r in read_rows(csv)) == ["reverse/tiny/seg2/seed0", "reverse/tiny/seg4/seed0"]


def test_a_trainer_killed_by_a_signal_fails_the_sweep_with_the_shells_status(tmp_path, monkeypatch, capsys):
    """The OOM killer's SIGKILL: the sweep exits 128 + 9 and says so (not the -9 of Popen)."""
    from train import sweep

    sweep_file, _ = tiny_sweep(tmp_path, steps=3, segments=(1,))
    real_popen = subprocess.Popen
    monkeypatch.setattr(sweep.subprocess, "Popen", lambda cmd, **kwargs: real_popen(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"], **kwargs))
    assert main([str(sweep_file)]) == 128 + signal.SIGKILL
    out, err = capsys.readouterr()
    assert "error: run reverse/tiny/seg1/seed0 was killed by signal 9 (Killed)" in err
    assert re.search(r"reverse/tiny/seg1/seed0: failed \(\d+ s\)", out), out  # (not its last line of output)


def test_a_run_folder_that_cannot_be_read_now_is_not_replaced(tmp_path, monkeypatch):
    """A sweep that cannot read a run's description (an I/O error) stops; it neither resumes nor
    starts over (--overwrite would delete the run).  A description this library did not write
    (its train section not a mapping) is not resumable: started over, without a traceback."""
    import json

    import train.sweep as sweep_module
    from rate.resume import STATE_FILE

    sweep_file, _ = tiny_sweep(tmp_path, steps=3, segments=(1,))
    sweep = sweep_module.load_yaml(Sweep, sweep_file)
    (run,) = expand(sweep)
    out = tmp_path / "runs" / run.name
    out.mkdir(parents=True)
    (out / STATE_FILE).write_bytes(b"state")
    from rate.checkpoint import FORMAT_VERSION
    from train.experiments.algorithmic import CHECKPOINT_KIND

    (out / "config.json").write_text(json.dumps({"format_version": FORMAT_VERSION, "kind": CHECKPOINT_KIND,
                                                 "config": {"train": 3}, "extra": {}}))
    assert trainer_command(sweep, run)[-2] == "--overwrite"

    def failing(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(sweep_module, "read_description", failing)
    with pytest.raises(OSError, match="Input/output error"):
        trainer_command(sweep, run)


def test_a_sweep_that_fails_itself_leaves_no_trainer_running(tmp_path, monkeypatch, capsys):
    # The second trainer cannot be started (a full disk, say): the first one must not outlive the sweep.
    from train import sweep

    sweep_file, _ = tiny_sweep(tmp_path, steps=3)
    started = []
    real_popen = subprocess.Popen

    def popen(cmd, **kwargs):
        if started:
            raise OSError(28, "No space left on device")
        started.append(real_popen([sys.executable, "-c", "import time; time.sleep(60)"], **kwargs))
        return started[0]

    monkeypatch.setattr(sweep.subprocess, "Popen", popen)
    assert main([str(sweep_file), "--jobs", "2"]) == 2
    assert started and started[0].poll() is not None  # terminated, not left running
    err = capsys.readouterr().err
    assert "error: file system: " in err and "No space left on device" in err and "Traceback" not in err


@pytest.mark.slow
def test_a_rate_run_left_in_flight_resumes_and_a_changed_one_starts_over(tmp_path, tmaze_data):
    """The sweep resumes a RATE run whose folder holds a training state of the same config (here
    one that reached its last step but wrote no row, as when killed during its final evaluation),
    and replaces one trained with another model or another schedule; other trainers never resume."""
    from rate.config import save_yaml
    from rate.rl.trainer import train
    from tests.tiny_tmaze import tiny

    config = tmp_path / "tiny.yaml"
    save_yaml(tiny(), config)
    sweep = Sweep(csv=str(tmp_path / "r.csv"), out_root=str(tmp_path / "runs"), seeds=[0], trainer="train",
                  runs=[ListedRun(name="a", config=str(config))])
    run = Run("a/seed0", str(config), ["train.seed=0", "train.steps=20", "train.eval_every=20"])
    out = tmp_path / "runs/a/seed0"
    assert trainer_command(sweep, run)[-2] == "--overwrite"  # nothing there yet
    train(tiny(**{"train.steps": 20, "train.eval_every": 20}), out, progress=False)
    command = trainer_command(sweep, run)
    assert command[-2] == "--resume" and f"--out={out}" in command
    other = Run("a/seed0", str(config), [*run.overrides, "model.backbone.d_model=16"])
    assert trainer_command(sweep, other)[-2] == "--overwrite"  # another model: start over
    longer = Run("a/seed0", str(config), ["train.seed=0", "train.steps=40", "train.eval_every=20"])
    assert trainer_command(sweep, longer)[-2] == "--overwrite"  # another learning-rate schedule
    assert trainer_command(Sweep(**{**sweep.__dict__, "trainer": "train.lm"}), run)[-2] == "--overwrite"
    # The resumed run ends with the row and weights of its own config.
    assert main([str(_sweep_file(tmp_path, config, sweep))]) == 0
    assert [r["run"] for r in read_rows(sweep.csv)] == ["a/seed0"] and read_rows(sweep.csv)[0]["train.steps"] == "20"


@pytest.mark.slow
def test_a_run_whose_data_changed_under_its_folder_starts_over(tmp_path, tmaze_data, capsys):
    """The folder holds a run of the same config, but its training state says other episodes (a
    dataset regenerated in place): the trainer refuses the resume (exit 3) and the sweep, instead
    of failing on every call, trains the run again from the start."""
    import torch

    from rate.config import save_yaml
    from rate.rl.trainer import STATE_FILE, train
    from tests.tiny_tmaze import tiny

    config = tmp_path / "tiny.yaml"
    save_yaml(tiny(), config)
    sweep = Sweep(csv=str(tmp_path / "r.csv"), out_root=str(tmp_path / "runs"), seeds=[0], trainer="train",
                  runs=[ListedRun(name="a", config=str(config))])
    out = tmp_path / "runs/a/seed0"
    train(tiny(**{"train.steps": 20, "train.eval_every": 20}), out, progress=False)
    state = torch.load(out / STATE_FILE, weights_only=False)
    fingerprint, state["data_fingerprint"] = state["data_fingerprint"], "0" * 16
    torch.save(state, out / STATE_FILE)
    run = Run("a/seed0", str(config), ["train.seed=0", "train.steps=20", "train.eval_every=20"])
    assert trainer_command(sweep, run)[-2] == "--resume" and trainer_command(sweep, run, fresh=True)[-2] == "--overwrite"
    capsys.readouterr()
    assert main([str(_sweep_file(tmp_path, config, sweep))]) == 0
    assert "a/seed0: cannot resume" in capsys.readouterr().out
    assert [r["run"] for r in read_rows(sweep.csv)] == ["a/seed0"]
    assert torch.load(out / STATE_FILE, weights_only=False)["data_fingerprint"] == fingerprint  # trained again


def _sweep_file(tmp_path: Path, config: Path, sweep: Sweep) -> Path:
    path = tmp_path / "rate_sweep.yaml"
    path.write_text(f"csv: {sweep.csv}\nout_root: {sweep.out_root}\ntrainer: train\nseeds: [0]\nruns:\n"
                    f"  - {{name: a, config: {config}, overrides: [train.steps=20, train.eval_every=20]}}\n")
    return path


@pytest.mark.slow
def test_a_stopped_sweep_stops_its_trainers(tmp_path):
    """SIGTERM to the sweep: its trainer is stopped too (an orphan would write its row while the
    next sweep trains the same run again) and no row is written.  A SIGHUP that nohup ignores
    stays ignored."""
    sweep_file, csv = tiny_sweep(tmp_path, steps=100000, segments=(1,))
    # Started as nohup starts it (SIGHUP ignored): that must stay so, for the sweep and its trainer.
    sweep = subprocess.Popen([sys.executable, "-m", "train.sweep", str(sweep_file)], stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    trainers = []
    for _ in range(600):  # wait (up to a minute) for the trainer to start
        trainers = children_of(sweep.pid)
        if trainers:
            break
        time.sleep(0.1)
    assert len(trainers) == 1
    wait_for_training(tmp_path / "runs")
    for pid in (sweep.pid, trainers[0]):  # SIGHUP (bit 0) in the ignored set of both, as nohup left it
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        ignored = next(line for line in status if line.startswith("SigIgn"))
        assert int(ignored.split()[1], 16) & (1 << (signal.SIGHUP - 1)), (pid, ignored)
    sweep.send_signal(signal.SIGHUP)
    time.sleep(1)  # (a sweep that did not ignore it would be gone by now)
    assert sweep.poll() is None and Path(f"/proc/{trainers[0]}").exists()
    sweep.send_signal(signal.SIGTERM)
    _, err = sweep.communicate(timeout=60)
    assert sweep.returncode == 128 + signal.SIGTERM and "will resume from their last checkpoint" in err
    assert not Path(f"/proc/{trainers[0]}").exists()  # stopped and reaped, not orphaned
    assert not csv.exists()


@pytest.mark.slow
def test_a_signal_to_the_process_group_stops_the_sweep_without_calling_its_trainer_failed(tmp_path):
    """Ctrl-C in a terminal, or `kill -- -PGID` of a background chain, reaches the sweep and its
    trainer at once: a trainer that dies of it before the sweep stops it is stopped, not failed."""
    sweep_file, csv = tiny_sweep(tmp_path, steps=100000, segments=(1,))
    sweep = subprocess.Popen([sys.executable, "-m", "train.sweep", str(sweep_file)], stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    wait_for_training(tmp_path / "runs")
    os.killpg(sweep.pid, signal.SIGTERM)
    _, err = sweep.communicate(timeout=60)
    assert sweep.returncode == 128 + signal.SIGTERM
    assert "failed" not in err and "runs in flight (reverse/tiny/seg1/seed0) were stopped" in err, err
    assert not csv.exists()


def wait_for_training(runs: Path) -> None:
    """Wait (up to two minutes) until a trainer under ``runs`` is training: its TensorBoard log
    opens when it logs its first step."""
    for _ in range(1200):
        if any(runs.glob("**/events.out.tfevents*")):
            return
        time.sleep(0.1)
    pytest.fail(f"no trainer under {runs} started training within two minutes")


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state_and_parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except OSError:  # the process ended meanwhile
            continue
        if int(state_and_parent[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_ctrl_c_while_the_configs_are_checked_is_one_line(tmp_path, monkeypatch, capsys):
    sweep_file, _ = tiny_sweep(tmp_path, steps=3)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("train.sweep.load_yaml", interrupted)
    assert main([str(sweep_file)]) == 128 + signal.SIGINT
    assert capsys.readouterr().err == "stopped before any run started\n"


@pytest.mark.slow
def test_an_algorithmic_run_left_in_flight_is_resumed(tmp_path, monkeypatch):
    """Every trainer resumes: a tiny reverse run stopped after its checkpoint at step 2 of 4 is
    continued by the next sweep (``--resume``), which records its row once."""
    import train.algorithmic as trainer
    import train.sweep as sweep_module
    from rate.config import load_yaml
    from tests.resume_checks import generate_failing_at

    sweep_file, csv = tiny_sweep(tmp_path, steps=4, segments=(1,))
    sweep = load_yaml(Sweep, sweep_file)
    (run,) = expand(sweep, ["train.eval_every=2"])  # as --set makes it
    out = tmp_path / "runs" / run.name
    assert trainer_command(sweep, run)[-2] == "--overwrite"  # nothing there yet
    monkeypatch.setattr(trainer, "generate", generate_failing_at(trainer.generate, 3))
    assert trainer.main([run.config, *run.overrides, "--out", str(out), "--no-progress"]) == 2
    monkeypatch.undo()
    assert trainer_command(sweep, run)[-2] == "--resume"
    assert trainer_command(Sweep(**{**sweep.__dict__, "trainer": "train.lm"}), run)[-2] == "--overwrite"
    launched = []

    def recorded(*args, **kwargs):
        launched.append(trainer_command(*args, **kwargs))
        return launched[-1]

    monkeypatch.setattr(sweep_module, "trainer_command", recorded)
    assert main([str(sweep_file), "--set", "train.eval_every=2"]) == 0
    assert [command[-2] for command in launched] == ["--resume"]
    assert [r["run"] for r in read_rows(csv)] == [run.name]


def test_a_folder_left_mid_swap_is_settled_before_the_sweep_judges_it(tmp_path):
    """A trainer killed inside a replacement's swap leaves a mix of two runs and the journal; the
    sweep finishes the swap (under the folder's lock) before it decides between --resume and
    --overwrite, so it judges the run the folder will hold, not the mix."""
    from rate.run_folder import swap_journal
    from tests.test_checkpoint import NAMES, half_swapped
    from train.sweep import _resumable

    run, _, _ = half_swapped(tmp_path, "filling", 1)
    (tmp_path / "sweep").mkdir()
    sweep_file, _ = tiny_sweep(tmp_path / "sweep", steps=3, segments=(1,))
    (listed,) = expand(load_yaml(Sweep, sweep_file))
    with pytest.warns(UserWarning, match="finished replacing the earlier run"):
        assert not _resumable(run, listed, "train.algorithmic")  # (the new run here has no training state)
    assert not swap_journal(run).exists()
    assert {p.name: p.read_text() for p in run.iterdir()} == {name: f"new {name}" for name in NAMES}


def test_a_swap_record_that_cannot_be_read_leaves_its_run_to_its_trainer_not_the_sweep_to_a_traceback(tmp_path):
    """An unreadable swap record beside one run's folder made the sweep's judgement raise: a
    traceback that stopped every trainer in flight.  The run is started with --overwrite, whose
    trainer refuses the folder in one line like any other bad folder."""
    from rate.run_folder import swap_journal

    sweep_file, _ = tiny_sweep(tmp_path, steps=3, segments=(1,))
    sweep = load_yaml(Sweep, sweep_file)
    (run,) = expand(sweep)
    out = Path(sweep.out_root) / run.name
    out.mkdir(parents=True)
    swap_journal(out).write_text("{not json")
    assert trainer_command(sweep, run)[-2] == "--overwrite"
    assert swap_journal(out).read_text() == "{not json"  # left as it was


def test_names_and_files_that_start_with_a_dash_reach_the_trainer_as_values(tmp_path, capsys):
    """The trainer gets --run-name=NAME, --out=PATH and --csv=FILE: a run named "-x" (a valid
    folder name) is not read as an option by the trainer's parser."""
    import train.algorithmic as trainer

    sweep = Sweep(csv=str(tmp_path / "-rows.csv"), out_root="-runs", seeds=[0],
                  runs=[ListedRun(name="-x", config="configs/algorithmic/reverse.yaml")])
    (run,) = expand(sweep)
    command = trainer_command(sweep, run)
    assert command[:3] == [sys.executable, "-m", "train.algorithmic"]
    assert trainer.main([*command[3:], "--print-config"]) == 0  # (parsed, config built, nothing trained)
    assert "segments:" in capsys.readouterr().out
    assert "--run-name=-x/seed0" in command and "--out=-runs/-x/seed0" in command
