"""Results pages of issue 6 (POPGym, MiniGrid-Memory, MuJoCo, AAR's sampled table) from CSV rows."""

import csv
import json

import pytest

MACHINE = {"machine": "x86_64", "cpu_count": "2", "torch_threads": "2", "torch": "2.13.0+cpu", "gpu": ""}


def write_csv(path, rows):
    columns = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


def render(main, tmp_path, name, rows):
    path = tmp_path / f"{name}.csv"
    write_csv(path, rows)
    out = tmp_path / f"{name}.md"
    assert main(["--csv", str(path), "--out", str(out), "--notes", str(tmp_path / "none.md")]) == 0
    assert (tmp_path / f"{name}.png").is_file()
    return out.read_text()


def test_popgym_page_has_a_row_per_task_and_the_papers_numbers(tmp_path):
    from eval.reports.popgym import main

    rows = [{"run": f"{task}/{m}/seed{s}", "train_seconds": "30", f"return_T{t}": str(v), **MACHINE}
            for task, t in [("RepeatFirstEasy", 51), ("CountRecallEasy", 51)]
            for m, v in [("rate", 1.0), ("bc_mlp", -0.5)] for s in (0, 1)]
    text = render(main, tmp_path, "popgym", rows)
    assert "| task | RATE | BC-MLP | paper: RATE / DT / BC-LSTM |" in text
    assert "| RepeatFirstEasy | 1.00 +- 0.00 (n=2) | -0.50 +- 0.00 (n=2) | - |" in text
    assert "| CountRecallEasy | 1.00 +- 0.00 (n=2) | -0.50 +- 0.00 (n=2) | 0.07 / -0.46 / 0.05 |" in text
    # Tasks without runs yet are listed, so a partial sweep shows what is missing.
    assert "| AutoencodeMedium | - | - | - |" in text
    assert "over 100 evaluation episodes" in text  # (rows that record no count: the default)
    # A model the page has no column for is one error, not a row silently left out.
    for odd in ("RepeatFirstEasy/lstm/seed0", "RepeatFirstEasy/seed0"):  # (and a name it cannot split)
        with pytest.raises(SystemExit) as exc:
            render(main, tmp_path, "popgym", rows + [{**rows[0], "run": odd}])
        assert exc.value.code == 2


def test_minigrid_page_sweeps_grid_sizes(tmp_path):
    from eval.reports.minigrid import main

    rows = [{"run": f"rate/seed{s}", "model.segment_steps": "10", "model.num_segments": "4", "train_seconds": "60",
             "success_T13": "1.0", "success_T41": str(0.5 + s / 10), **MACHINE} for s in (0, 1)]
    text = render(main, tmp_path, "minigrid", rows)
    assert "| model | size=13 | size=41 |" in text
    assert "| RATE (bptt), K=10 x N=4 | 1.00 +- 0.00 (n=2) | 0.55 +- 0.07 (n=2) |" in text


@pytest.mark.parametrize("module", ["memory_maze", "vizdoom"])
def test_return_pages_table_returns_and_the_episode_count(tmp_path, module):
    import importlib

    main = importlib.import_module(f"eval.reports.{module}").main
    rows = [{"run": f"rate/seed{s}", "train_seconds": "60", "return_T500": str(8.0 + s), "return_T1000": str(12.0),
             "success_T500": "", "model.segment_steps": "30", "model.num_segments": "3", "eval.final_episodes": "10",
             **MACHINE} for s in (0, 1)]
    text = render(main, tmp_path, module, rows)
    assert "return (mean over the episodes) over 10 evaluation episodes per T" in text
    assert "| RATE (bptt), K=30 x N=3 | 8.50 +- 0.71 (n=2) | 12.00 +- 0.00 (n=2) |" in text
    paper_rate = {"memory_maze": "| RATE | 7.64 +- 0.41 |", "vizdoom": "| RATE | 41.5 +- 1.0 |"}[module]
    assert "Paper (RATE, NeurIPS-25" in text and paper_rate in text


def test_mujoco_page_normalises_with_both_reference_pairs(tmp_path):
    from eval.reports.mujoco import DATASET_REF, main
    from rate.data.d4rl import REF_SCORES

    lo, hi = DATASET_REF
    rows = [{"run": f"rate/seed{s}", "train_seconds": "60", "return_T1000": str(v), **MACHINE}
            for s, v in enumerate([lo, hi])]
    text = render(main, tmp_path, "mujoco", rows)
    d_lo, d_hi = REF_SCORES["halfcheetah"]
    d4rl = [100 * (v - d_lo) / (d_hi - d_lo) for v in (lo, hi)]
    # the two seeds sit at the dataset's min and max: scores 0 and 100, mean 50
    assert f"| RATE | {(lo + hi) / 2:.1f} +- " in text and "| 50.0 +- 70.7 |" in text
    assert f"| {sum(d4rl) / 2:.1f} +- " in text


def test_aar_sampled_table_reads_the_evaluation_json(tmp_path):
    from eval.reports.aar import sampled_table

    assert sampled_table(tmp_path) == []
    for seed, value in enumerate([0.9, 0.7]):
        (tmp_path / f"bc_gru-seed{seed}.json").write_text(json.dumps({"results": {"90": {"success": value}}}))
    lines = sampled_table(tmp_path)
    assert "| model | T=90 |" in lines
    assert "| BC-GRU | 0.80 +- 0.14 (n=2) |" in lines


@pytest.mark.parametrize("module", ["eval.reports.popgym", "eval.reports.minigrid", "eval.reports.mujoco",
                                    "eval.reports.memory_maze", "eval.reports.vizdoom"])
def test_pages_refuse_an_empty_csv_or_one_of_another_kind(tmp_path, module, capsys):
    import importlib

    for content, message in (("", "has no rows"), ("a,b\n1,2\n", "no 'run' column, not a results CSV"),
                             (b"\xff\xfe\x00binary", "not a text file, not a results CSV")):
        (tmp_path / "x.csv").write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(SystemExit) as exc:
            importlib.import_module(module).main(["--csv", str(tmp_path / "x.csv"), "--out", str(tmp_path / "x.md")])
        assert exc.value.code == 2 and message in capsys.readouterr().err
        assert not (tmp_path / "x.md").exists()


def test_machine_line_counts_the_runs_of_each_machine_when_they_differ():
    from eval.reports.common import machines

    gpu = {**MACHINE, "cpu_count": "16", "torch_threads": "1", "torch": "2.11.0+cu130", "gpu": "NVIDIA H200"}
    assert machines([MACHINE, MACHINE]) == "x86_64, 2 cores, 2 torch threads, torch 2.13.0+cpu"
    assert machines([gpu, MACHINE, gpu]) == ("x86_64, 16 cores, 1 torch threads, torch 2.11.0+cu130, GPU NVIDIA H200 "
                                             "(2 runs); x86_64, 2 cores, 2 torch threads, torch 2.13.0+cpu (1 run)")
