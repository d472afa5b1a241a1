"""The resumable sweep runner and CSV rows."""

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rate.results import append_row, read_rows
from train.sweep import Sweep, SweepGroup, expand, main



def tiny_sweep(tmp_path: Path, steps: int, seeds=(0,), segments=(1, 2), threads: bool = True) -> tuple[Path, Path]:
    """A sweep file of tiny reverse runs (model ``tiny``, memory 0) and its CSV; ``threads``: the
    model sets train.threads=1 itself (else the caller passes it with --set)."""
    csv = tmp_path / "r.csv"
    sweep_file = tmp_path / "s.yaml"
    overrides = ["model.d_model=16", "model.n_heads=2", "model.d_head=8", "model.d_inner=16", "model.n_layers=1",
                 f"train.steps={steps}", f"train.eval_every={steps}", "eval_samples=8", "task.length=2"]
    overrides += ["train.threads=1"] if threads else []
    sweep_file.write_text(textwrap.dedent(f"""
        csv: {csv}
        out_root: {tmp_path / 'runs'}
        seeds: {list(seeds)}
        models: {{tiny: {overrides}}}
        groups:
          - {{task: reverse, config: configs/algorithmic/reverse.yaml, segments: {list(segments)}, models: [tiny], memory: 0}}
    """))
    return sweep_file, csv


def test_expand_substitutes_memory_and_names_runs():
    sweep = Sweep(csv="x.csv", out_root="runs", seeds=[0, 1],
                  models={"rmt": ["model.num_mem_tokens={mem}"], "transformer": ["model.num_mem_tokens=0"]},
                  groups=[SweepGroup(task="reverse", config="configs/algorithmic/reverse.yaml", segments=[2, 4],
                                     models=["rmt"], memory="seg_len")])
    runs = expand(sweep)
    assert [r.name for r in runs] == ["reverse/rmt/seg2/seed0", "reverse/rmt/seg2/seed1",
                                      "reverse/rmt/seg4/seed0", "reverse/rmt/seg4/seed1"]
    assert runs[2].overrides == ["segments=4", "train.seed=0", "model.num_mem_tokens=6"]  # 24 tokens / 4


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
    sweep_file.write_text("csv: a.csv\nout_root: r\nseeds: [0]\nmodels: {}\ngroups:\n"
                          "  - {task: reverse, config: configs/algorithmic/reverse.yaml, segments: [2], models: [nope]}\n")
    assert main([str(sweep_file)]) == 2
    assert "model 'nope' is not in models" in capsys.readouterr().err


def test_listed_runs_use_their_own_seeds_and_the_named_trainer():
    from train.sweep import ListedRun

    sweep = Sweep(csv="x.csv", out_root="runs", seeds=[0], trainer="train.lm",
                  runs=[ListedRun(name="a", config="configs/lm/base.yaml", overrides=["model.mem_len=8"], seeds=[0, 1]),
                        ListedRun(name="b", config="configs/lm/base.yaml")])
    assert [(r.name, r.overrides) for r in expand(sweep)] == [
        ("a/seed0", ["model.mem_len=8", "train.seed=0"]), ("a/seed1", ["model.mem_len=8", "train.seed=1"]),
        ("b/seed0", ["train.seed=0"])]


def test_matrix_crosses_tasks_with_models_and_fills_in_task_variables(tmp_path, capsys):
    from train.sweep import MatrixModel, SweepMatrix

    matrix = SweepMatrix(
        tasks={"Easy": {"T": 51, "K": 17}, "Hard": {"T": 103, "K": 35}},
        models={"rate": MatrixModel("configs/popgym/rate.yaml", ["model.segment_steps={K}"]),
                "dt": MatrixModel("configs/popgym/dt.yaml", ["model.segment_steps={T}"])},
        overrides=["dataset_id=d/{task}-v0", "eval.env_kwargs={{task: {task}}}"])
    runs = expand(Sweep(csv="x.csv", out_root="runs", seeds=[0, 1], trainer="train", matrix=matrix))
    assert [r.name for r in runs] == ["Easy/rate/seed0", "Easy/rate/seed1", "Easy/dt/seed0", "Easy/dt/seed1",
                                      "Hard/rate/seed0", "Hard/rate/seed1", "Hard/dt/seed0", "Hard/dt/seed1"]
    assert runs[6].config == "configs/popgym/dt.yaml"
    assert runs[6].overrides == ["dataset_id=d/Hard-v0", "eval.env_kwargs={task: Hard}", "model.segment_steps=103",
                                 "train.seed=0"]
    # An override naming a variable the task lacks fails before anything runs, naming both.
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text("csv: a.csv\nout_root: r\nseeds: [0]\ntrainer: train\nmatrix:\n"
                          "  tasks: {A: {T: 5}}\n"
                          "  models: {rate: {config: configs/popgym/rate.yaml, overrides: ['x={K}']}}\n")
    assert main([str(sweep_file), "--dry-run"]) == 2
    assert "matrix task A, model rate: an override names 'K'" in capsys.readouterr().err


def test_shipped_sweeps_expand_and_validate(capsys):
    for path in ("configs/algorithmic/sweep.yaml", "configs/lm/sweep.yaml", "configs/tmaze/sweep.yaml",
                 "configs/aar/sweep.yaml", "configs/minigrid/sweep.yaml", "configs/popgym/sweep.yaml",
                 "configs/mujoco/sweep.yaml"):
        assert main([path, "--dry-run"]) == 0
    assert "to run" in capsys.readouterr().out


def test_parallel_jobs_keep_every_row_and_extra_overrides_are_recorded(tmp_path):
    """Four tiny runs two at a time: the locked append keeps all four rows, and --set reaches
    every run (and its row's overrides)."""
    sweep_file, csv = tiny_sweep(tmp_path, steps=2, seeds=(0, 1), threads=False)
    assert main([str(sweep_file), "--jobs", "2", "--set", "train.threads=1", "--set", "train.lr=0.002"]) == 0
    rows = read_rows(csv)
    assert sorted(r["run"] for r in rows) == ["reverse/tiny/seg1/seed0", "reverse/tiny/seg1/seed1",
                                              "reverse/tiny/seg2/seed0", "reverse/tiny/seg2/seed1"]
    assert all(r["train.lr"] == "0.002" and "train.lr=0.002" in r["overrides"] for r in rows)


def test_concurrent_appends_lose_no_row(tmp_path):
    from concurrent.futures import ProcessPoolExecutor

    csv = tmp_path / "r.csv"
    with ProcessPoolExecutor(4) as pool:
        list(pool.map(append_row, [csv] * 24, [{"run": f"r{i}", "x": i} for i in range(24)]))
    assert sorted(int(r["x"]) for r in read_rows(csv)) == list(range(24))


def test_sweep_with_a_wrong_evaluation_environment_fails_before_running(tmp_path, capsys):
    # The T = 51 task's length given to a 103-step task: POPGym refuses it, and the sweep says so
    # before any run starts.
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(f"csv: {tmp_path / 'a.csv'}\nout_root: {tmp_path / 'r'}\nseeds: [0]\ntrainer: train\n"
                          "matrix:\n  tasks: {RepeatPreviousMedium: {T: 51}}\n"
                          "  overrides: ['eval.env_kwargs={{task: {task}}}', 'eval.lengths=[{T}]']\n"
                          "  models: {rate: {config: configs/popgym/rate.yaml}}\n")
    assert main([str(sweep_file)]) == 2
    err = capsys.readouterr().err
    assert "eval: cannot make 'rate/POPGym-v0'" in err and "103 steps, not 51" in err, err
    assert not (tmp_path / "a.csv").exists() and not (tmp_path / "r").exists()


def test_bad_set_override_fails_before_running(tmp_path, capsys):
    assert main(["configs/lm/sweep.yaml", "--set", "train.nope=1", "--dry-run"]) == 2
    assert "nope" in capsys.readouterr().err


def test_set_overrides_size_the_groups_memory():
    """{mem} = the segment length of the task as the run trains it, after --set."""
    sweep = Sweep(csv="x.csv", out_root="runs", seeds=[0], models={"rmt": ["model.num_mem_tokens={mem}"]},
                  groups=[SweepGroup(task="reverse", config="configs/algorithmic/reverse.yaml", segments=[2],
                                     models=["rmt"])])
    (run,) = expand(sweep, ["task.length=24"])
    assert run.overrides == ["segments=2", "train.seed=0", "model.num_mem_tokens=24", "task.length=24"]  # 48 / 2


@pytest.mark.parametrize(
    "text, pattern",
    [("csv: [unclosed\n", "not valid YAML"),
     ("csv: a.csv\nout_root: r\nseeds: [0]\nmodels: {m: []}\ngroups:\n"
      "  - {task: reverse, config: configs/algorithmic/reverse.yaml, segments: [0], models: [m]}\n", "segments must be"),
     ("csv: a.csv\nout_root: r\nseeds: [0]\nmodels: {m: []}\ngroups:\n"
      "  - {task: reverse, config: configs/algorithmic/reverse.yaml, segments: [2], models: [m], memory: seg}\n",
      "memory must be an int or 'seg_len'"),
     ("csv: a.csv\nout_root: r\nseeds: [0]\nmodels: {m: ['x={memory}']}\ngroups:\n"
      "  - {task: reverse, config: configs/algorithmic/reverse.yaml, segments: [2], models: [m]}\n",
      "an override names 'memory'")],
)
def test_malformed_sweep_files_are_one_error_line(tmp_path, capsys, text, pattern):
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(text)
    assert main([str(sweep_file), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and pattern in err and "Traceback" not in err, err


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
    time.sleep(2)  # let it get into training
    sweep.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert sweep.poll() is None and Path(f"/proc/{trainers[0]}").exists()
    sweep.send_signal(signal.SIGTERM)
    _, err = sweep.communicate(timeout=60)
    assert sweep.returncode == 128 + signal.SIGTERM and "will run again next time" in err
    assert not Path(f"/proc/{trainers[0]}").exists()  # stopped and reaped, not orphaned
    assert not csv.exists()


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
